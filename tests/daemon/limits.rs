//! Limits: `--max-sessions` pauses accepting, and running out of fds backs
//! off instead of spinning, then recovers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    Daemon, WAIT, assert_silent, child, child_argv, connect, cpu_time, open_fds, read_line,
    request, set_fd_limit, toml_service,
};

fn expect_pid_line(stream: &mut TcpStream, who: &str) {
    let line = read_line(stream, WAIT);
    assert!(line.starts_with("pid="), "{who} should be served: {line:?}");
}

/// With `--max-sessions 2`, a third and fourth client wait (unserved) while
/// two sessions run, with a single `session limit` warning; when one session
/// ends, the third is served and the fourth still waits.
#[test]
fn max_sessions_makes_extra_clients_wait() {
    let daemon = Daemon::builder()
        .service("none", &child("pid"))
        .args(&["--max-sessions", "2"])
        .start();
    let port = daemon.port(0);
    let mut first = connect(port);
    expect_pid_line(&mut first, "the first client");
    let mut second = connect(port);
    expect_pid_line(&mut second, "the second client");

    let mut third = connect(port);
    let mut fourth = connect(port);
    daemon.wait_for_line("session limit", WAIT);
    assert_silent(&mut third, Duration::from_secs(1));
    assert_silent(&mut fourth, Duration::from_millis(200));
    let warnings = daemon.count(|l| l.contains("session limit"));
    assert_eq!(warnings, 1, "one `session limit` warning per episode");
    assert_eq!(daemon.count(|l| l.contains("session start")), 2);

    drop(first);
    expect_pid_line(&mut third, "the third client, once a session ended");
    assert_silent(&mut fourth, Duration::from_millis(500));
    assert_eq!(daemon.count(|l| l.contains("session start")), 3);
}

/// Measures the daemon for one second: it must neither burn CPU nor flood
/// the log (a listener retrying accept in a loop does both).
fn assert_no_spin(daemon: &Daemon) {
    let cpu_before = cpu_time(daemon.pid());
    let lines_before = daemon.lines().len();
    let started = Instant::now();
    thread::sleep(Duration::from_secs(1));
    let cpu = cpu_time(daemon.pid()) - cpu_before;
    let lines = daemon.lines().len() - lines_before;
    assert!(
        cpu < Duration::from_millis(300),
        "the daemon used {cpu:?} of CPU in {:?} while out of fds: it spins",
        started.elapsed()
    );
    assert!(
        lines < 100,
        "{lines} log lines in a second while out of fds"
    );
}

/// The smallest fd number the process does not use, once its fds have
/// stopped changing (a session that just started may still hold a transient
/// fd): with RLIMIT_NOFILE set to it, the next accept fails with EMFILE.
fn settled_lowest_free_fd(pid: u32) -> u64 {
    let deadline = Instant::now() + WAIT;
    let mut last = open_fds(pid);
    let mut stable_since = Instant::now();
    while stable_since.elapsed() < Duration::from_millis(200) {
        assert!(Instant::now() < deadline, "the daemon's fds never settle");
        thread::sleep(Duration::from_millis(20));
        let now = open_fds(pid);
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
    }
    (0..)
        .find(|fd| !last.contains(fd))
        .expect("some fd is free")
        .into()
}

/// The daemon runs out of fds (its RLIMIT_NOFILE lowered to what it uses,
/// with sessions held open and clients waiting): it logs an `accept`
/// warning, does not spin, and serves the waiting and new clients once fds
/// are available again.
#[test]
fn fd_exhaustion_backs_off_and_recovers() {
    let daemon = Daemon::builder().service("none", &child("pid")).start();
    let port = daemon.port(0);
    let mut held: Vec<TcpStream> = (0..3)
        .map(|i| {
            let mut stream = connect(port);
            expect_pid_line(&mut stream, &format!("held client {i}"));
            stream
        })
        .collect();

    // Lowering the limit of a running daemon (prlimit) is deterministic where
    // a `ulimit -n` at start would depend on how many fds it opens.
    let limit = settled_lowest_free_fd(daemon.pid());
    let original = set_fd_limit(daemon.pid(), limit).expect("lower the daemon's fd limit");
    let mut waiting: Vec<TcpStream> = (0..4).map(|_| connect(port)).collect();
    daemon.wait_for("with a warning about `accept`", WAIT, |l| {
        l.contains("accept") && l.to_ascii_lowercase().contains("warn")
    });

    assert_no_spin(&daemon);
    let mut byte = [0u8; 1];
    waiting[0]
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("set_read_timeout");
    assert!(
        waiting[0].read(&mut byte).is_err(),
        "a waiting client was answered while the daemon had no fd"
    );

    set_fd_limit(daemon.pid(), original).expect("restore the daemon's fd limit");
    for (i, stream) in waiting.iter_mut().enumerate() {
        expect_pid_line(stream, &format!("waiting client {i}, after recovery"));
    }
    held.clear();
    waiting.clear();
    let mut fresh = connect(port);
    expect_pid_line(&mut fresh, "a new client");
}

