//! Pipe mode on Linux (`stdio = "pipe"`, `--stdio pipe`): the child gets
//! pipes instead of the socket and the daemon relays them, as on Windows.
//! Bytes arrive unchanged both ways at once, EOF travels both ways (the
//! client's half-close is the end of the child's stdin; the end of the
//! child's stdout is the end of the connection), `timeout` turns an idle
//! client into EOF for the child and gives up on a client that does not
//! read, such a client stalls nothing else, stderr goes to the connection or
//! the log, the environment is that of socket mode, and no descriptor leaks
//! to the child or stays in the daemon.
//!
//! Most of what pipe mode does looks the same to the client as socket mode,
//! so the served children run behind the test child's `piped` guard: it
//! refuses to run unless fds 0, 1 and 2 are pipes, and says what they are
//! instead. Without it these tests would also pass against a daemon that
//! ignored `stdio` and gave the child the socket.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    Daemon, WAIT, assert_stderr_logged, child, child_argv, children_of, client_variables, connect,
    connect_v6, field, has_status, is_root, is_timeout, open_fds, parse_env, read_line,
    read_to_eof, request, toml_service, v4, wait_gone,
};

/// Deadline for the bulk transfers: 16 MiB each way is well under a second
/// on loopback, but a debug build on a loaded CI box is slow.
const BULK_WAIT: Duration = Duration::from_secs(60);

/// One `[[service]]` in pipe mode on `{portN}`, running the test child's
/// `mode` behind the `piped` guard; `extra` more `key = value` lines.
fn pipe_service(name: &str, port: usize, mode: &[&str], extra: &[&str]) -> String {
    let argv: Vec<&str> = std::iter::once("piped")
        .chain(mode.iter().copied())
        .collect();
    let lines: Vec<&str> = std::iter::once("stdio = \"pipe\"")
        .chain(extra.iter().copied())
        .collect();
    toml_service(name, &format!("{{port{port}}}"), &child_argv(&argv), &lines)
}

/// A daemon with the one service `pipe` on `{port0}` (see [`pipe_service`]).
fn start_pipe(mode: &[&str]) -> Daemon {
    Daemon::builder()
        .toml(&pipe_service("pipe", 0, mode, &[]))
        .start()
}

/// Connects to 127.0.0.1:`port` with a 4 KiB receive buffer, and
/// half-closes: a client that sends nothing and will not read, whose
/// window fills at once.
fn connect_not_reading(port: u16) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("a small receive buffer");
    socket
        .connect_timeout(&v4(port).into(), WAIT)
        .expect("connect");
    let stream: TcpStream = socket.into();
    stream.shutdown(Shutdown::Write).expect("half-close");
    stream
}

// ---------------------------------------------------------------------------
// Pseudo-random data
// ---------------------------------------------------------------------------

/// A reproducible stream of pseudo-random bytes (xorshift64*): every byte
/// value, no period a relay could hide an off-by-a-block error in.
#[derive(Debug, Clone)]
struct Noise(u64);

impl Noise {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let word = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }

    fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut data = vec![0; len];
        Self::new(seed).fill(&mut data);
        data
    }
}

