//! Stage 2, admit: decide whether a connection may become a session now.
//!
//! Two layers, both decided before any process starts:
//!
//! - [`Admission`], the daemon-wide cap (`--max-sessions`): a slot is taken
//!   before a child starts and given back when its [`Permit`] is dropped,
//!   whichever way the session ends. At the cap, listeners stop accepting
//!   and connections wait in the kernel's backlog, as with tcpserver.
//! - [`Gate`], one service's rules, in the contract's order: who may connect
//!   (`deny` wins, then a non-empty `allow`), how fast (the service's token
//!   bucket, then the source's), how many at once (the service's cap pauses
//!   accepting like the global one, through [`Gate::slot`]; the per-source
//!   cap refuses).
//!
//! One file per job: this one holds the gate, which applies the rules in
//! order and charges what admitted a connection, and [`Refusal`];
//! `access` matches `deny`/`allow`, `bucket` is the token bucket, `sources`
//! the per-source table with its bound, and `cap` the one session cap type
//! behind both the daemon's and each service's `max_sessions`.
//!
//! All of it runs on the accept path, so it is cheap: no system call, no
//! blocking, no allocation per connection beyond a per-source map that grows
//! in amortized steps up to a bound ([`MAX_SOURCES`]). Callers pass the time,
//! so a decision depends only on its inputs and tests need no sleeps.
//!
//! Not here: sending the reject message, closing the connection, and logging
//! the refusal; the server does those, asking [`Gate::log_refusal`] whether
//! to log.

mod access;
mod bucket;
mod cap;
mod sources;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::config::{Access, IpNet, Limits};
use crate::peer::Peer;
use access::Rules;
use bucket::{Bucket, Refill};
pub use cap::{Cap, Permit};
pub use sources::MAX_SOURCES;
use sources::{Source, Sources};

