//! Built-in services over UDP (`protocol = "udp"` with `builtin`), on
//! Linux and Windows alike: each datagram answered with one datagram (or
//! none), the bytes each RFC says; datagrams from sources that could make
//! the daemon a reflector or start a loop, dropped and logged with
//! `rule=reflection`; `allow`/`deny`, `rate` and `rate_per_source` per
//! datagram. What needs Linux (the `rdate` client, IPv6, reload and stop by
//! signal, raw sockets to forge a source) is in the `linux` module at the
//! foot.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::builtin::{assert_now, parse_asctime};
use crate::common::{Daemon, WAIT, has_field, has_token, is_timeout, lo, peer_text, v4};

/// How long a test waits to see that no answer comes.
const QUIET: Duration = Duration::from_millis(500);

/// A config of one UDP built-in service on `{port0}`, with `extra` lines.
fn udp_builtin(name: &str, extra: &[&str]) -> String {
    let mut text = format!(
        "[[service]]\nname = \"{name}\"\nlisten = {{port0}}\nprotocol = \"udp\"\nbuiltin = \"{name}\"\n"
    );
    for line in extra {
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// A UDP socket bound to `source` (port chosen by the system when 0).
fn client_at(source: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind(source)
        .unwrap_or_else(|err| panic!("bind a UDP client to {source}: {err}"));
    socket.set_read_timeout(Some(WAIT)).expect("timeout");
    socket
}

/// A UDP socket on 127.0.0.`n`.
fn client(n: u8) -> UdpSocket {
    client_at(SocketAddr::new(lo(n), 0))
}

/// Sends `data` to `dest` and returns the one datagram that comes back.
fn ask(socket: &UdpSocket, dest: SocketAddr, data: &[u8]) -> Vec<u8> {
    socket.send_to(data, dest).expect("send");
    receive(socket, dest)
}

/// The next datagram, which must come from `dest` within [`WAIT`].
fn receive(socket: &UdpSocket, dest: SocketAddr) -> Vec<u8> {
    let mut buf = vec![0; 65_536];
    socket.set_read_timeout(Some(WAIT)).expect("timeout");
    let (n, from) = socket
        .recv_from(&mut buf)
        .unwrap_or_else(|err| panic!("no answer from {dest} within {WAIT:?}: {err}"));
    assert_eq!(from, dest, "the answer's source");
    buf.truncate(n);
    buf
}

/// Asserts that no datagram reaches `socket` for [`QUIET`].
fn assert_no_answer(socket: &UdpSocket, what: &str) {
    let deadline = Instant::now() + QUIET;
    let mut buf = [0; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        socket.set_read_timeout(Some(left)).expect("timeout");
        match socket.recv_from(&mut buf) {
            Err(err) if is_timeout(&err) => return,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Ok((n, from)) => panic!(
                "{what}: a datagram of {n} bytes came from {from}: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(err) => panic!("{what}: {err}"),
        }
    }
}

/// The `datagram refused` line for a datagram from `peer`, with `rule`.
fn refusal(daemon: &Daemon, peer: SocketAddr, rule: &str) -> String {
    let peer = format!("peer={}", peer_text(peer));
    daemon.wait_for(
        &format!("`datagram refused` {peer} rule={rule}"),
        WAIT,
        |l| l.contains("datagram refused") && has_token(l, &peer) && has_field(l, "rule", rule),
    )
}

/// chargen's stream, one period of it: 95 lines of 72 printable
/// characters and CR LF, each starting one character further along.
fn chargen_period() -> Vec<u8> {
    let mut period = Vec::new();
    for line in 0..95 {
        period.extend((0..72).map(|j| b' ' + u8::try_from((line + j) % 95).expect("small")));
        period.extend_from_slice(b"\r\n");
    }
    period
}

/// Whether `piece` is a run of chargen's stream.
fn is_chargen(piece: &[u8], period: &[u8]) -> bool {
    (0..period.len()).any(|start| {
        period
            .iter()
            .cycle()
            .skip(start)
            .take(piece.len())
            .eq(piece.iter())
    })
}

/// echo (RFC 862): each datagram comes back as it was, whatever its size
/// (none too), once; the `listening on` line names the built-in and says
/// UDP.
#[test]
fn echo_sends_back_each_datagram_once() {
    let daemon = Daemon::builder().toml(&udp_builtin("echo", &[])).start();
    assert!(
        daemon
            .stderr_text()
            .contains(&format!(":{}/udp (builtin echo)", daemon.port(0))),
        "{}",
        daemon.report()
    );
    let dest = v4(daemon.port(0));
    let socket = client(1);
    let big: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
    for data in [&b"hello"[..], b"", b"\x00\xff\r\n", &big] {
        assert!(
            ask(&socket, dest, data) == data,
            "echo of {} bytes\n{}",
            data.len(),
            daemon.report()
        );
    }
    // Several at once, then each once and no more.
    for i in 0..20u8 {
        socket.send_to(&[i; 100], dest).expect("send");
    }
    let mut seen: Vec<u8> = (0..20).map(|_| receive(&socket, dest)[0]).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..20).collect::<Vec<u8>>());
    assert_no_answer(&socket, "after every datagram's answer");
    // No session lines: a datagram is not a session.
    assert_eq!(daemon.count(|l| l.contains("session start")), 0);
}

/// discard (RFC 863): nothing comes back.
#[test]
fn discard_answers_nothing() {
    let daemon = Daemon::builder().toml(&udp_builtin("discard", &[])).start();
    let socket = client(1);
    for data in [&b"hello"[..], b"", &[b'x'; 10_000]] {
        socket.send_to(data, v4(daemon.port(0))).expect("send");
    }
    assert_no_answer(&socket, "discard");
}

/// daytime (RFC 867): one datagram, the `asctime` line in UTC, now.
#[test]
fn daytime_answers_with_the_date_and_time() {
    let daemon = Daemon::builder().toml(&udp_builtin("daytime", &[])).start();
    let dest = v4(daemon.port(0));
    let socket = client(1);
    let text = String::from_utf8(ask(&socket, dest, b"")).expect("text");
    let line = text.strip_suffix("\r\n").expect("CR LF at the end");
    assert_eq!(line.len(), 24, "{line:?}");
    assert_now(parse_asctime(line), line);
    // Whatever the datagram holds, the answer is the same line.
    let again = ask(&socket, dest, &[b'x'; 1000]);
    assert_eq!(again.len(), 26, "{again:?}");
    assert_no_answer(&socket, "after daytime's one answer");
}

/// time (RFC 868): 4 bytes, big-endian, seconds since 1900.
#[test]
fn time_answers_with_four_bytes() {
    let daemon = Daemon::builder().toml(&udp_builtin("time", &[])).start();
    let socket = client(1);
    let answer = ask(&socket, v4(daemon.port(0)), b"");
    let bytes: [u8; 4] = answer[..].try_into().expect("exactly 4 bytes");
    assert_now(i64::from(u32::from_be_bytes(bytes)) - 2_208_988_800, "time");
}

/// chargen (RFC 864, UDP): one datagram of 0 to 512 characters of the
/// rotating lines, its length at random.
#[test]
fn chargen_answers_with_at_most_512_bytes_of_lines() {
    let daemon = Daemon::builder().toml(&udp_builtin("chargen", &[])).start();
    let dest = v4(daemon.port(0));
    let socket = client(1);
    let period = chargen_period();
    let mut lengths = Vec::new();
    for _ in 0..30 {
        let answer = ask(&socket, dest, b"");
        assert!(answer.len() <= 512, "{} bytes", answer.len());
        assert!(
            is_chargen(&answer, &period),
            "not chargen's lines: {:?}",
            String::from_utf8_lossy(&answer)
        );
        lengths.push(answer.len());
    }
    lengths.sort_unstable();
    lengths.dedup();
    assert!(lengths.len() > 5, "the lengths do not vary: {lengths:?}");
    assert_no_answer(&socket, "after chargen's answers");
}

/// A client gone before its answer came (the answer meets a closed port:
/// on Windows the next read of the daemon's socket then fails with
/// WSAECONNRESET) disturbs no one: the next client is answered at once,
/// and the daemon reports no failure. (Wine does not pass the ICMP on to
/// the daemon's reads: under Wine, as on Linux, this checks the answers
/// and the log only.)
#[test]
fn a_client_gone_before_its_answer_disturbs_no_one() {
    let daemon = Daemon::builder().toml(&udp_builtin("echo", &[])).start();
    let dest = v4(daemon.port(0));
    for _ in 0..20 {
        let gone = client(1);
        gone.send_to(b"bye", dest).expect("send");
        drop(gone);
    }
    let socket = client(1);
    for i in 0..20u8 {
        assert_eq!(ask(&socket, dest, &[i]), [i]);
    }
    assert_eq!(
        daemon.count(|l| l.contains("WARN") || l.contains("ERROR")),
        0,
        "{}",
        daemon.report()
    );
}

/// Reflection: datagrams from the ports of services that answer
/// datagrams (echo, chargen, daytime, time: forged, they would start a
/// loop between two of them) get no answer, and are logged with
/// `rule=reflection`; one from an ordinary port is answered.
#[test]
#[cfg_attr(unix, ignore = "needs root")]
fn datagrams_from_service_ports_get_no_answer() {
    let daemon = Daemon::builder().toml(&udp_builtin("echo", &[])).start();
    let dest = v4(daemon.port(0));
    for port in [7, 19, 13, 37] {
        let source = SocketAddr::new(lo(1), port);
        let socket = client_at(source);
        socket.send_to(b"loop?", dest).expect("send");
        assert_no_answer(&socket, &format!("from port {port}"));
        let line = refusal(&daemon, source, "reflection");
        assert!(
            line.contains(&format!("source port {port} is a datagram service's")),
            "{line}"
        );
    }
    assert_eq!(ask(&client(1), dest, b"fine"), b"fine");
}

/// Three echo services on `{port0}`..`{port2}`, with these rules each.
fn three_echoes(rules: [&str; 3]) -> String {
    rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            format!(
                "[[service]]\nname = \"echo{i}\"\nlisten = {{port{i}}}\nprotocol = \"udp\"\nbuiltin = \"echo\"\n{rule}\n"
            )
        })
        .collect()
}

