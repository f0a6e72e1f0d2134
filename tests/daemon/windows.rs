//! What only Windows has, tested on `wininetd.exe` (here under Wine:
//! tools/wine/runner.sh, README.md, "Development"):
//!
//! ```text
//! cargo test --target x86_64-pc-windows-gnu --test daemon windows -- --test-threads=1
//! ```
//!
//! Job objects that end a killed daemon's sessions; `USER:PASS` and its
//! logon; accounts looked up by `--check`; the service: install, start,
//! serve, stop, remove, the Event Log, `--reload`; `--timeout` in socket
//! mode; the default config in the Windows directory; `/?` and the usage.
//! The scenarios both systems share are in the modules that run on both
//! (config.rs, data.rs, environment.rs, startup.rs, toml_config.rs...).
//!
//! What Wine cannot show, these tests do not claim (wine.md, "What Wine
//! shows truthfully"): `LogonUserW` accepts any password under Wine and
//! `CreateProcessAsUserW` then fails, so the run-as test pins the failure
//! path (refused, logged without the password, never run as the daemon's
//! account), not a successful logon; Wine stores no events, so the Event Log
//! test reads Wine's `ReportEventW` trace (see [`EventLog`]).
//!
//! The harness is tests/common/mod.rs, shared with the Linux tests; what
//! only these tests need (the service control manager, the Event Log) is
//! the first part of this file, and the tests, grouped by what they pin,
//! follow.
#![cfg(windows)]

use std::fs;
use std::io::{self, Read};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    DAEMON, Daemon, MODES, Run, WAIT, child, connect, env_value, free_port, has_token, is_alive,
    number_after, peer_text, read_line, read_to_eof, request, run, run_command, v4, wait_gone,
    windows_path,
};

/// How long the `sleep` children live: much longer than a test's waits,
/// much shorter than a CI run, in case one leaks.
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

/// Runs the daemon with `args` (no config written for it) to completion.
pub(crate) fn run_daemon(args: &[&str]) -> Run {
    run(DAEMON, args)
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
            eprintln!("removed a leftover service: {}", out);
        }
        Self { _scm: scm }
    }
}

