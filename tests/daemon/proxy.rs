//! The PROXY protocol (issue 19), on Linux and Windows alike: a header made
//! here, byte by byte as HAProxy's spec gives it, carries a client; the
//! program is told that client, the rules apply to it, and the program never
//! sees a byte of the header. HAProxy itself is in proxy_haproxy.rs (Linux).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::{
    Daemon, WAIT, child_argv, connect, env_value, field, read_to_eof, toml_service,
};

const ENV: &[&str] = &[
    "env",
    "CLIENT_IP",
    "CLIENT_PORT",
    "TCPREMOTEIP",
    "TCPREMOTEPORT",
    "TCPLOCALIP",
    "TCPLOCALPORT",
    "PROXY_IP",
    "PROXY_PORT",
    "PROXY_AUTHORITY",
    "PROXY_UNIQUE_ID",
];

/// The v2 signature.
const SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 PROXY header for a TCP over IPv4 connection from `client` to
/// `destination`, with `tlvs` after the addresses.
fn v2(client: SocketAddr, destination: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
    let (SocketAddr::V4(c), SocketAddr::V4(d)) = (client, destination) else {
        panic!("IPv4 addresses only");
    };
    let mut addresses = Vec::new();
    addresses.extend_from_slice(&c.ip().octets());
    addresses.extend_from_slice(&d.ip().octets());
    addresses.extend_from_slice(&c.port().to_be_bytes());
    addresses.extend_from_slice(&d.port().to_be_bytes());
    let mut header = SIG.to_vec();
    header.push(0x21); // version 2, PROXY
    header.push(0x11); // IPv4, stream
    let len = u16::try_from(addresses.len() + tlvs.len()).expect("short");
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(&addresses);
    header.extend_from_slice(tlvs);
    header
}

/// A v2 `LOCAL` header (a proxy's health check).
fn v2_local() -> Vec<u8> {
    let mut header = SIG.to_vec();
    header.extend_from_slice(&[0x20, 0x00, 0, 0]);
    header
}

fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut t = vec![kind];
    t.extend_from_slice(&u16::try_from(value.len()).expect("short").to_be_bytes());
    t.extend_from_slice(value);
    t
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("an address")
}

/// A daemon whose one service takes `version` from 127.0.0.1, with `extra`
/// lines, running the test child's `mode`.
fn proxied(version: &str, mode: &[&str], extra: &[&str]) -> Daemon {
    let mut lines = vec![
        format!("proxy_protocol = \"{version}\""),
        "trusted_proxies = [\"127.0.0.1\"]".to_owned(),
    ];
    lines.extend(extra.iter().map(|l| (*l).to_owned()));
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    Daemon::builder()
        .toml(&toml_service("p", "{port0}", &child_argv(mode), &lines))
        .start()
}

/// Sends `header` and `then`, half-closes, and reads what comes back.
fn exchange(port: u16, header: &[u8], then: &[u8]) -> (TcpStream, String) {
    let mut stream = connect(port);
    // A refused connection may be closed before all of it is sent.
    let _ = stream
        .write_all(header)
        .and_then(|()| stream.write_all(then))
        .and_then(|()| stream.shutdown(Shutdown::Write));
    let output = read_to_eof(&mut stream, WAIT).unwrap_or_default();
    (stream, String::from_utf8_lossy(&output).into_owned())
}

#[test]
fn a_v2_header_tells_the_program_who_the_client_is() {
    let daemon = proxied("v2", ENV, &[]);
    let mut tlvs = tlv(0x02, b"www.example.org");
    tlvs.extend(tlv(0x05, b"req-42"));
    let header = v2(addr("192.0.2.7:40000"), addr("198.51.100.1:443"), &tlvs);
    let (stream, output) = exchange(daemon.port(0), &header, b"");
    let proxy = stream.local_addr().expect("local_addr");
    for (name, value) in [
        ("CLIENT_IP", "192.0.2.7"),
        ("CLIENT_PORT", "40000"),
        ("TCPREMOTEIP", "192.0.2.7"),
        ("TCPREMOTEPORT", "40000"),
        ("TCPLOCALIP", "198.51.100.1"),
        ("TCPLOCALPORT", "443"),
        ("PROXY_IP", "127.0.0.1"),
        ("PROXY_PORT", &proxy.port().to_string()),
        ("PROXY_AUTHORITY", "www.example.org"),
        ("PROXY_UNIQUE_ID", "req-42"),
    ] {
        assert_eq!(
            env_value(&output, name),
            Some(value),
            "{name} in {output:?}"
        );
    }
    let start = daemon.wait_for_line("session start", WAIT);
    assert_eq!(field(&start, "peer"), Some("192.0.2.7:40000"), "{start}");
    assert_eq!(
        field(&start, "proxy"),
        Some(format!("127.0.0.1:{}", proxy.port()).as_str()),
        "{start}"
    );
}

