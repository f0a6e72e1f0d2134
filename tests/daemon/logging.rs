//! Logging without `--debug`: when stderr is the journal (`$JOURNAL_STREAM`
//! names it, systemd.exec(5)), every event is one line with an sd-daemon(3)
//! priority prefix and no time stamp; the `listening on` lines stay plain.
//! A program's stderr in the log (`stderr = "log"`): quoted, and bounded.
//!
//! A daemon started here without `--debug` gets `--pidfile` in its temp
//! dir: as root it would write /run/wininetd.pid, the machine's, which
//! another test (and `wininetd --reload`) reads.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    DAEMON, Daemon, Started, WAIT, child, child_argv, connect, cpu_time, field, free_port,
    has_field, hex, is_root, kill, open_fds, read_line, read_to_eof, request, toml_service,
    wait_connectable,
};

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
            .arg("--pidfile")
            .arg(dir.path().join("wininetd.pid"))
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
/// to stderr with their priority prefixes rather than nowhere. Where this
/// machine has a syslog socket, /dev/log, the daemon runs in a mount
/// namespace of its own with an empty directory over /dev (unshare(1), in
/// a user namespace of its own when not root).
#[test]
fn without_syslog_lines_go_to_stderr() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = dir.path().join("wininetd.conf");
    fs::write(&config, format!("{port} none {}\n", child("echo"))).expect("write the config");
    let stderr_path = dir.path().join("stderr");
    let stderr = File::create(&stderr_path).expect("create the stderr file");
    let mut command = if std::path::Path::new("/dev/log").exists() {
        let empty = dir.path().join("no-dev");
        fs::create_dir(&empty).expect("mkdir");
        let mut command = Command::new("unshare");
        if !is_root() {
            command.arg("--map-root-user");
        }
        command.args([
            "--mount",
            "sh",
            "-c",
            "mount --bind \"$0\" /dev && exec \"$@\"",
        ]);
        command.arg(empty).arg(DAEMON);
        command
    } else {
        Command::new(DAEMON)
    };
    let mut daemon = Started(
        command
            .arg("--cfgfile")
            .arg(&config)
            .arg("--pidfile")
            .arg(dir.path().join("wininetd.pid"))
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

/// Starts wininetd on `config` with stderr to a file that `JOURNAL_STREAM`
/// names, as systemd does; returns the daemon and the file's path.
fn start_on_journal(
    config: &std::path::Path,
    dir: &std::path::Path,
) -> (Started, std::path::PathBuf) {
    let stderr_path = dir.join("stderr");
    let stderr = File::create(&stderr_path).expect("create the stderr file");
    let meta = stderr.metadata().expect("stat the stderr file");
    let daemon = Started(
        Command::new(DAEMON)
            .arg("--cfgfile")
            .arg(config)
            .arg("--pidfile")
            .arg(dir.join("wininetd.pid"))
            .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start wininetd"),
    );
    (daemon, stderr_path)
}

/// Issue 16 item 2, the journal path: a newline inside an event (here in
/// the config file's name, which a warning names) ended the record, and
/// the rest became a record of its own, with whatever priority prefix it
/// started with. Each event is one line, its newline escaped.
#[test]
fn an_event_with_a_newline_is_one_journal_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = dir
        .path()
        .join("forged\n<6>session end service=ssh status=exit 0\n.conf");
    fs::write(
        &config,
        format!(
            "{port} none {}\n{} none /no/such/program\n",
            child("echo"),
            free_port()
        ),
    )
    .expect("write the config");
    let (_daemon, stderr_path) = start_on_journal(&config, dir.path());
    let lines = wait_for_line(&stderr_path, "listening line", |l| {
        l.starts_with("listening on")
    });
    let warning = lines
        .iter()
        .find(|l| l.contains("/no/such/program"))
        .unwrap_or_else(|| panic!("no warning for the missing program: {lines:?}"));
    assert!(
        warning.starts_with("<4>") && warning.contains("forged\\n<6>session end"),
        "{warning:?}"
    );
    for line in &lines {
        let prefixed = line.len() > 3
            && line.starts_with('<')
            && line.as_bytes()[1].is_ascii_digit()
            && line.as_bytes()[2] == b'>';
        assert!(
            prefixed || line.starts_with("listening on"),
            "a record without its priority: {line:?} in {lines:#?}"
        );
        assert!(
            !line.starts_with("<6>session end"),
            "a forged record: {lines:#?}"
        );
    }
}

