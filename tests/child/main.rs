//! `wininetd-testchild`: the program the integration tests configure as a
//! service. It uses std, and socket2 (a dependency of the daemon) for
//! `sockopts` on Unix, so it builds wherever the daemon builds; each mode
//! prints something the test can check byte for byte.
//!
//! Usage: `wininetd-testchild MODE [ARGS...]`, see [`usage`].

use std::env;
use std::fs;
use std::io::{self, Read, Write};
use std::process::{Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

fn usage() -> ExitCode {
    let _ = writeln!(
        io::stderr(),
        "usage: wininetd-testchild MODE [ARGS...]
modes:
  echo              copy stdin to stdout until EOF
  args ARG...       print each argument as `arg[N]=VALUE`
  env [VAR...]      print `VAR=value` or `VAR unset` (no VAR: the whole environment)
  fds               print `fds N N N` (open fds) then one `fd N TARGET` line each
  ids               print uid, gid, groups, pid, pgid, sid (Linux: from /proc)
  tty               open /dev/tty, the controlling terminal: print `tty=open`,
                    or `tty=error:ERRNO` (ENXIO when there is none)
  stderr TEXT       write TEXT and a newline to stderr
  stderr-hex HEX    write the bytes HEX spells (two hex digits each) to stderr
  stderr-lines N    write N lines `line I of N` to stderr
  stderr-flood SECS write `flood I` lines to stderr as fast as it can for SECS
                    seconds (as `yes >&2` does), then print `flooded lines=N`
  exit N            print `exiting pid=PID code=N`, exit with status N
  read-timeout      print `reading`, then `read ok N` or `read error KIND after=MS`
  sleep SECS        print `sleeping pid=PID`, then sleep
  no-term SECS      like sleep, with SIGTERM ignored (Unix, through sh)
  grandchild SECS   start `sleep SECS` as a child, print `parent pid=P grandchild=G`, wait
  pid               print `pid=PID`, then wait for EOF on stdin
  duplex BYTES      write BYTES pattern bytes while reading stdin to EOF, then
                    print `duplex read=N wrote=M`
  cwd               print `cwd=PATH` (the current directory)
  sockopts          print the options of the socket on fd 0 (Unix):
                    `nodelay=B keepalive=B keepidle=S linger=S|off
                    rcvtimeo=MS|none sndtimeo=MS|none`
  stdio-kinds       print `fd0=KIND:ID fd1=KIND:ID fd2=KIND:ID`: the file type of
                    fds 0, 1, 2 (`fifo`, `socket`, `char`, `file`, `dir`, `other`,
                    or `closed`) and DEV.INODE, equal for the same open pipe or socket
  after-eof MS      read stdin to EOF, print `eof after N bytes`, wait MS
                    milliseconds, print `after eof pid=PID`
  nofile            print `nofile=SOFT:HARD`, the descriptor limit (Unix)
  pipe-size MS      wait MS milliseconds, read stdin to EOF, print
                    `bytes=N stdin_pipe=SIZE` (F_GETPIPE_SZ of fd 0; Linux)
  serve-socket N [SECS [DELAY_MS]]
                    serve N clients on the socket that is stdin (a wait
                    service's), after DELAY_MS milliseconds (default 0): N
                    datagrams, each answered to its sender, or N connections
                    accepted, each answered after its first line; then wait
                    SECS seconds (default 0) and exit. Each answer:
                    `served I pid=P from=ADDR got=TEXT`, the socket's state
                    (`fd3=same|other|none blocking=yes|no`, Unix) and each of
                    the variables a wait service may get, `NAME=VALUE` when set
  piped MODE [ARGS...]
                    run MODE only if fds 0, 1 and 2 are all pipes; otherwise
                    print `not piped: ` and the stdio-kinds line, exit 71"
    );
    ExitCode::from(64)
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let Some((mode, rest)) = args.split_first() else {
        return usage();
    };
    run(mode, rest)
}

fn run(mode: &str, rest: &[String]) -> ExitCode {
    let result = match (mode, rest) {
        ("echo", []) => echo(),
        ("args", args) => print_args(args),
        ("env", names) => print_env(names),
        ("fds", []) => fds(),
        ("ids", []) => ids(),
        ("tty", []) => tty(),
        ("stderr", [text]) => to_stderr(text),
        ("stderr-hex", [hex]) => stderr_hex(hex),
        ("stderr-lines", [n]) => stderr_lines(n),
        ("stderr-flood", [secs]) => stderr_flood(secs),
        ("exit", [code]) => return exit_with(code),
        ("read-timeout", []) => read_timeout(),
        ("sleep", [secs]) => sleep(secs),
        ("no-term", [secs]) => no_term(secs),
        ("grandchild", [secs]) => grandchild(secs),
        ("pid", []) => pid(),
        ("duplex", [bytes]) => duplex(bytes),
        ("cwd", []) => cwd(),
        ("sockopts", []) => sockopts(),
        ("stdio-kinds", []) => stdio_kinds().and_then(|kinds| say(&kinds)),
        ("after-eof", [millis]) => after_eof(millis),
        ("pipe-size", [millis]) => pipe_size(millis),
        ("nofile", []) => nofile(),
        ("serve-socket", [count]) => serve_socket(count, "0", "0"),
        ("serve-socket", [count, secs]) => serve_socket(count, secs, "0"),
        ("serve-socket", [count, secs, delay]) => serve_socket(count, secs, delay),
        ("piped", [mode, rest @ ..]) => return piped(mode, rest),
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // stderr is the socket, which may be gone: no eprintln! (it
            // panics when the write fails).
            let _ = writeln!(io::stderr(), "wininetd-testchild {mode}: {err}");
            ExitCode::from(70)
        }
    }
}

/// Writes one line and flushes: stdout is a socket, so nothing may stay in a
/// buffer when the test reads.
fn say(line: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

fn secs_arg(secs: &str) -> io::Result<Duration> {
    secs.parse()
        .map(Duration::from_secs)
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, format!("{secs:?}: {err}")))
}

