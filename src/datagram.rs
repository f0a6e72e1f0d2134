//! The built-in services over UDP: each datagram is answered on its own,
//! by one task per bound socket, with no program and no session.
//!
//! ```text
//! recv_from → guard (reflection) → admit (the service's gate) → at most one send_to
//! ```
//!
//! What a datagram gets back (RFC 862, 863, 867, 868, 864): echo, the
//! datagram itself; discard, nothing; daytime, one datagram with the
//! `asctime` line; time, 4 bytes; chargen, one datagram of 0 to 512
//! characters of chargen's lines (the length at random). The bytes are
//! [`crate::builtin`]'s.
//!
//! A UDP source address is whatever the sender wrote, so a datagram
//! service can be made to send its answers to a victim (reflection), more
//! than it received (amplification), or to another datagram service that
//! answers in turn, forever (echo to chargen, or to itself). So, before a
//! datagram is answered:
//!
//! - the guard drops it when its source port is 0, one of the well-known
//!   ports of services that answer datagrams ([`REFLECTING_PORTS`]), or
//!   the port of any UDP built-in this daemon serves (its own included:
//!   nothing is ever sent to one of our own sockets), or when its source
//!   address cannot send (unspecified, multicast, broadcast), as BSD
//!   inetd's `check_loop` and OpenBSD's `dg_badinput` do;
//! - the service's [`Gate`](crate::admit::Gate) decides, per datagram:
//!   `allow`/`deny`, `rate`, `rate_per_source`;
//! - a datagram gets one answer at most, never larger than it was for
//!   echo, and at most 512 bytes for chargen (a few dozen for daytime and
//!   time); an answer the socket cannot take at once is dropped, never
//!   queued.
//!
//! A refused datagram is logged as a refused connection is, through the
//! gate's rate-limited refusal log (`datagram refused`, with its `rule`:
//! `reflection` for the guard). An answered one is logged at debug level
//! only (`WININETD_LOG=debug`): at info, a flood would flood the log.
//!
//! The path is lean: one buffer per socket (no allocation per datagram),
//! one `recv_from` and at most one `send_to` per datagram, datagrams read
//! in batches while the socket has them, and the other tasks let run
//! between batches. A reload gives the task the service's new settings
//! through its endpoint's channel (the socket stays bound); the stop, and
//! the end of the endpoint, end the task.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::builtin::{self, CHARGEN_LINE_BYTES, CHARGEN_LINES, DAYTIME_MAX};
use crate::config::{Builtin, ListenAddr, Service};
use crate::connection::Active;
use crate::listen;
use crate::peer::Peer;
use crate::platform;

/// Source ports whose datagrams are never answered: 0 (no sender uses it;
/// a reply to it goes nowhere or is an attack's), and the well-known ports
/// of services that answer datagrams, so that an answer cannot start a
/// loop between two of them nor feed an amplifier: the inetd built-ins
/// (echo, discard, systat, daytime, qotd, chargen, time), DNS, TFTP,
/// portmapper, NTP, NetBIOS name service, SNMP, CLDAP, SLP, IKE, RIP,
/// IPMI, MS-SQL browser, SSDP, WS-Discovery, mDNS, CoAP and memcached.
///
/// All but memcached's are below every system's ephemeral range, so no
/// ordinary client is dropped by chance; 11211 is in FreeBSD's (10000 and
/// up): such a client gets no answer and tries again from another port.
pub const REFLECTING_PORTS: [u16; 24] = [
    0, 7, 9, 11, 13, 17, 19, 37, 53, 69, 111, 123, 137, 161, 389, 427, 500, 520, 623, 1434, 1900,
    3702, 5353, 5683,
];
/// memcached's port, apart: it is the one in an ephemeral range.
const MEMCACHED: u16 = 11211;

/// Datagrams read in a row, at most, before the other tasks run.
const BATCH: u32 = 32;

