//! Linux: one [`Reaper`] for every child the daemon starts (`clone.rs`),
//! and the [`Child`] a session waits on.
//!
//! Exits are seen the classic way, without a descriptor per child: SIGCHLD
//! stays blocked in every thread (`init_process`) and is read from a
//! signalfd; each time it is raised, `waitid` reaps every child that has
//! exited. Under load one wake-up reaps many children. While connections
//! keep coming, the accept loop reaps before it admits each one
//! ([`Reaper::reap_exited`]) and the reaping task leaves SIGCHLD unread,
//! sweeping up every [`DEFER`]: a signal already pending raises no new
//! event, so an exit then costs the daemon no wake-up of its own. What a
//! session's program leaves running is the daemon's child too (the daemon
//! is their subreaper) and is reaped the same way.

use std::collections::HashMap;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::Notify;

use super::clone::{Failure, StderrPipe, signal_plan};
use super::process::ExitStatus;
use super::signals::SignalStream;

/// One child's shared record. The reaper holds it from `clone` until the
/// child is reaped, so it outlives the child's writes to `failure`; the
/// session's [`Child`] holds it to learn the exit.
#[derive(Debug, Default)]
pub(super) struct Record {
    pub(super) failure: Failure,
    exit: Mutex<Exit>,
}

#[derive(Debug, Default)]
struct Exit {
    status: Option<ExitStatus>,
    waiter: Option<Waker>,
}

/// The daemon's children: every one started by [`spawn`] is reaped here,
/// by one task. Make it with [`Reaper::start`] inside the runtime, once the
/// daemon has set up its own signals (stop and reload).
#[derive(Debug, Clone)]
pub struct Reaper {
    pub(super) shared: Arc<Reapers>,
}

#[derive(Debug)]
pub(super) struct Reapers {
    /// Children not reaped yet, by pid.
    pub(super) running: Mutex<HashMap<libc::pid_t, Arc<Record>>>,
    /// The signals a child sets back to their default before its exec:
    /// those the daemon handles or ignores (bit `n - 1` for signal `n`).
    pub(super) reset: u64,
    /// Whether the daemon has a handler for an asynchronous signal, which
    /// a child must not run: then every signal is blocked around `clone`.
    pub(super) block_signals: bool,
    /// How many times the accept loop has reaped ([`Reaper::reap_exited`]).
    accepts: AtomicU64,
    /// Connections waiting for a session slot ([`Reaper::hurry`]): while
    /// there is one, each exit is reaped as soon as it is signalled.
    waiting: AtomicUsize,
    /// Wakes the reaping task from its deferral when one starts waiting.
    hurry: Notify,
}

/// How long the reaping task leaves SIGCHLD unread once it has seen a
/// connection come: while they keep coming, the accept loop reaps before
/// each one. It goes back to reaping each exit as it is signalled after a
/// pause this long without a connection, or at once while one waits for a
/// slot ([`Reaper::hurry`]). So an exit is reaped at most this late when
/// the connections stop.
const DEFER: Duration = Duration::from_millis(10);

/// A running child: one session's program, leader of its own session and
/// process group.
#[derive(Debug)]
pub struct Child {
    pub(super) record: Arc<Record>,
    pub(super) pid: u32,
    pub(super) stderr: Option<StderrPipe>,
    /// For the error of a failed start.
    pub(super) user: Option<String>,
    pub(super) working_dir: Option<std::path::PathBuf>,
}

impl Reaper {
    /// Notes which signals children must set back to their default (the
    /// daemon's own dispositions must be final by now), opens the signalfd and
    /// starts the reaping task. SIGCHLD must be blocked in every thread
    /// (`init_process` does it before any thread exists); it is blocked in
    /// this one here too, in case.
    pub fn start() -> io::Result<Self> {
        let exits = SignalStream::new(&[Signal::SIGCHLD])?;
        let (reset, block_signals) = signal_plan();
        let shared = Arc::new(Reapers {
            running: Mutex::new(HashMap::new()),
            reset,
            block_signals,
            accepts: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            hurry: Notify::new(),
        });
        tokio::spawn(reap_on_sigchld(exits, Arc::clone(&shared)));
        Ok(Self { shared })
    }

    /// Reaps children that have exited, now: every one if `all`, else at
    /// most one. The accept loop calls it before it admits a connection, so
    /// that the reaping task need not wake for each exit while connections
    /// keep coming; with `all` (where a source's sessions are counted),
    /// every session that has ended gives its slots back first. One per
    /// connection keeps up with the sessions ending, one `waitid` each,
    /// which scans every running child: so it is not called again to find
    /// none left. The reaping task sweeps up the rest every [`DEFER`].
    pub fn reap_exited(&self, all: bool) {
        self.shared.accepts.fetch_add(1, Ordering::Relaxed);
        self.shared.reap_all(if all {
            Sweep::UntilNoneLeft
        } else {
            Sweep::One
        });
    }