fn echo() -> io::Result<()> {
    let mut out = io::stdout().lock();
    io::copy(&mut io::stdin().lock(), &mut out)?;
    out.flush()
}

fn print_args(args: &[String]) -> io::Result<()> {
    for (i, arg) in args.iter().enumerate() {
        say(&format!("arg[{i}]={arg}"))?;
    }
    say(&format!("argc={}", args.len()))
}

fn print_env(names: &[String]) -> io::Result<()> {
    if names.is_empty() {
        let mut vars: Vec<(String, String)> = env::vars_os()
            .map(|(k, v)| (k.to_string_lossy().into(), v.to_string_lossy().into()))
            .collect();
        vars.sort();
        for (name, value) in vars {
            say(&format!("{name}={value}"))?;
        }
        return Ok(());
    }
    for name in names {
        match env::var_os(name) {
            Some(value) => say(&format!("{name}={}", value.to_string_lossy()))?,
            None => say(&format!("{name} unset"))?,
        }
    }
    Ok(())
}

/// Lists the open fds. The directory handle used to list them is open while
/// listing, so an fd counts only if it is still there once the listing is
/// closed.
fn fds() -> io::Result<()> {
    let listed: Vec<u32> = fs::read_dir("/proc/self/fd")?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let mut open: Vec<(u32, String)> = listed
        .into_iter()
        .filter_map(|fd| {
            let target = fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
            Some((fd, target.to_string_lossy().into_owned()))
        })
        .collect();
    open.sort();
    let numbers: Vec<String> = open.iter().map(|(fd, _)| fd.to_string()).collect();
    say(&format!("fds {}", numbers.join(" ")))?;
    for (fd, target) in &open {
        say(&format!("fd {fd} {target}"))?;
    }
    Ok(())
}