/// The largest UDP payload (IPv6 without jumbograms): every datagram fits
/// the buffer whole.
const DATAGRAM_MAX: usize = 65_535;

/// The most chargen sends in a datagram (RFC 864).
const CHARGEN_MAX: usize = 512;

/// Shortest and longest pause after a read error that is not about one
/// datagram (the system short of memory or buffers).
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A bound UDP socket of a built-in, registered with the runtime.
#[derive(Debug)]
pub struct Socket {
    socket: UdpSocket,
    /// Its address, as bound.
    local: SocketAddr,
}

impl Socket {
    /// Takes a socket [`listen::bind`] bound.
    pub fn new(socket: socket2::Socket) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        let local = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP socket"))?;
        let socket = UdpSocket::from_std(socket.into())?;
        Ok(Self { socket, local })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

/// Whether `addr` of `service` is served here (a UDP built-in) rather
/// than by an accept loop.
pub fn serves(addr: &ListenAddr, service: &Service) -> bool {
    matches!(addr, ListenAddr::Udp(_)) && service.builtin.is_some()
}

/// Answers the datagrams that reach `socket`, with the service's current
/// settings (`current`: replaced on reload), until `stop` turns true or
/// the task is ended.
pub async fn serve(
    socket: Socket,
    mut current: watch::Receiver<Arc<Active>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut responder = Responder::new(socket);
    let mut active = Arc::clone(&current.borrow_and_update());
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            ready = responder.socket.socket.readable() => if let Err(e) = ready {
                warn!(service = %active.name, error = %e, "cannot wait for datagrams");
                tokio::time::sleep(BACKOFF_MAX).await;
                continue;
            },
        }
        if current.has_changed().unwrap_or(false) {
            active = Arc::clone(&current.borrow_and_update());
        }
        match responder.batch(&active) {
            Batch::Drained => {}
            // Let the other tasks run while datagrams keep coming.
            Batch::Full => tokio::task::yield_now().await,
            Batch::Failing(pause) => tokio::time::sleep(pause).await,
        }
    }
}

/// How a batch of reads ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Batch {
    /// The socket has no more datagrams.
    Drained,
    /// [`BATCH`] datagrams read; there may be more.
    Full,
    /// Reading fails: pause this long before trying again.
    Failing(Duration),
}

/// One socket's answering side: the socket, what it answers with, its
/// copy of the guard's lists, and how reading has been failing.
#[derive(Debug)]
struct Responder {
    socket: Socket,
    answers: Answers,
    guard: Guard,
    /// Keeps the socket's port in [`SERVED`] while it is served.
    _served: Served,
    /// The pause after the last read that failed for the socket's sake
    /// (not one datagram's), while reading keeps failing.
    failing: Option<Duration>,
    errors_in_a_row: u32,
}

impl Responder {
    fn new(socket: Socket) -> Self {
        let port = socket.local.port();
        Self {
            socket,
            answers: Answers::new(port),
            guard: Guard::default(),
            _served: Served::register(port),
            failing: None,
            errors_in_a_row: 0,
        }
    }