/// The program reads exactly what follows the header: not one byte of the
/// header, not one byte less of the data, even when both come in one
/// segment.
#[test]
fn the_program_gets_every_byte_after_the_header_and_none_of_it() {
    for stdio in ["socket", "pipe"] {
        let daemon = proxied("any", &["echo"], &[&format!("stdio = \"{stdio}\"")]);
        echo_after_headers(&daemon);
    }
}

fn echo_after_headers(daemon: &Daemon) {
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    for header in [
        b"PROXY TCP4 192.0.2.8 198.51.100.1 1234 80\r\n".to_vec(),
        v2(addr("192.0.2.8:1234"), addr("198.51.100.1:80"), &[]),
    ] {
        let mut stream = connect(daemon.port(0));
        let mut first = header.clone();
        first.extend_from_slice(&data[..1000]);
        stream
            .write_all(&first)
            .expect("header and data in one write");
        stream.write_all(&data[1000..]).expect("the rest");
        stream.shutdown(Shutdown::Write).expect("half-close");
        let echoed = read_to_eof(&mut stream, WAIT).expect("the echo");
        assert_eq!(echoed.len(), data.len());
        assert!(echoed == data, "the echo differs from what was sent");
    }
}

/// A health check's `LOCAL` header, and v1's `UNKNOWN`: the connection's own
/// addresses are used, and the proxy's.
#[test]
fn local_and_unknown_use_the_connections_own_addresses() {
    let daemon = proxied("any", ENV, &[]);
    for header in [v2_local(), b"PROXY UNKNOWN\r\n".to_vec()] {
        let (stream, output) = exchange(daemon.port(0), &header, b"");
        let me = stream.local_addr().expect("local_addr");
        assert_eq!(
            env_value(&output, "CLIENT_IP"),
            Some("127.0.0.1"),
            "{output}"
        );
        assert_eq!(
            env_value(&output, "CLIENT_PORT"),
            Some(me.port().to_string().as_str()),
            "{output}"
        );
        assert_eq!(
            env_value(&output, "TCPLOCALPORT"),
            Some(daemon.port(0).to_string().as_str())
        );
        assert_eq!(
            env_value(&output, "PROXY_IP"),
            Some("127.0.0.1"),
            "{output}"
        );
    }
}

/// Waits for a `connection refused` line with `rule=proxy` whose reason
/// holds `reason`.
fn assert_refused(daemon: &Daemon, reason: &str) -> String {
    let line = daemon.wait_for(&format!("refusing with {reason:?}"), WAIT, |l| {
        l.contains("connection refused") && l.contains(reason)
    });
    assert_eq!(field(&line, "rule"), Some("proxy"), "{line}");
    line
}

/// Issue 19, item 1: what is not a valid header from a trusted proxy is
/// refused, logged with `rule=proxy` and the reason, and no program runs.
#[test]
fn what_is_not_a_valid_header_from_a_trusted_proxy_is_refused() {
    let daemon = proxied("v1", ENV, &["proxy_timeout = 1"]);
    let port = daemon.port(0);
    let cases: [(&[u8], &str); 4] = [
        (
            b"GET / HTTP/1.0\r\n\r\n",
            "does not start with a PROXY header",
        ),
        (
            &v2(addr("192.0.2.7:1"), addr("192.0.2.8:2"), &[]),
            "a PROXY protocol v2 header, but the service takes v1",
        ),
        (
            b"PROXY TCP4 192.0.2.7 192.0.2.8 1 99999\r\n",
            "malformed PROXY header",
        ),
        (
            &[b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat(),
            "longer than 107 bytes",
        ),
    ];
    for (sent, reason) in cases {
        let (_, output) = exchange(port, sent, b"");
        assert_eq!(output, "", "{reason}: a program ran");
        assert_refused(&daemon, reason);
    }
    // A proxy that sends nothing is dropped at proxy_timeout.
    let mut silent = connect(port);
    let began = Instant::now();
    let mut buf = [0; 16];
    let n = silent.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "nothing is sent to a silent proxy");
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < WAIT,
        "closed after {waited:?}, not at proxy_timeout = 1"
    );
    assert_refused(&daemon, "no PROXY header within 1s");
    assert_eq!(daemon.count(|l| l.contains("session start")), 0);
}