/// `deny` and `allow` decide per datagram: a source denied, or not
/// allowed, gets no answer (logged with the rule); an allowed one is
/// answered. (From 127.0.0.1 only: under Wine a UDP socket bound to
/// another loopback address still sends from 127.0.0.1; the `linux`
/// module has sources side by side.)
#[test]
fn access_rules_apply_to_each_datagram() {
    let daemon = Daemon::builder()
        .toml(&three_echoes([
            "deny = [\"127.0.0.1\"]",
            "allow = [\"10.0.0.0/8\"]",
            "allow = [\"127.0.0.0/8\"]\ndeny = [\"10.0.0.1\"]",
        ]))
        .start();
    let socket = client(1);
    let me = socket.local_addr().expect("local");
    socket
        .send_to(b"let me in", v4(daemon.port(0)))
        .expect("send");
    assert_no_answer(&socket, "from a denied source");
    let line = refusal(&daemon, me, "deny");
    assert!(line.contains("source denied by 127.0.0.1"), "{line}");
    socket
        .send_to(b"let me in", v4(daemon.port(1)))
        .expect("send");
    assert_no_answer(&socket, "from outside `allow`");
    refusal(&daemon, me, "allow");
    assert_eq!(ask(&socket, v4(daemon.port(2)), b"me"), b"me");
}

