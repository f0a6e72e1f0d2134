//! Reliability under abuse: a flood of connections ten times the session
//! cap, with and without admission rules; running out of processes for a
//! run-as user; children that crash, are killed or exit without reading;
//! clients that reset or never send; a soak at full rate after which the
//! daemon's descriptors, threads, memory and children are back where they
//! started; and children reaped promptly while connections keep coming.
//! Running out of descriptors is limits.rs's.
//!
//! Every client is bounded in number and time and talks over loopback only.
//! The tests judge the daemon by its own state (its log, /proc) as well as by
//! what the clients saw.
//!
//! The soak runs for [`SOAK_DEFAULT`], outside the default `cargo test`
//! (CI runs it as a step of its own):
//!
//! ```sh
//! cargo test --test daemon soak -- --ignored
//! ```
//!
//! and the long form is
//!
//! ```sh
//! WININETD_SOAK_SECS=1800 cargo test --release --test daemon soak -- --ignored --nocapture
//! ```
//!
//! (with a soak longer than [`SOAK_FULL_LOG_MAX`] the daemon logs warnings
//! only, so that the harness does not hold millions of log lines).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    CHILD, Daemon, DaemonBuilder, TestUser, WAIT, child, child_argv, children_of, connect,
    cpu_time, field, has_status, has_token, is_alive, kill, number_after, open_fds, read_line,
    read_to_eof, set_soft_limit, toml_str, v4,
};

// ---------------------------------------------------------------------------
// Clients that report instead of panicking
// ---------------------------------------------------------------------------

/// An I/O error in words, naming resets and refusals plainly.
fn describe_io(err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::ConnectionReset => format!("connection reset ({err})"),
        io::ErrorKind::ConnectionRefused => format!("connection refused ({err})"),
        _ => format!("{:?}: {err}", err.kind()),
    }
}

/// Connects from `source` (the kernel's choice when `None`) to `dest`
/// within `timeout`.
fn try_connect(
    source: Option<IpAddr>,
    dest: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(dest), Type::STREAM, None)?;
    if let Some(source) = source {
        socket.bind(&SocketAddr::new(source, 0).into())?;
    }
    socket.connect_timeout(&dest.into(), timeout)?;
    Ok(socket.into())
}

/// Reads until the first `\n` (included) or EOF, before `deadline`. The
/// bool says whether EOF came first.
fn read_first_line(stream: &mut TcpStream, deadline: Instant) -> Result<(Vec<u8>, bool), String> {
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no line and no EOF in time; read {:?}",
                String::from_utf8_lossy(&data)
            ));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| describe_io(&e))?;
        match stream.read(&mut byte) {
            Ok(0) => return Ok((data, true)),
            Ok(_) => {
                data.push(byte[0]);
                if byte[0] == b'\n' {
                    return Ok((data, false));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(format!(
                    "after {:?}: {}",
                    String::from_utf8_lossy(&data),
                    describe_io(&e)
                ));
            }
        }
    }
}

/// Reads to EOF before `deadline`; a reset or a timeout is an error.
fn read_rest(stream: &mut TcpStream, deadline: Instant) -> Result<Vec<u8>, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err("no time left to read".to_owned());
    }
    read_to_eof(stream, left).map_err(|e| describe_io(&e))
}

/// The `N` of a `pid=N` line.
fn greeting_pid(line: &[u8]) -> Option<u32> {
    std::str::from_utf8(line)
        .ok()?
        .trim_end()
        .strip_prefix("pid=")?
        .parse()
        .ok()
}

/// The address in a line's `peer=IP:PORT` field.
fn peer_ip(line: &str) -> Option<IpAddr> {
    let (_, rest) = line.split_once("peer=")?;
    let peer = rest.split_whitespace().next()?.trim_matches(',');
    let (ip, _port) = peer.rsplit_once(':')?;
    ip.trim_matches(['[', ']']).parse().ok()
}

// ---------------------------------------------------------------------------
// Flood
// ---------------------------------------------------------------------------

/// `--max-sessions` in the flood tests; ten times as many clients.
const FLOOD_CAP: usize = 20;
const FLOOD_CLIENTS: usize = 10 * FLOOD_CAP;
/// How long a served flood client keeps its session before its request, so
/// that the sessions overlap and the cap is reached.
const FLOOD_HOLD: Duration = Duration::from_millis(200);
/// The bound on the whole flood (it takes a few seconds).
const FLOOD_DEADLINE: Duration = Duration::from_secs(40);
const REJECT: &str = "REFUSED: busy, try later\n";

/// A TOML argv for a service that greets with `pid=PID` (its pid: the shell
/// execs the test child in place) and then echoes, so a client knows it is
/// served before it sends a byte, and a refused client never sends any.
fn greeting_echo() -> String {
    let script = "echo pid=$$ && exec \"$0\" echo";
    format!(
        "[{}, {}, {}, {}]",
        toml_str("/bin/sh"),
        toml_str("-c"),
        toml_str(script),
        toml_str(CHILD)
    )
}

fn toml_service(name: &str, port: usize, command: &str, extra: &[&str]) -> String {
    crate::common::toml_service(name, &format!("\"{{port{port}}}\""), command, extra)
}

#[derive(Debug)]
enum Outcome {
    /// Greeted, then echoed the client's request byte for byte.
    Served { pid: u32 },
    /// Closed cleanly (EOF, not a reset) after `text`.
    Refused { text: String },
}

