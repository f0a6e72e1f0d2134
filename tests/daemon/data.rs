//! The data path: the child's stdin, stdout and stderr are the connection,
//! bytes arrive unchanged and EOF travels both ways.

use std::io::Write;
use std::net::Shutdown;
use std::thread;

use crate::common::{Daemon, WAIT, child, connect, read_to_eof, request};

/// Every byte value, in an order that is not a simple cycle.
fn payload(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(7) ^ (i >> 8)) as u8)
        .collect()
}

/// The client half-closes its side: the echo child sees EOF, exits 0, and
/// the client then sees EOF (the daemon kept no copy of the socket open).
#[test]
fn echo_carries_bytes_and_eof_both_ways() {
    let daemon = Daemon::builder().service("none", &child("echo")).start();
    let mut stream = connect(daemon.port(0));
    let client = stream.local_addr().expect("local_addr");
    let sent = payload(1 << 20);

    // Write from another thread: a child echoing 1 MiB back would otherwise
    // block on a full socket buffer while this thread is still writing.
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

    assert_eq!(received.len(), sent.len(), "echoed length");
    assert!(
        received == sent,
        "the echoed bytes differ from the sent ones"
    );
    let (_, pid) = daemon.session_start(client);
    let end = daemon.session_end(pid);
    assert!(
        end.contains("status=exit 0"),
        "echo should exit 0 at EOF: {end}"
    );
}

/// The child ends first, while the client still has its write side open:
/// the client sees the child's output, then EOF.
#[test]
fn child_exit_closes_the_connection() {
    let daemon = Daemon::builder().service("none", &child("exit 3")).start();
    let mut stream = connect(daemon.port(0));
    let received = read_to_eof(&mut stream, WAIT).expect("output then EOF");
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.starts_with("exiting pid=")
            && text.ends_with(" code=3\n")
            && text.lines().count() == 1,
        "unexpected output: {text:?}"
    );
}

/// What the child writes to fd 2 reaches the client too.
#[test]
fn stderr_reaches_the_client() {
    let daemon = Daemon::builder()
        .service("none", &child("stderr 'written on fd 2'"))
        .start();
    assert_eq!(request(daemon.port(0), b""), "written on fd 2\n");
}

/// A child that writes while it reads (two threads) gets both directions.
#[test]
fn duplex_child_reads_and_writes_at_once() {
    const LEN: usize = 300_000;
    let daemon = Daemon::builder()
        .service("none", &child(&format!("duplex {LEN}")))
        .start();
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
    assert_eq!(received.len(), LEN + summary.len(), "received length");
    assert!(received[..LEN] == pattern[..], "the pattern is corrupted");
    assert_eq!(String::from_utf8_lossy(&received[LEN..]), summary);
}
