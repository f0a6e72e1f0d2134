//! The extended (TOML) config on Windows: the real `wininetd.exe` with a
//! `*.toml` config, here under Wine (wine.md):
//!
//! ```text
//! cargo test --target x86_64-pc-windows-gnu --test daemon windows_toml
//! ```
//!
//! What each test pins: that tests/data/portable.toml passes `--check` and
//! serves exactly as on Linux (tests/daemon/portable.rs makes the same
//! assertions); admission (`allow`/`deny`, `max_per_source`,
//! `reject_message`); what the child gets (an argv array, `env`,
//! `working_dir`); `stderr = "log"`; a per-service `stdio`; `max_lifetime`
//! ending a process tree; `log_format = "json"`; and a reload through the
//! service manager.
//!
//! The harness is windows.rs's ([`Daemon`], [`InstalledService`],
//! [`EventLog`]). What Wine cannot show is left out as there: the
//! per-service `stdio` test tells the modes apart by `timeout`, which only
//! the pipe relay applies, not by a full-duplex child (which Wine serves on
//! a synchronous socket, and Windows does not); Wine's `sc` has no
//! `control` command, so the reload test sends ParamChange through
//! ControlService itself, which is what `sc control` does.
#![cfg(windows)]

use std::fs;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::windows::{
    CHILD, DAEMON, Daemon, DaemonBuilder, EventLog, InstalledService, SERVICE, WAIT, assert_silent,
    connect, connect_from, connect_to, describe_run, env_value, free_port, has_token, is_timeout,
    peer_text, process_alive, read_line, read_to_eof, request, run_daemon, run_tool,
    service_status, v4, v6, wait_gone, wait_service_state, windows_path,
};

/// The config both OSes accept (see the file's header).
const PORTABLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/portable.toml");

// ===========================================================================
// Helpers
// ===========================================================================

/// `text` as a TOML basic string, quotes included (a Windows path's
/// backslashes escaped).
fn toml_str(text: &str) -> String {
    let mut out = String::from('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML argv array that runs the test child by its absolute path:
/// `["Z:\\...\\wininetd-testchild.exe", ARGS...]`.
fn child_argv(args: &[&str]) -> String {
    let child = windows_path(CHILD);
    let items: Vec<String> = std::iter::once(child.as_str())
        .chain(args.iter().copied())
        .map(toml_str)
        .collect();
    format!("[{}]", items.join(", "))
}

/// One `[[service]]` table; `extra` holds more `key = value` lines.
fn toml_service(name: &str, listen: &str, command: &str, extra: &[&str]) -> String {
    let mut text = format!(
        "[[service]]\nname = {}\nlisten = {}\ncommand = {command}\n",
        toml_str(name),
        toml_str(listen)
    );
    for line in extra {
        text.push_str(line);
        text.push('\n');
    }
    text.push('\n');
    text
}

/// 127.0.0.`n`: Windows (and Wine) answer on all of 127/8.
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

/// What a client got from a service whose child speaks first (the `pid`
/// mode: `pid=N`, then it waits for EOF).
#[derive(Debug)]
enum Attempt {
    /// The child answered; the session runs until `stream` is closed.
    Served { stream: TcpStream, pid: u32 },
    /// The connection was closed (EOF or reset) after `text` (the
    /// `reject_message`, or nothing).
    Refused { text: String },
}

impl Attempt {
    /// The stream of a served attempt; panics, saying `who`, if refused.
    fn served(self, who: &str) -> (TcpStream, u32) {
        match self {
            Self::Served { stream, pid } => (stream, pid),
            Self::Refused { text } => panic!("{who} should be served, was refused after {text:?}"),
        }
    }

    /// The text a refused attempt got; panics, saying `who`, if served.
    fn refused(self, who: &str) -> String {
        match self {
            Self::Refused { text } => text,
            Self::Served { pid, .. } => panic!("{who} should be refused, was served (pid {pid})"),
        }
    }
}

/// Connects from `source` (the system's choice when `None`) to `dest` and
/// reads until a `pid=N` line or the close.
fn attempt(source: Option<IpAddr>, dest: SocketAddr) -> Attempt {
    let mut stream = match source {
        Some(source) => connect_from(source, dest),
        None => connect_to(dest),
    };
    let deadline = Instant::now() + WAIT;
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{dest}: neither a line nor a close within {WAIT:?}; read so far: {:?}",
            String::from_utf8_lossy(&data)
        );
        stream
            .set_read_timeout(Some(left))
            .expect("set_read_timeout");
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => {
                data.push(byte[0]);
                if byte[0] == b'\n' {
                    let line = String::from_utf8_lossy(&data);
                    if let Some(pid) = line.trim_end().strip_prefix("pid=") {
                        let pid = pid.parse().expect("pid=N");
                        return Attempt::Served { stream, pid };
                    }
                }
            }
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) =>
            {
                break;
            }
            Err(e) => panic!("{dest}: read: {e}"),
        }
    }
    Attempt::Refused {
        text: String::from_utf8_lossy(&data).into_owned(),
    }
}

