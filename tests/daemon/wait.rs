//! Wait services (`wait = true`, and every UDP service with a command): the
//! program takes the listening or bound socket itself. On Linux and
//! Windows alike: the test child served a datagram and connections from
//! the inherited socket, with the first source's variables (and on Unix
//! fd 3 and `LISTEN_*`), the socket not watched while its program runs and
//! watched again after, and the backoff of a program that never reads.
//! What needs Linux is in the `linux` module at the foot: real programs
//! (`in.tftpd` with the `tftp` client from several sources, in a network
//! namespace of the daemon's own; `systemd-socket-proxyd`, written for
//! socket activation), refusals, reload, stop, `max_lifetime`, the caps.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::common::{
    Daemon, SOCKET_ACTIVATION, WAIT, child_argv, connect, field, has_token, peer_text, pid_in,
    read_line, toml_service, v4,
};

/// A UDP client bound to `source` (its port chosen by the system), whose
/// reads wait at most [`WAIT`].
fn udp_client(source: IpAddr) -> UdpSocket {
    let client = UdpSocket::bind(SocketAddr::new(source, 0))
        .unwrap_or_else(|e| panic!("bind a UDP client to {source}: {e}"));
    client.set_read_timeout(Some(WAIT)).expect("read timeout");
    client
}

/// Sends `payload` to `to` and returns the answer (panics after [`WAIT`]).
fn exchange(client: &UdpSocket, to: SocketAddr, payload: &str) -> String {
    client.send_to(payload.as_bytes(), to).expect("send");
    let mut buf = [0u8; 4096];
    let (n, from) = client
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("no answer to {payload:?} from {to}: {e}"));
    assert_eq!(from.port(), to.port(), "answered from the service's socket");
    String::from_utf8_lossy(&buf[..n]).trim_end().to_owned()
}

/// A UDP wait service named `name` on `{port0}` running the test child
/// with `args`, and `extra` lines.
fn udp_service(name: &str, args: &[&str], extra: &[&str]) -> String {
    let mut lines = vec!["protocol = \"udp\""];
    lines.extend(extra);
    toml_service(name, "{port0}", &child_argv(args), &lines)
}

/// The `session start` lines of `service` so far.
fn starts(daemon: &Daemon, service: &str) -> usize {
    let token = format!("service={service}");
    daemon.count(|l| l.contains("session start") && has_token(l, &token))
}

/// The pid of the `session start` line of `service` whose peer is `peer`.
fn session_pid(daemon: &Daemon, service: &str, peer: &str) -> u32 {
    let (service, peer) = (format!("service={service}"), format!("peer={peer}"));
    let line = daemon.wait_for(&format!("`session start` {service} {peer}"), WAIT, |l| {
        l.contains("session start") && has_token(l, &service) && has_token(l, &peer)
    });
    pid_in(&line, "pid")
}

/// What the test child's `serve-socket` answered for the socket: fd 3 and
/// `LISTEN_*` where the system passes them, nothing of the kind elsewhere.
fn assert_socket_activation(answer: &str, name: &str) {
    if SOCKET_ACTIVATION {
        assert_eq!(field(answer, "fd3"), Some("same"), "{answer}");
        assert_eq!(field(answer, "blocking"), Some("yes"), "{answer}");
        assert_eq!(field(answer, "LISTEN_FDS"), Some("1"), "{answer}");
        assert_eq!(field(answer, "LISTEN_FDNAMES"), Some(name), "{answer}");
        let pid = pid_in(answer, "pid").to_string();
        assert_eq!(
            field(answer, "LISTEN_PID"),
            Some(pid.as_str()),
            "LISTEN_PID is the program's own pid: {answer}"
        );
    } else {
        assert_eq!(field(answer, "fd3"), Some("none"), "{answer}");
        for name in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
            assert_eq!(field(answer, name), None, "{answer}");
        }
    }
}

