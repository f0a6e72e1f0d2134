//! Stage 2, admit: decide whether a connection may become a session now.
//!
//! Two layers, both decided before any process starts:
//!
//! - [`Admission`], the daemon-wide cap (`--max-sessions`), as permits: a
//!   slot is taken before a child starts and returned when the [`Permit`] is
//!   dropped, whichever way the session ends. At the cap, listeners stop
//!   accepting and connections wait in the kernel's backlog, as with
//!   tcpserver.
//! - [`Gate`], one service's rules, in the contract's order: who may connect
//!   (`deny` wins, then a non-empty `allow`), how fast (the service's token
//!   bucket, then the source's), how many at once (the service's cap pauses
//!   accepting like the global one, through [`Gate::slot`]; the per-source
//!   cap refuses).
//!
//! All of it runs on the accept path, so it is cheap: no system call, no
//! blocking, no allocation per connection beyond a per-source map that grows
//! in amortized steps up to a bound ([`MAX_SOURCES`]). Callers pass the time,
//! so a decision depends only on its inputs and tests need no sleeps.
//!
//! Not here: sending the reject message, closing the connection, and logging
//! the refusal; the server does those, asking [`Gate::log_refusal`] whether
//! to log.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{info, warn};

use crate::config::{Access, IpNet, Limits, Rate};

/// The shortest time between two "limit reached" warnings of one cap.
const CAP_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Logs the episodes of a cap being reached: the first, then at most one
/// every [`CAP_LOG_INTERVAL`] with the number not logged in between. In a
/// sustained overload an episode ends and starts again with every session,
/// which must not flood the log.
#[derive(Debug, Default)]
struct CapLog {
    state: Mutex<CapLogState>,
}

#[derive(Debug, Default)]
struct CapLogState {
    last: Option<Instant>,
    skipped: u64,
    /// Whether the current episode's start was logged (so its end is too).
    logged: bool,
}

impl CapLog {
    /// An episode starts: `Some(episodes not logged since the last one)` if
    /// this one is to be logged.
    fn starts(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().expect("never poisoned");
        let due = state
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= CAP_LOG_INTERVAL);
        state.logged = due;
        if !due {
            state.skipped += 1;
            return None;
        }
        state.last = Some(now);
        Some(std::mem::take(&mut state.skipped))
    }

    /// The episode ends: whether its start was logged.
    fn ends(&self) -> bool {
        std::mem::take(&mut self.state.lock().expect("never poisoned").logged)
    }
}

/// The session slots.
#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    max: usize,
    /// Set while at the cap: one episode.
    paused: AtomicBool,
    episodes: CapLog,
}

/// One session's slot; dropping it gives the slot back.
#[derive(Debug)]
pub struct Permit {
    _slot: OwnedSemaphorePermit,
}

impl Admission {
    pub fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
            paused: AtomicBool::new(false),
            episodes: CapLog::default(),
        }
    }

    /// Takes a slot, waiting for one at the cap.
    pub async fn acquire(&self) -> Permit {
        let slot = match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if !self.paused.swap(true, Ordering::Relaxed) {
                    if let Some(not_logged) = self.episodes.starts(Instant::now()) {
                        warn!(
                            max_sessions = self.max,
                            episodes_not_logged = not_logged,
                            "session limit reached: accepting paused until a session ends"
                        );
                    }
                }
                let slot = Arc::clone(&self.slots)
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed");
                if self.paused.swap(false, Ordering::Relaxed) && self.episodes.ends() {
                    info!("accepting resumed");
                }
                slot
            }
        };
        Permit { _slot: slot }
    }

    /// Whether a new session would wait for a slot now.
    pub fn is_full(&self) -> bool {
        self.slots.available_permits() == 0
    }

    /// Sessions running now.
    pub fn active(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    /// Waits until every session has ended.
    pub async fn all_ended(&self) {
        let max = u32::try_from(self.max).expect("max sessions is bounded by the command line");
        let _all = self
            .slots
            .acquire_many(max)
            .await
            .expect("the semaphore is never closed");
    }
}

/// The most sources a [`Gate`] remembers. An entry takes 48 bytes, and this
/// many fill a table of 131,072 slots: a flood of distinct addresses costs a
/// gate about 6 MB at most.
pub const MAX_SOURCES: usize = 65_536;
/// A smaller per-source map is never swept: it costs next to nothing.
const SWEEP_FROM: usize = 1_024;
/// The least time between two sweeps of the per-source map, so that a flood
/// of new sources cannot make every connection pay for a full scan.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// How many entries are evicted at once at [`MAX_SOURCES`]: one pass over the
/// map makes room for this many new sources, so each pays for a few entries'
/// worth of work, not the whole map's.
const EVICTION_BATCH: usize = MAX_SOURCES / 8;
/// Refusal log lines of one gate: a burst of 5, then one a second.
const LOG_LINES: Refill = Refill {
    per_second: 1.0,
    capacity: 5.0,
};

