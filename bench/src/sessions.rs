//! Short sessions at a fixed concurrency: `concurrency` tasks on one thread,
//! each looping connect → (write a line and shut our side down: `--send`)
//! → read the reply → see EOF → close.
//!
//! After a warm-up, a window of `duration` is measured: the sessions that
//! complete inside it give the rate, their connect-to-first-byte times the
//! latency percentiles, and the daemon's CPU time over the window (read from
//! `/proc`) divided by them the CPU per session. Every session has a timeout;
//! the run stops at the end of the window or after `max_sessions` sessions,
//! whichever comes first.
//!
//! With `--tls-cert`, each session does a full TLS 1.3 handshake once
//! connected (no resumption; see `tls`), reads the reply in plaintext, sees
//! the server's close_notify, and sends its own before it closes. With
//! `--proxy-v2`, each session first sends a PROXY protocol v2 header naming
//! its own addresses, as a load balancer would.

use std::cell::{Cell, RefCell};
use std::error::Error;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::task::LocalSet;

use crate::line::{Line, Tags};
use crate::procfs;
use crate::tls::{self, Agreed};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service's address (a literal address: nothing is resolved).
    #[arg(long)]
    addr: SocketAddr,
    /// Sessions in flight at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// The measured window.
    #[arg(long, value_parser = crate::parse_duration, default_value = "2s")]
    duration: Duration,
    /// Sessions before the window, not counted.
    #[arg(long, value_parser = crate::parse_duration, default_value = "300ms")]
    warmup: Duration,
    /// Stop after this many sessions in all (warm-up included).
    #[arg(long, default_value_t = 1_000_000)]
    max_sessions: u64,
    /// The reply every session must receive, exactly.
    #[arg(long, default_value = "hello\n")]
    expect: String,
    /// Instead of `--expect`: any one line of printable text (a daytime
    /// service's date), ending in LF or CR LF.
    #[arg(long, conflicts_with = "expect")]
    any_line: bool,
    /// Written once connected, then our side is shut down (an echo
    /// service's line; its reply then ends with the server's EOF).
    #[arg(long)]
    send: Option<String>,
    /// A session that takes longer fails.
    #[arg(long, value_parser = crate::parse_duration, default_value = "5s")]
    timeout: Duration,
    /// Also write each measured session to this file, a line each: when it
    /// started (µs into the window) and its connect-to-first-byte time
    /// (µs), in the order they completed; for looking at a tail.
    #[arg(long)]
    latencies: Option<std::path::PathBuf>,
    /// Send a PROXY protocol v2 header first (TCP over IPv4, the
    /// connection's own addresses), before anything else.
    #[arg(long)]
    proxy_v2: bool,
    #[command(flatten)]
    tls: tls::TlsArgs,
    #[command(flatten)]
    cpu: procfs::CpuSource,
    #[command(flatten)]
    tags: Tags,
}

/// Where the run is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Warmup,
    Measuring,
    Done,
}

/// What the tasks share (one thread: `Cell`s, no locks).
#[derive(Debug)]
struct State {
    phase: Cell<Phase>,
    started: Cell<u64>,
    /// Sessions completed inside the window, and for each when it started
    /// (ns after the window opened) and its latency (ns).
    completed: Cell<u64>,
    latencies: RefCell<Vec<(u64, u64)>>,
    /// When the window opened.
    window_start: Cell<Option<Instant>>,
    /// Failures inside the window, and the first failure of the whole run.
    errors: Cell<u64>,
    first_error: RefCell<Option<String>>,
    /// TLS: what the first handshake agreed on, and how many of the
    /// window's sessions had a full handshake, and a HelloRetryRequest.
    agreed: RefCell<Option<Agreed>>,
    full_handshakes: Cell<u64>,
    retried: Cell<u64>,
}