/// One flood client: connect (from `source`), wait to be greeted or closed;
/// when served, hold the session for `hold`, then send a request and check
/// the echo, byte for byte, and the clean EOF after it.
fn flood_client(
    source: Option<IpAddr>,
    dest: SocketAddr,
    id: usize,
    hold: Duration,
    deadline: Instant,
) -> Result<Outcome, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    let mut stream =
        try_connect(source, dest, left).map_err(|e| format!("connect: {}", describe_io(&e)))?;
    stream
        .set_write_timeout(Some(WAIT))
        .map_err(|e| describe_io(&e))?;
    let (first, eof) = read_first_line(&mut stream, deadline)?;
    if let Some(pid) = greeting_pid(&first) {
        thread::sleep(hold);
        let request = format!("flood client {id} says hello\n").repeat(40);
        stream
            .write_all(request.as_bytes())
            .map_err(|e| format!("send the request: {}", describe_io(&e)))?;
        stream
            .shutdown(Shutdown::Write)
            .map_err(|e| format!("half-close: {}", describe_io(&e)))?;
        let echo = read_rest(&mut stream, deadline).map_err(|e| format!("read the echo: {e}"))?;
        if echo != request.as_bytes() {
            return Err(format!(
                "echo of {} bytes differs: got {} bytes {:?}",
                request.len(),
                echo.len(),
                String::from_utf8_lossy(&echo[..echo.len().min(80)])
            ));
        }
        return Ok(Outcome::Served { pid });
    }
    let mut text = first;
    if !eof {
        let rest = read_rest(&mut stream, deadline).map_err(|e| {
            format!(
                "after {:?}, no clean EOF: {e}",
                String::from_utf8_lossy(&text)
            )
        })?;
        text.extend_from_slice(&rest);
    }
    Ok(Outcome::Refused {
        text: String::from_utf8_lossy(&text).into_owned(),
    })
}

/// Starts all `sources.len()` clients at once (each from its source), waits
/// for all, and returns each client's source and outcome; panics listing
/// every client that failed.
fn flood(dest: SocketAddr, sources: &[Option<IpAddr>]) -> Vec<(Option<IpAddr>, Outcome)> {
    let deadline = Instant::now() + FLOOD_DEADLINE;
    let barrier = Arc::new(Barrier::new(sources.len()));
    let clients: Vec<_> = sources
        .iter()
        .enumerate()
        .map(|(id, &source)| {
            let barrier = Arc::clone(&barrier);
            thread::Builder::new()
                .name(format!("flood-{id}"))
                .stack_size(256 * 1024)
                .spawn(move || {
                    barrier.wait();
                    flood_client(source, dest, id, FLOOD_HOLD, deadline)
                })
                .expect("start a flood client thread")
        })
        .collect();
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for (id, client) in clients.into_iter().enumerate() {
        match client.join().expect("a flood client does not panic") {
            Ok(outcome) => outcomes.push((sources[id], outcome)),
            Err(err) => failures.push(format!("client {id} from {:?}: {err}", sources[id])),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} flood clients failed:\n{}",
        failures.len(),
        sources.len(),
        failures.join("\n")
    );
    outcomes
}

/// The most sessions running at once according to the log (start lines
/// counted up, end lines down), overall and per source address.
fn logged_concurrency(lines: &[String]) -> (usize, HashMap<IpAddr, usize>) {
    let mut running: HashMap<u32, IpAddr> = HashMap::new();
    let mut per_source: HashMap<IpAddr, usize> = HashMap::new();
    let mut max_per_source: HashMap<IpAddr, usize> = HashMap::new();
    let mut max = 0;
    for line in lines {
        let Some(pid) = number_after(line, "pid") else {
            continue;
        };
        if line.contains("session start") {
            let ip = peer_ip(line).expect("a start line has peer=IP:PORT");
            running.insert(pid, ip);
            let now = per_source.entry(ip).or_default();
            *now += 1;
            let top = max_per_source.entry(ip).or_default();
            *top = (*top).max(*now);
            max = max.max(running.len());
        } else if line.contains("session end") {
            if let Some(ip) = running.remove(&pid) {
                *per_source.get_mut(&ip).expect("counted at start") -= 1;
            }
        }
    }
    (max, max_per_source)
}

/// Once the flood is over, a new client is greeted within a second.
fn assert_answers_within_a_second(dest: SocketAddr) {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(1);
    let mut stream = try_connect(None, dest, Duration::from_secs(1))
        .unwrap_or_else(|e| panic!("connect after the flood: {}", describe_io(&e)));
    let (first, _) = read_first_line(&mut stream, deadline)
        .unwrap_or_else(|e| panic!("a new client after the flood, within 1 s: {e}"));
    assert!(
        greeting_pid(&first).is_some(),
        "a new client after the flood got {:?}",
        String::from_utf8_lossy(&first)
    );
    eprintln!(
        "after the flood a new client was greeted in {:?}",
        started.elapsed()
    );
}

/// 200 clients at once against `--max-sessions 20`, no admission rule: no
/// reset, no refusal, every client served in turn with its echo intact,
/// never more than 20 sessions at once (by the log), and a new client is
/// greeted within a second once the flood is over.
#[test]
fn flood_of_ten_times_the_cap_is_served_in_turn() {
    let mut daemon = Daemon::builder()
        .toml(&toml_service("flood", 0, &greeting_echo(), &[]))
        .args(&["--max-sessions", &FLOOD_CAP.to_string()])
        .start();
    let dest = v4(daemon.port(0));
    let started = Instant::now();
    let outcomes = flood(dest, &[None; FLOOD_CLIENTS]);
    let took = started.elapsed();

    let mut pids = HashSet::new();
    for (_, outcome) in &outcomes {
        match outcome {
            Outcome::Served { pid } => assert!(pids.insert(*pid), "pid {pid} served twice"),
            Outcome::Refused { text } => {
                panic!("a client was closed without service after {text:?}")
            }
        }
    }
    assert_eq!(pids.len(), FLOOD_CLIENTS, "every client served");
    assert_answers_within_a_second(dest);
    assert!(daemon.exited().is_none(), "the daemon died in the flood");

    // The probe's session ends too.
    let total = FLOOD_CLIENTS + 1;
    daemon.wait_for_count("`session end` with `status=exit 0`", total, WAIT, |l| {
        l.contains("session end") && has_status(l, "exit 0")
    });
    let lines = daemon.lines();
    let logged: HashSet<u32> = lines
        .iter()
        .filter(|l| l.contains("session start"))
        .filter_map(|l| number_after(l, "pid"))
        .collect();
    assert!(pids.is_subset(&logged), "every served pid has a start line");
    assert_eq!(daemon.count(|l| l.contains("session start")), total);
    let (max, _) = logged_concurrency(&lines);
    assert!(
        max <= FLOOD_CAP,
        "{max} sessions at once by the log, above --max-sessions {FLOOD_CAP}"
    );
    let limit_lines = daemon.count(|l| l.contains("session limit"));
    assert!(
        limit_lines >= 1,
        "the cap was reached, with a `session limit` warning"
    );
    assert_eq!(
        daemon.count(|l| l.contains("refused") || l.contains("cannot start")),
        0
    );
    eprintln!(
        "flood of {FLOOD_CLIENTS}: served in {took:?}, at most {max} sessions at once, \
         {limit_lines} `session limit` lines"
    );
}

