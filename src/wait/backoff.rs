//! The backoff of a wait service's program that keeps ending without
//! serving (see the parent module): the pause before its next start, and
//! when an episode is logged; and how long a rate-limited start waits.

use std::time::{Duration, Instant};

/// The first pause after a program ended without serving, doubled at each
/// such end in a row.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(10);
/// The longest pause between two starts of a program that keeps ending
/// without serving: the service is never switched off, it is retried this
/// often.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Ends without serving in a row that make an episode, logged: one may be
/// a coincidence (a client's retransmission of the datagram the program
/// read looks like the same datagram, unread).
pub(super) const EPISODE: u32 = 2;

/// How long the service's bucket takes to earn one token at `per_second`.
pub(super) fn token_interval(per_second: f64) -> Duration {
    if per_second > 0.0 {
        Duration::try_from_secs_f64(1.0 / per_second)
            .unwrap_or(BACKOFF_MAX)
            .clamp(BACKOFF_FIRST, BACKOFF_MAX)
    } else {
        BACKOFF_MAX
    }
}

/// The backoff of a program that keeps ending without serving: an
/// episode starts at the first such end and lasts until one serves.
#[derive(Debug, Default)]
pub(super) struct Restarts {
    /// The last pause, while an episode lasts.
    pub(super) pause: Option<Duration>,
    /// No start before this.
    pub(super) not_before: Option<Instant>,
    /// Ends without serving in this episode.
    pub(super) failures: u32,
}

impl Restarts {
    /// Notes an end without serving at `now`: the next start waits, twice
    /// as long as the last time (from [`BACKOFF_FIRST`], up to
    /// [`BACKOFF_MAX`]). Returns the pause when this makes an episode
    /// ([`EPISODE`] in a row: to log it), `None` otherwise.
    pub(super) fn failed(&mut self, now: Instant) -> Option<Duration> {
        let pause = self
            .pause
            .map_or(BACKOFF_FIRST, |p| (p * 2).min(BACKOFF_MAX));
        self.pause = Some(pause);
        self.not_before = Some(now + pause);
        self.failures += 1;
        (self.failures == EPISODE).then_some(pause)
    }

    /// Notes a program that served: the number of failed starts when this
    /// ends an episode (to log it).
    pub(super) fn served(&mut self) -> Option<u32> {
        self.pause = None;
        self.not_before = None;
        let failures = std::mem::take(&mut self.failures);
        (failures >= EPISODE).then_some(failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_double_up_to_the_cap_and_log_once_per_episode() {
        let mut restarts = Restarts::default();
        let now = Instant::now();
        assert_eq!(restarts.failed(now), None, "one is no episode yet");
        assert_eq!(restarts.not_before, Some(now + BACKOFF_FIRST));
        assert_eq!(restarts.served(), None, "no episode to end");
        assert_eq!(restarts.not_before, None);

        assert_eq!(restarts.failed(now), None);
        assert_eq!(restarts.failed(now), Some(BACKOFF_FIRST * 2), "logged");
        let mut pauses = vec![BACKOFF_FIRST, BACKOFF_FIRST * 2];
        for _ in 0..20 {
            assert_eq!(restarts.failed(now), None, "logged once per episode");
            pauses.push(restarts.pause.expect("in an episode"));
        }
        assert_eq!(pauses[2], BACKOFF_FIRST * 4);
        assert!(pauses.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*pauses.last().expect("some"), BACKOFF_MAX);
        assert_eq!(restarts.served(), Some(22));
        assert_eq!(restarts.not_before, None);
        assert_eq!(restarts.served(), None, "no episode to end");
        assert_eq!(restarts.failed(now), None, "a new count");
    }

    #[test]
    fn a_rate_limited_start_waits_for_one_token() {
        assert_eq!(token_interval(2.0), Duration::from_millis(500));
        assert_eq!(token_interval(1e9), BACKOFF_FIRST);
        assert_eq!(token_interval(0.0), BACKOFF_MAX);
        assert_eq!(token_interval(0.001), BACKOFF_MAX);
    }
}
