//! The child's process state: exactly the socket as fds 0, 1, 2, its own
//! process group, and the socket options of `--timeout`.

use std::io::Write;
use std::time::Duration;

use crate::common::{
    Daemon, WAIT, assert_silent, child, connect, field, process_group, read_line, request,
};

/// The original let every child inherit every handle (listeners, other
/// clients' sockets). With another session open and two listeners, the
/// child must still see only its own socket, as fds 0, 1 and 2.
#[test]
fn child_has_only_its_socket_as_fds_0_1_2() {
    let daemon = Daemon::builder()
        .service("none", &child("pid"))
        .service("none", &child("fds"))
        .start();
    let mut other = connect(daemon.port(0));
    let other_line = read_line(&mut other, WAIT);
    assert!(
        other_line.starts_with("pid="),
        "holding session: {other_line}"
    );

    let output = request(daemon.port(1), b"");
    let mut lines = output.lines();
    assert_eq!(lines.next(), Some("fds 0 1 2"), "open fds: {output:?}");
    let targets: Vec<&str> = lines.filter_map(|l| l.splitn(3, ' ').nth(2)).collect();
    assert_eq!(targets.len(), 3, "one target per fd: {output:?}");
    assert!(
        targets[0].starts_with("socket:[") && targets.iter().all(|t| *t == targets[0]),
        "fds 0, 1, 2 are the same socket: {output:?}"
    );
    drop(other);
}

/// The child leads its own process group, so a signal to the group reaches
/// its descendants and never the daemon.
#[test]
fn child_leads_its_own_process_group() {
    let daemon = Daemon::builder().service("none", &child("ids")).start();
    let mut stream = connect(daemon.port(0));
    let client = stream.local_addr().expect("local_addr");
    let ids = read_line(&mut stream, WAIT);
    let pid: u32 = field(&ids, "pid")
        .and_then(|p| p.parse().ok())
        .expect("pid in ids");
    let pgid: u32 = field(&ids, "pgid")
        .and_then(|p| p.parse().ok())
        .expect("pgid in ids");
    assert_eq!(pgid, pid, "the child leads its process group: {ids}");
    assert_eq!(
        field(&ids, "sid"),
        Some(pid.to_string().as_str()),
        "the child leads a session of its own: {ids}"
    );
    assert_ne!(
        process_group(daemon.pid()),
        Some(pgid),
        "not the daemon's group"
    );
    let (_, logged_pid) = daemon.session_start(client);
    assert_eq!(logged_pid, pid, "the start line names the child's pid");
}

/// Regression (issue 16, item 1): a program stayed in the daemon's session,
/// so when the daemon ran on a terminal (`--debug` in a shell) a service
/// running as an unprivileged user could open `/dev/tty` and, with
/// TIOCSTI, type commands into root's shell. Each program now leads a
/// session of its own with no controlling terminal.
#[test]
fn a_program_cannot_reach_the_daemons_terminal() {
    let daemon = Daemon::builder()
        .service("none", &child("tty"))
        .service("none", &child("ids"))
        .controlling_terminal()
        .start();
    // The daemon itself has the terminal: what is checked is not vacuous.
    let tty_nr = std::fs::read_to_string(format!("/proc/{}/stat", daemon.pid()))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            rest.split_whitespace().nth(4).map(str::to_owned)
        });
    assert_ne!(tty_nr.as_deref(), Some("0"), "the daemon has a terminal");
    let line = read_line(&mut connect(daemon.port(0)), WAIT);
    assert_eq!(
        line,
        format!("tty=error:{}", libc::ENXIO),
        "opening /dev/tty must fail"
    );
    let ids = read_line(&mut connect(daemon.port(1)), WAIT);
    assert_eq!(
        field(&ids, "sid"),
        field(&ids, "pid"),
        "a session leader: {ids}"
    );
}

/// `--timeout 1` puts SO_RCVTIMEO on the socket: the child's blocking read
/// fails after about a second. Without it the same read waits for data.
#[test]
fn timeout_flag_bounds_a_blocking_read() {
    let with_timeout = Daemon::builder()
        .service("none", &child("read-timeout"))
        .args(&["--timeout", "1"])
        .start();
    let mut stream = connect(with_timeout.port(0));
    assert_eq!(read_line(&mut stream, WAIT), "reading");
    let result = read_line(&mut stream, WAIT);
    assert!(
        result.starts_with("read error WouldBlock ") || result.starts_with("read error TimedOut "),
        "the read should time out: {result}"
    );
    let after: u64 = field(&result, "after")
        .and_then(|v| v.parse().ok())
        .expect("after=MS");
    assert!(
        (900..10_000).contains(&after),
        "timed out after {after} ms, expected about 1000"
    );

    let without = Daemon::builder()
        .service("none", &child("read-timeout"))
        .start();
    let mut stream = connect(without.port(0));
    assert_eq!(read_line(&mut stream, WAIT), "reading");
    assert_silent(&mut stream, Duration::from_millis(1500));
    stream.write_all(b"hello\n").expect("send");
    let result = read_line(&mut stream, WAIT);
    assert!(
        result.starts_with("read ok 6 "),
        "the read waits for data: {result}"
    );
}

