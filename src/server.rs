//! The server: one accept task per listener, feeding the stages
//! listen → admit → spawn → reap, and an orderly stop.
//!
//! The accept loop stays flat: wait for a pending connection, take a session
//! slot, accept, start the child, hand it to a reaper task, repeat. A
//! connection's failure stays with that connection; an accept error backs
//! off instead of spinning; nothing here blocks on a name lookup.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::Socket;
use tokio::sync::watch;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::admit::Admission;
use crate::cli::Settings;
use crate::config::{Config, Service};
use crate::error::Error;
use crate::listen;
use crate::logging;
use crate::platform::{self, ChildSpec, Listener};
use crate::reap::{self, Session};
use crate::spawn;

/// Shortest and longest pause after an accept error that says the system is
/// out of a resource (descriptors, memory).
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What every accept task shares.
#[derive(Debug)]
struct Shared {
    settings: Settings,
    admission: Admission,
    stop: watch::Receiver<bool>,
}

/// One listener and the service behind it.
#[derive(Debug)]
struct Endpoint {
    service: Arc<Service>,
    spec: ChildSpec,
    listener: Listener,
}

/// Binds every service's port, announces them, then serves until
/// `shutdown` resolves; returns once every session has ended.
pub async fn serve(
    config: Config,
    settings: Settings,
    shutdown: impl std::future::Future<Output = &'static str>,
) -> Result<(), Error> {
    platform::warn_unsupported(&settings);
    let daemon_env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let mut endpoints = Vec::with_capacity(config.services.len());
    for service in &config.services {
        let port = service.port;
        let listen_error = |source| Error::Listen { port, source };
        let socket = listen::bind(port, &settings).map_err(listen_error)?;
        let listener = Listener::new(socket).map_err(listen_error)?;
        endpoints.push(Endpoint {
            spec: spawn::prepare(service, &daemon_env, &settings),
            service: Arc::clone(service),
            listener,
        });
    }
    // Only now that every port is bound: announce, then tell the service
    // manager (the original reported "running" before binding).
    for endpoint in &endpoints {
        let addr = endpoint
            .listener
            .local_addr()
            .map_err(|source| Error::Listen {
                port: endpoint.service.port,
                source,
            })?;
        logging::announce(&format!(
            "listening on {addr} ({})",
            endpoint.service.cmdline
        ));
    }
    if let Err(e) = platform::notify_ready() {
        warn!(error = %e, "cannot notify the service manager");
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        admission: Admission::new(settings.max_sessions),
        settings,
        stop: stop_rx,
    });
    let mut tasks = tokio::task::JoinSet::new();
    for endpoint in endpoints {
        tasks.spawn(accept_loop(endpoint, Arc::clone(&shared)));
    }

    let signal = shutdown.await;
    info!(
        signal,
        sessions = shared.admission.active(),
        "shutting down"
    );
    // Close the listeners at once: new connections are refused from here on.
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    stop_tx.send_replace(true);
    shared.admission.all_ended().await;
    info!("stopped");
    Ok(())
}

async fn accept_loop(endpoint: Endpoint, shared: Arc<Shared>) {
    let mut backoff = BACKOFF_MIN;
    let mut failing = false;
    loop {
        if let Err(e) = endpoint.listener.ready().await {
            error!(port = endpoint.service.port, error = %e, "cannot wait for connections");
            tokio::time::sleep(BACKOFF_MAX).await;
            continue;
        }
        let permit = shared.admission.acquire().await;
        let (socket, peer) = match endpoint.listener.accept().await {
            Ok(Some(accepted)) => accepted,
            Ok(None) => continue,
            Err(e) if platform::is_resource_exhaustion(&e) => {
                drop(permit);
                if !failing {
                    warn!(port = endpoint.service.port, error = %e, "accept failed: backing off until resources free up");
                    failing = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
            Err(e) => {
                // A connection that failed before we took it (reset, aborted).
                debug!(port = endpoint.service.port, error = %e, "accept failed");
                continue;
            }
        };
        if failing {
            info!(port = endpoint.service.port, "accept recovered");
            failing = false;
            backoff = BACKOFF_MIN;
        }
        if let Err(e) = start_session(&endpoint, &shared, socket, peer, permit) {
            if platform::is_resource_exhaustion(&e) {
                // The connection is closed; the next would fail the same way.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Starts one session. A failure is logged here and closes the connection;
/// it is returned only so that the caller can back off.
fn start_session(
    endpoint: &Endpoint,
    shared: &Shared,
    socket: Socket,
    peer: SocketAddr,
    permit: crate::admit::Permit,
) -> std::io::Result<()> {
    let started = Instant::now();
    let peer = listen::canonical(peer);
    let span =
        info_span!("session", port = endpoint.service.port, %peer, pid = tracing::field::Empty);
    let _entered = span.enter();
    let local = match socket.local_addr().map(|a| a.as_socket()) {
        Ok(Some(local)) => listen::canonical(local),
        Ok(None) => return Ok(()),
        Err(e) => {
            warn!(error = %e, "cannot read the connection's local address; closing it");
            return Err(e);
        }
    };
    if !platform::LISTENER_OPTIONS_INHERITED {
        if let Err(e) = listen::set_connection_options(&socket, &shared.settings) {
            warn!(error = %e, "cannot set the connection's socket options");
        }
    }
    let env = spawn::client_env(peer, local);
    let child = match platform::spawn(&endpoint.spec, socket, &env) {
        Ok(child) => child,
        Err(e) => {
            error!(program = %endpoint.service.program.display(), error = %e, "cannot start the program; closing the connection");
            return Err(e);
        }
    };
    span.record("pid", child.id());
    match endpoint.service.user.as_ref() {
        Some(user) => info!(user = %user.name, "session start"),
        None => info!("session start"),
    }
    drop(_entered);
    let session = Session {
        child,
        permit,
        started,
        span: span.clone(),
    };
    tokio::spawn(
        reap::supervise(session, shared.stop.clone(), shared.settings.shutdown_grace)
            .instrument(span),
    );
    Ok(())
}
