//! Datagrams to a UDP echo service: `concurrency` sockets on one thread,
//! each with one datagram in flight; it sends the next when the reply came
//! back or when it gave the datagram up (`loss_timeout`).
//!
//! Each datagram carries its socket and sequence number, so that a reply
//! is matched to what was sent, checked byte for byte, and counted once. A
//! reply that comes back after its datagram was given up is still an
//! answered datagram (*late*): the server did the work. After a warm-up, a
//! window of `duration` is measured: the replies received inside it give
//! the rate, their round trips the percentiles, and the daemon's CPU time
//! over the window divided by them the CPU per answered datagram.
//!
//! A server that discards datagrams (xinetd drops what is queued behind the
//! one it answers) costs its clients the loss timeout for each: that is how
//! a real client sees it, and why the timeout is in the output line.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::error::Error;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::task::LocalSet;

use crate::line::{Line, Tags};
use crate::procfs;
use crate::sessions::{micros, percentile};

/// The payload pattern's period: a prime, as in `bulk`.
const PERIOD: usize = 251;
/// A datagram given up this long ago is forgotten: its reply, if it ever
/// comes, is not counted.
const FORGET: Duration = Duration::from_secs(1);
/// The sequence number (8 bytes) leads every datagram.
const HEADER: usize = 8;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service's address (a literal address: nothing is resolved).
    #[arg(long)]
    addr: SocketAddr,
    /// Sockets, each with one datagram in flight.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Bytes in each datagram (at least 8: the sequence number).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// The measured window.
    #[arg(long, value_parser = crate::parse_duration, default_value = "2s")]
    duration: Duration,
    /// Datagrams before the window, not counted.
    #[arg(long, value_parser = crate::parse_duration, default_value = "300ms")]
    warmup: Duration,
    /// A socket waits this long for a reply, then sends its next datagram
    /// (the reply is still counted if it comes later).
    #[arg(long, value_parser = crate::parse_duration, default_value = "10ms")]
    loss_timeout: Duration,
    /// Stop after this many datagrams in all (warm-up included).
    #[arg(long, default_value_t = 50_000_000)]
    max_datagrams: u64,
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

/// What the sockets' tasks share (one thread: `Cell`s, no locks).
#[derive(Debug)]
struct State {
    phase: Cell<Phase>,
    /// Datagrams sent in all, and inside the window.
    sent_total: Cell<u64>,
    sent: Cell<u64>,
    /// Inside the window: replies matched to a datagram (each counted once),
    /// those that came after their datagram was given up, the datagrams
    /// given up, and replies that matched nothing or were not an echo.
    answered: Cell<u64>,
    late: Cell<u64>,
    given_up: Cell<u64>,
    errors: Cell<u64>,
    /// Round trips of the answered datagrams, in ns.
    round_trips: RefCell<Vec<u64>>,
    first_error: RefCell<Option<String>>,
}

impl State {
    fn measuring(&self) -> bool {
        self.phase.get() == Phase::Measuring
    }

    fn bump(&self, cell: &Cell<u64>) {
        if self.measuring() {
            cell.set(cell.get() + 1);
        }
    }

    fn error(&self, text: String) {
        self.bump(&self.errors);
        self.first_error.borrow_mut().get_or_insert(text);
    }
}