/// A connection from outside `trusted_proxies` is refused, its header or
/// not: anyone could otherwise claim any address.
#[test]
fn only_trusted_proxies_are_believed() {
    let daemon = Daemon::builder()
        .toml(&toml_service(
            "p",
            "{port0}",
            &child_argv(ENV),
            &[
                "proxy_protocol = \"v1\"",
                "trusted_proxies = [\"10.0.0.0/8\"]",
            ],
        ))
        .start();
    let (_, output) = exchange(
        daemon.port(0),
        b"PROXY TCP4 192.0.2.7 192.0.2.8 1 2\r\n",
        b"",
    );
    assert_eq!(output, "");
    let line = assert_refused(&daemon, "not from a trusted proxy");
    assert_eq!(
        field(&line, "peer").map(|p| p.starts_with("127.0.0.1:")),
        Some(true),
        "{line}"
    );
}

/// Issue 19, item 2: `deny` and the per-source limits apply to the client
/// the header names, not to the proxy.
#[test]
fn the_rules_apply_to_the_client_not_the_proxy() {
    let daemon = proxied(
        "v2",
        &["sleep", "30"],
        &["deny = [\"192.0.2.66\"]", "max_per_source = 1"],
    );
    let port = daemon.port(0);
    let header = |client: &str| v2(addr(client), addr("198.51.100.1:22"), &[]);
    let (_, output) = exchange(port, &header("192.0.2.66:5000"), b"");
    assert_eq!(output, "");
    let line = daemon.wait_for("refusing the denied client", WAIT, |l| {
        l.contains("connection refused")
    });
    assert_eq!(field(&line, "rule"), Some("deny"), "{line}");
    assert_eq!(field(&line, "peer"), Some("192.0.2.66:5000"), "{line}");

    // Two sessions of one client through the same proxy: the second is
    // over max_per_source; another client's is not.
    let mut first = connect(port);
    first.write_all(&header("192.0.2.10:1")).expect("send");
    daemon.wait_for_line("session start", WAIT);
    let mut second = connect(port);
    second.write_all(&header("192.0.2.10:2")).expect("send");
    let line = daemon.wait_for("the second session of one client refused", WAIT, |l| {
        l.contains("rule=max_per_source")
    });
    assert_eq!(field(&line, "peer"), Some("192.0.2.10:2"), "{line}");
    let mut other = connect(port);
    other.write_all(&header("192.0.2.11:1")).expect("send");
    daemon.wait_for_count("session start", 2, WAIT, |l| l.contains("session start"));
    drop((first, second, other));
}

/// A header that comes in pieces (most come whole, in one segment) is
/// waited for and read whole all the same.
#[test]
fn a_header_in_pieces_is_read_whole() {
    let daemon = proxied("any", &["echo"], &[]);
    for header in [
        b"PROXY TCP4 192.0.2.8 198.51.100.1 1234 80\r\n".to_vec(),
        v2(
            addr("192.0.2.8:1234"),
            addr("198.51.100.1:80"),
            &tlv(0x05, b"id-1"),
        ),
    ] {
        let mut stream = connect(daemon.port(0));
        let (first, rest) = header.split_at(10);
        stream.write_all(first).expect("the first piece");
        std::thread::sleep(Duration::from_millis(150));
        stream.write_all(rest).expect("the rest");
        stream.write_all(b"after\n").expect("data");
        stream.shutdown(Shutdown::Write).expect("half-close");
        let echoed = read_to_eof(&mut stream, WAIT).expect("the echo");
        assert_eq!(echoed, b"after\n");
    }
}
