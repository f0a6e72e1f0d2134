//! The extended config format (a file named `*.toml`), on Linux and
//! Windows alike: each field has a test that fails if the daemon ignores
//! it, `[defaults]` and the global settings, and `--check`'s
//! `FILE:LINE:COL` diagnostics. Admission and reload have their own modules
//! (Linux); these tests only show that each field takes effect. What only
//! Linux has (users, socket options, the listen queue) is linux_toml.rs's,
//! what only Windows has windows_toml.rs's.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::{
    Attempt, Daemon, MODES, SINGLE_QUOTED_ARGS, UTF16_ENCODINGS, WAIT, assert_silent,
    assert_stderr_logged, attempt, child, child_argv, connect, connect_from, connection_refused,
    first_line, has_field, has_token, is_alive, is_event, json_events, lo, peer_text, pid_child,
    pid_in, read_line, read_to_eof, request, request_to, same_dir, toml_service, toml_str, v4, v6,
    wait_event, wait_gone,
};

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

/// A string is split like the flat format's command line (double quotes
/// group words on both systems; single quotes only on Unix, where the split
/// is a shell's); an argv array is taken as is, each element one argument
/// whatever it holds (on Windows each is quoted for CreateProcessW's
/// command line, so spaces, quotes, a trailing backslash and an empty
/// element survive).
#[test]
fn command_as_string_is_split_and_as_array_is_not() {
    let config = [
        toml_service(
            "split",
            "{port0}",
            &toml_str(&child(r#"args "a b" c"#)),
            &[],
        ),
        toml_service(
            "single",
            "{port1}",
            &toml_str(&child("args 'one two' three")),
            &[],
        ),
        toml_service(
            "argv",
            "{port2}",
            &child_argv(&["args", "a b", r#"say "hi""#, r"C:\my dir\", "", "'one two'"]),
            &[],
        ),
    ]
    .concat();
    let daemon = Daemon::builder().toml(&config).start();
    assert_eq!(
        request(daemon.port(0), b""),
        "arg[0]=a b\narg[1]=c\nargc=2\n"
    );
    assert_eq!(request(daemon.port(1), b""), SINGLE_QUOTED_ARGS);
    assert_eq!(
        request(daemon.port(2), b""),
        "arg[0]=a b\narg[1]=say \"hi\"\narg[2]=C:\\my dir\\\narg[3]=\narg[4]='one two'\nargc=5\n"
    );
}

// ---------------------------------------------------------------------------
// The program: env, working_dir, stderr
// ---------------------------------------------------------------------------

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
    let daemon = Daemon::builder()
        .toml(&toml_service(
            "cwd",
            "{port0}",
            &child_argv(&["cwd"]),
            &["working_dir = '{dir}'"],
        ))
        .start();
    let line = first_line(daemon.port(0));
    let cwd = line
        .strip_prefix("cwd=")
        .unwrap_or_else(|| panic!("{line:?}"));
    assert!(
        same_dir(cwd, &daemon.dir()),
        "the program ran in {cwd:?}, not {}",
        daemon.dir().display()
    );
}

/// `stderr = "log"`, in both stdio modes: each line the program writes to
/// stderr is a log line with the service and the program's pid, and the
/// client gets none of it.
#[test]
fn stderr_to_the_log() {
    const MARK: &str = "stderr-mark-to-log-5e1";
    let config = MODES
        .iter()
        .enumerate()
        .map(|(i, stdio)| {
            toml_service(
                &format!("errlog-{stdio}"),
                &format!("{{port{i}}}"),
                &child_argv(&["stderr", MARK]),
                &[r#"stderr = "log""#, &format!("stdio = {}", toml_str(stdio))],
            )
        })
        .collect::<String>();
    let daemon = Daemon::builder().toml(&config).start();
    for (i, stdio) in MODES.iter().enumerate() {
        assert_stderr_logged(&daemon, daemon.port(i), &format!("errlog-{stdio}"), MARK);
    }
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

/// `max_per_source`: a second concurrent session from one source is
/// refused (with the `reject_message`), another source is served
/// meanwhile, and once the first session ends the source is served again.
#[test]
fn max_per_source_refuses_the_excess_of_one_source() {
    let daemon = Daemon::builder()
        .toml(&toml_service(
            "per-source",
            "{port0}",
            &pid_child(),
            &[
                "max_per_source = 1",
                r#"reject_message = "one at a time\n""#,
            ],
        ))
        .start();
    let dest = v4(daemon.port(0));
    let (held, pid) = attempt(Some(lo(2)), dest).served("the first client from 127.0.0.2");
    let text = attempt(Some(lo(2)), dest).refused("a second client from 127.0.0.2");
    assert_eq!(text, "one at a time\n");
    let _other = attempt(Some(lo(3)), dest).served("a client from 127.0.0.3");
    daemon.wait_for("refused with rule=max_per_source", WAIT, |l| {
        l.contains("refused")
            && has_field(l, "rule", "max_per_source")
            && l.contains("peer=127.0.0.2:")
    });

    // The slot comes back when the session ends.
    drop(held);
    let end = daemon.session_end(pid);
    assert!(has_field(&end, "service", "per-source"), "{end}");
    attempt(Some(lo(2)), dest).served("127.0.0.2 once its first session ended");
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

/// `reject_message` is what a refused client reads before the close,
/// whichever rule refused it (here `deny`, which wins over `allow`, and
/// `allow`); without it, the close comes alone. The log names the rule,
/// the source and the service, and a refused client gets no session.
#[test]
fn reject_message_is_sent_before_the_close() {
    const MESSAGE: &str = "busy, try later\r\nreally\n";
    let config = [
        toml_service(
            "polite",
            "{port0}",
            &pid_child(),
            &[
                r#"allow = ["127.0.0.0/30"]"#,
                r#"deny = ["127.0.0.2"]"#,
                &format!("reject_message = {}", toml_str(MESSAGE)),
            ],
        ),
        toml_service(
            "terse",
            "{port1}",
            &pid_child(),
            &[r#"deny = ["127.0.0.2"]"#],
        ),
    ]
    .concat();
    let daemon = Daemon::builder().toml(&config).start();
    let polite = v4(daemon.port(0));
    let (_served, pid) = attempt(Some(lo(1)), polite).served("127.0.0.1");
    assert!(is_alive(pid));
    let mut stream = connect_from(lo(2), polite);
    let data = read_to_eof(&mut stream, WAIT).expect("the message, then EOF");
    assert_eq!(
        String::from_utf8_lossy(&data),
        MESSAGE,
        "127.0.0.2, in `deny`"
    );
    let outside = attempt(Some(lo(5)), polite).refused("127.0.0.5, outside `allow`");
    assert_eq!(outside, MESSAGE);
    let text = attempt(Some(lo(2)), v4(daemon.port(1))).refused("denied on `terse`");
    assert_eq!(text, "", "no message configured");

    for (source, rule) in [(lo(2), "deny"), (lo(5), "allow")] {
        let line = daemon.wait_for(&format!("refusing {source} by {rule}"), WAIT, |l| {
            l.contains("refused")
                && has_field(l, "rule", rule)
                && l.contains(&format!("peer={source}:"))
                && has_field(l, "service", "polite")
        });
        assert!(!line.contains("session start"), "{line}");
    }
    let refused_sessions = daemon.count(|l| {
        l.contains("session start")
            && has_field(l, "service", "polite")
            && !l.contains("peer=127.0.0.1:")
    });
    assert_eq!(refused_sessions, 0, "a refused client got a session");
}

/// `max_lifetime` ends the whole process tree of a session that outlives
/// it, the grandchild too, in both stdio modes.
#[test]
fn max_lifetime_kills_the_process_tree() {
    let config = MODES
        .iter()
        .enumerate()
        .map(|(i, stdio)| {
            toml_service(
                &format!("short-{stdio}"),
                &format!("{{port{i}}}"),
                &child_argv(&["grandchild", "60"]),
                &["max_lifetime = 1", &format!("stdio = {}", toml_str(stdio))],
            )
        })
        .collect::<String>();
    let daemon = Daemon::builder().toml(&config).start();
    // Both sessions at once: each lives its second meanwhile.
    let sessions: Vec<_> = MODES
        .iter()
        .enumerate()
        .map(|(i, stdio)| {
            let connected = Instant::now();
            let mut stream = connect(daemon.port(i));
            // The grandchild (`sleep` mode) says `sleeping pid=N` on the
            // same connection, before or after its parent's line.
            let line = loop {
                let line = read_line(&mut stream, WAIT);
                if line.starts_with("parent ") {
                    break line;
                }
            };
            let (parent, grandchild) = (pid_in(&line, "pid"), pid_in(&line, "grandchild"));
            assert!(is_alive(parent) && is_alive(grandchild), "{stdio}: {line}");
            (connected, stream, parent, grandchild)
        })
        .collect();
    for (stdio, (connected, mut stream, parent, grandchild)) in MODES.iter().zip(sessions) {
        wait_gone(parent, WAIT);
        wait_gone(grandchild, WAIT);
        let lived = connected.elapsed();
        assert!(
            lived >= Duration::from_millis(900),
            "{stdio}: killed after {lived:?}, before max_lifetime"
        );
        read_to_eof(&mut stream, WAIT).expect("EOF once the tree is gone");
        let line = daemon.wait_for("`max_lifetime`", WAIT, |l| {
            l.contains("max_lifetime") && has_token(l, &format!("pid={parent}"))
        });
        assert!(
            has_field(&line, "service", &format!("short-{stdio}")),
            "{line}"
        );
        daemon.session_end(parent);
    }
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

/// `log_format = "json"`: every log line is one JSON object; session
/// start, end, refusal and the program's stderr carry their fields.
#[test]
fn json_log_format() {
    const MARK: &str = "json-stderr-mark-31f";
    let config = [
        "log_format = \"json\"\n\n".to_owned(),
        toml_service(
            "jsonsvc",
            "\"127.0.0.1:{port0}\"",
            &child_argv(&["echo"]),
            &[r#"deny = ["127.0.0.2"]"#],
        ),
        toml_service(
            "jsonerr",
            "\"127.0.0.1:{port1}\"",
            &child_argv(&["stderr", MARK]),
            &[r#"stderr = "log""#],
        ),
    ]
    .concat();
    let daemon = Daemon::builder().toml(&config).start();
    let port = daemon.port(0);
    let mut stream = connect(port);
    let client = stream.local_addr().expect("local_addr");
    stream.write_all(b"json\n").expect("send");
    stream.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(read_to_eof(&mut stream, WAIT).expect("echo"), b"json\n");
    let refused = connect_from(lo(2), v4(port));
    let refused_peer = refused.local_addr().expect("local_addr");
    drop(refused);
    assert_eq!(request(daemon.port(1), b""), "");

    let start = wait_event(&daemon, "`session start`", |e| {
        is_event(e, "session start", "jsonsvc")
    });
    assert_eq!(start["peer"], peer_text(client), "{start}");
    assert_eq!(start["local"], format!("127.0.0.1:{port}"), "{start}");
    let pid = start["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("pid: {start}"));

    let end = wait_event(&daemon, "`session end`", |e| {
        is_event(e, "session end", "jsonsvc")
    });
    assert_eq!(end["peer"], peer_text(client), "{end}");
    assert_eq!(end["local"], format!("127.0.0.1:{port}"), "{end}");
    assert_eq!(end["pid"], pid, "{end}");
    assert_eq!(end["status"], "exit 0", "{end}");
    assert!(end["duration"].is_number(), "{end}");

    let refusal = wait_event(&daemon, "a refusal", |e| is_event(e, "refused", "jsonsvc"));
    assert_eq!(refusal["peer"], peer_text(refused_peer), "{refusal}");
    assert_eq!(refusal["rule"], "deny", "{refusal}");
    assert_eq!(refusal["local"], format!("127.0.0.1:{port}"), "{refusal}");
    assert!(
        refusal["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{refusal}"
    );

    // stderr = "log": a `program output` INFO event with the service, the
    // program's pid and the line in `output` (issue 16: not the message).
    let start = wait_event(&daemon, "`session start` of `jsonerr`", |e| {
        is_event(e, "session start", "jsonerr")
    });
    let stderr = wait_event(&daemon, "the program's stderr line", |e| {
        is_event(e, "program output", "jsonerr")
    });
    assert_eq!(stderr["pid"], start["pid"], "{stderr}");
    assert_eq!(stderr["level"], "INFO", "{stderr}");
    assert_eq!(stderr["output"], MARK, "{stderr}");
    let events = json_events(&daemon);
    assert!(events.len() >= 6, "{} events", events.len());
}

// ---------------------------------------------------------------------------
// [defaults]
// ---------------------------------------------------------------------------

/// `[defaults]` gives every service the options it does not set; a
/// service's own value wins.
#[test]
fn defaults_are_inherited_and_overridden() {
    let own = tempfile::tempdir().expect("temp dir");
    let own_dir = crate::common::daemon_path(own.path());
    let config = [
        "[defaults]\nenv = { FROM = \"defaults\" }\nworking_dir = '{dir}'\n\n".to_owned(),
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
            &[&format!(
                "working_dir = {}",
                toml_str(&own_dir.display().to_string())
            )],
        ),
    ]
    .concat();
    let daemon = Daemon::builder().toml(&config).start();
    assert_eq!(request(daemon.port(0), b""), "FROM=defaults\n");
    assert_eq!(request(daemon.port(1), b""), "FROM=service\n");
    for (port, dir) in [(daemon.port(2), daemon.dir()), (daemon.port(3), own_dir)] {
        let line = first_line(port);
        let cwd = line
            .strip_prefix("cwd=")
            .unwrap_or_else(|| panic!("{line:?}"));
        assert!(same_dir(cwd, &dir), "{cwd:?} is not {}", dir.display());
    }
}

// ---------------------------------------------------------------------------
// --check
// ---------------------------------------------------------------------------

/// Runs `--check` on `text` as a `.toml` file; returns the finished daemon
/// and its exit code.
pub(crate) fn check(text: &str) -> (Daemon, Option<i32>) {
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

/// `stdio = "pipe"` works on every system, so it draws no warning (a
/// `password`, which only Windows uses, draws one on Unix: linux_toml.rs).
#[test]
fn stdio_pipe_draws_no_warning() {
    let text = toml_service(
        "piped",
        "7007",
        &child_argv(&["echo"]),
        &["stdio = \"pipe\""],
    );
    let (daemon, code) = check(&text);
    assert_eq!(code, Some(0), "{}", daemon.report());
    let warnings = daemon.count(|l| l.contains("warning"));
    assert_eq!(warnings, 0, "{}", daemon.report());
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
// Issue 16: numbers in range, UTF-16
// ---------------------------------------------------------------------------

/// The diagnostics `--check` printed for `text`, as `LINE:COL: error: …`
/// (the file's name cut off), in order; and its exit code.
pub(crate) fn check_diagnostics(text: &str) -> (Vec<String>, Option<i32>) {
    let (daemon, code) = check(text);
    let prefix = format!("{}:", daemon.config_name());
    let lines = daemon
        .lines()
        .into_iter()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .collect();
    (lines, code)
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

/// Issue 16, item 20: a UTF-16 TOML file (Notepad's "Unicode") is read,
/// and its problems are at the same line and column as in UTF-8.
#[test]
fn a_utf16_toml_config_is_read() {
    let good = format!(
        "# caf\u{e9}\r\n{}",
        toml_service("caf\u{e9}", "7105", &child_argv(&["echo"]), &[])
    );
    let bad = format!("{}\ntimeout = \"\u{e9}\"\n", good.trim_end());
    for (encode, name) in UTF16_ENCODINGS {
        // `--check` of `text` in this encoding, with the exit code expected.
        let check = |text: &str, code: i32| {
            let mut daemon = Daemon::builder()
                .toml(text)
                .encoded(encode)
                .arg("--check")
                .no_debug()
                .spawn();
            assert_eq!(
                daemon.wait_exit(WAIT).code(),
                Some(code),
                "{}",
                daemon.report()
            );
            daemon
        };
        let daemon = check(&good, 0);
        let summary = format!(
            "{}: ok, 1 service(s), 0 warning(s), {name}",
            daemon.config_name()
        );
        assert!(
            daemon.stdout_text().contains(&summary),
            "{summary:?} missing:\n{}",
            daemon.report()
        );

        let daemon = check(&bad, 1);
        let at = format!(
            "{}:6:11: error: `timeout` must be an integer",
            daemon.config_name()
        );
        assert!(
            daemon.stderr_text().contains(&at),
            "{at:?} missing:\n{}",
            daemon.report()
        );
    }
}

/// Issue 18, item 5: the keys of the new kinds of service are checked
/// like every other: a typo draws "did you mean", a key with no meaning for
/// its kind is an error at the key that says why, and `--check` lists them
/// all, each at its line and column.
#[test]
fn check_lists_the_errors_of_every_kind_of_service() {
    let text = format!(
        "{}{}{}{}",
        toml_service(
            "udp",
            "7201",
            &child_argv(&["echo"]),
            &["protocl = \"udp\""]
        ),
        toml_service(
            "udp-wait",
            "7202",
            &child_argv(&["echo"]),
            &["protocol = \"udp\"", "wait = false", "nodelay = true"]
        ),
        toml_service(
            "tcp-wait",
            "7203",
            &child_argv(&["echo"]),
            &[
                "wait = true",
                "stdio = \"pipe\"",
                "max_sessions = 2",
                "socket_mod = \"0600\""
            ]
        ),
        "[[service]]\nname = \"udp-echo\"\nlisten = 7204\nprotocol = \"udp\"\nbuiltin = \"echo\"\nwait = true\ntimeout = 5\nallow_uid = [0]\n",
    );
    let (diagnostics, code) = check_diagnostics(&text);
    assert_eq!(code, Some(1), "{diagnostics:?}");
    let expected = [
        "5:1: error: unknown key \"protocl\" in [[service]] (did you mean `protocol`?)",
        "12:8: error: a UDP service with a command runs in wait mode",
        "13:1: error: `nodelay` has no meaning for a UDP service: UDP has no connections",
        "20:9: error: `stdio` has no meaning for a wait service: `stdio = \"pipe\"`",
        "21:1: error: `max_sessions` has no meaning for a wait service: a wait service runs one program at a time",
        "22:1: error: unknown key \"socket_mod\" in [[service]] (did you mean `socket_mode`?)",
        "29:8: error: `wait` is for programs",
        "30:1: error: `timeout` has no meaning for a UDP built-in: UDP has no connections",
        "31:1: error: `allow_uid` has no meaning for a UDP built-in: only a Unix socket",
    ];
    for want in expected {
        assert!(
            diagnostics.iter().any(|d| d.starts_with(want)),
            "no {want:?} in {diagnostics:#?}"
        );
    }
    assert_eq!(diagnostics.len(), expected.len(), "{diagnostics:#?}");
}
