//! One config for both systems: tests/data/portable.toml, with free ports
//! and the test child's directory on `PATH`, passes `--check` without a
//! warning and serves each of its services, with the same assertions on
//! Linux and on Windows (under Wine here).

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv6Addr, Shutdown, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{
    CHILD, DAEMON, Daemon, DaemonBuilder, Event, Started, WAIT, attempt, child, child_argv,
    connect, daemon_path, field, free_port, hex, is_event, json_events, json_object, lo, peer_text,
    pid_in, read_line, read_to_eof, request_to, toml_service, v4, v6, wait_connectable, wait_event,
    wait_gone,
};

/// The config both OSes accept (see the file's header).
const PORTABLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/portable.toml");

/// The `PATH` under which the daemon finds the test child by its bare name:
/// the child's directory first, then the test's own `PATH`.
fn path_with_the_child() -> String {
    let child = daemon_path(Path::new(CHILD));
    let dir = child.parent().expect("the child is in a directory");
    let inherited = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::iter::once(dir.to_owned()).chain(std::env::split_paths(&inherited));
    std::env::join_paths(dirs)
        .expect("no separator in a directory")
        .into_string()
        .expect("a UTF-8 PATH")
}

/// A daemon of tests/data/portable.toml, with the test child on its `PATH`.
fn portable_builder() -> DaemonBuilder {
    let fixture = fs::read_to_string(daemon_path(Path::new(PORTABLE)))
        .unwrap_or_else(|e| panic!("read {PORTABLE}: {e}"));
    Daemon::builder()
        .toml(&fixture)
        .env("PATH", &path_with_the_child())
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

#[test]
fn the_portable_config_is_checked_and_served() {
    let builder = portable_builder();

    // Without `--debug`: on Windows `--check` must not try the service
    // manager either.
    let mut check = builder.clone().arg("--check").no_debug().spawn();
    assert_eq!(check.wait_exit(WAIT).code(), Some(0), "--check exit code");
    let ok = format!("{}: ok, 6 service(s), 0 warning(s)", check.config_name());
    assert!(check.stdout_text().contains(&ok), "no {ok:?} on stdout");
    drop(check);

    let daemon = builder.start();
    let port = |i| daemon.port(i);

    // echo: on 127.0.0.1 and [::1] of one port.
    for addr in [v4(port(0)), v6(port(0))] {
        assert_eq!(request_to(addr, b"portable\r\n"), "portable\r\n", "{addr}");
    }

    // env: a bare port serves both families; [defaults]' env merged.
    for addr in [v4(port(1)), v6(port(1))] {
        assert_eq!(
            request_to(addr, b""),
            "PORTABLE_GREETING=hello from toml\nPORTABLE_FROM=defaults\n",
            "{addr}"
        );
    }

    // guarded: deny, allow, max_per_source, its own reject_message.
    let guarded = |source, dest| attempt(Some(source), dest);
    let (held, held_pid) = guarded(lo(1), v4(port(2))).served("the first client of 127.0.0.1");
    let text = guarded(lo(1), v4(port(2))).refused("a second client of 127.0.0.1");
    assert_eq!(text, "guarded: go away\n");
    let (_v6_held, _) = guarded(IpAddr::V6(Ipv6Addr::LOCALHOST), v6(port(2))).served("::1");
    let text = guarded(lo(2), v4(port(2))).refused("127.0.0.2 (denied)");
    assert_eq!(text, "guarded: go away\n");
    drop(held);

    // rated: the second session within 100 s is refused, with the
    // reject_message of [defaults].
    let (_rated, _) = attempt(None, v4(port(3))).served("the first client of `rated`");
    let text = attempt(None, v4(port(3))).refused("the second client of `rated`");
    assert_eq!(text, "refused by default\n");

    // logged: the child's stderr goes to the log, not to the client.
    let mut stream = connect(port(4));
    let client = stream.local_addr().expect("local_addr");
    stream.shutdown(Shutdown::Write).expect("half-close");
    let data = read_to_eof(&mut stream, WAIT).expect("EOF");
    assert!(data.is_empty(), "the client got {data:?}");

    // lifetime: ended after max_lifetime.
    let connected = Instant::now();
    let mut stream = connect(port(5));
    let line = read_line(&mut stream, WAIT);
    let sleeper = pid_in(&line, "pid");
    read_to_eof(&mut stream, WAIT).expect("EOF once max_lifetime passed");
    let lived = connected.elapsed();
    assert!(
        lived >= Duration::from_millis(900),
        "ended after {lived:?}, before max_lifetime"
    );
    wait_gone(sleeper, WAIT);

    // The log: one JSON object per event, with the session's fields.
    for (rule, source) in [("max_per_source", "127.0.0.1:"), ("deny", "127.0.0.2:")] {
        let refusal = wait_event(&daemon, &format!("refusal by {rule}"), |e| {
            is_event(e, "refused", "guarded") && e["rule"] == rule
        });
        assert!(
            refusal["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with(source)),
            "{refusal}"
        );
    }
    wait_event(&daemon, "refusal by rate", |e| {
        is_event(e, "refused", "rated") && e["rule"] == "rate"
    });
    wait_event(
        &daemon,
        "`session end` of the first `guarded` session",
        |e| is_event(e, "session end", "guarded") && e["pid"] == held_pid,
    );
    wait_event(&daemon, "max_lifetime reached", |e| {
        is_event(e, "max_lifetime", "lifetime") && e["pid"] == sleeper
    });
    wait_event(&daemon, "`session end` of `lifetime`", |e| {
        is_event(e, "session end", "lifetime") && e["pid"] == sleeper
    });
    let start = wait_event(&daemon, "`session start` of `logged`", |e| {
        is_event(e, "session start", "logged") && e["peer"] == peer_text(client)
    });
    let logged_pid = start["pid"].clone();
    assert_eq!(start["local"], format!("127.0.0.1:{}", port(4)), "{start}");
    let end = wait_event(&daemon, "`session end` of `logged`", |e| {
        is_event(e, "session end", "logged") && e["pid"] == logged_pid
    });
    assert_eq!(end["status"], "exit 0", "{end}");
    let events = json_events(&daemon);
    assert!(events.len() >= 10, "{} events", events.len());

    // The child's stderr line: a `program output` INFO event with the
    // service, the pid and the line in `output`.
    let stderr = wait_event(&daemon, "the child's stderr line", |e| {
        is_event(e, "program output", "logged")
    });
    assert_eq!(stderr["pid"], logged_pid, "{stderr}");
    assert_eq!(stderr["level"], "INFO", "{stderr}");
    assert_eq!(stderr["output"], "portable-stderr-line", "{stderr}");
}

/// Issue 16 item 17: with `log_format = "json"` every line is JSON, the
/// `listening on` lines too (they were plain text), and they name the
/// service, the address and the command; `duration` is a number of
/// seconds (it was a string such as `"1.2ms"`).
#[test]
fn json_lines_all_parse_and_name_what_listens() {
    let daemon = portable_builder().start();
    let (echo, lifetime) = (daemon.port(0), daemon.port(5));
    assert_eq!(request_to(v4(echo), b"json\n"), "json\n");
    wait_event(&daemon, "`session end` of `echo`", |e| {
        is_event(e, "session end", "echo")
    });

    let lines = daemon.lines();
    let events: Vec<Event> = json_events(&daemon);
    let listening: Vec<_> = events
        .iter()
        .filter(|e| e["message"] == "listening on")
        .collect();
    // Seven addresses: echo has two.
    assert_eq!(listening.len(), 7, "{lines:#?}");
    for event in &listening {
        assert_eq!(event["level"], "INFO", "{event:?}");
        assert!(event["timestamp"].is_string(), "{event:?}");
        let address: SocketAddr = event["address"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {event:?}"));
        let command = event["command"].as_str().expect("a command");
        assert!(command.starts_with("wininetd-testchild"), "{event:?}");
        if address.port() == lifetime {
            assert_eq!(event["service"], "lifetime", "{event:?}");
            assert_eq!(command, "wininetd-testchild sleep 30");
        }
    }
    let mut services: Vec<&str> = listening
        .iter()
        .map(|e| e["service"].as_str().expect("a service name"))
        .collect();
    services.sort_unstable();
    services.dedup();
    assert_eq!(
        services,
        ["echo", "env", "guarded", "lifetime", "logged", "rated"]
    );

    let end = events
        .iter()
        .find(|e| e["message"] == "session end" && e["service"] == "echo")
        .expect("waited for above");
    let duration = end["duration"].as_f64().unwrap_or_else(|| {
        panic!("duration is not a number: {end:?}");
    });
    assert!((0.0..WAIT.as_secs_f64()).contains(&duration), "{end:?}");
}

/// Issue 16 item 17, in text: `duration=` is seconds, a plain number (it
/// was Rust's `Debug` of a `Duration`, e.g. `1.234567ms`).
#[test]
fn text_duration_is_seconds() {
    let daemon = Daemon::builder().service("none", &child("echo")).start();
    let mut stream = connect(daemon.port(0));
    let client = stream.local_addr().expect("local_addr");
    stream.shutdown(Shutdown::Write).expect("half-close");
    read_to_eof(&mut stream, WAIT).expect("EOF");
    let (_, pid) = daemon.session_start(client);
    let end = daemon.session_end(pid);
    let duration: f64 = field(&end, "duration")
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no duration=SECONDS in {end:?}"));
    assert!((0.0..WAIT.as_secs_f64()).contains(&duration), "{end:?}");
}

/// Issue 16 item 2, in JSON: a program's stderr line was the event's
/// `message`, so a program could write events of the daemon's own. It is
/// now the `output` member of a `program output` event, any control
/// character escaped by JSON, bytes that are not UTF-8 replaced.
#[test]
fn program_output_is_its_own_member_in_json() {
    const FORGED: &[u8] =
        b"session end service=ssh pid=1 status=exit 0\r\t\0 \"q\" \\ \x1b[2J \xff";
    let mut bytes = FORGED.to_vec();
    bytes.push(b'\n');
    let config = [
        "log_format = \"json\"\n\n".to_owned(),
        toml_service(
            "forger",
            "\"127.0.0.1:{port0}\"",
            &child_argv(&["stderr-hex", &hex(&bytes)]),
            &[r#"stderr = "log""#],
        ),
    ]
    .concat();
    let daemon = Daemon::builder().toml(&config).start();
    assert_eq!(request_to(v4(daemon.port(0)), b""), "");
    let start = wait_event(&daemon, "`session start`", |e| {
        is_event(e, "session start", "forger")
    });
    let output = wait_event(&daemon, "the program's output", |e| {
        e["message"] == "program output"
    });
    assert_eq!(output["service"], "forger");
    assert_eq!(output["pid"], start["pid"]);
    assert_eq!(output["level"], "INFO");
    assert_eq!(output["stream"], "stderr");
    assert_eq!(
        output["output"].as_str(),
        Some(&*String::from_utf8_lossy(FORGED))
    );
    wait_event(&daemon, "`session end`", |e| {
        is_event(e, "session end", "forger")
    });
    for line in daemon.lines() {
        assert!(!line.contains(|c: char| c.is_control()), "{line:?}");
        let event = json_object(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_ne!(event["service"], Value::from("ssh"), "{line}");
    }
}

/// Issue 16 item 5: log lines were written on the runtime thread, so a log
/// reader that stopped reading (not closed: a stopped `tee`) blocked every
/// accept once the pipe was full. The daemon's stderr here is a pipe the
/// test holds unread while sessions log thousands of lines (four services
/// whose programs write 200 lines each to the log, within their budgets):
/// every session is still served. Then the test reads, and finds the
/// count of the lines that were dropped.
#[test]
fn a_log_reader_that_stops_reading_blocks_no_session() {
    const CHATTY: usize = 4;
    let dir = tempfile::tempdir().expect("temp dir");
    let echo = free_port();
    let chatty: Vec<u16> = (0..CHATTY).map(|_| free_port()).collect();
    let mut config = toml_service(
        "echo",
        &format!("\"127.0.0.1:{echo}\""),
        &child_argv(&["echo"]),
        &[],
    );
    for (i, port) in chatty.iter().enumerate() {
        config.push_str(&toml_service(
            &format!("chatty{i}"),
            &format!("\"127.0.0.1:{port}\""),
            &child_argv(&["stderr-lines", "200"]),
            &[r#"stderr = "log""#],
        ));
    }
    let path = dir.path().join("wininetd.toml");
    fs::write(&path, &config).expect("write the config");
    let mut daemon = Started(
        Command::new(DAEMON)
            .arg("--debug")
            .arg("--cfgfile")
            .arg(daemon_path(&path))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wininetd"),
    );
    // Held, not read: the `listening on` lines are in it. So every port
    // is probed until it accepts (a chatty probe logs its 200 lines too).
    let stderr = daemon.stderr.take().expect("stderr is piped");
    for port in chatty.iter().chain([&echo]) {
        wait_connectable(*port);
    }

    // 10 rounds of 4 x 200 lines: 8000 lines, more than a pipe and the
    // daemon's queue of 4096 lines hold. Each round ends with an echo.
    for round in 0..10 {
        for port in &chatty {
            assert_eq!(request_to(v4(*port), b""), "", "round {round}");
        }
        let answer = request_to(v4(echo), b"still served\n");
        assert_eq!(answer, "still served\n", "round {round}");
    }
    let running = daemon.try_wait().expect("wait");
    assert!(running.is_none(), "wininetd exited: {running:?}");

    // Now read: the queued lines come, then the count of those dropped.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + WAIT;
    let mut seen = 0;
    let dropped = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("log lines dropped") => break line,
            Ok(_) => seen += 1,
            Err(e) => panic!("no count of dropped lines after {seen} lines: {e}"),
        }
    };
    let count: u64 = field(&dropped, "lines")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no lines=N in {dropped:?}"));
    assert!(count > 0, "{dropped}");
    assert!(dropped.contains(" WARN "), "{dropped}");
    // Reading again, the daemon serves and logs as before.
    assert_eq!(request_to(v4(echo), b"again\n"), "again\n");
}

/// A log nobody reads loses its lines and nothing else, on both systems:
/// the daemon's stdout and stderr are pipes whose reading ends the test
/// closes at once (as when `tee` or a log collector ends), and the daemon
/// serves on.
#[test]
fn a_log_nobody_reads_loses_only_its_lines() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = dir.path().join("wininetd.conf");
    fs::write(&config, format!("{port} none {}\n", child("echo"))).expect("write the config");
    let mut daemon = Started(
        Command::new(DAEMON)
            .arg("--debug")
            .arg("--cfgfile")
            .arg(daemon_path(&config))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wininetd"),
    );
    drop(daemon.stdout.take());
    drop(daemon.stderr.take());
    // Nothing can tell when it listens: its `listening on` line goes
    // nowhere. Each session logs lines that cannot be written.
    wait_connectable(port);
    for i in 0..4 {
        assert_eq!(request_to(v4(port), b"ping\n"), "ping\n", "session {i}");
    }
    let exited = daemon.try_wait().expect("wait");
    assert!(exited.is_none(), "wininetd exited: {exited:?}");
}
