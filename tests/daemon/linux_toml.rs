//! The extended config format where Linux differs from Windows
//! (toml_config.rs tests what both share): `user` and `group`, a
//! `working_dir` that is gone, the socket options a program reads on its
//! socket, the listen queue, IPv6 source prefixes on addresses of their own,
//! `password` (ignored, with a warning), every problem at its key, the
//! extreme values, and the examples.

use std::collections::HashMap;
use std::fs;
use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;
use std::process::Command;

use wininetd::config::bounds;

use crate::common::{
    CHILD, DAEMON, Daemon, LoopbackV6, TestUser, WAIT, assert_root, attempt, child_argv, connect,
    describe, field, first_line, is_root, number_after, pid_child, read_line, read_to_eof, request,
    request_to, toml_service, toml_str, v6,
};
use crate::toml_config::{check, check_diagnostics};

// ---------------------------------------------------------------------------
// The program: user, group, working_dir
// ---------------------------------------------------------------------------

/// `user` gives the user's uid and primary group; `group` replaces the
/// group. Needs root (it creates a user).
#[test]
#[ignore = "needs root"]
fn user_and_group_set_the_childs_ids() {
    let user = TestUser::create("toml");
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
/// LISTEN socket is its backlog). Needs `ss` (iproute2).
fn listen_backlog(port: u16) -> u32 {
    let out = Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .unwrap_or_else(|e| panic!("this test needs `ss` (iproute2): {e}"));
    assert!(out.status.success(), "ss failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .next()
        .unwrap_or_else(|| panic!("ss shows no listener on port {port}"));
    let columns: Vec<&str> = line.split_whitespace().collect();
    // State Recv-Q Send-Q Local Peer
    columns[2].parse().expect("Send-Q is a number")
}

#[test]
fn backlog_sets_the_listen_queue() {
    let config = [
        toml_service("small", "{port0}", &child_argv(&["echo"]), &["backlog = 7"]),
        toml_service("default", "{port1}", &child_argv(&["echo"]), &[]),
    ]
    .concat();
    let daemon = Daemon::builder().toml(&config).start();
    assert_eq!(listen_backlog(daemon.port(0)), 7, "backlog = 7");
    let default = listen_backlog(daemon.port(1));
    assert!(
        default >= 128,
        "the default backlog is at least 128: {default}"
    );
}

// ---------------------------------------------------------------------------
// IPv6 sources
// ---------------------------------------------------------------------------

/// `source_prefix_v6` groups IPv6 sources for the per-source limits. Three
/// addresses are added to `lo` (root only): A and B in one /64, C in the
/// next /64 of the same /48. With `max_per_source = 1` and a session from A
/// held: by /128, B is another source; by the default /64, B is the same and
/// C another; by /48, C is the same too.
#[test]
#[ignore = "needs root"]
fn source_prefix_v6_groups_ipv6_sources() {
    let pid = std::process::id();
    // A /48 of our own (ULA, fd00::/8), so parallel runs do not share one.
    let (high, low) = ((pid >> 16) as u16, (pid & 0xffff) as u16);
    let a = Ipv6Addr::new(0xfd57, high, low, 0, 0, 0, 0, 1);
    let b = Ipv6Addr::new(0xfd57, high, low, 0, 0, 0, 0, 2);
    let c = Ipv6Addr::new(0xfd57, high, low, 1, 0, 0, 0, 1);
    let _addrs = LoopbackV6::add(&[a, b, c]);
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

// ---------------------------------------------------------------------------
// --check
// ---------------------------------------------------------------------------

/// On Unix, `password` (with a user) is ignored with a warning, and never
/// printed.
#[test]
#[ignore = "needs root"]
fn password_is_ignored_with_a_warning() {
    const PASSWORD: &str = "s3cr3t-toml-pa55";
    assert_root("a service with a user");
    let text = toml_service(
        "win",
        "7007",
        &child_argv(&["echo"]),
        &[
            "user = \"root\"",
            &format!("password = {}", toml_str(PASSWORD)),
        ],
    );
    let (daemon, code) = check(&text);
    assert_eq!(code, Some(0), "warnings only:\n{}", daemon.report());
    let warnings: Vec<String> = daemon
        .lines()
        .into_iter()
        .filter(|l| l.contains(": warning: "))
        .collect();
    assert!(
        warnings.len() == 1 && warnings[0].contains("password"),
        "one warning, about the password: {warnings:?}"
    );
    for text in [daemon.stderr_text(), daemon.stdout_text()] {
        assert!(!text.contains(PASSWORD), "the password is printed");
    }
}

/// Every file in examples/ passes `--check`.
#[test]
fn examples_pass_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    // examples/tls.toml names the certificate its comments tell how to
    // make: made so here.
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "365", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost"])
        .args([
            "-keyout",
            "/tmp/wininetd-key.pem",
            "-out",
            "/tmp/wininetd-cert.pem",
        ])
        .output()
        .expect("run openssl (Debian package openssl)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    fs::set_permissions(
        "/tmp/wininetd-key.pem",
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod the key");
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

/// Issue 18, item 3: the users and groups of a Unix socket service's
/// options are looked up at load, each unknown one an error at its value;
/// numbers are taken as they are.
#[test]
fn unix_socket_accounts_are_looked_up_at_their_values() {
    let text = format!(
        "[[service]]\nname = \"u\"\nlisten = \"unix:/tmp/wininetd-check.sock\"\ncommand = {}\n\
         socket_owner = \"no-such-user-wininetd\"\nsocket_group = 0\n\
         allow_uid = [0, \"root\", \"no-such-user-wininetd\"]\nallow_gid = [\"no-such-group-wininetd\"]\n",
        child_argv(&["echo"])
    );
    let (diagnostics, code) = check_diagnostics(&text);
    assert_eq!(code, Some(1), "{diagnostics:?}");
    assert_eq!(
        diagnostics[..3],
        [
            "5:16: error: unknown user \"no-such-user-wininetd\"",
            "7:25: error: unknown user \"no-such-user-wininetd\"",
            "8:14: error: unknown group \"no-such-group-wininetd\"",
        ]
    );
    let good = text
        .replace("\"no-such-user-wininetd\"", "\"root\"")
        .replace("\"no-such-group-wininetd\"", "\"root\"");
    let (diagnostics, code) = check_diagnostics(&good);
    assert_eq!(code, Some(0), "{diagnostics:?}");
}
