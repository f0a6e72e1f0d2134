//! Stage 4, supervise: wait for a session to end, log how it ended, and
//! give its slots back; end everything serving it when the server stops or
//! the session outlives `max_lifetime`.
//!
//! A session ends when what serves it ([`Backend`]) has exited *and*
//! drained: a program, what it left running in its process group, its
//! relay and its stderr. Until then it holds its slots, so what a program
//! leaves behind counts against the caps. Every child is waited for as soon
//! as it exits, so none stays a zombie. Log events carry their fields
//! (service, peer, pid...) themselves rather than through a span, so that a
//! JSON line is one flat object.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::session::{SessionInfo, Slots};
use crate::start::Backend;

/// One running session, owned by its connection's task.
#[derive(Debug)]
pub struct Session {
    pub backend: Backend,
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

/// How long a killed session's group is waited for: SIGKILL ends it at
/// once; what holds a pipe from outside it is not waited for.
const AFTER_KILL: Duration = Duration::from_secs(1);

/// Waits for the session to end and logs its end. When `stop` turns true,
/// or `max_lifetime` passes, ends everything serving it, whether or not
/// the program itself is still there: SIGTERM to its whole process group,
/// then SIGKILL after `grace`. If the program never ran (its exec failed,
/// found only now where starting does not wait for the exec), logs nothing
/// and returns why, for the caller to report.
pub async fn supervise(
    mut session: Session,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) -> Option<std::io::Error> {
    session.backend.log_output(&session.info);
    let lifetime = async {
        match session.max_lifetime {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(lifetime);

    let backend = &mut session.backend;
    let mut status = None;
    let cut = tokio::select! {
        exited = backend.exited() => {
            if let Some(error) = backend.start_error() {
                return Some(error);
            }
            status = Some(exited);
            // The program is gone; what it left in its group, its relay
            // and its stderr still belong to the session.
            tokio::select! {
                () = backend.drained() => None,
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
        backend.terminate();
        let ended = tokio::time::timeout(grace, async {
            let exited = backend.exited().await;
            backend.drained().await;
            exited
        })
        .await;
        let exited = match ended {
            Ok(exited) => exited,
            Err(_elapsed) => {
                warn!(service = %info.service, pid = info.pid, grace = ?grace, "session did not stop in time: killing its processes");
                backend.kill();
                backend.gone(AFTER_KILL).await;
                backend.exited().await
            }
        };
        status.get_or_insert(exited);
        if let Some(error) = backend.start_error() {
            return Some(error);
        }
    }
    let status = status.expect("set once the program has exited");
    let duration = session.started.elapsed();
    let Session {
        backend,
        slots,
        info,
        ..
    } = session;
    // What is left of it (a relay, a stderr pipe held outside the group)
    // ends before the end is logged.
    drop(backend);
    match (status, &info.user) {
        (Ok(status), None) => info!(
            service = %info.service,
            port = info.port(),
            peer = %info.peer,
            local = %info.local,
            pid = info.pid,
            status = %status,
            duration = duration.as_secs_f64(),
            "session end"
        ),
        (Ok(status), Some(user)) => info!(
            service = %info.service,
            port = info.port(),
            peer = %info.peer,
            local = %info.local,
            pid = info.pid,
            user = %user,
            status = %status,
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
    drop(slots);
    None
}

/// Resolves once the server is stopping.
async fn stopping(stop: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens at exit.
    let _ = stop.wait_for(|&stop| stop).await.map(drop);
}
