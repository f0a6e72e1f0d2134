//! Session logs and reaping: a start and an end line per connection with
//! the child's pid and how it ended, and no zombie however many sessions.

use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    Daemon, WAIT, child, children_of, connect, field, has_token, kill, open_fds, read_line,
    read_to_eof, request, wait_gone,
};

#[test]
fn session_lines_name_port_peer_pid_and_exit_code() {
    let daemon = Daemon::builder().service("none", &child("exit 3")).start();
    let mut stream = connect(daemon.port(0));
    let client = stream.local_addr().expect("local_addr");
    let line = read_line(&mut stream, WAIT);
    let pid: u32 = field(&line, "pid")
        .and_then(|p| p.parse().ok())
        .expect("pid=");

    let (start, logged_pid) = daemon.session_start(client);
    assert_eq!(logged_pid, pid, "start line pid: {start}");
    assert!(
        has_token(&start, &format!("port={}", daemon.port(0)))
            && start.contains(&format!("peer=127.0.0.1:{}", client.port())),
        "start line names port and peer: {start}"
    );
    let end = daemon.session_end(pid);
    assert!(
        end.contains("status=exit 3") && end.contains("duration="),
        "end line with exit code and duration: {end}"
    );
}

#[test]
fn session_end_names_the_signal_that_killed_the_child() {
    let daemon = Daemon::builder()
        .service("none", &child("sleep 30"))
        .start();
    let mut stream = connect(daemon.port(0));
    let line = read_line(&mut stream, WAIT);
    let pid: u32 = field(&line, "pid")
        .and_then(|p| p.parse().ok())
        .expect("pid=");
    kill(pid as i32, libc::SIGKILL).expect("kill the child");
    let end = daemon.session_end(pid);
    assert!(end.contains("status=signal 9"), "end line: {end}");
    let rest = read_to_eof(&mut stream, WAIT).expect("EOF once the child is dead");
    assert!(
        rest.is_empty(),
        "nothing more after the first line: {rest:?}"
    );
}

