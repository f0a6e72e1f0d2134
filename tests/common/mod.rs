//! Harness for tests that drive the real `wininetd` binary: a [`Daemon`]
//! started from a config written into a temp dir, its stderr captured line by
//! line, waits on deadlines, clients on loopback, and a look at processes
//! through `/proc`. Linux and Windows (under Wine here): what differs
//! between them for the tests that run on both is named once ("What
//! differs between the systems"), and what only Unix has (signals,
//! `/proc`, `useradd`) is marked `cfg(unix)`.
//!
//! A daemon is killed with its sessions when dropped (SIGKILL to its group
//! and theirs; TerminateProcess on Windows, whose job objects end them). If
//! the test is panicking (or `WININETD_TEST_SHOW` is set), the config, the
//! command line and everything the daemon printed go to the test output
//! first.

// Each test crate that includes this module uses a different part of it.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
#[cfg(unix)]
use std::os::unix::fs::PermissionsExt;
#[cfg(unix)]
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// The daemon under test.
pub const DAEMON: &str = env!("CARGO_BIN_EXE_wininetd");
/// The helper child (tests/child/main.rs).
pub const CHILD: &str = env!("CARGO_BIN_EXE_wininetd-testchild");

/// Default deadline for anything the daemon should do "soon". Generous: the
/// suite runs its tests in parallel and a loaded CI box is slow.
pub const WAIT: Duration = Duration::from_secs(15);

/// A command line that runs the test child in `mode` (e.g. `"echo"`,
/// `"env CLIENT_IP"`).
#[cfg(unix)]
pub fn child(mode: &str) -> String {
    format!("{CHILD} {mode}")
}

/// A command line that runs the test child in `mode`, its path quoted as
/// CreateProcess wants.
#[cfg(windows)]
pub fn child(mode: &str) -> String {
    format!("\"{}\" {mode}", windows_path(CHILD))
}

/// A path as Windows programs need it. Cargo hands the binaries' paths over
/// as the host sees them (`/tmp/target/...` when cross-compiling on Linux);
/// `std::path::absolute` (GetFullPathNameW) makes them `Z:\tmp\target\...`
/// under Wine and leaves a Windows path as it is.
#[cfg(windows)]
pub fn windows_path(path: &str) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|e| panic!("cannot make {path} absolute: {e}"))
        .display()
        .to_string()
}

/// A path as the daemon sees it (and as this test process must name it to
/// open it, on Windows).
pub fn daemon_path(path: &Path) -> PathBuf {
    #[cfg(windows)]
    return PathBuf::from(windows_path(&path.display().to_string()));
    #[cfg(unix)]
    return path.to_owned();
}

// ---------------------------------------------------------------------------
// What differs between the systems, for the tests that run on both
// ---------------------------------------------------------------------------

/// How a `listening on` line writes a service listening on every address
/// of its port: `[::]` (one dual-stack socket); on Windows `0.0.0.0` too,
/// where the system (or Wine) has no IPv6.
#[cfg(unix)]
pub const EVERY_ADDRESS: &[&str] = &["[::]"];
#[cfg(windows)]
pub const EVERY_ADDRESS: &[&str] = &["[::]", "0.0.0.0"];

/// The stdio modes in which a program that reads and writes at once is
/// served. Both on Linux; on Windows such a program stalls on a synchronous
/// socket, which is what the pipe relay is for, and Wine does not show the
/// stall (wine.md), so only the relay is tested there.
#[cfg(unix)]
pub const DUPLEX_MODES: &[&str] = &["socket", "pipe"];
#[cfg(windows)]
pub const DUPLEX_MODES: &[&str] = &["pipe"];

/// The test child's arguments that run a mode in pipe mode only: on Linux
/// its `piped` guard, which refuses to run unless fds 0, 1 and 2 are pipes
/// (so that a daemon which ignored `stdio` fails the test); Windows has no
/// such guard.
#[cfg(unix)]
pub const PIPED: &[&str] = &["piped"];
#[cfg(windows)]
pub const PIPED: &[&str] = &[];

/// Whether a wait service's program also finds its socket as fd 3 with
/// `LISTEN_FDS`, `LISTEN_PID` and `LISTEN_FDNAMES` (systemd's socket
/// activation): on Unix; on Windows the socket is the standard handles only.
pub const SOCKET_ACTIVATION: bool = cfg!(unix);

/// A program that does not exist, and the words of the reason the daemon
/// logs when it cannot start it.
#[cfg(unix)]
pub const MISSING_PROGRAM: (&str, &str) = (
    "/nonexistent/wininetd-test-missing-program",
    "No such file or directory",
);
#[cfg(windows)]
pub const MISSING_PROGRAM: (&str, &str) = (
    r"C:\wininetd-no-such-dir\no-such-program.exe",
    "(os error 3)",
);

/// How the test child's `args` mode prints the words of the command line
/// `args 'one two' three` given as a string: on Unix it is split like a
/// shell would (single quotes group), on Windows as CreateProcess's
/// programs split it (single quotes are characters).
#[cfg(unix)]
pub const SINGLE_QUOTED_ARGS: &str = "arg[0]=one two\narg[1]=three\nargc=2\n";
#[cfg(windows)]
pub const SINGLE_QUOTED_ARGS: &str = "arg[0]='one\narg[1]=two'\narg[2]=three\nargc=3\n";

/// Whether the daemon looks the user of a service line up, and reports one
/// that does not exist as `unknown user`: on Windows always; on Unix only
/// as root, since a daemon that is not root cannot run a program as
/// anyone, and says so instead.
pub fn users_are_looked_up() -> bool {
    #[cfg(unix)]
    return is_root();
    #[cfg(windows)]
    return true;
}

/// Whether `reported` (a path a program printed, e.g. its current
/// directory) names the directory `expected`: on Unix once symbolic links
/// are resolved, on Windows case aside and with or without a trailing
/// backslash.
pub fn same_dir(reported: &str, expected: &Path) -> bool {
    #[cfg(unix)]
    return Path::new(reported) == expected.canonicalize().expect("the directory exists");
    #[cfg(windows)]
    return reported
        .trim_end_matches('\\')
        .eq_ignore_ascii_case(expected.display().to_string().trim_end_matches('\\'));
}

// ---------------------------------------------------------------------------
// Captured output
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Lines {
    lines: Vec<String>,
    closed: bool,
}

/// Lines read from one of the daemon's pipes by a background thread.
#[derive(Debug, Default)]
struct Captured {
    state: Mutex<Lines>,
    changed: Condvar,
}

impl Captured {
    fn start(pipe: impl Read + Send + 'static) -> Arc<Self> {
        let captured = Arc::new(Self::default());
        let writer = Arc::clone(&captured);
        thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf);
                        let line = strip_ansi(line.trim_end_matches(['\n', '\r']));
                        writer.lock().lines.push(line);
                        writer.changed.notify_all();
                    }
                }
            }
            writer.lock().closed = true;
            writer.changed.notify_all();
        });
        captured
    }

    fn lock(&self) -> MutexGuard<'_, Lines> {
        // A panicking test thread must not hide the output: ignore poisoning.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Calls `check` on every change until it returns `Some` or the deadline
    /// passes (`Err` with nothing).
    fn wait_until<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&Lines) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if let Some(found) = check(&state) {
                return Some(found);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    fn snapshot(&self) -> Vec<String> {
        self.lock().lines.clone()
    }
}

