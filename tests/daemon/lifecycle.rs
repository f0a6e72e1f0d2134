//! Start and stop on Linux: READY=1 after `listening on`, a program that
//! is not executable, and SIGTERM/SIGINT shutdown with the grace period.
//! Then the command line around them: `--check FILE`, a first run on a
//! terminal, and `--reload` without systemd (the pid file). startup.rs
//! tests what starting does on both systems.

use std::fs;
use std::io::ErrorKind;
use std::net::TcpStream;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    CHILD, DAEMON, Daemon, Run, WAIT, assert_root, child, connect, describe, field, is_alive,
    read_line, read_to_eof, request, run_command, v4, wait_gone,
};

/// Waits for the datagram on `socket` and checks the daemon is serving by
/// then: every port accepts and has a `listening on` line.
fn assert_ready_after_listening(daemon: &Daemon, socket: &UnixDatagram) {
    socket
        .set_read_timeout(Some(WAIT))
        .expect("set_read_timeout");
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .unwrap_or_else(|err| panic!("no datagram on NOTIFY_SOCKET within {WAIT:?}: {err}"));
    let message = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        message.lines().any(|l| l == "READY=1"),
        "the notification says READY=1: {message:?}"
    );
    for port in [daemon.port(0), daemon.port(1)] {
        TcpStream::connect(v4(port))
            .unwrap_or_else(|err| panic!("port {port} not accepting at READY=1: {err}"));
        daemon.wait_for_line(&format!("listening on [::]:{port} "), WAIT);
    }
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("set_read_timeout");
    if let Ok(n) = socket.recv(&mut buf) {
        let extra = String::from_utf8_lossy(&buf[..n]);
        assert!(!extra.contains("READY=1"), "READY=1 sent twice");
    }
}

#[test]
fn ready_is_notified_on_a_socket_path_after_listening() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    let daemon = Daemon::builder()
        .service("none", &child("echo"))
        .service("none", &child("echo"))
        .env("NOTIFY_SOCKET", &path.display().to_string())
        .spawn();
    assert_ready_after_listening(&daemon, &socket);
}

#[test]
fn ready_is_notified_on_an_abstract_socket() {
    let name = format!("wininetd-test-notify-{}", std::process::id());
    let addr = UnixAddr::from_abstract_name(name.as_bytes()).expect("abstract address");
    let socket = UnixDatagram::bind_addr(&addr).expect("bind the abstract notify socket");
    let daemon = Daemon::builder()
        .service("none", &child("echo"))
        .service("none", &child("echo"))
        .env("NOTIFY_SOCKET", &format!("@{name}"))
        .spawn();
    assert_ready_after_listening(&daemon, &socket);
}

/// A file that is not executable: the connection is closed, `cannot
/// start` is logged with the path and the OS reason, and the daemon keeps
/// serving (the same port again, and the others). A missing program is
/// data.rs's, on both systems.
#[test]
fn a_program_that_is_not_executable_closes_the_connection() {
    let dir = tempfile::tempdir().expect("temp dir");
    let not_executable = dir.path().join("not-executable");
    fs::write(&not_executable, "#!/bin/sh\necho should not run\n").expect("write");
    fs::set_permissions(&not_executable, fs::Permissions::from_mode(0o644)).expect("chmod");
    let path = not_executable.display().to_string();
    let daemon = Daemon::builder()
        .service("none", &path)
        .service("none", &child("echo"))
        .start();
    for attempt in 1..=2 {
        let mut stream = connect(daemon.port(0));
        match read_to_eof(&mut stream, WAIT) {
            Ok(data) => assert!(data.is_empty(), "{path}: got {data:?}"),
            Err(err) => assert_eq!(
                err.kind(),
                ErrorKind::ConnectionReset,
                "{path}: the connection should be closed: {err}"
            ),
        }
        daemon.wait_for_count(
            &format!("`cannot start` {path} Permission denied"),
            attempt,
            WAIT,
            |l| l.contains("cannot start") && l.contains(&path) && l.contains("Permission denied"),
        );
    }
    assert_eq!(
        request(daemon.port(1), b"still serving\n"),
        "still serving\n"
    );
}