/// The daemon-wide session cap (`--max-sessions`): a [`Cap`] by the name
/// the server knows it by.
pub type Admission = Cap;

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
    /// `deny` and `allow`, as matched.
    rules: Rules,
    /// The service's session cap.
    cap: Option<Cap>,
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
        Arc::new(Self {
            name: name.into(),
            limits: limits.clone(),
            access: access.clone(),
            rules: Rules::new(access),
            cap: limits.max_sessions.map(|max| Cap::for_service(name, max)),
            limited: service_rate.is_some() || per_source,
            per_source,
            source_rate,
            v6_mask: sources::v6_mask(limits.source_prefix_v6),
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
        self.cap.as_ref().is_some_and(Cap::is_full)
    }

    /// A slot under the service's cap (`max_sessions`), waiting for one at
    /// the cap: the service stops accepting and its connections wait in the
    /// backlog, while other services keep serving. Immediate without a cap.
    /// Logs one warning per episode, and a line when accepting resumes
    /// ([`Cap::acquire`]).
    ///
    /// Cancel-safe: dropping the future while it waits takes no slot.
    pub async fn slot(&self) -> ServiceSlot {
        let permit = match &self.cap {
            Some(cap) => Some(cap.acquire().await),
            None => None,
        };
        ServiceSlot { _permit: permit }
    }

    /// Decides on one accepted connection from `peer` at `now`, in this
    /// order: `deny` (wins), `allow` (when not empty, it must hold the peer),
    /// `rate` (the service's bucket), `rate_per_source` (the source's
    /// bucket), `max_per_source` (the source's sessions in progress). An
    /// IPv4-mapped IPv6 peer is taken as the IPv4 address it carries. A
    /// Unix socket's client is checked against `allow_uid` and `allow_gid`
    /// instead of `deny` and `allow`, then `rate`; it has no source to
    /// count (the config refuses the per-source limits for it).
    ///
    /// Tokens are taken only from an admitted connection: every stage is
    /// checked first, then all are charged together. So a refusal costs
    /// nothing: a source flooding past its own limits drains neither the
    /// service's bucket (which would starve every other source) nor, when the
    /// service's bucket refuses it, its own.
    ///
    /// `Ok` holds the source's session slot (with `max_per_source`), given
    /// back when dropped.
    pub fn admit(self: &Arc<Self>, peer: &Peer, now: Instant) -> Result<SourceSlot, Refusal> {
        let peer = match peer {
            Peer::Ip(addr) => {
                let ip = addr.ip().to_canonical();
                self.rules.check(ip)?;
                Some(ip)
            }
            Peer::Unix(credentials) => {
                self.rules.check_credentials(credentials)?;
                None
            }
            // A stream wait service's: the config gives it no rules by
            // source (its program accepts), only the service's rate.
            Peer::Unknown => None,
        };
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
        if self.per_source
            && let Some(peer) = peer
        {
            let source = Source::of(peer, self.v6_mask);
            // Checks the source's limits and, if they admit it, charges them:
            // the service's bucket, checked above, cannot refuse it now.
            let max = self.limits.max_per_source;
            state
                .sources
                .admit(source, now, self.source_rate.as_ref(), max)?;
            if max.is_some() {
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

    /// Gives back one session slot of `source`.
    fn release(&self, source: Source) {
        self.lock()
            .sources
            .release(source, self.source_rate.as_ref());
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

/// One session's slot under its service's cap; dropping it gives it back.
#[derive(Debug)]
pub struct ServiceSlot {
    _permit: Option<Permit>,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The peer is in this `deny` rule (as written).
    Denied(IpNet),
    /// `allow` is not empty and does not hold the peer.
    NotAllowed,
    /// A Unix socket client whose user is not in `allow_uid` and whose
    /// group is not in `allow_gid` (those of the lists that are set).
    IdNotAllowed(IdLists),
    /// The service's bucket (`rate`) is empty.
    Rate,
    /// The source's bucket (`rate_per_source`) is empty.
    RatePerSource,
    /// The source has `max_per_source` sessions in progress.
    MaxPerSource,
    /// A new source while the gate remembers [`MAX_SOURCES`] sources, each
    /// with a session in progress: it could not count this one's.
    TooManySources,
    /// A PROXY protocol service's connection from outside
    /// `trusted_proxies`.
    Untrusted,
    /// A trusted proxy's connection without a valid PROXY header: why.
    Proxy(String),
}

/// Which of `allow_uid` and `allow_gid` a service sets: those that
/// refused a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdLists {
    pub uid: bool,
    pub gid: bool,
}

impl Refusal {
    /// The config option that refused: the `rule=` of the log line.
    pub fn rule(&self) -> &'static str {
        match self {
            Self::Denied(_) => "deny",
            Self::NotAllowed => "allow",
            Self::IdNotAllowed(lists) => match (lists.uid, lists.gid) {
                (true, true) => "allow_uid,allow_gid",
                (false, true) => "allow_gid",
                _ => "allow_uid",
            },
            Self::Rate => "rate",
            Self::RatePerSource => "rate_per_source",
            Self::MaxPerSource | Self::TooManySources => "max_per_source",
            Self::Untrusted | Self::Proxy(_) => "proxy",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Denied(net) => write!(f, "source denied by {net}"),
            Self::NotAllowed => f.write_str("source not in the allow list"),
            Self::IdNotAllowed(lists) => f.write_str(match (lists.uid, lists.gid) {
                (true, true) => "neither the user is in allow_uid nor the group in allow_gid",
                (false, true) => "the group is not in allow_gid",
                _ => "the user is not in allow_uid",
            }),
            Self::Rate => f.write_str("service rate limit exceeded"),
            Self::RatePerSource => f.write_str("source rate limit exceeded"),
            Self::MaxPerSource => f.write_str("too many sessions from this source"),
            Self::TooManySources => {
                f.write_str("too many sources with sessions in progress to count another")
            }
            Self::Untrusted => f.write_str("not from a trusted proxy"),
            Self::Proxy(reason) => f.write_str(reason),
        }
    }
}

#[cfg(test)]
mod tests;
