//! The per-source table of a gate: who counts as one source, and what the
//! gate remembers of each (its bucket for `rate_per_source`, its sessions
//! in progress for `max_per_source`), within a bound ([`MAX_SOURCES`]).
//!
//! The table grows in amortized steps, is swept of idle entries now and
//! then, and evicts at its bound, so that a flood of distinct addresses
//! costs a bounded amount of memory and each connection a bounded amount of
//! work. Not here: the order of the rules or the service's own limits (the
//! gate, [`super::Gate`]), nor the lock (the gate holds the table inside
//! its locked state).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use super::Refusal;
use super::bucket::{Bucket, Refill};

/// The most sources a [`Gate`](super::Gate) remembers. An entry takes 48
/// bytes, and this many fill a table of 131,072 slots: a flood of distinct
/// addresses costs a gate about 6 MB at most.
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

/// Where connections come from, for per-source limits: an IPv4 address, or
/// an IPv6 address masked to the service's `source_prefix_v6`. Both are kept
/// as 128 bits, an IPv4 address in its IPv4-mapped form (`::ffff:a.b.c.d`),
/// which no IPv6 source can take: an IPv4-mapped peer is IPv4 by the time it
/// is grouped, and masking an address outside `::ffff:0:0/96` cannot land
/// inside it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Source(u128);

impl Source {
    /// The source `peer` (canonical: an IPv4-mapped address as IPv4) counts
    /// as, with IPv6 addresses grouped by `v6_mask` ([`v6_mask`]).
    pub(super) fn of(peer: IpAddr, v6_mask: u128) -> Self {
        match peer {
            IpAddr::V4(v4) => Self(u128::from(v4.to_ipv6_mapped())),
            IpAddr::V6(v6) => Self(u128::from(v6) & v6_mask),
        }
    }
}

/// The mask that groups IPv6 sources by their first `prefix` bits
/// (`source_prefix_v6`; more than 128 counts as 128).
pub(super) fn v6_mask(prefix: u8) -> u128 {
    let prefix = prefix.min(128);
    u128::MAX.checked_shl(u32::from(128 - prefix)).unwrap_or(0)
}

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
///
/// Every method that takes `rate` must be given the same one, the per-source
/// bucket's parameters (`None` without `rate_per_source`).
#[derive(Debug, Default)]
pub(super) struct Sources {
    map: HashMap<Source, SourceEntry>,
    /// Entries with a session in progress.
    busy: usize,
    /// No sweep before this; `None`: one may run now.
    next_sweep: Option<Instant>,
}

impl Sources {
    /// Decides on one connection from `source` at `now` under the source's
    /// limits, in this order: its bucket (`rate`), then its sessions in
    /// progress (`max`). Both are checked before either is charged, so a
    /// refusal costs the source nothing. Admitted with `max`, the session is
    /// counted until [`Sources::release`].
    pub(super) fn admit(
        &mut self,
        source: Source,
        now: Instant,
        rate: Option<&Refill>,
        max: Option<usize>,
    ) -> Result<(), Refusal> {
        let entry = self.entry(source, now, rate)?;
        if let Some(refill) = rate {
            entry.bucket.refill(refill, now);
            if !entry.bucket.has_token() {
                return Err(Refusal::RatePerSource);
            }
        }
        if max.is_some_and(|max| entry.sessions >= max) {
            return Err(Refusal::MaxPerSource);
        }
        // Admitted: charge both.
        if rate.is_some() {
            entry.bucket.take();
        }
        if max.is_some() {
            entry.sessions += 1;
            if entry.sessions == 1 {
                self.busy += 1;
            }
        }
        Ok(())
    }

    /// Gives back one session of `source`, counted by [`Sources::admit`].
    pub(super) fn release(&mut self, source: Source, rate: Option<&Refill>) {
        // An entry with a session in progress is never evicted.
        let Some(entry) = self.map.get_mut(&source) else {
            debug_assert!(false, "a source with a slot out has an entry");
            return;
        };
        debug_assert!(entry.is_busy(), "a source with a slot out is busy");
        if !entry.is_busy() {
            return;
        }
        entry.sessions -= 1;
        if !entry.is_busy() {
            self.busy -= 1;
            if rate.is_none() {
                self.map.remove(&source);
            }
        }
    }

    /// The entry of `source`, made if new.
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
            bucket: rate.map_or_else(Bucket::unused, Bucket::full),
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

#[cfg(test)]
impl Sources {
    /// Sources remembered.
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// Sources with a session in progress.
    pub(super) fn busy(&self) -> usize {
        self.busy
    }

    /// The sessions in progress of `source`.
    pub(super) fn sessions(&self, source: Source) -> usize {
        self.map.get(&source).map_or(0, |entry| entry.sessions)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::config::Rate;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    /// The source of `peer`, IPv6 addresses grouped by /`prefix`.
    fn by(prefix: u8, peer: &str) -> Source {
        Source::of(ip(peer), v6_mask(prefix))
    }

    fn v4(n: usize) -> Source {
        let n = u32::try_from(n).expect("a small number");
        Source::of(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)), u128::MAX)
    }

