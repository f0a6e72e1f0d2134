//! Built-in TCP services (`builtin = "echo" | "discard" | "daytime" |
//! "time" | "chargen"`), on Linux and Windows alike: each against a client
//! speaking its RFC, as a session (logged, capped, refused by the access
//! rules, ended at `max_lifetime` and by `timeout`). What needs Linux (the
//! real `rdate` client, the daemon's memory from /proc, signals) is in the
//! `linux` module at the foot.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::{
    Attempt, Daemon, WAIT, assert_silent, attempt, connect, has_field, read_to_eof, v4,
};

/// A config of one built-in service on `{port0}`, with `extra` lines.
fn builtin(name: &str, extra: &[&str]) -> String {
    let mut text =
        format!("[[service]]\nname = \"{name}\"\nlisten = {{port0}}\nbuiltin = \"{name}\"\n");
    for line in extra {
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// The seconds since 1970 of the Unix clock now.
fn unix_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    i64::try_from(secs).expect("fits")
}

/// Days from 1970-01-01 to a date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The Unix time of `asctime`'s text (`Sat Dec  5 12:34:56 2026`), read
/// as UTC, checking the weekday.
pub(crate) fn parse_asctime(text: &str) -> i64 {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    // `rdate -p` prints the zone too (`... 12:34:56 UTC 2026`).
    let words: Vec<&str> = text.split_whitespace().filter(|w| *w != "UTC").collect();
    let [weekday, month, day, clock, year] = words[..] else {
        panic!("not asctime's form: {text:?}");
    };
    let month = MONTHS.iter().position(|m| *m == month).expect("a month") + 1;
    let hms: Vec<i64> = clock
        .split(':')
        .map(|n| n.parse().expect("a number"))
        .collect();
    let days = days_from_civil(
        year.parse().expect("a year"),
        i64::try_from(month).expect("small"),
        day.parse().expect("a day"),
    );
    assert_eq!(
        DAYS[usize::try_from(days.rem_euclid(7)).expect("small")],
        weekday,
        "{text:?}"
    );
    days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2]
}

/// Asserts that `secs` (the Unix time a service sent) is the time now,
/// within a few seconds.
pub(crate) fn assert_now(secs: i64, what: &str) {
    let now = unix_now();
    assert!((secs - now).abs() <= 5, "{what}: {secs} is not now ({now})");
}

/// The session end line of the session whose client is `client`.
fn session_end_of(daemon: &Daemon, client: std::net::SocketAddr) -> String {
    let peer = format!("peer={}", crate::common::peer_text(client));
    daemon.wait_for(&format!("`session end` with {peer}"), WAIT, |l| {
        l.contains("session end") && crate::common::has_token(l, &peer)
    })
}

/// Reads `count` chargen lines and checks RFC 864's pattern: 72 printable
/// characters and CR LF, each line starting one character further along
/// the 95 printable ones (space to `~`) than the one before.
fn check_chargen_lines(stream: &mut TcpStream, count: usize) {
    let mut data = vec![0u8; count * 74];
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    stream.read_exact(&mut data).expect("chargen lines");
    let lines: Vec<&[u8]> = data.chunks(74).collect();
    assert_eq!(lines.len(), count);
    let first = lines[0][0];
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(
            &line[72..],
            b"\r\n",
            "line {i}: {:?}",
            String::from_utf8_lossy(line)
        );
        for (j, &c) in line[..72].iter().enumerate() {
            let expected =
                b' ' + u8::try_from((usize::from(first - b' ') + i + j) % 95).expect("small");
            assert_eq!(
                c,
                expected,
                "line {i}, column {j}: {:?}",
                String::from_utf8_lossy(line)
            );
        }
    }
}

/// echo (RFC 862) sends back every byte until the client closes its side;
/// the session is logged with pid 0 (no process serves it) and its end.
#[test]
fn echo_sends_back_what_it_receives() {
    let daemon = Daemon::builder().toml(&builtin("echo", &[])).start();
    assert!(
        daemon.stderr_text().contains("builtin echo"),
        "{}",
        daemon.report()
    );
    let mut stream = connect(daemon.port(0));
    let client = stream.local_addr().expect("local");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let writer = {
        let mut stream = stream.try_clone().expect("clone");
        let data = data.clone();
        std::thread::spawn(move || {
            stream.write_all(&data).expect("send");
            stream.shutdown(Shutdown::Write).expect("half-close");
        })
    };
    let back = read_to_eof(&mut stream, WAIT).expect("echo");
    writer.join().expect("writer");
    assert!(
        back == data,
        "echo sent back {} bytes of {}",
        back.len(),
        data.len()
    );
    let (start, pid) = daemon.session_start(client);
    assert_eq!(pid, 0, "{start}");
    assert!(has_field(&start, "service", "echo"), "{start}");
    let end = session_end_of(&daemon, client);
    assert!(end.contains("status=closed by the client"), "{end}");
}