#[test]
fn a_udp_program_reads_the_bound_socket_with_the_first_datagrams_source() {
    // It serves two datagrams, after half a second: both are sent before
    // it reads one.
    let daemon = Daemon::builder()
        .toml(&udp_service(
            "udp-wait",
            &["serve-socket", "2", "0", "500"],
            &[],
        ))
        .start();
    let port = daemon.port(0);
    let client = udp_client(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let me = client.local_addr().expect("local address");

    client.send_to(b"first", v4(port)).expect("send");
    let pid = session_pid(&daemon, "udp-wait", &peer_text(me));
    let answer = exchange(&client, v4(port), "second");
    assert!(answer.starts_with("served 1 "), "{answer}");
    assert_eq!(field(&answer, "got"), Some("first"), "{answer}");
    assert_eq!(pid_in(&answer, "pid"), pid, "{answer}");
    assert_eq!(field(&answer, "PROTO"), Some("UDP"), "{answer}");
    assert_eq!(field(&answer, "CLIENT_IP"), Some("127.0.0.1"), "{answer}");
    let my_port = me.port().to_string();
    assert_eq!(field(&answer, "CLIENT_PORT"), Some(my_port.as_str()));
    assert_eq!(field(&answer, "UDPREMOTEIP"), Some("127.0.0.1"));
    assert_eq!(field(&answer, "UDPREMOTEPORT"), Some(my_port.as_str()));
    let port_text = port.to_string();
    assert_eq!(field(&answer, "UDPLOCALPORT"), Some(port_text.as_str()));
    for absent in ["TCPREMOTEIP", "TCPLOCALIP"] {
        assert_eq!(field(&answer, absent), None, "{answer}");
    }
    assert_socket_activation(&answer, "udp-wait");

    // The daemon did not watch the socket while its program ran: the
    // second datagram, waiting all along, is the same program's.
    let mut buf = [0u8; 4096];
    let (n, _) = client.recv_from(&mut buf).expect("the second answer");
    let second = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(second.starts_with("served 2 "), "{second}");
    assert_eq!(field(&second, "got"), Some("second"), "{second}");
    assert_eq!(pid_in(&second, "pid"), pid, "{second}");
    daemon.session_end(pid);
    assert_eq!(starts(&daemon, "udp-wait"), 1, "{}", daemon.report());

    // Watched again once the program is gone: the next datagram starts
    // another.
    let again = exchange(&client, v4(port), "third");
    assert_eq!(field(&again, "got"), Some("third"), "{again}");
    assert_ne!(pid_in(&again, "pid"), pid, "a new program: {again}");
}

#[test]
fn a_tcp_program_accepts_on_the_listening_socket_and_is_alone_while_it_runs() {
    // It serves two connections, after half a second: both are pending
    // before it accepts one.
    let daemon = Daemon::builder()
        .toml(&toml_service(
            "tcp-wait",
            "{port0}",
            &child_argv(&["serve-socket", "2", "0", "500"]),
            &["wait = true"],
        ))
        .start();
    let port = daemon.port(0);
    let send = |text: &str| {
        let mut stream = connect(port);
        stream
            .write_all(format!("{text}\n").as_bytes())
            .expect("write");
        stream
    };
    let mut one = send("one");
    let mut two = send("two");
    let first = read_line(&mut one, WAIT);
    assert!(first.starts_with("served 1 "), "{first}");
    assert_eq!(field(&first, "got"), Some("one"), "{first}");
    assert_eq!(field(&first, "PROTO"), Some("TCP"), "{first}");
    let port_text = port.to_string();
    assert_eq!(field(&first, "TCPLOCALPORT"), Some(port_text.as_str()));
    // No client is known before the program accepts.
    for absent in ["CLIENT_IP", "CLIENT_PORT", "TCPREMOTEIP", "TCPREMOTEPORT"] {
        assert_eq!(field(&first, absent), None, "{first}");
    }
    assert_socket_activation(&first, "tcp-wait");
    let pid = pid_in(&first, "pid");

    // The daemon does not watch the socket while its program runs: the
    // second connection, pending all along, is the same program's.
    let second = read_line(&mut two, WAIT);
    assert!(second.starts_with("served 2 "), "{second}");
    assert_eq!(pid_in(&second, "pid"), pid, "{second}");
    daemon.session_end(pid);
    assert_eq!(starts(&daemon, "tcp-wait"), 1, "{}", daemon.report());

    // And watches it again once the program has exited.
    let third = read_line(&mut send("three"), WAIT);
    assert!(third.starts_with("served 1 "), "{third}");
    assert_ne!(pid_in(&third, "pid"), pid, "{third}");
}

/// Regression test for the spin of a program that exits at once without
/// reading its datagram: started again at once, forever (BSD inetd calls
/// it "looping" and switches the service off for ten minutes; xinetd's
/// `cps` does the same). Its restarts back off, logged once, and go on.
#[test]
fn a_program_that_never_reads_is_restarted_with_a_growing_pause_never_switched_off() {
    let daemon = Daemon::builder()
        .toml(&udp_service("spin", &["exit", "0"], &[]))
        .start();
    let client = udp_client(IpAddr::V4(Ipv4Addr::LOCALHOST));
    client
        .send_to(b"nobody reads this", v4(daemon.port(0)))
        .expect("send");
    daemon.wait_for_line("service=spin", WAIT);
    let window = Duration::from_secs(3);
    let began = Instant::now();
    std::thread::sleep(window);
    let started = starts(&daemon, "spin");
    // Doubling from 10 ms, about 9 starts fit in 3 s; without a pause,
    // thousands.
    assert!(
        (3..=20).contains(&started),
        "{started} starts in {:?}:\n{}",
        began.elapsed(),
        daemon.report()
    );
    let backoff = |l: &str| l.contains("program restarts back off");
    let line = daemon.wait_for_line("program restarts back off", WAIT);
    assert!(has_token(&line, "service=spin"), "{line}");
    assert!(line.contains("first datagram unread"), "{line}");
    // Never switched off: it is started again, and said once.
    daemon.wait_for_count("starting it again", started + 1, WAIT, |l| {
        l.contains("session start") && has_token(l, "service=spin")
    });
    assert_eq!(daemon.count(backoff), 1, "{}", daemon.report());
}

#[cfg(target_os = "linux")]
mod linux {
    use std::fs;
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::path::Path;
    use std::process::Command;
    use std::thread;
    use std::time::Duration;

    use super::{exchange, session_pid, starts, udp_client, udp_service};
    use crate::common::{
        CHILD, Daemon, WAIT, assert_root, child_argv, connect, field, has_token, is_alive, lo,
        pid_in, read_line, run_command, toml_service, toml_str, v4, wait_gone,
    };

    /// Whether nothing comes to `client` within `period`.
    fn silent(client: &std::net::UdpSocket, period: Duration) -> bool {
        client.set_read_timeout(Some(period)).expect("read timeout");
        let mut buf = [0u8; 4096];
        let got = client.recv_from(&mut buf);
        client.set_read_timeout(Some(WAIT)).expect("read timeout");
        got.is_err()
    }

    /// Regression test for a refused datagram left in the queue (the next
    /// program would have read it) or answered: it is read and dropped,
    /// logged with its rule, and the next admitted datagram is the
    /// program's first.
    #[test]
    fn a_refused_datagram_is_dropped_and_logged_with_its_rule() {
        let daemon = Daemon::builder()
            .toml(&udp_service(
                "guarded",
                &["serve-socket", "1"],
                &[
                    "deny = [\"127.0.0.3\"]",
                    "rate_per_source = { per_second = 0.01, burst = 1 }",
                ],
            ))
            .start();
        let to = v4(daemon.port(0));
        let denied = udp_client(lo(3));
        denied.send_to(b"from-denied", to).expect("send");
        let peer = format!("peer={}", denied.local_addr().expect("addr"));
        let line = daemon.wait_for("`datagram refused` from .3", WAIT, |l| {
            l.contains("datagram refused") && has_token(l, &peer)
        });
        assert!(has_token(&line, "rule=deny"), "{line}");
        assert!(silent(&denied, Duration::from_millis(300)), "answered");

        let allowed = udp_client(lo(2));
        let answer = exchange(&allowed, to, "from-allowed");
        assert_eq!(field(&answer, "got"), Some("from-allowed"), "{answer}");
        assert_eq!(field(&answer, "CLIENT_IP"), Some("127.0.0.2"), "{answer}");
        let pid = pid_in(&answer, "pid");
        daemon.session_end(pid);
        assert_eq!(starts(&daemon, "guarded"), 1, "{}", daemon.report());

        // The source's rate: its second datagram in a row is refused.
        allowed.send_to(b"too-soon", to).expect("send");
        let peer = format!("peer={}", allowed.local_addr().expect("addr"));
        let line = daemon.wait_for("`datagram refused` by rate_per_source", WAIT, |l| {
            l.contains("datagram refused") && has_token(l, &peer)
        });
        assert!(has_token(&line, "rule=rate_per_source"), "{line}");
        assert!(silent(&allowed, Duration::from_millis(300)), "answered");
    }

    #[test]
    fn a_program_that_serves_again_ends_the_backoff() {
        let dir = tempfile::tempdir().expect("temp dir");
        let flag = dir.path().join("serve");
        let script = format!(
            "test -e {} && exec {CHILD} serve-socket 1; exit 1",
            flag.display()
        );
        let daemon = Daemon::builder()
            .toml(&toml_service(
                "flaky",
                "{port0}",
                &format!("[\"sh\", \"-c\", {}]", toml_str(&script)),
                &["protocol = \"udp\""],
            ))
            .start();
        let client = udp_client(lo(1));
        client.send_to(b"first", v4(daemon.port(0))).expect("send");
        let line = daemon.wait_for_line("program restarts back off", WAIT);
        assert!(line.contains("first datagram unread"), "{line}");
        fs::write(&flag, "").expect("create the flag");
        // The next start (after a pause of a few seconds at most) serves
        // the datagram that waited all along.
        let mut buf = [0u8; 4096];
        let (n, _) = client.recv_from(&mut buf).expect("the answer");
        let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert_eq!(field(&answer, "got"), Some("first"), "{answer}");
        let line = daemon.wait_for_line("no longer back off", WAIT);
        assert!(has_token(&line, "service=flaky"), "{line}");
        assert!(
            field(&line, "failed_starts").is_some_and(|n| n.parse::<u32>().unwrap_or(0) >= 2),
            "{line}"
        );
    }

    #[test]
    fn a_rate_limited_tcp_wait_service_delays_its_start() {
        let daemon = Daemon::builder()
            .toml(&toml_service(
                "slow",
                "{port0}",
                &child_argv(&["serve-socket", "1"]),
                &["wait = true", "rate = { per_second = 0.5, burst = 1 }"],
            ))
            .start();
        let port = daemon.port(0);
        let ask = |text: &str| {
            let mut stream = connect(port);
            stream
                .write_all(format!("{text}\n").as_bytes())
                .expect("write");
            read_line(&mut stream, WAIT)
        };
        let first = ask("one");
        daemon.session_end(pid_in(&first, "pid"));
        // The bucket is empty for two seconds: the connection waits in the
        // backlog, and is served when the next start is allowed.
        let second = ask("two");
        assert_eq!(field(&second, "got"), Some("two"), "{second}");
        let line = daemon.wait_for_line("program start delayed", WAIT);
        assert!(has_token(&line, "rule=rate"), "{line}");
    }

    /// Reload keeps a wait service's socket, and never ends its running
    /// program: the program goes on reading the same socket; the next
    /// program is the new command's.
    #[test]
    fn reload_keeps_the_socket_and_the_running_program() {
        let config = |args: &[&str]| udp_service("kept", args, &[]);
        let mut daemon = Daemon::builder()
            .toml(&config(&["serve-socket", "2"]))
            .start();
        let to = v4(daemon.port(0));
        let client = udp_client(lo(1));
        let first = exchange(&client, to, "before");
        let pid = pid_in(&first, "pid");

        let outcome = daemon.reload(&config(&["serve-socket", "1", "0"]));
        assert!(outcome.contains("reload done"), "{outcome}");
        assert!(has_token(&outcome, "changed=kept"), "{outcome}");
        assert!(is_alive(pid), "the running program was ended");

        let second = exchange(&client, to, "during");
        assert!(second.starts_with("served 2 "), "{second}");
        assert_eq!(pid_in(&second, "pid"), pid, "{second}");
        daemon.session_end(pid);

        let third = exchange(&client, to, "after");
        assert!(third.starts_with("served 1 "), "{third}");
        let next = pid_in(&third, "pid");
        assert_ne!(next, pid);
        // The new command serves one datagram and exits.
        daemon.session_end(next);
    }

    /// Regression test for a reload that turns a service into a wait
    /// service on the same port (or back): its socket was kept with the
    /// task of the old kind, which went on accepting and handed the
    /// program a connection where it expects the listening socket.
    #[test]
    fn reload_between_nowait_and_wait_changes_how_the_socket_is_served() {
        let nowait = toml_service("kind", "{port0}", &child_argv(&["env", "PROTO"]), &[]);
        let wait = toml_service(
            "kind",
            "{port0}",
            &child_argv(&["serve-socket", "1"]),
            &["wait = true"],
        );
        let mut daemon = Daemon::builder().toml(&nowait).start();
        let port = daemon.port(0);
        let ask = |text: &str| {
            let mut stream = connect(port);
            stream
                .write_all(format!("{text}\n").as_bytes())
                .expect("write");
            read_line(&mut stream, WAIT)
        };
        assert_eq!(ask("nowait"), "PROTO=TCP");
        let outcome = daemon.reload(&wait);
        assert!(outcome.contains("reload done"), "{outcome}");
        let served = ask("wait");
        assert!(served.starts_with("served 1 "), "{served}");
        daemon.session_end(pid_in(&served, "pid"));
        let outcome = daemon.reload(&nowait);
        assert!(outcome.contains("reload done"), "{outcome}");
        assert_eq!(ask("nowait again"), "PROTO=TCP");
    }

    /// A reload that removes a wait service never ends its program, which
    /// keeps its socket until it exits; the daemon's copy is closed.
    #[test]
    fn a_reload_that_removes_a_wait_service_leaves_its_program_running() {
        let mut daemon = Daemon::builder()
            .toml(&udp_service("gone", &["serve-socket", "2"], &[]))
            .start();
        let to = v4(daemon.port(0));
        let client = udp_client(lo(1));
        let first = exchange(&client, to, "one");
        let pid = pid_in(&first, "pid");
        // (`{port0}` keeps its number: the new port is `{port1}`.)
        let other = toml_service("other", "{port1}", &child_argv(&["echo"]), &[]);
        let outcome = daemon.reload(&format!("# was {{port0}}\n{other}"));
        assert!(has_token(&outcome, "removed=gone"), "{outcome}");
        assert!(is_alive(pid), "the running program was ended");
        let second = exchange(&client, to, "two");
        assert_eq!(pid_in(&second, "pid"), pid, "{second}");
        daemon.session_end(pid);
        // Nothing holds the socket any more.
        client.send_to(b"three", to).expect("send");
        assert!(silent(&client, Duration::from_millis(500)), "answered");
        assert_eq!(starts(&daemon, "gone"), 1, "{}", daemon.report());
    }

    /// Also a regression test for a stop that comes right at a program's
    /// start (here the signal follows the `session start` line at once):
    /// on Linux the program may not lead its process group yet, and the
    /// SIGTERM to the group was lost; it was killed only after the grace
    /// (about one run in four failed so).
    #[test]
    fn stop_ends_a_running_wait_program_like_any_session() {
        let mut daemon = Daemon::builder()
            .toml(&toml_service(
                "busy",
                "{port0}",
                "[\"sleep\", \"60\"]",
                &["protocol = \"udp\""],
            ))
            .start();
        let client = udp_client(lo(1));
        client.send_to(b"wake", v4(daemon.port(0))).expect("send");
        let me = client.local_addr().expect("addr");
        let pid = session_pid(&daemon, "busy", &me.to_string());
        daemon.send_signal(libc::SIGTERM);
        daemon.wait_exit(WAIT);
        wait_gone(pid, WAIT);
        let end = daemon.session_end(pid);
        assert!(end.contains("signal 15"), "{end}");
    }

    #[test]
    fn max_lifetime_ends_a_wait_session_and_the_socket_is_watched_again() {
        let daemon = Daemon::builder()
            .toml(&toml_service(
                "short",
                "{port0}",
                "[\"sleep\", \"60\"]",
                &["protocol = \"udp\"", "max_lifetime = 1"],
            ))
            .start();
        let client = udp_client(lo(1));
        client.send_to(b"wake", v4(daemon.port(0))).expect("send");
        let me = client.local_addr().expect("addr");
        let pid = session_pid(&daemon, "short", &me.to_string());
        daemon.wait_for_line("session reached max_lifetime", WAIT);
        daemon.session_end(pid);
        wait_gone(pid, WAIT);
        // The datagram is still unread: the next program gets it.
        daemon.wait_for_count("a second session", 2, WAIT, |l| {
            l.contains("session start") && has_token(l, "service=short")
        });
    }

    /// A wait session holds a slot of the daemon's cap like any: at the cap
    /// its program waits for one (the datagram waits in the queue).
    #[test]
    fn a_wait_session_counts_against_the_daemons_cap() {
        let config = toml_service("hold", "{port0}", &child_argv(&["pid"]), &[])
            + &udp_service("waits", &["serve-socket", "1"], &[]).replace("{port0}", "{port1}");
        let daemon = Daemon::builder()
            .toml(&config)
            .args(&["--max-sessions", "1"])
            .start();
        let mut holder = connect(daemon.port(0));
        let line = read_line(&mut holder, WAIT);
        assert!(line.starts_with("pid="), "{line}");
        let client = udp_client(lo(1));
        client.send_to(b"queued", v4(daemon.port(1))).expect("send");
        assert!(
            silent(&client, Duration::from_millis(500)),
            "served past the cap"
        );
        holder
            .shutdown(Shutdown::Write)
            .expect("end the first session");
        let mut buf = [0u8; 4096];
        let (n, _) = client
            .recv_from(&mut buf)
            .expect("served once a slot is free");
        let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert_eq!(field(&answer, "got"), Some("queued"), "{answer}");
    }

    // ---------------------------------------------------------------------
    // Real programs
    // ---------------------------------------------------------------------

    /// Bytes that are not text and not a repetition: position-dependent.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| {
                let i = i as u32;
                (i.wrapping_mul(2_654_435_761).rotate_left(7) as u8) ^ seed
            })
            .collect()
    }

    /// The source addresses the tftp clients send from: in the daemon's
    /// network namespace, each has a route of its own whose preferred
    /// source is itself, so a client that sends to 127.0.0.N (the `tftp`
    /// client cannot bind) sends from it.
    const SOURCES: [u8; 5] = [2, 3, 4, 5, 9];
    /// The source the tftp service denies.
    const DENIED: u8 = 9;

    /// Runs `tftp` in the network namespace of the daemon `pid` against
    /// 127.0.0.`n` (and so from it) on `port`, in `dir`, with the one
    /// command `command`; ended after `limit` seconds.
    fn tftp(
        (pid, port): (u32, u16),
        n: u8,
        dir: &Path,
        command: &str,
        limit: u32,
    ) -> crate::common::Run {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/proc/{pid}/ns/net"))
            .args(["timeout", &limit.to_string(), "tftp", "-m", "binary"])
            .arg(lo(n).to_string())
            .arg(port.to_string())
            .arg("-c")
            .args(command.split(' '))
            .current_dir(dir);
        run_command(&mut cmd, WAIT * 2)
    }

    /// in.tftpd (tftpd-hpa) in UDP wait mode, as inetd runs it, and the
    /// real `tftp` client (tftp-hpa): files fetched and put byte for byte,
    /// by several clients at once from different sources; a denied source
    /// refused before any program starts; the next request after the
    /// program's exit starts it again.
    #[test]
    #[ignore = "needs root"]
    fn tftpd_serves_tftp_clients_from_several_sources_at_once() {
        assert_root("a network namespace for the daemon");
        for tool in ["/usr/sbin/in.tftpd", "/usr/bin/tftp", "/usr/bin/nsenter"] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: install tftpd-hpa, tftp-hpa and util-linux (.ci/run does)"
            );
        }
        let served = tempfile::tempdir().expect("served dir");
        let files: Vec<(String, Vec<u8>)> = [0, 511, 512, 100_000, 1_500_000]
            .iter()
            .enumerate()
            .map(|(i, &len)| (format!("file{i}.bin"), pattern(len, i as u8)))
            .collect();
        for (name, bytes) in &files {
            fs::write(served.path().join(name), bytes).expect("write a served file");
        }
        let routes: String = SOURCES
            .iter()
            .map(|n| {
                format!("ip route add local 127.0.0.{n} dev lo src 127.0.0.{n} table local && ")
            })
            .collect();
        let setup = format!("ip link set lo up && {routes}exec \"$0\" \"$@\"");
        let command = format!(
            "[\"/usr/sbin/in.tftpd\", \"--secure\", \"--create\", \"--user\", \"root\", \"--timeout\", \"2\", {}]",
            toml_str(&served.path().display().to_string())
        );
        let daemon = Daemon::builder()
            .prefix(&["unshare", "--net", "sh", "-c", &setup])
            .toml(&toml_service(
                "tftp",
                "{port0}",
                &command,
                &[
                    "protocol = \"udp\"",
                    &format!("deny = [\"127.0.0.{DENIED}\"]"),
                ],
            ))
            .start();

        // A denied source: its request is dropped before any program runs.
        let denied_dir = tempfile::tempdir().expect("client dir");
        let server = (daemon.pid(), daemon.port(0));
        // Its client gives up after 3 s (before it sends again).
        let run = tftp(server, DENIED, denied_dir.path(), "get file1.bin got", 3);
        let refused = daemon.wait_for_line("datagram refused", WAIT);
        assert!(has_token(&refused, "rule=deny"), "{refused}");
        assert!(
            refused.contains(&format!("peer=127.0.0.{DENIED}:")),
            "{refused}"
        );
        let got = fs::read(denied_dir.path().join("got")).unwrap_or_default();
        assert!(got.is_empty(), "a denied client got the file: {run}");
        assert_eq!(starts(&daemon, "tftp"), 0, "{}", daemon.report());

        // Several clients at once, from .2 .3 .4 .5: gets and a put.
        let upload = pattern(300_000, 0xA5);
        let clients: Vec<_> = SOURCES
            .iter()
            .filter(|&&n| n != DENIED)
            .enumerate()
            .map(|(i, &n)| {
                let dir = tempfile::tempdir().expect("client dir");
                let (name, bytes) = files[(i + 1) % files.len()].clone();
                let upload = upload.clone();
                thread::spawn(move || {
                    let cmd = |command: &str| tftp(server, n, dir.path(), command, 20);
                    let run = cmd(&format!("get {name} fetched"));
                    let fetched = fs::read(dir.path().join("fetched")).unwrap_or_default();
                    assert!(
                        fetched == bytes,
                        "127.0.0.{n}: {name} came back as {} bytes of {}: {run}",
                        fetched.len(),
                        bytes.len()
                    );
                    if n == 4 {
                        fs::write(dir.path().join("up.bin"), &upload).expect("write");
                        let run = cmd("put up.bin uploaded.bin");
                        assert!(run.success(), "put: {run}");
                    }
                    n
                })
            })
            .collect();
        let mut done = Vec::new();
        for client in clients {
            done.push(
                client
                    .join()
                    .unwrap_or_else(|_| panic!("{}", daemon.report())),
            );
        }
        assert_eq!(done.len(), 4);
        let uploaded = fs::read(served.path().join("uploaded.bin")).expect("the put file");
        assert!(uploaded == upload, "the put file differs");
        // The program was started for one of the sources, and only by the
        // daemon's first datagram: the rest it read itself.
        let line = daemon.wait_for_line("session start", WAIT);
        assert!(
            SOURCES[..4]
                .iter()
                .any(|n| line.contains(&format!("peer=127.0.0.{n}:"))),
            "{line}"
        );
        // in.tftpd exits after two idle seconds; the next request starts it
        // again.
        let pid = pid_in(&line, "pid");
        daemon.session_end(pid);
        let dir = tempfile::tempdir().expect("client dir");
        let run = tftp(server, 5, dir.path(), "get file4.bin again", 20);
        let again = fs::read(dir.path().join("again")).unwrap_or_default();
        assert!(again == files[4].1, "the second program's transfer: {run}");
        // Started by the daemon again, for .5's request.
        daemon.wait_for("a session start for 127.0.0.5", WAIT, |l| {
            l.contains("session start") && l.contains(" peer=127.0.0.5:")
        });
        assert_eq!(starts(&daemon, "tftp"), 2, "{}", daemon.report());
    }

    /// A backend for the proxy: for each connection, reads `len` bytes and
    /// sends back each byte plus one, then closes.
    fn backend(len: usize, connections: usize) -> (u16, thread::JoinHandle<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the backend");
        let port = listener.local_addr().expect("addr").port();
        let handle = thread::spawn(move || {
            let mut served = 0;
            for stream in listener.incoming().take(connections) {
                let mut stream = stream.expect("accept");
                stream.set_read_timeout(Some(WAIT)).expect("timeout");
                let mut data = vec![0u8; len];
                stream.read_exact(&mut data).expect("the client's bytes");
                let answer: Vec<u8> = data.iter().map(|b| b.wrapping_add(1)).collect();
                stream.write_all(&answer).expect("answer");
                served += 1;
            }
            served
        });
        (port, handle)
    }

    /// Sends `bytes` through the proxy on `port` and returns what comes
    /// back.
    fn through(port: u16, bytes: &[u8]) -> Vec<u8> {
        let mut stream = TcpStream::connect(v4(port)).expect("connect");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        let writer = {
            let mut stream = stream.try_clone().expect("clone");
            let bytes = bytes.to_vec();
            thread::spawn(move || stream.write_all(&bytes).expect("send"))
        };
        let mut back = vec![0u8; bytes.len()];
        stream.read_exact(&mut back).expect("the answer");
        writer.join().expect("writer");
        back
    }

    /// systemd-socket-proxyd, written for socket activation (it takes its
    /// socket from fd 3 only if `LISTEN_PID` is its own pid), served in TCP
    /// wait mode: bytes both ways, two clients by one program, and a new
    /// program once it has exited on its idle timeout.
    #[test]
    fn a_socket_activated_proxy_serves_in_tcp_wait_mode() {
        let proxyd = Path::new("/lib/systemd/systemd-socket-proxyd");
        assert!(
            proxyd.exists(),
            "{} is missing: install systemd (.ci/run does)",
            proxyd.display()
        );
        const LEN: usize = 300_000;
        let (backend_port, backend) = backend(LEN, 3);
        let command = format!(
            "[{}, \"--exit-idle-time=2s\", \"127.0.0.1:{backend_port}\"]",
            toml_str(&proxyd.display().to_string())
        );
        let daemon = Daemon::builder()
            .toml(&toml_service(
                "proxy",
                "{port0}",
                &command,
                &["wait = true", "stderr = \"log\""],
            ))
            .start();
        let port = daemon.port(0);
        let sent = pattern(LEN, 7);
        let expected: Vec<u8> = sent.iter().map(|b| b.wrapping_add(1)).collect();
        let first = through(port, &sent);
        assert!(first == expected, "the first client's bytes differ");
        let start = daemon.wait_for_line("session start", WAIT);
        let pid = pid_in(&start, "pid");
        let second = through(port, &sent);
        assert!(second == expected, "the second client's bytes differ");
        assert_eq!(starts(&daemon, "proxy"), 1, "{}", daemon.report());
        let end = daemon.session_end(pid);
        assert!(end.contains("exit 0"), "{end}");
        let third = through(port, &sent);
        assert!(third == expected, "the third client's bytes differ");
        assert_eq!(backend.join().expect("backend"), 3);
        daemon.wait_for_count("a second program", 2, WAIT, |l| {
            l.contains("session start") && has_token(l, "service=proxy")
        });
    }
}