/// FNV-1a, 64 bits: a digest of a stream, to compare without keeping it.
#[derive(Debug, Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn update(&mut self, data: &[u8]) {
        for &byte in data {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// What one direction of a bulk transfer carried.
#[derive(Debug, PartialEq, Eq)]
struct Digest {
    len: u64,
    fnv: u64,
}

/// Sends `len` bytes of [`Noise`] from `seed` in 64 KiB writes; with
/// `pause`, stops after `pause.0` bytes until `pause.1` says go on. Then
/// half-closes. Returns what it sent.
fn send_noise(
    stream: &mut TcpStream,
    seed: u64,
    len: usize,
    pause: Option<(usize, mpsc::Receiver<()>)>,
) -> io::Result<Digest> {
    let mut noise = Noise::new(seed);
    let mut fnv = Fnv::new();
    let mut block = vec![0u8; 64 * 1024];
    let mut sent = 0;
    let mut pause = pause;
    while sent < len {
        if let Some((at, go_on)) = &pause {
            if sent >= *at {
                go_on.recv_timeout(BULK_WAIT).map_err(io::Error::other)?;
                pause = None;
            }
        }
        let n = block.len().min(len - sent);
        noise.fill(&mut block[..n]);
        stream.write_all(&block[..n])?;
        fnv.update(&block[..n]);
        sent += n;
    }
    stream.shutdown(Shutdown::Write)?;
    Ok(Digest {
        len: sent as u64,
        fnv: fnv.0,
    })
}

/// What a bulk reader got: the length and digest of all of it, the offset
/// of the first byte that differs from the noise, and its first bytes (for
/// a report: a child that refused to run says why there).
#[derive(Debug)]
struct Received {
    digest: Digest,
    first_difference: Option<u64>,
    head: Vec<u8>,
}

/// Reads until EOF (or `timeout`, an error), comparing each byte with
/// [`Noise`] from `seed` as it arrives.
fn receive_noise(stream: &mut TcpStream, seed: u64, timeout: Duration) -> io::Result<Received> {
    const HEAD: usize = 200;
    let deadline = Instant::now() + timeout;
    let mut expected = Noise::new(seed);
    let mut fnv = Fnv::new();
    let mut len = 0u64;
    let mut first_difference = None;
    let mut head = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut want = vec![0u8; 64 * 1024];
    // Noise comes in 8-byte words: keep the unused tail of the last one.
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no EOF within {timeout:?}, after {len} bytes"),
            ));
        }
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if is_timeout(&err) || err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                return Err(io::Error::new(
                    err.kind(),
                    format!(
                        "{err} after {len} bytes, starting {:?}",
                        String::from_utf8_lossy(&head)
                    ),
                ));
            }
        };
        fnv.update(&buf[..n]);
        let room = HEAD.saturating_sub(head.len()).min(n);
        head.extend_from_slice(&buf[..room]);
        while pending.len() < n {
            let words = (n - pending.len()).div_ceil(8) * 8;
            expected.fill(&mut want[..words]);
            pending.extend_from_slice(&want[..words]);
        }
        if first_difference.is_none() {
            first_difference = (0..n)
                .find(|&i| buf[i] != pending[i])
                .map(|at| len + at as u64);
        }
        pending.drain(..n);
        len += n as u64;
    }
    Ok(Received {
        digest: Digest { len, fnv: fnv.0 },
        first_difference,
        head,
    })
}

/// Runs a bulk echo through `stream`: a thread sends `len` bytes of noise
/// (pausing as [`send_noise`] says) while this one reads the echo. Panics,
/// saying `who`, unless the echo is the same length and content and ends
/// with EOF.
fn echo_noise(
    mut stream: TcpStream,
    seed: u64,
    len: usize,
    pause: Option<(usize, mpsc::Receiver<()>)>,
    who: &str,
) {
    let mut writer = stream.try_clone().expect("clone the stream");
    let sender = thread::spawn(move || send_noise(&mut writer, seed, len, pause));
    let received = receive_noise(&mut stream, seed, BULK_WAIT)
        .unwrap_or_else(|err| panic!("{who}: read the echo: {err}"));
    let head = received.head.escape_ascii();
    let sent = sender
        .join()
        .expect("the sender does not panic")
        .unwrap_or_else(|err| {
            panic!(
                "{who}: send {len} bytes and half-close: {err}; received {} bytes, starting \"{head}\"",
                received.digest.len
            )
        });
    assert_eq!(
        received.digest.len, sent.len,
        "{who}: echoed length (first difference at {:?}; the echo starts \"{head}\")",
        received.first_difference
    );
    assert_eq!(
        received.first_difference, None,
        "{who}: the echo differs from what was sent"
    );
    assert_eq!(received.digest, sent, "{who}: digest of the echo");
}

// ---------------------------------------------------------------------------
// The data path
// ---------------------------------------------------------------------------

/// Pipe mode asked for either way, `stdio = "pipe"` in a TOML service or
/// `--stdio pipe` for a flat config's services: the child gets pipes (the
/// `piped` guard), and what the client sends comes back byte for byte,
/// followed by EOF once the client half-closes; the child exits 0.
#[test]
fn echo_round_trip_with_toml_stdio_and_with_the_flag() {
    const LEN: usize = 256 * 1024;
    let daemons = [
        (
            "stdio = \"pipe\"",
            Daemon::builder()
                .toml(&pipe_service("echo", 0, &["echo"], &[]))
                .start(),
        ),
        (
            "--stdio pipe",
            Daemon::builder()
                .service("none", &child("piped echo"))
                .args(&["--stdio", "pipe"])
                .start(),
        ),
    ];
    for (seed, (how, daemon)) in (1..).zip(&daemons) {
        let stream = connect(daemon.port(0));
        let client = stream.local_addr().expect("local_addr");
        echo_noise(stream, seed, LEN, None, how);
        let (_, pid) = daemon.session_start(client);
        let end = daemon.session_end(pid);
        assert!(has_status(&end, "exit 0"), "{how}: {end}");
    }
}