/// `rate_per_source` counts datagrams: past the source's burst its
/// datagrams get no answer (logged with the rule).
#[test]
fn rate_per_source_counts_datagrams() {
    let text = udp_builtin(
        "echo",
        &["rate_per_source = { per_second = 0.001, burst = 3 }"],
    );
    let daemon = Daemon::builder().toml(&text).start();
    let dest = v4(daemon.port(0));
    let busy = client(1);
    for i in 0..3u8 {
        assert_eq!(ask(&busy, dest, &[i]), [i], "datagram {i} of the burst");
    }
    busy.send_to(b"one more", dest).expect("send");
    assert_no_answer(&busy, "past the source's burst");
    refusal(
        &daemon,
        busy.local_addr().expect("local"),
        "rate_per_source",
    );
}

/// `rate` counts the service's datagrams.
#[test]
fn rate_counts_the_services_datagrams() {
    let text = udp_builtin("time", &["rate = { per_second = 0.001, burst = 2 }"]);
    let daemon = Daemon::builder().toml(&text).start();
    let dest = v4(daemon.port(0));
    assert_eq!(ask(&client(1), dest, b"").len(), 4);
    assert_eq!(ask(&client(1), dest, b"").len(), 4);
    let late = client(1);
    late.send_to(b"", dest).expect("send");
    assert_no_answer(&late, "past the service's burst");
    refusal(&daemon, late.local_addr().expect("local"), "rate");
}