/// Drops ANSI escape sequences (`ESC [ ... letter`), so matching does not
/// depend on whether the log is coloured.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Log line matching
// ---------------------------------------------------------------------------

/// Whether `line` holds `token` (e.g. `pid=123`) as a whole word: `pid=12`
/// does not match `pid=123`, `xpid=1` does not match `pid=1`.
pub fn has_token(line: &str, token: &str) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    line.match_indices(token).any(|(at, _)| {
        let before_ok = line[..at].chars().next_back().is_none_or(|c| !word(c));
        let after_ok = line[at + token.len()..]
            .chars()
            .next()
            .is_none_or(|c| !word(c));
        before_ok && after_ok
    })
}

/// The digits after `key=` in `line`, e.g. `pid` in `... pid=123 ...`.
pub fn number_after(line: &str, key: &str) -> Option<u32> {
    let pattern = format!("{key}=");
    line.match_indices(&pattern).find_map(|(at, _)| {
        let starts_word = line[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric() && c != '_');
        let digits: String = line[at + pattern.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if starts_word {
            digits.parse().ok()
        } else {
            None
        }
    })
}

/// How the daemon writes a peer: plain IPv4 (never `::ffff:`), IPv6 in
/// brackets.
pub fn peer_text(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("{v4}:{}", addr.port()),
            None => format!("[{v6}]:{}", addr.port()),
        },
        IpAddr::V4(v4) => format!("{v4}:{}", addr.port()),
    }
}

// ---------------------------------------------------------------------------
// Daemon
// ---------------------------------------------------------------------------

/// Builds a config and a command line, then starts the daemon.
///
/// Config text may hold `{port0}`, `{port1}`... placeholders: each becomes a
/// free port when the daemon starts (and a new one if a port was taken
/// meanwhile by another test; see [`DaemonBuilder::start`]).
#[derive(Debug, Clone)]
pub struct DaemonBuilder {
    lines: Vec<String>,
    raw: Option<String>,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    prefix: Vec<String>,
    services: usize,
    file_name: String,
    write_config: bool,
    encode: Option<Encode>,
    debug: bool,
    terminal: bool,
}

impl DaemonBuilder {
    /// Adds a service line on the next port placeholder.
    pub fn service(mut self, user: &str, cmdline: &str) -> Self {
        let index = self.services;
        self.services += 1;
        self.lines.push(format!("{{port{index}}} {user} {cmdline}"));
        self
    }

    /// Adds a config line exactly as given (placeholders allowed).
    pub fn line(mut self, line: &str) -> Self {
        self.lines.push(line.to_owned());
        self
    }