/// The child's fds 0, 1 and 2, by file type and identity (the test child's
/// `stdio-kinds`): in pipe mode three FIFOs, stdin its own pipe, stderr the
/// same pipe as stdout, or a third pipe (the log's) with `stderr = "log"`;
/// in socket mode (the control) all three are the one socket.
#[test]
fn stdio_is_pipes_in_pipe_mode_and_the_socket_in_socket_mode() {
    let kinds = child_argv(&["stdio-kinds"]);
    let config = [
        toml_service("pipe", "{port0}", &kinds, &["stdio = \"pipe\""]),
        toml_service(
            "pipe-log",
            "{port1}",
            &kinds,
            &["stdio = \"pipe\"", "stderr = \"log\""],
        ),
        toml_service("socket", "{port2}", &kinds, &[]),
    ]
    .concat();
    let daemon = Daemon::builder().toml(&config).start();
    let probe = |port: u16| -> Vec<(String, String)> {
        let output = request(port, b"");
        let line = output.trim_end();
        (0..3)
            .map(|fd| {
                let word = field(line, &format!("fd{fd}"))
                    .unwrap_or_else(|| panic!("no fd{fd}= in {output:?}"));
                let (kind, id) = word.split_once(':').expect("KIND:ID");
                (kind.to_owned(), id.to_owned())
            })
            .collect()
    };

    let pipe = probe(daemon.port(0));
    let kinds: Vec<&str> = pipe.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["fifo"; 3], "pipe mode: {pipe:?}");
    assert_eq!(pipe[2].1, pipe[1].1, "stderr is stdout's pipe: {pipe:?}");
    assert_ne!(pipe[0].1, pipe[1].1, "stdin is a pipe of its own: {pipe:?}");

    let log = probe(daemon.port(1));
    let kinds: Vec<&str> = log.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["fifo"; 3], "pipe mode, stderr = log: {log:?}");
    assert!(
        log[2].1 != log[1].1 && log[2].1 != log[0].1,
        "stderr is the log's pipe, neither stdin's nor stdout's: {log:?}"
    );

    let socket = probe(daemon.port(2));
    let kinds: Vec<&str> = socket.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["socket"; 3], "socket mode: {socket:?}");
    assert!(
        socket.iter().all(|(_, id)| *id == socket[0].1),
        "socket mode: one socket on all three: {socket:?}"
    );
}

/// 16 MiB of pseudo-random bytes each way at once through an echo child:
/// the relay moves both directions together (a relay that did one at a
/// time would deadlock on full buffers) and loses, repeats or reorders
/// nothing. Lengths and digests are compared, and the offset of the first
/// wrong byte is named.
#[test]
fn sixteen_mebibytes_each_way_at_once_arrive_byte_exact() {
    const LEN: usize = 16 << 20;
    let daemon = start_pipe(&["echo"]);
    let stream = connect(daemon.port(0));
    let client = stream.local_addr().expect("local_addr");
    echo_noise(stream, 0x5eed_0016, LEN, None, "16 MiB echo");
    let (_, pid) = daemon.session_start(client);
    let end = daemon.session_end(pid);
    assert!(has_status(&end, "exit 0"), "{end}");
}

/// A bulk session's pipe grows to 1 MiB, fewer and larger splices (when
/// the daemon runs as root, as in CI: an ordinary user's pipes keep their
/// 64 KiB, see splice.rs); a session that sends one line keeps the default.
/// The child waits before reading, so the first splice fills its pipe.
#[test]
fn a_bulk_session_pipe_grows_and_a_small_one_does_not() {
    let daemon = start_pipe(&["pipe-size", "200"]);
    let bulk = if is_root() { 1 << 20 } else { 64 << 10 };
    for (len, expected) in [(4usize << 20, bulk), (6, 64 << 10)] {
        let mut stream = connect(daemon.port(0));
        let sender = {
            let mut stream = stream.try_clone().expect("clone the stream");
            thread::spawn(move || {
                stream.write_all(&vec![b'x'; len]).expect("send");
                stream.shutdown(Shutdown::Write).expect("half-close");
            })
        };
        let report = read_to_eof(&mut stream, BULK_WAIT).expect("the report, then EOF");
        sender.join().expect("the sender");
        assert_eq!(
            String::from_utf8_lossy(&report),
            format!("bytes={len} stdin_pipe={expected}\n"),
            "{len} bytes sent"
        );
    }
}

