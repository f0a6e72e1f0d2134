//! Session logs and reaping: a start and an end line per connection with
//! the child's pid and how it ended, and no zombie however many sessions.

use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    Daemon, WAIT, child, children_of, connect, field, has_token, kill, read_line, read_to_eof,
    request,
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