    /// Uses `text` as the whole config file, byte for byte (no newline is
    /// added; placeholders allowed). Replaces the lines.
    pub fn raw_config(mut self, text: &str) -> Self {
        self.raw = Some(text.to_owned());
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.envs.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Runs the daemon through this command (e.g. `setpriv ...`), which must
    /// exec it in place so the pid is the daemon's.
    pub fn prefix(mut self, command: &[&str]) -> Self {
        self.prefix = command.iter().map(|a| (*a).to_owned()).collect();
        self
    }

    /// Runs the daemon under `strace -f`, tracing `calls` (strace's
    /// `trace=` list) into the file `out`.
    pub fn strace(self, calls: &str, out: &std::path::Path) -> Self {
        let out = out.display().to_string();
        let trace = format!("trace={calls}");
        self.prefix(&["strace", "-f", "-qq", "-e", &trace, "-o", &out])
    }

    /// The config file's name in the temp dir (default `wininetd.conf`).
    pub fn file_name(mut self, name: &str) -> Self {
        self.file_name = name.to_owned();
        self
    }

    /// Uses `text` as the whole config, in a file named `wininetd.toml` (the
    /// extended format); placeholders allowed.
    pub fn toml(self, text: &str) -> Self {
        self.raw_config(text).file_name("wininetd.toml")
    }

    /// Starts the daemon without `--debug` (as a service manager would).
    pub fn no_debug(mut self) -> Self {
        self.debug = false;
        self
    }

    /// Starts the daemon in a session of its own whose controlling terminal
    /// is a new pseudo-terminal, as when an operator runs it in a shell
    /// (its stdout and stderr are still the harness's pipes).
    #[cfg(unix)]
    pub fn controlling_terminal(mut self) -> Self {
        self.terminal = true;
        self
    }

    /// Writes the config file as `encode` makes it of the text (once the
    /// placeholders are replaced), e.g. in UTF-16; UTF-8 by default.
    pub fn encoded(mut self, encode: Encode) -> Self {
        self.encode = Some(encode);
        self
    }

    /// Passes `--cfgfile` a path where no file exists.
    pub fn missing_config(mut self) -> Self {
        self.write_config = false;
        self
    }

    fn template(&self) -> String {
        match &self.raw {
            Some(raw) => raw.clone(),
            None => self.lines.iter().map(|l| format!("{l}\n")).collect(),
        }
    }

    /// Starts the daemon and returns at once.
    pub fn spawn(&self) -> Daemon {
        let template = self.template();
        let ports: Vec<u16> = (0..)
            .take_while(|i| template.contains(&format!("{{port{i}}}")))
            .map(|_| free_port())
            .collect();
        let dir = tempfile::Builder::new()
            .prefix("wininetd-test-")
            .tempdir()
            .expect("create a temp dir");
        let dir_text = daemon_path(dir.path()).display().to_string();
        let mut config = template.replace("{dir}", &dir_text);
        for (i, port) in ports.iter().enumerate() {
            config = config.replace(&format!("{{port{i}}}"), &port.to_string());
        }
        // World-readable, so a daemon started as another user can read it.
        #[cfg(unix)]
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .expect("chmod the temp dir");
        let config_path = dir.path().join(&self.file_name);
        if self.write_config {
            let bytes = match self.encode {
                Some(encode) => encode(&config),
                None => config.clone().into_bytes(),
            };
            fs::write(&config_path, bytes).expect("write the config");
            #[cfg(unix)]
            fs::set_permissions(&config_path, fs::Permissions::from_mode(0o644))
                .expect("chmod the config");
        }
        let config_path = daemon_path(&config_path);

        let mut argv: Vec<String> = self.prefix.clone();
        argv.push(DAEMON.to_owned());
        if self.debug {
            argv.push("--debug".to_owned());
        }
        argv.push("--cfgfile".to_owned());
        argv.push(config_path.display().to_string());
        argv.extend(self.args.iter().cloned());

        let mut command = Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("NOTIFY_SOCKET");
        #[cfg(unix)]
        let terminal = self.terminal.then(|| unix::pseudo_terminal(&mut command));
        #[cfg(not(unix))]
        let terminal: Option<()> = None;
        #[cfg(unix)]
        {
            // Its own process group, so drop can kill whatever it leaves
            // (a session of its own, which is a group too, with a terminal).
            if terminal.is_none() {
                command.process_group(0);
            }
            // If the test process dies without dropping the daemon (a
            // harness timeout kills it), the daemon must not outlive it.
            #[allow(unsafe_code)]
            // SAFETY: runs between fork and exec; prctl(2) is
            // async-signal-safe and touches no memory of ours.
            unsafe {
                command.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::last_os_error())
                    }
                });
            }
        }
        for (name, value) in &self.envs {
            command.env(name, value);
        }
        let mut process = command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {argv:?}: {err}"));
        let stdout = Captured::start(process.stdout.take().expect("stdout is piped"));
        let stderr = Captured::start(process.stderr.take().expect("stderr is piped"));
        let mut command_line = String::new();
        for (name, value) in &self.envs {
            let _ = write!(command_line, "{name}={value} ");
        }
        command_line.push_str(&argv.join(" "));
        Daemon {
            pid: process.id(),
            process,
            exit: None,
            ports,
            config,
            config_path,
            command_line,
            stdout,
            stderr,
            dir,
            _terminal: terminal,
        }
    }

    /// Starts the daemon and waits until it prints one `listening on` line
    /// per port placeholder. If it fails because another process took one of
    /// the free ports in between, tries again with new ports.
    pub fn start(&self) -> Daemon {
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            let mut daemon = self.spawn();
            let expected = daemon.ports.len();
            let outcome = daemon.stderr.wait_until(WAIT, |state| {
                let listening = state
                    .lines
                    .iter()
                    .filter(|l| l.contains("listening on"))
                    .count();
                if listening >= expected {
                    Some(true)
                } else if state.closed {
                    Some(false)
                } else {
                    None
                }
            });
            match outcome {
                Some(true) => return daemon,
                Some(false)
                    if attempt < ATTEMPTS
                        && daemon.stderr_text().contains("cannot listen")
                        && daemon.wait_exit_quiet(WAIT).is_some() =>
                {
                    eprintln!("a port was taken meanwhile, retrying:\n{}", daemon.report());
                }
                Some(false) => panic!("the daemon exited before listening"),
                None => panic!("the daemon did not print {expected} listening line(s) in time"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }
}

/// A running (or finished) daemon. SIGKILLed with its sessions on drop.
#[derive(Debug)]
pub struct Daemon {
    pid: u32,
    process: Child,
    exit: Option<ExitStatus>,
    ports: Vec<u16>,
    config: String,
    config_path: PathBuf,
    command_line: String,
    stdout: Arc<Captured>,
    stderr: Arc<Captured>,
    dir: tempfile::TempDir,
    /// The controlling terminal's master side, kept open as long as the
    /// daemon runs ([`DaemonBuilder::controlling_terminal`]).
    #[cfg(unix)]
    _terminal: Option<std::os::fd::OwnedFd>,
    #[cfg(not(unix))]
    _terminal: Option<()>,
}

impl Daemon {
    pub fn builder() -> DaemonBuilder {
        DaemonBuilder {
            lines: Vec::new(),
            raw: None,
            args: Vec::new(),
            envs: Vec::new(),
            prefix: Vec::new(),
            services: 0,
            file_name: "wininetd.conf".to_owned(),
            write_config: true,
            encode: None,
            debug: true,
            terminal: false,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The port that replaced `{portN}`.
    pub fn port(&self, index: usize) -> u16 {
        self.ports[index]
    }

    /// The temp dir (`{dir}` in the config), as the daemon sees it.
    pub fn dir(&self) -> PathBuf {
        daemon_path(self.dir.path())
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The config path as the daemon writes it in diagnostics.
    pub fn config_name(&self) -> String {
        self.config_path.display().to_string()
    }

    pub fn config(&self) -> &str {
        &self.config
    }

    /// Every stderr line so far (ANSI colours removed).
    pub fn lines(&self) -> Vec<String> {
        self.stderr.snapshot()
    }

    pub fn stderr_text(&self) -> String {
        self.lines().join("\n")
    }

    pub fn stdout_text(&self) -> String {
        self.stdout.snapshot().join("\n")
    }

    /// Number of stderr lines so far for which `matches` holds.
    pub fn count(&self, matches: impl Fn(&str) -> bool) -> usize {
        self.lines().iter().filter(|l| matches(l)).count()
    }

    /// Waits for a stderr line for which `matches` holds; panics after
    /// `timeout`, saying it was waiting for `what`. `matches` runs under the
    /// capture lock: it must not call back into this `Daemon`.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        self.stderr
            .wait_until(timeout, |state| {
                state.lines.iter().find(|l| matches(l)).cloned()
            })
            .unwrap_or_else(|| panic!("no stderr line {what} within {timeout:?}"))
    }

    /// Waits for a stderr line containing `needle`.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for(&format!("containing {needle:?}"), timeout, |l| {
            l.contains(needle)
        })
    }

    /// Waits until `check` holds for all the stderr lines so far; panics
    /// after `timeout`. `check` runs under the capture lock: it must not call
    /// back into this `Daemon`.
    pub fn wait_for_lines(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&[String]) -> bool,
    ) {
        let found = self
            .stderr
            .wait_until(timeout, |state| check(&state.lines).then_some(()));
        assert!(found.is_some(), "no stderr {what} within {timeout:?}");
    }

    /// Waits until `count` stderr lines satisfy `matches`.
    pub fn wait_for_count(
        &self,
        what: &str,
        count: usize,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) {
        let mut seen = 0;
        let found = self.stderr.wait_until(timeout, |state| {
            seen = state.lines.iter().filter(|l| matches(l)).count();
            (seen >= count).then_some(())
        });
        assert!(
            found.is_some(),
            "expected {count} stderr lines {what} within {timeout:?}, saw {seen}"
        );
    }

    /// The `session start` line for the client whose local address is
    /// `client`, and the pid it names.
    pub fn session_start(&self, client: SocketAddr) -> (String, u32) {
        let peer = format!("peer={}", peer_text(client));
        let line = self.wait_for(&format!("`session start` with {peer}"), WAIT, |l| {
            l.contains("session start") && has_token(l, &peer)
        });
        let pid = number_after(&line, "pid")
            .unwrap_or_else(|| panic!("no pid=N in the session start line: {line}"));
        (line, pid)
    }

    /// The `session end` line of the session whose child is `pid`.
    pub fn session_end(&self, pid: u32) -> String {
        let token = format!("pid={pid}");
        self.wait_for(&format!("`session end` with {token}"), WAIT, |l| {
            l.contains("session end") && has_token(l, &token)
        })
    }

    #[cfg(unix)]
    pub fn send_signal(&self, signal: i32) {
        kill(self.pid as i32, signal).expect("signal the daemon");
    }

    #[cfg(unix)]
    /// Replaces the config file with `template`: `{portN}` placeholders
    /// already in use keep their port, new ones get a free port. The file is
    /// replaced by a rename, so a reload never reads half of it.
    pub fn rewrite_config(&mut self, template: &str) {
        let mut index = 0;
        while template.contains(&format!("{{port{index}}}")) {
            if index >= self.ports.len() {
                self.ports.push(free_port());
            }
            index += 1;
        }
        let mut config = template.to_owned();
        for (i, port) in self.ports.iter().enumerate() {
            config = config.replace(&format!("{{port{i}}}"), &port.to_string());
        }
        let staging = self.config_path.with_extension("new");
        fs::write(&staging, &config).expect("write the new config");
        fs::set_permissions(&staging, fs::Permissions::from_mode(0o644))
            .expect("chmod the new config");
        fs::rename(&staging, &self.config_path).expect("replace the config");
        self.config = config;
    }

    #[cfg(unix)]
    /// Rewrites the config (see [`Daemon::rewrite_config`]), sends SIGHUP,
    /// and waits for the reload's outcome: the next `reload done` or
    /// `reload failed` line, which it returns.
    pub fn reload(&mut self, template: &str) -> String {
        let outcome = |l: &str| l.contains("reload done") || l.contains("reload failed");
        let before = self.count(outcome);
        self.rewrite_config(template);
        self.send_signal(libc::SIGHUP);
        self.stderr
            .wait_until(WAIT, |state| {
                state
                    .lines
                    .iter()
                    .filter(|l| outcome(l))
                    .nth(before)
                    .cloned()
            })
            .unwrap_or_else(|| panic!("no `reload done` or `reload failed` line within {WAIT:?}"))
    }

    /// Waits for the daemon to exit; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.wait_exit_quiet(timeout)
            .unwrap_or_else(|| panic!("the daemon did not exit within {timeout:?}"))
    }

    /// Has the daemon exited? (Never blocks.)
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.process.try_wait().expect("try_wait on the daemon");
        }
        self.exit
    }

    fn wait_exit_quiet(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.exited() {
                break status;
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        };
        // Let the readers drain what is left in the pipes.
        let drained = |state: &Lines| state.closed.then_some(());
        self.stderr.wait_until(Duration::from_secs(5), drained);
        self.stdout.wait_until(Duration::from_secs(5), drained);
        Some(status)
    }

    /// Everything needed to understand a failure.
    pub fn report(&self) -> String {
        let mut report = String::new();
        let _ = writeln!(report, "---- command line ----\n{}", self.command_line);
        let _ = writeln!(report, "---- config {} ----", self.config_path.display());
        let _ = writeln!(report, "{}", self.config.escape_debug());
        let _ = writeln!(
            report,
            "---- daemon pid {} status {:?} ----",
            self.pid, self.exit
        );
        let _ = writeln!(report, "---- stdout ----\n{}", self.stdout_text());
        let _ = writeln!(report, "---- stderr ----\n{}", self.stderr_text());
        report
    }
}