/// Admission state of one service: its access rules, its session cap, its
/// rate limits and its per-source counters. Shared by its accept tasks and
/// by the sessions it admitted, which give their slots back to it.
///
/// Built from a service's [`Limits`] and [`Access`]; a reload keeps the gate
/// (and so its counters and buckets) of a service whose rules did not
/// change ([`Gate::same_rules`]). A service whose rules changed gets a new
/// gate: its running sessions keep counting against the old one, so until
/// they end, the new caps see only the sessions admitted after the reload.
pub struct Gate {
    /// The service's name, for log lines.
    name: Box<str>,
    /// What the gate was built from.
    limits: Limits,
    access: Access,
    /// `access.deny` as matched (IPv4-mapped rules as IPv4), each with the
    /// rule as written, to name it in a refusal.
    deny: Vec<(IpNet, IpNet)>,
    /// `access.allow` as matched.
    allow: Vec<IpNet>,
    /// The service's session cap.
    cap: Option<Cap>,
    /// Set while at the cap, so that one warning is logged per episode.
    paused: AtomicBool,
    episodes: CapLog,
    /// Whether any rate or per-source limit is set: without, admission
    /// never takes the lock.
    limited: bool,
    /// Whether per-source state is kept (`rate_per_source` or
    /// `max_per_source`).
    per_source: bool,
    source_rate: Option<Refill>,
    /// The mask grouping IPv6 sources (`source_prefix_v6`).
    v6_mask: u128,
    state: Mutex<State>,
}

/// A service's session cap.
#[derive(Debug)]
struct Cap {
    slots: Arc<Semaphore>,
    max: usize,
}

/// What changes as connections come and go.
#[derive(Debug)]
struct State {
    /// The service's bucket, with its parameters.
    service_rate: Option<(Refill, Bucket)>,
    sources: Sources,
    /// Refusal log lines allowed.
    log_lines: Bucket,
    /// Refusals not logged since the last logged one.
    suppressed: u64,
}

/// A token bucket's parameters, safe to compute with.
#[derive(Debug, Clone, Copy)]
struct Refill {
    per_second: f64,
    capacity: f64,
}

impl Refill {
    fn new(rate: &Rate) -> Self {
        Self {
            // A negative or NaN rate would drain or poison the bucket: it
            // never refills instead. The config should not let one through.
            per_second: rate.per_second.max(0.0),
            // A bucket that cannot hold a token would refuse everything,
            // for good: a service is never disabled.
            capacity: f64::from(rate.burst.max(1)),
        }
    }
}

/// A token bucket: `tokens` as of `last`, refilled continuously. It starts
/// full; `last` is unset until the bucket is first used.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Option<Instant>,
}

impl Bucket {
    fn full(refill: &Refill) -> Self {
        Self {
            tokens: refill.capacity,
            last: None,
        }
    }

    /// The tokens at `now`. A `now` earlier than the last use adds nothing.
    fn level(&self, refill: &Refill, now: Instant) -> f64 {
        match self.last {
            Some(last) if now > last => {
                (self.tokens + (now - last).as_secs_f64() * refill.per_second).min(refill.capacity)
            }
            _ => self.tokens,
        }
    }

    fn is_full(&self, refill: &Refill, now: Instant) -> bool {
        self.level(refill, now) >= refill.capacity
    }

    fn refill(&mut self, refill: &Refill, now: Instant) {
        self.tokens = self.level(refill, now);
        if self.last.is_none_or(|last| now > last) {
            self.last = Some(now);
        }
    }

    fn has_token(&self) -> bool {
        self.tokens >= 1.0
    }

    fn take(&mut self) {
        self.tokens -= 1.0;
    }

    fn try_take(&mut self, refill: &Refill, now: Instant) -> bool {
        self.refill(refill, now);
        let ok = self.has_token();
        if ok {
            self.take();
        }
        ok
    }
}

/// Where connections come from, for per-source limits: an IPv4 address, or
/// an IPv6 address masked to the service's `source_prefix_v6`. Both are kept
/// as 128 bits, an IPv4 address in its IPv4-mapped form (`::ffff:a.b.c.d`),
/// which no IPv6 source can take: an IPv4-mapped peer is IPv4 by the time it
/// is grouped, and masking an address outside `::ffff:0:0/96` cannot land
/// inside it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Source(u128);

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = Ipv6Addr::from(self.0);
        match addr.to_ipv4_mapped() {
            Some(v4) => write!(f, "{v4}"),
            None => write!(f, "{addr}"),
        }
    }
}

/// What a gate remembers of one source.
#[derive(Debug)]
struct SourceEntry {
    /// Its bucket; unused without `rate_per_source`.
    bucket: Bucket,
    /// Its sessions in progress; counted only with `max_per_source`.
    sessions: usize,
}

impl SourceEntry {
    fn is_busy(&self) -> bool {
        self.sessions > 0
    }
}

/// The per-source map, bounded by [`MAX_SOURCES`].
///
/// An entry is idle when it has no session in progress and its bucket is
/// full (or there is no per-source rate): forgetting it changes nothing.
/// Idle entries are dropped by a sweep, at most every [`SWEEP_EVERY`], when
/// a new source arrives and the map holds [`SWEEP_FROM`] entries or more;
/// an entry without a rate is dropped as soon as its last session ends.
///
/// At the bound (after a sweep, if one is due), a new source makes one pass
/// evict [`EVICTION_BATCH`] entries without a session in progress: first
/// those at most one token short of full (forgetting them forgives at most
/// one connection), then, if that was not enough, any, in the map's order
/// (which hashing with a random key makes unpredictable to a client). The
/// price of a flood of addresses is then that some sources' buckets forget
/// their debt and start full again; the service's own bucket and caps still
/// hold. An entry with a session in progress is never evicted, so that
/// session counts stay exact; if every entry has one (as many concurrent
/// sessions of the service, each from its own source), the new source is
/// refused ([`Refusal::TooManySources`]) rather than admitted uncounted or
/// remembered beyond the bound.
#[derive(Debug, Default)]
struct Sources {
    map: HashMap<Source, SourceEntry>,
    /// Entries with a session in progress.
    busy: usize,
    /// No sweep before this; `None`: one may run now.
    next_sweep: Option<Instant>,
}