impl Drop for InstalledService {
    fn drop(&mut self) {
        if service_status().is_some() {
            // --remove stops the service (bounded) before deleting it.
            let out = run_command(
                Command::new(DAEMON).args(["--remove"]),
                Duration::from_secs(60),
            );
            if !out.success() {
                eprintln!("cleanup failed: {}", out);
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
        let under_wine = run("reg", &["query", r"HKLM\Software\Wine"]).success();
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
            let out = run(
                "powershell",
                &[
                    "-NoProfile",
                    "-Command",
                    "(Get-Date).ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ss.000Z')",
                ],
            );
            Self {
                under_wine,
                start: 0,
                since: out.stdout().trim().to_owned(),
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
            let out = run(
                "wevtutil",
                &["qe", "Application", &format!("/q:{query}"), "/f:text"],
            );
            out.stdout().lines().map(str::to_owned).collect()
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
// Tests: sessions
// ===========================================================================

/// Each child is in a job object with kill-on-close: when the daemon dies,
/// however it dies, its sessions die with it.
#[test]
fn killing_the_daemon_ends_its_sessions() {
    for stdio in MODES {
        let mut daemon = Daemon::builder()
            .service("none", &child(&format!("sleep {LONG_SLEEP}")))
            .args(&["--stdio", stdio])
            .start();
        let mut stream = connect(daemon.port(0));
        let line = read_line(&mut stream, WAIT);
        let pid = number_after(&line, "pid").unwrap_or_else(|| panic!("{line:?}"));
        assert!(is_alive(pid));
        daemon.kill();
        wait_gone(pid, WAIT);
        read_to_eof(&mut stream, WAIT).expect("the connection ends with the daemon");
    }
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

/// Started from a console without a flag, WinInetd printed its usage; so
/// does wininetd (it first asks the SCM whether it is a service: hold the
/// SCM lock, see [`SCM`]).
#[test]
fn no_flag_prints_the_usage_and_exits_2() {
    let _scm = lock(&SCM);
    let out = run_daemon(&[]);
    assert_eq!(out.code(), Some(2), "{}", out);
    let text = format!("{}{}", out.stdout(), out.stderr());
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
    assert!(out.success(), "{}", out);
    let stdout = out.stdout();
    assert!(
        stdout.contains(&format!("{config_path}: ok, 1 service(s)")),
        "{}",
        out
    );
    assert!(
        stdout.contains(&format!("warning: --timeout has no effect on {port}")),
        "{}",
        out
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
    assert!(out.success(), "{}", out);
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
    let out = run("net", &["start", SERVICE]);
    assert!(out.success(), "{}", out);
    wait_service_state(ServiceState::Running, WAIT);
    let mut stream = connect(port);
    let local = stream.local_addr().expect("local_addr");
    let output = read_to_eof(&mut stream, WAIT).expect("served by the service");
    assert_eq!(
        env_value(&String::from_utf8_lossy(&output), "CLIENT_PORT"),
        Some(local.port().to_string().as_str()),
        "{output:?}"
    );

    let out = run("sc", &["stop", SERVICE]);
    assert!(out.success(), "{}", out);
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
    assert!(out.success(), "{}", out);
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
    assert_eq!(out.code(), Some(1), "{}", out);
    let stderr = out.stderr();
    assert!(
        stderr.contains(&format!("{config_path}:2: error:"))
            && stderr.contains("not installed (--force installs anyway)"),
        "{}",
        out
    );
    assert!(service_status().is_none(), "nothing was installed");
    let install = ["--install", "--cfgfile", &config_path, "--force"];
    let out = run_daemon(&install);
    assert!(out.success(), "{}", out);
    // Windows' `net start` waits for RUNNING or STOPPED and fails on the
    // latter; Wine's reports success once StartServiceW returns, i.e. at
    // START_PENDING. So its outcome is not the check: the service's state is.
    let out = run("net", &["start", SERVICE]);
    eprintln!("{}", out);
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
    assert!(out.success(), "{}", out);
    let out = run("net", &["start", SERVICE]);
    assert!(out.success(), "{}", out);
    wait_service_state(ServiceState::Running, WAIT);
    assert_eq!(request(port, b"served\n"), "served\n");
    assert_eq!(request(port, b"twice\n"), "twice\n");

    fs::write(&config_path, format!("{good}0 none {}\n", child("echo"))).expect("break it");
    let out = run_daemon(&["--reload"]);
    assert_eq!(out.code(), Some(1), "{out}");
    let stderr = out.stderr();
    assert!(
        stderr.contains(&format!("{config_path}:2: error:")),
        "{out}"
    );
    assert!(stderr.contains("was not asked to reload"), "{out}");
    assert!(!out.stdout().contains("asked"), "{out}");

    fs::write(
        &config_path,
        format!("{good}{second} none {}\n", child("echo")),
    )
    .expect("fix it");
    let out = run_daemon(&["--reload"]);
    assert!(out.success(), "{out}");
    let stdout = out.stdout();
    assert!(
        stdout.contains(&format!("{config_path}: ok, 2 service(s)")),
        "{out}"
    );
    assert!(
        stdout.contains(&format!("asked service {SERVICE} to reload")),
        "{out}"
    );
    events.wait_for("`reload done`", WAIT, |e| e.contains("reload done"));
    assert_eq!(request(second, b"new\n"), "new\n");

    let out = run("sc", &["stop", SERVICE]);
    assert!(out.success(), "{}", out);
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
    assert!(out.success(), "{}", out);
    drop(service);
}

// ===========================================================================
// Tests: the rest of the command line
// ===========================================================================

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

/// Without `--cfgfile` the config is `wininetd.conf` in the Windows
/// directory (GetWindowsDirectoryW), as in WinInetd.
#[test]
fn default_config_is_in_the_windows_directory() {
    let windir = std::env::var("SystemRoot")
        .or_else(|_| std::env::var("windir"))
        .expect("Windows sets SystemRoot");
    let expected = format!("{windir}\\wininetd.conf").to_lowercase();
    assert!(
        !Path::new(&expected).exists(),
        "{expected} exists on this machine: this test needs it absent"
    );
    let out = run_daemon(&["--check"]);
    let stderr = out.stderr().to_lowercase();
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        stderr.contains(&expected),
        "{expected} not named in {stderr}"
    );
}

/// Regression test: `--check` did not look Windows accounts up, so
/// `nosuchuser:pw` passed and failed only when a client connected. It is
/// an error with its line now, the names print as written (one
/// backslash, where `{:?}` doubled them), and no password prints.
#[test]
fn check_looks_windows_accounts_up() {
    const PASSWORD: &str = "pw-SECRET-2718";
    let echo = child("echo");
    let mut daemon = Daemon::builder()
        .service(&format!("{}:{PASSWORD}", existing_user()), &echo)
        .service(&format!("wininetd-no-such-user-4711:{PASSWORD}"), &echo)
        .service(
            &format!(r"wininetd-no-such-domain-4711\alice:{PASSWORD}"),
            &echo,
        )
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
    assert!(
        !daemon.stderr_text().contains(PASSWORD) && !daemon.stdout_text().contains(PASSWORD),
        "the password was printed:\n{}",
        daemon.report()
    );
}

/// `/?` prints the help, as Windows tools do; the help speaks of Windows:
/// the default config in the Windows directory, and no Unix signals.
#[test]
fn help_is_windows_help() {
    for args in [&["/?"][..], &["--help"], &["--install", "/?"]] {
        let out = run_daemon(args);
        assert_eq!(out.code(), Some(0), "{out}");
        let help = out.stdout();
        assert!(help.contains("--cfgfile"), "{out}");
        assert!(help.contains(r"%WINDIR%\wininetd.conf"), "{out}");
        for unix in ["SIGTERM", "SIGKILL", "SIGHUP", "/etc/", "systemd", "/run/"] {
            assert!(!help.contains(unix), "{unix:?} in the Windows help:\n{out}");
        }
    }
}
