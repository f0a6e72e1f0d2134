//! The data path, in both stdio modes (the socket itself, and pipes the
//! daemon relays), on Linux and Windows alike: the program's stdin, stdout
//! and stderr are the connection, bytes arrive unchanged, EOF travels both
//! ways, and a session ends with its own program, never with another's.
//! A program that cannot start closes its connection and nothing else.
//! pipe.rs tests the relay in depth on Linux.

use std::io::{self, Write};
use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    DUPLEX_MODES, Daemon, MISSING_PROGRAM, MODES, PIPED, WAIT, assert_silent, child, child_argv,
    connect, has_status, has_token, is_alive, number_after, read_line, read_to_eof, request,
    toml_service, wait_gone,
};

/// Deadline for "promptly": a connection whose program has exited must end
/// well before an unrelated `sleep` program (which sleeps [`LONG_SLEEP`])
/// would.
const PROMPTLY: Duration = Duration::from_secs(5);

/// How long the `sleep` programs live: much longer than [`PROMPTLY`], much
/// shorter than a CI run, in case one leaks.
const LONG_SLEEP: &str = "30";

/// A daemon serving the test child's `mode` on `{port0}` in stdio mode
/// `stdio`.
fn start_one(stdio: &str, mode: &str) -> Daemon {
    Daemon::builder()
        .service("none", &child(mode))
        .args(&["--stdio", stdio])
        .start()
}

/// Every byte value, in an order that is not a simple cycle.
fn payload(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(7) ^ (i >> 8)) as u8)
        .collect()
}

/// The client half-closes its side: the echo program sees EOF, exits 0, and
/// the client then sees EOF (the daemon kept no copy of the connection
/// open); a mebibyte of every byte value comes back unchanged. The session
/// lines name the port, the exit status and the duration.
#[test]
fn echo_carries_bytes_and_eof_both_ways() {
    for stdio in MODES {
        let daemon = start_one(stdio, "echo");
        let mut stream = connect(daemon.port(0));
        let client = stream.local_addr().expect("local_addr");
        let sent = payload(1 << 20);

        // Write from another thread: a program echoing 1 MiB back would
        // otherwise block on a full buffer while this thread still writes.
        let mut writer = stream.try_clone().expect("clone the stream");
        let to_send = sent.clone();
        let sender = thread::spawn(move || {
            writer.write_all(&to_send)?;
            writer.shutdown(Shutdown::Write)
        });
        let received = read_to_eof(&mut stream, WAIT).expect("echo until EOF");
        sender
            .join()
            .expect("the sender does not panic")
            .expect("send and half-close");

        assert_eq!(received.len(), sent.len(), "--stdio {stdio}: echoed length");
        assert!(
            received == sent,
            "--stdio {stdio}: the echoed bytes differ from the sent ones"
        );
        let (start, pid) = daemon.session_start(client);
        assert!(
            has_token(&start, &format!("port={}", daemon.port(0))),
            "{start}"
        );
        let end = daemon.session_end(pid);
        assert!(
            has_status(&end, "exit 0") && end.contains("duration="),
            "--stdio {stdio}: echo exits 0 at EOF: {end}"
        );
    }
}

/// The program ends first, while the client still has its write side
/// open: the client sees the program's output, then EOF, and the session
/// end names the exit code.
#[test]
fn child_exit_closes_the_connection() {
    for stdio in MODES {
        let daemon = start_one(stdio, "exit 3");
        let mut stream = connect(daemon.port(0));
        let client = stream.local_addr().expect("local_addr");
        let output = read_to_eof(&mut stream, WAIT).expect("output, then EOF");
        let (_, pid) = daemon.session_start(client);
        assert_eq!(
            String::from_utf8_lossy(&output),
            format!("exiting pid={pid} code=3\n"),
            "--stdio {stdio}"
        );
        let end = daemon.session_end(pid);
        assert!(has_status(&end, "exit 3"), "--stdio {stdio}: {end}");
    }
}

/// The client closes the connection: the program reads EOF, exits, and
/// its session ends.
#[test]
fn closing_the_connection_ends_the_session() {
    for stdio in MODES {
        let daemon = start_one(stdio, "pid");
        let mut stream = connect(daemon.port(0));
        let line = read_line(&mut stream, WAIT);
        let pid = number_after(&line, "pid").unwrap_or_else(|| panic!("{line:?}"));
        drop(stream);
        let end = daemon.session_end(pid);
        assert!(has_status(&end, "exit 0"), "--stdio {stdio}: {end}");
        wait_gone(pid, WAIT);
    }
}