#[cfg(target_os = "linux")]
mod linux {
    use super::*;
    use crate::common::{Run, assert_root, cpu_time, v6};
    use socket2::{Domain, Protocol, Socket, Type};

    /// time over UDP with the real `rdate` client (`-u`, RFC 868): the
    /// time it reads is the system's.
    #[test]
    fn rdate_reads_the_time_over_udp() {
        let daemon = Daemon::builder().toml(&udp_builtin("time", &[])).start();
        let port = daemon.port(0).to_string();
        let out: Run = crate::common::run_command(
            std::process::Command::new("rdate")
                .args(["-u", "-p", "-o", &port, "127.0.0.1"])
                .env("TZ", "UTC"),
            WAIT,
        );
        assert!(out.success(), "rdate: {out}\n{}", daemon.report());
        let stdout = out.stdout();
        let text = stdout
            .trim()
            .rsplit('\t')
            .next()
            .unwrap_or_else(|| panic!("rdate's output: {stdout:?}"));
        assert_now(parse_asctime(text), &stdout);
    }

    /// The rules take each datagram's source: one source denied, or past
    /// its `rate_per_source`, gets no answer while another is answered.
    #[test]
    fn rules_decide_per_source() {
        let daemon = Daemon::builder()
            .toml(&three_echoes([
                "deny = [\"127.0.0.2\"]",
                "rate_per_source = { per_second = 0.001, burst = 1 }",
                "",
            ]))
            .start();
        let denied = client(2);
        denied.send_to(b"x", v4(daemon.port(0))).expect("send");
        assert_no_answer(&denied, "from the denied source");
        refusal(&daemon, denied.local_addr().expect("local"), "deny");
        assert_eq!(ask(&client(3), v4(daemon.port(0)), b"3"), b"3");

        let busy = client(4);
        assert_eq!(ask(&busy, v4(daemon.port(1)), b"4"), b"4");
        busy.send_to(b"4", v4(daemon.port(1))).expect("send");
        assert_no_answer(&busy, "past the source's burst");
        refusal(
            &daemon,
            busy.local_addr().expect("local"),
            "rate_per_source",
        );
        assert_eq!(ask(&client(5), v4(daemon.port(1)), b"5"), b"5");
    }

