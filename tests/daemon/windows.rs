//! Integration tests of `wininetd.exe` on Windows. Here they run under Wine
//! (tools/wine/runner.sh, README.md, "Development"):
//!
//! ```text
//! cargo test --target x86_64-pc-windows-gnu --test daemon windows
//! ```
//!
//! Each test starts the real daemon with `--debug --cfgfile` on free ports,
//! waits for its `listening on` lines, talks to it over loopback and serves
//! the helper child `wininetd-testchild` (tests/child/main.rs). The service
//! tests install the daemon as the service `wininetd` and drive it with `sc`
//! and `net`, as an operator would.
//!
//! What Wine cannot show, these tests do not claim (wine.md, "What Wine
//! shows truthfully"): a full-duplex child on a synchronous socket passes
//! under Wine and stalls on Windows, so the duplex test runs in pipe mode
//! only; `LogonUserW` accepts any password under Wine and
//! `CreateProcessAsUserW` then fails, so the run-as test pins the failure
//! path (refused, logged without the password, never run as the daemon's
//! account), not a successful logon; Wine stores no events, so the Event Log
//! test reads Wine's `ReportEventW` trace (see [`EventLog`]).
//!
//! The harness is tests/common/mod.rs, shared with the Linux tests; what
//! only these tests need (the service control manager, the Event Log, tools
//! run to completion) is the first part of this file, and the tests,
//! grouped by what they pin, follow.
#![cfg(windows)]

use std::fs;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    CHILD, DAEMON, Daemon, WAIT, assert_silent, child, connect, connect_from, free_port, has_token,
    is_alive, number_after, peer_text, read_line, read_to_eof, request, v4, v6, wait_gone,
    windows_path,
};

/// Deadline for "promptly": a connection whose child has exited must end
/// well before an unrelated `sleep` child (which sleeps [`LONG_SLEEP`])
/// would.
const PROMPTLY: Duration = Duration::from_secs(5);

/// How long the helper's `sleep` children live: much longer than
/// [`PROMPTLY`], much shorter than a CI run, in case one leaks.
const LONG_SLEEP: &str = "30";

/// The service the daemon installs as (`--install`).
pub(crate) const SERVICE: &str = "wininetd";

// ===========================================================================
// Harness: what only these tests need (the rest is tests/common/mod.rs)
// ===========================================================================

/// The account the tests run as: an account that exists (Wine knows few
/// others), for configs whose users are looked up at load.
fn existing_user() -> String {
    std::env::var("USERNAME").expect("Windows sets USERNAME")
}