/// The same flood from 16 loopback sources (12 or 13 clients each) against
/// a service with `max_per_source = 2` and a `reject_message` (16 sources
/// times 2 is more than the cap of 20, so both limits bite): every client is
/// either served (echo intact) or gets exactly the message and a clean EOF,
/// never a reset; the log never shows more than 2 sessions of one source or
/// 20 in all, and names the rule; a new client is greeted within a second
/// once the flood is over.
#[test]
fn flood_with_per_source_limit_refuses_the_excess_cleanly() {
    const SOURCES: u8 = 16;
    const PER_SOURCE: usize = 2;
    let mut daemon = Daemon::builder()
        .toml(&toml_service(
            "flood",
            0,
            &greeting_echo(),
            &[
                &format!("max_per_source = {PER_SOURCE}"),
                &format!("reject_message = {}", toml_str(REJECT)),
            ],
        ))
        .args(&["--max-sessions", &FLOOD_CAP.to_string()])
        .start();
    let dest = v4(daemon.port(0));
    let sources: Vec<Option<IpAddr>> = (0..FLOOD_CLIENTS)
        .map(|i| {
            Some(IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                0,
                1 + (i % usize::from(SOURCES)) as u8,
            )))
        })
        .collect();
    let started = Instant::now();
    let outcomes = flood(dest, &sources);
    let took = started.elapsed();

    let mut served: HashMap<IpAddr, usize> = HashMap::new();
    let mut refused: HashMap<IpAddr, usize> = HashMap::new();
    for (source, outcome) in &outcomes {
        let source = source.expect("every client has a source");
        match outcome {
            Outcome::Served { .. } => *served.entry(source).or_default() += 1,
            Outcome::Refused { text } => {
                assert_eq!(
                    text, REJECT,
                    "a refused client from {source} gets the message, then EOF"
                );
                *refused.entry(source).or_default() += 1;
            }
        }
    }
    let served_total: usize = served.values().sum();
    let refused_total: usize = refused.values().sum();
    assert_eq!(served_total + refused_total, FLOOD_CLIENTS);
    assert_eq!(
        served.len(),
        usize::from(SOURCES),
        "every source is served at least once: {served:?}"
    );
    assert!(
        refused_total > 0,
        "some clients are over the per-source limit"
    );
    assert_answers_within_a_second(dest);
    assert!(daemon.exited().is_none(), "the daemon died in the flood");

    let total = served_total + 1;
    daemon.wait_for_count("`session end` with `status=exit 0`", total, WAIT, |l| {
        l.contains("session end") && has_status(l, "exit 0")
    });
    assert_eq!(daemon.count(|l| l.contains("session start")), total);
    let (max, per_source) = logged_concurrency(&daemon.lines());
    assert!(max <= FLOOD_CAP, "{max} sessions at once by the log");
    for (source, top) in &per_source {
        assert!(
            *top <= PER_SOURCE,
            "{top} sessions at once from {source}, above max_per_source {PER_SOURCE}"
        );
    }
    let refusal_lines = daemon.count(|l| l.contains("refused"));
    assert!(refusal_lines >= 1, "refusals are logged");
    assert_eq!(
        daemon.count(|l| l.contains("refused") && has_token(l, "rule=max_per_source")),
        refusal_lines,
        "every refusal names max_per_source"
    );
    eprintln!(
        "flood of {FLOOD_CLIENTS} from {SOURCES} sources in {took:?}: {served_total} served, \
         {refused_total} refused ({refusal_lines} refusal lines logged), at most {max} at once\n  \
         served per source {served:?}\n  refused per source {refused:?}"
    );
}

// ---------------------------------------------------------------------------
// Out of processes
// ---------------------------------------------------------------------------

/// Sets the soft RLIMIT_NPROC of another process (the hard limit stays).
fn set_process_limit(pid: u32, soft: u64) -> io::Result<()> {
    set_soft_limit(pid, libc::RLIMIT_NPROC, soft).map(drop)
}

/// The processes whose real uid is `uid`.
fn processes_of(uid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|status| {
                    let ids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
                    ids.split_whitespace().next()?.parse::<u32>().ok()
                })
                == Some(uid)
        })
        .collect()
}

/// Kills every process of a test user on drop and waits until they are gone,
/// so that `userdel` (the [`TestUser`]'s drop, after this one) finds none.
#[derive(Debug)]
struct KillUsersProcesses(u32);

