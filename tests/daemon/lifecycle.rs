//! Start and stop: `listening on` only once bound, READY=1 after it, bind
//! failures, spawn failures that stay local, and SIGTERM/SIGINT shutdown
//! with the grace period.

use std::fs;
use std::io::ErrorKind;
use std::net::{Ipv6Addr, TcpListener, TcpStream};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    Daemon, WAIT, child, connect, describe, field, is_alive, read_line, read_to_eof, request, v4,
    wait_gone,
};

/// Each `listening on [::]:PORT (CMDLINE)` line means the port is bound:
/// a connection made right after it is served.
#[test]
fn listening_line_means_bound() {
    let builder = Daemon::builder()
        .service("none", &child("echo"))
        .service("none", &child("env PROTO"));
    let daemon = builder.spawn();
    let first = format!("listening on [::]:{} ({})", daemon.port(0), child("echo"));
    let second = format!(
        "listening on [::]:{} ({})",
        daemon.port(1),
        child("env PROTO")
    );
    daemon.wait_for_line(&first, WAIT);
    assert_eq!(request(daemon.port(0), b"right away\n"), "right away\n");
    daemon.wait_for_line(&second, WAIT);
    assert_eq!(request(daemon.port(1), b""), "PROTO=TCP\n");
    assert_eq!(daemon.count(|l| l.contains("listening on")), 2);
}

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

/// A port held by someone else: an error naming it, exit 1, and no
/// `listening on` line, not even for the port that was free.
#[test]
fn port_in_use_fails_startup() {
    let holder = TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0)).expect("hold a port");
    let taken = holder.local_addr().expect("local_addr").port();
    let mut daemon = Daemon::builder()
        .service("none", &child("echo"))
        .line(&format!("{taken} none {}", child("echo")))
        .spawn();
    let status = daemon.wait_exit(WAIT);
    assert_eq!(status.code(), Some(1), "exit code ({})", describe(status));
    let error = daemon.wait_for_line("cannot listen", Duration::ZERO);
    assert!(
        error.contains(&taken.to_string()),
        "names the port: {error}"
    );
    assert_eq!(daemon.count(|l| l.contains("listening on")), 0);
}

/// A missing program or a file that is not executable: the connection is
/// closed, `cannot start` is logged with the path and the OS reason, and
/// the daemon keeps serving (the same port again, and the others).
#[test]
fn spawn_failure_closes_the_connection_and_serving_goes_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let not_executable = dir.path().join("not-executable");
    fs::write(&not_executable, "#!/bin/sh\necho should not run\n").expect("write");
    fs::set_permissions(&not_executable, fs::Permissions::from_mode(0o644)).expect("chmod");
    let missing = "/nonexistent/wininetd-test-missing-program";
    let not_executable = not_executable.display().to_string();
    let daemon = Daemon::builder()
        .service("none", missing)
        .service("none", &not_executable)
        .service("none", &child("echo"))
        .start();

    let cases = [
        (daemon.port(0), missing, "No such file or directory"),
        (daemon.port(1), not_executable.as_str(), "Permission denied"),
    ];
    for (port, path, reason) in cases {
        for attempt in 1..=2 {
            let mut stream = connect(port);
            match read_to_eof(&mut stream, WAIT) {
                Ok(data) => assert!(data.is_empty(), "{path}: got {data:?}"),
                Err(err) => assert_eq!(
                    err.kind(),
                    ErrorKind::ConnectionReset,
                    "{path}: the connection should be closed: {err}"
                ),
            }
            daemon.wait_for_count(
                &format!("`cannot start` {path} {reason}"),
                attempt,
                WAIT,
                |l| l.contains("cannot start") && l.contains(path) && l.contains(reason),
            );
        }
    }
    assert_eq!(
        request(daemon.port(2), b"still serving\n"),
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
