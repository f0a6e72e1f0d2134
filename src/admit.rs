//! Stage 2, admit: decide whether a connection may become a session now.
//!
//! Today that is the global cap (`--max-sessions`), as permits: a slot is
//! taken before a child starts and returned when the [`Permit`] is dropped,
//! whichever way the session ends. At the cap, listeners stop accepting and
//! connections wait in the kernel's backlog, as with tcpserver.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{info, warn};

/// The session slots.
#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    max: usize,
    /// Set while at the cap, so one warning is logged per episode.
    paused: AtomicBool,
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
        }
    }

    /// Takes a slot, waiting for one at the cap.
    pub async fn acquire(&self) -> Permit {
        let slot = match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if !self.paused.swap(true, Ordering::Relaxed) {
                    warn!(
                        max_sessions = self.max,
                        "session limit reached: accepting paused until a session ends"
                    );
                }
                let slot = Arc::clone(&self.slots)
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed");
                if self.paused.swap(false, Ordering::Relaxed) {
                    info!("accepting resumed");
                }
                slot
            }
        };
        Permit { _slot: slot }
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

#[cfg(test)]
mod tests {
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
}