impl Drop for KillUsersProcesses {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = processes_of(self.0);
            if left.is_empty() || Instant::now() >= deadline {
                if !left.is_empty() {
                    eprintln!("processes of uid {} left: {left:?}", self.0);
                }
                return;
            }
            for pid in left {
                let _ = kill(pid as i32, libc::SIGKILL);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// What a client of the `pid` service got: greeted (`pid=N`), or closed.
fn pid_or_close(port: u16) -> (TcpStream, Option<u32>, Result<Vec<u8>, String>) {
    let mut stream = connect(port);
    let deadline = Instant::now() + WAIT;
    match read_first_line(&mut stream, deadline) {
        Ok((line, _)) => match greeting_pid(&line) {
            Some(pid) => (stream, Some(pid), Ok(line)),
            None => (stream, None, Ok(line)),
        },
        Err(err) => (stream, None, Err(err)),
    }
}

/// Measures the daemon's CPU time over `window`: a listener that retries a
/// failing spawn or accept in a loop would burn it.
fn cpu_over(pid: u32, window: Duration) -> Duration {
    let before = cpu_time(pid);
    thread::sleep(window);
    cpu_time(pid) - before
}

/// RLIMIT_NPROC: a run-as user's sessions hit the process limit (lowered on
/// the running daemon with prlimit; root's own forks are exempt, but its
/// children inherit the limit, and the kernel checks it against the user's
/// process count when a child takes the user's uid). The next session fails
/// cleanly: `cannot start` with the program and the OS reason, the client
/// gets a clean EOF, no zombie is left, the daemon does not spin under a
/// stream of such clients, and it serves again by itself once a session
/// ends.
#[test]
#[ignore = "needs root"]
fn process_limit_of_the_run_as_user_fails_cleanly_and_recovers() {
    const LIMIT: u64 = 3;
    let user = TestUser::create("nproc");
    let daemon = Daemon::builder().service(&user.name, &child("pid")).start();
    let _cleanup = KillUsersProcesses(user.uid);
    let port = daemon.port(0);
    set_process_limit(daemon.pid(), LIMIT).expect("lower the daemon's RLIMIT_NPROC");

    // Since Linux 3.1 setuid(2) itself does not fail: it marks the child,
    // and its execve(2) fails with EAGAIN. Kernels differ by one on whether
    // the process taking the uid counts itself (this one lets LIMIT + 1
    // start), so open sessions until one fails, within LIMIT + 2.
    let mut held: Vec<(TcpStream, u32)> = Vec::new();
    let failed = loop {
        assert!(
            held.len() as u64 <= LIMIT + 1,
            "{} sessions of the user started under RLIMIT_NPROC {LIMIT}",
            held.len()
        );
        match pid_or_close(port) {
            (stream, Some(pid), _) => held.push((stream, pid)),
            (_, None, outcome) => break outcome,
        }
    };
    assert_eq!(
        failed,
        Ok(Vec::new()),
        "the connection that cannot be served is closed cleanly, with nothing sent"
    );
    assert!(
        held.len() as u64 >= LIMIT,
        "only {} sessions of the user started under RLIMIT_NPROC {LIMIT}",
        held.len()
    );
    eprintln!(
        "RLIMIT_NPROC {LIMIT}: {} sessions of the user started, the next failed",
        held.len()
    );
    let line = daemon.wait_for_line("cannot start", WAIT);
    assert!(
        line.contains(CHILD)
            && (line.contains("os error 11") || line.contains("temporarily unavailable")),
        "`cannot start` names the program and the reason (EAGAIN): {line}"
    );

    // A client every 150 ms for about a second, while the daemon's CPU is
    // measured: each is closed cleanly, and the daemon backs off instead of
    // spinning.
    const MORE: usize = 6;
    let stream_of_clients = thread::spawn(move || {
        (0..MORE)
            .map(|i| {
                let (_, pid, outcome) = pid_or_close(port);
                thread::sleep(Duration::from_millis(150));
                (i, pid, outcome)
            })
            .collect::<Vec<_>>()
    });
    let cpu = cpu_over(daemon.pid(), Duration::from_secs(1));
    for (i, pid, outcome) in stream_of_clients.join().expect("the clients do not panic") {
        assert_eq!(pid, None, "client {i} was served over the process limit");
        assert_eq!(outcome, Ok(Vec::new()), "client {i} is closed cleanly");
    }
    assert!(
        cpu < Duration::from_millis(300),
        "the daemon used {cpu:?} of CPU in 1 s while out of processes: it spins"
    );
    eprintln!("out of processes: {cpu:?} of CPU in 1 s with a client every 150 ms");
    daemon.wait_for_count("containing `cannot start`", 1 + MORE, WAIT, |l| {
        l.contains("cannot start")
    });
    // A process was made for each failed connection (its exec failed), so
    // each has a start line; its `cannot start` line names the same pid,
    // and no session of them ends as if it had run.
    let failed_pids: Vec<String> = daemon
        .lines()
        .iter()
        .filter(|l| l.contains("cannot start"))
        .filter_map(|l| field(l, "pid").map(str::to_owned))
        .collect();
    assert_eq!(
        failed_pids.len(),
        1 + MORE,
        "each `cannot start` names its pid"
    );
    assert_eq!(
        daemon.count(|l| l.contains("session start")),
        held.len() + failed_pids.len(),
        "a start line for each process made"
    );
    for pid in &failed_pids {
        assert_eq!(
            daemon.count(|l| l.contains("session end") && field(l, "pid") == Some(pid.as_str())),
            0,
            "no session end for pid {pid}, which never ran the program"
        );
    }
    let mut expected: Vec<u32> = held.iter().map(|(_, pid)| *pid).collect();
    expected.sort_unstable();
    let mut children: Vec<u32> = Vec::new();
    let settled = Instant::now() + WAIT;
    while Instant::now() < settled {
        children = children_of(daemon.pid())
            .iter()
            .map(|(pid, _)| *pid)
            .collect();
        children.sort_unstable();
        if children == expected {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        children, expected,
        "the daemon's children are the held sessions: no zombie of a failed start"
    );

    // A session ends: the next client is served, with nothing restored.
    let (first, pid) = held.remove(0);
    drop(first);
    let end = daemon.session_end(pid);
    assert!(has_status(&end, "exit 0"), "{end}");
    let (fresh, pid, outcome) = pid_or_close(port);
    let pid = pid.unwrap_or_else(|| {
        panic!("no recovery once a session ended: a new client got {outcome:?}")
    });
    assert!(is_alive(pid));
    let (start, _) = daemon.session_start(fresh.local_addr().expect("local_addr"));
    assert!(has_token(&start, &format!("user={}", user.name)), "{start}");

    // End every session, so the user can be deleted.
    fresh.shutdown(Shutdown::Write).expect("half-close");
    let pids: Vec<u32> = held.iter().map(|(_, p)| *p).chain([pid]).collect();
    drop(held);
    drop(fresh);
    for pid in pids {
        daemon.session_end(pid);
    }
}

/// Regression (issue 16, item 4): the back-off after a start failed for
/// lack of a resource was daemon-wide, so while one run-as service was
/// flooded at its user's RLIMIT_NPROC, an unrelated root service went from
/// 300 connections in 0.2 s to 20 in 9.9 s. The back-off is the failing
/// service's own: the other keeps serving at its pace meanwhile.
#[test]
#[ignore = "needs root"]
fn one_users_process_limit_does_not_slow_other_services() {
    const LIMIT: u64 = 2;
    const OTHERS: usize = 40;
    let user = TestUser::create("nproc2");
    let daemon = Daemon::builder()
        .service(&user.name, &child("pid"))
        .service("none", &child("pid"))
        .start();
    let _cleanup = KillUsersProcesses(user.uid);
    let (limited, other) = (daemon.port(0), daemon.port(1));
    set_process_limit(daemon.pid(), LIMIT).expect("lower the daemon's RLIMIT_NPROC");
    // Fill the user's process limit, until a start fails.
    let mut held = Vec::new();
    while let (stream, Some(_), _) = pid_or_close(limited) {
        held.push(stream);
        assert!(held.len() as u64 <= LIMIT + 1, "the limit does not hold");
    }
    // Flood the limited service from one thread, while another measures
    // the other service.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut attempts = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = pid_or_close(limited);
                attempts += 1;
            }
            attempts
        })
    };
    daemon.wait_for_count("containing `cannot start`", 3, WAIT, |l| {
        l.contains("cannot start")
    });
    let began = Instant::now();
    for i in 0..OTHERS {
        let (_, pid, outcome) = pid_or_close(other);
        assert!(pid.is_some(), "other service, client {i}: {outcome:?}");
    }
    let took = began.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let attempts = flood.join().expect("the flood does not panic");
    eprintln!(
        "{OTHERS} sessions of the other service in {took:?}, beside {attempts} refused starts"
    );
    // Each client of a service in back-off waits up to a second; the other
    // service's clients must not: 40 in well under 40 s, with a wide margin
    // for a loaded machine.
    assert!(
        took < Duration::from_secs(8),
        "{OTHERS} sessions of an unrelated service took {took:?} while another backed off"
    );
    drop(held);
}