pub fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    if args.proxy_v2 && !args.addr.is_ipv4() {
        return Err("--proxy-v2 sends an IPv4 header: give an IPv4 --addr".into());
    }
    let tls = tls::Client::from_args(&args.tls)?;
    let state = Rc::new(State {
        phase: Cell::new(Phase::Warmup),
        started: Cell::new(0),
        completed: Cell::new(0),
        latencies: RefCell::new(Vec::with_capacity(1 << 16)),
        window_start: Cell::new(None),
        errors: Cell::new(0),
        first_error: RefCell::new(None),
        agreed: RefCell::new(None),
        full_handshakes: Cell::new(0),
        retried: Cell::new(0),
    });
    let local = LocalSet::new();
    let (window, daemon, client_ns) = local.block_on(&crate::runtime()?, async {
        let workers: Vec<_> = (0..args.concurrency)
            .map(|_| tokio::task::spawn_local(worker(Rc::clone(&state), config(args, tls.clone()))))
            .collect();
        tokio::time::sleep(args.warmup).await;
        let daemon0 = args.cpu.sample()?;
        let client0 = procfs::self_thread_ns();
        let start = Instant::now();
        state.window_start.set(Some(start));
        state.phase.set(Phase::Measuring);
        tokio::time::sleep(args.duration).await;
        state.phase.set(Phase::Done);
        let window = start.elapsed();
        let client_ns = procfs::self_thread_ns().saturating_sub(client0);
        let daemon = match daemon0 {
            Some(before) => args.cpu.sample()?.map(|now| now.since(before)),
            None => None,
        };
        // Sessions still in flight end within their timeout.
        for worker in workers {
            let _ = tokio::time::timeout(args.timeout + Duration::from_secs(1), worker).await;
        }
        Ok::<_, io::Error>((window, daemon, client_ns))
    })?;

    let completed = state.completed.get();
    let sessions = state.latencies.take();
    let mut latencies: Vec<u64> = sessions.iter().map(|&(_, latency)| latency).collect();
    latencies.sort_unstable();
    let secs = window.as_secs_f64();
    let per_session_us = |ns: u64| match completed {
        0 => "nan".to_owned(),
        n => format!("{:.2}", ns as f64 / n as f64 / 1e3),
    };
    let mut line = Line::new(&args.tags);
    line.field("concurrency", args.concurrency)
        .field("sessions", completed)
        .field("secs", format!("{secs:.3}"))
        .field("rate", format!("{:.1}", completed as f64 / secs))
        .field("p50_us", micros(percentile(&latencies, 50.0)))
        .field("p99_us", micros(percentile(&latencies, 99.0)))
        .field("max_us", micros(latencies.last().copied()))
        .field("errors", state.errors.get())
        .field("client_cpu_us", per_session_us(client_ns));
    if let Some(cpu) = daemon {
        line.field("own_cpu_us", per_session_us(cpu.own_ns))
            .field("tree_cpu_us", per_session_us(cpu.tree_ns));
    }
    if args.proxy_v2 {
        line.field("proxy", "v2");
    }
    if let Some(agreed) = state.agreed.take() {
        line.field("tls_version", agreed.version)
            .field("cipher", agreed.cipher)
            .field("kx", agreed.kx)
            .field("full_handshakes", state.full_handshakes.get())
            .field("retried", state.retried.get());
    }
    if let Some(error) = state.first_error.take() {
        line.field("first_error", error.replace(char::is_whitespace, "_"));
    }
    line.print();
    // After the figures, so that a bad path loses only the dump.
    if let Some(path) = &args.latencies {
        std::fs::write(path, latency_lines(&sessions))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if completed == 0 {
        return Err("no session completed in the window".into());
    }
    Ok(())
}

/// What each task needs from the arguments, owned.
#[derive(Debug, Clone)]
struct Config {
    addr: SocketAddr,
    expect: Expect,
    send: Option<Rc<[u8]>>,
    timeout: Duration,
    max_sessions: u64,
    proxy_v2: bool,
    tls: Option<tls::Client>,
}

fn config(args: &Args, tls: Option<tls::Client>) -> Config {
    Config {
        addr: args.addr,
        expect: if args.any_line {
            Expect::AnyLine
        } else {
            Expect::Exactly(args.expect.as_bytes().into())
        },
        send: args.send.as_ref().map(|s| s.as_bytes().into()),
        timeout: args.timeout,
        max_sessions: args.max_sessions,
        proxy_v2: args.proxy_v2,
        tls,
    }
}