impl Daemon {
    /// Ends the daemon the hard way (TerminateProcess), as a crash would.
    #[cfg(windows)]
    pub fn kill(&mut self) {
        if self.exited().is_none() {
            let _ = self.process.kill();
            let _ = self.process.wait();
            self.exited();
        }
    }

    /// The pids of every session the daemon logged.
    #[cfg(windows)]
    fn session_pids(&self) -> Vec<u32> {
        self.lines()
            .iter()
            .filter(|l| l.contains("session start"))
            .filter_map(|l| number_after(l, "pid"))
            .collect()
    }
}

#[cfg(windows)]
impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        // The daemon's job objects should have ended its sessions with it;
        // a leftover must not outlive the test either way.
        for pid in self.session_pids() {
            terminate(pid);
        }
        if thread::panicking() || std::env::var_os("WININETD_TEST_SHOW").is_some() {
            eprintln!("==== wininetd under test ====\n{}", self.report());
        }
    }
}

#[cfg(unix)]
impl Drop for Daemon {
    fn drop(&mut self) {
        let sessions = if self.exited().is_none() {
            children_of(self.pid)
        } else {
            Vec::new()
        };
        if self.exited().is_none() {
            let _ = kill(-(self.pid as i32), libc::SIGKILL);
            let _ = kill(self.pid as i32, libc::SIGKILL);
            let _ = self.process.wait();
        }
        for (pid, _) in sessions {
            // Each session leads its own group; kill the group only then, so
            // a daemon that forgot setpgid cannot make us kill ourselves.
            if process_group(pid) == Some(pid) {
                let _ = kill(-(pid as i32), libc::SIGKILL);
            }
            let _ = kill(pid as i32, libc::SIGKILL);
        }
        if thread::panicking() || std::env::var_os("WININETD_TEST_SHOW").is_some() {
            eprintln!("==== wininetd under test ====\n{}", self.report());
        }
    }
}

// ---------------------------------------------------------------------------
// Ports and clients
// ---------------------------------------------------------------------------

/// Waits until something accepts connections on 127.0.0.1:`port`, for a
/// daemon whose `listening on` line the test cannot read. The probe
/// connection is closed at once (a session with no input).
pub fn wait_connectable(port: u16) {
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(v4(port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A process a test started with `Command` itself, killed and reaped when
/// dropped: a failing assertion leaves nothing running (under Wine, a
/// daemon left running also holds the test's output open).
#[derive(Debug)]
pub struct Started(pub Child);

impl std::ops::Deref for Started {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Started {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free on both IPv4 and IPv6 loopback right now, never handed out
/// twice by this process.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        // [::] without IPV6_V6ONLY binds IPv4 too: the port is free on both.
        // On Windows (Wine) the tests use IPv4 alone.
        #[cfg(unix)]
        let listener = TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0)).expect("bind [::]:0");
        #[cfg(windows)]
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind 0.0.0.0:0");
        let port = listener.local_addr().expect("local_addr").port();
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

pub fn v4(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

pub fn v6(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv6Addr::LOCALHOST, port))
}

fn with_timeouts(stream: TcpStream) -> TcpStream {
    stream
        .set_read_timeout(Some(WAIT))
        .expect("set_read_timeout");
    stream
        .set_write_timeout(Some(WAIT))
        .expect("set_write_timeout");
    stream
}

/// Connects to `addr`, with read and write timeouts of [`WAIT`].
pub fn connect_to(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, WAIT)
        .unwrap_or_else(|err| panic!("connect to {addr}: {err}"));
    with_timeouts(stream)
}

/// Connects to 127.0.0.1:`port`.
pub fn connect(port: u16) -> TcpStream {
    connect_to(v4(port))
}

/// Connects to [::1]:`port`.
pub fn connect_v6(port: u16) -> TcpStream {
    connect_to(v6(port))
}

/// Connects from `source` (port chosen by the kernel) to `dest`.
pub fn connect_from(source: IpAddr, dest: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(dest), Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::new(source, 0).into())
        .unwrap_or_else(|err| panic!("bind the client to {source}: {err}"));
    socket
        .connect_timeout(&dest.into(), WAIT)
        .unwrap_or_else(|err| panic!("connect from {source} to {dest}: {err}"));
    with_timeouts(socket.into())
}

/// Reads until EOF or `timeout`; a timeout is an error that carries what was
/// read so far. On Windows a reset counts as the end too (Windows resets a
/// connection closed with unread data; what matters there is that it ended).
pub fn read_to_eof(stream: &mut TcpStream, timeout: Duration) -> io::Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut data = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no EOF within {timeout:?}; read so far: {}",
                    read_so_far(&data)
                ),
            ));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => return Ok(data),
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(err) if is_timeout(&err) || err.kind() == io::ErrorKind::Interrupted => {}
            Err(err)
                if cfg!(windows)
                    && matches!(
                        err.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                    ) =>
            {
                return Ok(data);
            }
            Err(err) => return Err(err),
        }
    }
}