/// Prints `uid=R,E gid=R,E groups=A,B pid=P pgid=G sid=S` (real and
/// effective ids; groups sorted, comma-separated, empty when none).
fn ids() -> io::Result<()> {
    let status = fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| -> Vec<String> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(|rest| rest.split_whitespace().map(String::from).collect())
            .unwrap_or_default()
    };
    let (uid, gid) = (field("Uid"), field("Gid"));
    let mut groups: Vec<u32> = field("Groups")
        .iter()
        .filter_map(|g| g.parse().ok())
        .collect();
    groups.sort_unstable();
    let groups: Vec<String> = groups.iter().map(u32::to_string).collect();

    // /proc/self/stat: `pid (comm) state ppid pgrp session ...`; comm may
    // hold spaces and parentheses, so parse after the last ')'.
    let stat = fs::read_to_string("/proc/self/stat")?;
    let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let (pgid, sid) = (fields.get(2).copied(), fields.get(3).copied());
    say(&format!(
        "uid={} gid={} groups={} pid={} pgid={} sid={}",
        uid.get(..2).unwrap_or_default().join(","),
        gid.get(..2).unwrap_or_default().join(","),
        groups.join(","),
        std::process::id(),
        pgid.unwrap_or("?"),
        sid.unwrap_or("?"),
    ))
}

fn to_stderr(text: &str) -> io::Result<()> {
    let mut err = io::stderr().lock();
    writeln!(err, "{text}")?;
    err.flush()
}

fn stderr_hex(hex: &str) -> io::Result<()> {
    let bad = || io::Error::new(io::ErrorKind::InvalidInput, "not hex");
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(bad)
        })
        .collect::<io::Result<Vec<u8>>>()?;
    let mut err = io::stderr().lock();
    err.write_all(&bytes)?;
    err.flush()
}

fn stderr_lines(n: &str) -> io::Result<()> {
    let n: u64 = n
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "not a count"))?;
    let mut err = io::BufWriter::new(io::stderr().lock());
    for i in 1..=n {
        writeln!(err, "line {i} of {n}")?;
    }
    err.flush()
}

fn stderr_flood(secs: &str) -> io::Result<()> {
    let until = Instant::now() + secs_arg(secs)?;
    // Buffered as `yes` is: the writes are as large as a pipe takes.
    let mut err = io::BufWriter::with_capacity(8192, io::stderr().lock());
    let mut lines = 0u64;
    while Instant::now() < until {
        for _ in 0..256 {
            lines += 1;
            writeln!(err, "flood {lines}")?;
        }
    }
    err.flush()?;
    say(&format!("flooded lines={lines}"))
}

fn exit_with(code: &str) -> ExitCode {
    let Ok(code) = code.parse::<u8>() else {
        return usage();
    };
    // The line is best effort: the test that wants it reads it, the exit code
    // is what matters.
    let _ = say(&format!("exiting pid={} code={code}", std::process::id()));
    ExitCode::from(code)
}

/// One blocking read on stdin: with the daemon's `--timeout` the socket has
/// SO_RCVTIMEO and the read fails with EAGAIN (`WouldBlock`).
fn read_timeout() -> io::Result<()> {
    say("reading")?;
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    // Read the fd directly, not through a buffered reader that could retry.
    let result = io::stdin().lock().read(&mut buf);
    let after = started.elapsed().as_millis();
    match result {
        Ok(n) => say(&format!("read ok {n} after={after}")),
        Err(err) => say(&format!("read error {:?} after={after}", err.kind())),
    }
}

fn sleep(secs: &str) -> io::Result<()> {
    let secs = secs_arg(secs)?;
    say(&format!("sleeping pid={}", std::process::id()))?;
    thread::sleep(secs);
    Ok(())
}

/// Std cannot change a signal disposition, but an ignored signal stays
/// ignored across exec: let sh ignore SIGTERM, then exec `sleep` in place
/// (same pid).
#[cfg(unix)]
fn no_term(secs: &str) -> io::Result<()> {
    use std::os::unix::process::CommandExt;
    secs_arg(secs)?;
    let err = Command::new("/bin/sh")
        .args(["-c", "trap '' TERM; exec \"$0\" sleep \"$1\""])
        .arg(env::current_exe()?)
        .arg(secs)
        .exec();
    Err(err)
}

#[cfg(not(unix))]
fn no_term(_secs: &str) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "no-term needs Unix",
    ))
}

