//! Stage 4, reap: wait for a session's program to exit, log how it ended,
//! and give its slot back; on stop, end its whole process tree.
//!
//! Every child is waited for as soon as it exits, so none stays a zombie.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{Instrument, Span, error, info, warn};

use crate::admit::Permit;
use crate::platform::{self, Child};

/// One running session, owned by its reaper task.
#[derive(Debug)]
pub struct Session {
    pub child: Child,
    pub permit: Permit,
    pub started: Instant,
    /// The session's span (service, peer, pid).
    pub span: Span,
}

/// Waits for the session's child and logs its end. When `stop` turns true,
/// sends SIGTERM to the child's process group, then SIGKILL after `grace`.
pub async fn supervise(session: Session, mut stop: watch::Receiver<bool>, grace: Duration) {
    let span = session.span.clone();
    run(session, &mut stop, grace).instrument(span).await;
}

async fn run(mut session: Session, stop: &mut watch::Receiver<bool>, grace: Duration) {
    let exited = tokio::select! {
        status = session.child.wait() => Some(status),
        _ = stopping(stop) => None,
    };
    let status = match exited {
        Some(status) => status,
        None => {
            session.child.terminate_tree();
            match tokio::time::timeout(grace, session.child.wait()).await {
                Ok(status) => status,
                Err(_elapsed) => {
                    warn!(grace = ?grace, "session did not stop in time: killing its processes");
                    session.child.kill_tree();
                    session.child.wait().await
                }
            }
        }
    };
    let duration = session.started.elapsed();
    match status {
        Ok(status) => info!(
            status = %platform::describe_exit(&status),
            duration = ?duration,
            "session end"
        ),
        Err(e) => {
            error!(error = %e, duration = ?duration, "session end: cannot wait for the program")
        }
    }
    drop(session.permit);
}

/// Resolves once the server is stopping.
async fn stopping(stop: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens at exit.
    let _ = stop.wait_for(|&stop| stop).await.map(drop);
}