impl Sources {
    /// The entry of `source`, made if new; `rate` is the per-source bucket's.
    fn entry(
        &mut self,
        source: Source,
        now: Instant,
        rate: Option<&Refill>,
    ) -> Result<&mut SourceEntry, Refusal> {
        // Small maps need no room: one lookup, not two.
        if self.map.len() >= SWEEP_FROM && !self.map.contains_key(&source) {
            self.make_room(now, rate)?;
        }
        Ok(self.map.entry(source).or_insert_with(|| SourceEntry {
            bucket: rate.map_or(
                Bucket {
                    tokens: 0.0,
                    last: None,
                },
                Bucket::full,
            ),
            sessions: 0,
        }))
    }

    /// Makes room for one more entry (see [`Sources`]).
    fn make_room(&mut self, now: Instant, rate: Option<&Refill>) -> Result<(), Refusal> {
        if self.next_sweep.is_none_or(|at| now >= at) {
            self.sweep(now, rate);
        }
        if self.map.len() < MAX_SOURCES {
            return Ok(());
        }
        if self.busy >= self.map.len() {
            return Err(Refusal::TooManySources);
        }
        let mut left = EVICTION_BATCH;
        if let Some(r) = rate {
            self.map.retain(|_, entry| {
                let evict =
                    left > 0 && !entry.is_busy() && entry.bucket.level(r, now) >= r.capacity - 1.0;
                left -= usize::from(evict);
                !evict
            });
        }
        if left > 0 {
            // Some entry has no session in progress (busy < len), so this
            // evicts one at least.
            self.map.retain(|_, entry| {
                let evict = left > 0 && !entry.is_busy();
                left -= usize::from(evict);
                !evict
            });
        }
        Ok(())
    }

    /// Drops every idle entry, and memory left over from a flood.
    fn sweep(&mut self, now: Instant, rate: Option<&Refill>) {
        self.map.retain(|_, entry| {
            entry.is_busy() || rate.is_some_and(|r| !entry.bucket.is_full(r, now))
        });
        let enough = (2 * self.map.len()).max(SWEEP_FROM);
        if self.map.capacity() > 4 * enough {
            self.map.shrink_to(enough);
        }
        self.next_sweep = now.checked_add(SWEEP_EVERY);
    }
}

impl Gate {
    /// A gate for the service `name` with these rules; its buckets start
    /// full.
    ///
    /// Rates are taken as the config checked them; as a safety net, a burst
    /// of 0 counts as 1 and a negative rate as 0 (no refill).
    pub fn new(name: &str, limits: &Limits, access: &Access) -> Arc<Self> {
        let source_rate = limits.rate_per_source.as_ref().map(Refill::new);
        let service_rate = limits.rate.as_ref().map(Refill::new);
        let per_source = source_rate.is_some() || limits.max_per_source.is_some();
        let prefix = limits.source_prefix_v6.min(128);
        Arc::new(Self {
            name: name.into(),
            limits: limits.clone(),
            access: access.clone(),
            deny: access
                .deny
                .iter()
                .map(|net| (canonical_net(*net), *net))
                .collect(),
            allow: access.allow.iter().copied().map(canonical_net).collect(),
            cap: limits.max_sessions.map(|max| Cap {
                slots: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
                max,
            }),
            paused: AtomicBool::new(false),
            episodes: CapLog::default(),
            limited: service_rate.is_some() || per_source,
            per_source,
            source_rate,
            v6_mask: u128::MAX.checked_shl(u32::from(128 - prefix)).unwrap_or(0),
            state: Mutex::new(State {
                service_rate: service_rate.map(|refill| (refill, Bucket::full(&refill))),
                sources: Sources::default(),
                log_lines: Bucket::full(&LOG_LINES),
                suppressed: 0,
            }),
        })
    }

    /// Whether `limits` and `access` are what this gate was built from, so
    /// that a reload can keep it, with its counters, for an unchanged
    /// service.
    pub fn same_rules(&self, limits: &Limits, access: &Access) -> bool {
        self.limits == *limits && self.access == *access
    }

    /// Whether the sessions of each source are counted (`max_per_source`).
    pub fn counts_sources(&self) -> bool {
        self.limits.max_per_source.is_some()
    }

    /// Whether a new session of this service would wait for a slot now.
    pub fn is_full(&self) -> bool {
        self.cap
            .as_ref()
            .is_some_and(|cap| cap.slots.available_permits() == 0)
    }