fn tty() -> io::Result<()> {
    match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
    {
        Ok(_) => say("tty=open"),
        Err(err) => say(&format!("tty=error:{}", err.raw_os_error().unwrap_or(-1))),
    }
}

fn grandchild(secs: &str) -> io::Result<()> {
    secs_arg(secs)?;
    let mut child = Command::new(env::current_exe()?)
        .args(["sleep", secs])
        .stdin(Stdio::null())
        .spawn()?;
    say(&format!(
        "parent pid={} grandchild={}",
        std::process::id(),
        child.id()
    ))?;
    child.wait()?;
    Ok(())
}

fn pid() -> io::Result<()> {
    say(&format!("pid={}", std::process::id()))?;
    io::copy(&mut io::stdin().lock(), &mut io::sink())?;
    Ok(())
}

/// Reads stdin to EOF on this thread while another thread writes a pattern:
/// a child that needs both directions at once.
fn duplex(bytes: &str) -> io::Result<()> {
    let total: usize = bytes
        .parse()
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, format!("{bytes:?}: {err}")))?;
    let writer = thread::spawn(move || -> io::Result<usize> {
        let mut out = io::stdout().lock();
        let pattern: Vec<u8> = (0..total).map(|i| b'a' + (i % 26) as u8).collect();
        out.write_all(&pattern)?;
        out.flush()?;
        Ok(total)
    });
    let read = io::copy(&mut io::stdin().lock(), &mut io::sink())?;
    let wrote = writer.join().expect("the writer thread does not panic")?;
    say(&format!("\nduplex read={read} wrote={wrote}"))
}

fn cwd() -> io::Result<()> {
    say(&format!("cwd={}", env::current_dir()?.display()))
}

/// The options the daemon set on the connection, as the child sees them:
/// fd 0 is the accepted socket itself (the same open socket as the
/// daemon's), so getsockopt(2) on it reads what the daemon set.
#[cfg(unix)]
fn sockopts() -> io::Result<()> {
    let stdin = io::stdin();
    let socket = socket2::SockRef::from(&stdin);
    let millis = |timeout: Option<Duration>| {
        timeout.map_or_else(|| "none".to_owned(), |t| t.as_millis().to_string())
    };
    say(&format!(
        "nodelay={} keepalive={} keepidle={} linger={} rcvtimeo={} sndtimeo={}",
        socket.tcp_nodelay()?,
        socket.keepalive()?,
        socket.tcp_keepalive_time()?.as_secs(),
        socket
            .linger()?
            .map_or_else(|| "off".to_owned(), |l| l.as_secs().to_string()),
        millis(socket.read_timeout()?),
        millis(socket.write_timeout()?),
    ))
}

#[cfg(not(unix))]
fn sockopts() -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "sockopts needs Unix",
    ))
}

/// `fd0=KIND:ID fd1=KIND:ID fd2=KIND:ID`, from stat(2) on /proc/self/fd/N
/// (which follows the link to the open file itself): KIND is the file type,
/// ID is `DEV.INODE`, the same for two fds on the same pipe or socket.
#[cfg(unix)]
fn stdio_kinds() -> io::Result<String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let words: Vec<String> = (0..3)
        .map(|fd| match fs::metadata(format!("/proc/self/fd/{fd}")) {
            Ok(meta) => {
                let kind = meta.file_type();
                let kind = if kind.is_fifo() {
                    "fifo"
                } else if kind.is_socket() {
                    "socket"
                } else if kind.is_char_device() {
                    "char"
                } else if kind.is_file() {
                    "file"
                } else if kind.is_dir() {
                    "dir"
                } else {
                    "other"
                };
                format!("fd{fd}={kind}:{}.{}", meta.dev(), meta.ino())
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => format!("fd{fd}=closed:-"),
            Err(err) => format!("fd{fd}=error:{:?}", err.kind()),
        })
        .collect();
    Ok(words.join(" "))
}

#[cfg(not(unix))]
fn stdio_kinds() -> io::Result<String> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "stdio-kinds needs Unix",
    ))
}

