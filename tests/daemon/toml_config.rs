//! The extended config format (a file named `*.toml`): each field has a test
//! that fails if the daemon ignores it, `[defaults]` and the global settings,
//! and `--check`'s `FILE:LINE:COL` diagnostics. Admission and reload have
//! their own modules; these tests only show that each field takes effect.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use wininetd::config::bounds;

use crate::common::{
    Attempt, CHILD, DAEMON, Daemon, LoopbackV6, TestUser, WAIT, assert_silent,
    assert_stderr_logged, attempt, child_argv, connect, connect_to, connection_refused, describe,
    field, has_field, has_token, is_alive, is_root, number_after, parse_json, peer_text, read_line,
    read_to_eof, request, toml_service, toml_str, v4, v6, wait_gone,
};

/// 127.0.0.`n`: every 127/8 address is on `lo`, so tests can connect from
/// several IPv4 sources.
fn lo(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// Sends `input` to `addr`, half-closes, and returns the whole answer.
fn request_to(addr: SocketAddr, input: &[u8]) -> String {
    let mut stream = connect_to(addr);
    stream.write_all(input).expect("send the request");
    stream.shutdown(Shutdown::Write).expect("half-close");
    let data = read_to_eof(&mut stream, WAIT).expect("read the answer");
    String::from_utf8_lossy(&data).into_owned()
}

/// The first line of a session on `port` whose child prints one line and
/// waits (or exits), e.g. `cwd`, `sockopts`.
fn first_line(port: u16) -> String {
    let mut stream = connect(port);
    read_line(&mut stream, WAIT)
}

/// The `pid` child of this module's limit tests.
fn pid_child() -> String {
    child_argv(&["pid"])
}

// ---------------------------------------------------------------------------
// name, listen, command
// ---------------------------------------------------------------------------

/// `name` is what the session lines call the service.
#[test]
fn name_appears_in_session_lines() {
    let daemon = Daemon::builder()
        .toml(&toml_service(
            "greeter-7",
            "{port0}",
            &child_argv(&["echo"]),
            &[],
        ))
        .start();
    let mut stream = connect(daemon.port(0));
    let client = stream.local_addr().expect("local_addr");
    stream.write_all(b"hello\n").expect("send");
    stream.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(read_to_eof(&mut stream, WAIT).expect("echo"), b"hello\n");
    let (start, pid) = daemon.session_start(client);
    assert!(has_field(&start, "service", "greeter-7"), "{start}");
    let end = daemon.session_end(pid);
    assert!(has_field(&end, "service", "greeter-7"), "{end}");
}

/// An IPv4 address alone: served there, refused on [::1] and on another
/// loopback address (so it is not the wildcard either).
#[test]
fn listen_on_an_ipv4_address_only() {
    let daemon = Daemon::builder()
        .toml(&toml_service(
            "v4",
            "\"127.0.0.1:{port0}\"",
            &child_argv(&["echo"]),
            &[],
        ))
        .start();
    let port = daemon.port(0);
    assert_eq!(request_to(v4(port), b"v4\n"), "v4\n");
    assert!(
        connection_refused(v6(port)),
        "[::1]:{port} is not listened on"
    );
    assert!(
        connection_refused(SocketAddr::new(lo(2), port)),
        "127.0.0.2:{port} is not listened on"
    );
}

#[test]
fn listen_on_an_ipv6_address_only() {
    let daemon = Daemon::builder()
        .toml(&toml_service(
            "v6",
            "\"[::1]:{port0}\"",
            &child_argv(&["echo"]),
            &[],
        ))
        .start();
    let port = daemon.port(0);
    assert_eq!(request_to(v6(port), b"v6\n"), "v6\n");
    assert!(
        connection_refused(v4(port)),
        "127.0.0.1:{port} is not listened on"
    );
}

/// A bare port, as a string or an integer, is every address: IPv4 and IPv6.
#[test]
fn listen_on_a_bare_port_serves_both_families() {
    let config = [
        toml_service("as-string", "\"{port0}\"", &child_argv(&["echo"]), &[]),
        toml_service("as-integer", "{port1}", &child_argv(&["echo"]), &[]),
    ]
    .concat();
    let daemon = Daemon::builder().toml(&config).start();
    for port in [daemon.port(0), daemon.port(1)] {
        assert_eq!(request_to(v4(port), b"four\n"), "four\n", "port {port}");
        assert_eq!(request_to(v6(port), b"six\n"), "six\n", "port {port}");
    }
}

/// Two addresses: both served, and nothing else.
#[test]
fn listen_on_two_addresses() {
    let daemon = Daemon::builder()
        .toml(&toml_service(
            "both",
            "[\"127.0.0.1:{port0}\", \"[::1]:{port0}\"]",
            &child_argv(&["echo"]),
            &[],
        ))
        .start();
    let port = daemon.port(0);
    assert_eq!(request_to(v4(port), b"a\n"), "a\n");
    assert_eq!(request_to(v6(port), b"b\n"), "b\n");
    assert!(
        connection_refused(SocketAddr::new(lo(2), port)),
        "127.0.0.2:{port} is not one of the two"
    );
}

/// A string is split like the flat format (quotes group words); an argv
/// array is taken as is (its quotes and blanks are the argument's).
#[test]
fn command_as_string_is_split_and_as_array_is_not() {
    let line = format!("{} args 'one two' three", crate::common::CHILD);
    let config = [
        toml_service("split", "{port0}", &toml_str(&line), &[]),
        toml_service(
            "argv",
            "{port1}",
            &child_argv(&["args", "'one two'", "a b"]),
            &[],
        ),
    ]
    .concat();
    let daemon = Daemon::builder().toml(&config).start();
    assert_eq!(
        request(daemon.port(0), b""),
        "arg[0]=one two\narg[1]=three\nargc=2\n"
    );
    assert_eq!(
        request(daemon.port(1), b""),
        "arg[0]='one two'\narg[1]=a b\nargc=2\n"
    );
}

// ---------------------------------------------------------------------------
// The child: user, group, env, working_dir, stderr
// ---------------------------------------------------------------------------

/// `user` gives the user's uid and primary group; `group` replaces the
/// group. Needs root (it creates a user).
#[test]
fn user_and_group_set_the_childs_ids() {
    let Some(user) = TestUser::create("toml") else {
        return;
    };
    let config = [
        toml_service(
            "as-user",
            "{port0}",
            &child_argv(&["ids"]),
            &[&format!("user = {}", toml_str(&user.name))],
        ),
        toml_service(
            "as-group",
            "{port1}",
            &child_argv(&["ids"]),
            &[
                &format!("user = {}", toml_str(&user.name)),
                &format!("group = {}", toml_str(&user.extra_group)),
            ],
        ),
    ]
    .concat();
    let daemon = Daemon::builder().toml(&config).start();

    let ids = first_line(daemon.port(0));
    let uid = format!("{0},{0}", user.uid);
    assert_eq!(field(&ids, "uid"), Some(uid.as_str()), "{ids}");
    let gid = format!("{0},{0}", user.gid);
    assert_eq!(field(&ids, "gid"), Some(gid.as_str()), "{ids}");

    let ids = first_line(daemon.port(1));
    assert_eq!(field(&ids, "uid"), Some(uid.as_str()), "{ids}");
    let gid = format!("{0},{0}", user.extra_gid);
    assert_eq!(
        field(&ids, "gid"),
        Some(gid.as_str()),
        "the group given, not the user's own: {ids}"
    );
}

/// `env` adds variables, and wins over the daemon's own; the daemon's
/// other variables stay.
#[test]
fn env_adds_variables_and_overrides_the_daemons() {
    let daemon = Daemon::builder()
        .toml(&toml_service(
            "env",
            "{port0}",
            &child_argv(&["env", "GREETING", "WININETD_T_OVER", "WININETD_T_KEEP"]),
            &["env = { GREETING = \"hi there\", WININETD_T_OVER = \"service\" }"],
        ))
        .env("WININETD_T_OVER", "daemon")
        .env("WININETD_T_KEEP", "daemon")
        .start();
    assert_eq!(
        request(daemon.port(0), b""),
        "GREETING=hi there\nWININETD_T_OVER=service\nWININETD_T_KEEP=daemon\n"
    );
}

#[test]
fn working_dir_is_the_childs_current_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().canonicalize().expect("canonical temp dir");
    let daemon = cwd_service(&path);
    assert_eq!(
        first_line(daemon.port(0)),
        format!("cwd={}", path.display())
    );
}