    /// Reads and answers the datagrams waiting, up to [`BATCH`], with
    /// `active`'s settings. Never waits.
    fn batch(&mut self, active: &Active) -> Batch {
        let Some(builtin) = active.service.builtin else {
            // The server closes this socket before a reload could give it
            // a service with a program; should it not, nothing is answered.
            return Batch::Failing(BACKOFF_MAX);
        };
        self.guard.refresh();
        let now = Instant::now();
        for _ in 0..BATCH {
            match self.socket.socket.try_recv_from(&mut self.answers.buf) {
                Ok((len, peer)) => {
                    self.errors_in_a_row = 0;
                    if self.failing.take().is_some() {
                        info!(service = %active.name, "reading datagrams again");
                    }
                    self.answer(active, builtin, len, peer, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Batch::Drained,
                Err(e) if !platform::is_resource_exhaustion(&e) && self.errors_in_a_row < BATCH => {
                    // About one datagram: on Windows, an ICMP "unreachable"
                    // for an earlier answer fails the next recvfrom
                    // (WSAECONNRESET, WSAENETRESET).
                    debug!(service = %active.name, error = %e, "cannot read a datagram");
                    self.errors_in_a_row += 1;
                }
                Err(e) => {
                    // Short of a resource, or failing again and again:
                    // pause rather than spin.
                    if self.failing.is_none() {
                        warn!(service = %active.name, error = %e, "cannot read datagrams: backing off");
                    }
                    let pause = self
                        .failing
                        .map_or(BACKOFF_MIN, |p| (p * 2).min(BACKOFF_MAX));
                    self.failing = Some(pause);
                    return Batch::Failing(pause);
                }
            }
        }
        Batch::Full
    }

    /// Answers the datagram of `len` bytes in the buffer, from `peer`, if
    /// the guard and the gate let it be.
    fn answer(
        &mut self,
        active: &Active,
        builtin: Builtin,
        len: usize,
        peer: SocketAddr,
        now: Instant,
    ) {
        if let Err(refusal) = admit(&self.guard, active, peer, now) {
            log_refusal(active, self.socket.local, peer, &refusal, now);
            return;
        }
        let Some(answer) = self.answers.answer(builtin, len) else {
            return;
        };
        match self.socket.socket.try_send_to(answer, peer) {
            Ok(_) => {
                debug!(service = %active.name, peer = %listen::canonical(peer), received = len, sent = answer.len(), "datagram answered");
            }
            // Full (a flood): the answer is dropped, never queued.
            Err(e) => {
                debug!(service = %active.name, peer = %listen::canonical(peer), error = %e, "datagram not answered");
            }
        }
    }
}

/// Checks a datagram from `peer` against the guard, then the gate.
fn admit(guard: &Guard, active: &Active, peer: SocketAddr, now: Instant) -> Result<(), Refused> {
    guard.check(peer).map_err(Refused::Reflection)?;
    // With no per-source session cap (a config error for a UDP built-in),
    // the source slot holds nothing.
    active
        .gate
        .admit(&Peer::Ip(peer), now)
        .map(drop)
        .map_err(Refused::Gate)
}

/// Why a datagram was not answered.
#[derive(Debug)]
enum Refused {
    Reflection(Suspect),
    Gate(crate::admit::Refusal),
}

impl Refused {
    fn rule(&self) -> &'static str {
        match self {
            Self::Reflection(_) => "reflection",
            Self::Gate(refusal) => refusal.rule(),
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Reflection(suspect) => suspect.fmt(f),
            Self::Gate(refusal) => refusal.fmt(f),
        }
    }
}

/// Logs a refused datagram, unless the gate's refusal log is at its rate.
fn log_refusal(
    active: &Active,
    local: SocketAddr,
    peer: SocketAddr,
    refused: &Refused,
    now: Instant,
) {
    if let Some(suppressed) = active.gate.log_refusal(now) {
        warn!(
            service = %active.name,
            peer = %listen::canonical(peer),
            local = %listen::canonical(local),
            rule = %refused.rule(),
            reason = %refused,
            suppressed,
            "datagram refused"
        );
    }
}

/// What makes a datagram's source one never to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Suspect {
    /// Source port 0.
    PortZero,
    /// A well-known datagram service's port.
    ServicePort(u16),
    /// The port of one of this daemon's UDP built-ins.
    OurPort(u16),
    /// An address no datagram comes from.
    Address,
}

impl fmt::Display for Suspect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PortZero => f.write_str("source port 0"),
            Self::ServicePort(port) => write!(
                f,
                "source port {port} is a datagram service's (the answer could loop or be reflected)"
            ),
            Self::OurPort(port) => write!(
                f,
                "source port {port} is one of this daemon's UDP built-ins (the answer could loop)"
            ),
            Self::Address => {
                f.write_str("the source address cannot send (unspecified, multicast or broadcast)")
            }
        }
    }
}