pub fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    if args.size < HEADER || args.size > 65_507 {
        return Err(format!("--size must be {HEADER} to 65507 bytes").into());
    }
    let state = Rc::new(State {
        phase: Cell::new(Phase::Warmup),
        sent_total: Cell::new(0),
        sent: Cell::new(0),
        answered: Cell::new(0),
        late: Cell::new(0),
        given_up: Cell::new(0),
        errors: Cell::new(0),
        round_trips: RefCell::new(Vec::with_capacity(1 << 16)),
        first_error: RefCell::new(None),
    });
    let local = LocalSet::new();
    let (window, daemon, client_ns) = local.block_on(&crate::runtime()?, async {
        let mut workers = Vec::with_capacity(args.concurrency);
        for index in 0..args.concurrency {
            let socket = UdpSocket::bind(
                match args.addr {
                    SocketAddr::V4(_) => "127.0.0.1:0".parse::<SocketAddr>(),
                    SocketAddr::V6(_) => "[::1]:0".parse::<SocketAddr>(),
                }
                .expect("a literal address"),
            )
            .await?;
            // Connected: the kernel drops what does not come from the
            // service's address, and a refusal (ICMP) shows as an error.
            socket.connect(args.addr).await?;
            let config = Config {
                index: index as u64,
                size: args.size,
                loss_timeout: args.loss_timeout,
                max_datagrams: args.max_datagrams,
            };
            workers.push(tokio::task::spawn_local(worker(
                Rc::clone(&state),
                socket,
                config,
            )));
        }
        tokio::time::sleep(args.warmup).await;
        let daemon0 = args.cpu.sample()?;
        let client0 = procfs::self_thread_ns();
        let start = Instant::now();
        state.phase.set(Phase::Measuring);
        tokio::time::sleep(args.duration).await;
        state.phase.set(Phase::Done);
        let window = start.elapsed();
        let client_ns = procfs::self_thread_ns().saturating_sub(client0);
        let daemon = match daemon0 {
            Some(before) => args.cpu.sample()?.map(|now| now.since(before)),
            None => None,
        };
        // Each task ends at its next reply or timeout.
        for worker in workers {
            let _ = tokio::time::timeout(args.loss_timeout + Duration::from_secs(1), worker).await;
        }
        Ok::<_, io::Error>((window, daemon, client_ns))
    })?;

    let answered = state.answered.get();
    let sent = state.sent.get();
    let mut round_trips = state.round_trips.take();
    round_trips.sort_unstable();
    let secs = window.as_secs_f64();
    let per_datagram_us = |ns: u64| match answered {
        0 => "nan".to_owned(),
        n => format!("{:.2}", ns as f64 / n as f64 / 1e3),
    };
    let mut line = Line::new(&args.tags);
    line.field("concurrency", args.concurrency)
        .field("size", args.size)
        .field(
            "loss_timeout_ms",
            format!("{:.0}", args.loss_timeout.as_secs_f64() * 1e3),
        )
        .field("sent", sent)
        .field("answered", answered)
        .field("secs", format!("{secs:.3}"))
        .field("rate", format!("{:.1}", answered as f64 / secs))
        .field("given_up", state.given_up.get())
        .field("late", state.late.get())
        .field("loss_pct", loss_pct(sent, state.given_up.get()))
        .field("p50_us", micros(percentile(&round_trips, 50.0)))
        .field("p99_us", micros(percentile(&round_trips, 99.0)))
        .field("errors", state.errors.get())
        .field("client_cpu_us", per_datagram_us(client_ns));
    if let Some(cpu) = daemon {
        line.field("own_cpu_us", per_datagram_us(cpu.own_ns))
            .field("tree_cpu_us", per_datagram_us(cpu.tree_ns));
    }
    if let Some(error) = state.first_error.take() {
        line.field("first_error", error.replace(char::is_whitespace, "_"));
    }
    line.print();
    if answered == 0 {
        return Err("no datagram answered in the window".into());
    }
    Ok(())
}

/// The share of the window's datagrams that were given up, in percent.
fn loss_pct(sent: u64, given_up: u64) -> String {
    match sent {
        0 => "nan".to_owned(),
        n => format!("{:.2}", given_up as f64 * 100.0 / n as f64),
    }
}

/// What each socket's task needs, owned.
#[derive(Debug, Clone, Copy)]
struct Config {
    index: u64,
    size: usize,
    loss_timeout: Duration,
    max_datagrams: u64,
}

/// One datagram sent and not yet answered.
#[derive(Debug, Clone, Copy)]
struct Pending {
    seq: u64,
    sent: Instant,
    /// Given up (the socket has moved on); a reply still counts, as late.
    given_up: bool,
}