/// Hundreds of short sessions, sequential then concurrent: every one is
/// served and logged as ended, and the daemon is left with no child, zombie
/// or otherwise.
#[test]
fn no_zombies_after_hundreds_of_sessions() {
    const SEQUENTIAL: usize = 300;
    const THREADS: usize = 8;
    const PER_THREAD: usize = 10;
    let daemon = Daemon::builder().service("none", &child("echo")).start();
    let port = daemon.port(0);

    // The check below looks for the daemon's children in /proc: make sure it
    // finds a live one.
    let held = connect(port);
    let (_, held_pid) = daemon.session_start(held.local_addr().expect("local_addr"));
    let children = children_of(daemon.pid());
    assert!(
        children.iter().any(|(pid, _)| *pid == held_pid),
        "child {held_pid} not found among the daemon's children {children:?}"
    );
    drop(held);

    for i in 0..SEQUENTIAL {
        let message = format!("ping {i}\n");
        assert_eq!(request(port, message.as_bytes()), message, "session {i}");
    }
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let message = format!("thread {t} ping {i}\n");
                    assert_eq!(request(port, message.as_bytes()), message);
                }
            })
        })
        .collect();
    for thread in threads {
        thread
            .join()
            .expect("a concurrent client failed (see above)");
    }

    let total = 1 + SEQUENTIAL + THREADS * PER_THREAD;
    daemon.wait_for_count("`session end` ... `status=exit 0`", total, WAIT, |l| {
        l.contains("session end") && l.contains("status=exit 0")
    });
    let deadline = Instant::now() + WAIT;
    loop {
        let children = children_of(daemon.pid());
        if children.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon still has children (pid, state) after {WAIT:?}: {children:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// A program that starts a process which ignores SIGTERM, leaves it
/// running (holding the connection) and exits at once, then prints that
/// process's pid.
const LEAVES_A_PROCESS: &str =
    r#"["/bin/sh", "-c", "(trap '' TERM; exec sleep 30) & echo left=$!; exit 0"]"#;

/// The pid a `LEAVES_A_PROCESS` session printed.
fn left_behind(stream: &mut std::net::TcpStream) -> u32 {
    let line = read_line(stream, WAIT);
    line.strip_prefix("left=")
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("left=PID: {line:?}"))
}

/// Regression (issue 16, item 7): SIGKILL after `max_lifetime` went only to
/// a program still alive, so what it left behind kept its client connected
/// past `max_lifetime`. The whole process group gets SIGTERM and, after
/// the grace, SIGKILL, whether or not the program itself has exited.
#[test]
fn max_lifetime_ends_what_the_program_left_behind() {
    let daemon = Daemon::builder()
        .toml(&format!(
            "[[service]]\nname = \"bg\"\nlisten = {{port0}}\ncommand = {LEAVES_A_PROCESS}\nmax_lifetime = 1\n"
        ))
        .args(&["--shutdown-grace", "1"])
        .start();
    let began = Instant::now();
    let mut stream = connect(daemon.port(0));
    let left = left_behind(&mut stream);
    read_to_eof(&mut stream, WAIT).expect("EOF once the group is ended");
    assert!(
        began.elapsed() >= Duration::from_secs(1),
        "ended after {:?}, before max_lifetime",
        began.elapsed()
    );
    wait_gone(left, WAIT);
    daemon.wait_for_line("max_lifetime", WAIT);
    daemon.wait_for_line("killing its processes", WAIT);
    daemon.wait_for_line("session end", WAIT);
}

/// Regression (issue 16, item 7): what a program left behind survived the
/// daemon's stop. The stop ends every session's whole process group.
#[test]
fn stop_ends_what_the_program_left_behind() {
    let mut daemon = Daemon::builder()
        .toml(&format!(
            "[[service]]\nname = \"bg\"\nlisten = {{port0}}\ncommand = {LEAVES_A_PROCESS}\n"
        ))
        .args(&["--shutdown-grace", "1"])
        .start();
    let mut stream = connect(daemon.port(0));
    let left = left_behind(&mut stream);
    assert!(
        crate::common::is_alive(left),
        "the process left behind runs"
    );
    daemon.send_signal(libc::SIGTERM);
    let status = daemon.wait_exit(WAIT);
    assert!(status.success(), "{status:?}");
    wait_gone(left, Duration::from_secs(1));
    read_to_eof(&mut stream, WAIT).expect("EOF");
}

/// Regression (issue 16, item 7): a session ended when its program exited,
/// even though what the program left behind still held its stderr pipe in
/// the daemon: 20 such sessions held 20 extra descriptors at
/// `max_sessions = 5`. A session now lasts until its process group is
/// empty and its stderr drained, so the cap bounds both.
#[test]
fn what_a_program_leaves_behind_counts_against_the_caps() {
    const CAP: usize = 3;
    let daemon = Daemon::builder()
        .toml(&format!(
            "[[service]]\nname = \"bg\"\nlisten = {{port0}}\ncommand = {LEAVES_A_PROCESS}\n\
             stderr = \"log\"\nmax_sessions = {CAP}\n"
        ))
        .start();
    let baseline = open_fds(daemon.pid()).len();
    let mut held = Vec::new();
    for _ in 0..CAP {
        let mut stream = connect(daemon.port(0));
        left_behind(&mut stream);
        held.push(stream);
    }
    // More clients wait in the backlog: none is served while the first
    // sessions' processes live.
    let mut waiting: Vec<_> = (0..CAP).map(|_| connect(daemon.port(0))).collect();
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        daemon.count(|l| l.contains("session start")),
        CAP,
        "sessions started while {CAP} left processes behind"
    );
    let fds = open_fds(daemon.pid()).len();
    assert!(
        fds <= baseline + CAP,
        "the daemon holds {fds} descriptors, {baseline} before {CAP} sessions"
    );
    assert_eq!(daemon.count(|l| l.contains("session end")), 0);
    // Once what the first one left ends, its session ends and the next
    // client is served.
    let first_pid = daemon
        .lines()
        .iter()
        .find(|l| l.contains("session start"))
        .and_then(|l| field(l, "pid").and_then(|p| p.parse::<i32>().ok()))
        .expect("a start line with a pid");
    kill(-first_pid, libc::SIGKILL).expect("kill the first session's group");
    daemon.session_end(first_pid as u32);
    left_behind(&mut waiting[0]);
}