/// The client's half-close is the end of the child's stdin, and only that:
/// what the child writes after it saw EOF (here 300 ms later) still
/// reaches the client, and the client's EOF comes after it, when the child
/// is done.
#[test]
fn half_close_is_eof_for_the_child_and_its_later_output_still_arrives() {
    let daemon = start_pipe(&["after-eof", "300"]);
    let mut stream = connect(daemon.port(0));
    let client = stream.local_addr().expect("local_addr");
    let input = b"line before the half-close\n".repeat(100);
    stream.write_all(&input).expect("send");
    stream.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(
        read_line(&mut stream, WAIT),
        format!("eof after {} bytes", input.len()),
        "the child sees EOF after all the input"
    );
    let later = read_line(&mut stream, WAIT);
    let (_, pid) = daemon.session_start(client);
    assert_eq!(later, format!("after eof pid={pid}"), "output after EOF");
    let rest = read_to_eof(&mut stream, WAIT).expect("EOF once the child is done");
    assert!(rest.is_empty(), "nothing after the last line: {rest:?}");
    let end = daemon.session_end(pid);
    assert!(has_status(&end, "exit 0"), "{end}");
}

/// `timeout` the other way: a client that stops reading while the child
/// still has output. After `timeout` seconds without room on the
/// connection the relay gives up: the child's stdout breaks (its write
/// fails with EPIPE, or SIGPIPE ends it) and the session ends, instead of
/// waiting as long as the client likes.
#[test]
fn timeout_gives_up_on_a_client_that_does_not_read() {
    let daemon = Daemon::builder()
        .toml(&pipe_service(
            "writer",
            0,
            &["duplex", "16000000"],
            &["timeout = 1"],
        ))
        .start();
    let connected = Instant::now();
    let stalled = connect_not_reading(daemon.port(0));
    let client = stalled.local_addr().expect("local_addr");
    let (_, pid) = daemon.session_start(client);
    let end = daemon.session_end(pid);
    let ended = connected.elapsed();
    assert!(
        has_status(&end, "exit 70") || has_status(&end, &format!("signal {}", libc::SIGPIPE)),
        "the child's output should break: {end}"
    );
    assert!(
        ended >= Duration::from_millis(950),
        "the session ended {ended:?} after connecting, before the 1 s timeout"
    );
    drop(stalled);
}

/// A child that exits at once without reading, while the client keeps
/// sending: the client sees the child's output and EOF, or a reset (the
/// daemon closed a socket with unread data, RFC 1122 4.2.2.13), never a
/// hang, and its writes fail before long; the session end is logged with
/// the child's status, and the next connection is served as usual.
#[test]
fn child_that_exits_without_reading_ends_the_session_and_the_next_is_served() {
    let mut daemon = start_pipe(&["exit", "3"]);
    let mut stream = connect(daemon.port(0));
    let client = stream.local_addr().expect("local_addr");
    let mut writer = stream.try_clone().expect("clone the stream");
    let sender = thread::spawn(move || -> Result<usize, String> {
        let deadline = Instant::now() + WAIT;
        let block = [b'x'; 64 * 1024];
        let mut sent = 0;
        while Instant::now() < deadline {
            match writer.write(&block) {
                Ok(n) => sent += n,
                Err(err) if is_timeout(&err) || err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Ok(sent),
            }
        }
        Err(format!(
            "the connection still took data {WAIT:?} after the child exited ({sent} bytes)"
        ))
    });
    let (_, pid) = daemon.session_start(client);
    let expected = format!("exiting pid={pid} code=3\n");
    match read_to_eof(&mut stream, WAIT) {
        Ok(data) => assert!(
            data.is_empty() || data == expected.as_bytes(),
            "the child's output or nothing, then EOF: {:?}",
            String::from_utf8_lossy(&data)
        ),
        Err(err) => assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}"),
    }
    let end = daemon.session_end(pid);
    assert!(has_status(&end, "exit 3"), "{end}");
    sender
        .join()
        .expect("the sender does not panic")
        .unwrap_or_else(|err| panic!("{err}"));

    let mut stream = connect(daemon.port(0));
    let client = stream.local_addr().expect("local_addr");
    let output = read_to_eof(&mut stream, WAIT).expect("the next session's output and EOF");
    let (_, pid) = daemon.session_start(client);
    assert_eq!(
        String::from_utf8_lossy(&output),
        format!("exiting pid={pid} code=3\n"),
        "the next session"
    );
    let end = daemon.session_end(pid);
    assert!(has_status(&end, "exit 3"), "{end}");
    assert!(daemon.exited().is_none(), "the daemon is still running");
}