async fn worker(state: Rc<State>, socket: UdpSocket, config: Config) {
    // The socket's index in the top 16 bits: every datagram of the run
    // has its own number.
    let mut seq = config.index << 48;
    let mut datagram = vec![0; config.size];
    let mut reply = vec![0; config.size + 1];
    let mut pending: VecDeque<Pending> = VecDeque::new();
    while state.phase.get() != Phase::Done && state.sent_total.get() < config.max_datagrams {
        seq += 1;
        fill(&mut datagram, seq);
        // Before the send: on loopback the reply can be queued before the
        // send call has returned.
        let sent = Instant::now();
        if let Err(e) = socket.send(&datagram).await {
            state.error(format!("send: {e}"));
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        state.sent_total.set(state.sent_total.get() + 1);
        state.bump(&state.sent);
        pending.push_back(Pending {
            seq,
            sent,
            given_up: false,
        });
        let deadline = tokio::time::Instant::from_std(sent + config.loss_timeout);
        // Read until this datagram's reply or the deadline; replies to
        // datagrams given up earlier may come first.
        loop {
            match tokio::time::timeout_at(deadline, socket.recv(&mut reply)).await {
                Err(_) => {
                    if let Some(p) = pending.iter_mut().find(|p| p.seq == seq) {
                        p.given_up = true;
                    }
                    state.bump(&state.given_up);
                    break;
                }
                Ok(Err(e)) => {
                    // A refusal (nothing bound) comes back as an error on a
                    // connected socket; do not spin on it.
                    state.error(format!("recv: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    break;
                }
                Ok(Ok(n)) => match answer(&reply[..n], config.size, &mut pending) {
                    Some(p) => {
                        state.bump(&state.answered);
                        if p.given_up {
                            state.bump(&state.late);
                        }
                        if state.measuring() {
                            let ns = u64::try_from(p.sent.elapsed().as_nanos()).unwrap_or(u64::MAX);
                            state.round_trips.borrow_mut().push(ns);
                        }
                        if p.seq == seq {
                            break;
                        }
                    }
                    None => state.error(format!("a reply of {n} bytes that is no echo")),
                },
            }
        }
        let now = Instant::now();
        pending.retain(|p| !p.given_up || now.duration_since(p.sent) < FORGET);
    }
}

/// Writes datagram number `seq`: the number, then the pattern.
fn fill(datagram: &mut [u8], seq: u64) {
    datagram[..HEADER].copy_from_slice(&seq.to_be_bytes());
    for (i, byte) in datagram[HEADER..].iter_mut().enumerate() {
        *byte = ((seq as usize + i) % PERIOD) as u8;
    }
}

/// The pending datagram `reply` echoes, taken off the list; `None` if it
/// echoes none of them exactly (every datagram is `size` bytes).
fn answer(reply: &[u8], size: usize, pending: &mut VecDeque<Pending>) -> Option<Pending> {
    if reply.len() != size {
        return None;
    }
    let seq = u64::from_be_bytes(reply.get(..HEADER)?.try_into().ok()?);
    let at = pending.iter().position(|p| p.seq == seq)?;
    let mut expected = vec![0; reply.len()];
    fill(&mut expected, seq);
    (reply == expected.as_slice()).then(|| pending.remove(at).expect("the position found"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(seqs: &[u64]) -> VecDeque<Pending> {
        let now = Instant::now();
        seqs.iter()
            .map(|&seq| Pending {
                seq,
                sent: now,
                given_up: seq != *seqs.last().expect("one"),
            })
            .collect()
    }

    #[test]
    fn a_reply_is_matched_to_its_datagram_once() {
        let mut list = pending(&[4, 5, 6]);
        let mut reply = vec![0; 64];
        fill(&mut reply, 5);
        let p = answer(&reply, 64, &mut list).expect("5 is pending");
        assert_eq!((p.seq, p.given_up), (5, true));
        // The same reply again (a duplicate) matches nothing.
        assert!(answer(&reply, 64, &mut list).is_none());
        assert_eq!(list.iter().map(|p| p.seq).collect::<Vec<_>>(), [4, 6]);
    }

    #[test]
    fn a_reply_that_is_no_echo_matches_nothing() {
        let mut list = pending(&[7]);
        let mut reply = vec![0; 64];
        fill(&mut reply, 7);
        // One byte changed, cut short (all it has is the datagram's
        // beginning), one byte too many, another datagram's number.
        let mut changed = reply.clone();
        changed[40] ^= 1;
        assert!(answer(&changed, 64, &mut list).is_none());
        assert!(answer(&reply[..40], 64, &mut list).is_none());
        assert!(answer(&reply[..4], 64, &mut list).is_none());
        let mut longer = reply.clone();
        longer.push(((7 + 56) % PERIOD) as u8);
        assert!(answer(&longer, 64, &mut list).is_none());
        let mut other = vec![0; 64];
        fill(&mut other, 8);
        assert!(answer(&other, 64, &mut list).is_none());
        assert_eq!(list.len(), 1);
        assert!(answer(&reply, 64, &mut list).is_some());
    }

    #[test]
    fn datagrams_differ_by_number() {
        let (mut a, mut b) = (vec![0; 32], vec![0; 32]);
        fill(&mut a, 1);
        fill(&mut b, 2);
        assert_ne!(a, b);
        assert_eq!(&a[..HEADER], &1u64.to_be_bytes());
    }

    #[test]
    fn loss_in_percent() {
        assert_eq!(loss_pct(200, 3), "1.50");
        assert_eq!(loss_pct(0, 0), "nan");
    }
}
