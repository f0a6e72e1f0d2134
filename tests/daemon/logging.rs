//! Logging without `--debug`: when stderr is the journal (`$JOURNAL_STREAM`
//! names it, systemd.exec(5)), every event is one line with an sd-daemon(3)
//! priority prefix and no time stamp; the `listening on` lines stay plain.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{DAEMON, Started, WAIT, child, free_port, kill, request, wait_connectable};

/// Waits until the file holds a line that `matches`, and returns all lines.
fn wait_for_line(
    path: &std::path::Path,
    what: &str,
    matches: impl Fn(&str) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.iter().any(|l| matches(l)) {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} in {WAIT:?}; stderr:\n{text}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGTERM to `daemon` and returns its exit status.
fn terminate(daemon: &mut Child) -> ExitStatus {
    let pid = i32::try_from(daemon.id()).expect("pid fits");
    kill(pid, libc::SIGTERM).expect("SIGTERM");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = daemon.try_wait().expect("wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "wininetd did not exit on SIGTERM"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn journal_lines_carry_priority_prefixes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = dir.path().join("wininetd.conf");
    fs::write(
        &config,
        format!(
            "{port} none {}\n{} none /no/such/program\n",
            child("echo"),
            free_port()
        ),
    )
    .expect("write the config");
    let stderr_path = dir.path().join("stderr");
    let stderr = File::create(&stderr_path).expect("create the stderr file");
    let meta = stderr.metadata().expect("stat the stderr file");
    let mut daemon = Started(
        Command::new(DAEMON)
            .arg("--cfgfile")
            .arg(&config)
            .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start wininetd"),
    );

    let lines = wait_for_line(&stderr_path, "listening line", |l| {
        l.starts_with("listening on")
    });
    let warning = lines
        .iter()
        .find(|l| l.contains("/no/such/program"))
        .unwrap_or_else(|| panic!("no warning for the missing program: {lines:?}"));
    assert!(
        warning.starts_with("<4>"),
        "a warning without <4>: {warning:?}"
    );

    assert_eq!(request(port, b"ping\n"), "ping\n");
    let lines = wait_for_line(&stderr_path, "session end", |l| l.contains("session end"));
    for event in ["session start", "session end"] {
        let line = lines
            .iter()
            .find(|l| l.contains(event))
            .unwrap_or_else(|| panic!("no {event}: {lines:?}"));
        assert!(line.starts_with("<6>"), "{event} without <6>: {line:?}");
        // No time stamp: the journal adds its own.
        assert!(!line.contains("Z "), "{line:?}");
    }

    assert_eq!(terminate(&mut daemon).code(), Some(0));
    let lines = wait_for_line(&stderr_path, "stop line", |l| l.contains("shutting down"));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<6>") && l.contains("shutting down"))
    );
}

/// With neither the journal nor a syslog socket (a container), log lines go
/// to stderr with their priority prefixes rather than nowhere.
#[test]
fn without_syslog_lines_go_to_stderr() {
    if std::path::Path::new("/dev/log").exists() {
        eprintln!("SKIPPED: this machine has /dev/log, so wininetd logs to syslog");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = dir.path().join("wininetd.conf");
    fs::write(&config, format!("{port} none {}\n", child("echo"))).expect("write the config");
    let stderr_path = dir.path().join("stderr");
    let stderr = File::create(&stderr_path).expect("create the stderr file");
    let mut daemon = Started(
        Command::new(DAEMON)
            .arg("--cfgfile")
            .arg(&config)
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start wininetd"),
    );
    wait_for_line(&stderr_path, "listening line", |l| {
        l.starts_with("listening on")
    });
    assert_eq!(request(port, b"ping\n"), "ping\n");
    let lines = wait_for_line(&stderr_path, "session end", |l| l.contains("session end"));
    let end = lines
        .iter()
        .find(|l| l.contains("session end"))
        .expect("found above");
    assert!(end.starts_with("<6>"), "{end:?}");
    terminate(&mut daemon);
}

/// A pipe whose reading end is already closed: every write to the other end
/// fails with EPIPE, as stderr does once the `tee` or log collector reading
/// it has gone.
fn broken_pipe() -> Stdio {
    let (read, write) = nix::unistd::pipe().expect("pipe");
    drop(read);
    Stdio::from(write)
}

/// Log lines nobody reads are lost, and nothing else: the daemon serves on
/// and stops cleanly, with text and with JSON lines on its console.
#[test]
fn a_log_nobody_reads_stops_nothing() {
    let port = free_port();
    let flat = format!("{port} none {}\n", child("echo"));
    let toml = format!(
        "log_format = \"json\"\n[[service]]\nname = \"echo\"\nlisten = \"127.0.0.1:{port}\"\ncommand = {:?}\n",
        child("echo")
    );
    for (name, text) in [("wininetd.conf", flat), ("wininetd.toml", toml)] {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join(name);
        fs::write(&config, text).expect("write the config");
        let mut daemon = Started(
            Command::new(DAEMON)
                .arg("--debug")
                .arg("--cfgfile")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(broken_pipe())
                .stderr(broken_pipe())
                .spawn()
                .expect("start wininetd"),
        );
        // The probe and each request log a start and an end that cannot
        // be written.
        wait_connectable(port);
        for _ in 0..4 {
            assert_eq!(request(port, b"ping\n"), "ping\n", "{name}");
        }
        assert!(
            daemon.try_wait().expect("wait").is_none(),
            "{name}: wininetd exited"
        );
        let status = terminate(&mut daemon);
        assert_eq!(status.code(), Some(0), "{name}: {status}");
    }
}

/// `wininetd --check | head -1` loses lines, not the exit status.
#[test]
fn check_into_a_closed_pipe_keeps_its_exit_status() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clean = dir.path().join("clean.conf");
    fs::write(&clean, format!("{} none {}\n", free_port(), child("echo")))
        .expect("write the config");
    let bad = dir.path().join("bad.conf");
    fs::write(&bad, "1 x\n99999 none x\nabc\n0 none true\n").expect("write the config");
    for (config, code) in [(&clean, 0), (&bad, 1)] {
        let status = Command::new(DAEMON)
            .arg("--check")
            .arg("--cfgfile")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(broken_pipe())
            .stderr(broken_pipe())
            .status()
            .expect("run wininetd --check");
        assert_eq!(status.code(), Some(code), "{}: {status}", config.display());
    }
}
