//! The extended (TOML) config on Windows: the real `wininetd.exe` with a
//! `*.toml` config, here under Wine (wine.md):
//!
//! ```text
//! cargo test --target x86_64-pc-windows-gnu --test daemon windows_toml
//! ```
//!
//! What each test pins (tests/data/portable.toml is tested on both systems
//! by portable.rs): admission (`allow`/`deny`, `max_per_source`,
//! `reject_message`); what the child gets (an argv array, `env`,
//! `working_dir`); `stderr = "log"`; a per-service `stdio`; `max_lifetime`
//! ending a process tree; `log_format = "json"`; and a reload through the
//! service manager.
//!
//! The harness is tests/common/mod.rs ([`Daemon`]) and windows.rs
//! ([`InstalledService`], [`EventLog`]). What Wine cannot show is left out as there: the
//! per-service `stdio` test tells the modes apart by `timeout`, which only
//! the pipe relay applies, not by a full-duplex child (which Wine serves on
//! a synchronous socket, and Windows does not); Wine's `sc` has no
//! `control` command, so the reload test sends ParamChange through
//! ControlService itself, which is what `sc control` does.
#![cfg(windows)]

use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    CHILD, DAEMON, Daemon, WAIT, assert_silent, assert_stderr_logged, attempt, child_argv, connect,
    connect_from, free_port, has_token, is_alive, is_event, json_events, must, peer_text,
    read_line, read_to_eof, request, toml_service, toml_str, v4, wait_event, wait_gone,
    windows_path,
};
use crate::windows::{
    EventLog, InstalledService, SERVICE, describe_run, env_value, run_daemon, run_tool,
    service_status, wait_service_state,
};

// ===========================================================================
// Helpers
// ===========================================================================

/// One `[[service]]` table listening on `listen`, a bare `ADDR:PORT`
/// (see [`toml_service`]).
fn service_at(name: &str, listen: &str, command: &str, extra: &[&str]) -> String {
    toml_service(name, &toml_str(listen), command, extra)
}