    /// A connection waits for a session slot: until the returned guard is
    /// dropped, reap each exit as soon as it is signalled, rather than at
    /// the next accept.
    pub fn hurry(&self) -> Hurry {
        self.shared.waiting.fetch_add(1, Ordering::Relaxed);
        self.shared.hurry.notify_one();
        Hurry(Arc::clone(&self.shared))
    }
}

/// Held while a connection waits for a session slot ([`Reaper::hurry`]).
#[derive(Debug)]
#[must_use = "the reaper hurries only while this is held"]
pub struct Hurry(Arc<Reapers>);

impl Drop for Hurry {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The reaping task: on each SIGCHLD, reaps every child that has exited;
/// then, while connections keep coming, leaves the reaping to the accept
/// loop ([`DEFER`]).
async fn reap_on_sigchld(exits: SignalStream, shared: Arc<Reapers>) {
    let mut seen = shared.accepts.load(Ordering::Relaxed);
    loop {
        // A child that exits after the signal was read raises it again, so
        // none is missed.
        if let Err(e) = exits.recv().await {
            tracing::error!(error = %e, "cannot wait for exited programs");
            return;
        }
        shared.reap_all(Sweep::All);
        loop {
            let accepts = shared.accepts.load(Ordering::Relaxed);
            if accepts == seen || shared.waiting.load(Ordering::Relaxed) > 0 {
                break;
            }
            seen = accepts;
            tokio::select! {
                () = tokio::time::sleep(DEFER) => shared.reap_all(Sweep::All),
                () = shared.hurry.notified() => break,
            }
        }
    }
}

/// How far [`Reapers::reap_all`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sweep {
    /// Until `waitid` finds no exited child.
    All,
    /// Also stop once every child started by [`spawn`] has been reaped:
    /// on the accept path, where most of the time that saves a `waitid`.
    UntilNoneLeft,
    /// One `waitid` at most, whatever it finds.
    One,
}

impl Reapers {
    /// Reaps every child that has exited and hands each status to its
    /// record.
    fn reap_all(&self, sweep: Sweep) {
        if sweep != Sweep::All && self.no_child_left() {
            return;
        }
        loop {
            // SAFETY: siginfo_t is plain data; waitid fills it.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: a valid siginfo_t to fill; P_ALL ignores the id.
            let rc =
                unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOHANG) };
            if rc != 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // ECHILD: no child left.
                return;
            }
            // SAFETY: waitid filled `info` for a child (SIGCHLD layout).
            let pid = unsafe { info.si_pid() };
            if pid == 0 {
                return;
            }
            let (record, none_left) = {
                let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
                let record = running.remove(&pid);
                (record, running.is_empty())
            };
            // A child not started by `spawn` has nobody waiting for it.
            if let Some(record) = record {
                let mut exit = record.exit.lock().unwrap_or_else(PoisonError::into_inner);
                exit.status = Some(status_of(&info));
                if let Some(waiter) = exit.waiter.take() {
                    waiter.wake();
                }
            }
            if sweep == Sweep::One || (sweep == Sweep::UntilNoneLeft && none_left) {
                return;
            }
        }
    }

    fn no_child_left(&self) -> bool {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }
}

/// The wait(2) status word of what `waitid` reported: exit code in the
/// second byte, or the signal in the low bits (with 0x80 for a core dump).
fn status_of(info: &libc::siginfo_t) -> ExitStatus {
    // SAFETY: `info` was filled by waitid for a child (SIGCHLD layout).
    let status = unsafe { info.si_status() };
    let raw = match info.si_code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_DUMPED => status | 0x80,
        _ => status,
    };
    ExitStatus::from_raw(raw)
}

impl Child {
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// The child's stderr, when it goes to the daemon's log (once).
    pub fn take_stderr(&mut self) -> Option<StderrPipe> {
        self.stderr.take()
    }

    /// Waits until the reaper has reaped the child.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        Ok(std::future::poll_fn(|cx| self.poll_exit(cx)).await)
    }

    fn poll_exit(&self, cx: &mut Context<'_>) -> Poll<ExitStatus> {
        let mut exit = self
            .record
            .exit
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match exit.status {
            Some(status) => Poll::Ready(status),
            None => {
                if !exit
                    .waiter
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    exit.waiter = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }

    /// Whether the child has not been reaped: then a process group of its
    /// number with no member means it has not called `setsid` yet (see
    /// `signal_tree`).
    pub(super) fn before_its_session(&self) -> bool {
        self.status().is_none()
    }

    pub(super) fn status(&self) -> Option<ExitStatus> {
        self.record
            .exit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .status
    }
}