/// A client that resets (SO_LINGER 0, then close) in the middle of a
/// transfer, with data in flight both ways: its session ends and is logged,
/// its child is gone, and a bulk echo that runs across the reset (paused
/// half-way until it happened) arrives byte for byte.
#[test]
fn client_reset_mid_transfer_ends_its_session_and_spares_another() {
    const LEN: usize = 8 << 20;
    let mut daemon = start_pipe(&["echo"]);

    let other = connect(daemon.port(0));
    let other_client = other.local_addr().expect("local_addr");
    let (reset_done, go_on) = mpsc::channel();
    let transfer = thread::spawn(move || {
        echo_noise(
            other,
            0x0bad_cafe,
            LEN,
            Some((LEN / 2, go_on)),
            "the other session",
        );
    });

    let mut stream = connect(daemon.port(0));
    let client = stream.local_addr().expect("local_addr");
    let (_, pid) = daemon.session_start(client);
    stream
        .write_all(&Noise::bytes(7, 256 * 1024))
        .expect("send before the reset");
    let mut some = vec![0u8; 64 * 1024];
    stream
        .read_exact(&mut some)
        .expect("the echo is flowing before the reset");
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(stream);
    let end = daemon.session_end(pid);
    assert!(end.contains("status="), "{end}");
    wait_gone(pid, WAIT);
    reset_done.send(()).expect("the other session waits");

    transfer.join().expect("the other session arrives intact");
    let (_, other_pid) = daemon.session_start(other_client);
    let end = daemon.session_end(other_pid);
    assert!(has_status(&end, "exit 0"), "the other session: {end}");
    assert!(daemon.exited().is_none(), "the daemon is still running");
}

/// A client that never reads, with less room in its receive buffer than
/// the child's output: once the child has exited and the relay has handed
/// all of its output to the connection, closing the daemon's end waits for
/// nothing (in socket mode that close, with SO_LINGER, is the child's, not
/// the daemon's), so another client is answered at once all the while.
/// Regression: the relay closed the socket with the service's SO_LINGER
/// still on, and on Linux such a close blocks even on a non-blocking
/// socket: the runtime thread waited `--linger-timeout` (60 s) for the
/// client to read, and the whole daemon stood still.
#[test]
fn a_client_that_does_not_read_does_not_stall_the_daemon() {
    /// Far more than a 4 KiB receive window, far less than the pipe and
    /// the daemon's send buffer together: the relay finishes with most of
    /// it unacknowledged.
    const OUTPUT: &str = "20000";
    const ANSWER_WITHIN: Duration = Duration::from_secs(5);
    let config = [
        pipe_service("writer", 0, &["duplex", OUTPUT], &[]),
        pipe_service("echo", 1, &["echo"], &[]),
    ]
    .concat();
    let daemon = Daemon::builder().toml(&config).start();
    let stalled = connect_not_reading(daemon.port(0));
    let client = stalled.local_addr().expect("local_addr");
    let (_, pid) = daemon.session_start(client);

    // Probe across the child's exit and the end of its relay.
    let probing = Instant::now();
    let mut probes = 0;
    while probing.elapsed() < Duration::from_secs(2) {
        let asked = Instant::now();
        let mut stream = connect(daemon.port(1));
        let line = format!("probe {probes}\n");
        stream.write_all(line.as_bytes()).expect("send a probe");
        stream.shutdown(Shutdown::Write).expect("half-close");
        let answer = read_to_eof(&mut stream, ANSWER_WITHIN).unwrap_or_else(|err| {
            panic!(
                "probe {probes}, {:?} after the client that does not read connected: {err}",
                asked.duration_since(probing)
            )
        });
        assert_eq!(String::from_utf8_lossy(&answer), line);
        probes += 1;
        thread::sleep(Duration::from_millis(100));
    }
    let end = daemon.session_end(pid);
    assert!(has_status(&end, "exit 0"), "the writer: {end}");
    assert!(probes > 0, "no probe ran");
    drop(stalled);
}