/// Issue 16 item 2: with `stderr = "log"` a program's line was the log
/// message, unquoted: `session end service=ssh ... status=exit 0` read as
/// the daemon's own event, and `\r`, tabs and NUL reached the log raw. It
/// is now the `output` field of a `program output` event, quoted, with
/// control characters, quotes, backslashes and bytes that are not UTF-8
/// escaped.
#[test]
fn program_output_cannot_pass_for_a_daemon_line() {
    let forged: &[u8] =
        b"session end service=ssh port=22 peer=192.0.2.1:22 pid=1 status=exit 0\r\t\0 \"q\" \\ \x1b[2J \xff";
    let escaped = r#"session end service=ssh port=22 peer=192.0.2.1:22 pid=1 status=exit 0\r\t\0 \"q\" \\ \u{1b}[2J \xff"#;
    let mut bytes = forged.to_vec();
    bytes.push(b'\n');
    let config = toml_service(
        "forger",
        "{port0}",
        &child_argv(&["stderr-hex", &hex(&bytes)]),
        &[r#"stderr = "log""#],
    );
    let daemon = Daemon::builder().toml(&config).start();
    let mut stream = connect(daemon.port(0));
    let client = stream.local_addr().expect("local_addr");
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    read_to_eof(&mut stream, WAIT).expect("EOF");
    let (_, pid) = daemon.session_start(client);
    daemon.session_end(pid);
    let line = daemon.wait_for("the program's output", WAIT, |l| {
        l.contains("program output")
    });
    let expected = format!(
        r#" INFO program output service=forger pid={pid} stream="stderr" output="{escaped}""#
    );
    assert!(
        line.ends_with(&expected),
        "{line:?}\ndoes not end with\n{expected:?}"
    );
    for line in daemon.lines() {
        assert!(
            !line.contains(['\r', '\t', '\0']),
            "a raw control character: {line:?}"
        );
        // What a reader takes for the event: the words after the level.
        let message = line.split_once(" INFO ").map_or(&*line, |(_, m)| m);
        assert!(!message.starts_with("session end service=ssh"), "{line:?}");
    }
}

/// Issue 16 item 3: `yes >&2` with `stderr = "log"` wrote a million lines
/// in 3 s, took the daemon's whole CPU and slowed every other service. A
/// program now logs within its session's budget (a burst of 200 lines,
/// then 20 a second; the service's is larger), the rest is dropped and
/// counted, and over budget the pipe is read only four times a second, so
/// the flood blocks in its writes instead of costing the daemon a core.
#[test]
fn a_flooding_program_is_bounded_and_slows_no_other_service() {
    const FLOOD: Duration = Duration::from_secs(3);
    let config = [
        toml_service(
            "flood",
            "{port0}",
            &child_argv(&["stderr-flood", &FLOOD.as_secs().to_string()]),
            &[r#"stderr = "log""#],
        ),
        toml_service("echo", "{port1}", &child_argv(&["echo"]), &[]),
    ]
    .concat();
    let daemon = Daemon::builder().toml(&config).start();
    let (flood_port, echo) = (daemon.port(0), daemon.port(1));
    let timed = || {
        let asked = Instant::now();
        assert_eq!(request(echo, b"ping\n"), "ping\n");
        asked.elapsed()
    };
    let median = |mut times: Vec<Duration>| {
        times.sort_unstable();
        times[times.len() / 2]
    };
    let quiet = median((0..10).map(|_| timed()).collect());

    let cpu_before = cpu_time(daemon.pid());
    let started = Instant::now();
    let mut flood = connect(flood_port);
    let client = flood.local_addr().expect("local_addr");
    let mut during = Vec::new();
    while started.elapsed() < FLOOD {
        during.push(timed());
        thread::sleep(Duration::from_millis(50));
    }
    let flooded: u64 = field(&read_line(&mut flood, WAIT), "lines")
        .and_then(|n| n.parse().ok())
        .expect("the flood's count of lines");
    let (_, pid) = daemon.session_start(client);
    daemon.session_end(pid);
    let elapsed = started.elapsed();
    let cpu = cpu_time(daemon.pid()) - cpu_before;
    let logged = || daemon.count(|l| l.contains("program output service=flood")) as u64;
    // The bucket starts after `started` and refills 20 lines a second.
    let bound = |elapsed: Duration| 200 + (20.0 * elapsed.as_secs_f64()).ceil() as u64 + 1;
    let so_far = logged();
    assert!(
        so_far <= bound(elapsed),
        "{so_far} lines logged in {elapsed:?}, more than the budget's {}",
        bound(elapsed)
    );
    assert!(
        cpu < elapsed / 4,
        "the daemon used {cpu:?} of CPU in {elapsed:?} of flood"
    );
    let busy = median(during.clone());
    assert!(
        busy < quiet * 4 + Duration::from_millis(50),
        "another service's median went from {quiet:?} to {busy:?}: {during:?}"
    );

    // What was read after the session's end, then the count of the rest.
    let pid_token = format!("pid={pid}");
    let dropped_line =
        |l: &str| l.contains("program output dropped") && crate::common::has_token(l, &pid_token);
    daemon.wait_for("a count of dropped lines", WAIT, dropped_line);
    let elapsed = started.elapsed();
    let logged = logged();
    let dropped: u64 = daemon
        .lines()
        .iter()
        .filter(|l| dropped_line(l))
        .map(|l| {
            assert!(has_field(l, "service", "flood"), "{l}");
            field(l, "lines")
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no lines=N in {l}"))
        })
        .sum();
    assert!(
        (200..=bound(elapsed)).contains(&logged),
        "{logged} lines logged in {elapsed:?}: not the burst of 200 and at most {}",
        bound(elapsed)
    );
    assert_eq!(
        logged + dropped,
        flooded,
        "every line the program wrote is logged or counted"
    );
}

/// A process that outlives its program and holds the session's stderr
/// (here one that left the session's process group with `setsid`, which
/// ending the group cannot reach) kept the pipe's reading end open in the
/// daemon, a descriptor per session, for as long as it lived, after the
/// session had ended. The session now lasts until the pipe is drained
/// (issue 16, item 7: what a program leaves behind counts against the
/// caps), and once it has ended, nothing of it stays in the daemon. The
/// five sessions run at once, each until its process is gone.
#[test]
fn a_process_left_behind_keeps_no_descriptor_of_the_daemon() {
    const LEFT: usize = 5;
    assert!(
        std::path::Path::new("/usr/bin/setsid").exists(),
        "this test needs setsid(1)"
    );
    let config = toml_service(
        "leaver",
        "{port0}",
        r#"["/bin/sh", "-c", "setsid sleep 2 </dev/null >/dev/null & exit 0"]"#,
        &[r#"stderr = "log""#],
    );
    let daemon = Daemon::builder().toml(&config).start();
    let baseline = open_fds(daemon.pid());
    let clients: Vec<_> = (0..LEFT)
        .map(|_| {
            let stream = connect(daemon.port(0));
            stream
                .shutdown(std::net::Shutdown::Write)
                .expect("half-close");
            stream
        })
        .collect();
    for mut stream in clients {
        let client = stream.local_addr().expect("local_addr");
        read_to_eof(&mut stream, WAIT).expect("EOF");
        let (_, pid) = daemon.session_start(client);
        daemon.session_end(pid);
    }
    // Every session has ended: the daemon's pipes must be gone with them.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let now = open_fds(daemon.pid());
        if now.len() <= baseline.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} descriptors after {LEFT} sessions ended, {} before: {now:?}",
            now.len(),
            baseline.len()
        );
        thread::sleep(Duration::from_millis(20));
    }
}