/// The ports of the UDP built-ins this daemon serves now, one entry per
/// bound socket; [`SERVED_VERSION`] changes with each change, so that the
/// tasks copy the list only then.
static SERVED: Mutex<Vec<u16>> = Mutex::new(Vec::new());
static SERVED_VERSION: AtomicU64 = AtomicU64::new(0);

/// One bound socket's entry in [`SERVED`], removed when dropped.
#[derive(Debug)]
struct Served(u16);

impl Served {
    fn register(port: u16) -> Self {
        served().push(port);
        SERVED_VERSION.fetch_add(1, Ordering::Release);
        Self(port)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let mut served = served();
        if let Some(i) = served.iter().position(|&p| p == self.0) {
            served.swap_remove(i);
        }
        drop(served);
        SERVED_VERSION.fetch_add(1, Ordering::Release);
    }
}

fn served() -> std::sync::MutexGuard<'static, Vec<u16>> {
    // A plain list of ports: whole even if a holder panicked.
    SERVED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A task's copy of the guard's lists.
#[derive(Debug, Default)]
struct Guard {
    /// The [`SERVED_VERSION`] of `served` (0 before the first copy: the
    /// task's own registration has made the version at least 1).
    version: u64,
    served: Vec<u16>,
}

impl Guard {
    /// Copies [`SERVED`] again if it changed.
    fn refresh(&mut self) {
        let version = SERVED_VERSION.load(Ordering::Acquire);
        if version != self.version {
            self.served.clone_from(&served());
            self.version = version;
        }
    }

    /// Whether a datagram from `peer` may be answered.
    fn check(&self, peer: SocketAddr) -> Result<(), Suspect> {
        let port = peer.port();
        if port == 0 {
            return Err(Suspect::PortZero);
        }
        if REFLECTING_PORTS.contains(&port) || port == MEMCACHED {
            return Err(Suspect::ServicePort(port));
        }
        if self.served.contains(&port) {
            return Err(Suspect::OurPort(port));
        }
        let ip = peer.ip().to_canonical();
        if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
            return Err(Suspect::Address);
        }
        Ok(())
    }
}

/// What a socket's task answers with: the buffer a datagram is read into
/// (echo answers from it), chargen's lines, and the state that varies.
struct Answers {
    buf: Box<[u8]>,
    /// A period of chargen's lines and, after it, its first
    /// [`CHARGEN_MAX`] bytes again: any answer is one slice of it.
    chargen: Box<[u8]>,
    /// The line chargen's next answer starts with.
    line: usize,
    /// xorshift64* state, for chargen's lengths.
    random: u64,
    daytime: [u8; DAYTIME_MAX],
    time: [u8; 4],
}

impl fmt::Debug for Answers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Answers")
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

impl Answers {
    fn new(port: u16) -> Self {
        let mut chargen = builtin::chargen_period();
        chargen.extend_from_within(..CHARGEN_MAX);
        // Not for secrets: lengths that vary from one answer to the next,
        // and from one start to the next.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        #[allow(clippy::cast_possible_truncation)] // the low bits vary most
        let seed = (nanos as u64) ^ (u64::from(port) << 48) ^ u64::from(std::process::id());
        Self {
            buf: vec![0; DATAGRAM_MAX].into_boxed_slice(),
            chargen: chargen.into_boxed_slice(),
            line: 0,
            random: seed | 1,
            daytime: [0; DAYTIME_MAX],
            time: [0; 4],
        }
    }