/// SIGTERM: `shutting down`, every session's process group is signalled
/// (the child and its grandchild die, the clients see EOF), exit code 0.
#[test]
fn sigterm_ends_sessions_and_exits_0() {
    let mut daemon = Daemon::builder()
        .service("none", &child("grandchild 30"))
        .service("none", &child("pid"))
        .start();
    let mut family = connect(daemon.port(0));
    let (parent, grandchild) = loop {
        let line = read_line(&mut family, WAIT);
        if line.starts_with("parent ") {
            let pid = |key| -> u32 { field(&line, key).and_then(|p| p.parse().ok()).expect(key) };
            break (pid("pid"), pid("grandchild"));
        }
    };
    let mut single = connect(daemon.port(1));
    let line = read_line(&mut single, WAIT);
    let single_pid: u32 = field(&line, "pid")
        .and_then(|p| p.parse().ok())
        .expect("pid=");
    assert!(is_alive(parent) && is_alive(grandchild) && is_alive(single_pid));

    daemon.send_signal(libc::SIGTERM);
    daemon.wait_for_line("shutting down", WAIT);
    let status = daemon.wait_exit(WAIT);
    assert_eq!(
        status.code(),
        Some(0),
        "exit after SIGTERM ({})",
        describe(status)
    );
    for pid in [parent, grandchild, single_pid] {
        wait_gone(pid, WAIT);
    }
    for stream in [&mut family, &mut single] {
        let rest = read_to_eof(stream, WAIT).expect("EOF after shutdown");
        assert!(
            rest.is_empty() || String::from_utf8_lossy(&rest).starts_with("sleeping pid="),
            "unexpected data: {rest:?}"
        );
    }
}

#[test]
fn sigint_exits_0() {
    let mut daemon = Daemon::builder().service("none", &child("echo")).start();
    daemon.send_signal(libc::SIGINT);
    daemon.wait_for_line("shutting down", WAIT);
    let status = daemon.wait_exit(WAIT);
    assert_eq!(
        status.code(),
        Some(0),
        "exit after SIGINT ({})",
        describe(status)
    );
}

