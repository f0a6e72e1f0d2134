//! The session caps: the daemon's (`--max-sessions`) and each service's
//! (`max_sessions`), one type for both.
//!
//! A cap is a number of slots, as permits: a slot is taken before a child
//! starts and given back when its [`Permit`] is dropped, whichever way the
//! session ends. At the cap the accept loop waits for a slot instead of
//! refusing, so connections wait in the kernel's backlog, as with
//! tcpserver.
//!
//! Waiting at the cap is an episode, logged when it starts ("accepting
//! paused") and when it ends ("accepting resumed"), at most one episode
//! every [`CAP_LOG_INTERVAL`] ([`CapLog`]). An episode ends when a slot is
//! next taken, by whoever takes it: a wait that is cancelled (the accept
//! loop drops it on a reload, or its task ends) leaves the episode open,
//! and the next slot taken closes it, so that the next episode is logged.
//!
//! Not here: which caps a connection is under (the server takes the
//! daemon's, then its service's through [`Gate::slot`](super::Gate::slot)).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{info, warn};

/// The shortest time between two "limit reached" warnings of one cap.
const CAP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A session cap: the daemon's or one service's.
#[derive(Debug)]
pub struct Cap {
    slots: Arc<Semaphore>,
    /// The number of slots: `max`, or fewer past what a semaphore can count.
    size: usize,
    /// The cap as configured, for log lines.
    max: usize,
    /// The service whose cap this is, for log lines; `None`: the daemon's.
    service: Option<Box<str>>,
    /// Set from an episode's start until a slot is next taken.
    paused: AtomicBool,
    episodes: CapLog,
}

/// One session's slot under a cap; dropping it gives it back.
#[derive(Debug)]
pub struct Permit {
    _slot: OwnedSemaphorePermit,
}

impl Cap {
    /// The daemon's cap, `max` sessions at once.
    pub fn new(max: usize) -> Self {
        Self::with_owner(None, max)
    }

    /// The cap of the service `name`, which its log lines name.
    pub fn for_service(name: &str, max: usize) -> Self {
        Self::with_owner(Some(name.into()), max)
    }

    fn with_owner(service: Option<Box<str>>, max: usize) -> Self {
        // A semaphore holds at most MAX_PERMITS and hands out at most
        // u32::MAX at once (`all_ended`). Far more sessions than a system
        // can run: such a cap is as good as none, not a panic.
        let most = usize::try_from(u32::MAX)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        let size = max.min(most);
        Self {
            slots: Arc::new(Semaphore::new(size)),
            size,
            max,
            service,
            paused: AtomicBool::new(false),
            episodes: CapLog::default(),
        }
    }

    /// Takes a slot, waiting for one at the cap. Logs the episode's start
    /// and end (see the module's documentation).
    ///
    /// Cancel-safe: dropping the future while it waits takes no slot.
    pub async fn acquire(&self) -> Permit {
        self.acquire_with(Instant::now).await
    }