    /// The answer of `builtin` to the datagram of `len` bytes in the
    /// buffer; `None` for none.
    fn answer(&mut self, builtin: Builtin, len: usize) -> Option<&[u8]> {
        match builtin {
            Builtin::Echo => Some(&self.buf[..len]),
            Builtin::Discard => None,
            Builtin::Daytime => Some(builtin::daytime(SystemTime::now(), &mut self.daytime)),
            Builtin::Time => {
                self.time = builtin::rfc868(SystemTime::now()).to_be_bytes();
                Some(&self.time)
            }
            Builtin::Chargen => {
                let len = usize::try_from(self.next_random() % (CHARGEN_MAX as u64 + 1))
                    .expect("at most 512");
                let start = self.line * CHARGEN_LINE_BYTES;
                self.line = (self.line + 1) % CHARGEN_LINES;
                Some(&self.chargen[start..start + len])
            }
        }
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.random;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.random = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn the_reflecting_ports_are_listed_once_each() {
        let mut sorted = REFLECTING_PORTS.to_vec();
        sorted.push(MEMCACHED);
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), REFLECTING_PORTS.len() + 1);
        for port in [7, 13, 17, 19, 37, 53, 123, 161, 1900] {
            assert!(REFLECTING_PORTS.contains(&port), "{port}");
        }
    }

    #[test]
    fn the_guard_drops_suspect_sources() {
        let guard = Guard {
            version: 1,
            served: vec![7007],
        };
        assert_eq!(guard.check(from(0)), Err(Suspect::PortZero));
        for port in [7, 19, 53, 123, 11_211] {
            assert_eq!(guard.check(from(port)), Err(Suspect::ServicePort(port)));
        }
        assert_eq!(guard.check(from(7007)), Err(Suspect::OurPort(7007)));
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::",
            "ff02::1",
            "::ffff:224.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().expect("an address");
            assert_eq!(
                guard.check(SocketAddr::new(ip, 40_000)),
                Err(Suspect::Address),
                "{ip}"
            );
        }
        assert_eq!(guard.check(from(40_000)), Ok(()));
        assert_eq!(guard.check(from(1024)), Ok(()));
    }

    #[test]
    fn a_registered_port_is_guarded_until_dropped() {
        let mut guard = Guard::default();
        let served = Served::register(47_123);
        guard.refresh();
        assert_eq!(guard.check(from(47_123)), Err(Suspect::OurPort(47_123)));
        drop(served);
        guard.refresh();
        assert_eq!(guard.check(from(47_123)), Ok(()));
    }

    #[test]
    fn answers_are_never_larger_than_their_bounds() {
        let mut answers = Answers::new(7);
        answers.buf[..3].copy_from_slice(b"abc");
        assert_eq!(answers.answer(Builtin::Echo, 3), Some(&b"abc"[..]));
        assert_eq!(answers.answer(Builtin::Echo, 0), Some(&b""[..]));
        assert_eq!(answers.answer(Builtin::Discard, 3), None);
        assert_eq!(answers.answer(Builtin::Time, 0).map(<[u8]>::len), Some(4));
        let daytime = answers
            .answer(Builtin::Daytime, 0)
            .expect("a line")
            .to_vec();
        assert!(
            daytime.ends_with(b"\r\n") && daytime.len() == 26,
            "{daytime:?}"
        );
        let period = builtin::chargen_period();
        let mut lengths = std::collections::HashSet::new();
        for i in 0..2 * CHARGEN_LINES {
            let answer = answers
                .answer(Builtin::Chargen, 0)
                .expect("chargen")
                .to_vec();
            assert!(answer.len() <= CHARGEN_MAX);
            // Starts at its line, and goes on as chargen's lines do.
            let start = (i % CHARGEN_LINES) * CHARGEN_LINE_BYTES;
            let expected: Vec<u8> = period
                .iter()
                .cycle()
                .skip(start)
                .take(answer.len())
                .copied()
                .collect();
            assert_eq!(answer, expected, "answer {i}");
            lengths.insert(answer.len());
        }
        assert!(lengths.len() > 10, "lengths vary: {lengths:?}");
    }
}