/// 127.0.0.`n`: Windows (and Wine) answer on all of 127/8.
fn lo(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// The number after `key=` in a child's line such as `parent pid=P
/// grandchild=G`.
fn pid_in(line: &str, key: &str) -> u32 {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no {key}=N in {line:?}"))
}

// ===========================================================================
// Tests: admission
// ===========================================================================

/// `deny` wins, a non-empty `allow` must hold the source, and a refused
/// client reads the `reject_message` before the close; the log names the
/// rule.
#[test]
fn allow_and_deny_refuse_with_the_reject_message() {
    const MESSAGE: &str = "not from there\r\n";
    let daemon = Daemon::builder()
        .toml(&service_at(
            "guarded",
            "127.0.0.1:{port0}",
            &child_argv(&["pid"]),
            &[
                r#"allow = ["127.0.0.0/30"]"#,
                r#"deny = ["127.0.0.2"]"#,
                &format!("reject_message = {}", toml_str(MESSAGE)),
            ],
        ))
        .start();
    let dest = v4(daemon.port(0));
    let (_served, pid) = attempt(Some(lo(1)), dest).served("127.0.0.1");
    assert!(is_alive(pid));
    let denied = attempt(Some(lo(2)), dest).refused("127.0.0.2, in `deny`");
    assert_eq!(denied, MESSAGE);
    let outside = attempt(Some(lo(5)), dest).refused("127.0.0.5, outside `allow`");
    assert_eq!(outside, MESSAGE);

    for (source, rule) in [(lo(2), "deny"), (lo(5), "allow")] {
        let line = daemon.wait_for(&format!("refusing {source} by {rule}"), WAIT, |l| {
            l.contains("refused")
                && has_token(l, &format!("rule={rule}"))
                && l.contains(&format!("peer={source}:"))
        });
        assert!(has_token(&line, "service=guarded"), "{line}");
    }
    let refused_sessions = daemon
        .lines()
        .iter()
        .filter(|l| l.contains("session start") && !l.contains("peer=127.0.0.1:"))
        .count();
    assert_eq!(refused_sessions, 0, "a refused client got a session");
}

/// `max_per_source`: a second concurrent session from one source is
/// refused, another source is served meanwhile, and once the first ends
/// the source is served again.
#[test]
fn max_per_source_refuses_a_second_concurrent_session() {
    let daemon = Daemon::builder()
        .toml(&service_at(
            "one-each",
            "127.0.0.1:{port0}",
            &child_argv(&["pid"]),
            &[
                "max_per_source = 1",
                r#"reject_message = "one at a time\n""#,
            ],
        ))
        .start();
    let dest = v4(daemon.port(0));
    let (held, pid) = attempt(Some(lo(2)), dest).served("the first client of 127.0.0.2");
    let text = attempt(Some(lo(2)), dest).refused("a second client of 127.0.0.2");
    assert_eq!(text, "one at a time\n");
    let (_other, _) = attempt(Some(lo(3)), dest).served("127.0.0.3");
    daemon.wait_for("a refusal by max_per_source", WAIT, |l| {
        l.contains("refused")
            && has_token(l, "rule=max_per_source")
            && l.contains("peer=127.0.0.2:")
    });

    // The slot comes back when the session ends.
    drop(held);
    let end = daemon.session_end(pid);
    assert!(has_token(&end, "service=one-each"), "{end}");
    attempt(Some(lo(2)), dest).served("127.0.0.2 once its first session ended");
}

// ===========================================================================
// Tests: what the child gets
// ===========================================================================

/// `command` as an argv array reaches the program as those arguments, as
/// on Linux: each element is quoted for CreateProcessW's command line
/// (CommandLineToArgvW rules), so spaces, quotes and an empty element
/// survive. The string form is passed as written, as WinInetd did.
#[test]
fn an_argv_array_reaches_the_program_unchanged() {
    let config = [
        service_at(
            "array",
            "127.0.0.1:{port0}",
            &child_argv(&["args", "a b", r#"say "hi""#, r"C:\my dir\", ""]),
            &[],
        ),
        service_at(
            "string",
            "127.0.0.1:{port1}",
            &toml_str(&format!(r#""{}" args "a b" c"#, windows_path(CHILD))),
            &[],
        ),
    ]
    .concat();
    let daemon = Daemon::builder().toml(&config).start();
    assert_eq!(
        request(daemon.port(0), b""),
        "arg[0]=a b\narg[1]=say \"hi\"\narg[2]=C:\\my dir\\\narg[3]=\nargc=4\n"
    );
    assert_eq!(
        request(daemon.port(1), b""),
        "arg[0]=a b\narg[1]=c\nargc=2\n"
    );
}

/// `env` adds variables to the child's environment, over the daemon's;
/// `working_dir` is the child's current directory.
#[test]
fn env_and_working_dir_reach_the_child() {
    let config = [
        service_at(
            "env",
            "127.0.0.1:{port0}",
            &child_argv(&["env", "GREETING", "WININETD_T_OVER", "WININETD_T_KEEP"]),
            &[r#"env = { GREETING = "hi there", WININETD_T_OVER = "service" }"#],
        ),
        service_at(
            "cwd",
            "127.0.0.1:{port1}",
            &child_argv(&["cwd"]),
            &["working_dir = '{dir}'"],
        ),
    ]
    .concat();
    let daemon = Daemon::builder()
        .toml(&config)
        .env("WININETD_T_OVER", "daemon")
        .env("WININETD_T_KEEP", "daemon")
        .start();
    let output = request(daemon.port(0), b"");
    assert_eq!(env_value(&output, "GREETING"), Some("hi there"), "{output}");
    assert_eq!(env_value(&output, "WININETD_T_OVER"), Some("service"));
    assert_eq!(env_value(&output, "WININETD_T_KEEP"), Some("daemon"));

    let output = request(daemon.port(1), b"");
    let cwd = output
        .trim_end()
        .strip_prefix("cwd=")
        .unwrap_or_else(|| panic!("{output:?}"));
    let expected = daemon.dir().display().to_string();
    assert!(
        cwd.trim_end_matches('\\')
            .eq_ignore_ascii_case(expected.trim_end_matches('\\')),
        "the child ran in {cwd:?}, not {expected:?}"
    );
}

/// `stderr = "log"`, in both stdio modes: each line the child writes to
/// stderr is a log line with the service and the child's pid, and the
/// client gets none of it.
#[test]
fn stderr_to_the_log() {
    const MARK: &str = "stderr-to-log-mark-7d2";
    let config = ["socket", "pipe"]
        .iter()
        .enumerate()
        .map(|(i, stdio)| {
            service_at(
                &format!("errlog-{stdio}"),
                &format!("127.0.0.1:{{port{i}}}"),
                &child_argv(&["stderr", MARK]),
                &[r#"stderr = "log""#, &format!("stdio = {}", toml_str(stdio))],
            )
        })
        .collect::<String>();
    let daemon = Daemon::builder().toml(&config).start();
    for (i, stdio) in ["socket", "pipe"].iter().enumerate() {
        assert_stderr_logged(&daemon, daemon.port(i), &format!("errlog-{stdio}"), MARK);
    }
}

/// A per-service `stdio`: one config serves one service through the pipe
/// relay and another on the socket itself. Told apart by `timeout`, which
/// only the relay can apply (a synchronous socket ignores SO_RCVTIMEO): the
/// pipe service's child sees the end of its input after a second, the
/// socket service's child keeps waiting; and the daemon warns about the
/// socket service only.
#[test]
fn stdio_is_chosen_per_service() {
    let config = [
        service_at(
            "piped",
            "127.0.0.1:{port0}",
            &child_argv(&["read-timeout"]),
            &[r#"stdio = "pipe""#, "timeout = 1"],
        ),
        service_at(
            "socketed",
            "127.0.0.1:{port1}",
            &child_argv(&["read-timeout"]),
            &["timeout = 1"],
        ),
    ]
    .concat();
    let daemon = Daemon::builder().toml(&config).start();

    let connected = Instant::now();
    let mut piped = connect(daemon.port(0));
    assert_eq!(read_line(&mut piped, WAIT), "reading");
    let line = read_line(&mut piped, WAIT);
    let waited = connected.elapsed();
    assert!(line.starts_with("read ok 0 "), "piped: {line:?}");
    assert!(
        waited >= Duration::from_millis(950),
        "piped: the input ended {waited:?} after connecting, before the timeout"
    );

    let mut socketed = connect(daemon.port(1));
    assert_eq!(read_line(&mut socketed, WAIT), "reading");
    assert_silent(&mut socketed, Duration::from_millis(2500));
    socketed.write_all(b"late\n").expect("send");
    let line = read_line(&mut socketed, WAIT);
    assert!(line.starts_with("read ok 5 "), "socketed: {line:?}");

    let warnings: Vec<String> = daemon
        .lines()
        .into_iter()
        .filter(|l| l.contains("--timeout has no effect"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(has_token(&warnings[0], "service=socketed"), "{warnings:?}");
}

/// `max_lifetime` ends the session's whole process tree: the child and the
/// grandchild it started, in both stdio modes.
#[test]
fn max_lifetime_ends_the_process_tree() {
    let config = ["socket", "pipe"]
        .iter()
        .enumerate()
        .map(|(i, stdio)| {
            service_at(
                &format!("short-{stdio}"),
                &format!("127.0.0.1:{{port{i}}}"),
                &child_argv(&["grandchild", "30"]),
                &["max_lifetime = 1", &format!("stdio = {}", toml_str(stdio))],
            )
        })
        .collect::<String>();
    let daemon = Daemon::builder().toml(&config).start();
    for (i, stdio) in ["socket", "pipe"].iter().enumerate() {
        let connected = Instant::now();
        let mut stream = connect(daemon.port(i));
        let line = read_line(&mut stream, WAIT);
        let (parent, grandchild) = (pid_in(&line, "pid"), pid_in(&line, "grandchild"));
        assert!(is_alive(parent) && is_alive(grandchild), "{stdio}: {line}");
        wait_gone(parent, WAIT);
        wait_gone(grandchild, WAIT);
        let lived = connected.elapsed();
        assert!(
            lived >= Duration::from_millis(900),
            "{stdio}: ended after {lived:?}, before max_lifetime"
        );
        read_to_eof(&mut stream, WAIT).expect("EOF once the tree is gone");
        let line = daemon.wait_for("`max_lifetime`", WAIT, |l| {
            l.contains("max_lifetime") && has_token(l, &format!("pid={parent}"))
        });
        assert!(
            has_token(&line, &format!("service=short-{stdio}")),
            "{line}"
        );
        daemon.session_end(parent);
    }
}

// ===========================================================================
// Tests: JSON logs
// ===========================================================================

/// `log_format = "json"`: every log line is one JSON object; session start,
/// end, refusal and the child's stderr carry their fields.
#[test]
fn json_log_lines_are_one_object_each() {
    const MARK: &str = "json-stderr-mark-31f";
    let config = [
        "log_format = \"json\"\n\n".to_owned(),
        service_at(
            "jsonsvc",
            "127.0.0.1:{port0}",
            &child_argv(&["echo"]),
            &[r#"deny = ["127.0.0.2"]"#],
        ),
        service_at(
            "jsonerr",
            "127.0.0.1:{port1}",
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
    assert_eq!(must(&start, "peer"), peer_text(client));
    assert_eq!(must(&start, "local"), format!("127.0.0.1:{port}"));
    let pid = must(&start, "pid").to_owned();
    assert!(pid.parse::<u32>().is_ok(), "pid: {pid}");

    let end = wait_event(&daemon, "`session end`", |e| {
        is_event(e, "session end", "jsonsvc")
    });
    assert_eq!(must(&end, "peer"), peer_text(client));
    assert_eq!(must(&end, "local"), format!("127.0.0.1:{port}"));
    assert_eq!(must(&end, "pid"), pid);
    assert_eq!(must(&end, "status"), "exit 0");
    assert!(!must(&end, "duration").is_empty());

    let refusal = wait_event(&daemon, "a refusal", |e| is_event(e, "refused", "jsonsvc"));
    assert_eq!(must(&refusal, "peer"), peer_text(refused_peer));
    assert_eq!(must(&refusal, "rule"), "deny");
    assert_eq!(must(&refusal, "local"), format!("127.0.0.1:{port}"));
    assert!(!must(&refusal, "reason").is_empty());
    let events = json_events(&daemon);
    assert!(events.len() >= 3, "{} events", events.len());

    // stderr = "log": a `program output` INFO event with the service, the
    // child's pid and the line in `output` (issue 16: not the message).
    let start = wait_event(&daemon, "`session start` of `jsonerr`", |e| {
        is_event(e, "session start", "jsonerr")
    });
    let stderr = wait_event(&daemon, "the child's stderr line", |e| {
        is_event(e, "program output", "jsonerr")
    });
    assert_eq!(must(&stderr, "pid"), must(&start, "pid"));
    assert_eq!(must(&stderr, "level"), "INFO");
    assert_eq!(must(&stderr, "output"), MARK);
    json_events(&daemon);
}

// ===========================================================================
// Tests: reload through the service manager
// ===========================================================================

/// Sends the service `wininetd` the ParamChange control, as `sc control
/// wininetd paramchange` does (Wine's `sc` has no `control` command), without
/// the daemon's own `--reload` code.
fn send_paramchange() {
    use windows_sys::Win32::System::Services::{
        CloseServiceHandle, ControlService, OpenSCManagerW, OpenServiceW, SC_MANAGER_CONNECT,
        SERVICE_CONTROL_PARAMCHANGE, SERVICE_PAUSE_CONTINUE, SERVICE_STATUS,
    };
    let name: Vec<u16> = SERVICE.encode_utf16().chain([0]).collect();
    #[allow(unsafe_code)]
    // SAFETY: null machine and database names are allowed; `name` is
    // NUL-terminated; each handle, when not null, is ours and closed once;
    // `status` is plain data that ControlService fills in.
    let result = unsafe {
        let manager = OpenSCManagerW(std::ptr::null(), std::ptr::null(), SC_MANAGER_CONNECT);
        if manager.is_null() {
            Err(format!("OpenSCManagerW: {}", io::Error::last_os_error()))
        } else {
            let service = OpenServiceW(manager, name.as_ptr(), SERVICE_PAUSE_CONTINUE);
            let result = if service.is_null() {
                Err(format!("OpenServiceW: {}", io::Error::last_os_error()))
            } else {
                let mut status = std::mem::zeroed::<SERVICE_STATUS>();
                let sent = ControlService(service, SERVICE_CONTROL_PARAMCHANGE, &mut status);
                let result = if sent == 0 {
                    Err(format!("ControlService: {}", io::Error::last_os_error()))
                } else {
                    Ok(())
                };
                CloseServiceHandle(service);
                result
            };
            CloseServiceHandle(manager);
            result
        }
    };
    if let Err(e) = result {
        panic!("cannot send ParamChange to {SERVICE}: {e}");
    }
}

/// The service `wininetd` with a TOML config: a reload (ParamChange, sent by
/// `wininetd --reload`, or by the service manager's API as `sc control
/// wininetd paramchange` does) applies a
/// changed config to new connections on the same listener; a broken config
/// is refused, logged as `reload failed`, and the old one keeps serving.
#[test]
fn service_reloads_a_toml_config_on_paramchange() {
    use windows_service::service::ServiceState;
    // Before the service guard, so that the service is removed before the
    // config it reads goes away.
    let dir = tempfile::Builder::new()
        .prefix("wininetd-service-")
        .tempdir()
        .expect("temp dir");
    let service = InstalledService::prepare();
    let port = free_port();
    let config_path = windows_path(&dir.path().join("wininetd.toml").display().to_string());
    let config = |greeting: &str| {
        service_at(
            "greet",
            &format!("127.0.0.1:{port}"),
            &child_argv(&["env", "GREETING"]),
            &[&format!("env = {{ GREETING = {} }}", toml_str(greeting))],
        )
    };
    // Replaced by a rename, so a reload never reads half a file.
    let write_config = |text: &str| {
        let staging = format!("{config_path}.new");
        fs::write(&staging, text).expect("write the new config");
        fs::rename(&staging, &config_path).expect("replace the config");
    };
    write_config(&config("before reload"));
    let events = EventLog::begin();

    let install = ["--install", "--cfgfile", &config_path];
    let out = run_daemon(&install);
    assert!(
        out.status.success(),
        "{}",
        describe_run(DAEMON, &install, &out)
    );
    let out = run_tool("net", &["start", SERVICE], WAIT);
    assert!(
        out.status.success(),
        "{}",
        describe_run("net", &["start", SERVICE], &out)
    );
    wait_service_state(ServiceState::Running, WAIT);
    assert_eq!(request(port, b""), "GREETING=before reload\n");

    // A good config: new connections see it.
    write_config(&config("after reload"));
    let out = run_daemon(&["--reload"]);
    assert!(
        out.status.success(),
        "{}",
        describe_run(DAEMON, &["--reload"], &out)
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let output = request(port, b"");
        if output == "GREETING=after reload\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {output:?} {WAIT:?} after --reload; events:\n{}",
            events.events().join("\n")
        );
        thread::sleep(Duration::from_millis(50));
    }
    events.wait_for("`reload done`", WAIT, |e| e.contains("reload done"));

    // A broken config: refused, logged, and the old one keeps serving.
    write_config(&format!(
        "{}no_such_field = 1\n",
        config("from a broken config")
    ));
    send_paramchange();
    events.wait_for("`reload failed`", WAIT, |e| e.contains("reload failed"));
    assert_eq!(request(port, b""), "GREETING=after reload\n");
    assert_eq!(
        service_status().map(|s| s.current_state),
        Some(ServiceState::Running)
    );

    let out = run_tool("sc", &["stop", SERVICE], WAIT);
    assert!(
        out.status.success(),
        "{}",
        describe_run("sc", &["stop", SERVICE], &out)
    );
    wait_service_state(ServiceState::Stopped, WAIT);
    let out = run_daemon(&["--remove"]);
    assert!(
        out.status.success(),
        "{}",
        describe_run(DAEMON, &["--remove"], &out)
    );
    assert!(service_status().is_none(), "the service is gone");
    drop(service);
}