/// discard (RFC 863) sends nothing and closes once the client has.
#[test]
fn discard_drops_what_it_receives() {
    let daemon = Daemon::builder().toml(&builtin("discard", &[])).start();
    let mut stream = connect(daemon.port(0));
    let client = stream.local_addr().expect("local");
    stream.write_all(&[b'x'; 100_000]).expect("send");
    stream.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(read_to_eof(&mut stream, WAIT).expect("eof"), b"");
    let end = session_end_of(&daemon, client);
    assert!(end.contains("status=closed by the client"), "{end}");
}

/// daytime (RFC 867): one line, `asctime`'s form in UTC, the time now;
/// then the connection closes.
#[test]
fn daytime_sends_the_date_and_time() {
    let daemon = Daemon::builder().toml(&builtin("daytime", &[])).start();
    let mut stream = connect(daemon.port(0));
    let text = String::from_utf8(read_to_eof(&mut stream, WAIT).expect("daytime")).expect("text");
    let line = text.strip_suffix("\r\n").expect("CR LF at the end");
    assert_eq!(line.len(), 24, "{line:?}");
    assert_now(parse_asctime(line), line);
}

/// time (RFC 868): 4 bytes, big-endian, seconds since 1900; then the
/// connection closes.
#[test]
fn time_sends_seconds_since_1900() {
    let daemon = Daemon::builder().toml(&builtin("time", &[])).start();
    let mut stream = connect(daemon.port(0));
    let bytes = read_to_eof(&mut stream, WAIT).expect("time");
    let bytes: [u8; 4] = bytes[..].try_into().expect("exactly 4 bytes");
    assert_now(i64::from(u32::from_be_bytes(bytes)) - 2_208_988_800, "time");
}

/// chargen (RFC 864): the rotating lines, as long as the client reads.
#[test]
fn chargen_sends_the_rotating_pattern() {
    let daemon = Daemon::builder().toml(&builtin("chargen", &[])).start();
    let mut stream = connect(daemon.port(0));
    check_chargen_lines(&mut stream, 300);
    let client = stream.local_addr().expect("local");
    drop(stream);
    // The client left: the write fails, and the session ends.
    let end = session_end_of(&daemon, client);
    assert!(end.contains("status=connection error"), "{end}");
}

/// `max_sessions` caps built-in sessions: the second client waits, silent,
/// until the first leaves.
#[test]
fn max_sessions_caps_a_builtin() {
    let daemon = Daemon::builder()
        .toml(&builtin("chargen", &["max_sessions = 1"]))
        .start();
    let mut first = connect(daemon.port(0));
    check_chargen_lines(&mut first, 10);
    let mut second = connect(daemon.port(0));
    assert_silent(&mut second, Duration::from_millis(500));
    drop(first);
    check_chargen_lines(&mut second, 10);
}

/// `deny` refuses a built-in's client, with the `reject_message`.
#[test]
fn deny_refuses_a_builtin_client() {
    let daemon = Daemon::builder()
        .toml(&builtin(
            "daytime",
            &["deny = [\"127.0.0.1\"]", "reject_message = \"no\\n\""],
        ))
        .start();
    match attempt(None, v4(daemon.port(0))) {
        Attempt::Refused { text } => assert_eq!(text, "no\n"),
        Attempt::Served { .. } => panic!("served: {}", daemon.report()),
    }
    daemon.wait_for_line("rule=deny", WAIT);
    assert_eq!(daemon.count(|l| l.contains("session start")), 0);
}

/// `max_lifetime` ends a chargen session that would never end by itself.
#[test]
fn max_lifetime_ends_a_chargen_session() {
    let daemon = Daemon::builder()
        .toml(&builtin("chargen", &["max_lifetime = 1"]))
        .start();
    let mut stream = connect(daemon.port(0));
    let client = stream.local_addr().expect("local");
    let started = Instant::now();
    // Reads whatever comes until the daemon closes.
    let _ = read_to_eof(&mut stream, WAIT);
    assert!(started.elapsed() < WAIT, "still open");
    let end = session_end_of(&daemon, client);
    assert!(end.contains("status=ended by the daemon"), "{end}");
}