/// What the program writes to its stderr reaches the client too.
#[test]
fn stderr_reaches_the_client() {
    for stdio in MODES {
        let daemon = start_one(stdio, "stderr written-on-stderr");
        assert_eq!(
            request(daemon.port(0), b""),
            "written-on-stderr\n",
            "--stdio {stdio}"
        );
    }
}

/// A program that writes while it reads (two threads) gets both directions
/// at once: a mebibyte each way, neither side waiting for the other.
#[test]
fn duplex_child_reads_and_writes_at_once() {
    const LEN: usize = 1 << 20;
    for stdio in DUPLEX_MODES {
        let daemon = start_one(stdio, &format!("duplex {LEN}"));
        let mut stream = connect(daemon.port(0));
        let mut writer = stream.try_clone().expect("clone the stream");
        let sender = thread::spawn(move || {
            writer.write_all(&payload(LEN))?;
            writer.shutdown(Shutdown::Write)
        });
        let received = read_to_eof(&mut stream, WAIT).expect("pattern, summary, EOF");
        sender
            .join()
            .expect("the sender does not panic")
            .expect("send and half-close");
        let pattern: Vec<u8> = (0..LEN).map(|i| b'a' + (i % 26) as u8).collect();
        let summary = format!("\nduplex read={LEN} wrote={LEN}\n");
        assert_eq!(
            received.len(),
            LEN + summary.len(),
            "--stdio {stdio}: received length"
        );
        assert!(
            received[..LEN] == pattern[..],
            "--stdio {stdio}: the pattern is corrupted"
        );
        assert_eq!(String::from_utf8_lossy(&received[LEN..]), summary);
    }
}

/// Regression test for WinInetd's handle leak: every program inherited
/// every inheritable handle (the other clients' sockets), so a connection
/// stayed open until an unrelated program exited. Here B1 is connected
/// before A's long-lived program starts (A's program would inherit B1's
/// socket) and B2 after it (B2's program would inherit A's); both must end
/// as soon as their own program exits, while A's program still runs. Then
/// the same with many sessions starting at once: what is passed to one
/// program must not reach a program started at the same moment.
#[test]
fn a_session_ends_when_its_own_child_exits() {
    for stdio in MODES {
        let daemon = Daemon::builder()
            .service("none", &child(&format!("sleep {LONG_SLEEP}")))
            .service("none", &child("pid"))
            .service("none", &child("exit 0"))
            .args(&["--stdio", stdio])
            .start();

        let mut b1 = connect(daemon.port(1));
        let b1_line = read_line(&mut b1, WAIT);
        let b1_pid = number_after(&b1_line, "pid").unwrap_or_else(|| panic!("{b1_line:?}"));

        let mut a = connect(daemon.port(0));
        let a_line = read_line(&mut a, WAIT);
        let a_pid = number_after(&a_line, "pid").unwrap_or_else(|| panic!("{a_line:?}"));

        // B1's program exits on EOF; its connection must end with it.
        b1.shutdown(Shutdown::Write).expect("half-close B1");
        let started = Instant::now();
        read_to_eof(&mut b1, PROMPTLY).unwrap_or_else(|e| {
            panic!("--stdio {stdio}: B1 (program {b1_pid}) did not end while A's {a_pid} runs: {e}")
        });
        daemon.session_end(b1_pid);

        // B2's program exits at once.
        let mut b2 = connect(daemon.port(2));
        let output = read_to_eof(&mut b2, PROMPTLY).unwrap_or_else(|e| {
            panic!("--stdio {stdio}: B2 did not end while A's program {a_pid} runs: {e}")
        });
        assert!(
            String::from_utf8_lossy(&output).starts_with("exiting pid="),
            "--stdio {stdio}: {output:?}"
        );

        assert!(is_alive(a_pid), "--stdio {stdio}: A's program ended early");
        assert_silent(&mut a, Duration::from_millis(200));
        eprintln!(
            "--stdio {stdio}: B1 and B2 ended in {:?}",
            started.elapsed()
        );

        const PAIRS: usize = 6;
        let clients: Vec<_> = (0..2 * PAIRS)
            .map(|i| {
                let port = daemon.port(i % 2);
                thread::spawn(move || {
                    let mut stream = connect(port);
                    let line = read_line(&mut stream, WAIT);
                    let pid = number_after(&line, "pid").unwrap_or_else(|| panic!("{line:?}"));
                    (i % 2 == 1, stream, pid)
                })
            })
            .collect();
        let clients: Vec<_> = clients
            .into_iter()
            .map(|c| c.join().expect("the client connects"))
            .collect();
        let mut ended = 0;
        for (short_lived, mut stream, pid) in clients {
            if short_lived {
                stream.shutdown(Shutdown::Write).expect("half-close");
                read_to_eof(&mut stream, PROMPTLY).unwrap_or_else(|e| {
                    panic!("--stdio {stdio}: the session of program {pid} did not end: {e}")
                });
                ended += 1;
            } else {
                assert!(is_alive(pid), "--stdio {stdio}: program {pid} ended early");
            }
        }
        assert_eq!(ended, PAIRS);
    }
}

