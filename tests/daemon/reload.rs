//! Reload on SIGHUP (issue 4): new settings for new connections while
//! running sessions go on, a broken config that changes nothing, removed
//! services that close their port but finish their sessions, added services
//! that bind, and listeners that stay open through many reloads under load;
//! a FIFO where the config was, a comment that changes nothing, and a
//! config rewritten in UTF-16 (issue 16).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    Daemon, WAIT, attempt, child, child_argv, connect, connect_to, connection_refused, field,
    free_port, has_token, is_alive, read_line, read_to_eof, request, toml_service, utf16, v4,
    wait_refused,
};

fn echo_service(name: &str, port: &str, extra: &[&str]) -> String {
    toml_service(name, port, &child_argv(&["echo"]), extra)
}

/// Sends a line on an echo session and expects it back.
fn echo_line(stream: &mut TcpStream, line: &str) {
    stream
        .write_all(format!("{line}\n").as_bytes())
        .expect("send on the running session");
    assert_eq!(read_line(stream, WAIT), line, "the running session echoes");
}

/// A changed command: new connections run the new program; the session that
/// was running keeps its program and ends normally.
#[test]
fn changed_command_applies_to_new_connections_only() {
    let mut daemon = Daemon::builder()
        .toml(&echo_service("svc", "{port0}", &[]))
        .start();
    let port = daemon.port(0);
    let mut running = connect(port);
    let client = running.local_addr().expect("local_addr");
    echo_line(&mut running, "before the reload");
    let (_, pid) = daemon.session_start(client);

    let outcome = daemon.reload(&toml_service(
        "svc",
        "{port0}",
        &child_argv(&["args", "new"]),
        &[],
    ));
    assert!(outcome.contains("reload done"), "{outcome}");
    assert!(
        outcome.contains("svc"),
        "the reload line names the service: {outcome}"
    );
    assert_eq!(request(port, b""), "arg[0]=new\nargc=1\n");

    echo_line(&mut running, "after the reload");
    assert!(is_alive(pid), "the running session's child");
    running.shutdown(Shutdown::Write).expect("half-close");
    read_to_eof(&mut running, WAIT).expect("EOF");
    let end = daemon.session_end(pid);
    assert!(end.contains("status=exit 0"), "ended normally: {end}");
}

/// A config with errors: `reload failed`, the errors logged, and the old
/// config keeps serving; a good config afterwards is taken.
#[test]
fn broken_config_keeps_the_old_one() {
    let mut daemon = Daemon::builder()
        .toml(&echo_service("svc", "{port0}", &[]))
        .start();
    let port = daemon.port(0);
    let outcome = daemon.reload("[[service]]\nname = \"svc\"\nlisten = {port0}\ncommand = [\n");
    assert!(outcome.contains("reload failed"), "{outcome}");
    let file = daemon.config_name();
    daemon.wait_for("naming the config file's error", WAIT, |l| {
        l.contains(&file) && l.contains("error")
    });
    assert_eq!(request(port, b"still the old one\n"), "still the old one\n");

    // Valid TOML, but a program that does not exist: an error too.
    let outcome = daemon.reload(&toml_service(
        "svc",
        "{port0}",
        "[\"no-such-program-wininetd\"]",
        &[],
    ));
    assert!(outcome.contains("reload failed"), "{outcome}");
    assert_eq!(request(port, b"and again\n"), "and again\n");

    let outcome = daemon.reload(&toml_service(
        "svc",
        "{port0}",
        &child_argv(&["args", "fixed"]),
        &[],
    ));
    assert!(outcome.contains("reload done"), "{outcome}");
    assert_eq!(request(port, b""), "arg[0]=fixed\nargc=1\n");
}

/// A removed service: its port closes (connections refused), its running
/// session goes on and ends normally; the service that stays serves.
#[test]
fn removed_service_closes_its_port_and_lets_sessions_finish() {
    let both = [
        echo_service("keep", "{port0}", &[]),
        toml_service("gone-svc", "{port1}", &child_argv(&["pid"]), &[]),
    ]
    .concat();
    let mut daemon = Daemon::builder().toml(&both).start();
    let (keep, gone) = (daemon.port(0), daemon.port(1));
    let (mut running, pid) = attempt(None, v4(gone)).served("a session of `gone-svc`");

    let outcome = daemon.reload(&echo_service("keep", "{port0}", &[]));
    assert!(outcome.contains("reload done"), "{outcome}");
    assert!(
        outcome.contains("gone-svc"),
        "the reload line names it: {outcome}"
    );
    wait_refused(v4(gone), Duration::from_secs(5));
    assert!(is_alive(pid), "the removed service's session runs on");
    assert_eq!(request(keep, b"kept\n"), "kept\n");

    running.shutdown(Shutdown::Write).expect("half-close");
    read_to_eof(&mut running, WAIT).expect("EOF");
    let end = daemon.session_end(pid);
    assert!(end.contains("status=exit 0"), "ended normally: {end}");
}