/// The number after `key=` in a child's line such as `parent pid=P
/// grandchild=G`.
fn pid_in(line: &str, key: &str) -> u32 {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no {key}=N in {line:?}"))
}

/// The `PATH` under which the daemon finds the test child by its bare name:
/// the child's directory first, then the test's own `PATH`.
fn path_with_the_child() -> String {
    let child = windows_path(CHILD);
    let dir = Path::new(&child)
        .parent()
        .expect("the child is in a directory");
    match std::env::var("PATH") {
        Ok(path) => format!("{};{path}", dir.display()),
        Err(_) => dir.display().to_string(),
    }
}

/// A daemon of tests/data/portable.toml, with the test child on its `PATH`.
fn portable_builder() -> DaemonBuilder {
    let fixture = fs::read_to_string(windows_path(PORTABLE))
        .unwrap_or_else(|e| panic!("read {PORTABLE}: {e}"));
    Daemon::builder()
        .toml(&fixture)
        .env("PATH", &path_with_the_child())
}

// ---------------------------------------------------------------------------
// JSON log lines
// ---------------------------------------------------------------------------

/// One JSON log event: its members, each value as text (a string's value,
/// anything else as written).
type Event = Vec<(String, String)>;

/// A member of `event`.
fn get<'a>(event: &'a Event, key: &str) -> Option<&'a str> {
    event
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A member of `event` that must be there.
fn must<'a>(event: &'a Event, key: &str) -> &'a str {
    get(event, key).unwrap_or_else(|| panic!("no {key:?} in {event:?}"))
}

/// Parses `line` as exactly one JSON object (RFC 8259); `Err` says where it
/// is not one.
fn json_object(line: &str) -> Result<Event, String> {
    let mut parser = JsonParser {
        bytes: line.as_bytes(),
        at: 0,
    };
    let members = parser.object()?;
    parser.blank();
    if parser.at != parser.bytes.len() {
        return Err(format!("trailing text at byte {}", parser.at));
    }
    Ok(members)
}

/// A validating JSON reader, as small as log lines allow: nested values are
/// checked and kept as written; a lone UTF-16 surrogate escape reads as
/// U+FFFD.
struct JsonParser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl JsonParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn blank(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn fail<T>(&self, expected: &str) -> Result<T, String> {
        Err(format!("expected {expected} at byte {}", self.at))
    }

    fn eat(&mut self, byte: u8) -> Result<(), String> {
        self.blank();
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            self.fail(&format!("`{}`", byte as char))
        }
    }

    /// A `,` and `true`, or the closing `end` and `false`.
    fn more(&mut self, end: u8) -> Result<bool, String> {
        self.blank();
        match self.peek() {
            Some(b',') => {
                self.at += 1;
                Ok(true)
            }
            Some(b) if b == end => {
                self.at += 1;
                Ok(false)
            }
            _ => self.fail(&format!("`,` or `{}`", end as char)),
        }
    }

    fn object(&mut self) -> Result<Event, String> {
        self.eat(b'{')?;
        let mut members = Vec::new();
        self.blank();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(members);
        }
        loop {
            self.blank();
            let key = self.string()?;
            self.eat(b':')?;
            let value = self.value()?;
            members.push((key, value));
            if !self.more(b'}')? {
                return Ok(members);
            }
        }
    }

    fn array(&mut self) -> Result<(), String> {
        self.eat(b'[')?;
        self.blank();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(());
        }
        loop {
            self.value()?;
            if !self.more(b']')? {
                return Ok(());
            }
        }
    }

    /// A value: a string's text, anything else as written.
    fn value(&mut self) -> Result<String, String> {
        self.blank();
        let start = self.at;
        match self.peek() {
            Some(b'"') => return self.string(),
            Some(b'{') => drop(self.object()?),
            Some(b'[') => self.array()?,
            Some(b't') => self.word("true")?,
            Some(b'f') => self.word("false")?,
            Some(b'n') => self.word("null")?,
            Some(b'-' | b'0'..=b'9') => self.number()?,
            _ => return self.fail("a value"),
        }
        Ok(String::from_utf8_lossy(&self.bytes[start..self.at]).into_owned())
    }

    fn word(&mut self, word: &str) -> Result<(), String> {
        if self.bytes[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(())
        } else {
            self.fail(word)
        }
    }

    fn digits(&mut self) -> Result<(), String> {
        let from = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        if self.at == from {
            self.fail("a digit")
        } else {
            Ok(())
        }
    }

    fn number(&mut self) -> Result<(), String> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        self.digits()?;
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            self.digits()?;
        }
        Ok(())
    }

    fn string(&mut self) -> Result<String, String> {
        self.eat(b'"')?;
        let mut text = Vec::new();
        loop {
            let Some(byte) = self.peek() else {
                return self.fail("the end of the string");
            };
            self.at += 1;
            match byte {
                b'"' => return String::from_utf8(text).map_err(|e| e.to_string()),
                b'\\' => {
                    let escaped = match self.peek() {
                        Some(b @ (b'"' | b'\\' | b'/')) => b as char,
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            let hex = self
                                .bytes
                                .get(self.at + 1..self.at + 5)
                                .and_then(|h| std::str::from_utf8(h).ok())
                                .and_then(|h| u32::from_str_radix(h, 16).ok());
                            let Some(code) = hex else {
                                return self.fail("four hex digits");
                            };
                            self.at += 4;
                            char::from_u32(code).unwrap_or('\u{fffd}')
                        }
                        _ => return self.fail("an escape"),
                    };
                    self.at += 1;
                    text.extend_from_slice(escaped.encode_utf8(&mut [0; 4]).as_bytes());
                }
                b if b < 0x20 => return self.fail("no control character in a string"),
                b => text.push(b),
            }
        }
    }
}