    /// A bare port is one dual-stack socket: answered on ::1 and 127.0.0.1.
    #[test]
    fn a_bare_port_answers_on_ipv6_and_ipv4() {
        let daemon = Daemon::builder().toml(&udp_builtin("echo", &[])).start();
        let port = daemon.port(0);
        let socket6 = client_at(v6(0));
        assert_eq!(ask(&socket6, v6(port), b"six"), b"six");
        assert_eq!(ask(&client(1), v4(port), b"four"), b"four");
        assert_eq!(
            daemon.count(|l| l.contains("listening on")),
            1,
            "{}",
            daemon.report()
        );
    }

    /// A datagram whose source is the port of another of the daemon's UDP
    /// built-ins (two echo services would answer each other forever) gets
    /// no answer: the client shares that port (SO_REUSEADDR, as the
    /// daemon's socket has it).
    #[test]
    fn datagrams_from_another_builtins_port_get_no_answer() {
        let text = format!(
            "{}[[service]]\nname = \"echo2\"\nlisten = {{port1}}\nprotocol = \"udp\"\nbuiltin = \"echo\"\n",
            udp_builtin("echo", &[])
        );
        let daemon = Daemon::builder().toml(&text).start();
        let source = v4(daemon.port(1));
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
        socket.set_reuse_address(true).expect("SO_REUSEADDR");
        socket.bind(&source.into()).expect("bind beside the daemon");
        let socket: UdpSocket = socket.into();
        socket.send_to(b"ping", v4(daemon.port(0))).expect("send");
        assert_no_answer(&socket, "from the other echo's port");
        let line = refusal(&daemon, source, "reflection");
        assert!(
            line.contains("one of this daemon's UDP built-ins"),
            "{line}"
        );
        assert_eq!(ask(&client(1), v4(daemon.port(0)), b"ok"), b"ok");
    }