    /// A slot under the service's cap (`max_sessions`), waiting for one at
    /// the cap: the service stops accepting and its connections wait in the
    /// backlog, while other services keep serving. Immediate without a cap.
    /// Logs one warning per episode, and a line when accepting resumes.
    ///
    /// Cancel-safe: dropping the future while it waits takes no slot.
    pub async fn slot(&self) -> ServiceSlot {
        let Some(cap) = &self.cap else {
            return ServiceSlot { _permit: None };
        };
        let permit = match Arc::clone(&cap.slots).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if !self.paused.swap(true, Ordering::Relaxed) {
                    if let Some(not_logged) = self.episodes.starts(Instant::now()) {
                        warn!(
                            service = %self.name,
                            max_sessions = cap.max,
                            episodes_not_logged = not_logged,
                            "service session limit reached: accepting paused until one of its sessions ends"
                        );
                    }
                }
                Arc::clone(&cap.slots)
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed")
            }
        };
        // Also on the fast path: a waiter cancelled (by a reload) may have
        // left the flag set.
        if self.paused.load(Ordering::Relaxed)
            && self.paused.swap(false, Ordering::Relaxed)
            && self.episodes.ends()
        {
            info!(service = %self.name, "service accepting resumed");
        }
        ServiceSlot {
            _permit: Some(permit),
        }
    }

    /// Decides on one accepted connection from `peer` at `now`, in this
    /// order: `deny` (wins), `allow` (when not empty, it must hold the peer),
    /// `rate` (the service's bucket), `rate_per_source` (the source's
    /// bucket), `max_per_source` (the source's sessions in progress). An
    /// IPv4-mapped IPv6 peer is taken as the IPv4 address it carries.
    ///
    /// Tokens are taken only from an admitted connection: every stage is
    /// checked first, then all are charged together. So a refusal costs
    /// nothing: a source flooding past its own limits drains neither the
    /// service's bucket (which would starve every other source) nor, when the
    /// service's bucket refuses it, its own.
    ///
    /// `Ok` holds the source's session slot (with `max_per_source`), given
    /// back when dropped.
    pub fn admit(self: &Arc<Self>, peer: IpAddr, now: Instant) -> Result<SourceSlot, Refusal> {
        let peer = peer.to_canonical();
        if let Some((_, written)) = self.deny.iter().find(|(net, _)| net.contains(&peer)) {
            return Err(Refusal::Denied(*written));
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|net| net.contains(&peer)) {
            return Err(Refusal::NotAllowed);
        }
        if !self.limited {
            return Ok(SourceSlot { held: None });
        }
        let mut state = self.lock();
        let state = &mut *state;
        if let Some((refill, bucket)) = &mut state.service_rate {
            bucket.refill(refill, now);
            if !bucket.has_token() {
                return Err(Refusal::Rate);
            }
        }
        let mut held = None;
        if self.per_source {
            let source = self.source_of(peer);
            let entry = state
                .sources
                .entry(source, now, self.source_rate.as_ref())?;
            if let Some(refill) = &self.source_rate {
                entry.bucket.refill(refill, now);
                if !entry.bucket.has_token() {
                    return Err(Refusal::RatePerSource);
                }
            }
            if self
                .limits
                .max_per_source
                .is_some_and(|max| entry.sessions >= max)
            {
                return Err(Refusal::MaxPerSource);
            }
            // Admitted: charge every stage.
            if self.source_rate.is_some() {
                entry.bucket.take();
            }
            if self.limits.max_per_source.is_some() {
                entry.sessions += 1;
                if entry.sessions == 1 {
                    state.sources.busy += 1;
                }
                held = Some((Arc::clone(self), source));
            }
        }
        if let Some((_, bucket)) = &mut state.service_rate {
            bucket.take();
        }
        Ok(SourceSlot { held })
    }

    /// Whether to log a refusal now: `Some(n)` to log it, saying that `n`
    /// refusals went unlogged since the last logged one; `None` to skip it
    /// (and count it). A burst of 5 lines, then one a second, per gate, so
    /// that a flood cannot fill the disk.
    pub fn log_refusal(&self, now: Instant) -> Option<u64> {
        let mut state = self.lock();
        if state.log_lines.try_take(&LOG_LINES, now) {
            Some(std::mem::take(&mut state.suppressed))
        } else {
            state.suppressed = state.suppressed.saturating_add(1);
            None
        }
    }

    /// The source `peer` (canonical) counts as.
    fn source_of(&self, peer: IpAddr) -> Source {
        match peer {
            IpAddr::V4(v4) => Source(u128::from(v4.to_ipv6_mapped())),
            IpAddr::V6(v6) => Source(u128::from(v6) & self.v6_mask),
        }
    }

    /// Gives back one session slot of `source`.
    fn release(&self, source: Source) {
        let mut state = self.lock();
        let sources = &mut state.sources;
        // An entry with a session in progress is never evicted.
        let Some(entry) = sources.map.get_mut(&source) else {
            debug_assert!(false, "a source with a slot out has an entry");
            return;
        };
        debug_assert!(entry.is_busy(), "a source with a slot out is busy");
        if !entry.is_busy() {
            return;
        }
        entry.sessions -= 1;
        if !entry.is_busy() {
            sources.busy -= 1;
            if self.source_rate.is_none() {
                sources.map.remove(&source);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; were it poisoned, the state
        // would still be whole, and a slot's drop must not panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the per-source map: it can hold tens of thousands of entries.
        f.debug_struct("Gate")
            .field("name", &self.name)
            .field("limits", &self.limits)
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

/// A rule as matched against canonical peers: an IPv4-mapped IPv6 network
/// (`::ffff:10.0.0.0/104`) becomes the IPv4 network it maps (`10.0.0.0/8`).
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        _ => net,
    }
}

/// One session's slot under its service's cap; dropping it gives it back.
#[derive(Debug)]
pub struct ServiceSlot {
    _permit: Option<OwnedSemaphorePermit>,
}

/// One session's slot among its source's (`max_per_source`); dropping it
/// gives it back. Holds nothing when the service has no such limit.
pub struct SourceSlot {
    held: Option<(Arc<Gate>, Source)>,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        if let Some((gate, source)) = &self.held {
            gate.release(*source);
        }
    }
}

impl fmt::Debug for SourceSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceSlot")
            .field("source", &self.held.as_ref().map(|(_, source)| source))
            .finish()
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The peer is in this `deny` rule (as written).
    Denied(IpNet),
    /// `allow` is not empty and does not hold the peer.
    NotAllowed,
    /// The service's bucket (`rate`) is empty.
    Rate,
    /// The source's bucket (`rate_per_source`) is empty.
    RatePerSource,
    /// The source has `max_per_source` sessions in progress.
    MaxPerSource,
    /// A new source while the gate remembers [`MAX_SOURCES`] sources, each
    /// with a session in progress: it could not count this one's.
    TooManySources,
}