/// Every log event the daemon wrote so far: each stderr line but the
/// `listening on` announcements (plain text by design), which must each be
/// one JSON object.
fn json_events(daemon: &Daemon) -> Vec<Event> {
    daemon
        .lines()
        .iter()
        .filter(|l| !l.starts_with("listening on "))
        .map(|l| json_object(l).unwrap_or_else(|e| panic!("not one JSON object ({e}): {l}")))
        .collect()
}

/// Waits for a JSON event for which `matches` holds.
fn wait_event(daemon: &Daemon, what: &str, matches: impl Fn(&Event) -> bool) -> Event {
    let line = daemon.wait_for(what, WAIT, |l| json_object(l).is_ok_and(|e| matches(&e)));
    json_object(&line).expect("parsed once already")
}

/// Whether `event`'s message is `message` and its `service` is `service`.
fn is(event: &Event, message: &str, service: &str) -> bool {
    get(event, "message").is_some_and(|m| m.contains(message))
        && get(event, "service") == Some(service)
}

// ===========================================================================
// Tests: one config for both systems
// ===========================================================================

/// tests/data/portable.toml, with free ports and the test child on `PATH`,
/// passes `--check` without a warning and serves each of its services.
/// tests/daemon/portable.rs makes the same assertions on Linux: keep the
/// two in step.
#[test]
fn the_portable_config_is_checked_and_served() {
    let builder = portable_builder();

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
            is(e, "refused", "guarded") && get(e, "rule") == Some(rule)
        });
        assert!(must(&refusal, "peer").starts_with(source), "{refusal:?}");
    }
    wait_event(&daemon, "refusal by rate", |e| {
        is(e, "refused", "rated") && get(e, "rule") == Some("rate")
    });
    let held_pid = held_pid.to_string();
    wait_event(
        &daemon,
        "`session end` of the first `guarded` session",
        |e| is(e, "session end", "guarded") && get(e, "pid") == Some(&held_pid),
    );
    let sleeper = sleeper.to_string();
    wait_event(&daemon, "max_lifetime reached", |e| {
        is(e, "max_lifetime", "lifetime") && get(e, "pid") == Some(&sleeper)
    });
    wait_event(&daemon, "`session end` of `lifetime`", |e| {
        is(e, "session end", "lifetime") && get(e, "pid") == Some(&sleeper)
    });
    let start = wait_event(&daemon, "`session start` of `logged`", |e| {
        is(e, "session start", "logged") && get(e, "peer") == Some(&peer_text(client))
    });
    let logged_pid = must(&start, "pid").to_owned();
    assert_eq!(must(&start, "local"), format!("127.0.0.1:{}", port(4)));
    let end = wait_event(&daemon, "`session end` of `logged`", |e| {
        is(e, "session end", "logged") && get(e, "pid") == Some(&logged_pid)
    });
    assert_eq!(must(&end, "status"), "exit 0");
    assert!(!must(&end, "duration").is_empty());
    let events = json_events(&daemon);
    assert!(events.len() >= 10, "{} events", events.len());

    // The child's stderr line: an INFO event with the service and the pid
    // (that its message is exactly the line is the next test's).
    let stderr = wait_event(&daemon, "the child's stderr line", |e| {
        is(e, "portable-stderr-line", "logged")
    });
    assert_eq!(must(&stderr, "pid"), logged_pid);
    assert_eq!(must(&stderr, "level"), "INFO");
}