// ---------------------------------------------------------------------------
// Misbehaving children and clients
// ---------------------------------------------------------------------------

/// A long-running echo session next to the misbehaving ones: after each
/// event it must still echo a fresh request byte for byte.
struct Steady {
    stream: TcpStream,
    round: usize,
}

impl Steady {
    fn open(port: u16) -> Self {
        let mut steady = Self {
            stream: connect(port),
            round: 0,
        };
        steady.check("at the start");
        steady
    }

    fn check(&mut self, after: &str) {
        self.round += 1;
        let request = format!("steady round {} after {after}\n", self.round).repeat(100);
        self.stream
            .write_all(request.as_bytes())
            .unwrap_or_else(|e| panic!("steady session, {after}: send: {e}"));
        let mut echo = vec![0u8; request.len()];
        self.stream
            .read_exact(&mut echo)
            .unwrap_or_else(|e| panic!("steady session, {after}: read the echo: {e}"));
        assert!(
            echo == request.as_bytes(),
            "steady session, {after}: the echo differs"
        );
    }

    /// Ends the session: half-close, EOF with nothing more, `exit 0` logged.
    fn finish(mut self, daemon: &Daemon) {
        let client = self.stream.local_addr().expect("local_addr");
        self.stream.shutdown(Shutdown::Write).expect("half-close");
        let rest = read_to_eof(&mut self.stream, WAIT).expect("EOF after the half-close");
        assert!(rest.is_empty(), "nothing after the last echo: {rest:?}");
        let (_, pid) = daemon.session_start(client);
        let end = daemon.session_end(pid);
        assert!(
            has_status(&end, "exit 0"),
            "the steady session ends normally: {end}"
        );
    }
}

/// The daemon with core dumps off: children that crash on purpose must not
/// write core files into the working directory.
fn without_core_dumps(builder: DaemonBuilder) -> DaemonBuilder {
    builder.prefix(&["/bin/sh", "-c", "ulimit -c 0 && exec \"$0\" \"$@\""])
}

/// Connects to `port`, then waits for the session's start line: its pid.
fn session_on(daemon: &Daemon, port: u16) -> (TcpStream, u32) {
    let stream = connect(port);
    let (_, pid) = daemon.session_start(stream.local_addr().expect("local_addr"));
    (stream, pid)
}