/// A daemon serving the `cwd` child in `dir`.
fn cwd_service(dir: &Path) -> Daemon {
    Daemon::builder()
        .toml(&toml_service(
            "cwd",
            "{port0}",
            &child_argv(&["cwd"]),
            &[&format!(
                "working_dir = {}",
                toml_str(&dir.display().to_string())
            )],
        ))
        .start()
}

/// A `working_dir` removed after the config was loaded: the child cannot
/// change to it, so the program never runs. The connection is closed with
/// nothing sent, `cannot start` names the program, the directory, the
/// reason and the pid of the process made for it, no session of it ends as
/// if it had run, and the next connection is handled the same way.
#[test]
fn working_dir_gone_fails_the_session_cleanly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let gone = dir.path().join("gone");
    fs::create_dir(&gone).expect("mkdir");
    let daemon = cwd_service(&gone);
    fs::remove_dir(&gone).expect("rmdir");
    for attempt in 1..=2 {
        let mut stream = connect(daemon.port(0));
        assert_eq!(
            read_to_eof(&mut stream, WAIT).expect("a clean close"),
            b"",
            "nothing reaches the client"
        );
        daemon.wait_for_count("`cannot start`", attempt, WAIT, |l| {
            l.contains("cannot start")
        });
        let line = daemon
            .lines()
            .into_iter()
            .rfind(|l| l.contains("cannot start"))
            .expect("a line");
        assert!(
            line.contains("cannot change to working directory")
                && line.contains(&gone.display().to_string())
                && line.contains("No such file or directory")
                && line.contains(CHILD),
            "{line}"
        );
        let pid = field(&line, "pid").expect("pid= on the line").to_owned();
        assert_eq!(
            daemon.count(|l| l.contains("session end") && field(l, "pid") == Some(pid.as_str())),
            0,
            "no session end for pid {pid}"
        );
    }
}

/// `stderr = "log"`: what the child writes to stderr is a log line with
/// the service and the pid, and never reaches the client.
#[test]
fn stderr_to_the_log() {
    const MARK: &str = "stderr-mark-to-log-5e1";
    let daemon = Daemon::builder()
        .toml(&toml_service(
            "errlog",
            "{port0}",
            &child_argv(&["stderr", MARK]),
            &["stderr = \"log\""],
        ))
        .start();
    assert_stderr_logged(&daemon, daemon.port(0), "errlog", MARK);
}

/// `stderr = "socket"` (the default too): the client gets it, the log not.
#[test]
fn stderr_to_the_socket() {
    const MARK: &str = "stderr-mark-to-socket-9c4";
    let config = [
        toml_service(
            "explicit",
            "{port0}",
            &child_argv(&["stderr", MARK]),
            &["stderr = \"socket\""],
        ),
        toml_service("default", "{port1}", &child_argv(&["stderr", MARK]), &[]),
    ]
    .concat();
    let daemon = Daemon::builder().toml(&config).start();
    for port in [daemon.port(0), daemon.port(1)] {
        let mut stream = connect(port);
        let client = stream.local_addr().expect("local_addr");
        stream.shutdown(Shutdown::Write).expect("half-close");
        let data = read_to_eof(&mut stream, WAIT).expect("EOF");
        assert_eq!(String::from_utf8_lossy(&data), format!("{MARK}\n"));
        let (_, pid) = daemon.session_start(client);
        daemon.session_end(pid);
    }
    let logged = daemon.count(|l| l.contains(MARK) && !l.contains("listening on"));
    assert_eq!(logged, 0, "the child's stderr went to the log");
}

// ---------------------------------------------------------------------------
// Socket options: timeout, linger_timeout, nodelay, keepalive, backlog
// ---------------------------------------------------------------------------

/// `timeout` is SO_RCVTIMEO: a blocking read fails after it.
#[test]
fn timeout_ends_a_blocking_read() {
    let daemon = Daemon::builder()
        .toml(&toml_service(
            "timeout",
            "{port0}",
            &child_argv(&["read-timeout"]),
            &["timeout = 1"],
        ))
        .start();
    let mut stream = connect(daemon.port(0));
    assert_eq!(read_line(&mut stream, WAIT), "reading");
    let result = read_line(&mut stream, WAIT);
    assert!(
        result.starts_with("read error WouldBlock"),
        "the read should time out: {result}"
    );
    let after = number_after(&result, "after").expect("after=MS");
    assert!(
        (900..5000).contains(&after),
        "timed out after {after} ms, want about 1000: {result}"
    );
}