/// `%SystemRoot%\System32\cmd.exe`.
fn cmd_exe() -> String {
    let root = std::env::var("SystemRoot").unwrap_or_else(|_| r"C:\Windows".to_owned());
    format!(r"{root}\System32\cmd.exe")
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test must not hide the output of the others.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The value of `NAME` in the test child's `env` output (`NAME=value`
/// lines; `NAME unset` gives `None`).
pub(crate) fn env_value<'a>(output: &'a str, name: &str) -> Option<&'a str> {
    output.lines().find_map(|l| {
        l.trim_end_matches('\r')
            .strip_prefix(name)?
            .strip_prefix('=')
    })
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// Runs a tool to completion with a deadline (killed and a panic after
/// it); returns its status and output.
pub(crate) fn run_tool(program: &str, args: &[&str], timeout: Duration) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} {args:?}: {e}"));
    let collect = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut data = Vec::new();
            let _ = pipe.read_to_end(&mut data);
            data
        })
    };
    let stdout = collect(Box::new(child.stdout.take().expect("stdout is piped")));
    let stderr = collect(Box::new(child.stderr.take().expect("stderr is piped")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{program} {args:?} did not finish within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// `program args`, its status and its output, for assertion messages.
pub(crate) fn describe_run(program: &str, args: &[&str], out: &Output) -> String {
    format!(
        "{program} {args:?}: {}\n---- stdout ----\n{}\n---- stderr ----\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs the daemon with `args` (no config written for it) to completion.
pub(crate) fn run_daemon(args: &[&str]) -> Output {
    run_tool(DAEMON, args, WAIT)
}

// ---------------------------------------------------------------------------
// The service control manager
// ---------------------------------------------------------------------------

/// Serialises everything that touches the SCM in this process: there is one
/// service `wininetd`, and Wine's StartServiceCtrlDispatcherW hands the
/// control pipe of whatever service is starting to any process that calls
/// it, so a daemon started without `--debug` (it tries the dispatcher) must
/// not run while the service starts.
static SCM: Mutex<()> = Mutex::new(());

/// The service `wininetd` installed by a test: held with the [`SCM`] lock,
/// stopped and removed on drop whatever happened.
pub(crate) struct InstalledService {
    _scm: MutexGuard<'static, ()>,
}

impl InstalledService {
    /// Takes the lock and removes a service left by an earlier, killed run.
    pub(crate) fn prepare() -> Self {
        let scm = lock(&SCM);
        if service_status().is_some() {
            let out = run_daemon(&["--remove"]);
            eprintln!(
                "removed a leftover service: {}",
                describe_run(DAEMON, &["--remove"], &out)
            );
        }
        Self { _scm: scm }
    }
}

impl Drop for InstalledService {
    fn drop(&mut self) {
        if service_status().is_some() {
            // --remove stops the service (bounded) before deleting it.
            let out = run_tool(DAEMON, &["--remove"], Duration::from_secs(60));
            if !out.status.success() {
                eprintln!(
                    "cleanup failed: {}",
                    describe_run(DAEMON, &["--remove"], &out)
                );
            }
        }
    }
}

/// The status of the service `wininetd`, or `None` if it is not installed.
pub(crate) fn service_status() -> Option<windows_service::service::ServiceStatus> {
    use windows_service::service::ServiceAccess;
    use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
    // ERROR_SERVICE_DOES_NOT_EXIST
    const NO_SUCH_SERVICE: i32 = 1060;
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .expect("connect to the service control manager");
    match manager.open_service(SERVICE, ServiceAccess::QUERY_STATUS) {
        Ok(service) => Some(service.query_status().expect("query the service's status")),
        Err(windows_service::Error::Winapi(e)) if e.raw_os_error() == Some(NO_SUCH_SERVICE) => None,
        Err(e) => panic!("cannot open service {SERVICE}: {e}"),
    }
}

/// The configuration of the installed service `wininetd`.
fn service_config() -> windows_service::service::ServiceConfig {
    use windows_service::service::ServiceAccess;
    use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
    ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .expect("connect to the service control manager")
        .open_service(SERVICE, ServiceAccess::QUERY_CONFIG)
        .expect("open the service")
        .query_config()
        .expect("query the service's configuration")
}

/// Waits until the service reaches `state`; panics after `timeout` with
/// the last status seen.
pub(crate) fn wait_service_state(state: windows_service::service::ServiceState, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let status = service_status();
        if status.as_ref().is_some_and(|s| s.current_state == state) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "service {SERVICE} not {state:?} within {timeout:?}: {status:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------
// The Event Log
// ---------------------------------------------------------------------------

/// Where Wine's `ReportEventW` trace of the session's services goes:
/// tools/wine/setup.sh starts services.exe (so every service it starts)
/// with `WINEDEBUG=-all,+eventlog` and this file as stderr. Wine writes
/// debug output to the Unix stderr a process inherited, never to the
/// Windows stderr handle it was given, so neither a service's events nor
/// those of a daemon this test starts can be read from a pipe.
const WINE_SERVICES_LOG: &str = r"C:\wininetd-tests\services.log";

/// The events the service `wininetd` reports from now on. Under Wine they
/// are the `ReportEventW` trace lines in [`WINE_SERVICES_LOG`] (Wine stores
/// no events); on Windows, the Application log's events of the source
/// `wininetd`, through `wevtutil` (not exercised here).
pub(crate) struct EventLog {
    under_wine: bool,
    /// Under Wine: the log's length when the test began.
    start: u64,
    /// On Windows: when the test began, in the form wevtutil's XPath wants.
    since: String,
}

impl EventLog {
    pub(crate) fn begin() -> Self {
        let under_wine = run_tool("reg", &["query", r"HKLM\Software\Wine"], WAIT)
            .status
            .success();
        if under_wine {
            let start = fs::metadata(WINE_SERVICES_LOG)
                .unwrap_or_else(|e| {
                    panic!(
                        "{WINE_SERVICES_LOG}: {e}. The Wine session must be started by \
                         tools/wine/setup.sh, which sends the services' Event Log trace there \
                         (stop a session started otherwise with `wineserver -k`)"
                    )
                })
                .len();
            Self {
                under_wine,
                start,
                since: String::new(),
            }
        } else {
            let out = run_tool(
                "powershell",
                &[
                    "-NoProfile",
                    "-Command",
                    "(Get-Date).ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ss.000Z')",
                ],
                WAIT,
            );
            Self {
                under_wine,
                start: 0,
                since: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            }
        }
    }

    /// The events since [`EventLog::begin`], one line each.
    pub(crate) fn events(&self) -> Vec<String> {
        if self.under_wine {
            let mut file = fs::File::open(WINE_SERVICES_LOG).expect("open the services log");
            let mut text = Vec::new();
            io::Seek::seek(&mut file, io::SeekFrom::Start(self.start)).expect("seek");
            file.read_to_end(&mut text).expect("read the services log");
            String::from_utf8_lossy(&text)
                .lines()
                .filter(|l| l.contains(":eventlog:ReportEventW"))
                .map(str::to_owned)
                .collect()
        } else {
            let query = format!(
                "*[System[Provider[@Name='{SERVICE}'] and TimeCreated[@SystemTime>='{}']]]",
                self.since
            );
            let out = run_tool(
                "wevtutil",
                &["qe", "Application", &format!("/q:{query}"), "/f:text"],
                WAIT,
            );
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    /// Waits for an event for which `matches` holds; panics after `timeout`
    /// with every event seen.
    pub(crate) fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.events();
            if let Some(found) = events.iter().find(|l| matches(l)) {
                return found.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no event {what} within {timeout:?}; events since the test began:\n{}",
                events.join("\n")
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

// ===========================================================================
// Tests: the data path
// ===========================================================================

/// The two ways a child can get the connection (`--stdio`).
const MODES: [&str; 2] = ["socket", "pipe"];

/// A daemon with the child `mode` on `{port0}`, in stdio mode `stdio`.
fn start_one(stdio: &str, mode: &str) -> Daemon {
    Daemon::builder()
        .service("none", &child(mode))
        .arg("--stdio")
        .arg(stdio)
        .start()
}

#[test]
fn listening_lines_name_the_port_and_the_command_line() {
    let cmdline = child("echo");
    let daemon = Daemon::builder().service("none", &cmdline).start();
    let port = daemon.port(0);
    let line = daemon.wait_for("`listening on`", WAIT, |l| l.contains("listening on"));
    let expected = [
        format!("listening on [::]:{port} ({cmdline})"),
        format!("listening on 0.0.0.0:{port} ({cmdline})"),
    ];
    assert!(
        expected.iter().any(|e| line.ends_with(e.as_str())),
        "{line:?} is none of {expected:?}"
    );
}

#[test]
fn round_trip_and_eof_from_the_client() {
    for stdio in MODES {
        let daemon = start_one(stdio, "echo");
        let input = b"hello\r\nworld, \xff binary \x00 bytes\n".repeat(1000);
        let mut stream = connect(daemon.port(0));
        let client = stream.local_addr().expect("local_addr");
        stream.write_all(&input).expect("send");
        // EOF towards the child: it sees the end of its stdin, flushes, exits.
        stream.shutdown(Shutdown::Write).expect("half-close");
        let output = read_to_eof(&mut stream, WAIT).expect("read the echo");
        assert!(
            output == input,
            "--stdio {stdio}: echoed {} bytes, sent {}",
            output.len(),
            input.len()
        );
        let (start, pid) = daemon.session_start(client);
        assert!(
            has_token(&start, &format!("port={}", daemon.port(0))),
            "{start}"
        );
        let end = daemon.session_end(pid);
        assert!(end.contains("status=exit 0"), "{end}");
        assert!(end.contains("duration="), "{end}");
    }
}

#[test]
fn eof_reaches_the_client_when_the_child_exits() {
    for stdio in MODES {
        let daemon = start_one(stdio, "exit 3");
        let mut stream = connect(daemon.port(0));
        let client = stream.local_addr().expect("local_addr");
        // The client keeps its side open: the end comes from the child.
        let output = read_to_eof(&mut stream, WAIT).expect("EOF after the child's exit");
        let output = String::from_utf8_lossy(&output);
        let (_, pid) = daemon.session_start(client);
        assert_eq!(
            output.trim_end(),
            format!("exiting pid={pid} code=3"),
            "--stdio {stdio}"
        );
        let end = daemon.session_end(pid);
        assert!(end.contains("status=exit 3"), "--stdio {stdio}: {end}");
    }
}

#[test]
fn closing_the_connection_ends_the_session() {
    for stdio in MODES {
        let daemon = start_one(stdio, "pid");
        let mut stream = connect(daemon.port(0));
        let line = read_line(&mut stream, WAIT);
        let pid = number_after(&line, "pid").unwrap_or_else(|| panic!("{line:?}"));
        drop(stream);
        // The child reads its stdin to EOF, then exits.
        let end = daemon.session_end(pid);
        assert!(end.contains("status=exit 0"), "--stdio {stdio}: {end}");
        wait_gone(pid, WAIT);
    }
}

#[test]
fn the_childs_stderr_goes_to_the_client() {
    for stdio in MODES {
        let daemon = start_one(stdio, "stderr to-stderr-marker");
        let output = request(daemon.port(0), b"");
        assert_eq!(output.trim_end(), "to-stderr-marker", "--stdio {stdio}");
    }
}

/// Pipe mode exists for programs that read and write at the same time: on
/// Windows they stall on a synchronous socket (Wine does not show that, so
/// the socket mode is not tested with this child). Both directions carry a
/// megabyte at once; neither side may wait for the other.
#[test]
fn pipe_mode_serves_a_child_that_reads_and_writes_at_once() {
    const BYTES: usize = 1 << 20;
    let daemon = start_one("pipe", &format!("duplex {BYTES}"));
    let mut stream = connect(daemon.port(0));
    let mut writer = stream.try_clone().expect("clone the stream");
    let sender = thread::spawn(move || -> io::Result<()> {
        let block = vec![b'x'; 64 * 1024];
        for _ in 0..BYTES / block.len() {
            writer.write_all(&block)?;
        }
        writer.shutdown(Shutdown::Write)
    });
    let output = read_to_eof(&mut stream, WAIT).expect("read the child's output");
    sender
        .join()
        .expect("the sender does not panic")
        .expect("send a megabyte");
    let pattern: Vec<u8> = (0..BYTES).map(|i| b'a' + (i % 26) as u8).collect();
    assert!(
        output.len() > BYTES && output[..BYTES] == pattern[..],
        "the pattern came back damaged: {} bytes",
        output.len()
    );
    let tail = String::from_utf8_lossy(&output[BYTES..]);
    assert_eq!(
        tail.trim(),
        format!("duplex read={BYTES} wrote={BYTES}"),
        "the child's summary"
    );
}

// ===========================================================================
// Tests: the child's environment
// ===========================================================================

/// Each child gets the address of its own client. WinInetd set CLIENT_IP in
/// its own environment before each CreateProcess, so concurrent clients
/// could get each other's. Clients from two loopback addresses and IPv6
/// connect at once, several times over.
#[test]
fn client_address_is_per_connection() {
    const VARS: &str =
        "env CLIENT_IP CLIENT_PORT PROTO TCPREMOTEIP TCPREMOTEPORT TCPLOCALPORT WININETD_TEST_MARK";
    let daemon = Daemon::builder()
        .service("none", &child(VARS))
        .env("WININETD_TEST_MARK", "inherited")
        .start();
    let port = daemon.port(0);
    let sources: Vec<(IpAddr, SocketAddr)> = [
        (IpAddr::from(Ipv4Addr::LOCALHOST), v4(port)),
        (IpAddr::from(Ipv4Addr::new(127, 0, 0, 2)), v4(port)),
        (IpAddr::from(Ipv6Addr::LOCALHOST), v6(port)),
    ]
    .into_iter()
    .cycle()
    .take(12)
    .collect();
    let clients: Vec<_> = sources
        .into_iter()
        .map(|(source, dest)| thread::spawn(move || connect_from(source, dest)))
        .collect();
    let mut seen = 0;
    for client in clients {
        let mut stream = client.join().expect("the client connects");
        let local = stream.local_addr().expect("local_addr");
        let output = read_to_eof(&mut stream, WAIT).expect("read the environment");
        let output = String::from_utf8_lossy(&output);
        let ip = peer_text(local)
            .rsplit_once(':')
            .map(|(ip, _)| ip.trim_matches(['[', ']']).to_owned())
            .expect("ip:port");
        let expected = [
            ("CLIENT_IP", ip.clone()),
            ("CLIENT_PORT", local.port().to_string()),
            ("PROTO", "TCP".to_owned()),
            ("TCPREMOTEIP", ip),
            ("TCPREMOTEPORT", local.port().to_string()),
            ("TCPLOCALPORT", port.to_string()),
            ("WININETD_TEST_MARK", "inherited".to_owned()),
        ];
        for (name, value) in expected {
            assert_eq!(
                env_value(&output, name),
                Some(value.as_str()),
                "{name} of the client {local}:\n{output}"
            );
        }
        seen += 1;
    }
    assert_eq!(seen, 12);
}

// ===========================================================================
// Tests: sessions and the handles children inherit
// ===========================================================================

/// Regression test for WinInetd's handle leak: every child inherited every
/// inheritable handle (the other clients' sockets), so a connection stayed
/// open until an unrelated child exited. Here B1 is connected before A's
/// long-lived child starts (A's child would inherit B1's socket) and B2
/// after it (B2's child would inherit A's); both must end as soon as their
/// own child exits, while A's child still runs.
#[test]
fn a_session_ends_when_its_own_child_exits() {
    for stdio in MODES {
        let daemon = Daemon::builder()
            .service("none", &child(&format!("sleep {LONG_SLEEP}")))
            .service("none", &child("pid"))
            .service("none", &child("exit 0"))
            .arg("--stdio")
            .arg(stdio)
            .start();

        let mut b1 = connect(daemon.port(1));
        let b1_line = read_line(&mut b1, WAIT);
        let b1_pid = number_after(&b1_line, "pid").unwrap_or_else(|| panic!("{b1_line:?}"));

        let mut a = connect(daemon.port(0));
        let a_line = read_line(&mut a, WAIT);
        let a_pid = number_after(&a_line, "pid").unwrap_or_else(|| panic!("{a_line:?}"));

        // B1's child exits on EOF; its connection must end with it.
        b1.shutdown(Shutdown::Write).expect("half-close B1");
        let started = Instant::now();
        read_to_eof(&mut b1, PROMPTLY).unwrap_or_else(|e| {
            panic!(
                "--stdio {stdio}: B1 (child {b1_pid}) did not end while A's child {a_pid} runs: {e}"
            )
        });
        daemon.session_end(b1_pid);

        // B2's child exits at once.
        let mut b2 = connect(daemon.port(2));
        let output = read_to_eof(&mut b2, PROMPTLY).unwrap_or_else(|e| {
            panic!("--stdio {stdio}: B2 did not end while A's child {a_pid} runs: {e}")
        });
        assert!(
            String::from_utf8_lossy(&output).starts_with("exiting pid="),
            "--stdio {stdio}: {output:?}"
        );

        assert!(is_alive(a_pid), "--stdio {stdio}: A's child ended early");
        assert_silent(&mut a, Duration::from_millis(200));
        eprintln!(
            "--stdio {stdio}: B1 and B2 ended in {:?}",
            started.elapsed()
        );

        // The same with many sessions starting at once: a handle made
        // inheritable for one child must not reach a child started at the
        // same moment.
        const PAIRS: usize = 6;
        let clients: Vec<_> = (0..2 * PAIRS)
            .map(|i| {
                let port = daemon.port(i % 2);
                thread::spawn(move || {
                    let mut stream = connect(port);
                    let line = read_line(&mut stream, WAIT);
                    let pid = number_after(&line, "pid").unwrap_or_else(|| panic!("{line:?}"));
                    (i % 2 == 1, stream, pid)
                })
            })
            .collect();
        let clients: Vec<_> = clients
            .into_iter()
            .map(|c| c.join().expect("the client connects"))
            .collect();
        let mut ended = 0;
        for (short_lived, mut stream, pid) in clients {
            if short_lived {
                stream.shutdown(Shutdown::Write).expect("half-close");
                read_to_eof(&mut stream, PROMPTLY).unwrap_or_else(|e| {
                    panic!("--stdio {stdio}: the session of child {pid} did not end: {e}")
                });
                ended += 1;
            } else {
                assert!(is_alive(pid), "--stdio {stdio}: child {pid} ended early");
            }
        }
        assert_eq!(ended, PAIRS);
    }
}

/// Each child is in a job object with kill-on-close: when the daemon dies,
/// however it dies, its sessions die with it.
#[test]
fn killing_the_daemon_ends_its_sessions() {
    for stdio in MODES {
        let mut daemon = start_one(stdio, &format!("sleep {LONG_SLEEP}"));
        let mut stream = connect(daemon.port(0));
        let line = read_line(&mut stream, WAIT);
        let pid = number_after(&line, "pid").unwrap_or_else(|| panic!("{line:?}"));
        assert!(is_alive(pid));
        daemon.kill();
        wait_gone(pid, WAIT);
        read_to_eof(&mut stream, WAIT).expect("the connection ends with the daemon");
    }
}

#[test]
fn a_program_that_cannot_start_closes_the_connection() {
    let missing = r"C:\wininetd-no-such-dir\no-such-program.exe";
    let daemon = Daemon::builder()
        .service("none", &format!("{missing} echo"))
        .start();
    let output = request(daemon.port(0), b"ignored");
    assert_eq!(output, "", "nothing is served");
    let line = daemon.wait_for("`cannot start`", WAIT, |l| l.contains("cannot start"));
    assert!(line.contains(missing), "{line}");
    // The daemon goes on serving.
    assert_eq!(request(daemon.port(0), b""), "");
    let mut daemon = daemon;
    assert!(daemon.exited().is_none(), "the daemon survived");
}

// ===========================================================================
// Tests: run-as
// ===========================================================================

/// `USER:PASS`: under Wine, LogonUserW accepts anything and
/// CreateProcessAsUserW fails with its token, which is exactly the failure
/// path to pin. The connection must be closed, the log must name the user
/// and never the password, and the program must not run at all, in
/// particular not as the daemon's own account (WinInetd ran it as SYSTEM).
/// The same command line with `none` does write its marker: the check of
/// the marker can fail.
#[test]
fn a_failed_logon_refuses_the_connection_and_hides_the_password() {
    const PASSWORD: &str = "pw-SECRET-3141";
    let user = existing_user();
    let user = user.as_str();
    let cmd = cmd_exe();
    let daemon = Daemon::builder()
        .line(&format!(
            r#"{{port0}} {user}:{PASSWORD} "{cmd}" /c echo ran> "{{dir}}\run-as-marker""#
        ))
        .line(&format!(
            r#"{{port1}} none "{cmd}" /c echo ran> "{{dir}}\control-marker""#
        ))
        .start();
    let run_as_marker = daemon.dir().join("run-as-marker");
    let control_marker = daemon.dir().join("control-marker");

    let mut stream = connect(daemon.port(0));
    let client = stream.local_addr().expect("local_addr");
    let output = read_to_eof(&mut stream, WAIT).expect("the connection is closed");
    assert_eq!(String::from_utf8_lossy(&output), "", "nothing is served");
    daemon.wait_for(&format!("`cannot` naming {user}"), WAIT, |l| {
        l.contains(&format!("user \"{user}\"")) && l.contains("cannot")
    });

    // The control: the same program, run as the daemon's account, runs.
    assert_eq!(request(daemon.port(1), b""), "");
    let deadline = Instant::now() + WAIT;
    while !control_marker.exists() {
        assert!(
            Instant::now() < deadline,
            "the control service did not write {}",
            control_marker.display()
        );
        thread::sleep(Duration::from_millis(20));
    }

    let mut daemon = daemon;
    daemon.kill();
    assert!(
        !run_as_marker.exists(),
        "the program ran although the logon failed"
    );
    let peer = format!("peer={}", peer_text(client));
    for line in daemon.lines() {
        assert!(
            !(line.contains("session start") && has_token(&line, &peer)),
            "a session started for the refused client: {line}"
        );
    }
    assert!(
        !daemon.stderr_text().contains(PASSWORD) && !daemon.stdout_text().contains(PASSWORD),
        "the password was printed"
    );
}

// ===========================================================================
// Tests: configuration and command line
// ===========================================================================

#[test]
fn config_errors_are_listed_with_their_line_numbers() {
    let echo = child("echo");
    let mut daemon = Daemon::builder()
        .line("# a comment, then bad lines")
        .line(&format!("0 none {echo}"))
        .line(&format!("70000 none {echo}"))
        .line("{port3} none")
        .line(&format!("{{port0}} none {echo}"))
        .line(&format!("{{port0}} none {echo}"))
        .line(&format!("{{port1}} none \"{} echo", windows_path(CHILD)))
        .line("{port2} none wininetd-no-such-program-xyz")
        .spawn();
    let status = daemon.wait_exit(WAIT);
    assert_eq!(status.code(), Some(1), "exit code");
    let file = daemon.config_name();
    let expected = [
        (2, "port"),
        (3, "port"),
        (4, "missing"),
        (6, "duplicate port"),
        (7, "quote"),
        (8, "not found"),
    ];
    let lines = daemon.lines();
    for (number, token) in expected {
        let prefix = format!("{file}:{number}: error:");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&prefix) && l.contains(token)),
            "no `{prefix} ...{token}...` line"
        );
    }
    let duplicate = lines
        .iter()
        .find(|l| l.contains("duplicate port"))
        .expect("the duplicate line");
    assert!(
        duplicate.contains('5'),
        "names the earlier line: {duplicate}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("listening on")),
        "a bad config must not start"
    );
}

#[test]
fn check_reports_a_clean_config() {
    const PASSWORD: &str = "pw-SECRET-2718";
    let mut daemon = Daemon::builder()
        .service("none", &child("echo"))
        .service(&format!("{}:{PASSWORD}", existing_user()), &child("echo"))
        .arg("--check")
        .no_debug()
        .spawn();
    let status = daemon.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "exit code");
    let expected = format!("{}: ok, 2 service(s)", daemon.config_name());
    assert!(
        daemon.stdout_text().contains(&expected),
        "no {expected:?} on stdout"
    );
    assert!(
        !daemon.stderr_text().contains(PASSWORD) && !daemon.stdout_text().contains(PASSWORD),
        "the password was printed"
    );
    assert!(
        !daemon.stderr_text().contains("listening on"),
        "--check does not serve"
    );
}

#[test]
fn check_reports_errors_and_their_count() {
    let mut daemon = Daemon::builder()
        .line("0 none x")
        .line("{port0} none")
        .arg("--check")
        .no_debug()
        .spawn();
    let status = daemon.wait_exit(WAIT);
    assert_eq!(status.code(), Some(1), "exit code");
    let file = daemon.config_name();
    let lines = daemon.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{file}:1: error:")))
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{file}:2: error:")))
    );
    assert!(
        lines.last().is_some_and(|l| l.contains("2 error(s)")),
        "the last line counts the errors"
    );
}

#[test]
fn an_empty_config_is_an_error() {
    let mut daemon = Daemon::builder().line("# nothing but a comment").spawn();
    assert_eq!(daemon.wait_exit(WAIT).code(), Some(1));
    let expected = format!("{}: error: no services", daemon.config_name());
    assert!(
        daemon.lines().iter().any(|l| l.starts_with(&expected)),
        "no {expected:?} line"
    );
}

#[test]
fn a_missing_config_file_is_an_error() {
    let missing = r"C:\wininetd-no-such-dir\wininetd.conf";
    let out = run_daemon(&["--debug", "--cfgfile", missing]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        describe_run(DAEMON, &["--cfgfile", missing], &out)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(missing));
}

#[test]
fn a_port_in_use_is_reported_and_nothing_listens() {
    // Held on both families, so whichever the daemon binds is taken.
    let taken_v4 = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
    let port = taken_v4.local_addr().expect("local_addr").port();
    let _taken_v6 = TcpListener::bind((Ipv6Addr::UNSPECIFIED, port));
    let mut daemon = Daemon::builder()
        .line(&format!("{port} none {}", child("echo")))
        .spawn();
    assert_eq!(daemon.wait_exit(WAIT).code(), Some(1), "exit code");
    let lines = daemon.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("cannot listen") && l.contains(&port.to_string())),
        "no `cannot listen` line naming port {port}"
    );
    assert!(!lines.iter().any(|l| l.contains("listening on")));
}

#[test]
fn a_bad_flag_exits_2() {
    let out = run_daemon(&["--no-such-flag"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        describe_run(DAEMON, &["--no-such-flag"], &out)
    );
    let out = run_daemon(&["--timeout", "soon"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        describe_run(DAEMON, &["--timeout", "soon"], &out)
    );
}

/// Started from a console without a flag, WinInetd printed its usage; so
/// does wininetd (it first asks the SCM whether it is a service: hold the
/// SCM lock, see [`SCM`]).
#[test]
fn no_flag_prints_the_usage_and_exits_2() {
    let _scm = lock(&SCM);
    let out = run_daemon(&[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        describe_run(DAEMON, &[], &out)
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("--cfgfile") && text.contains("--install"),
        "{text}"
    );
}

// ===========================================================================
// Tests: the Windows service
// ===========================================================================

/// Install, start, serve, stop, remove, as an operator would; and the
/// service's logs go to the Event Log.
#[test]
fn service_install_start_serve_stop_remove() {
    use windows_service::service::{ServiceExitCode, ServiceStartType, ServiceState};
    let service = InstalledService::prepare();
    let port = free_port();
    let dir = tempfile::Builder::new()
        .prefix("wininetd-service-")
        .tempdir()
        .expect("temp dir");
    let config_path = windows_path(&dir.path().join("wininetd.conf").display().to_string());
    let cmdline = child("env CLIENT_PORT");
    fs::write(&config_path, format!("{port} none {cmdline}\n")).expect("write the config");
    let events = EventLog::begin();

    // The parameters given with --install persist as the service's launch
    // arguments; installing again replaces them. The config is checked
    // first, and a --timeout that socket mode ignores is warned about.
    let install = ["--install", "--cfgfile", &config_path, "--timeout", "30"];
    let out = run_daemon(&install);
    assert!(
        out.status.success(),
        "{}",
        describe_run(DAEMON, &install, &out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("{config_path}: ok, 1 service(s)")),
        "{}",
        describe_run(DAEMON, &install, &out)
    );
    assert!(
        stdout.contains(&format!("warning: --timeout has no effect on {port}")),
        "{}",
        describe_run(DAEMON, &install, &out)
    );
    let status = service_status().expect("the service is installed");
    assert_eq!(status.current_state, ServiceState::Stopped);
    let config = service_config();
    assert_eq!(config.display_name, "wininetd super-server", "{config:?}");
    assert_eq!(config.start_type, ServiceStartType::OnDemand, "{config:?}");
    let command_line = config.executable_path.display().to_string();
    for expected in ["wininetd.exe", "--cfgfile", &config_path, "--timeout"] {
        assert!(
            command_line.contains(expected),
            "{expected:?} not in {command_line:?}"
        );
    }
    let install = [
        "--install",
        "--cfgfile",
        &config_path,
        "--stdio",
        "pipe",
        "--log-sessions",
    ];
    let out = run_daemon(&install);
    assert!(
        out.status.success(),
        "{}",
        describe_run(DAEMON, &install, &out)
    );
    let command_line = service_config().executable_path.display().to_string();
    assert!(
        command_line.contains("--stdio pipe")
            && command_line.contains("--log-sessions")
            && !command_line.contains("--timeout"),
        "not updated: {command_line:?}"
    );

    // The service may report RUNNING only once its port is bound (WinInetd
    // reported it first): connect at once, without retrying. (`net start`
    // waits for RUNNING on Windows, not under Wine: wait for the state.)
    let out = run_tool("net", &["start", SERVICE], WAIT);
    assert!(
        out.status.success(),
        "{}",
        describe_run("net", &["start", SERVICE], &out)
    );
    wait_service_state(ServiceState::Running, WAIT);
    let mut stream = connect(port);
    let local = stream.local_addr().expect("local_addr");
    let output = read_to_eof(&mut stream, WAIT).expect("served by the service");
    assert_eq!(
        env_value(&String::from_utf8_lossy(&output), "CLIENT_PORT"),
        Some(local.port().to_string().as_str()),
        "{output:?}"
    );

    let out = run_tool("sc", &["stop", SERVICE], WAIT);
    assert!(
        out.status.success(),
        "{}",
        describe_run("sc", &["stop", SERVICE], &out)
    );
    wait_service_state(ServiceState::Stopped, WAIT);
    let status = service_status().expect("still installed");
    assert_eq!(status.exit_code, ServiceExitCode::Win32(0), "{status:?}");
    assert!(
        TcpStream::connect_timeout(&v4(port), Duration::from_secs(2)).is_err(),
        "the port is closed once stopped"
    );

    // What the service logged, in order; with --log-sessions, the
    // sessions too.
    let listening = format!("listening on [::]:{port}");
    events.wait_for(&format!("{listening:?}"), WAIT, |e| {
        e.contains(&listening) || e.contains(&format!("listening on 0.0.0.0:{port}"))
    });
    let peer = format!("peer={}", peer_text(local));
    events.wait_for("`session start`", WAIT, |e| {
        e.contains("session start") && has_token(e, &peer)
    });
    events.wait_for("`session end`", WAIT, |e| {
        e.contains("session end") && e.contains("status=exit 0")
    });
    events.wait_for("`shutting down`", WAIT, |e| e.contains("shutting down"));

    let out = run_daemon(&["--remove"]);
    assert!(
        out.status.success(),
        "{}",
        describe_run(DAEMON, &["--remove"], &out)
    );
    assert!(service_status().is_none(), "the service is gone");
    drop(service);
}

/// A config error stops the service at start with a service-specific exit
/// code, and the errors (file:line, as on the console) go to the Event Log.
#[test]
fn service_with_a_bad_config_stops_and_logs_why() {
    use windows_service::service::{ServiceExitCode, ServiceState};
    let _service = InstalledService::prepare();
    let dir = tempfile::Builder::new()
        .prefix("wininetd-service-")
        .tempdir()
        .expect("temp dir");
    let config_path = windows_path(&dir.path().join("wininetd.conf").display().to_string());
    fs::write(&config_path, format!("# bad\n0 none {}\n", child("echo"))).expect("write");
    let events = EventLog::begin();

    // --install checks the config first and refuses it (regression test:
    // it installed a service that could not start); --force installs it.
    let install = ["--install", "--cfgfile", &config_path];
    let out = run_daemon(&install);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        describe_run(DAEMON, &install, &out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{config_path}:2: error:"))
            && stderr.contains("not installed (--force installs anyway)"),
        "{}",
        describe_run(DAEMON, &install, &out)
    );
    assert!(service_status().is_none(), "nothing was installed");
    let install = ["--install", "--cfgfile", &config_path, "--force"];
    let out = run_daemon(&install);
    assert!(
        out.status.success(),
        "{}",
        describe_run(DAEMON, &install, &out)
    );
    // Windows' `net start` waits for RUNNING or STOPPED and fails on the
    // latter; Wine's reports success once StartServiceW returns, i.e. at
    // START_PENDING. So its outcome is not the check: the service's state is.
    let out = run_tool("net", &["start", SERVICE], WAIT);
    eprintln!("{}", describe_run("net", &["start", SERVICE], &out));
    wait_service_state(ServiceState::Stopped, WAIT);
    let status = service_status().expect("installed");
    assert_eq!(
        status.exit_code,
        ServiceExitCode::ServiceSpecific(1),
        "{status:?}"
    );

    // Wine's debugstr_w doubles the backslashes of the path.
    let escaped = config_path.replace('\\', r"\\");
    events.wait_for("naming the file and line", WAIT, |e| {
        (e.contains(&format!("{config_path}:2: error:"))
            || e.contains(&format!("{escaped}:2: error:")))
            && e.contains("port")
    });
}

/// Regression test for two events per connection: without
/// `--log-sessions` no session start or end reaches the Event Log, while
/// the other lines (listening, reload, stop) still do. And `--reload`
/// checks the service's config first (regression test: it printed success
/// and exited 0 when the reload then failed in the service): a config with
/// errors is reported and the service is not asked; a clean one is.
#[test]
fn service_logs_no_sessions_unless_asked_and_reload_checks_first() {
    use windows_service::service::ServiceState;
    let service = InstalledService::prepare();
    let (port, second) = (free_port(), free_port());
    let dir = tempfile::Builder::new()
        .prefix("wininetd-service-")
        .tempdir()
        .expect("temp dir");
    let config_path = windows_path(&dir.path().join("wininetd.conf").display().to_string());
    let good = format!("{port} none {}\n", child("echo"));
    fs::write(&config_path, &good).expect("write the config");
    let events = EventLog::begin();

    let install = ["--install", "--cfgfile", &config_path];
    let out = run_daemon(&install);
    assert!(
        out.status.success(),
        "{}",
        describe_run(DAEMON, &install, &out)
    );
    let out = run_tool("net", &["start", SERVICE], WAIT);
    assert!(
        out.status.success(),
        "{}",
        describe_run("net", &["start", SERVICE], &out)
    );
    wait_service_state(ServiceState::Running, WAIT);
    assert_eq!(request(port, b"served\n"), "served\n");
    assert_eq!(request(port, b"twice\n"), "twice\n");

    fs::write(&config_path, format!("{good}0 none {}\n", child("echo"))).expect("break it");
    let out = run_daemon(&["--reload"]);
    let run = describe_run(DAEMON, &["--reload"], &out);
    assert_eq!(out.status.code(), Some(1), "{run}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{config_path}:2: error:")),
        "{run}"
    );
    assert!(stderr.contains("was not asked to reload"), "{run}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("asked"),
        "{run}"
    );

    fs::write(
        &config_path,
        format!("{good}{second} none {}\n", child("echo")),
    )
    .expect("fix it");
    let out = run_daemon(&["--reload"]);
    let run = describe_run(DAEMON, &["--reload"], &out);
    assert!(out.status.success(), "{run}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("{config_path}: ok, 2 service(s)")),
        "{run}"
    );
    assert!(
        stdout.contains(&format!("asked service {SERVICE} to reload")),
        "{run}"
    );
    events.wait_for("`reload done`", WAIT, |e| e.contains("reload done"));
    assert_eq!(request(second, b"new\n"), "new\n");

    let out = run_tool("sc", &["stop", SERVICE], WAIT);
    assert!(
        out.status.success(),
        "{}",
        describe_run("sc", &["stop", SERVICE], &out)
    );
    wait_service_state(ServiceState::Stopped, WAIT);
    events.wait_for("`stopped`", WAIT, |e| e.contains("stopped"));
    let all = events.events();
    let listening = format!(":{port}");
    assert!(
        all.iter()
            .any(|e| e.contains("listening on") && e.contains(&listening)),
        "the other information lines still go:\n{}",
        all.join("\n")
    );
    let sessions: Vec<&String> = all
        .iter()
        .filter(|e| e.contains("session start") || e.contains("session end"))
        .collect();
    assert!(
        sessions.is_empty(),
        "session events without --log-sessions: {sessions:#?}"
    );
    assert_eq!(
        all.iter()
            .filter(|e| e.contains("reload requested"))
            .count(),
        1,
        "only the checked reload reached the service:\n{}",
        all.join("\n")
    );

    let out = run_daemon(&["--remove"]);
    assert!(
        out.status.success(),
        "{}",
        describe_run(DAEMON, &["--remove"], &out)
    );
    drop(service);
}

/// `--timeout` in pipe mode: the relay gives up on a silent client after the
/// timeout and closes the child's stdin, so a child blocked reading sees the
/// end of its input (in socket mode its read would fail instead). Without
/// `--timeout` the same child is still waiting.
#[test]
fn pipe_mode_applies_the_timeout_to_a_silent_client() {
    let daemon = Daemon::builder()
        .service("none", &child("read-timeout"))
        .arg("--stdio")
        .arg("pipe")
        .arg("--timeout")
        .arg("1")
        .start();
    // The relay's clock starts when the connection is accepted, the child's
    // only once it runs, so measure from the client's side.
    let connected = Instant::now();
    let mut stream = connect(daemon.port(0));
    assert_eq!(read_line(&mut stream, WAIT), "reading");
    let line = read_line(&mut stream, WAIT);
    let waited = connected.elapsed();
    assert!(
        line.starts_with("read ok 0 "),
        "expected the end of input, got {line:?}"
    );
    assert!(
        waited >= Duration::from_millis(950),
        "the child's input ended {waited:?} after connecting, before the 1 s timeout"
    );

    let patient = start_one("pipe", "read-timeout");
    let mut stream = connect(patient.port(0));
    assert_eq!(read_line(&mut stream, WAIT), "reading");
    assert_silent(&mut stream, Duration::from_millis(2500));
    stream.write_all(b"late\n").expect("send");
    let line = read_line(&mut stream, WAIT);
    assert!(line.starts_with("read ok 5 "), "{line:?}");
}

/// `--timeout` in socket mode cannot work on Windows (a synchronous socket
/// ignores SO_RCVTIMEO): the daemon says so once at start and serves anyway.
#[test]
fn socket_mode_says_once_that_the_timeout_does_not_apply() {
    let daemon = Daemon::builder()
        .service("none", &child("echo"))
        .arg("--timeout")
        .arg("1")
        .start();
    let warnings = daemon
        .lines()
        .iter()
        .filter(|l| l.contains("--timeout has no effect"))
        .count();
    assert_eq!(warnings, 1, "{}", daemon.report());
    assert_eq!(request(daemon.port(0), b"still served\n"), "still served\n");
}

/// Unicode end to end: a command line with characters outside Latin-1 and
/// the BMP goes from the UTF-8 config through CreateProcessW to the program's
/// arguments unchanged.
#[test]
fn unicode_arguments_reach_the_program() {
    let daemon = Daemon::builder()
        .service("none", &format!("{} \"héllo wörld ✓\" 𝄞", child("args")))
        .start();
    let output = request(daemon.port(0), b"");
    assert!(output.contains("arg[0]=héllo wörld ✓"), "{output:?}");
    assert!(output.contains("arg[1]=𝄞"), "{output:?}");
    assert!(output.contains("argc=2"), "{output:?}");
}

/// Without `--cfgfile` the config is `wininetd.conf` in the Windows
/// directory (GetWindowsDirectoryW), as in WinInetd.
#[test]
fn default_config_is_in_the_windows_directory() {
    let windir = std::env::var("SystemRoot")
        .or_else(|_| std::env::var("windir"))
        .expect("Windows sets SystemRoot");
    let expected = format!("{windir}\\wininetd.conf").to_lowercase();
    let out = run_daemon(&["--check"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    if Path::new(&expected).exists() {
        eprintln!("SKIPPED: {expected} exists on this machine");
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&expected),
        "{expected} not named in {stderr}"
    );
}

/// Regression test: `--check` did not look Windows accounts up, so
/// `nosuchuser:pw` passed and failed only when a client connected. It is
/// an error with its line now, and the names print as written (one
/// backslash, where `{:?}` doubled them).
#[test]
fn check_looks_windows_accounts_up() {
    let echo = child("echo");
    let mut daemon = Daemon::builder()
        .service(&format!("{}:pw", existing_user()), &echo)
        .service("wininetd-no-such-user-4711:pw", &echo)
        .service(r"wininetd-no-such-domain-4711\alice:pw", &echo)
        .arg("--check")
        .no_debug()
        .spawn();
    assert_eq!(
        daemon.wait_exit(WAIT).code(),
        Some(1),
        "{}",
        daemon.report()
    );
    let file = daemon.config_name();
    let lines = daemon.lines();
    let line = |n: usize| {
        let prefix = format!("{file}:{n}: error:");
        lines
            .iter()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line:\n{}", daemon.report()))
            .clone()
    };
    assert!(
        line(2).contains(r#"unknown user "wininetd-no-such-user-4711""#),
        "{}",
        line(2)
    );
    let third = line(3);
    assert!(
        third.contains(r#""wininetd-no-such-domain-4711\alice""#),
        "the name as written: {third}"
    );
    assert!(!third.contains(r"\\"), "a doubled backslash: {third}");
    assert!(
        !lines.iter().any(|l| l.starts_with(&format!("{file}:1:"))),
        "the existing account passes:\n{}",
        daemon.report()
    );
}

/// `/?` prints the help, as Windows tools do; the help speaks of Windows:
/// the default config in the Windows directory, and no Unix signals.
#[test]
fn help_is_windows_help() {
    for args in [&["/?"][..], &["--help"], &["--install", "/?"]] {
        let out = run_daemon(args);
        let run = describe_run(DAEMON, args, &out);
        assert_eq!(out.status.code(), Some(0), "{run}");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("--cfgfile"), "{run}");
        assert!(help.contains(r"%WINDIR%\wininetd.conf"), "{run}");
        for unix in ["SIGTERM", "SIGKILL", "SIGHUP", "/etc/", "systemd", "/run/"] {
            assert!(!help.contains(unix), "{unix:?} in the Windows help:\n{run}");
        }
    }
}