/// Reads up to and without the next `\n` (and, on Windows, a `\r` before
/// it; one byte at a time, so nothing after it is consumed); panics at EOF
/// or after `timeout`.
pub fn read_line(stream: &mut TcpStream, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no complete line within {timeout:?}; read so far: {}",
            read_so_far(&line)
        );
        stream
            .set_read_timeout(Some(left))
            .expect("set_read_timeout");
        match stream.read(&mut byte) {
            Ok(0) => panic!(
                "EOF before the end of a line; read so far: {}",
                read_so_far(&line)
            ),
            Ok(_) if byte[0] == b'\n' => {
                if cfg!(windows) && line.last() == Some(&b'\r') {
                    line.pop();
                }
                return String::from_utf8_lossy(&line).into_owned();
            }
            Ok(_) => line.push(byte[0]),
            Err(err) if is_timeout(&err) || err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => panic!("read a line: {err}"),
        }
    }
}

/// Asserts that nothing arrives (neither data nor EOF) for `period`.
pub fn assert_silent(stream: &mut TcpStream, period: Duration) {
    let deadline = Instant::now() + period;
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        stream
            .set_read_timeout(Some(left))
            .expect("set_read_timeout");
        match stream.read(&mut buf) {
            Err(err) if is_timeout(&err) => break,
            // A signal to this test process (a child of another test
            // exiting) cuts the wait short: wait for the rest.
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Ok(0) => panic!("EOF where the connection should stay open and silent"),
            Ok(n) => panic!("unexpected data: {:?}", String::from_utf8_lossy(&buf[..n])),
            Err(err) => panic!("unexpected error: {err}"),
        }
    }
    stream
        .set_read_timeout(Some(WAIT))
        .expect("set_read_timeout");
}