/// An added service binds its port (with a `listening on` line) and serves.
#[test]
fn added_service_binds() {
    let mut daemon = Daemon::builder()
        .toml(&echo_service("first", "{port0}", &[]))
        .start();
    let outcome = daemon.reload(
        &[
            echo_service("first", "{port0}", &[]),
            toml_service("fresh-svc", "{port1}", &child_argv(&["args", "added"]), &[]),
        ]
        .concat(),
    );
    assert!(outcome.contains("reload done"), "{outcome}");
    assert!(
        outcome.contains("fresh-svc"),
        "the reload line names it: {outcome}"
    );
    let added = daemon.port(1);
    daemon.wait_for_line(&format!("listening on [::]:{added} "), WAIT);
    assert_eq!(request(added, b""), "arg[0]=added\nargc=1\n");
    assert_eq!(request(daemon.port(0), b"first\n"), "first\n");
}

/// What the load thread saw.
#[derive(Debug, Default)]
struct Load {
    done: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

/// Full requests on the echo service at `port`, one after another, from a
/// thread of their own until [`Requests::finish`].
struct Requests {
    load: Arc<Load>,
    stop: Arc<AtomicBool>,
    client: thread::JoinHandle<()>,
}

impl Requests {
    fn start(port: u16) -> Self {
        let load = Arc::new(Load::default());
        let stop = Arc::new(AtomicBool::new(false));
        let client = {
            let (load, stop) = (Arc::clone(&load), Arc::clone(&stop));
            thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    if let Err(failure) = one_request(port, n) {
                        load.failures
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(failure);
                    }
                    load.done.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
            })
        };
        Self { load, stop, client }
    }

    /// Requests done so far.
    fn done(&self) -> usize {
        self.load.done.load(Ordering::Relaxed)
    }

    /// Waits until at least `at_least` requests are done.
    fn wait_for(&self, at_least: usize) {
        let deadline = Instant::now() + WAIT;
        while self.done() < at_least {
            assert!(
                Instant::now() < deadline,
                "the load thread is stuck at {} requests",
                self.done()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the requests: how many were done, and the failures.
    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.client.join().expect("the load thread does not panic");
        let failures = self.load.failures.lock().unwrap_or_else(|p| p.into_inner());
        (self.load.done.load(Ordering::Relaxed), failures.clone())
    }
}

/// One full request on the echo service: connect, send, half-close, read
/// to EOF, compare.
fn one_request(port: u16, n: usize) -> Result<(), String> {
    let line = format!("request {n}\n");
    let mut stream = TcpStream::connect_timeout(&v4(port), WAIT)
        .map_err(|e| format!("request {n}: connect: {e} ({:?})", e.kind()))?;
    let io = |e: io::Error| format!("request {n}: {e} ({:?})", e.kind());
    stream.set_read_timeout(Some(WAIT)).map_err(io)?;
    stream.write_all(line.as_bytes()).map_err(io)?;
    stream.shutdown(Shutdown::Write).map_err(io)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(io)?;
    if answer == line.as_bytes() {
        Ok(())
    } else {
        Err(format!(
            "request {n}: answer {:?}",
            String::from_utf8_lossy(&answer)
        ))
    }
}

/// 20 reloads, alternating between two valid configs that both keep the
/// `steady` service (its env and another service change), while a client
/// makes full requests to `steady` one after another: none is refused,
/// reset or answered wrong, and requests run between every two reloads.
#[test]
fn reloads_under_load_lose_no_connection() {
    const RELOADS: usize = 20;
    let config = |generation: &str| {
        [
            echo_service(
                "steady",
                "{port0}",
                &[&format!("env = {{ GENERATION = \"{generation}\" }}")],
            ),
            toml_service("other", "{port1}", &child_argv(&["args", generation]), &[]),
        ]
        .concat()
    };
    let mut daemon = Daemon::builder().toml(&config("a")).start();
    let port = daemon.port(0);

    let requests = Requests::start(port);
    requests.wait_for(3);
    for i in 1..=RELOADS {
        let generation = if i % 2 == 1 { "b" } else { "a" };
        let outcome = daemon.reload(&config(generation));
        assert!(outcome.contains("reload done"), "reload {i}: {outcome}");
        // Requests between every two reloads, not all before or after.
        requests.wait_for(requests.done() + 2);
    }
    let (done, failures) = requests.finish();
    assert!(
        failures.is_empty(),
        "{} of {done} requests failed during reloads, first ones: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert_eq!(
        daemon.count(|l| l.contains("reload done")),
        RELOADS,
        "every SIGHUP reloaded once"
    );
    assert_eq!(daemon.count(|l| l.contains("reload failed")), 0);
    // The last config (generation a) is the one in force.
    assert_eq!(request(daemon.port(1), b""), "arg[0]=a\nargc=1\n");
    assert!(!connection_refused(v4(port)), "`steady` still listens");
    eprintln!("{done} requests across {RELOADS} reloads, none failed");
}

/// Regression (issue 16, item 8): a reload that changed a service's
/// `stdio` left it with no listener (the new socket was bound before the
/// old one was closed: "Address already in use"), while the log said
/// "reload done". The listening socket is kept now: no connection is
/// refused, and new sessions get the new mode.
#[test]
fn a_stdio_change_keeps_the_listener() {
    let mut daemon = Daemon::builder()
        .toml(&echo_service("svc", "{port0}", &[]))
        .start();
    let port = daemon.port(0);
    let requests = Requests::start(port);
    let outcome = daemon.reload(&echo_service("svc", "{port0}", &["stdio = \"pipe\""]));
    let (done, failures) = requests.finish();
    assert!(outcome.contains("reload done"), "{outcome}");
    assert!(
        failures.is_empty(),
        "{failures:?} of {done} requests failed"
    );
    assert_eq!(daemon.count(|l| l.contains("cannot listen")), 0);
    let kinds = toml_service(
        "svc",
        "{port0}",
        &child_argv(&["stdio-kinds"]),
        &["stdio = \"pipe\""],
    );
    assert!(daemon.reload(&kinds).contains("reload done"));
    let answer = request(port, b"");
    assert!(
        answer.starts_with("fd0=fifo:"),
        "pipe mode after the reload: {answer}"
    );
}

/// Regression (issue 16, item 8): moving a service from every address to
/// one address on the same port (`20703` → `"127.0.0.1:20703"`) failed
/// the same way. The old listener is closed first, then the new address
/// is bound.
#[test]
fn a_listen_address_on_the_same_port_is_bound_after_the_old_one_closes() {
    let mut daemon = Daemon::builder()
        .toml(&echo_service("svc", "{port0}", &[]))
        .start();
    let port = daemon.port(0);
    assert_eq!(request(port, b"before\n"), "before\n");
    let outcome = daemon.reload(&echo_service("svc", "\"127.0.0.1:{port0}\"", &[]));
    assert!(outcome.contains("reload done"), "{outcome}");
    assert_eq!(daemon.count(|l| l.contains("cannot listen")), 0);
    daemon.wait_for_line(&format!("listening on 127.0.0.1:{port}"), WAIT);
    assert_eq!(request(port, b"after\n"), "after\n");
    // Back to every address.
    let outcome = daemon.reload(&echo_service("svc", "{port0}", &[]));
    assert!(outcome.contains("reload done"), "{outcome}");
    assert_eq!(request(port, b"and back\n"), "and back\n");
}

/// When the address that replaces a closed one cannot be bound, the
/// reload fails as a whole: `reload failed` at error level, the old
/// listener is bound again, and the old config keeps serving.
#[test]
fn a_failed_rebind_puts_the_old_listener_back() {
    let mut daemon = Daemon::builder()
        .toml(&echo_service("svc", "{port0}", &[]))
        .start();
    let port = daemon.port(0);
    // 192.0.2.1 (TEST-NET-1) is on no interface here: its bind fails,
    // after the old listener on the same port has been closed. Nothing is
    // ever sent to it.
    let outcome = daemon.reload(&echo_service(
        "svc",
        "[\"127.0.0.1:{port0}\", \"192.0.2.1:{port0}\"]",
        &["env = { NEW = \"1\" }"],
    ));
    assert!(outcome.contains("reload failed"), "{outcome}");
    assert!(outcome.contains("ERROR"), "at error level: {outcome}");
    assert_eq!(daemon.count(|l| l.contains("reload done")), 0);
    assert_eq!(request(port, b"old config\n"), "old config\n");
    let v6 = crate::common::v6(port);
    if !connection_refused(v6) {
        // The old listener is back on every address (where this host has
        // IPv6 loopback).
        let mut stream = connect_to(v6);
        echo_line(&mut stream, "over IPv6");
    }
}

/// Regression (issue 16, item 9): a reload read the config on the thread
/// that accepts, so a FIFO as the config stopped all accepting, and a
/// SIGTERM waited until someone wrote to it. The config is read on a
/// thread of its own now (and only a regular file is read at all): the
/// daemon serves meanwhile and stops at once.
#[test]
fn a_fifo_as_config_stops_neither_serving_nor_stopping() {
    let mut daemon = Daemon::builder()
        .toml(&echo_service("svc", "{port0}", &[]))
        .start();
    let port = daemon.port(0);
    let path = daemon.config_path().to_owned();
    std::fs::remove_file(&path).expect("remove the config");
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL");
    #[allow(unsafe_code)]
    // SAFETY: a valid C string; mkfifo(3) touches nothing else.
    let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) };
    assert_eq!(rc, 0, "mkfifo: {}", io::Error::last_os_error());
    daemon.send_signal(libc::SIGHUP);
    daemon.wait_for_line("reload requested", WAIT);
    // The daemon serves meanwhile.
    for i in 0..3 {
        let line = format!("while the reload waits {i}\n");
        assert_eq!(request(port, line.as_bytes()), line);
    }
    let began = Instant::now();
    daemon.send_signal(libc::SIGTERM);
    let status = daemon.wait_exit(WAIT);
    assert!(status.success(), "{status:?}");
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "the stop took {:?}",
        began.elapsed()
    );
}

