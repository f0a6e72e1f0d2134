//! The token bucket behind the rate limits (`rate`, `rate_per_source`) and
//! the refusal log's own limit.
//!
//! A bucket is plain data, kept inside a gate's locked state; its caller
//! passes the time, so its answers depend only on their inputs. Not here:
//! which bucket a connection is charged to, or when (the gate decides,
//! [`super::Gate::admit`]).

use std::time::Instant;

use crate::config::Rate;

/// A token bucket's parameters, safe to compute with.
#[derive(Debug, Clone, Copy)]
pub(super) struct Refill {
    pub(super) per_second: f64,
    pub(super) capacity: f64,
}

impl Refill {
    pub(super) fn new(rate: &Rate) -> Self {
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
pub(super) struct Bucket {
    tokens: f64,
    last: Option<Instant>,
}

impl Bucket {
    pub(super) fn full(refill: &Refill) -> Self {
        Self {
            tokens: refill.capacity,
            last: None,
        }
    }

    /// A bucket that is never used (a source's, without a per-source rate).
    pub(super) fn unused() -> Self {
        Self {
            tokens: 0.0,
            last: None,
        }
    }

    /// The tokens at `now`. A `now` earlier than the last use adds nothing.
    pub(super) fn level(&self, refill: &Refill, now: Instant) -> f64 {
        match self.last {
            Some(last) if now > last => {
                (self.tokens + (now - last).as_secs_f64() * refill.per_second).min(refill.capacity)
            }
            _ => self.tokens,
        }
    }

    pub(super) fn is_full(&self, refill: &Refill, now: Instant) -> bool {
        self.level(refill, now) >= refill.capacity
    }

    pub(super) fn refill(&mut self, refill: &Refill, now: Instant) {
        self.tokens = self.level(refill, now);
        if self.last.is_none_or(|last| now > last) {
            self.last = Some(now);
        }
    }

    pub(super) fn has_token(&self) -> bool {
        self.tokens >= 1.0
    }

    pub(super) fn take(&mut self) {
        self.tokens -= 1.0;
    }

    pub(super) fn try_take(&mut self, refill: &Refill, now: Instant) -> bool {
        self.refill(refill, now);
        let ok = self.has_token();
        if ok {
            self.take();
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn refill(per_second: f64, burst: u32) -> Refill {
        Refill::new(&Rate { per_second, burst })
    }

    #[test]
    fn a_bucket_allows_a_burst_then_refills() {
        let t0 = Instant::now();
        let r = refill(1.0, 3);
        let mut bucket = Bucket::full(&r);
        for n in 0..3 {
            assert!(bucket.try_take(&r, t0), "burst {n}");
        }
        assert!(!bucket.try_take(&r, t0));
        let half = t0 + Duration::from_millis(500);
        assert!(!bucket.try_take(&r, half));
        let one = t0 + Duration::from_secs(1);
        assert!(bucket.try_take(&r, one));
        assert!(!bucket.try_take(&r, one));
        // A long pause refills up to the burst, no more.
        let hour = t0 + Duration::from_secs(3600);
        assert!(bucket.is_full(&r, hour));
        for n in 0..3 {
            assert!(bucket.try_take(&r, hour), "burst {n}");
        }
        assert!(!bucket.try_take(&r, hour));
        // A time before the last use changes nothing and does not panic.
        assert!(!bucket.try_take(&r, t0));
    }

    #[test]
    fn a_zero_burst_still_admits_one() {
        let t0 = Instant::now();
        let r = refill(1.0, 0);
        let mut bucket = Bucket::full(&r);
        assert!(bucket.try_take(&r, t0));
        assert!(!bucket.try_take(&r, t0));
    }

    #[test]
    fn a_negative_rate_never_refills() {
        let t0 = Instant::now();
        let r = refill(-5.0, 1);
        let mut bucket = Bucket::full(&r);
        assert!(bucket.try_take(&r, t0));
        assert!(!bucket.try_take(&r, t0 + Duration::from_secs(3600)));
    }
}