/// The same from the other side: a daemon started under `ulimit -n 32`
/// holding 40 sessions. Either it serves them all (it keeps no fd per
/// session once the child runs), or it runs out of fds, warns and does not
/// spin; either way it serves a new client once those sessions end.
#[test]
fn fd_exhaustion_by_sessions_recovers_when_they_end() {
    const CLIENTS: usize = 40;
    let daemon = Daemon::builder()
        .service("none", &child("pid"))
        .prefix(&["/bin/sh", "-c", "ulimit -n 32 && exec \"$0\" \"$@\""])
        .start();
    let port = daemon.port(0);
    let clients: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(port)).collect();
    let exhausted = |l: &str| {
        (l.contains("accept") && l.to_ascii_lowercase().contains("warn"))
            || l.contains("cannot start")
    };
    daemon.wait_for_lines(
        "line about fd exhaustion, or one `session start` per client,",
        WAIT,
        |lines| {
            lines.iter().any(|l| exhausted(l))
                || lines.iter().filter(|l| l.contains("session start")).count() >= CLIENTS
        },
    );
    if daemon.count(exhausted) > 0 {
        assert_no_spin(&daemon);
    } else {
        eprintln!("NOTE: {CLIENTS} sessions under `ulimit -n 32` did not exhaust the fds");
    }

    drop(clients);
    let mut fresh = connect(port);
    expect_pid_line(&mut fresh, "a new client once the sessions ended");
}

/// The soft and hard `RLIMIT_NOFILE` of process `pid`, from /proc.
fn fd_limits(pid: u32) -> (String, String) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let mut fields = line["Max open files".len()..].split_whitespace();
    let soft = fields.next().expect("soft").to_owned();
    let hard = fields.next().expect("hard").to_owned();
    (soft, hard)
}

/// Started with a soft descriptor limit of 1,024 under a hard one of
/// 4,096 (what a service manager gives, scaled down), the daemon raises its
/// own to 4,096, so that 400 relay sessions (three descriptors each in the
/// daemon) all run at once; every program gets 1,024 back, in relay and in
/// socket mode.
#[test]
fn relay_sessions_are_not_stopped_by_a_low_soft_limit() {
    const SESSIONS: usize = 400;
    let config = [
        toml_service(
            "relay",
            "{port0}",
            &child_argv(&["echo"]),
            &["stdio = \"pipe\""],
        ),
        toml_service(
            "relay-limit",
            "{port1}",
            &child_argv(&["nofile"]),
            &["stdio = \"pipe\""],
        ),
        toml_service("socket-limit", "{port2}", &child_argv(&["nofile"]), &[]),
    ]
    .concat();
    let daemon = Daemon::builder()
        .prefix(&["prlimit", "--nofile=1024:4096", "--"])
        .toml(&config)
        .start();
    assert_eq!(fd_limits(daemon.pid()), ("4096".into(), "4096".into()));
    for port in [daemon.port(1), daemon.port(2)] {
        assert_eq!(request(port, b""), "nofile=1024:4096\n");
    }

    let mut held: Vec<TcpStream> = (0..SESSIONS).map(|_| connect(daemon.port(0))).collect();
    for (i, stream) in held.iter_mut().enumerate() {
        stream
            .write_all(format!("{i}\n").as_bytes())
            .expect("send a line");
    }
    for (i, stream) in held.iter_mut().enumerate() {
        assert_eq!(read_line(stream, WAIT), i.to_string(), "session {i}");
    }
    held.clear();
    daemon.wait_for_count("every session end", SESSIONS + 2, WAIT, |l| {
        l.contains("session end")
    });
    assert_eq!(daemon.count(|l| l.contains("Too many open files")), 0);
    assert_eq!(daemon.count(|l| l.contains("descriptor limit")), 0);
}

/// With a hard limit that cannot hold what the session caps allow in relay
/// mode, the daemon says so at start.
#[test]
fn a_descriptor_limit_too_low_for_the_caps_is_reported() {
    let daemon = Daemon::builder()
        .prefix(&["prlimit", "--nofile=1024:1024", "--"])
        .toml(&toml_service(
            "relay",
            "{port0}",
            &child_argv(&["echo"]),
            &["stdio = \"pipe\""],
        ))
        .start();
    let line = daemon.wait_for_line("descriptor limit", WAIT);
    assert!(line.contains("limit=1024"), "{line}");
    assert!(line.contains("needed="), "{line}");
    assert_eq!(request(daemon.port(0), b"still served\n"), "still served\n");
}
