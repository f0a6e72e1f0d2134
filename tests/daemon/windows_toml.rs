//! The extended (TOML) config where Windows differs from Linux
//! (toml_config.rs tests what both share): the real `wininetd.exe` with a
//! `*.toml` config, here under Wine (wine.md):
//!
//! ```text
//! cargo test --target x86_64-pc-windows-gnu --test daemon windows_toml -- --test-threads=1
//! ```
//!
//! A per-service `stdio`, told apart by `timeout`, which only the pipe
//! relay applies on Windows (not by a full-duplex child, which Wine serves
//! on a synchronous socket and Windows does not); and a reload through the
//! service manager (Wine's `sc` has no `control` command, so the test sends
//! ParamChange through ControlService itself, which is what `sc control`
//! does). The harness is tests/common/mod.rs ([`Daemon`]) and windows.rs
//! ([`InstalledService`], [`EventLog`]).
#![cfg(windows)]

use std::fs;
use std::io::{self, Write};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    Daemon, WAIT, assert_silent, child_argv, connect, free_port, has_token, read_line, request,
    run, toml_service, toml_str, windows_path,
};
use crate::toml_config::check_diagnostics;
use crate::windows::{
    EventLog, InstalledService, SERVICE, run_daemon, service_status, wait_service_state,
};

// ===========================================================================
// Helpers
// ===========================================================================

/// One `[[service]]` table listening on `listen`, a bare `ADDR:PORT`
/// (see [`toml_service`]).
fn service_at(name: &str, listen: &str, command: &str, extra: &[&str]) -> String {
    toml_service(name, &toml_str(listen), command, extra)
}

// ===========================================================================
// Tests
// ===========================================================================

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

/// Issue 18, item 3: Windows serves no Unix socket. A `unix:` address is a
/// config error at its value's line and column, with `--check` and at
/// start, which then listens nowhere (not on the config's other services
/// either).
#[test]
fn a_unix_socket_is_a_config_error_naming_its_line() {
    let text = [
        "# A TCP service, then a Unix socket one.\n\n".to_owned(),
        service_at("tcp", "127.0.0.1:{port0}", &child_argv(&["echo"]), &[]),
        toml_service(
            "unix",
            &toml_str("unix:/tmp/wininetd-test.sock"),
            &child_argv(&["echo"]),
            &[],
        ),
    ]
    .concat();
    let line = 1 + text
        .lines()
        .position(|l| l.starts_with("listen = \"unix:"))
        .expect("the unix: line");
    let expected = format!(
        "{line}:10: error: Unix sockets are not supported on this system: listen on a TCP or UDP port"
    );

    let (diagnostics, code) = check_diagnostics(&text);
    assert_eq!(code, Some(1), "--check: {diagnostics:?}");
    assert_eq!(diagnostics, std::slice::from_ref(&expected));

    let mut daemon = Daemon::builder().toml(&text).spawn();
    let status = daemon.wait_exit(WAIT);
    assert_eq!(
        status.code(),
        Some(1),
        "a start with the error ({status:?})"
    );
    let prefix = format!("{}:", daemon.config_name());
    assert!(
        daemon
            .lines()
            .iter()
            .any(|l| l.strip_prefix(&prefix) == Some(expected.as_str())),
        "{expected:?} at start"
    );
    assert_eq!(daemon.count(|l| l.contains("listening on")), 0);
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
    assert!(out.success(), "{}", out);
    let out = run("net", &["start", SERVICE]);
    assert!(out.success(), "{}", out);
    wait_service_state(ServiceState::Running, WAIT);
    assert_eq!(request(port, b""), "GREETING=before reload\n");

    // A good config: new connections see it.
    write_config(&config("after reload"));
    let out = run_daemon(&["--reload"]);
    assert!(out.success(), "{}", out);
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

    let out = run("sc", &["stop", SERVICE]);
    assert!(out.success(), "{}", out);
    wait_service_state(ServiceState::Stopped, WAIT);
    let out = run_daemon(&["--remove"]);
    assert!(out.success(), "{}", out);
    assert!(service_status().is_none(), "the service is gone");
    drop(service);
}