/// A child starts as inetd's children do: every signal at its default and
/// none blocked, whatever the daemon ignores (here SIGUSR1, SIGUSR2 and
/// SIGQUIT, inherited from its parent; SIGPIPE, which it ignores itself),
/// handles (SIGHUP, SIGTERM, SIGINT) or blocks while it starts the child.
#[test]
fn child_starts_with_default_signals_and_none_blocked() {
    // grep, not the test child: a Rust program ignores SIGPIPE itself.
    let daemon = Daemon::builder()
        .prefix(&["sh", "-c", "trap '' USR1 USR2 QUIT; exec \"$@\"", "sh"])
        .service("none", "/bin/grep -E ^Sig(Ign|Blk): /proc/self/status")
        .start();
    let ignored = signal_mask(daemon.pid(), "SigIgn:");
    for signal in [libc::SIGUSR1, libc::SIGUSR2, libc::SIGQUIT, libc::SIGPIPE] {
        assert_ne!(
            ignored & (1 << (signal - 1)),
            0,
            "the daemon ignores signal {signal} (SigIgn {ignored:x})"
        );
    }
    for _ in 0..3 {
        let output = request(daemon.port(0), b"");
        let masks: Vec<&str> = output.lines().collect();
        assert_eq!(
            masks,
            ["SigBlk:\t0000000000000000", "SigIgn:\t0000000000000000"],
            "the child's blocked and ignored signals"
        );
    }
}

/// A mask of `/proc/PID/status` (`SigIgn:`, `SigBlk:`...).
fn signal_mask(pid: u32, name: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("{name} in {status}"));
    u64::from_str_radix(hex.trim(), 16).expect("a hex mask")
}

/// A daemon started with its stdin, stdout and stderr closed opens them on
/// /dev/null, so no connection can take fd 0, 1 or 2 and be lost when the
/// child's stdio is set up; the child still gets exactly its socket.
#[test]
fn daemon_started_without_stdio_still_hands_over_the_socket() {
    let daemon = Daemon::builder()
        .prefix(&["sh", "-c", "exec \"$@\" <&-", "sh"])
        .service("none", &child("fds"))
        .service("none", &child("echo"))
        .start();
    let stdin = std::fs::read_link(format!("/proc/{}/fd/0", daemon.pid())).expect("fd 0");
    assert_eq!(
        stdin,
        std::path::Path::new("/dev/null"),
        "the daemon's fd 0"
    );
    for _ in 0..3 {
        let output = request(daemon.port(0), b"");
        let mut lines = output.lines();
        assert_eq!(lines.next(), Some("fds 0 1 2"), "open fds: {output:?}");
        assert!(
            lines.all(|l| l.contains("socket:[")),
            "fds 0, 1, 2 are the socket: {output:?}"
        );
        assert_eq!(request(daemon.port(1), b"hello\n"), "hello\n");
    }
}

/// The daemon reads its signals from signalfds and has no handler a child
/// could run before its exec, so starting a child changes no signal mask:
/// strace sees the daemon block its signals once, at start, and never
/// again, while each child resets the few signals the daemon ignores and
/// unblocks every signal itself before its exec.
#[test]
fn starting_a_child_changes_no_signal_mask_in_the_daemon() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = dir.path().join("trace");
    let daemon = Daemon::builder()
        .strace("clone,clone3,rt_sigprocmask", &trace)
        .service("none", &child("pid"))
        .start();
    for _ in 0..3 {
        let output = request(daemon.port(0), b"");
        assert!(output.starts_with("pid="), "served: {output}");
    }
    drop(daemon);
    let trace = std::fs::read_to_string(&trace).expect("strace's output");
    let pid_of = |line: &str| line.split_whitespace().next().unwrap_or("").to_owned();
    // Processes are made without CLONE_THREAD; what follows ` = ` is the
    // child's pid.
    let spawns: Vec<(String, String)> = trace
        .lines()
        .filter(|l| l.contains("clone(") && l.contains("CLONE_VM") && !l.contains("CLONE_THREAD"))
        .filter_map(|l| Some((pid_of(l), l.rsplit_once(" = ")?.1.trim().to_owned())))
        .collect();
    assert_eq!(spawns.len(), 3, "three sessions, three clones:\n{trace}");
    let daemon_pid = &spawns[0].0;
    let first_spawn = trace
        .lines()
        .position(|l| {
            l.contains("clone(") && pid_of(l) == *daemon_pid && !l.contains("CLONE_THREAD")
        })
        .expect("the first spawn");
    let masks_after: Vec<&str> = trace
        .lines()
        .skip(first_spawn)
        .filter(|l| pid_of(l) == *daemon_pid && l.contains("rt_sigprocmask"))
        .collect();
    assert!(
        masks_after.is_empty(),
        "the daemon changed its signal mask around a spawn: {masks_after:?}\n{trace}"
    );
    for (_, child) in &spawns {
        assert!(
            trace
                .lines()
                .any(|l| pid_of(l) == *child && l.contains("rt_sigprocmask(SIG_SETMASK, []")),
            "child {child} unblocks every signal before its exec:\n{trace}"
        );
    }
}
