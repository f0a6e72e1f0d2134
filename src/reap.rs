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
use crate::stderr_log;

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

/// How a session's wait ended.
enum Ending {
    Exited(std::io::Result<platform::ExitStatus>),
    Stopping,
    TooOld,
}

/// Waits for the session's child and logs its end. When `stop` turns true,
/// or `max_lifetime` passes, ends the child's whole process tree: SIGTERM,
/// then SIGKILL after `grace`. If the program never ran (its exec failed,
/// found only now where starting does not wait for the exec), logs nothing
/// and returns why, for the caller to report.
pub async fn supervise(
    mut session: Session,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) -> Option<std::io::Error> {
    let _stderr_log = session
        .child
        .take_stderr()
        .map(|stderr| stderr_log::start(stderr, session.info.clone()));
    let lifetime = async {
        match session.max_lifetime {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    let ending = tokio::select! {
        status = session.child.wait() => Ending::Exited(status),
        () = stopping(&mut stop) => Ending::Stopping,
        () = lifetime => Ending::TooOld,
    };
    let info = &session.info;
    let status = match ending {
        Ending::Exited(status) => status,
        Ending::Stopping | Ending::TooOld => {
            if matches!(ending, Ending::TooOld) {
                warn!(
                    service = %info.service,
                    pid = info.pid,
                    max_lifetime = ?session.max_lifetime.unwrap_or_default(),
                    "session reached max_lifetime: ending its processes"
                );
            }
            session.child.terminate_tree();
            match tokio::time::timeout(grace, session.child.wait()).await {
                Ok(status) => status,
                Err(_elapsed) => {
                    warn!(service = %info.service, pid = info.pid, grace = ?grace, "session did not stop in time: killing its processes");
                    session.child.kill_tree();
                    session.child.wait().await
                }
            }
        }
    };
    if let Some(error) = session.child.start_error() {
        return Some(error);
    }
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

/// Resolves once the server is stopping.
async fn stopping(stop: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens at exit.
    let _ = stop.wait_for(|&stop| stop).await.map(drop);
}