async fn worker(state: Rc<State>, config: Config) {
    let mut buf = vec![0; config.expect.max_len() + 1024];
    while state.phase.get() != Phase::Done && state.started.get() < config.max_sessions {
        state.started.set(state.started.get() + 1);
        let t0 = Instant::now();
        let result = tokio::time::timeout(config.timeout, session(&config, &mut buf))
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "session timed out")));
        let measuring = state.phase.get() == Phase::Measuring;
        match result {
            Ok((first_byte, agreed)) => {
                if let Some(agreed) = agreed {
                    if measuring {
                        let add = |c: &Cell<u64>, yes: bool| c.set(c.get() + u64::from(yes));
                        add(&state.full_handshakes, agreed.full);
                        add(&state.retried, agreed.retried);
                    }
                    state.agreed.borrow_mut().get_or_insert(agreed);
                }
                if measuring {
                    state.completed.set(state.completed.get() + 1);
                    let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
                    let since = state
                        .window_start
                        .get()
                        .map_or(0, |w| ns(t0.saturating_duration_since(w)));
                    state
                        .latencies
                        .borrow_mut()
                        .push((since, ns(first_byte.duration_since(t0))));
                }
            }
            Err(e) => {
                if measuring {
                    state.errors.set(state.errors.get() + 1);
                }
                state
                    .first_error
                    .borrow_mut()
                    .get_or_insert_with(|| e.to_string());
                // A refusing server must not turn the loop into a spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// One session; returns when the first byte arrived, and for TLS what the
/// handshake agreed on.
async fn session(config: &Config, buf: &mut [u8]) -> io::Result<(Instant, Option<Agreed>)> {
    let socket = match config.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    let mut stream = socket.connect(config.addr).await?;
    if config.proxy_v2 {
        let header = tls::proxy_v2_header(stream.local_addr()?, stream.peer_addr()?)
            .ok_or_else(|| io::Error::other("a PROXY v2 header needs IPv4 addresses"))?;
        stream.write_all(&header).await?;
    }
    let Some(client) = &config.tls else {
        return Ok((exchange(&mut stream, config, buf).await?, None));
    };
    let mut stream = client.connect(stream).await?;
    let agreed = tls::agreed(&stream);
    let first_byte = exchange(&mut stream, config, buf).await?;
    if config.send.is_none() {
        // Our close_notify, as a client that follows the RFC sends it; the
        // server may have closed the connection already.
        let _ = stream.shutdown().await;
    }
    Ok((first_byte, Some(agreed)))
}

/// Writes `--send` (then shuts our side down), reads the reply to EOF and
/// checks it; returns when its first byte arrived. Over TLS, EOF is the
/// server's close_notify: a connection that ends without one fails.
async fn exchange<S>(stream: &mut S, config: &Config, buf: &mut [u8]) -> io::Result<Instant>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Some(line) = &config.send {
        stream.write_all(line).await?;
        stream.shutdown().await?;
    }
    let mut got = 0;
    let mut first_byte = None;
    loop {
        if got == buf.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "reply too long"));
        }
        let n = stream.read(&mut buf[got..]).await?;
        if n == 0 {
            break;
        }
        first_byte.get_or_insert_with(Instant::now);
        got += n;
    }
    if !config.expect.accepts(&buf[..got]) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "unexpected reply {:?}",
                String::from_utf8_lossy(&buf[..got])
            ),
        ));
    }
    first_byte.ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no reply"))
}

/// What a session's reply must be.
#[derive(Debug, Clone)]
enum Expect {
    Exactly(Rc<[u8]>),
    AnyLine,
}

impl Expect {
    /// The longest reply accepted, for the read buffer.
    fn max_len(&self) -> usize {
        match self {
            Self::Exactly(bytes) => bytes.len(),
            Self::AnyLine => 0,
        }
    }

    fn accepts(&self, reply: &[u8]) -> bool {
        match self {
            Self::Exactly(bytes) => reply == &bytes[..],
            Self::AnyLine => {
                let text = reply
                    .strip_suffix(b"\n")
                    .map(|r| r.strip_suffix(b"\r").unwrap_or(r))
                    .unwrap_or_default();
                !text.is_empty() && text.iter().all(|b| (b' '..=b'~').contains(b))
            }
        }
    }
}

/// What `--latencies` writes: a line a session, its start (µs into the
/// window) and its connect-to-first-byte time (µs).
fn latency_lines(sessions: &[(u64, u64)]) -> String {
    let mut text = String::with_capacity(sessions.len() * 16);
    for &(start, latency) in sessions {
        let _ = writeln!(
            text,
            "{:.1} {:.1}",
            start as f64 / 1e3,
            latency as f64 / 1e3
        );
    }
    text
}

/// The nearest-rank percentile `p` of sorted `values`.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

pub fn micros(ns: Option<u64>) -> String {
    match ns {
        Some(ns) => format!("{:.1}", ns as f64 / 1e3),
        None => "nan".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_lines_give_start_and_latency_in_microseconds() {
        let text = latency_lines(&[(0, 272_140), (1_500_000, 1_073_000)]);
        assert_eq!(text, "0.0 272.1\n1500.0 1073.0\n");
        assert_eq!(latency_lines(&[]), "");
    }

    #[test]
    fn replies() {
        let hello = Expect::Exactly(b"hello\n"[..].into());
        assert!(hello.accepts(b"hello\n"));
        assert!(!hello.accepts(b"hello\nhello\n"));
        assert!(!hello.accepts(b"hell"));
        let line = Expect::AnyLine;
        assert!(line.accepts(b"Sat Dec  5 12:34:56 2026\r\n"));
        assert!(line.accepts(b"05 DEC 2026 13:22:35 UTC\r\n"));
        assert!(line.accepts(b"x\n"));
        for bad in [
            &b""[..],
            b"\r\n",
            b"\n",
            b"no end",
            b"two\nlines\n",
            b"\x00\n",
        ] {
            assert!(!line.accepts(bad), "{bad:?}");
        }
    }

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