pub fn is_timeout(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Connects to 127.0.0.1:`port`, sends `input`, half-closes, and returns
/// everything the service sent until EOF.
pub fn request(port: u16, input: &[u8]) -> String {
    request_to(v4(port), input)
}

/// Connects to `addr`, sends `input`, half-closes, and returns everything
/// the service sent until EOF.
pub fn request_to(addr: SocketAddr, input: &[u8]) -> String {
    let mut stream = connect_to(addr);
    stream.write_all(input).expect("send the request");
    stream
        .shutdown(Shutdown::Write)
        .expect("half-close the request");
    let data = read_to_eof(&mut stream, WAIT).expect("read the response");
    String::from_utf8_lossy(&data).into_owned()
}

/// The first line of a session on 127.0.0.1:`port` whose program prints a
/// line and then waits or exits (e.g. the test child's `cwd`, `ids`).
pub fn first_line(port: u16) -> String {
    read_line(&mut connect(port), WAIT)
}

/// 127.0.0.`n`: every address of 127/8 is on the loopback interface (on
/// Linux, Windows and Wine alike), so tests connect from several sources.
pub fn lo(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// The `NAME=value` lines of the test child's `env` mode as pairs.
pub fn parse_env(output: &str) -> Vec<(String, String)> {
    output
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The value of `NAME` in the test child's `env` output (`NAME=value`
/// lines; `NAME unset` gives `None`).
pub fn env_value<'a>(output: &'a str, name: &str) -> Option<&'a str> {
    output.lines().find_map(|l| {
        l.trim_end_matches('\r')
            .strip_prefix(name)?
            .strip_prefix('=')
    })
}

/// Connects to `port`, half-closes, and checks that the child's stderr
/// line `mark` went to `daemon`'s log and not to the client: the connection
/// ends with no data, and the log line names `service` and the session's
/// pid.
pub fn assert_stderr_logged(daemon: &Daemon, port: u16, service: &str, mark: &str) {
    let mut stream = connect(port);
    let client = stream.local_addr().expect("local_addr");
    stream.shutdown(Shutdown::Write).expect("half-close");
    let data = read_to_eof(&mut stream, WAIT).expect("EOF");
    assert!(
        data.is_empty(),
        "the client got the child's stderr: {:?}",
        String::from_utf8_lossy(&data)
    );
    let (_, pid) = daemon.session_start(client);
    let what = format!("with {mark:?} and service={service}");
    let line = daemon.wait_for(&what, WAIT, |l| {
        l.contains(mark) && !l.contains("listening on") && has_field(l, "service", service)
    });
    assert!(has_field(&line, "pid", &pid.to_string()), "{line}");
}

/// The variables a connection gives its child (`CLIENT_IP`, `CLIENT_PORT`,
/// `PROTO` and the `TCP*` set), as the client sees the connection from
/// `client` to `server`: addresses as plain text, IPv4 without `::ffff:`.
pub fn client_variables(client: SocketAddr, server: SocketAddr) -> HashMap<String, String> {
    let ip_text = |ip: IpAddr| ip.to_canonical().to_string();
    [
        ("CLIENT_IP", ip_text(client.ip())),
        ("CLIENT_PORT", client.port().to_string()),
        ("PROTO", "TCP".to_owned()),
        ("TCPREMOTEIP", ip_text(client.ip())),
        ("TCPREMOTEPORT", client.port().to_string()),
        ("TCPLOCALIP", ip_text(server.ip())),
        ("TCPLOCALPORT", server.port().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The value of `key` in `key=value` words, e.g. `uid` in the `ids` output.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
}

/// The number of `key=N` in a child's line such as `parent pid=P
/// grandchild=G`; panics, showing the line, when there is none.
pub fn pid_in(line: &str, key: &str) -> u32 {
    field(line, key)
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no {key}=N in {line:?}"))
}

/// Whether a session-end line says `status=WHAT` exactly (`exit 0`,
/// `signal 9`; `signal 1` does not match `signal 11`).
pub fn has_status(line: &str, what: &str) -> bool {
    let token = format!("status={what}");
    line.match_indices(&token).any(|(at, _)| {
        !line[at + token.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

/// `bytes` in hex, as the test child's `stderr-hex` mode takes them.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How a test writes a config file's text (see [`DaemonBuilder::encoded`]).
pub type Encode = fn(&str) -> Vec<u8>;

/// UTF-16 in both byte orders, each with the name `--check` gives it.
pub const UTF16_ENCODINGS: [(Encode, &str); 2] = [
    (|text| utf16(text, true), "UTF-16LE"),
    (|text| utf16(text, false), "UTF-16BE"),
];

/// Text as UTF-16 with its byte-order mark, little- or big-endian.
pub fn utf16(text: &str, little: bool) -> Vec<u8> {
    let mut bytes = if little {
        vec![0xFF, 0xFE]
    } else {
        vec![0xFE, 0xFF]
    };
    for unit in text.encode_utf16() {
        bytes.extend(if little {
            unit.to_le_bytes()
        } else {
            unit.to_be_bytes()
        });
    }
    bytes
}

/// Waits until `pid` is no longer alive; panics after `timeout`.
pub fn wait_gone(pid: u32, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while is_alive(pid) {
        assert!(
            Instant::now() < deadline,
            "process {pid} still alive after {timeout:?}"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// What a failed read got, short enough for a test report: the byte count
/// and the last bytes.
fn read_so_far(data: &[u8]) -> String {
    let tail = &data[data.len().saturating_sub(120)..];
    format!(
        "{} bytes, ending {:?}",
        data.len(),
        String::from_utf8_lossy(tail)
    )
}

// ---------------------------------------------------------------------------
// Programs run to completion
// ---------------------------------------------------------------------------

/// One finished run of a program, printable in full when a test fails.
#[derive(Debug)]
pub struct Run {
    pub command: String,
    pub output: Output,
    /// From the start to the exit.
    pub took: Duration,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// stdout, then stderr.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout(), self.stderr())
    }

    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    pub fn success(&self) -> bool {
        self.output.status.success()
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "command: {}\nstatus: {}\n--- stdout\n{}--- stderr\n{}---",
            self.command,
            self.output.status,
            self.stdout(),
            self.stderr()
        )
    }
}

/// Runs `command` (its stdin null, its stdout and stderr captured) to
/// completion; killed, and a panic, after `timeout`.
pub fn run_command(command: &mut Command, timeout: Duration) -> Run {
    let text = format!("{command:?}");
    let started = Instant::now();
    let mut process = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {text}: {e}"));
    let collect = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut data = Vec::new();
            let _ = pipe.read_to_end(&mut data);
            data
        })
    };
    let stdout = collect(Box::new(process.stdout.take().expect("stdout is piped")));
    let stderr = collect(Box::new(process.stderr.take().expect("stderr is piped")));
    let status = loop {
        if let Some(status) = process.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() >= timeout {
            let _ = process.kill();
            let _ = process.wait();
            panic!("{text} did not finish within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let took = started.elapsed();
    Run {
        command: text,
        output: Output {
            status,
            stdout: stdout.join().expect("stdout reader"),
            stderr: stderr.join().expect("stderr reader"),
        },
        took,
    }
}

/// Runs `program args` to completion within [`WAIT`].
pub fn run<S: AsRef<std::ffi::OsStr>>(program: &str, args: &[S]) -> Run {
    run_command(Command::new(program).args(args), WAIT)
}

/// Runs `wininetd --check --cfgfile PATH` to completion within [`WAIT`].
pub fn check_file(path: &Path) -> Run {
    run_command(
        Command::new(DAEMON)
            .args(["--check", "--cfgfile"])
            .arg(daemon_path(path)),
        WAIT,
    )
}

// ---------------------------------------------------------------------------
// The extended (TOML) config format
// ---------------------------------------------------------------------------

/// `text` as a TOML basic string, quotes included.
pub fn toml_str(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML argv array that runs the test child by its absolute path:
/// `["CHILD", "MODE", ARGS...]`.
pub fn child_argv(args: &[&str]) -> String {
    let child = daemon_path(Path::new(CHILD)).display().to_string();
    let items: Vec<String> = std::iter::once(child.as_str())
        .chain(args.iter().copied())
        .map(toml_str)
        .collect();
    format!("[{}]", items.join(", "))
}

/// One `[[service]]` table: `listen` and `command` are TOML values as
/// written (e.g. `"{port0}"`, [`child_argv`]), `extra` more `key = value`
/// lines. Ends with a blank line.
pub fn toml_service(name: &str, listen: &str, command: &str, extra: &[&str]) -> String {
    let mut text = format!(
        "[[service]]\nname = {}\nlisten = {listen}\ncommand = {command}\n",
        toml_str(name)
    );
    for line in extra {
        text.push_str(line);
        text.push('\n');
    }
    text.push('\n');
    text
}

/// The test child's `pid` mode as a TOML argv: it prints `pid=N` and waits
/// for EOF, what [`attempt`] reads.
pub fn pid_child() -> String {
    child_argv(&["pid"])
}

/// The two ways a program can get its connection (`stdio`, `--stdio`):
/// the socket itself, or pipes the daemon relays.
pub const MODES: [&str; 2] = ["socket", "pipe"];

// ---------------------------------------------------------------------------
// Served or refused
// ---------------------------------------------------------------------------

/// What a client got from a service whose child speaks first (the `pid`
/// mode: `pid=N`, then it waits for EOF).
#[derive(Debug)]
pub enum Attempt {
    /// The child answered; the session runs until `stream` is closed.
    Served { stream: TcpStream, pid: u32 },
    /// The connection was closed (EOF or reset) after `text` (the
    /// `reject_message`, or nothing).
    Refused { text: String },
}

impl Attempt {
    pub fn is_served(&self) -> bool {
        matches!(self, Self::Served { .. })
    }

    /// The stream of a served attempt; panics, saying `who`, if refused.
    pub fn served(self, who: &str) -> (TcpStream, u32) {
        match self {
            Self::Served { stream, pid } => (stream, pid),
            Self::Refused { text } => panic!("{who} should be served, was refused after {text:?}"),
        }
    }

    /// The text a refused attempt got; panics, saying `who`, if served.
    pub fn refused(self, who: &str) -> String {
        match self {
            Self::Refused { text } => text,
            Self::Served { pid, .. } => panic!("{who} should be refused, was served (pid {pid})"),
        }
    }
}

/// Connects from `source` (the kernel's choice when `None`) to `dest`, and
/// reads until the first line ending in `\n` or the close.
pub fn attempt(source: Option<IpAddr>, dest: SocketAddr) -> Attempt {
    let mut stream = match source {
        Some(source) => connect_from(source, dest),
        None => connect_to(dest),
    };
    let deadline = Instant::now() + WAIT;
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{dest}: neither a line nor a close within {WAIT:?}; read so far: {}",
            read_so_far(&data)
        );
        stream
            .set_read_timeout(Some(left))
            .expect("set_read_timeout");
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => {
                data.push(byte[0]);
                if byte[0] == b'\n' {
                    let line = String::from_utf8_lossy(&data);
                    if let Some(pid) = line.trim_end().strip_prefix("pid=") {
                        let pid = pid.parse().expect("pid=N");
                        return Attempt::Served { stream, pid };
                    }
                }
            }
            Err(err) if is_timeout(&err) || err.kind() == io::ErrorKind::Interrupted => {}
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) =>
            {
                break;
            }
            Err(err) => panic!("{dest}: read: {err}"),
        }
    }
    Attempt::Refused {
        text: String::from_utf8_lossy(&data).into_owned(),
    }
}

/// Whether a connection to `addr` is refused (nothing listens there).
pub fn connection_refused(addr: SocketAddr) -> bool {
    match TcpStream::connect_timeout(&addr, WAIT) {
        Err(err) => {
            assert_eq!(
                err.kind(),
                io::ErrorKind::ConnectionRefused,
                "connect to {addr}: {err}"
            );
            true
        }
        Ok(_) => false,
    }
}

/// Waits until connections to `addr` are refused; panics after `timeout`.
/// A connect that races with the listener's close may be reset rather
/// than refused: that counts as "not yet".
pub fn wait_refused(addr: SocketAddr, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect_timeout(&addr, WAIT) {
            Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => return,
            Err(err) if err.kind() == io::ErrorKind::ConnectionReset => {}
            Err(err) => panic!("connect to {addr}: {err}"),
            Ok(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "{addr} still accepts connections after {timeout:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `line` holds `key=value` as a whole word (`rule=deny`, not
/// `rule="deny"` nor `rule=denyx`).
pub fn has_field(line: &str, key: &str, value: &str) -> bool {
    has_token(line, &format!("{key}={value}"))
}

// ---------------------------------------------------------------------------
// JSON log lines (`log_format = "json"`)
// ---------------------------------------------------------------------------

/// One JSON log event, an object; `event["key"]` is `Null` when the key is
/// missing.
pub type Event = serde_json::Value;

/// Parses `line` as exactly one JSON object.
pub fn json_object(line: &str) -> Result<Event, String> {
    match serde_json::from_str::<Event>(line) {
        Ok(event) if event.is_object() => Ok(event),
        Ok(other) => Err(format!("not an object: {other}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Every line the daemon wrote to stderr so far, each of which must be one
/// JSON object.
pub fn json_events(daemon: &Daemon) -> Vec<Event> {
    daemon
        .lines()
        .iter()
        .map(|l| json_object(l).unwrap_or_else(|e| panic!("not one JSON object ({e}): {l}")))
        .collect()
}

/// Waits for a JSON event for which `matches` holds.
pub fn wait_event(daemon: &Daemon, what: &str, matches: impl Fn(&Event) -> bool) -> Event {
    let line = daemon.wait_for(what, WAIT, |l| json_object(l).is_ok_and(|e| matches(&e)));
    json_object(&line).expect("parsed once already")
}

/// Whether `event`'s message holds `message` and its `service` is `service`.
pub fn is_event(event: &Event, message: &str, service: &str) -> bool {
    event["message"]
        .as_str()
        .is_some_and(|m| m.contains(message))
        && event["service"] == service
}

// ===========================================================================
// Unix only: processes (/proc, signals, limits), users, loopback addresses
// ===========================================================================

#[cfg(unix)]
pub use unix::*;

#[cfg(unix)]
mod unix {
    use super::*;

    // ---------------------------------------------------------------------------
    // Processes (/proc, signals, limits)
    // ---------------------------------------------------------------------------

    /// Makes a new pseudo-terminal and has `command` start in a session of
    /// its own with the terminal as its controlling terminal. Returns the
    /// master side, which must stay open while the process runs (closing it
    /// hangs the terminal up).
    pub fn pseudo_terminal(command: &mut Command) -> std::os::fd::OwnedFd {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        #[allow(unsafe_code)]
        // SAFETY: posix_openpt returns a new descriptor or -1; grantpt,
        // unlockpt and ptsname_r act on that descriptor and write only into
        // `name`, a buffer of the length given.
        let (master, slave) = unsafe {
            let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            assert!(fd >= 0, "posix_openpt: {}", io::Error::last_os_error());
            let master = OwnedFd::from_raw_fd(fd);
            assert_eq!(libc::grantpt(fd), 0, "grantpt");
            assert_eq!(libc::unlockpt(fd), 0, "unlockpt");
            let mut name = [0 as libc::c_char; 128];
            assert_eq!(
                libc::ptsname_r(fd, name.as_mut_ptr(), name.len()),
                0,
                "ptsname_r"
            );
            let slave = libc::open(
                name.as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            );
            assert!(slave >= 0, "open the pty: {}", io::Error::last_os_error());
            (master, OwnedFd::from_raw_fd(slave))
        };
        #[allow(unsafe_code)]
        // SAFETY: runs between fork and exec; setsid(2) and ioctl(2) are
        // async-signal-safe; `slave` is moved into the closure and stays
        // open until the exec closes it (close-on-exec).
        unsafe {
            command.pre_exec(move || {
                if libc::setsid() < 0 || libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        master
    }

    /// Sends `signal` to `pid` (a negative pid names a process group).
    pub fn kill(pid: i32, signal: i32) -> io::Result<()> {
        #[allow(unsafe_code)]
        // SAFETY: kill(2) takes two integers and touches no memory of ours.
        let rc = unsafe { libc::kill(pid, signal) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Sets the soft RLIMIT_NOFILE of another process (the hard limit stays);
    /// returns the soft limit it had.
    pub fn set_fd_limit(pid: u32, soft: u64) -> io::Result<u64> {
        set_soft_limit(pid, libc::RLIMIT_NOFILE, soft)
    }

    /// What glibc and musl call a `libc::RLIMIT_*` value.
    #[cfg(target_env = "gnu")]
    pub type Resource = libc::__rlimit_resource_t;
    #[cfg(not(target_env = "gnu"))]
    pub type Resource = libc::c_int;

    /// Sets the soft limit `resource` (`libc::RLIMIT_*`) of another process
    /// (the hard limit stays); returns the soft limit it had.
    pub fn set_soft_limit(pid: u32, resource: Resource, soft: u64) -> io::Result<u64> {
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        #[allow(unsafe_code)]
        // SAFETY: prlimit(2) with a null new limit only writes `old`, which is
        // a valid, exclusively borrowed rlimit.
        let rc = unsafe { libc::prlimit(pid as i32, resource, std::ptr::null(), &mut old) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // `rlim_t` is 32 bits wide on 32-bit Linux.
        #[allow(clippy::unnecessary_cast)]
        let new = libc::rlimit {
            rlim_cur: soft as libc::rlim_t,
            rlim_max: old.rlim_max,
        };
        #[allow(unsafe_code)]
        // SAFETY: `new` is a valid rlimit that outlives the call; the old
        // value is not asked for (null).
        let rc = unsafe { libc::prlimit(pid as i32, resource, &new, std::ptr::null_mut()) };
        #[allow(clippy::unnecessary_cast)]
        if rc == 0 {
            Ok(old.rlim_cur as u64)
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// The fields of /proc/PID/stat after `(comm)`: index 0 is the state,
    /// 1 ppid, 2 pgrp, 11 utime, 12 stime.
    fn stat_fields(pid: u32) -> Option<Vec<String>> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (_, rest) = stat.rsplit_once(')')?;
        Some(rest.split_whitespace().map(String::from).collect())
    }

    /// The process state letter (`R`, `S`, `Z`...), or `None` if it is gone.
    pub fn process_state(pid: u32) -> Option<char> {
        stat_fields(pid)?.first()?.chars().next()
    }

    pub fn process_group(pid: u32) -> Option<u32> {
        stat_fields(pid)?.get(2)?.parse().ok()
    }

    /// Running, i.e. present and neither a zombie nor dead.
    pub fn is_alive(pid: u32) -> bool {
        matches!(process_state(pid), Some(state) if state != 'Z' && state != 'X')
    }

    /// The children of `parent` and their state letters, from a scan of /proc.
    pub fn children_of(parent: u32) -> Vec<(u32, char)> {
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|pid| {
                let fields = stat_fields(pid)?;
                let ppid: u32 = fields.get(1)?.parse().ok()?;
                let state = fields.first()?.chars().next()?;
                (ppid == parent).then_some((pid, state))
            })
            .collect()
    }

    /// CPU time (user + system) used so far by `pid`.
    pub fn cpu_time(pid: u32) -> Duration {
        // /proc reports clock ticks of USER_HZ, which the kernel ABI fixes at
        // 100 per second on Linux.
        const TICKS_PER_SEC: u64 = 100;
        let fields = stat_fields(pid).expect("the process is running");
        let ticks: u64 =
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        Duration::from_millis(ticks * 1000 / TICKS_PER_SEC)
    }

    /// The fd numbers `pid` has open, sorted.
    pub fn open_fds(pid: u32) -> Vec<u32> {
        let mut fds: Vec<u32> = fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("read /proc/PID/fd")
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        fds.sort_unstable();
        fds
    }

    /// `exit N` or `signal N`, the way the daemon words a session's status.
    pub fn describe(status: ExitStatus) -> String {
        match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit {code}"),
            (None, Some(signal)) => format!("signal {signal}"),
            _ => format!("{status:?}"),
        }
    }

    /// Panics, saying that `what` needs root, unless the tests run as root.
    /// For the tests marked `#[ignore = "needs root"]`, when someone runs
    /// them without it.
    pub fn assert_root(what: &str) {
        assert!(
            is_root(),
            "{what} needs root: run this test as root (CI does, with --include-ignored)"
        );
    }

    pub fn is_root() -> bool {
        fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
            })
            .unwrap_or(false)
    }

    // ---------------------------------------------------------------------------
    // Users
    // ---------------------------------------------------------------------------

    /// A system user (with its own primary group and one supplementary group)
    /// created for one test and deleted on drop. Needs root.
    #[derive(Debug)]
    pub struct TestUser {
        pub name: String,
        pub uid: u32,
        pub gid: u32,
        pub home: String,
        pub extra_group: String,
        pub extra_gid: u32,
    }

    impl TestUser {
        /// Creates `wininetd-t<PID>-<tag>`. Needs root: a test that calls it
        /// is `#[ignore = "needs root"]`, and fails, saying so, when run
        /// without root.
        pub fn create(tag: &str) -> Self {
            assert_root("creating a test user");
            let name = format!("wininetd-t{}-{tag}", std::process::id());
            let extra_group = format!("{name}-g");
            let home = format!("/nonexistent/{name}");
            // Leftovers of an earlier run with the same pid would make useradd
            // fail: remove them first.
            let _ = Command::new("userdel").arg(&name).output();
            let _ = Command::new("groupdel").arg(&name).output();
            let _ = Command::new("groupdel").arg(&extra_group).output();
            run_tool(Command::new("groupadd").args(["--system", &extra_group]));
            run_tool(Command::new("useradd").args([
                "--system",
                "--no-create-home",
                "--user-group",
                "--home-dir",
                &home,
                "--shell",
                "/usr/sbin/nologin",
                "--groups",
                &extra_group,
                &name,
            ]));
            let passwd = getent("passwd", &name);
            let fields: Vec<&str> = passwd.split(':').collect();
            let user = TestUser {
                uid: fields[2].parse().expect("uid in getent passwd"),
                gid: fields[3].parse().expect("gid in getent passwd"),
                home: fields[5].to_owned(),
                extra_gid: getent("group", &extra_group)
                    .split(':')
                    .nth(2)
                    .and_then(|g| g.parse().ok())
                    .expect("gid in getent group"),
                name,
                extra_group,
            };
            assert_eq!(user.home, home, "useradd kept the home dir");
            user
        }
    }

    impl Drop for TestUser {
        fn drop(&mut self) {
            for (tool, name) in [("userdel", &self.name), ("groupdel", &self.extra_group)] {
                match Command::new(tool).arg(name).output() {
                    Ok(out) if out.status.success() => {}
                    Ok(out) => eprintln!(
                        "{tool} {name}: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                    Err(err) => eprintln!("{tool} {name}: {err}"),
                }
            }
            // userdel removes the user's own group only if USERGROUPS_ENAB.
            let _ = Command::new("groupdel").arg(&self.name).output();
        }
    }

    fn run_tool(command: &mut Command) {
        let out = command
            .output()
            .unwrap_or_else(|err| panic!("{command:?}: {err}"));
        assert!(
            out.status.success(),
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn getent(database: &str, key: &str) -> String {
        let out = Command::new("getent")
            .args([database, key])
            .output()
            .expect("run getent");
        assert!(
            out.status.success(),
            "getent {database} {key} found nothing"
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    // ---------------------------------------------------------------------------
    // IPv6 addresses on the loopback interface
    // ---------------------------------------------------------------------------

    /// Extra IPv6 addresses added to `lo` for one test and removed on drop, so
    /// that clients can connect from several IPv6 sources. Needs root and `ip`.
    #[derive(Debug)]
    pub struct LoopbackV6 {
        added: Vec<Ipv6Addr>,
    }

    impl LoopbackV6 {
        /// Adds `addrs` (each as a /128, without duplicate address detection,
        /// so they are usable at once). Needs root and `ip` (iproute2): a
        /// test that calls it is `#[ignore = "needs root"]`, and fails,
        /// saying why, when it cannot add them.
        pub fn add(addrs: &[Ipv6Addr]) -> Self {
            assert_root("adding IPv6 addresses to lo");
            let mut guard = Self { added: Vec::new() };
            for addr in addrs {
                let out = Command::new("ip")
                    .args([
                        "-6",
                        "addr",
                        "add",
                        &format!("{addr}/128"),
                        "dev",
                        "lo",
                        "nodad",
                    ])
                    .output()
                    .unwrap_or_else(|e| panic!("cannot run `ip` (iproute2): {e}"));
                assert!(
                    out.status.success(),
                    "ip -6 addr add {addr} dev lo: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                guard.added.push(*addr);
            }
            guard
        }
    }

    impl Drop for LoopbackV6 {
        fn drop(&mut self) {
            for addr in &self.added {
                let out = Command::new("ip")
                    .args(["-6", "addr", "del", &format!("{addr}/128"), "dev", "lo"])
                    .output();
                match out {
                    Ok(out) if out.status.success() => {}
                    Ok(out) => eprintln!(
                        "ip -6 addr del {addr} dev lo: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                    Err(err) => eprintln!("ip -6 addr del {addr} dev lo: {err}"),
                }
            }
        }
    }
}

// ===========================================================================
// Windows only: processes
// ===========================================================================

#[cfg(windows)]
pub use windows::*;

#[cfg(windows)]
mod windows {
    /// Whether process `pid` is still running.
    pub fn is_alive(pid: u32) -> bool {
        use windows_sys::Win32::Foundation::{CloseHandle, WAIT_TIMEOUT};
        use windows_sys::Win32::System::Threading::{
            OpenProcess, PROCESS_SYNCHRONIZE, WaitForSingleObject,
        };
        #[allow(unsafe_code)]
        // SAFETY: OpenProcess takes plain values and returns an owned handle
        // or null (no such process, or it has ended and nobody holds it).
        let handle = unsafe { OpenProcess(PROCESS_SYNCHRONIZE, 0, pid) };
        if handle.is_null() {
            return false;
        }
        #[allow(unsafe_code)]
        // SAFETY: `handle` is the live process handle opened above, closed
        // once here after the zero-timeout wait.
        let alive = unsafe {
            let alive = WaitForSingleObject(handle, 0) == WAIT_TIMEOUT;
            CloseHandle(handle);
            alive
        };
        alive
    }

    /// Ends process `pid` if it still runs (cleanup; errors ignored).
    pub fn terminate(pid: u32) {
        use windows_sys::Win32::Foundation::CloseHandle;
        use windows_sys::Win32::System::Threading::{
            OpenProcess, PROCESS_TERMINATE, TerminateProcess,
        };
        #[allow(unsafe_code)]
        // SAFETY: OpenProcess takes plain values; the handle, when not null,
        // is ours and closed once after TerminateProcess.
        unsafe {
            let handle = OpenProcess(PROCESS_TERMINATE, 0, pid);
            if !handle.is_null() {
                TerminateProcess(handle, 1);
                CloseHandle(handle);
            }
        }
    }
}
