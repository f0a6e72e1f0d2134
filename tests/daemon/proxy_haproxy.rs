//! HAProxy in front of two wininetd instances (issue 19): one server line
//! with `send-proxy` (v1), the other with `send-proxy-v2`, each with a TCP
//! health check that sends the header too. Clients connect to HAProxy on
//! 127.0.0.1 from 127.0.0.2 and 127.0.0.3.

use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    Daemon, Started, WAIT, connect_from, free_port, lo, read_line, read_to_eof, toml_service,
    toml_str, v4,
};

/// A wininetd instance named `name` behind the proxy: its program says who
/// it is and whom it serves, then echoes.
fn instance(name: &str, version: &str) -> Daemon {
    let script = format!(
        "echo \"instance={name} client=$CLIENT_IP:$CLIENT_PORT proxy=$PROXY_IP\"; exec cat"
    );
    let command = format!("[\"/bin/sh\", \"-c\", {}]", toml_str(&script));
    Daemon::builder()
        .toml(&toml_service(
            name,
            "\"127.0.0.1:{port0}\"",
            &command,
            &[
                &format!("proxy_protocol = \"{version}\""),
                "trusted_proxies = [\"127.0.0.1\"]",
                "deny = [\"127.0.0.3\"]",
            ],
        ))
        .start()
}

/// HAProxy, started in the foreground on `port`, balancing over `a` (v1)
/// and `b` (v2); its stderr goes to `log`.
fn haproxy(port: u16, a: u16, b: u16, dir: &std::path::Path) -> (Started, std::path::PathBuf) {
    let config = dir.join("haproxy.cfg");
    fs::write(
        &config,
        format!(
            "global\n  maxconn 200\n\
             defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 20s\n  timeout server 20s\n  \
             retries 3\n  option redispatch\n\
             frontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\n\
             backend be\n  balance roundrobin\n  \
             server a 127.0.0.1:{a} send-proxy check check-send-proxy inter 200ms fall 2 rise 1\n  \
             server b 127.0.0.1:{b} send-proxy-v2 check check-send-proxy inter 200ms fall 2 rise 1\n"
        ),
    )
    .expect("write haproxy.cfg");
    let log = dir.join("haproxy.log");
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(fs::File::create(dir.join("haproxy.out")).expect("create"))
        .stderr(fs::File::create(&log).expect("create"))
        .spawn()
        .expect("start haproxy (Debian package haproxy; .ci/run installs it)");
    (Started(child), log)
}

/// One session through the proxy from `source`: the program's first line,
/// then `data` echoed back whole, checked byte for byte.
fn session(source: IpAddr, proxy: SocketAddr, data: &[u8]) -> Option<String> {
    let mut stream = connect_from(source, proxy);
    let mut byte = [0; 1];
    // A refused client sees the proxy close with nothing said.
    match stream.read(&mut byte) {
        Ok(1) => {}
        _ => return None,
    }
    let rest = read_line(&mut stream, WAIT);
    let line = format!("{}{rest}", byte[0] as char);
    let writer = {
        let mut stream = stream.try_clone().expect("clone");
        let data = data.to_vec();
        thread::spawn(move || {
            stream.write_all(&data).expect("send through the proxy");
            stream.shutdown(Shutdown::Write).expect("half-close");
        })
    };
    let echoed = read_to_eof(&mut stream, WAIT).expect("the echo");
    writer.join().expect("the writer");
    assert!(
        echoed == data,
        "{line}: the echo differs ({} bytes back)",
        echoed.len()
    );
    Some(line)
}

fn wait_for_text(path: &std::path::Path, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if fs::read_to_string(path).is_ok_and(|t| t.contains(needle)) {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn haproxy_v1_and_v2_carry_the_client_and_fail_over() {
    let mut a = instance("a", "v1");
    let b = instance("b", "v2");
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let (_haproxy, log) = haproxy(port, a.port(0), b.port(0), dir.path());
    let front = v4(port);
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(front).is_err() {
        assert!(Instant::now() < deadline, "haproxy does not listen");
        thread::sleep(Duration::from_millis(20));
    }
    // Both instances pass their health checks (each check is a LOCAL or
    // UNKNOWN header: served as a session of the proxy's own address).
    for daemon in [&a, &b] {
        daemon.wait_for_line("session start", WAIT);
    }

    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let mut served = [0, 0];
    for _ in 0..6 {
        let line = session(lo(2), front, &data).expect("127.0.0.2 is served");
        assert!(line.contains(" client=127.0.0.2:"), "{line}");
        assert!(line.ends_with(" proxy=127.0.0.1"), "{line}");
        if line.starts_with("instance=a ") {
            served[0] += 1;
        } else if line.starts_with("instance=b ") {
            served[1] += 1;
        } else {
            panic!("who served this? {line}");
        }
    }
    assert!(
        served[0] > 0 && served[1] > 0,
        "both instances serve: {served:?}"
    );

    // 127.0.0.3 is denied by both, through the proxy.
    for _ in 0..2 {
        assert_eq!(session(lo(3), front, &data), None, "127.0.0.3 was served");
    }
    let denied = |d: &Daemon| {
        d.count(|l| {
            l.contains("connection refused")
                && l.contains("rule=deny")
                && l.contains("peer=127.0.0.3:")
        })
    };
    let deadline = Instant::now() + WAIT;
    while denied(&a) + denied(&b) < 2 {
        assert!(
            Instant::now() < deadline,
            "no deny lines for 127.0.0.3:\n{}\n{}",
            a.report(),
            b.report()
        );
        thread::sleep(Duration::from_millis(20));
    }

    // Stop one: the health check marks it down, and the other serves all.
    a.send_signal(libc::SIGTERM);
    a.wait_exit(WAIT);
    assert!(
        wait_for_text(&log, "be/a is DOWN", WAIT),
        "haproxy did not mark a down:\n{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    for _ in 0..6 {
        let line = session(lo(2), front, &data).expect("served by the other instance");
        assert!(line.starts_with("instance=b client=127.0.0.2:"), "{line}");
    }
}
