//! Stage 4, reap: wait for a session's program to exit, log how it ended,
//! and give its slots back; end its whole process tree when the server
//! stops or the session outlives `max_lifetime`.
//!
//! Every child is waited for as soon as it exits, so none stays a zombie.
//! Log events carry their fields (service, peer, pid...) themselves rather
//! than through a span, so that a JSON line is one flat object.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::admit::{Permit, ServiceSlot, SourceSlot};
use crate::platform::{self, Child};
use crate::stderr_log::{self, StderrLog};

/// Who a session is, for its log lines.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub service: Arc<str>,
    pub port: u16,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub pid: u32,
    /// The run-as user, if any.
    pub user: Option<Arc<str>>,
}

/// The slots a session holds; dropping them gives them back.
#[derive(Debug)]
pub struct Slots {
    pub global: Permit,
    pub service: ServiceSlot,
    pub source: SourceSlot,
}

/// One running session, owned by its reaper task.
#[derive(Debug)]
pub struct Session {
    pub child: Child,
    pub slots: Slots,
    pub started: Instant,
    pub info: SessionInfo,
    pub max_lifetime: Option<Duration>,
}

/// Why a session is being ended before it ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    Stopping,
    TooOld,
}

/// The longest pause between two looks at whether a session's process
/// group still has a member, once its program has exited.
const LEFTOVER_POLL_MAX: Duration = Duration::from_secs(1);

/// Waits for the session to end and logs its end. A session ends when its
/// program has exited, everything the program left running in its process
/// group has exited too, and its stderr (`stderr = "log"`) is drained: until
/// then it keeps its slots, so what a program leaves behind counts against
/// the caps. When `stop` turns true, or `max_lifetime` passes, ends the
/// whole process group, whether or not the program itself is still there:
/// SIGTERM, then SIGKILL after `grace`. If the program never ran (its exec
/// failed, found only now where starting does not wait for the exec), logs
/// nothing and returns why, for the caller to report.
pub async fn supervise(
    mut session: Session,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) -> Option<std::io::Error> {
    let mut output = session
        .child
        .take_stderr()
        .map(|stderr| stderr_log::start(stderr, session.info.clone()));
    let lifetime = async {
        match session.max_lifetime {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(lifetime);

    let mut status = None;
    let cut = tokio::select! {
        exited = session.child.wait() => {
            if let Some(error) = session.child.start_error() {
                return Some(error);
            }
            status = Some(exited);
            // The program is gone; what it left in its group and its
            // stderr still belong to the session.
            tokio::select! {
                () = leftovers_gone(&mut session.child, &mut output) => None,
                () = stopping(&mut stop) => Some(Cut::Stopping),
                () = &mut lifetime => Some(Cut::TooOld),
            }
        }
        () = stopping(&mut stop) => Some(Cut::Stopping),
        () = &mut lifetime => Some(Cut::TooOld),
    };
    let info = &session.info;
    if let Some(cut) = cut {
        if cut == Cut::TooOld {
            warn!(
                service = %info.service,
                pid = info.pid,
                max_lifetime = ?session.max_lifetime.unwrap_or_default(),
                "session reached max_lifetime: ending its processes"
            );
        }
        session.child.terminate_tree();
        let child = &mut session.child;
        let ended = tokio::time::timeout(grace, async {
            let exited = child.wait().await;
            leftovers_gone(child, &mut output).await;
            exited
        })
        .await;
        let exited = match ended {
            Ok(exited) => exited,
            Err(_elapsed) => {
                warn!(service = %info.service, pid = info.pid, grace = ?grace, "session did not stop in time: killing its processes");
                session.child.kill_tree();
                let exited = session.child.wait().await;
                // A killed group is gone at once; what holds the stderr
                // pipe outside the group (a process that left it) is not
                // waited for.
                let _ = tokio::time::timeout(
                    LEFTOVER_POLL_MAX,
                    leftovers_gone(&mut session.child, &mut None),
                )
                .await;
                exited
            }
        };
        status.get_or_insert(exited);
        if let Some(error) = session.child.start_error() {
            return Some(error);
        }
    }
    // Ends the reading of stderr, if a process outside the group still
    // holds the pipe: the daemon's end closes with the session.
    drop(output);
    let status = status.expect("set once the program has exited");
    let duration = session.started.elapsed();
    match (status, &info.user) {
        (Ok(status), None) => info!(
            service = %info.service,
            port = info.port,
            peer = %info.peer,
            local = %info.local,
            pid = info.pid,
            status = %platform::describe_exit(&status),
            duration = duration.as_secs_f64(),
            "session end"
        ),
        (Ok(status), Some(user)) => info!(
            service = %info.service,
            port = info.port,
            peer = %info.peer,
            local = %info.local,
            pid = info.pid,
            user = %user,
            status = %platform::describe_exit(&status),
            duration = duration.as_secs_f64(),
            "session end"
        ),
        (Err(e), _) => error!(
            service = %info.service,
            pid = info.pid,
            error = %e,
            duration = duration.as_secs_f64(),
            "session end: cannot wait for the program"
        ),
    }
    drop(session.slots);
    None
}

/// Resolves once nothing is left of the session but its record: its
/// stderr is drained (`output` taken) and its process group has no member.
/// The group is looked at with a signal 0, more rarely as time goes on: a
/// program that leaves something running is rare, and one look is all
/// most sessions cost.
async fn leftovers_gone(child: &mut platform::Child, output: &mut Option<StderrLog>) {
    if let Some(log) = output {
        log.drained().await;
    }
    let mut pause = Duration::from_millis(5);
    while child.tree_alive() {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(LEFTOVER_POLL_MAX);
    }
}

/// Resolves once the server is stopping.
async fn stopping(stop: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens at exit.
    let _ = stop.wait_for(|&stop| stop).await.map(drop);
}