/// Children that die by SIGSEGV or SIGABRT, that the test SIGKILLs, or that
/// exit without reading what the client sent: each session's end is logged
/// with its signal or code, and a concurrent session keeps echoing byte for
/// byte through all of it.
#[test]
fn crashing_killed_and_early_exiting_children_are_logged_and_isolated() {
    let shell = |script: &str| {
        format!(
            "[{}, {}, {}]",
            toml_str("/bin/sh"),
            toml_str("-c"),
            toml_str(script)
        )
    };
    let config = [
        toml_service("steady", 0, &child_argv(&["echo"]), &[]),
        toml_service("segv", 1, &shell("kill -SEGV $$"), &[]),
        toml_service("abort", 2, &shell("kill -ABRT $$"), &[]),
        toml_service("victim", 3, &child_argv(&["pid"]), &[]),
        toml_service("early-exit", 4, &child_argv(&["exit", "3"]), &[]),
    ]
    .concat();
    let mut daemon = without_core_dumps(Daemon::builder().toml(&config)).start();
    let mut steady = Steady::open(daemon.port(0));

    for (port, signal, name) in [(1, libc::SIGSEGV, "SIGSEGV"), (2, libc::SIGABRT, "SIGABRT")] {
        let (mut stream, pid) = session_on(&daemon, daemon.port(port));
        let rest = read_to_eof(&mut stream, WAIT)
            .unwrap_or_else(|e| panic!("the client of a child killed by {name}: {e}"));
        assert!(rest.is_empty(), "{name}: {rest:?}");
        let end = daemon.session_end(pid);
        assert!(
            has_status(&end, &format!("signal {signal}")),
            "{name}: {end}"
        );
        steady.check(name);
    }

    let (mut stream, pid) = session_on(&daemon, daemon.port(3));
    assert_eq!(read_line(&mut stream, WAIT), format!("pid={pid}"));
    kill(pid as i32, libc::SIGKILL).expect("SIGKILL the child");
    let rest = read_to_eof(&mut stream, WAIT).expect("EOF once the child is killed");
    assert!(rest.is_empty(), "after SIGKILL: {rest:?}");
    let end = daemon.session_end(pid);
    assert!(has_status(&end, "signal 9"), "SIGKILL: {end}");
    steady.check("SIGKILL");

    // The request is sent at once; the child exits without reading it. The
    // kernel then answers the unread data with a reset (RFC 1122 4.2.2.13):
    // that is the child's close, not the daemon's, so either ending is fine
    // for the client; the log must say `exit 3`.
    let mut stream = connect(daemon.port(4));
    stream
        .write_all(&[b'x'; 4096])
        .expect("send before the child exits");
    let (_, pid) = daemon.session_start(stream.local_addr().expect("local_addr"));
    let end = daemon.session_end(pid);
    assert!(has_status(&end, "exit 3"), "exit before reading: {end}");
    match read_to_eof(&mut stream, WAIT) {
        Ok(data) => assert_eq!(data, format!("exiting pid={pid} code=3\n").as_bytes()),
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
    }
    steady.check("an exit before reading");

    steady.finish(&daemon);
    assert!(daemon.exited().is_none(), "the daemon is still running");
    assert_eq!(daemon.count(|l| l.contains("session start")), 5);
}

/// Clients that reset mid-session (SO_LINGER 0) or never send (the service
/// has `timeout = 1`): the child's read fails, it exits with the test
/// child's I/O error code 70, the end is logged, and a concurrent session
/// keeps echoing byte for byte.
#[test]
fn resetting_and_silent_clients_are_logged_and_isolated() {
    let config = [
        toml_service("steady", 0, &child_argv(&["echo"]), &[]),
        toml_service("reset", 1, &child_argv(&["echo"]), &[]),
        toml_service("silent", 2, &child_argv(&["echo"]), &["timeout = 1"]),
    ]
    .concat();
    let mut daemon = Daemon::builder().toml(&config).start();
    let mut steady = Steady::open(daemon.port(0));

    // Reset while the child waits in read, after one echo.
    let (mut stream, pid) = session_on(&daemon, daemon.port(1));
    stream.write_all(b"ping\n").expect("send");
    assert_eq!(read_line(&mut stream, WAIT), "ping");
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(stream);
    let end = daemon.session_end(pid);
    assert!(has_status(&end, "exit 70"), "a client reset: {end}");
    steady.check("a client reset");

    // Never sends: after the 1 s receive timeout the child's read fails.
    let started = Instant::now();
    let (mut stream, pid) = session_on(&daemon, daemon.port(2));
    steady.check("a silent client connected");
    let said = read_to_eof(&mut stream, WAIT).expect("a clean EOF for the silent client");
    let said = String::from_utf8_lossy(&said);
    assert!(
        said.contains("wininetd-testchild echo:"),
        "the child says why it ends: {said:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the silent session ended after {:?}, before the timeout",
        started.elapsed()
    );
    let end = daemon.session_end(pid);
    assert!(has_status(&end, "exit 70"), "a silent client: {end}");
    steady.check("a silent client");

    steady.finish(&daemon);
    assert!(daemon.exited().is_none(), "the daemon is still running");
}

// ---------------------------------------------------------------------------
// Soak
// ---------------------------------------------------------------------------

/// The soak's length; `WININETD_SOAK_SECS` overrides it.
const SOAK_DEFAULT: Duration = Duration::from_secs(30);
/// Up to this long, the daemon logs every session and the test checks the
/// counts; a longer soak logs warnings only.
const SOAK_FULL_LOG_MAX: Duration = Duration::from_secs(120);
const SOAK_CLIENTS: usize = 4;
/// Load before the baseline, so that it includes what the daemon allocates
/// once for a busy moment (task slabs, buffers) and keeps.
const WARM_UP: Duration = Duration::from_secs(2);
/// How much more anonymous memory (heap and stacks; file-backed pages are
/// left out, they only show which code has run) the daemon may hold after
/// the soak than at the baseline, in KiB. It is not zero because the
/// allocator keeps a high-water mark it reaches slowly (fragmentation):
/// measured here, -36 to +632 KiB after 30 s soaks of a debug build, and in
/// release a plateau of +316 KiB reached after about 80 s and flat to the end
/// of a 400 s soak (236 000 sessions). 2 MiB is three times the worst seen;
/// a leak of about 200 bytes per session over the short soak's ~11 000
/// sessions goes above it, and of 2 bytes over the long form's million.
const RSS_SLACK_KIB: u64 = 2048;