    /// [`Cap::acquire`], reading the clock with `now`, and only when an
    /// episode starts.
    async fn acquire_with(&self, now: impl FnOnce() -> Instant) -> Permit {
        let slot = match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if !self.paused.swap(true, Ordering::Relaxed) {
                    if let Some(not_logged) = self.episodes.starts(now()) {
                        self.log_paused(not_logged);
                    }
                }
                Arc::clone(&self.slots)
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed")
            }
        };
        // Also on the fast path: a waiter that was cancelled left its
        // episode open. A load first, so that the common case writes nothing.
        if self.paused.load(Ordering::Relaxed)
            && self.paused.swap(false, Ordering::Relaxed)
            && self.episodes.ends()
        {
            self.log_resumed();
        }
        Permit { _slot: slot }
    }

    /// Whether a new session would wait for a slot now.
    pub fn is_full(&self) -> bool {
        self.slots.available_permits() == 0
    }

    /// Sessions running now.
    pub fn active(&self) -> usize {
        self.size - self.slots.available_permits()
    }

    /// Waits until every session under this cap has ended.
    pub async fn all_ended(&self) {
        let size = u32::try_from(self.size).expect("a cap's size fits a u32");
        let _all = self
            .slots
            .acquire_many(size)
            .await
            .expect("the semaphore is never closed");
    }

    fn log_paused(&self, not_logged: u64) {
        match &self.service {
            None => warn!(
                max_sessions = self.max,
                episodes_not_logged = not_logged,
                "session limit reached: accepting paused until a session ends"
            ),
            Some(service) => warn!(
                service = %service,
                max_sessions = self.max,
                episodes_not_logged = not_logged,
                "service session limit reached: accepting paused until one of its sessions ends"
            ),
        }
    }

    fn log_resumed(&self) {
        match &self.service {
            None => info!("accepting resumed"),
            Some(service) => info!(service = %service, "service accepting resumed"),
        }
    }
}

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

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::io::Write;
    use std::pin::{Pin, pin};
    use std::task::{Context, Poll, Waker};

    use super::*;

    /// Polls once, without a runtime's timer: pending now means pending.
    fn poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(Waker::noop()))
    }

    /// A slot that is free now.
    fn take(slot: impl Future<Output = Permit>) -> Permit {
        match poll_once(pin!(slot)) {
            Poll::Ready(permit) => permit,
            Poll::Pending => panic!("a free slot is immediate"),
        }
    }

    /// The log lines `run` writes, as the console shows them, without time
    /// or level.
    fn logged(run: impl FnOnce()) -> Vec<String> {
        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl Write for Lines {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .expect("not poisoned")
                    .extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .with_level(false)
            .with_target(false)
            .finish();
        tracing::subscriber::with_default(subscriber, run);
        let bytes = lines.0.lock().expect("not poisoned");
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(|line| line.trim().to_owned())
            .collect()
    }

    const GLOBAL_PAUSED: &str =
        "session limit reached: accepting paused until a session ends max_sessions=1";
    const SERVICE_PAUSED: &str = "service session limit reached: accepting paused until one of its sessions ends service=echo max_sessions=1";

    #[tokio::test]
    async fn permits_come_back_on_drop() {
        let admission = Cap::new(2);
        let a = admission.acquire().await;
        let _b = admission.acquire().await;
        assert_eq!(admission.active(), 2);
        let mut third = pin!(admission.acquire());
        assert!(poll_once(third.as_mut()).is_pending());
        drop(a);
        let _c = third.await;
        assert_eq!(admission.active(), 2);
    }

    #[test]
    fn a_cancelled_wait_takes_no_slot() {
        let cap = Cap::for_service("echo", 1);
        let a = take(cap.acquire());
        assert!(poll_once(pin!(cap.acquire())).is_pending());
        drop(a);
        let _b = take(cap.acquire());
        assert!(poll_once(pin!(cap.acquire())).is_pending());
        assert_eq!(cap.active(), 1);
    }

    /// Found in review (issue 17): the daemon's cap left its episode open
    /// when a wait for a slot was cancelled (as when a reload closes the
    /// address of an accept task waiting at the cap), so the next episode
    /// logged no warning, and its end a "resumed" with no "paused" before.
    /// The service's cap, a copy of the code, closed it; now both are one.
    #[test]
    fn after_a_cancelled_wait_the_next_episode_is_logged() {
        for (cap, paused, resumed) in [
            (Cap::new(1), GLOBAL_PAUSED, "accepting resumed"),
            (
                Cap::for_service("echo", 1),
                SERVICE_PAUSED,
                "service accepting resumed service=echo",
            ),
        ] {
            let t0 = Instant::now();
            let later = t0 + CAP_LOG_INTERVAL;
            let lines = logged(|| {
                let a = take(cap.acquire_with(|| t0));
                assert!(poll_once(pin!(cap.acquire_with(|| t0))).is_pending());
                drop(a);
                // The wait was cancelled: the next slot taken ends its episode.
                let b = take(cap.acquire_with(|| t0));
                let mut waiting = pin!(cap.acquire_with(|| later));
                assert!(poll_once(waiting.as_mut()).is_pending());
                drop(b);
                assert!(poll_once(waiting.as_mut()).is_ready());
            });
            assert_eq!(
                lines,
                [
                    format!("{paused} episodes_not_logged=0"),
                    resumed.to_owned(),
                    format!("{paused} episodes_not_logged=0"),
                    resumed.to_owned(),
                ],
            );
        }
    }

    /// A wait started again at the cap after one was cancelled (the accept
    /// loop, after a reload) is the same episode: no second warning.
    #[test]
    fn a_wait_started_again_at_the_cap_continues_its_episode() {
        let cap = Cap::new(1);
        let t0 = Instant::now();
        let later = t0 + CAP_LOG_INTERVAL;
        let lines = logged(|| {
            let a = take(cap.acquire_with(|| t0));
            assert!(poll_once(pin!(cap.acquire_with(|| t0))).is_pending());
            let mut again = pin!(cap.acquire_with(|| later));
            assert!(poll_once(again.as_mut()).is_pending());
            drop(a);
            assert!(poll_once(again.as_mut()).is_ready());
        });
        assert_eq!(
            lines,
            [
                format!("{GLOBAL_PAUSED} episodes_not_logged=0"),
                "accepting resumed".to_owned()
            ]
        );
    }

    /// Found while merging the two caps: the daemon's cap panicked at the
    /// stop with a TOML `max_sessions` above 4,294,967,295, and at the start
    /// above tokio's bound (2^61 - 1 on 64 bits); the service's clamped.
    #[test]
    fn a_cap_past_what_a_semaphore_counts_is_no_panic() {
        let past_u32 = usize::try_from(u64::from(u32::MAX) + 1).unwrap_or(usize::MAX);
        for max in [past_u32, usize::MAX] {
            let cap = Cap::new(max);
            let a = take(cap.acquire());
            assert_eq!(cap.active(), 1);
            assert!(poll_once(pin!(cap.all_ended())).is_pending());
            drop(a);
            assert_eq!(cap.active(), 0);
            assert!(poll_once(pin!(cap.all_ended())).is_ready(), "{max}");
        }
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