/// A child that ignores SIGTERM keeps running for `--shutdown-grace`, then
/// gets SIGKILL; the listener is closed at once, not after the grace.
#[test]
fn child_ignoring_sigterm_is_killed_after_the_grace_period() {
    const GRACE: Duration = Duration::from_secs(2);
    let mut daemon = Daemon::builder()
        .service("none", &child("no-term 30"))
        .args(&["--shutdown-grace", "2"])
        .start();
    let port = daemon.port(0);
    let mut stream = connect(port);
    let line = read_line(&mut stream, WAIT);
    let pid: u32 = field(&line, "pid")
        .and_then(|p| p.parse().ok())
        .expect("pid=");

    let signalled = Instant::now();
    daemon.send_signal(libc::SIGTERM);
    daemon.wait_for_line("shutting down", WAIT);
    // The listener goes at once: refused well before the grace ends.
    loop {
        match TcpStream::connect(v4(port)) {
            Err(err) if err.kind() == ErrorKind::ConnectionRefused => break,
            _ => {
                assert!(
                    signalled.elapsed() < GRACE / 2,
                    "port {port} still accepts {:?} after SIGTERM",
                    signalled.elapsed()
                );
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
    assert!(
        is_alive(pid),
        "the child ignores SIGTERM, so it runs until the grace ends"
    );

    let status = daemon.wait_exit(GRACE + WAIT);
    let elapsed = signalled.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "exit after the grace ({})",
        describe(status)
    );
    assert!(
        elapsed >= GRACE - Duration::from_millis(200),
        "exited {elapsed:?} after SIGTERM, before the {GRACE:?} grace"
    );
    wait_gone(pid, WAIT);
    let rest = read_to_eof(&mut stream, WAIT).expect("EOF once the child is killed");
    assert!(rest.is_empty(), "unexpected data: {rest:?}");
}

// ---------------------------------------------------------------------------
// The command line: --check FILE, a terminal, --reload without systemd
// ---------------------------------------------------------------------------

/// Runs `program args` in `cwd` to completion within [`WAIT`].
fn run_in(cwd: &Path, program: &str, args: &[&str]) -> Run {
    run_command(
        Command::new(program)
            .args(args)
            .current_dir(cwd)
            .env_remove("NOTIFY_SOCKET"),
        WAIT,
    )
}

/// Runs wininetd with `args` in the repository's root.
fn wininetd(args: &[&str]) -> Run {
    run_in(Path::new(env!("CARGO_MANIFEST_DIR")), DAEMON, args)
}

/// Regression test: examples/wininetd.toml tells the reader to run
/// `wininetd --check examples/wininetd.toml`, which failed ("unexpected
/// argument"). Every `wininetd --check ...` command in the examples'
/// comments is run as written, from the repository's root, and passes.
#[test]
fn the_examples_check_commands_work_as_written() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut ran = 0;
    for entry in fs::read_dir(&dir).expect("examples/") {
        let path = entry.expect("entry").path();
        let text = fs::read_to_string(&path).expect("read the example");
        for line in text.lines() {
            let Some(command) = line
                .trim_start_matches(['#', ' '])
                .strip_prefix("wininetd --check")
            else {
                continue;
            };
            let mut args = vec!["--check"];
            args.extend(command.split_whitespace());
            let run = wininetd(&args);
            assert_eq!(run.code(), Some(0), "{}:\n{run}", path.display());
            assert!(run.stdout().contains(": ok, "), "{run}");
            ran += 1;
        }
    }
    assert!(ran > 0, "no `wininetd --check` command in examples/");
}

/// `--check FILE` checks FILE (as `nginx -t -c`); `--cfgfile` still works
/// with a bare `--check`; naming two different files is a command-line
/// error, not a guess.
#[test]
fn check_takes_the_file_to_check() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = dir.path().join("good.conf");
    let bad = dir.path().join("bad.conf");
    fs::write(&good, format!("7007 none {CHILD} echo\n")).expect("write");
    fs::write(&bad, "0 none x\n").expect("write");
    let (good, bad) = (good.to_str().expect("UTF-8"), bad.to_str().expect("UTF-8"));

    let run = wininetd(&["--check", good]);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(
        run.stdout()
            .starts_with(&format!("{good}: ok, 1 service(s)")),
        "{run}"
    );
    let run = wininetd(&["--check", bad]);
    assert_eq!(run.code(), Some(1), "{run}");
    assert!(run.stderr().contains(&format!("{bad}:1: error:")), "{run}");
    let run = wininetd(&["--cfgfile", good, "--check"]);
    assert_eq!(run.code(), Some(0), "{run}");
    let run = wininetd(&["--check", good, "--cfgfile", good]);
    assert_eq!(run.code(), Some(0), "{run}");
    let run = wininetd(&["--check", good, "--cfgfile", bad]);
    assert_eq!(run.code(), Some(2), "{run}");
    assert!(run.stderr().contains("different files"), "{run}");
}

/// Regression test: `wininetd` with no argument, on a terminal, printed
/// `<3>/etc/wininetd.conf: error: ...`: the journal's priority prefix,
/// meant for a reader that is not there, and no word on what to do. On a
/// terminal the lines are plain and a hint names `--cfgfile`, `--debug`
/// and `--help`.
///
/// The default config must fail to load for this: where
/// /etc/wininetd.conf exists, an empty file is mounted over it in a mount
/// namespace of the run's own (an empty config is an error too).
#[test]
fn a_first_run_on_a_terminal_gets_plain_lines_and_a_hint() {
    let script = format!("script -qec {DAEMON} /dev/null");
    let mut args = vec!["-c".to_owned()];
    if Path::new("/etc/wininetd.conf").exists() {
        args.push(format!(
            "unshare -m sh -c 'mount --bind /dev/null /etc/wininetd.conf && exec {script}'"
        ));
    } else {
        args.push(script);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run_in(Path::new("/"), "sh", &args);
    // script(1) puts the program's stdout and stderr on the terminal and
    // copies the terminal to its own stdout.
    let text = run.stdout().replace("\r\n", "\n");
    assert_eq!(run.code(), Some(1), "{run}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("/etc/wininetd.conf: error: ")),
        "no plain error line:\n{run}"
    );
    assert!(!text.contains("<3>"), "a journal priority prefix:\n{run}");
    let hint = text
        .lines()
        .find(|l| l.contains("hint:"))
        .unwrap_or_else(|| panic!("no hint:\n{run}"));
    for flag in ["--cfgfile FILE", "--debug", "--help"] {
        assert!(hint.contains(flag), "{flag} not in {hint:?}");
    }
}

/// The journal keeps its prefixes: stderr that is not a terminal (a
/// service manager's pipe, here a test's) still gets `<3>`, and a config
/// given with --cfgfile gets no hint about the default.
#[test]
fn off_a_terminal_the_journal_prefixes_stay() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.conf");
    fs::write(&bad, "0 none x\n").expect("write");
    let run = run_in(
        dir.path(),
        DAEMON,
        &["--cfgfile", bad.to_str().expect("UTF-8")],
    );
    assert_eq!(run.code(), Some(1), "{run}");
    if !Path::new("/dev/log").exists() {
        assert!(run.stderr().contains("<3>"), "{run}");
    }
    assert!(!run.stderr().contains("hint:"), "{run}");
}