/// Issue 16, item 9: a reload that found a FIFO as its config stopped all
/// accepting, and delayed SIGTERM, until someone wrote to the FIFO. It now
/// fails at once, and the old config goes on serving.
#[test]
fn a_reload_that_finds_a_fifo_fails_and_keeps_serving() {
    let mut daemon = Daemon::builder().service("none", &child("echo")).start();
    let port = daemon.port(0);
    std::fs::remove_file(daemon.config_path()).expect("remove the config");
    let made = std::process::Command::new("mkfifo")
        .arg(daemon.config_path())
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    daemon.send_signal(libc::SIGHUP);
    let failed = daemon.wait_for_line("reload failed", WAIT);
    let file = daemon.config_name();
    daemon.wait_for("the reason, naming the file", WAIT, |l| {
        l.contains(&file) && l.contains("not a regular file")
    });
    assert_eq!(request(port, b"served\n"), "served\n", "{failed}");
    daemon.send_signal(libc::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{}", daemon.report());
}

/// Issue 16, item 10: a reload that only added a comment line said every
/// service "changed" (their line numbers were compared).
#[test]
fn a_reload_that_adds_a_comment_changes_nothing() {
    let echo = child("echo");
    let template = format!("{{port0}} none {echo}\n{{port1}} none {echo}\n");
    let mut daemon = Daemon::builder().raw_config(&template).start();
    let outcome = daemon.reload(&format!("# a comment\n\n{template}"));
    assert!(outcome.contains("reload done"), "{outcome}");
    assert_eq!(field(&outcome, "changed"), Some(""), "{outcome}");
    let unchanged = field(&outcome, "unchanged").unwrap_or_default();
    for port in [daemon.port(0), daemon.port(1)] {
        assert!(
            unchanged.split(',').any(|n| n == port.to_string()),
            "{port} unchanged: {outcome}"
        );
    }
    // A real change is one.
    let outcome = daemon.reload(&format!(
        "# a comment\n\n{{port0}} none {}\n{{port1}} none {echo}\n",
        child("args x")
    ));
    assert_eq!(
        field(&outcome, "changed"),
        Some(daemon.port(0).to_string().as_str()),
        "{outcome}"
    );
}

/// Issue 16, item 20, on a reload: a config rewritten in UTF-16 is read,
/// and the program of a service it adds gets its arguments decoded.
#[test]
fn a_utf16_config_serves_after_a_reload() {
    let echo = child("echo");
    let daemon = Daemon::builder()
        .raw_config(&format!("{{port0}} none {echo}\n"))
        .start();
    let port1 = free_port();
    let text = format!(
        "# caf\u{e9}\r\n{} none {echo}\r\n{port1} none {}\r\n",
        daemon.port(0),
        child("args caf\u{e9}")
    );
    let path = daemon.config_path().to_owned();
    let staging = path.with_extension("new");
    std::fs::write(&staging, utf16(&text, true)).expect("write");
    std::fs::rename(&staging, &path).expect("replace the config");
    daemon.send_signal(libc::SIGHUP);
    let outcome = daemon.wait_for_line("reload done", WAIT);
    assert!(has_token(&outcome, &format!("added={port1}")), "{outcome}");
    assert_eq!(request(port1, b""), "arg[0]=caf\u{e9}\nargc=1\n");
}