/// `timeout` in pipe mode: after `timeout` seconds without data from the
/// client, the program's stdin ends (its blocking read returns 0; in
/// socket mode, on Linux, the read fails instead, linux_toml.rs); the
/// program then exits 0 and the client gets EOF. The control, the same
/// service without `timeout`, still waits past that time and then reads
/// what the client sends late.
#[test]
fn timeout_turns_an_idle_client_into_eof_in_pipe_mode() {
    let read_timeout: Vec<&str> = PIPED.iter().copied().chain(["read-timeout"]).collect();
    let command = child_argv(&read_timeout);
    let config = [
        toml_service(
            "timeout",
            "\"{port0}\"",
            &command,
            &["stdio = \"pipe\"", "timeout = 1"],
        ),
        toml_service("patient", "\"{port1}\"", &command, &["stdio = \"pipe\""]),
    ]
    .concat();
    let daemon = Daemon::builder().toml(&config).start();
    // The control waits alongside.
    let mut patient = connect(daemon.port(1));

    // The daemon's clock starts at the accept, the program's only once it
    // runs: measure from the client's side.
    let connected = Instant::now();
    let mut stream = connect(daemon.port(0));
    let client = stream.local_addr().expect("local_addr");
    assert_eq!(read_line(&mut stream, WAIT), "reading");
    let line = read_line(&mut stream, WAIT);
    let waited = connected.elapsed();
    assert!(
        line.starts_with("read ok 0 "),
        "the program's read should see the end of its input: {line:?}"
    );
    assert!(
        waited >= Duration::from_millis(950),
        "the program's input ended {waited:?} after connecting, before the 1 s timeout"
    );
    let rest = read_to_eof(&mut stream, WAIT).expect("EOF once the program exits");
    assert!(rest.is_empty(), "{rest:?}");
    let (_, pid) = daemon.session_start(client);
    let end = daemon.session_end(pid);
    assert!(has_status(&end, "exit 0"), "{end}");

    assert_eq!(read_line(&mut patient, WAIT), "reading");
    let left = Duration::from_millis(1500).saturating_sub(connected.elapsed());
    assert_silent(&mut patient, left.max(Duration::from_millis(100)));
    patient.write_all(b"late\n").expect("send");
    let line = read_line(&mut patient, WAIT);
    assert!(
        line.starts_with("read ok 5 "),
        "the control still waited after {:?}: {line:?}",
        connected.elapsed()
    );
}

/// Unicode end to end: a command line with characters outside Latin-1 and
/// outside the BMP goes from the UTF-8 config to the program's arguments
/// unchanged (on Windows through CreateProcessW).
#[test]
fn unicode_arguments_reach_the_program() {
    let daemon = Daemon::builder()
        .service("none", &child("args \"héllo wörld ✓\" 𝄞"))
        .start();
    assert_eq!(
        request(daemon.port(0), b""),
        "arg[0]=héllo wörld ✓\narg[1]=𝄞\nargc=2\n"
    );
}

/// A program that does not exist: the connection is closed, `cannot start`
/// is logged with the path and the system's reason, and the daemon keeps
/// serving (the same port again, and the others).
#[test]
fn a_program_that_cannot_start_closes_the_connection() {
    let (missing, reason) = MISSING_PROGRAM;
    let daemon = Daemon::builder()
        .service("none", missing)
        .service("none", &child("echo"))
        .start();
    for attempt in 1..=2 {
        let mut stream = connect(daemon.port(0));
        match read_to_eof(&mut stream, WAIT) {
            Ok(data) => assert!(data.is_empty(), "{missing}: got {data:?}"),
            Err(err) => assert_eq!(
                err.kind(),
                io::ErrorKind::ConnectionReset,
                "{missing}: the connection should be closed: {err}"
            ),
        }
        daemon.wait_for_count(
            &format!("`cannot start` {missing} {reason}"),
            attempt,
            WAIT,
            |l| l.contains("cannot start") && l.contains(missing) && l.contains(reason),
        );
    }
    assert_eq!(
        request(daemon.port(1), b"still serving\n"),
        "still serving\n"
    );
    let mut daemon = daemon;
    assert!(daemon.exited().is_none(), "the daemon survived");
}