/// `timeout`: an echo client silent that long is closed.
#[test]
fn timeout_closes_a_silent_client() {
    let daemon = Daemon::builder()
        .toml(&builtin("echo", &["timeout = 1"]))
        .start();
    let mut stream = connect(daemon.port(0));
    let client = stream.local_addr().expect("local");
    stream.write_all(b"hi").expect("send");
    assert_eq!(read_to_eof(&mut stream, WAIT).expect("eof"), b"hi");
    let end = session_end_of(&daemon, client);
    assert!(end.contains("status=timeout"), "{end}");
}

/// `--check` names, at line and column, a `command` beside `builtin` and
/// each key that only a program has a use for; a clean built-in passes.
#[test]
fn check_reports_what_a_builtin_cannot_have() {
    let (_, code) = crate::toml_config::check(&builtin("echo", &[]));
    assert_eq!(code, Some(0), "a clean built-in");
    let text = builtin(
        "echo",
        &[
            "command = \"cat\"",
            "env = { A = \"1\" }",
            "stdio = \"pipe\"",
        ],
    );
    let (daemon, code) = crate::toml_config::check(&text);
    assert_eq!(code, Some(1), "--check on a bad file");
    let name = daemon.config_name();
    for expected in [
        format!("{name}:4:11: error: `builtin` and `command` are mutually exclusive"),
        format!("{name}:6:1: error: `env` has no meaning for a built-in service"),
        format!("{name}:7:1: error: `stdio` has no meaning for a built-in service"),
    ] {
        assert!(
            daemon.stderr_text().contains(&expected),
            "{expected}\n{}",
            daemon.report()
        );
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::*;
    use crate::common::Run;
    use std::fs;

    fn rss_kib(pid: u32) -> u64 {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("the daemon runs");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS")
    }

    /// time over TCP with the real `rdate` client (RFC 868): the time it
    /// reads is the system's.
    #[test]
    fn rdate_reads_the_time() {
        let daemon = Daemon::builder().toml(&builtin("time", &[])).start();
        let port = daemon.port(0).to_string();
        let out: Run = crate::common::run_command(
            std::process::Command::new("rdate")
                .args(["-p", "-o", &port, "127.0.0.1"])
                .env("TZ", "UTC"),
            WAIT,
        );
        assert!(out.success(), "rdate: {out}\n{}", daemon.report());
        // `rdate: [127.0.0.1]\tSat Dec  5 12:34:56 2026`
        let stdout = out.stdout();
        let text = stdout
            .trim()
            .rsplit('\t')
            .next()
            .unwrap_or_else(|| panic!("rdate's output: {stdout:?}"));
        assert_now(parse_asctime(text), &stdout);
    }

    /// Clients that connect to chargen and never read cost the daemon its
    /// socket buffers and nothing more: its memory stays bounded while
    /// they hang on, and another service still answers at once.
    #[test]
    fn chargen_to_a_client_that_stops_reading_stays_bounded() {
        let text = format!(
            "{}[[service]]\nname = \"daytime\"\nlisten = {{port1}}\nbuiltin = \"daytime\"\n",
            builtin("chargen", &[])
        );
        let daemon = Daemon::builder().toml(&text).start();
        let before = rss_kib(daemon.pid());
        let mut idle: Vec<TcpStream> = Vec::new();
        for _ in 0..8 {
            let mut stream = connect(daemon.port(0));
            check_chargen_lines(&mut stream, 1);
            idle.push(stream);
        }
        // Without backpressure, each session would queue megabytes a
        // second: look for a while that the daemon stays where it was.
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut peak = before;
        while Instant::now() < deadline {
            peak = peak.max(rss_kib(daemon.pid()));
            assert!(
                peak < before + 16 * 1024,
                "VmRSS grew from {before} KiB to {peak} KiB"
            );
            let asked = Instant::now();
            let mut other = connect(daemon.port(1));
            let answer = read_to_eof(&mut other, WAIT).expect("daytime");
            assert!(answer.ends_with(b"\r\n"), "{answer:?}");
            assert!(
                asked.elapsed() < Duration::from_secs(1),
                "daytime took {:?} while chargen clients stalled",
                asked.elapsed()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(idle);
    }

    /// Stopping the daemon ends a running chargen session: the client
    /// sees the end, and the daemon exits.
    #[test]
    fn stop_ends_a_chargen_session() {
        let mut daemon = Daemon::builder().toml(&builtin("chargen", &[])).start();
        let mut stream = connect(daemon.port(0));
        let client = stream.local_addr().expect("local");
        check_chargen_lines(&mut stream, 5);
        daemon.send_signal(libc::SIGTERM);
        let _ = read_to_eof(&mut stream, WAIT);
        let status = daemon.wait_exit(WAIT);
        assert!(status.success(), "{status:?}\n{}", daemon.report());
        let end = session_end_of(&daemon, client);
        assert!(end.contains("status=ended by the daemon"), "{end}");
    }
}