fn soak_duration() -> Duration {
    match std::env::var("WININETD_SOAK_SECS") {
        Ok(secs) => Duration::from_secs(
            secs.parse()
                .unwrap_or_else(|e| panic!("WININETD_SOAK_SECS={secs:?}: {e}")),
        ),
        Err(_) => SOAK_DEFAULT,
    }
}

/// What the daemon holds, from /proc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Usage {
    fds: usize,
    threads: u64,
    rss_kib: u64,
    anon_kib: u64,
    children: usize,
    zombies: usize,
}

fn usage(pid: u32) -> Usage {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("the daemon runs");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    let children = children_of(pid);
    Usage {
        fds: open_fds(pid).len(),
        threads: field("Threads"),
        rss_kib: field("VmRSS"),
        anon_kib: field("RssAnon"),
        children: children.len(),
        zombies: children.iter().filter(|(_, state)| *state == 'Z').count(),
    }
}

/// Waits until the daemon is back at `baseline`: the same fds and threads,
/// no child, and anonymous memory within [`RSS_SLACK_KIB`]. Panics with both
/// measurements after [`WAIT`], which leaves time for idle pool threads to
/// retire (tokio's blocking pool keeps one for 10 s).
fn wait_settled(pid: u32, baseline: &Usage) -> Usage {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = usage(pid);
        let settled = now.fds == baseline.fds
            && now.threads == baseline.threads
            && now.children == 0
            && now.anon_kib <= baseline.anon_kib + RSS_SLACK_KIB;
        if settled {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not settle within {WAIT:?}:\n  baseline {baseline:?}\n  now      {now:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// One full session: connect, send `request`, half-close, check the echo
/// and the clean EOF.
fn echo_session(dest: SocketAddr, request: &[u8]) -> Result<(), String> {
    let mut stream =
        try_connect(None, dest, WAIT).map_err(|e| format!("connect: {}", describe_io(&e)))?;
    stream
        .set_write_timeout(Some(WAIT))
        .map_err(|e| describe_io(&e))?;
    stream
        .write_all(request)
        .map_err(|e| format!("send: {}", describe_io(&e)))?;
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| format!("half-close: {}", describe_io(&e)))?;
    let echo = read_to_eof(&mut stream, WAIT).map_err(|e| format!("read: {}", describe_io(&e)))?;
    if echo == request {
        Ok(())
    } else {
        Err(format!(
            "echo of {} bytes came back as {} different bytes",
            request.len(),
            echo.len()
        ))
    }
}

/// `SOAK_CLIENTS` threads doing sessions back to back for `period`; returns
/// how many sessions they did, or the first failure of each failed thread.
/// With `progress` (the daemon's pid), samples what the daemon holds every
/// 100 ms meanwhile, prints it every so often (a long soak shows a trend),
/// and returns the highest of each.
fn load(
    dest: SocketAddr,
    period: Duration,
    progress: Option<u32>,
) -> Result<(usize, Option<Usage>), String> {
    load_with(SOAK_CLIENTS, dest, period, progress)
}

/// [`load`] with `count` clients.
fn load_with(
    count: usize,
    dest: SocketAddr,
    period: Duration,
    progress: Option<u32>,
) -> Result<(usize, Option<Usage>), String> {
    let started = Instant::now();
    let until = started + period;
    let clients: Vec<_> = (0..count)
        .map(|id| {
            thread::spawn(move || -> Result<usize, String> {
                let mut done = 0;
                while Instant::now() < until {
                    let request = format!("soak client {id} session {done}\n").repeat(32);
                    echo_session(dest, request.as_bytes())
                        .map_err(|e| format!("client {id}, session {done}: {e}"))?;
                    done += 1;
                }
                Ok(done)
            })
        })
        .collect();
    let mut peak = None;
    if let Some(pid) = progress {
        let every = (period / 20).max(Duration::from_secs(10));
        let mut printed = Instant::now();
        let mut top = usage(pid);
        while !clients.iter().all(thread::JoinHandle::is_finished) {
            thread::sleep(Duration::from_millis(100));
            let now = usage(pid);
            top = Usage {
                fds: top.fds.max(now.fds),
                threads: top.threads.max(now.threads),
                rss_kib: top.rss_kib.max(now.rss_kib),
                anon_kib: top.anon_kib.max(now.anon_kib),
                children: top.children.max(now.children),
                zombies: top.zombies.max(now.zombies),
            };
            if printed.elapsed() >= every {
                eprintln!("soak at {:>5.0?}: {now:?}", started.elapsed());
                printed = Instant::now();
            }
        }
        peak = Some(top);
    }
    let mut total = 0;
    let mut failures = Vec::new();
    for client in clients {
        match client.join().expect("a soak client does not panic") {
            Ok(done) => total += done,
            Err(err) => failures.push(err),
        }
    }
    if failures.is_empty() {
        Ok((total, peak))
    } else {
        Err(failures.join("\n"))
    }
}

/// A few clients do full echo sessions as fast as they can; afterwards the
/// daemon's fds, threads and children are back at their baseline, no zombie
/// is left and its anonymous memory is within [`RSS_SLACK_KIB`]; every
/// session was served byte for byte and logged with `exit 0`. The peaks
/// sampled meanwhile are printed (see
/// [`exited_children_are_reaped_while_clients_keep_coming`] for the bound on
/// children).
#[test]
#[ignore = "a 30 s soak, run on its own: cargo test --test daemon soak -- --ignored"]
fn soak_at_full_rate_leaves_no_leak() {
    let period = soak_duration();
    let full_log = period <= SOAK_FULL_LOG_MAX;
    let mut builder = Daemon::builder().service("none", &child("echo"));
    if !full_log {
        builder = builder.env("WININETD_LOG", "warn");
    }
    let mut daemon = builder.start();
    let dest = v4(daemon.port(0));
    let pid = daemon.pid();
    let idle = usage(pid);

    let (warm, _) = load(dest, WARM_UP, None).unwrap_or_else(|e| panic!("warm-up:\n{e}"));
    // The baseline: once the warm-up's sessions are gone and the fds settle.
    // Its threads are those of the daemon before its first session: threads
    // a pool started for the load must retire once idle.
    let deadline = Instant::now() + WAIT;
    let baseline = loop {
        let now = usage(pid);
        if now.children == 0 {
            thread::sleep(Duration::from_millis(200));
            if usage(pid) == now {
                break Usage {
                    threads: idle.threads,
                    ..now
                };
            }
        }
        assert!(
            Instant::now() < deadline,
            "the warm-up never settles: {now:?}"
        );
        thread::sleep(Duration::from_millis(50));
    };

    let started = Instant::now();
    let (sessions, peak) = load(dest, period, Some(pid)).unwrap_or_else(|e| panic!("soak:\n{e}"));
    let peak = peak.expect("sampled");
    let took = started.elapsed();
    assert!(daemon.exited().is_none(), "the daemon died in the soak");
    assert!(sessions > 0, "the soak did some sessions");
    let after = wait_settled(pid, &baseline);
    eprintln!(
        "soak: {sessions} sessions in {took:?} ({:.0}/s) after a warm-up of {warm}\n  idle     {idle:?}\n  baseline {baseline:?}\n  peak     {peak:?}\n  settled  {after:?}\n  anonymous memory {:+} KiB ({:+.1} bytes per session), RSS {:+} KiB",
        sessions as f64 / took.as_secs_f64(),
        after.anon_kib as i64 - baseline.anon_kib as i64,
        (after.anon_kib as f64 - baseline.anon_kib as f64) * 1024.0 / sessions as f64,
        after.rss_kib as i64 - baseline.rss_kib as i64,
    );
    if full_log {
        let total = warm + sessions;
        daemon.wait_for_count("`session end` with `status=exit 0`", total, WAIT, |l| {
            l.contains("session end") && has_status(l, "exit 0")
        });
        assert_eq!(daemon.count(|l| l.contains("session start")), total);
    }
    assert_eq!(
        daemon.count(|l| l.contains("cannot start") || l.contains("accept failed")),
        0
    );
}

/// The cap in [`exited_children_are_reaped_while_clients_keep_coming`]:
/// eight times the clients, each of which has one session at a time.
const REAP_CAP: usize = 8 * SOAK_CLIENTS;

/// Under a steady stream of short sessions, a child that has exited is
/// reaped at once, so it neither stays a zombie nor keeps its session slot.
/// With `SOAK_CLIENTS` clients doing one session at a time and
/// `--max-sessions` eight times that, the cap is never reached.
///
/// Pins a defect the soak found up to 90754af: programs were started on the
/// accept task, which kept the single-threaded runtime busy, and the reapers
/// ran late. 4 clients left up to 386 unreaped children (each with its
/// pidfd: 409 fds) at once, and this test saw the cap of 32 "reached" 12 to
/// 66 times in 5 s with 4 sessions running (it loads for 3 s now, to keep
/// the suite short: a few seconds show the defect). Starting programs on
/// the blocking pool (71618fb) fixed it: peak 3 to 4 children, no `session
/// limit` line.
#[test]
fn exited_children_are_reaped_while_clients_keep_coming() {
    let daemon = Daemon::builder()
        .service("none", &child("echo"))
        .args(&["--max-sessions", &REAP_CAP.to_string()])
        .start();
    let dest = v4(daemon.port(0));
    let (sessions, peak) = load(dest, Duration::from_secs(3), Some(daemon.pid()))
        .unwrap_or_else(|e| panic!("load:\n{e}"));
    let peak = peak.expect("sampled");
    let limit_lines = daemon.count(|l| l.contains("session limit"));
    let (logged, _) = logged_concurrency(&daemon.lines());
    eprintln!(
        "reaping under load: {sessions} sessions by {SOAK_CLIENTS} clients, peak {peak:?}, \
         {logged} sessions at once by the log, {limit_lines} `session limit` lines"
    );
    assert_eq!(
        limit_lines, 0,
        "{SOAK_CLIENTS} clients with one session each at a time reached --max-sessions {REAP_CAP}: \
         exited children wait to be reaped and keep their slots (peak {} children, {} of them \
         zombies, {} fds; {logged} sessions at once by the log)",
        peak.children, peak.zombies, peak.fds
    );
}

/// Clients enough that a connection is always waiting (48, each starting
/// its next session at once): the accept loop, which starts programs
/// itself on Linux, still lets the reapers run, so exited children never
/// pile up.
///
/// The bound is two zombies per client. A program's exit closes the
/// connection before the process becomes a zombie (the kernel closes its
/// files first), so its client can be accepted again while it is still
/// exiting; the `waitid` of that accept then finds nothing, and the child
/// waits for a later accept or the reaper's next sweep (10 ms). One
/// zombie per client, the bound this test had first, was exceeded in one
/// CI run (51 with 48 clients); quiet runs peak at 17 to 45.
///
/// Pins a defect of the first version that started programs on the
/// runtime thread without waiting for their exec: with the backlog never
/// empty the accept loop never yielded, and 64 clients left 7,262 zombies
/// after 1.5 s.
#[test]
fn children_are_reaped_while_the_backlog_never_empties() {
    const CLIENTS: usize = 48;
    let daemon = Daemon::builder().service("none", &child("echo")).start();
    let dest = v4(daemon.port(0));
    let (sessions, peak) = load_with(CLIENTS, dest, Duration::from_secs(2), Some(daemon.pid()))
        .unwrap_or_else(|e| panic!("load:\n{e}"));
    let peak = peak.expect("sampled");
    eprintln!("{CLIENTS} clients: {sessions} sessions, peak {peak:?}");
    assert!(
        peak.zombies <= 2 * CLIENTS,
        "{} zombies at once with {CLIENTS} clients: exited children wait to be reaped",
        peak.zombies
    );
}