impl Refusal {
    /// The config option that refused: the `rule=` of the log line.
    pub fn rule(&self) -> &'static str {
        match self {
            Self::Denied(_) => "deny",
            Self::NotAllowed => "allow",
            Self::Rate => "rate",
            Self::RatePerSource => "rate_per_source",
            Self::MaxPerSource | Self::TooManySources => "max_per_source",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Denied(net) => write!(f, "source denied by {net}"),
            Self::NotAllowed => f.write_str("source not in the allow list"),
            Self::Rate => f.write_str("service rate limit exceeded"),
            Self::RatePerSource => f.write_str("source rate limit exceeded"),
            Self::MaxPerSource => f.write_str("too many sessions from this source"),
            Self::TooManySources => {
                f.write_str("too many sources with sessions in progress to count another")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::net::Ipv4Addr;
    use std::pin::{Pin, pin};
    use std::task::{Context, Poll, Waker};

    use super::*;

    #[tokio::test]
    async fn permits_come_back_on_drop() {
        let admission = Admission::new(2);
        let a = admission.acquire().await;
        let _b = admission.acquire().await;
        assert_eq!(admission.active(), 2);
        let third = admission.acquire();
        tokio::pin!(third);
        assert!(futures_poll_once(third.as_mut()).await.is_none());
        drop(a);
        let _c = third.await;
        assert_eq!(admission.active(), 2);
    }

    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        tokio::time::timeout(std::time::Duration::from_millis(20), f)
            .await
            .ok()
    }

    /// Polls once, without a runtime's timer: pending now means pending.
    fn poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(Waker::noop()))
    }

    fn no_limits() -> Limits {
        Limits {
            max_sessions: None,
            max_per_source: None,
            rate: None,
            rate_per_source: None,
            source_prefix_v6: 64,
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    /// A network, or an address as its one-address network, as the config
    /// reads them.
    fn net(text: &str) -> IpNet {
        text.parse()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
            .expect("a network or an address")
    }

    fn access(allow: &[&str], deny: &[&str]) -> Access {
        Access {
            allow: allow.iter().copied().map(net).collect(),
            deny: deny.iter().copied().map(net).collect(),
        }
    }

    fn gate(limits: Limits, access: Access) -> Arc<Gate> {
        Gate::new("test", &limits, &access)
    }

    /// The refusal of a connection from `peer` at `now`, if any; an admitted
    /// connection's slot is given back at once.
    fn refused(gate: &Arc<Gate>, peer: &str, now: Instant) -> Option<Refusal> {
        gate.admit(ip(peer), now).err()
    }

    fn v4(n: usize) -> IpAddr {
        let n = u32::try_from(n).expect("a small number");
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    impl Gate {
        fn sources(&self) -> usize {
            self.lock().sources.map.len()
        }

        fn busy(&self) -> usize {
            self.lock().sources.busy
        }

        fn sessions_from(&self, peer: &str) -> usize {
            let source = self.source_of(ip(peer).to_canonical());
            self.lock()
                .sources
                .map
                .get(&source)
                .map_or(0, |entry| entry.sessions)
        }
    }

    #[test]
    fn deny_wins_over_allow() {
        let now = Instant::now();
        let gate = gate(
            no_limits(),
            access(
                &["10.0.0.0/8", "2001:db8::/32"],
                &["10.0.0.3", "2001:db8::bad"],
            ),
        );
        assert_eq!(
            refused(&gate, "10.0.0.3", now),
            Some(Refusal::Denied(net("10.0.0.3/32")))
        );
        assert_eq!(
            refused(&gate, "2001:db8::bad", now),
            Some(Refusal::Denied(net("2001:db8::bad/128")))
        );
        assert_eq!(refused(&gate, "10.0.0.4", now), None);
        assert_eq!(refused(&gate, "2001:db8::1", now), None);
        assert_eq!(
            refused(&gate, "192.168.1.1", now),
            Some(Refusal::NotAllowed)
        );
        assert_eq!(refused(&gate, "::1", now), Some(Refusal::NotAllowed));
    }

    #[test]
    fn an_empty_allow_list_admits_every_source_not_denied() {
        let now = Instant::now();
        let open = gate(no_limits(), Access::default());
        for peer in ["127.0.0.1", "192.0.2.7", "::1", "2001:db8::1"] {
            assert_eq!(refused(&open, peer, now), None, "{peer}");
        }
        let deny_only = gate(no_limits(), access(&[], &["192.0.2.0/24"]));
        assert_eq!(
            refused(&deny_only, "192.0.2.200", now).map(|r| r.rule()),
            Some("deny")
        );
        assert_eq!(refused(&deny_only, "198.51.100.1", now), None);
    }

    #[test]
    fn an_ipv4_mapped_peer_is_its_ipv4_address() {
        let now = Instant::now();
        let gate = gate(
            Limits {
                max_per_source: Some(1),
                ..no_limits()
            },
            // A rule written IPv4-mapped applies to IPv4 peers too.
            access(
                &["127.0.0.0/8", "::ffff:192.0.2.0/120"],
                &["::ffff:127.0.0.3"],
            ),
        );
        assert_eq!(refused(&gate, "::ffff:127.0.0.1", now), None);
        assert_eq!(refused(&gate, "192.0.2.9", now), None);
        assert_eq!(
            refused(&gate, "127.0.0.3", now),
            Some(Refusal::Denied(net("::ffff:127.0.0.3/128")))
        );
        assert_eq!(
            refused(&gate, "::ffff:10.0.0.1", now),
            Some(Refusal::NotAllowed)
        );
        // One source, however written.
        let _held = gate.admit(ip("127.0.0.1"), now).expect("admitted");
        assert_eq!(
            refused(&gate, "::ffff:127.0.0.1", now),
            Some(Refusal::MaxPerSource)
        );
    }

    #[test]
    fn ipv6_sources_are_grouped_by_prefix() {
        let now = Instant::now();
        let one_each = |prefix| {
            gate(
                Limits {
                    max_per_source: Some(1),
                    source_prefix_v6: prefix,
                    ..no_limits()
                },
                Access::default(),
            )
        };

        let by_64 = one_each(64);
        let _a = by_64.admit(ip("2001:db8::1"), now).expect("admitted");
        assert_eq!(
            refused(&by_64, "2001:db8::2", now),
            Some(Refusal::MaxPerSource)
        );
        assert_eq!(refused(&by_64, "2001:db8:0:1::1", now), None);
        // ::1 is its own /64 (::/64), apart from other networks.
        let _lo = by_64.admit(ip("::1"), now).expect("admitted");
        assert_eq!(refused(&by_64, "::2", now), Some(Refusal::MaxPerSource));
        // An IPv4 address is its own source, whatever the IPv6 prefix.
        let _v4 = by_64.admit(ip("192.0.2.1"), now).expect("admitted");
        assert_eq!(refused(&by_64, "192.0.2.2", now), None);

        let by_48 = one_each(48);
        let _b = by_48.admit(ip("2001:db8::1"), now).expect("admitted");
        assert_eq!(
            refused(&by_48, "2001:db8:0:ffff::1", now),
            Some(Refusal::MaxPerSource)
        );
        assert_eq!(refused(&by_48, "2001:db8:1::1", now), None);

        let by_128 = one_each(128);
        let _c = by_128.admit(ip("2001:db8::1"), now).expect("admitted");
        assert_eq!(refused(&by_128, "2001:db8::2", now), None);

        // Every IPv6 address one source: the mask's edge case.
        let by_0 = one_each(0);
        let _d = by_0.admit(ip("2001:db8::1"), now).expect("admitted");
        assert_eq!(refused(&by_0, "fe80::1", now), Some(Refusal::MaxPerSource));
        assert_eq!(refused(&by_0, "192.0.2.1", now), None);
    }

    #[test]
    fn the_service_bucket_allows_a_burst_then_refills() {
        let t0 = Instant::now();
        let gate = gate(
            Limits {
                rate: Some(Rate {
                    per_second: 1.0,
                    burst: 3,
                }),
                ..no_limits()
            },
            Access::default(),
        );
        for n in 0..3 {
            assert_eq!(gate.admit(v4(n), t0).err(), None, "burst {n}");
        }
        assert_eq!(gate.admit(v4(9), t0).err(), Some(Refusal::Rate));
        let half = t0 + Duration::from_millis(500);
        assert_eq!(gate.admit(v4(9), half).err(), Some(Refusal::Rate));
        let one = t0 + Duration::from_secs(1);
        assert_eq!(gate.admit(v4(9), one).err(), None);
        assert_eq!(gate.admit(v4(9), one).err(), Some(Refusal::Rate));
        // A long pause refills up to the burst, no more.
        let hour = t0 + Duration::from_secs(3600);
        for n in 0..3 {
            assert_eq!(gate.admit(v4(n), hour).err(), None, "burst {n}");
        }
        assert_eq!(gate.admit(v4(9), hour).err(), Some(Refusal::Rate));
        // A time before the last use changes nothing and does not panic.
        assert_eq!(gate.admit(v4(9), t0).err(), Some(Refusal::Rate));
    }

    #[test]
    fn one_flooding_source_is_refused_while_others_are_admitted() {
        let t0 = Instant::now();
        let gate = gate(
            Limits {
                rate_per_source: Some(Rate {
                    per_second: 1.0,
                    burst: 2,
                }),
                ..no_limits()
            },
            Access::default(),
        );
        assert_eq!(refused(&gate, "192.0.2.1", t0), None);
        assert_eq!(refused(&gate, "192.0.2.1", t0), None);
        for _ in 0..100 {
            assert_eq!(
                refused(&gate, "192.0.2.1", t0),
                Some(Refusal::RatePerSource)
            );
        }
        assert_eq!(refused(&gate, "192.0.2.2", t0), None);
        assert_eq!(refused(&gate, "192.0.2.2", t0), None);
        assert_eq!(
            refused(&gate, "192.0.2.2", t0),
            Some(Refusal::RatePerSource)
        );
        // The flood's refusals took nothing: one second gives one token.
        let one = t0 + Duration::from_secs(1);
        assert_eq!(refused(&gate, "192.0.2.1", one), None);
        assert_eq!(
            refused(&gate, "192.0.2.1", one),
            Some(Refusal::RatePerSource)
        );
    }

    /// The order of charging: a refused connection takes no token, so one
    /// source past its own limits cannot drain the service's bucket.
    #[test]
    fn a_refusal_takes_no_token() {
        let t0 = Instant::now();
        let gate = gate(
            Limits {
                rate: Some(Rate {
                    per_second: 1.0,
                    burst: 4,
                }),
                rate_per_source: Some(Rate {
                    per_second: 1.0,
                    burst: 1,
                }),
                max_per_source: Some(1),
                ..no_limits()
            },
            Access::default(),
        );
        let a = gate.admit(ip("192.0.2.1"), t0).expect("admitted");
        for _ in 0..50 {
            assert_eq!(
                refused(&gate, "192.0.2.1", t0),
                Some(Refusal::RatePerSource)
            );
        }
        // A source at its session cap, with a token to spare, keeps it.
        let later = t0 + Duration::from_secs(10);
        for _ in 0..50 {
            assert_eq!(
                refused(&gate, "192.0.2.1", later),
                Some(Refusal::MaxPerSource)
            );
        }
        drop(a);
        let _a = gate.admit(ip("192.0.2.1"), later).expect("its token");
        // The service's bucket refilled to 4, lost nothing to the refusals
        // and gave one to the source.
        for n in 0..3 {
            assert_eq!(gate.admit(v4(n), later).err(), None, "source {n}");
        }
        // Refused by the service's bucket: the source's is not charged.
        for _ in 0..50 {
            assert_eq!(refused(&gate, "192.0.2.9", later), Some(Refusal::Rate));
        }
        let next = later + Duration::from_secs(1);
        assert_eq!(refused(&gate, "192.0.2.9", next), None);
    }

    #[test]
    fn a_source_slot_comes_back_on_drop_in_any_order() {
        let now = Instant::now();
        let gate = gate(
            Limits {
                max_per_source: Some(3),
                ..no_limits()
            },
            Access::default(),
        );
        let mut a: Vec<SourceSlot> = (0..3)
            .map(|_| gate.admit(ip("192.0.2.1"), now).expect("admitted"))
            .collect();
        assert_eq!(
            refused(&gate, "192.0.2.1", now),
            Some(Refusal::MaxPerSource)
        );
        let mut b: Vec<SourceSlot> = (0..2)
            .map(|_| gate.admit(ip("2001:db8::1"), now).expect("admitted"))
            .collect();
        assert_eq!((gate.sessions_from("192.0.2.1"), gate.busy()), (3, 2));

        drop(a.remove(1));
        assert_eq!(gate.sessions_from("192.0.2.1"), 2);
        a.push(gate.admit(ip("192.0.2.1"), now).expect("a slot came back"));
        drop(b.remove(0));
        drop(a.remove(2));
        drop(a.remove(0));
        assert_eq!(
            (
                gate.sessions_from("192.0.2.1"),
                gate.sessions_from("2001:db8::5")
            ),
            (1, 1)
        );
        drop(b);
        assert_eq!((gate.sources(), gate.busy()), (1, 1));
        drop(a);
        // Without a per-source rate, an entry goes with its last session.
        assert_eq!((gate.sources(), gate.busy()), (0, 0));
    }

    #[test]
    fn the_service_cap_pauses_until_a_slot_drops() {
        let gate = gate(
            Limits {
                max_sessions: Some(2),
                ..no_limits()
            },
            Access::default(),
        );
        let mut first = pin!(gate.slot());
        let Poll::Ready(a) = poll_once(first.as_mut()) else {
            panic!("a free slot is immediate");
        };
        let _b = match poll_once(pin!(gate.slot())) {
            Poll::Ready(slot) => slot,
            Poll::Pending => panic!("a free slot is immediate"),
        };
        let mut third = pin!(gate.slot());
        assert!(poll_once(third.as_mut()).is_pending());
        assert!(poll_once(third.as_mut()).is_pending());
        drop(a);
        assert!(poll_once(third.as_mut()).is_ready());

        let uncapped = Gate::new("free", &no_limits(), &Access::default());
        let slots: Vec<_> = (0..1000)
            .map(|_| poll_once(pin!(uncapped.slot())))
            .collect();
        assert!(slots.iter().all(Poll::is_ready));
    }

    #[tokio::test]
    async fn a_cancelled_wait_for_the_service_cap_takes_no_slot() {
        let gate = gate(
            Limits {
                max_sessions: Some(1),
                ..no_limits()
            },
            Access::default(),
        );
        let a = gate.slot().await;
        assert!(poll_once(pin!(gate.slot())).is_pending());
        drop(a);
        let _b = gate.slot().await;
        assert!(poll_once(pin!(gate.slot())).is_pending());
    }

    #[test]
    fn a_flood_of_sources_stays_within_the_bound() {
        let t0 = Instant::now();
        let gate = gate(
            Limits {
                rate_per_source: Some(Rate {
                    per_second: 1.0,
                    burst: 1,
                }),
                ..no_limits()
            },
            Access::default(),
        );
        // Each source takes its token, so none is idle: the bound evicts.
        for n in 0..3 * MAX_SOURCES {
            assert_eq!(gate.admit(v4(n), t0).err(), None, "source {n}");
        }
        assert_eq!(gate.sources(), MAX_SOURCES);
        // A source that paid its token and came back is still refused,
        // unless the flood pushed it out; the last one is still there.
        assert_eq!(
            gate.admit(v4(3 * MAX_SOURCES - 1), t0).err(),
            Some(Refusal::RatePerSource)
        );
        // Once their buckets are full again, a new source sweeps them.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(refused(&gate, "192.0.2.1", later), None);
        assert_eq!(gate.sources(), 1);
    }

    #[test]
    fn at_the_bound_a_flood_evicts_its_own_entries_before_a_drained_source() {
        let t0 = Instant::now();
        let gate = gate(
            Limits {
                rate_per_source: Some(Rate {
                    per_second: 0.001,
                    burst: 10,
                }),
                ..no_limits()
            },
            Access::default(),
        );
        // A thousand drained sources: evicting any at random, the batch
        // would take about one in eight of them.
        let drained = (0..1000).map(|n| v4(MAX_SOURCES + n));
        for peer in drained.clone() {
            for _ in 0..10 {
                assert_eq!(gate.admit(peer, t0).err(), None);
            }
        }
        // Fresh sources, one token short of full each: forgetting one
        // forgives one connection, forgetting a drained source ten.
        for n in 0..MAX_SOURCES {
            assert_eq!(gate.admit(v4(n), t0).err(), None, "source {n}");
        }
        assert!(gate.sources() < MAX_SOURCES - EVICTION_BATCH / 2);
        for peer in drained {
            assert_eq!(
                gate.admit(peer, t0).err(),
                Some(Refusal::RatePerSource),
                "{peer}"
            );
        }
    }

    #[test]
    fn at_the_bound_with_every_source_busy_a_new_source_is_refused() {
        let now = Instant::now();
        let gate = gate(
            Limits {
                max_per_source: Some(1),
                ..no_limits()
            },
            Access::default(),
        );
        let mut slots: Vec<SourceSlot> = (0..MAX_SOURCES)
            .map(|n| gate.admit(v4(n), now).expect("admitted"))
            .collect();
        let refusal = gate.admit(ip("192.0.2.1"), now).err();
        assert_eq!(refusal, Some(Refusal::TooManySources));
        assert_eq!(refusal.map(|r| r.rule()), Some("max_per_source"));
        assert_eq!(gate.sources(), MAX_SOURCES);
        // A known source is judged as ever.
        assert_eq!(gate.admit(v4(0), now).err(), Some(Refusal::MaxPerSource));
        drop(slots.pop());
        let _new = gate.admit(ip("192.0.2.1"), now).expect("room again");
        drop(slots);
        assert_eq!((gate.sources(), gate.busy()), (1, 1));
    }

    #[test]
    fn refusal_logs_are_rate_limited_and_count_what_they_skip() {
        let t0 = Instant::now();
        let gate = gate(no_limits(), Access::default());
        for _ in 0..5 {
            assert_eq!(gate.log_refusal(t0), Some(0));
        }
        for _ in 0..100 {
            assert_eq!(gate.log_refusal(t0), None);
        }
        assert_eq!(gate.log_refusal(t0 + Duration::from_millis(500)), None);
        let one = t0 + Duration::from_secs(1);
        assert_eq!(gate.log_refusal(one), Some(101));
        assert_eq!(gate.log_refusal(one), None);
        let hour = t0 + Duration::from_secs(3600);
        assert_eq!(gate.log_refusal(hour), Some(1));
        for _ in 0..4 {
            assert_eq!(gate.log_refusal(hour), Some(0));
        }
        assert_eq!(gate.log_refusal(hour), None);
    }

    #[test]
    fn same_rules_compares_limits_and_access() {
        let limits = Limits {
            max_sessions: Some(10),
            rate: Some(Rate {
                per_second: 5.0,
                burst: 10,
            }),
            ..no_limits()
        };
        let rules = access(&["127.0.0.0/8"], &[]);
        let gate = Gate::new("echo", &limits, &rules);
        assert!(gate.same_rules(&limits, &rules));
        let faster = Limits {
            rate: Some(Rate {
                per_second: 6.0,
                burst: 10,
            }),
            ..limits.clone()
        };
        assert!(!gate.same_rules(&faster, &rules));
        let wider = Limits {
            source_prefix_v6: 48,
            ..limits.clone()
        };
        assert!(!gate.same_rules(&wider, &rules));
        assert!(!gate.same_rules(&limits, &access(&["127.0.0.0/8", "::1"], &[])));
        assert!(!gate.same_rules(&limits, &Access::default()));
    }

    #[test]
    fn refusals_name_their_rule() {
        let cases = [
            (
                Refusal::Denied(net("10.0.0.0/8")),
                "deny",
                "source denied by 10.0.0.0/8",
            ),
            (Refusal::NotAllowed, "allow", "source not in the allow list"),
            (Refusal::Rate, "rate", "service rate limit exceeded"),
            (
                Refusal::RatePerSource,
                "rate_per_source",
                "source rate limit exceeded",
            ),
            (
                Refusal::MaxPerSource,
                "max_per_source",
                "too many sessions from this source",
            ),
        ];
        for (refusal, rule, text) in cases {
            assert_eq!((refusal.rule(), refusal.to_string().as_str()), (rule, text));
        }
    }

    #[test]
    fn a_zero_burst_still_admits_one() {
        let t0 = Instant::now();
        let gate = gate(
            Limits {
                rate: Some(Rate {
                    per_second: 1.0,
                    burst: 0,
                }),
                ..no_limits()
            },
            Access::default(),
        );
        assert_eq!(refused(&gate, "192.0.2.1", t0), None);
        assert_eq!(refused(&gate, "192.0.2.1", t0), Some(Refusal::Rate));
    }

    /// Found by the reliability suite: in a sustained overload the cap is
    /// reached again with every session that ends, and each episode logged
    /// a warning (about 150 in 2 s).
    #[test]
    fn cap_episodes_are_logged_at_most_every_interval_with_a_count() {
        let log = CapLog::default();
        let t0 = Instant::now();
        assert_eq!(log.starts(t0), Some(0));
        assert!(log.ends());
        for i in 1..=3 {
            assert_eq!(log.starts(t0 + Duration::from_secs(i)), None);
            assert!(!log.ends(), "an episode not logged must not log its end");
        }
        assert_eq!(log.starts(t0 + CAP_LOG_INTERVAL), Some(3));
        assert!(log.ends());
        assert_eq!(
            log.starts(t0 + CAP_LOG_INTERVAL + Duration::from_secs(1)),
            None
        );
    }
}