/// The options as the child reads them on its socket (`sockopts` mode):
/// `timeout`, `linger_timeout`, `nodelay`, `keepalive`, each against the
/// default (and `--timeout`, which a service's `timeout = 0` turns off).
#[test]
fn socket_options_reach_the_connection() {
    let sockopts = child_argv(&["sockopts"]);
    let config = [
        toml_service(
            "set",
            "{port0}",
            &sockopts,
            &[
                "timeout = 3",
                "linger_timeout = 7",
                "nodelay = true",
                "keepalive = 45",
            ],
        ),
        toml_service("default", "{port1}", &sockopts, &[]),
        toml_service(
            "off",
            "{port2}",
            &sockopts,
            &[
                "timeout = 0",
                "linger_timeout = 0",
                "nodelay = false",
                "keepalive = 0",
            ],
        ),
    ]
    .concat();
    let daemon = Daemon::builder()
        .toml(&config)
        .args(&["--timeout", "9"])
        .start();

    let set = first_line(daemon.port(0));
    for (key, value) in [
        ("nodelay", "true"),
        ("keepalive", "true"),
        ("keepidle", "45"),
        ("linger", "7"),
        ("rcvtimeo", "3000"),
        ("sndtimeo", "3000"),
    ] {
        assert_eq!(field(&set, key), Some(value), "{key} of `set`: {set}");
    }

    let default = first_line(daemon.port(1));
    for (key, value) in [
        ("nodelay", "false"),
        ("keepalive", "false"),
        ("linger", "60"),
        ("rcvtimeo", "9000"),
        ("sndtimeo", "9000"),
    ] {
        assert_eq!(
            field(&default, key),
            Some(value),
            "{key} of `default` (--timeout 9, linger 60): {default}"
        );
    }

    let off = first_line(daemon.port(2));
    for (key, value) in [
        ("nodelay", "false"),
        ("keepalive", "false"),
        ("linger", "off"),
        ("rcvtimeo", "none"),
        ("sndtimeo", "none"),
    ] {
        assert_eq!(field(&off, key), Some(value), "{key} of `off`: {off}");
    }
}