// ---------------------------------------------------------------------------
// stderr, environment, descriptors
// ---------------------------------------------------------------------------

/// In pipe mode stderr is stdout's pipe by default, so what the child
/// writes there reaches the client; with `stderr = "log"` it becomes a log
/// line with the service and the pid, and the client gets nothing.
#[test]
fn stderr_reaches_the_client_by_default_and_the_log_with_stderr_log() {
    const MARK: &str = "pipe-stderr-mark-3f7";
    let config = [
        pipe_service("errsock", 0, &["stderr", MARK], &[]),
        pipe_service("errlog", 1, &["stderr", MARK], &["stderr = \"log\""]),
    ]
    .concat();
    let daemon = Daemon::builder().toml(&config).start();
    let logged =
        |daemon: &Daemon| daemon.count(|l| l.contains(MARK) && !l.contains("listening on"));

    let mut stream = connect(daemon.port(0));
    let client = stream.local_addr().expect("local_addr");
    stream.shutdown(Shutdown::Write).expect("half-close");
    let data = read_to_eof(&mut stream, WAIT).expect("stderr, then EOF");
    assert_eq!(String::from_utf8_lossy(&data), format!("{MARK}\n"));
    let (_, pid) = daemon.session_start(client);
    daemon.session_end(pid);
    assert_eq!(logged(&daemon), 0, "the default sent stderr to the log");

    assert_stderr_logged(&daemon, daemon.port(1), "errlog", MARK);
}

/// The connection's variables are set in pipe mode as in socket mode, for
/// an IPv4 and an IPv6 client: the daemon, not the socket on fd 0, is where
/// the child's addresses come from.
#[test]
fn client_address_variables_are_set_in_pipe_mode() {
    const VARS: [&str; 8] = [
        "env",
        "CLIENT_IP",
        "CLIENT_PORT",
        "PROTO",
        "TCPREMOTEIP",
        "TCPREMOTEPORT",
        "TCPLOCALIP",
        "TCPLOCALPORT",
    ];
    let daemon = start_pipe(&VARS);
    for mut stream in [connect(daemon.port(0)), connect_v6(daemon.port(0))] {
        let client = stream.local_addr().expect("local_addr");
        let server = stream.peer_addr().expect("peer_addr");
        stream.shutdown(Shutdown::Write).expect("half-close");
        let output = read_to_eof(&mut stream, WAIT).expect("the env report");
        let output = String::from_utf8_lossy(&output);
        let env: HashMap<String, String> = parse_env(&output).into_iter().collect();
        let expected = client_variables(client, server);
        assert_eq!(env, expected, "client {client} (output {output:?})");
    }
}

/// The daemon's open descriptors with their targets, for a report.
fn fd_report(pid: u32) -> Vec<String> {
    open_fds(pid)
        .into_iter()
        .map(|fd| {
            let target = fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                .map_or_else(|e| format!("({e})"), |t| t.display().to_string());
            format!("{fd} -> {target}")
        })
        .collect()
}

