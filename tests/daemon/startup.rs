//! Start, on Linux and Windows alike: each `listening on` line means its
//! port is bound and names the command line, and a port held by someone
//! else stops the start with nothing listening. lifecycle.rs tests the rest
//! of start and stop on Linux (readiness, signals, pid files).

use std::net::{Ipv4Addr, Ipv6Addr, TcpListener};

use crate::common::{Daemon, EVERY_ADDRESS, WAIT, child, request};

/// Each `listening on ADDRESS:PORT (COMMAND LINE)` line means the port is
/// bound: a connection made right after it is served.
#[test]
fn listening_line_means_bound_and_names_the_command_line() {
    let builder = Daemon::builder()
        .service("none", &child("echo"))
        .service("none", &child("env PROTO"));
    let daemon = builder.spawn();
    for (index, mode, input, answer) in [
        (0, "echo", &b"right away\n"[..], "right away\n"),
        (1, "env PROTO", b"", "PROTO=TCP\n"),
    ] {
        let expected: Vec<String> = EVERY_ADDRESS
            .iter()
            .map(|every| {
                format!(
                    "listening on {every}:{} ({})",
                    daemon.port(index),
                    child(mode)
                )
            })
            .collect();
        let line = daemon.wait_for(&format!("one of {expected:?}"), WAIT, |l| {
            expected.iter().any(|e| l.ends_with(e.as_str()))
        });
        assert_eq!(
            request(daemon.port(index), input),
            answer,
            "served right after {line:?}"
        );
    }
    assert_eq!(daemon.count(|l| l.contains("listening on")), 2);
}

/// A port held by someone else (on both families, so whichever the daemon
/// binds is taken): an error naming it, exit 1, and no `listening on` line,
/// not even for the port that was free.
#[test]
fn a_port_in_use_fails_the_start() {
    let holder = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("hold a port");
    let taken = holder.local_addr().expect("local_addr").port();
    // Where [::] also takes IPv4, this bind fails: the port is held anyway.
    let _v6 = TcpListener::bind((Ipv6Addr::UNSPECIFIED, taken));
    let mut daemon = Daemon::builder()
        .service("none", &child("echo"))
        .line(&format!("{taken} none {}", child("echo")))
        .spawn();
    let status = daemon.wait_exit(WAIT);
    assert_eq!(status.code(), Some(1), "exit code ({status:?})");
    let error = daemon.wait_for_line("cannot listen", WAIT);
    assert!(
        error.contains(&taken.to_string()),
        "names the port: {error}"
    );
    assert_eq!(daemon.count(|l| l.contains("listening on")), 0);
}