/// Sees the end of its input, then keeps writing: output after stdin's EOF
/// must still reach the client (a half-closed connection is still open the
/// other way).
fn after_eof(millis: &str) -> io::Result<()> {
    let wait = millis
        .parse()
        .map(Duration::from_millis)
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, format!("{millis:?}: {err}")))?;
    let read = io::copy(&mut io::stdin().lock(), &mut io::sink())?;
    say(&format!("eof after {read} bytes"))?;
    thread::sleep(wait);
    say(&format!("after eof pid={}", std::process::id()))
}

/// Waits `millis`, reads stdin to EOF, and says how much came and how
/// large the stdin pipe is by then.
fn pipe_size(millis: &str) -> io::Result<()> {
    let wait = millis
        .parse()
        .map(Duration::from_millis)
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, format!("{millis:?}: {err}")))?;
    thread::sleep(wait);
    let read = io::copy(&mut io::stdin().lock(), &mut io::sink())?;
    say(&format!("bytes={read} stdin_pipe={}", stdin_pipe_size()?))
}

#[cfg(unix)]
fn nofile() -> io::Result<()> {
    use nix::sys::resource::{Resource, getrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    say(&format!("nofile={soft}:{hard}"))
}

#[cfg(not(unix))]
fn nofile() -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "nofile needs Unix",
    ))
}

#[cfg(target_os = "linux")]
fn stdin_pipe_size() -> io::Result<i32> {
    use nix::fcntl::{FcntlArg, fcntl};
    Ok(fcntl(io::stdin(), FcntlArg::F_GETPIPE_SZ)?)
}

#[cfg(not(target_os = "linux"))]
fn stdin_pipe_size() -> io::Result<i32> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "pipe-size needs Linux",
    ))
}

/// A guard for the pipe-mode tests: on Linux a test that passes in pipe
/// mode would mostly pass in socket mode too, so the child refuses to run
/// its mode unless fds 0, 1 and 2 are pipes, and says what they are instead
/// (on stdout, which in socket mode is the connection).
fn piped(mode: &str, rest: &[String]) -> ExitCode {
    match stdio_kinds() {
        Ok(kinds) => {
            let all_pipes = kinds.split_whitespace().all(|word| {
                word.split_once('=')
                    .is_some_and(|(_, k)| k.starts_with("fifo:"))
            });
            if all_pipes {
                return run(mode, rest);
            }
            let _ = say(&format!("not piped: {kinds}"));
        }
        Err(err) => {
            let _ = say(&format!("not piped: {err}"));
        }
    }
    ExitCode::from(71)
}

/// The variables a wait service's program may get (see `serve-socket`).
const WAIT_VARIABLES: [&str; 14] = [
    "PROTO",
    "CLIENT_IP",
    "CLIENT_PORT",
    "UDPREMOTEIP",
    "UDPREMOTEPORT",
    "UDPLOCALIP",
    "UDPLOCALPORT",
    "TCPREMOTEIP",
    "TCPREMOTEPORT",
    "TCPLOCALIP",
    "TCPLOCALPORT",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

/// A wait service's program: serves `count` clients on the socket it was
/// given as stdin after `delay` milliseconds, then waits `secs` seconds and
/// exits.
fn serve_socket(count: &str, secs: &str, delay: &str) -> io::Result<()> {
    let count: u32 = count
        .parse()
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, format!("{count:?}: {err}")))?;
    let linger = secs_arg(secs)?;
    let delay = delay
        .parse()
        .map(Duration::from_millis)
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, format!("{delay:?}: {err}")))?;
    thread::sleep(delay);
    let mut state = socket_state()?;
    for (name, value) in WAIT_VARIABLES
        .iter()
        .filter_map(|name| Some((name, env::var(name).ok()?)))
    {
        state.push_str(&format!(" {name}={value}"));
    }
    let pid = std::process::id();
    let socket = stdin_socket()?;
    let timeout = Some(Duration::from_secs(30));
    let answer = |i: u32, from: &dyn std::fmt::Display, got: &[u8]| {
        format!(
            "served {i} pid={pid} from={from} got={}{state}\n",
            String::from_utf8_lossy(got).trim()
        )
    };
    if socket.r#type()? == socket2::Type::DGRAM {
        let socket = std::net::UdpSocket::from(socket);
        socket.set_read_timeout(timeout)?;
        let mut buf = [0u8; 2048];
        for i in 1..=count {
            let (n, from) = socket.recv_from(&mut buf)?;
            socket.send_to(answer(i, &from, &buf[..n]).as_bytes(), from)?;
        }
    } else if socket.local_addr()?.as_socket().is_none() {
        // A Unix socket's listener: its clients have no address.
        #[cfg(unix)]
        {
            let listener =
                std::os::unix::net::UnixListener::from(std::os::fd::OwnedFd::from(socket));
            for i in 1..=count {
                let (mut conn, _) = listener.accept()?;
                conn.set_read_timeout(timeout)?;
                let line = read_line_from(&mut conn)?;
                conn.write_all(answer(i, &"unix", &line).as_bytes())?;
            }
        }
    } else {
        let listener = std::net::TcpListener::from(socket);
        for i in 1..=count {
            let (mut conn, from) = listener.accept()?;
            conn.set_read_timeout(timeout)?;
            let line = read_line_from(&mut conn)?;
            conn.write_all(answer(i, &from, &line).as_bytes())?;
        }
    }
    thread::sleep(linger);
    Ok(())
}

