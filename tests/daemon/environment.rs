//! The program's environment, on Linux and Windows alike: the daemon's own
//! plus the connection's addresses, computed per connection (WinInetd set
//! `CLIENT_IP` in its own environment before each start, so concurrent
//! clients could get each other's), and `PWD`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;

use crate::common::{
    Daemon, WAIT, child, child_argv, client_variables, connect, connect_from, connect_v6,
    parse_env, peer_text, read_line, read_to_eof, toml_service, v4, v6,
};

const MODE: &str = "env CLIENT_IP CLIENT_PORT PROTO TCPREMOTEIP TCPREMOTEPORT TCPLOCALIP TCPLOCALPORT WININETD_TEST_INHERITED";

fn env_daemon() -> Daemon {
    Daemon::builder()
        .service("none", &child(MODE))
        .env("WININETD_TEST_INHERITED", "from-the-daemon")
        .start()
}

/// Reads the child's report and checks it against the client's view of the
/// connection.
fn assert_env_matches(mut stream: TcpStream) {
    let client = stream.local_addr().expect("local_addr");
    let server = stream.peer_addr().expect("peer_addr");
    stream.shutdown(Shutdown::Write).expect("half-close");
    let output = read_to_eof(&mut stream, WAIT).expect("the env report");
    let output = String::from_utf8_lossy(&output);
    let env: HashMap<String, String> = parse_env(&output).into_iter().collect();
    let mut expected = client_variables(client, server);
    expected.insert(
        "WININETD_TEST_INHERITED".to_owned(),
        "from-the-daemon".to_owned(),
    );
    assert_eq!(
        env, expected,
        "environment of the child serving {client} (output {output:?})"
    );
}

#[test]
fn ipv4_client_addresses() {
    let daemon = env_daemon();
    let stream = connect(daemon.port(0));
    let client = stream.local_addr().expect("local_addr");
    assert_env_matches(stream);
    let (start, _) = daemon.session_start(client);
    assert!(
        start.contains(&format!("port={}", daemon.port(0))),
        "start line names the port: {start}"
    );
}

/// A second loopback source and destination (127.0.0.2 -> 127.0.0.3), so
/// neither side can be a hard-coded 127.0.0.1.
#[test]
fn ipv4_client_from_another_source_address() {
    let daemon = env_daemon();
    let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let dest = SocketAddr::from(([127, 0, 0, 3], daemon.port(0)));
    let stream = connect_from(source, dest);
    let client = stream.local_addr().expect("local_addr");
    assert_eq!(client.ip(), source, "the client is bound to its source");
    assert_env_matches(stream);
    let (start, _) = daemon.session_start(client);
    assert!(
        start.contains(&format!("peer=127.0.0.2:{}", client.port())),
        "IPv4 peer is logged without ::ffff: {start}"
    );
}

#[test]
fn ipv6_client_addresses() {
    let daemon = env_daemon();
    let stream = connect_v6(daemon.port(0));
    let client = stream.local_addr().expect("local_addr");
    assert_env_matches(stream);
    let (start, _) = daemon.session_start(client);
    assert!(
        start.contains(&format!("peer={}", peer_text(client))) && start.contains("peer=[::1]:"),
        "IPv6 peer in brackets: {start}"
    );
}

/// Clients that connect at the same moment each see their own address:
/// sixteen of them, from as many IPv4 sources and from IPv6.
#[test]
fn concurrent_clients_each_see_their_own_address() {
    const CLIENTS: u8 = 16;
    let daemon = env_daemon();
    let port = daemon.port(0);
    let barrier = Arc::new(Barrier::new(CLIENTS.into()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            let (source, dest) = if i % 4 == 3 {
                (IpAddr::V6(Ipv6Addr::LOCALHOST), v6(port))
            } else {
                (IpAddr::V4(Ipv4Addr::new(127, 0, 1, 10 + i)), v4(port))
            };
            thread::spawn(move || {
                barrier.wait();
                assert_env_matches(connect_from(source, dest));
            })
        })
        .collect();
    let failures = clients.into_iter().filter_map(|c| c.join().err()).count();
    assert_eq!(
        failures, 0,
        "clients that saw a wrong environment (see above)"
    );
    daemon.wait_for_count("`session end`", CLIENTS.into(), WAIT, |l| {
        l.contains("session end")
    });
}

/// Regression (issue 16, item 18): with `working_dir` the program's `PWD`
/// was the daemon's directory, so a shell or a program that trusts `PWD`
/// worked in the wrong place. It is the service's directory now; without
/// `working_dir` it stays the daemon's.
#[test]
fn pwd_is_the_working_dir() {
    let daemon = Daemon::builder()
        .toml(&format!(
            "{}\n{}",
            toml_service(
                "in-dir",
                "{port0}",
                &child_argv(&["env", "PWD"]),
                &["working_dir = '{dir}'"],
            ),
            toml_service("no-dir", "{port1}", &child_argv(&["env", "PWD"]), &[]),
        ))
        .env("PWD", "/daemon/own/dir")
        .start();
    assert_eq!(
        read_line(&mut connect(daemon.port(0)), WAIT),
        format!("PWD={}", daemon.dir().display())
    );
    assert_eq!(
        read_line(&mut connect(daemon.port(1)), WAIT),
        "PWD=/daemon/own/dir"
    );
}