    /// Sends a UDP datagram to 127.0.0.1:`dest` from 127.0.0.1:`source`
    /// through a raw socket, so that any source port can be written
    /// (0 too, which no socket can bind). Needs root.
    fn forge(source: u16, dest: u16, payload: &[u8]) {
        assert_root("a raw socket");
        let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP)).expect("a raw socket");
        let len = u16::try_from(8 + payload.len()).expect("small");
        let mut packet = Vec::new();
        packet.extend_from_slice(&source.to_be_bytes());
        packet.extend_from_slice(&dest.to_be_bytes());
        packet.extend_from_slice(&len.to_be_bytes());
        // No checksum (0): allowed over IPv4.
        packet.extend_from_slice(&[0, 0]);
        packet.extend_from_slice(payload);
        raw.send_to(&packet, &v4(0).into())
            .expect("send the forged datagram");
    }

    /// Source port 0 (no socket can have it: forged) gets no answer.
    #[test]
    #[ignore = "needs root"]
    fn a_datagram_from_port_0_gets_no_answer() {
        let daemon = Daemon::builder().toml(&udp_builtin("echo", &[])).start();
        forge(0, daemon.port(0), b"zero");
        let line = refusal(&daemon, v4(0), "reflection");
        assert!(line.contains("source port 0"), "{line}");
        assert_eq!(ask(&client(1), v4(daemon.port(0)), b"ok"), b"ok");
    }

    /// An echo to itself (a datagram forged from the service's own
    /// address) is not answered: answered, it would come back as a new
    /// datagram from the same address, forever. The daemon logs it once
    /// and stays idle.
    #[test]
    #[ignore = "needs root"]
    fn an_echo_to_itself_does_not_loop() {
        let daemon = Daemon::builder().toml(&udp_builtin("echo", &[])).start();
        let port = daemon.port(0);
        let cpu = cpu_time(daemon.pid());
        forge(port, port, b"round and round");
        let line = refusal(&daemon, v4(port), "reflection");
        assert!(
            line.contains("one of this daemon's UDP built-ins"),
            "{line}"
        );
        // Looping, the daemon would spend this whole time answering itself.
        let watched = Instant::now();
        while watched.elapsed() < QUIET {
            std::thread::sleep(Duration::from_millis(50));
        }
        let spent = cpu_time(daemon.pid()) - cpu;
        assert!(spent < Duration::from_millis(200), "{spent:?} of CPU");
        assert_eq!(
            daemon.count(|l| l.contains("datagram refused")),
            1,
            "{}",
            daemon.report()
        );
        assert_eq!(ask(&client(1), v4(port), b"ok"), b"ok");
    }

    /// Answered datagrams are not logged (at the default level): a flood
    /// must not flood the log.
    #[test]
    fn answered_datagrams_are_not_logged() {
        let daemon = Daemon::builder().toml(&udp_builtin("echo", &[])).start();
        let dest = v4(daemon.port(0));
        let socket = client(1);
        let before = daemon.lines().len();
        for i in 0..200u32 {
            assert_eq!(ask(&socket, dest, &i.to_be_bytes()), i.to_be_bytes());
        }
        assert_eq!(daemon.lines().len(), before, "{}", daemon.report());
    }

    /// A reload that changes the service's rules keeps its socket: the
    /// same port answers before and after, no listener closes or opens,
    /// and the new rule applies to the next datagram.
    #[test]
    fn reload_changes_a_rule_and_keeps_the_socket() {
        let mut daemon = Daemon::builder().toml(&udp_builtin("echo", &[])).start();
        let dest = v4(daemon.port(0));
        let socket = client(2);
        assert_eq!(ask(&socket, dest, b"before"), b"before");
        let outcome = daemon.reload(&udp_builtin("echo", &["deny = [\"127.0.0.2\"]"]));
        assert!(outcome.contains("reload done"), "{}", daemon.report());
        assert!(has_field(&outcome, "changed", "echo"), "{outcome}");
        assert!(has_field(&outcome, "listeners_closed", "0"), "{outcome}");
        socket.send_to(b"after", dest).expect("send");
        assert_no_answer(&socket, "denied after the reload");
        refusal(&daemon, socket.local_addr().expect("local"), "deny");
        assert_eq!(ask(&client(3), dest, b"other"), b"other");
        assert_eq!(daemon.count(|l| l.contains("listening on")), 1);
    }

    /// A reload that turns the UDP built-in into another built-in gives
    /// the same socket the new service at once.
    #[test]
    fn reload_changes_the_builtin() {
        let mut daemon = Daemon::builder().toml(&udp_builtin("echo", &[])).start();
        let dest = v4(daemon.port(0));
        let socket = client(1);
        assert_eq!(ask(&socket, dest, b"1234"), b"1234");
        let text = udp_builtin("echo", &[]).replace("builtin = \"echo\"", "builtin = \"time\"");
        let outcome = daemon.reload(&text);
        assert!(has_field(&outcome, "listeners_closed", "0"), "{outcome}");
        let answer = ask(&socket, dest, b"1234");
        assert_ne!(answer, b"1234", "still echo");
        assert_eq!(answer.len(), 4);
    }

    /// The stop ends the datagram task at once, even while a client
    /// floods the socket.
    #[test]
    fn stop_exits_promptly_under_a_flood() {
        let mut daemon = Daemon::builder().toml(&udp_builtin("echo", &[])).start();
        let dest = v4(daemon.port(0));
        assert_eq!(ask(&client(1), dest, b"up"), b"up");
        let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flood = {
            let flooding = std::sync::Arc::clone(&flooding);
            std::thread::spawn(move || {
                let socket = client(2);
                while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = socket.send_to(&[0; 64], dest);
                }
            })
        };
        let asked = Instant::now();
        daemon.send_signal(libc::SIGTERM);
        let status = daemon.wait_exit(WAIT);
        let took = asked.elapsed();
        flooding.store(false, std::sync::atomic::Ordering::Relaxed);
        flood.join().expect("flood");
        assert!(status.success(), "{status:?}\n{}", daemon.report());
        assert!(took < Duration::from_secs(2), "the stop took {took:?}");
    }
}