/// The listen queue of a listening socket, as `ss` shows it (Send-Q of a
/// LISTEN socket is its backlog); `None` when `ss` is not there.
fn listen_backlog(port: u16) -> Option<u32> {
    let out = Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .ok()?;
    assert!(out.status.success(), "ss failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .next()
        .unwrap_or_else(|| panic!("ss shows no listener on port {port}"));
    let columns: Vec<&str> = line.split_whitespace().collect();
    // State Recv-Q Send-Q Local Peer
    Some(columns[2].parse().expect("Send-Q is a number"))
}

#[test]
fn backlog_sets_the_listen_queue() {
    let config = [
        toml_service("small", "{port0}", &child_argv(&["echo"]), &["backlog = 7"]),
        toml_service("default", "{port1}", &child_argv(&["echo"]), &[]),
    ]
    .concat();
    let daemon = Daemon::builder().toml(&config).start();
    let Some(small) = listen_backlog(daemon.port(0)) else {
        eprintln!("SKIPPED: `ss` is needed to read a listen backlog");
        return;
    };
    assert_eq!(small, 7, "backlog = 7");
    let default = listen_backlog(daemon.port(1)).expect("ss ran before");
    assert!(
        default >= 128,
        "the default backlog is at least 128: {default}"
    );
}

// ---------------------------------------------------------------------------
// Limits and access, each shown once (admission.rs tests them in depth)
// ---------------------------------------------------------------------------

/// A service at its `max_sessions` pauses: its next client waits (not
/// refused) while another service keeps serving, and is served once a
/// session ends.
#[test]
fn max_sessions_caps_one_service_only() {
    let config = [
        toml_service("capped", "{port0}", &pid_child(), &["max_sessions = 1"]),
        toml_service("free", "{port1}", &pid_child(), &[]),
    ]
    .concat();
    let daemon = Daemon::builder().toml(&config).start();
    let (first, _) = attempt(None, v4(daemon.port(0))).served("the first client of `capped`");
    let mut waiting = connect(daemon.port(0));
    assert_silent(&mut waiting, Duration::from_secs(1));
    let _free = attempt(None, v4(daemon.port(1))).served("`free`, while `capped` is at its cap");
    assert_silent(&mut waiting, Duration::from_millis(100));

    drop(first);
    let line = read_line(&mut waiting, WAIT);
    assert!(
        line.starts_with("pid="),
        "the waiting client is served: {line}"
    );
}

#[test]
fn max_per_source_refuses_the_excess_of_one_source() {
    let daemon = Daemon::builder()
        .toml(&toml_service(
            "per-source",
            "{port0}",
            &pid_child(),
            &["max_per_source = 1"],
        ))
        .start();
    let dest = v4(daemon.port(0));
    let held = attempt(Some(lo(2)), dest).served("the first client from 127.0.0.2");
    attempt(Some(lo(2)), dest).refused("a second client from 127.0.0.2");
    let _other = attempt(Some(lo(3)), dest).served("a client from 127.0.0.3");
    daemon.wait_for("refused with rule=max_per_source", WAIT, |l| {
        l.contains("refused") && has_field(l, "rule", "max_per_source")
    });
    drop(held);
}

/// `rate` counts the service's new sessions whatever their source.
#[test]
fn rate_refuses_the_excess_of_the_service() {
    let daemon = Daemon::builder()
        .toml(&toml_service(
            "rated",
            "{port0}",
            &pid_child(),
            &["rate = { per_second = 0.01, burst = 2 }"],
        ))
        .start();
    let dest = v4(daemon.port(0));
    attempt(Some(lo(2)), dest).served("the first of the burst");
    attempt(Some(lo(3)), dest).served("the second of the burst");
    attempt(Some(lo(4)), dest).refused("a third source, past the burst");
    daemon.wait_for("refused with rule=rate", WAIT, |l| {
        l.contains("refused") && has_field(l, "rule", "rate")
    });
}

/// `rate_per_source` counts one source's new sessions.
#[test]
fn rate_per_source_refuses_the_excess_of_one_source() {
    let daemon = Daemon::builder()
        .toml(&toml_service(
            "rated",
            "{port0}",
            &pid_child(),
            &["rate_per_source = { per_second = 0.01, burst = 1 }"],
        ))
        .start();
    let dest = v4(daemon.port(0));
    attempt(Some(lo(2)), dest).served("127.0.0.2's burst");
    attempt(Some(lo(2)), dest).refused("127.0.0.2 past its burst");
    attempt(Some(lo(3)), dest).served("127.0.0.3, another source");
    daemon.wait_for("refused with rule=rate_per_source", WAIT, |l| {
        l.contains("refused") && has_field(l, "rule", "rate_per_source")
    });
}

/// `allow`: a plain address and a CIDR; everyone else is refused.
#[test]
fn allow_admits_only_the_listed_sources() {
    let config = [
        toml_service(
            "address",
            "{port0}",
            &pid_child(),
            &["allow = [\"127.0.0.2\"]"],
        ),
        toml_service(
            "cidr",
            "{port1}",
            &pid_child(),
            &["allow = [\"127.0.0.0/30\"]"],
        ),
    ]
    .concat();
    let daemon = Daemon::builder().toml(&config).start();
    let (address, cidr) = (v4(daemon.port(0)), v4(daemon.port(1)));
    attempt(Some(lo(2)), address).served("127.0.0.2, allowed");
    attempt(Some(lo(1)), address).refused("127.0.0.1, not allowed");
    attempt(Some(lo(3)), cidr).served("127.0.0.3, in 127.0.0.0/30");
    attempt(Some(lo(4)), cidr).refused("127.0.0.4, outside 127.0.0.0/30");
    daemon.wait_for("refused with rule=allow", WAIT, |l| {
        l.contains("refused") && has_field(l, "rule", "allow")
    });
}

#[test]
fn deny_refuses_the_listed_sources() {
    let config = [
        toml_service(
            "address",
            "{port0}",
            &pid_child(),
            &["deny = [\"127.0.0.2\"]"],
        ),
        toml_service(
            "cidr",
            "{port1}",
            &pid_child(),
            &["deny = [\"127.0.0.4/30\"]"],
        ),
    ]
    .concat();
    let daemon = Daemon::builder().toml(&config).start();
    let (address, cidr) = (v4(daemon.port(0)), v4(daemon.port(1)));
    attempt(Some(lo(2)), address).refused("127.0.0.2, denied");
    attempt(Some(lo(1)), address).served("127.0.0.1, not denied");
    attempt(Some(lo(5)), cidr).refused("127.0.0.5, in 127.0.0.4/30");
    attempt(Some(lo(3)), cidr).served("127.0.0.3, outside 127.0.0.4/30");
    daemon.wait_for("refused with rule=deny", WAIT, |l| {
        l.contains("refused") && has_field(l, "rule", "deny")
    });
}

/// `source_prefix_v6` groups IPv6 sources for the per-source limits. Three
/// addresses are added to `lo` (root only): A and B in one /64, C in the
/// next /64 of the same /48. With `max_per_source = 1` and a session from A
/// held: by /128, B is another source; by the default /64, B is the same and
/// C another; by /48, C is the same too.
#[test]
fn source_prefix_v6_groups_ipv6_sources() {
    let pid = std::process::id();
    // A /48 of our own (ULA, fd00::/8), so parallel runs do not share one.
    let (high, low) = ((pid >> 16) as u16, (pid & 0xffff) as u16);
    let a = Ipv6Addr::new(0xfd57, high, low, 0, 0, 0, 0, 1);
    let b = Ipv6Addr::new(0xfd57, high, low, 0, 0, 0, 0, 2);
    let c = Ipv6Addr::new(0xfd57, high, low, 1, 0, 0, 0, 1);
    let Some(_addrs) = LoopbackV6::add(&[a, b, c]) else {
        return;
    };
    let limited = |prefix: Option<u8>| {
        let mut extra = vec!["max_per_source = 1".to_owned()];
        extra.extend(prefix.map(|p| format!("source_prefix_v6 = {p}")));
        extra
    };
    let service = |name: &str, port: &str, prefix: Option<u8>| {
        let extra = limited(prefix);
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        toml_service(name, port, &pid_child(), &extra)
    };
    let config = [
        service("by-128", "{port0}", Some(128)),
        service("by-default", "{port1}", None),
        service("by-48", "{port2}", Some(48)),
    ]
    .concat();
    let daemon = Daemon::builder().toml(&config).start();
    let (a, b, c) = (IpAddr::V6(a), IpAddr::V6(b), IpAddr::V6(c));

    let by_128 = v6(daemon.port(0));
    let _held = attempt(Some(a), by_128).served("A on by-128");
    let _b = attempt(Some(b), by_128).served("B on by-128: another /128");

    let by_default = v6(daemon.port(1));
    let _held = attempt(Some(a), by_default).served("A on by-default");
    attempt(Some(b), by_default).refused("B on by-default: A's /64");
    let _c = attempt(Some(c), by_default).served("C on by-default: another /64");

    let by_48 = v6(daemon.port(2));
    let _held = attempt(Some(a), by_48).served("A on by-48");
    attempt(Some(c), by_48).refused("C on by-48: A's /48");
}

/// `reject_message` is what a refused client reads before the close;
/// without it, the close comes alone.
#[test]
fn reject_message_is_sent_before_the_close() {
    const MESSAGE: &str = "busy, try later\nreally\n";
    let config = [
        toml_service(
            "polite",
            "{port0}",
            &pid_child(),
            &[
                "deny = [\"127.0.0.2\"]",
                &format!("reject_message = {}", toml_str(MESSAGE)),
            ],
        ),
        toml_service(
            "terse",
            "{port1}",
            &pid_child(),
            &["deny = [\"127.0.0.2\"]"],
        ),
    ]
    .concat();
    let daemon = Daemon::builder().toml(&config).start();
    let mut stream = crate::common::connect_from(lo(2), v4(daemon.port(0)));
    let data = read_to_eof(&mut stream, WAIT).expect("the message, then EOF");
    assert_eq!(String::from_utf8_lossy(&data), MESSAGE);
    let text = attempt(Some(lo(2)), v4(daemon.port(1))).refused("denied on `terse`");
    assert_eq!(text, "", "no message configured");
}

/// `max_lifetime` ends the whole process tree of a session that outlives
/// it, the grandchild too.
#[test]
fn max_lifetime_kills_the_process_tree() {
    let daemon = Daemon::builder()
        .toml(&toml_service(
            "short",
            "{port0}",
            &child_argv(&["grandchild", "60"]),
            &["max_lifetime = 1"],
        ))
        .start();
    let connected = Instant::now();
    let mut stream = connect(daemon.port(0));
    let (parent, grandchild) = loop {
        let line = read_line(&mut stream, WAIT);
        if line.starts_with("parent ") {
            let pid = |key| -> u32 { field(&line, key).and_then(|p| p.parse().ok()).expect(key) };
            break (pid("pid"), pid("grandchild"));
        }
    };
    assert!(is_alive(parent) && is_alive(grandchild));
    wait_gone(parent, WAIT);
    wait_gone(grandchild, WAIT);
    let lived = connected.elapsed();
    assert!(
        lived >= Duration::from_millis(900),
        "killed after {lived:?}, before max_lifetime"
    );
    daemon.session_end(parent);
    read_to_eof(&mut stream, WAIT).expect("EOF once the tree is gone");
}

// ---------------------------------------------------------------------------
// Global settings: max_sessions, log_format
// ---------------------------------------------------------------------------

/// The config's global `max_sessions` caps all services together; the
/// command line's `--max-sessions` wins over it.
#[test]
fn global_max_sessions_and_the_command_line_wins() {
    let config = [
        "max_sessions = 1\n\n".to_owned(),
        toml_service("a", "{port0}", &pid_child(), &[]),
        toml_service("b", "{port1}", &pid_child(), &[]),
    ]
    .concat();
    let daemon = Daemon::builder().toml(&config).start();
    let (held, _) = attempt(None, v4(daemon.port(0))).served("the first session");
    let mut waiting = connect(daemon.port(1));
    assert_silent(&mut waiting, Duration::from_secs(1));
    drop(held);
    let line = read_line(&mut waiting, WAIT);
    assert!(
        line.starts_with("pid="),
        "served once a slot is free: {line}"
    );
    drop(daemon);

    let daemon = Daemon::builder()
        .toml(&config)
        .args(&["--max-sessions", "3"])
        .start();
    let _sessions: Vec<(TcpStream, u32)> = [0, 1, 0]
        .iter()
        .map(|&i| attempt(None, v4(daemon.port(i))).served("under --max-sessions 3"))
        .collect();
}

/// `log_format = "json"`: every session start, end and refusal is one JSON
/// object with its fields.
#[test]
fn json_log_format() {
    let config = [
        "log_format = \"json\"\n\n".to_owned(),
        toml_service(
            "jsonsvc",
            "{port0}",
            &child_argv(&["echo"]),
            &["deny = [\"127.0.0.2\"]"],
        ),
    ]
    .concat();
    let daemon = Daemon::builder().toml(&config).start();
    let port = daemon.port(0);
    let mut stream = connect(port);
    let client = stream.local_addr().expect("local_addr");
    stream.shutdown(Shutdown::Write).expect("half-close");
    read_to_eof(&mut stream, WAIT).expect("EOF");
    let refused = crate::common::connect_from(lo(2), v4(port));
    let refused_peer = refused.local_addr().expect("local_addr");
    drop(refused);

    let is_event =
        |l: &str| l.contains("session start") || l.contains("session end") || l.contains("refused");
    daemon.wait_for_count("of session events and refusals", 3, WAIT, is_event);
    let mut by_message: HashMap<String, crate::common::Json> = HashMap::new();
    for line in daemon.lines().iter().filter(|l| is_event(l)) {
        let json = parse_json(line).unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        assert!(
            matches!(json, crate::common::Json::Object(_)),
            "not an object: {line}"
        );
        let message = json
            .get("message")
            .and_then(|m| m.text())
            .unwrap_or_else(|| panic!("no message: {line}"))
            .to_owned();
        by_message.insert(message, json);
    }
    let text = |json: &crate::common::Json, key: &str| -> String {
        json.get(key)
            .and_then(|v| v.text())
            .unwrap_or_else(|| panic!("no {key:?} in {json:?}"))
            .to_owned()
    };
    let event = |needle: &str| {
        by_message
            .iter()
            .find(|(m, _)| m.contains(needle))
            .map(|(_, j)| j.clone())
            .unwrap_or_else(|| panic!("no event {needle:?} in {:?}", by_message.keys()))
    };
    let start = event("session start");
    assert_eq!(text(&start, "service"), "jsonsvc");
    assert_eq!(text(&start, "peer"), peer_text(client));
    assert_eq!(text(&start, "local"), format!("127.0.0.1:{port}"));
    let pid = text(&start, "pid");
    assert!(pid.parse::<u32>().is_ok(), "pid: {pid}");

    let end = event("session end");
    assert_eq!(text(&end, "service"), "jsonsvc");
    assert_eq!(text(&end, "peer"), peer_text(client));
    assert_eq!(text(&end, "local"), format!("127.0.0.1:{port}"));
    assert_eq!(text(&end, "pid"), pid);
    assert_eq!(text(&end, "status"), "exit 0");
    assert!(!text(&end, "duration").is_empty());

    let refusal = event("refused");
    assert_eq!(text(&refusal, "service"), "jsonsvc");
    assert_eq!(text(&refusal, "peer"), peer_text(refused_peer));
    assert_eq!(text(&refusal, "rule"), "deny");
}

// ---------------------------------------------------------------------------
// [defaults]
// ---------------------------------------------------------------------------

/// `[defaults]` gives every service the options it does not set; a
/// service's own value wins.
#[test]
fn defaults_are_inherited_and_overridden() {
    let dir = tempfile::tempdir().expect("temp dir");
    let default_dir = dir.path().canonicalize().expect("canonical");
    let own_dir = default_dir.join("own");
    fs::create_dir(&own_dir).expect("mkdir");
    let path = |p: &Path| toml_str(&p.display().to_string());
    let config = [
        format!(
            "[defaults]\nenv = {{ FROM = \"defaults\" }}\nworking_dir = {}\n\n",
            path(&default_dir)
        ),
        toml_service("inherit-env", "{port0}", &child_argv(&["env", "FROM"]), &[]),
        toml_service(
            "own-env",
            "{port1}",
            &child_argv(&["env", "FROM"]),
            &["env = { FROM = \"service\" }"],
        ),
        toml_service("inherit-dir", "{port2}", &child_argv(&["cwd"]), &[]),
        toml_service(
            "own-dir",
            "{port3}",
            &child_argv(&["cwd"]),
            &[&format!("working_dir = {}", path(&own_dir))],
        ),
    ]
    .concat();
    let daemon = Daemon::builder().toml(&config).start();
    assert_eq!(request(daemon.port(0), b""), "FROM=defaults\n");
    assert_eq!(request(daemon.port(1), b""), "FROM=service\n");
    assert_eq!(
        first_line(daemon.port(2)),
        format!("cwd={}", default_dir.display())
    );
    assert_eq!(
        first_line(daemon.port(3)),
        format!("cwd={}", own_dir.display())
    );
}

// ---------------------------------------------------------------------------
// --check
// ---------------------------------------------------------------------------

/// Runs `--check` on `text` as a `.toml` file; returns the finished daemon
/// and its exit code.
fn check(text: &str) -> (Daemon, Option<i32>) {
    let mut daemon = Daemon::builder().toml(text).arg("--check").spawn();
    let status = daemon.wait_exit(WAIT);
    (daemon, status.code())
}

/// `--check` fails, with an error at `LINE:COL` whose message holds each
/// of `words`.
fn assert_error_at(text: &str, line: usize, column: usize, words: &[&str]) {
    let (daemon, code) = check(text);
    assert_eq!(code, Some(1), "--check on a bad file");
    let prefix = format!("{}:{line}:{column}: error: ", daemon.config_name());
    let found = daemon
        .lines()
        .into_iter()
        .find(|l| l.contains(&prefix))
        .unwrap_or_else(|| panic!("no `{prefix}...` diagnostic"));
    for word in words {
        assert!(found.contains(word), "{word:?} missing in {found}");
    }
}

/// A valid service, for the files whose error is elsewhere.
fn good_service(name: &str) -> String {
    toml_service(name, "7007", &child_argv(&["echo"]), &[])
}

#[test]
fn check_reports_a_syntax_error_at_its_position() {
    // Line 3: the junk after the value starts at column 12.
    let text = "[[service]]\nlisten = 7007\nname = \"x\" junk\n";
    let (daemon, code) = check(text);
    assert_eq!(code, Some(1));
    let prefix = format!("{}:3:12: error: ", daemon.config_name());
    assert!(
        daemon.lines().iter().any(|l| l.contains(&prefix)),
        "no `{prefix}...` diagnostic"
    );
}

#[test]
fn check_reports_a_type_error_at_the_value() {
    let text = format!(
        "# a timeout must be a number\n{}\ntimeout = \"soon\"\n",
        good_service("x").trim_end()
    );
    // Line 1 comment, 2-5 the service, 6 the timeout: its value at col 11.
    assert_error_at(&text, 6, 11, &[]);
}

#[test]
fn check_reports_an_unknown_field_at_the_key() {
    let text = format!("{}\n    frobnicate = 1\n", good_service("x").trim_end());
    assert_error_at(&text, 5, 5, &["frobnicate"]);
    let text = format!("colour = \"blue\"\n\n{}", good_service("x"));
    assert_error_at(&text, 1, 1, &["colour"]);
    let text = format!("[defaults]\nfrobnicate = 1\n\n{}", good_service("x"));
    assert_error_at(&text, 2, 1, &["frobnicate"]);
    // name, listen and command are a service's own, not defaults.
    let text = format!(
        "[defaults]\ncommand = \"/bin/cat\"\n\n{}",
        good_service("x")
    );
    assert_error_at(&text, 2, 1, &["command"]);
}

/// Type errors in two services: both are listed.
#[test]
fn check_lists_the_type_errors_of_every_service() {
    let text = format!(
        "{}\ntimeout = \"soon\"\n\n{}\nbacklog = \"deep\"\n",
        toml_service("a", "7007", &child_argv(&["echo"]), &[]).trim_end(),
        toml_service("b", "7008", &child_argv(&["echo"]), &[]).trim_end(),
    );
    let (daemon, code) = check(&text);
    assert_eq!(code, Some(1));
    let file = daemon.config_name();
    for (line, column) in [(5, 11), (11, 11)] {
        let prefix = format!("{file}:{line}:{column}: error: ");
        assert!(
            daemon.lines().iter().any(|l| l.contains(&prefix)),
            "no `{prefix}...` diagnostic"
        );
    }
}

/// Semantic errors (checked after parsing) are each reported with a line of
/// their service, all of them, then the count.
#[test]
fn check_lists_every_semantic_error_with_its_services_line() {
    let services = [
        // Lines 1-4.
        toml_service("one", "7007", "[\"no-such-program-wininetd\"]", &[]),
        // Lines 6-9: the name is taken.
        toml_service("one", "7008", &child_argv(&["echo"]), &[]),
        // Lines 11-14: the port is taken.
        toml_service("three", "7007", &child_argv(&["echo"]), &[]),
        // Lines 16-19: fine.
        toml_service("four", "7009", &child_argv(&["echo"]), &[]),
    ];
    let (daemon, code) = check(&services.concat());
    assert_eq!(code, Some(1));
    let file = daemon.config_name();
    let lines = daemon.lines();
    let errors: Vec<(usize, &String)> = lines
        .iter()
        .filter_map(|l| Some((error_line(l, &file)?, l)))
        .collect();
    for (first, last, words) in [
        (1, 4, &["not found"][..]),
        (6, 9, &["one"][..]),
        (11, 14, &["7007"][..]),
    ] {
        let (_, found) = errors
            .iter()
            .find(|(n, _)| (first..=last).contains(n))
            .unwrap_or_else(|| panic!("no error on lines {first}-{last}: {errors:?}"));
        for word in words {
            assert!(found.contains(word), "{word:?} missing in {found}");
        }
    }
    assert_eq!(errors.len(), 3, "one error per bad service: {errors:?}");
    let last = lines.last().cloned().unwrap_or_default();
    assert!(has_token(&last, "3 error(s)"), "last line: {last:?}");
}

/// The line of a `FILE:LINE: error: ` or `FILE:LINE:COL: error: `
/// diagnostic.
fn error_line(diagnostic: &str, file: &str) -> Option<usize> {
    let (place, _) = diagnostic.split_once(": error: ")?;
    let rest = place.strip_prefix(file)?.strip_prefix(':')?;
    rest.split(':').next()?.parse().ok()
}

/// On Unix, `password` (with a user) is ignored with a warning and never
/// prints; `stdio = "pipe"`, which works everywhere, draws none.
#[test]
fn password_warns_on_unix_and_stdio_does_not() {
    const PASSWORD: &str = "s3cr3t-toml-pa55";
    let mut extra = vec!["stdio = \"pipe\"".to_owned()];
    if is_root() {
        extra.push("user = \"root\"".to_owned());
        extra.push(format!("password = {}", toml_str(PASSWORD)));
    } else {
        eprintln!("NOTE: not root: `password` (which needs `user`) is not tested");
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let text = toml_service("win", "7007", &child_argv(&["echo"]), &extra);
    let (daemon, code) = check(&text);
    assert_eq!(code, Some(0), "warnings only");
    let warnings: Vec<String> = daemon
        .lines()
        .into_iter()
        .filter(|l| l.contains(": warning: "))
        .collect();
    assert!(
        !warnings.iter().any(|w| w.contains("stdio")),
        "no warning about stdio: {warnings:?}"
    );
    if is_root() {
        assert!(
            warnings.iter().any(|w| w.contains("password")),
            "a warning about the password: {warnings:?}"
        );
    }
    for text in [daemon.stderr_text(), daemon.stdout_text()] {
        assert!(!text.contains(PASSWORD), "the password is printed");
    }
}

/// Every file in examples/ passes `--check`.
#[test]
fn examples_pass_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seen = HashMap::<String, usize>::new();
    for entry in fs::read_dir(&dir).expect("read examples/") {
        let path = entry.expect("dir entry").path();
        let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
            continue;
        };
        if ext != "toml" && ext != "conf" {
            continue;
        }
        *seen.entry(ext.to_owned()).or_default() += 1;
        let out = Command::new(DAEMON)
            .arg("--check")
            .arg("--cfgfile")
            .arg(&path)
            .output()
            .expect("run wininetd --check");
        assert!(
            out.status.success(),
            "{} fails --check ({}):\n{}{}",
            path.display(),
            describe(out.status),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        seen.get("conf").copied().unwrap_or(0) > 0,
        "no examples/*.conf"
    );
    assert!(
        seen.get("toml").copied().unwrap_or(0) > 0,
        "no examples/*.toml"
    );
}

/// The harness's own attempt helper, pinned: a refused client is not
/// mistaken for a served one (else every refusal test above could pass
/// for the wrong reason).
#[test]
fn attempt_tells_served_from_refused() {
    let daemon = Daemon::builder()
        .toml(&toml_service(
            "probe",
            "{port0}",
            &pid_child(),
            &["deny = [\"127.0.0.2\"]"],
        ))
        .start();
    let dest = v4(daemon.port(0));
    assert!(matches!(attempt(Some(lo(1)), dest), Attempt::Served { .. }));
    assert!(matches!(
        attempt(Some(lo(2)), dest),
        Attempt::Refused { .. }
    ));
}

// ---------------------------------------------------------------------------
// Issue 16: every problem at its key, numbers in range, UTF-16
// ---------------------------------------------------------------------------

/// The diagnostics `--check` printed for `text`, as `LINE:COL: error: …`
/// (the file's name cut off), in order; and its exit code.
fn check_diagnostics(text: &str) -> (Vec<String>, Option<i32>) {
    let (daemon, code) = check(text);
    let prefix = format!("{}:", daemon.config_name());
    let lines = daemon
        .lines()
        .into_iter()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .collect();
    (lines, code)
}

/// Issue 16, item 15: a service with a wrong key hid its unknown user, its
/// missing program and its listen clashes; those, `duplicate port`, `group`
/// needing `user` and the ignored password were reported at the
/// `[[service]]` line or at 1:1. All of them now, each at its key.
#[test]
fn check_reports_every_problem_at_its_key() {
    let echo = child_argv(&["echo"]);
    let text = format!(
        r#"[[service]]
name = "a"
listen = [7101, "127.0.0.1:7102"]
command = {echo}

[[service]]
name = "b"
timeout = "soon"
listen = [7103, 7101]
command = ["no-such-program-wininetd"]
user = "no-such-user-wininetd"
password = "s3cr3t-pa55"

[[service]]
name = "c"
listen = ["x", "127.0.0.1:7102"]
group = "g"
command = {echo}
"#
    );
    let (diagnostics, code) = check_diagnostics(&text);
    assert_eq!(code, Some(1), "{diagnostics:?}");
    let user = if is_root() {
        "unknown user \"no-such-user-wininetd\""
    } else {
        "service runs as user \"no-such-user-wininetd\", but wininetd is not running as root"
    };
    let expected = [
        "8:11: error: `timeout` must be an integer, not a string",
        "9:17: error: duplicate port 7101 (first used on line 1)",
        "10:11: error: program \"no-such-program-wininetd\" not found on PATH",
        &format!("11:8: error: {user}"),
        "12:1: warning: the password is ignored on this system: running as a user needs none",
        "16:11: error: \"x\" is not a listen address: use PORT, IPV4:PORT or [IPV6]:PORT",
        "16:16: error: 127.0.0.1:7102 clashes with 127.0.0.1:7102 of service \"a\" (line 1)",
        "17:1: error: `group` needs `user`",
    ];
    assert_eq!(diagnostics.len(), expected.len(), "{diagnostics:#?}");
    for (found, expected) in diagnostics.iter().zip(expected) {
        assert!(found.starts_with(expected), "{found:?} is not {expected:?}");
    }
    assert!(!diagnostics.iter().any(|d| d.contains("s3cr3t")));
}

/// Issue 16, item 11: `max_sessions = 5000000000` passed `--check`, then
/// panicked at SIGTERM; `9223372036854775807` panicked at start (the
/// semaphore's limit); `keepalive = 40000` passed and failed every
/// connection (Linux stops at 32767). Each is refused at its value.
#[test]
fn check_refuses_numbers_that_would_fail_later() {
    let text = format!(
        "max_sessions = 5000000000\n{}",
        toml_service(
            "s",
            "7104",
            &child_argv(&["echo"]),
            &[
                "max_sessions = 9223372036854775807",
                "keepalive = 40000",
                "timeout = 4294968",
                "max_per_source = 1000001",
            ]
        )
    );
    let (diagnostics, code) = check_diagnostics(&text);
    assert_eq!(code, Some(1), "{diagnostics:?}");
    assert_eq!(
        diagnostics[..5],
        [
            "1:16: error: `max_sessions` must be 1-1000000, not 5000000000",
            "6:16: error: `max_sessions` must be 1-1000000, not 9223372036854775807",
            "7:13: error: `keepalive` must be 0-32767, not 40000",
            "8:11: error: `timeout` must be 0-4294967, not 4294968",
            "9:18: error: `max_per_source` must be 1-1000000, not 1000001",
        ]
    );
}

/// The largest (`largest`) or the smallest value of every numeric key of
/// a service, from the bounds `--check` applies, so that a bound raised
/// past what works fails here.
fn extremes(largest: bool) -> Vec<String> {
    let pick = |range: &std::ops::RangeInclusive<u64>| {
        if largest {
            *range.end()
        } else {
            *range.start()
        }
    };
    let per_second = if largest {
        f64::MAX
    } else {
        bounds::MIN_PER_SECOND
    };
    let rate = format!(
        "{{ per_second = {per_second:e}, burst = {} }}",
        pick(&bounds::BURST)
    );
    let mut keys = vec![
        format!("timeout = {}", pick(&bounds::TIMEOUT_SECS)),
        format!("linger_timeout = {}", pick(&bounds::LINGER_SECS)),
        // 0 is off; the smallest on is 1.
        format!("keepalive = {}", pick(&bounds::KEEPALIVE_SECS).max(1)),
        format!("max_lifetime = {}", pick(&bounds::LIFETIME_SECS)),
        format!("backlog = {}", pick(&bounds::BACKLOG)),
        format!("max_sessions = {}", pick(&bounds::SESSIONS)),
        format!("max_per_source = {}", pick(&bounds::SESSIONS)),
        format!("rate = {rate}"),
        format!("rate_per_source = {rate}"),
        format!("source_prefix_v6 = {}", pick(&bounds::SOURCE_PREFIX_V6)),
    ];
    if largest {
        keys.push("nodelay = true".to_owned());
    }
    keys
}

/// Issue 16, item 11: what `--check` accepts never fails or panics at
/// start, on a connection, or at stop. The daemon starts with the extreme
/// of every numeric key at once (and the command line's), serves a
/// connection over IPv6 and IPv4 without a warning, and stops cleanly on
/// SIGTERM.
#[test]
fn extreme_values_start_serve_and_stop_cleanly() {
    let sessions = |largest| {
        let range = bounds::SESSIONS;
        if largest {
            *range.end()
        } else {
            *range.start()
        }
    };
    for largest in [true, false] {
        let global = format!("max_sessions = {}", sessions(largest));
        // With the smallest config, the command line's largest values
        // (`--max-sessions` wins over the config's).
        let args: Vec<String> = [
            ("--max-sessions", bounds::SESSIONS),
            ("--timeout", bounds::TIMEOUT_SECS),
            ("--linger-timeout", bounds::LINGER_SECS),
            ("--shutdown-grace", bounds::SHUTDOWN_GRACE_SECS),
        ]
        .into_iter()
        .filter(|_| !largest)
        .flat_map(|(flag, range)| [flag.to_owned(), range.end().to_string()])
        .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let extremes = extremes(largest);
        let extremes: Vec<&str> = extremes.iter().map(String::as_str).collect();
        let text = format!(
            "{global}\n{}{}",
            toml_service("extreme", "{port0}", &child_argv(&["echo"]), &extremes),
            toml_service("plain", "{port1}", &child_argv(&["echo"]), &[]),
        );
        let builder = Daemon::builder().toml(&text).args(&args);
        let mut check = builder.clone().arg("--check").spawn();
        assert_eq!(check.wait_exit(WAIT).code(), Some(0), "{}", check.report());
        let mut daemon = builder.start();
        // One connection to the extreme service (its smallest rate admits
        // one a day), over IPv6 for `source_prefix_v6`.
        assert_eq!(
            request_to(v6(daemon.port(0)), b"extreme\n"),
            "extreme\n",
            "{}",
            daemon.report()
        );
        assert_eq!(
            request(daemon.port(1), b"plain\n"),
            "plain\n",
            "{}",
            daemon.report()
        );
        daemon.send_signal(libc::SIGTERM);
        let status = daemon.wait_exit(WAIT);
        assert_eq!(status.code(), Some(0), "{}", daemon.report());
        // Nothing failed on the way: no panic, no option the OS refused
        // (`keepalive` above 32767 was "cannot set the connection's socket
        // options" on every connection).
        // A cap of one is reached by its one session: that warning is the
        // cap working.
        let complaints = daemon.count(|l| {
            l.contains("panicked")
                || (l.contains(" WARN ") || l.contains(" ERROR "))
                    && !l.contains("session limit reached")
        });
        assert_eq!(complaints, 0, "{}", daemon.report());
    }
}

/// Issue 16, item 20: a UTF-16 TOML file (Notepad's "Unicode") is read,
/// and its problems are at the same line and column as in UTF-8.
#[test]
fn a_utf16_toml_config_is_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = format!(
        "# caf\u{e9}\r\n{}",
        toml_service("caf\u{e9}", "7105", &child_argv(&["echo"]), &[])
    );
    let bad = format!("{}\ntimeout = \"\u{e9}\"\n", good.trim_end());
    for (little, name) in [(true, "UTF-16LE"), (false, "UTF-16BE")] {
        let path = dir.path().join(format!("{name}.toml"));
        fs::write(&path, crate::config::utf16(&good, little)).expect("write");
        let (code, output, _) = crate::config::check_file(&path);
        assert_eq!(code, Some(0), "{output}");
        let summary = format!("{}: ok, 1 service(s), 0 warning(s), {name}", path.display());
        assert!(output.contains(&summary), "{summary:?} missing: {output}");

        fs::write(&path, crate::config::utf16(&bad, little)).expect("write");
        let (code, output, _) = crate::config::check_file(&path);
        assert_eq!(code, Some(1), "{output}");
        let at = format!(
            "{}:6:11: error: `timeout` must be an integer",
            path.display()
        );
        assert!(output.contains(&at), "{at:?} missing: {output}");
    }
}