/// A daemon serving `{port0}` that writes its pid to the file it returns,
/// in a temp dir of its own (also returned, to keep it).
fn start_with_pidfile() -> (Daemon, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("wininetd.pid");
    let daemon = Daemon::builder()
        .service("none", &child("echo"))
        .args(&["--pidfile", path.to_str().expect("UTF-8")])
        .start();
    wait_pidfile(&path, daemon.pid());
    (daemon, dir, path)
}

/// Waits for `path` to hold `pid`; panics after [`WAIT`].
fn wait_pidfile(path: &Path, pid: u32) {
    let deadline = Instant::now() + WAIT;
    loop {
        if fs::read_to_string(path).ok() == Some(format!("{pid}\n")) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never held {pid}",
            path.display()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Regression test: `wininetd --reload` worked only under systemd
/// (`systemctl reload`); elsewhere it failed. A daemon writes its pid to
/// `--pidfile FILE` (removed at stop), and `--reload --pidfile FILE` checks
/// the config that daemon reads, then sends it SIGHUP.
#[test]
fn reload_without_systemd_signals_the_daemon_its_pid_file_names() {
    let (mut daemon, _dir, path) = start_with_pidfile();
    let template = format!(
        "{{port0}} none {echo}\n{{port1}} none {env}\n",
        echo = child("echo"),
        env = child("env PROTO")
    );
    daemon.rewrite_config(&template);
    let run = wininetd(&["--reload", "--pidfile", path.to_str().expect("UTF-8")]);
    assert_eq!(run.code(), Some(0), "{run}\n{}", daemon.report());
    let stdout = run.stdout();
    assert!(
        stdout.contains(&format!("{}: ok, 2 service(s)", daemon.config_name())),
        "the check ran on the daemon's config: {run}"
    );
    assert!(
        stdout.contains(&format!("asked wininetd (pid {}", daemon.pid())),
        "{run}"
    );
    daemon.wait_for_line("reload done", WAIT);
    assert_eq!(request(daemon.port(1), b""), "PROTO=TCP\n");

    daemon.send_signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit(WAIT).code(), Some(0));
    assert!(!path.exists(), "the pid file is removed at stop");
}

/// Regression test (`--reload` printed success whatever the config held):
/// a config with errors is reported as `--check` reports it, the exit code
/// is 1, and the daemon gets no signal. A `--cfgfile` other than the
/// daemon's is an error too: the reload would check one file and load
/// another.
#[test]
fn reload_checks_first_and_signals_nothing_when_the_config_has_errors() {
    let (mut daemon, _dir, path) = start_with_pidfile();
    let path = path.to_str().expect("UTF-8").to_owned();
    let good = daemon.config().to_owned();

    daemon.rewrite_config(&format!("{good}0 none {}\n", child("echo")));
    let run = wininetd(&["--reload", "--pidfile", &path]);
    assert_eq!(run.code(), Some(1), "{run}");
    let file = daemon.config_name();
    assert!(run.stderr().contains(&format!("{file}:2: error:")), "{run}");
    assert!(run.stderr().contains("was not asked to reload"), "{run}");
    assert!(!run.stdout().contains("asked"), "{run}");

    let other = daemon.dir().join("other.conf");
    fs::write(&other, &good).expect("write");
    daemon.rewrite_config(&good);
    let run = wininetd(&[
        "--reload",
        "--pidfile",
        &path,
        "--cfgfile",
        other.to_str().expect("UTF-8"),
    ]);
    assert_eq!(run.code(), Some(1), "{run}");
    assert!(run.stderr().contains(&format!("reads {file}")), "{run}");

    // Then a good one goes through: had a refused one been sent, there
    // would be two reloads.
    let run = wininetd(&["--reload", "--pidfile", &path]);
    assert_eq!(run.code(), Some(0), "{run}");
    daemon.wait_for_line("reload done", WAIT);
    thread::sleep(Duration::from_millis(200));
    assert_eq!(
        daemon.count(|l| l.contains("reload requested")),
        1,
        "{}",
        daemon.report()
    );
}

/// A pid file is trusted only as far as it names a running wininetd:
/// SIGHUP ends most programs, and kill(2) reads 0 and -1 as "my group" and
/// "every process I may signal" (this test would die of the SIGHUP).
#[test]
fn reload_refuses_a_pid_file_that_names_anything_but_a_wininetd() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("w.pid");
    let path_arg = path.to_str().expect("UTF-8");

    let mut other = Command::new(CHILD)
        .args(["sleep", "30"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start a program that is not wininetd");
    fs::write(&path, format!("{}\n", other.id())).expect("write");
    let run = wininetd(&["--reload", "--pidfile", path_arg]);
    assert_eq!(run.code(), Some(1), "{run}");
    assert!(run.stderr().contains("not wininetd"), "{run}");
    assert!(
        other.try_wait().expect("try_wait").is_none(),
        "the other program was signalled"
    );
    let _ = other.kill();
    let gone = other.id();
    other.wait().expect("reap");
    let run = wininetd(&["--reload", "--pidfile", path_arg]);
    assert_eq!(run.code(), Some(1), "{run}");
    assert!(
        run.stderr()
            .contains(&format!("names process {gone}, which is not running")),
        "{run}"
    );

    for bad in ["0", "-1", "1", "", "12 34", "x"] {
        fs::write(&path, bad).expect("write");
        let run = wininetd(&["--reload", "--pidfile", path_arg]);
        assert_eq!(run.code(), Some(1), "{bad:?}: {run}");
        assert!(
            run.stderr().contains("does not hold a process ID"),
            "{bad:?}: {run}"
        );
    }
    fs::remove_file(&path).expect("remove");
    let run = wininetd(&["--reload", "--pidfile", path_arg]);
    assert_eq!(run.code(), Some(1), "{run}");
    assert!(run.stderr().contains("cannot read the pid file"), "{run}");
}

/// Without --pidfile and without systemd, --reload says exactly what to do.
#[test]
fn reload_with_no_daemon_to_find_says_what_to_do() {
    if Path::new("/run/wininetd.pid").exists() {
        panic!("/run/wininetd.pid exists: a wininetd runs on this machine; stop it for this test");
    }
    let run = wininetd(&["--reload"]);
    assert_eq!(run.code(), Some(1), "{run}");
    let text = run.stderr();
    for expected in ["no running wininetd found", "--pidfile FILE", "kill -HUP"] {
        assert!(text.contains(expected), "{expected:?} not in:\n{run}");
    }
}

/// As root without --debug (as `wininetd &` or an init script starts it),
/// the daemon writes /run/wininetd.pid, and a bare `wininetd --reload`
/// finds it there. Run in a mount namespace with a /run of its own, so
/// that the machine's /run is not touched; `--reload` joins it.
#[test]
#[ignore = "needs root"]
fn a_daemon_run_as_root_writes_the_default_pid_file() {
    assert_root("mounting a /run of the daemon's own");
    let mut daemon = Daemon::builder()
        .service("none", &child("echo"))
        .no_debug()
        .prefix(&[
            "unshare",
            "-m",
            "sh",
            "-c",
            "mount -t tmpfs tmpfs /run && exec \"$0\" \"$@\"",
        ])
        .start();
    let pid = daemon.pid();
    let path = PathBuf::from(format!("/proc/{pid}/root/run/wininetd.pid"));
    wait_pidfile(&path, pid);
    assert!(
        !Path::new("/run/wininetd.pid").exists(),
        "written in the daemon's own /run only"
    );
    let pid_text = pid.to_string();
    let run = run_in(
        Path::new("/"),
        "nsenter",
        &["-t", &pid_text, "-m", "--", DAEMON, "--reload"],
    );
    assert_eq!(run.code(), Some(0), "{run}\n{}", daemon.report());
    assert!(run.stdout().contains("from /run/wininetd.pid"), "{run}");
    daemon.wait_for_line("reload done", WAIT);
    daemon.send_signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit(WAIT).code(), Some(0));
}