    fn rate(per_second: f64, burst: u32) -> Refill {
        Refill::new(&Rate { per_second, burst })
    }

    #[test]
    fn ipv6_sources_are_grouped_by_prefix() {
        assert_eq!(by(64, "2001:db8::1"), by(64, "2001:db8::2"));
        assert_ne!(by(64, "2001:db8::1"), by(64, "2001:db8:0:1::1"));
        // ::1 is its own /64 (::/64), apart from other networks.
        assert_eq!(by(64, "::1"), by(64, "::2"));
        assert_ne!(by(64, "::1"), by(64, "2001:db8::1"));
        // An IPv4 address is its own source, whatever the IPv6 prefix.
        assert_ne!(by(64, "192.0.2.1"), by(64, "192.0.2.2"));
        assert_ne!(by(0, "192.0.2.1"), by(0, "192.0.2.2"));

        assert_eq!(by(48, "2001:db8::1"), by(48, "2001:db8:0:ffff::1"));
        assert_ne!(by(48, "2001:db8::1"), by(48, "2001:db8:1::1"));

        assert_ne!(by(128, "2001:db8::1"), by(128, "2001:db8::2"));
        assert_eq!(by(200, "2001:db8::1"), by(128, "2001:db8::1"));

        // Every IPv6 address one source: the mask's edge case. It is still
        // not an IPv4 source.
        assert_eq!(by(0, "2001:db8::1"), by(0, "fe80::1"));
        assert_ne!(by(0, "2001:db8::1"), by(0, "0.0.0.0"));
        assert_eq!(format!("{:?}", by(64, "192.0.2.1")), "192.0.2.1");
        assert_eq!(format!("{:?}", by(48, "2001:db8:1:2::3")), "2001:db8:1::");
    }

    #[test]
    fn a_flood_of_sources_stays_within_the_bound() {
        let t0 = Instant::now();
        let r = rate(1.0, 1);
        let mut sources = Sources::default();
        // Each source takes its token, so none is idle: the bound evicts.
        for n in 0..3 * MAX_SOURCES {
            assert_eq!(sources.admit(v4(n), t0, Some(&r), None), Ok(()), "{n}");
        }
        assert_eq!(sources.len(), MAX_SOURCES);
        // A source that paid its token and came back is still refused,
        // unless the flood pushed it out; the last one is still there.
        assert_eq!(
            sources.admit(v4(3 * MAX_SOURCES - 1), t0, Some(&r), None),
            Err(Refusal::RatePerSource)
        );
        // Once their buckets are full again, a new source sweeps them.
        let later = t0 + Duration::from_secs(60);
        let new = by(64, "192.0.2.1");
        assert_eq!(sources.admit(new, later, Some(&r), None), Ok(()));
        assert_eq!(sources.len(), 1);
    }

    #[test]
    fn at_the_bound_a_flood_evicts_its_own_entries_before_a_drained_source() {
        let t0 = Instant::now();
        let r = rate(0.001, 10);
        let mut sources = Sources::default();
        // A thousand drained sources: evicting any at random, the batch
        // would take about one in eight of them.
        let drained = (0..1000).map(|n| v4(MAX_SOURCES + n));
        for source in drained.clone() {
            for _ in 0..10 {
                assert_eq!(sources.admit(source, t0, Some(&r), None), Ok(()));
            }
        }
        // Fresh sources, one token short of full each: forgetting one
        // forgives one connection, forgetting a drained source ten.
        for n in 0..MAX_SOURCES {
            assert_eq!(sources.admit(v4(n), t0, Some(&r), None), Ok(()), "{n}");
        }
        assert!(sources.len() < MAX_SOURCES - EVICTION_BATCH / 2);
        for source in drained {
            assert_eq!(
                sources.admit(source, t0, Some(&r), None),
                Err(Refusal::RatePerSource),
                "{source:?}"
            );
        }
    }

    #[test]
    fn at_the_bound_with_every_source_busy_a_new_source_is_refused() {
        let now = Instant::now();
        let one = Some(1);
        let mut sources = Sources::default();
        for n in 0..MAX_SOURCES {
            assert_eq!(sources.admit(v4(n), now, None, one), Ok(()), "{n}");
        }
        let new = by(64, "192.0.2.1");
        let refusal = sources.admit(new, now, None, one).err();
        assert_eq!(refusal, Some(Refusal::TooManySources));
        assert_eq!(refusal.map(|r| r.rule()), Some("max_per_source"));
        assert_eq!(sources.len(), MAX_SOURCES);
        // A known source is judged as ever.
        assert_eq!(
            sources.admit(v4(0), now, None, one),
            Err(Refusal::MaxPerSource)
        );
        sources.release(v4(MAX_SOURCES - 1), None);
        assert_eq!(sources.admit(new, now, None, one), Ok(()), "room again");
        for n in 0..MAX_SOURCES - 1 {
            sources.release(v4(n), None);
        }
        assert_eq!((sources.len(), sources.busy()), (1, 1));
        assert_eq!(sources.sessions(new), 1);
    }
}