/// The contract: with `stderr = "log"`, "each line the child writes to
/// stderr is logged (INFO) with service and pid, message is the line". In
/// JSON the `message` member is the line, with nothing added.
#[test]
fn the_portable_stderr_events_message_is_the_line() {
    let daemon = portable_builder().start();
    let mut stream = connect(daemon.port(4));
    stream.shutdown(Shutdown::Write).expect("half-close");
    read_to_eof(&mut stream, WAIT).expect("EOF");
    let stderr = wait_event(&daemon, "the child's stderr line", |e| {
        is(e, "portable-stderr-line", "logged")
    });
    assert_eq!(must(&stderr, "message"), "portable-stderr-line");
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
        .toml(&toml_service(
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
    assert!(process_alive(pid));
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
        .toml(&toml_service(
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
        toml_service(
            "array",
            "127.0.0.1:{port0}",
            &child_argv(&["args", "a b", r#"say "hi""#, r"C:\my dir\", ""]),
            &[],
        ),
        toml_service(
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
        toml_service(
            "env",
            "127.0.0.1:{port0}",
            &child_argv(&["env", "GREETING", "WININETD_T_OVER", "WININETD_T_KEEP"]),
            &[r#"env = { GREETING = "hi there", WININETD_T_OVER = "service" }"#],
        ),
        toml_service(
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
            toml_service(
                &format!("errlog-{stdio}"),
                &format!("127.0.0.1:{{port{i}}}"),
                &child_argv(&["stderr", MARK]),
                &[r#"stderr = "log""#, &format!("stdio = {}", toml_str(stdio))],
            )
        })
        .collect::<String>();
    let daemon = Daemon::builder().toml(&config).start();
    for (i, stdio) in ["socket", "pipe"].iter().enumerate() {
        let mut stream = connect(daemon.port(i));
        let client = stream.local_addr().expect("local_addr");
        stream.shutdown(Shutdown::Write).expect("half-close");
        let data = read_to_eof(&mut stream, WAIT).expect("EOF");
        assert!(
            data.is_empty(),
            "{stdio}: the client got {:?}",
            String::from_utf8_lossy(&data)
        );
        let (_, pid) = daemon.session_start(client);
        let service = format!("service=errlog-{stdio}");
        let line = daemon.wait_for(&format!("with {MARK:?} and {service}"), WAIT, |l| {
            l.contains(MARK) && !l.contains("listening on") && has_token(l, &service)
        });
        assert!(has_token(&line, &format!("pid={pid}")), "{line}");
        daemon.session_end(pid);
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
        toml_service(
            "piped",
            "127.0.0.1:{port0}",
            &child_argv(&["read-timeout"]),
            &[r#"stdio = "pipe""#, "timeout = 1"],
        ),
        toml_service(
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
            toml_service(
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
        assert!(
            process_alive(parent) && process_alive(grandchild),
            "{stdio}: {line}"
        );
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
        toml_service(
            "jsonsvc",
            "127.0.0.1:{port0}",
            &child_argv(&["echo"]),
            &[r#"deny = ["127.0.0.2"]"#],
        ),
        toml_service(
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
        is(e, "session start", "jsonsvc")
    });
    assert_eq!(must(&start, "peer"), peer_text(client));
    assert_eq!(must(&start, "local"), format!("127.0.0.1:{port}"));
    let pid = must(&start, "pid").to_owned();
    assert!(pid.parse::<u32>().is_ok(), "pid: {pid}");

    let end = wait_event(&daemon, "`session end`", |e| {
        is(e, "session end", "jsonsvc")
    });
    assert_eq!(must(&end, "peer"), peer_text(client));
    assert_eq!(must(&end, "local"), format!("127.0.0.1:{port}"));
    assert_eq!(must(&end, "pid"), pid);
    assert_eq!(must(&end, "status"), "exit 0");
    assert!(!must(&end, "duration").is_empty());

    let refusal = wait_event(&daemon, "a refusal", |e| is(e, "refused", "jsonsvc"));
    assert_eq!(must(&refusal, "peer"), peer_text(refused_peer));
    assert_eq!(must(&refusal, "rule"), "deny");
    assert_eq!(must(&refusal, "local"), format!("127.0.0.1:{port}"));
    assert!(!must(&refusal, "reason").is_empty());
    let events = json_events(&daemon);
    assert!(events.len() >= 3, "{} events", events.len());

    // stderr = "log": an INFO event with the service and the child's pid,
    // whose message is the line (the contract's words).
    let start = wait_event(&daemon, "`session start` of `jsonerr`", |e| {
        is(e, "session start", "jsonerr")
    });
    let stderr = wait_event(&daemon, "the child's stderr line", |e| {
        is(e, MARK, "jsonerr")
    });
    assert_eq!(must(&stderr, "pid"), must(&start, "pid"));
    assert_eq!(must(&stderr, "level"), "INFO");
    assert_eq!(must(&stderr, "message"), MARK);
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
        toml_service(
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