/// A line, without its newline, read a byte at a time.
fn read_line_from(conn: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while conn.read(&mut byte)? == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    Ok(line)
}

/// The socket that is stdin, as a socket of this program's own: a copy of
/// the descriptor.
#[cfg(unix)]
fn stdin_socket() -> io::Result<socket2::Socket> {
    socket2::SockRef::from(&io::stdin()).try_clone()
}

/// The socket that is the standard input handle, as a socket of this
/// program's own: a duplicate made in this process (WSADuplicateSocketW),
/// since Wine fails `sendto` and `getsockopt` on the inherited handle
/// itself with WSAENOTSOCK (Windows does not).
#[cfg(windows)]
#[allow(unsafe_code)]
fn stdin_socket() -> io::Result<socket2::Socket> {
    use std::os::windows::io::{AsRawHandle, FromRawSocket, RawSocket};
    // Winsock must be started before a socket is used: the standard
    // library starts it with its first socket.
    drop(std::net::UdpSocket::bind((
        std::net::Ipv4Addr::LOCALHOST,
        0,
    ))?);
    let handle = io::stdin().as_raw_handle();
    // SAFETY: a wait service's program is given the socket as its
    // standard handles, which stay open as long as this program runs; the
    // socket made of the handle here is never closed (`ManuallyDrop`).
    let inherited = std::mem::ManuallyDrop::new(unsafe {
        socket2::Socket::from_raw_socket(handle as RawSocket)
    });
    inherited.try_clone()
}

/// `fd3=same|other|none blocking=yes|no`: whether fd 3 is the socket of
/// fd 0 (socket activation's), and whether that socket is blocking (a
/// wait service's program must find it so).
#[cfg(unix)]
fn socket_state() -> io::Result<String> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    use std::os::unix::fs::MetadataExt;
    let id = |fd: u32| {
        fs::metadata(format!("/proc/self/fd/{fd}"))
            .ok()
            .map(|m| (m.dev(), m.ino()))
    };
    let fd3 = match (id(3), id(0)) {
        (None, _) => "none",
        (Some(three), Some(zero)) if three == zero => "same",
        _ => "other",
    };
    let flags = OFlag::from_bits_truncate(fcntl(io::stdin(), FcntlArg::F_GETFL)?);
    let blocking = if flags.contains(OFlag::O_NONBLOCK) {
        "no"
    } else {
        "yes"
    };
    Ok(format!(" fd3={fd3} blocking={blocking}"))
}

/// Windows has no fd 3, and no way to read a socket's blocking mode.
#[cfg(windows)]
fn socket_state() -> io::Result<String> {
    Ok(" fd3=none".to_owned())
}