/// Waits until the daemon has no child and the same number of fds for
/// 200 ms; returns that number.
fn settled_fds(daemon: &Daemon) -> usize {
    let pid = daemon.pid();
    let deadline = Instant::now() + WAIT;
    loop {
        let now = open_fds(pid).len();
        if children_of(pid).is_empty() {
            thread::sleep(Duration::from_millis(200));
            if open_fds(pid).len() == now && children_of(pid).is_empty() {
                return now;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the daemon's fds never settle:\n{}",
            fd_report(pid).join("\n")
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// No descriptor leaks either way. The child has exactly fds 0, 1 and 2,
/// all pipes (none of the daemon's relay ends or the socket); and after 50
/// pipe-mode sessions, ended by the client's EOF or by the child's exit and
/// five at a time, the daemon holds as many fds as before them.
#[test]
fn no_descriptor_leaks_to_the_child_or_stays_in_the_daemon() {
    const CLIENTS: usize = 5;
    const ROUNDS: usize = 10;
    let config = [
        pipe_service("fds", 0, &["fds"], &[]),
        pipe_service("echo", 1, &["echo"], &[]),
        pipe_service("exit", 2, &["exit", "0"], &[]),
    ]
    .concat();
    let daemon = Daemon::builder().toml(&config).start();

    let output = request(daemon.port(0), b"");
    let mut lines = output.lines();
    assert_eq!(lines.next(), Some("fds 0 1 2"), "{output}");
    let targets: Vec<&str> = lines.collect();
    assert_eq!(targets.len(), 3, "{output}");
    for (fd, line) in targets.iter().enumerate() {
        assert!(
            line.starts_with(&format!("fd {fd} pipe:[")),
            "fd {fd} should be a pipe: {output}"
        );
    }
    // A warm-up of each kind of session, so the baseline holds whatever the
    // daemon keeps once it has served one.
    assert_eq!(request(daemon.port(1), b"warm\n"), "warm\n");
    assert!(request(daemon.port(2), b"").starts_with("exiting pid="));
    let baseline = settled_fds(&daemon);
    let before = fd_report(daemon.pid());

    let (echo_port, exit_port) = (daemon.port(1), daemon.port(2));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            thread::spawn(move || {
                for round in 0..ROUNDS {
                    if (c + round) % 2 == 0 {
                        let line = format!("client {c} round {round}\n");
                        assert_eq!(request(echo_port, line.as_bytes()), line);
                    } else {
                        let said = request(exit_port, b"");
                        assert!(said.starts_with("exiting pid="), "{said:?}");
                    }
                }
            })
        })
        .collect();
    let failed = clients.into_iter().filter_map(|c| c.join().err()).count();
    assert_eq!(failed, 0, "clients that failed (see above)");
    daemon.wait_for_count("`session end`", 3 + CLIENTS * ROUNDS, WAIT, |l| {
        l.contains("session end")
    });

    let deadline = Instant::now() + WAIT;
    while open_fds(daemon.pid()).len() != baseline {
        assert!(
            Instant::now() < deadline,
            "the daemon holds {} fds after {} sessions, {baseline} before:\nbefore:\n{}\nnow:\n{}",
            open_fds(daemon.pid()).len(),
            CLIENTS * ROUNDS,
            before.join("\n"),
            fd_report(daemon.pid()).join("\n")
        );
        thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// Whether a daemon line is the old "only on Windows" warning about stdio:
/// `stdio is for Windows; ignored on this OS` (TOML) or `--stdio pipe is
/// for Windows` (the flag).
fn is_windows_only_warning(line: &str) -> bool {
    line.contains("is for Windows") || (line.contains("stdio") && line.contains("ignored"))
}

/// On Linux pipe mode is a setting like any other: `--check` on a TOML file
/// with `stdio = "pipe"` (in `[defaults]` and in a service), and on a flat
/// config with `--stdio pipe`, passes without the "stdio is for Windows"
/// warning, and a daemon started with `--stdio pipe` does not print it
/// either and serves in pipe mode.
#[test]
fn stdio_pipe_loads_without_the_windows_only_warning() {
    let text = format!(
        "[defaults]\nstdio = \"pipe\"\n\n{}",
        pipe_service("pipe", 0, &["echo"], &[])
    );
    let flat = Daemon::builder()
        .service("none", &child("piped echo"))
        .args(&["--stdio", "pipe"]);
    for (how, builder) in [
        ("TOML", Daemon::builder().toml(&text)),
        ("flat, --stdio pipe", flat.clone()),
    ] {
        let mut check = builder.arg("--check").spawn();
        let status = check.wait_exit(WAIT);
        assert_eq!(status.code(), Some(0), "{how}: --check");
        let warned = check
            .lines()
            .into_iter()
            .find(|l| is_windows_only_warning(l));
        assert_eq!(warned, None, "{how}: --check");
    }

    let daemon = flat.start();
    let port = daemon.port(0);
    assert_eq!(
        request(port, b"served in pipe mode\n"),
        "served in pipe mode\n"
    );
    let warned = daemon
        .lines()
        .into_iter()
        .find(|l| is_windows_only_warning(l));
    assert_eq!(warned, None, "a daemon started with --stdio pipe");
}
