//! One accepted connection, from admission to the end of its session, on a
//! task of its own.
//!
//! The accept loop hands each connection over as a [`Connection`] and goes
//! back to accepting; the connection walks the stages in order:
//!
//! ```text
//! [PROXY header] → admit (the service's gate) → [TLS handshake] → start → supervise
//! ```
//!
//! The PROXY header (`proxy_protocol`) is read before admission, since it
//! names the client the rules apply to; the TLS handshake (`tls`) after
//! it, so that a refused client costs no handshake. A stage may wait, each
//! under its deadline and cut short by a stop, without holding up any
//! other connection. Whatever happens to one connection stays with it: it is
//! refused, or its start fails and is logged, and nothing else is touched.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::Socket;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::admit::{Gate, Permit, Refusal, ServiceSlot};
use crate::config::{Service, Transport};
use crate::listen;
use crate::peer::{Local, Peer};
use crate::platform;
use crate::proxy;
use crate::session::{SessionInfo, Slots};
use crate::start::{ClientEnv, Conn, Launcher};
use crate::supervise::{self, Session};
use crate::tls;

/// The longest pause a service takes after its program could not start
/// for lack of a resource; each failure in a row doubles it from
/// [`BACKOFF_MIN`].
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(10);

/// A service as it runs: its config, how to start its sessions, its gate.
/// Replaced as a whole on reload; sessions keep the one they started with.
#[derive(Debug)]
pub struct Active {
    pub service: Arc<Service>,
    pub name: Arc<str>,
    /// The run-as user's name, for session logs.
    pub user: Option<Arc<str>>,
    pub launcher: Launcher,
    pub gate: Arc<Gate>,
    /// Set when starting this service's program failed for lack of a
    /// resource: this service pauses accepting (its next start would fail
    /// the same way); the others go on.
    pub backoff: SpawnBackoff,
}

/// What every connection needs from the server.
#[derive(Debug)]
pub struct Context {
    /// Turns true when the server stops.
    pub stop: watch::Receiver<bool>,
    /// How long sessions get between SIGTERM and SIGKILL at stop.
    pub shutdown_grace: Duration,
    pub reaper: platform::Reaper,
}

/// An accepted connection with the session slots taken for it.
#[derive(Debug)]
pub struct Connection {
    pub socket: Socket,
    /// The client: an IP address, or a Unix socket client's credentials.
    pub peer: Peer,
    pub transport: Transport,
    /// The listener's address when it is not a wildcard (a Unix socket's
    /// path): the connection's local address, known without a system call.
    pub bound: Option<Local>,
    pub active: Arc<Active>,
    pub global: Permit,
    pub slot: ServiceSlot,
    pub context: Arc<Context>,
}

impl Connection {
    /// Runs the connection's stages to the end of its session.
    pub async fn serve(self) {
        let Self {
            socket,
            peer,
            transport,
            bound,
            active,
            global,
            slot,
            context,
        } = self;
        let mut peer = peer.canonical();
        let mut socket = socket;
        // Behind a proxy: who the client is, and where it connected, are
        // what the proxy's header says.
        let mut proxied = None;
        if let Some(proxy) = &active.service.proxy {
            let trusted = peer
                .ip()
                .is_some_and(|ip| proxy.trusted.iter().any(|net| net.contains(&ip)));
            if !trusted {
                return refuse(&active, socket, &peer, bound, &Refusal::Untrusted);
            }
            let header = proxy::read_header(socket, proxy.versions, proxy.timeout);
            // Boxed, as the handshake below: a connection's task holds its
            // largest stage's state all its life, and most connections
            // have neither.
            let Some(header) = until_stop(&context, Box::pin(header)).await else {
                return;
            };
            match header {
                Ok((kept, header)) => {
                    socket = kept;
                    let through = peer;
                    if let Some((client, _)) = header.addresses {
                        peer = Peer::Ip(client).canonical();
                    }
                    proxied = Some((through, header));
                }
                Err(e) => {
                    let refusal = Refusal::Proxy(e.to_string());
                    return log_refusal(&active, &peer, bound.as_ref(), &refusal);
                }
            }
        }
        let source = match active.gate.admit(&peer, Instant::now()) {
            Ok(source) => source,
            Err(refusal) => return refuse(&active, socket, &peer, bound, &refusal),
        };
        let slots = Slots {
            global,
            service: slot,
            source,
        };
        let started = Instant::now();
        let service = &active.service;
        let destination = proxied
            .as_ref()
            .and_then(|(_, header)| header.addresses)
            .map(|(_, destination)| Local::Ip(listen::canonical(destination)));
        let local = match destination
            .or(bound)
            .map_or_else(|| local_address(&socket), Ok)
        {
            Ok(local) => local,
            Err(e) => {
                warn!(service = %active.name, %peer, error = %e, "cannot read the connection's local address; closing it");
                return active.backoff.note_if_exhausted(&e);
            }
        };
        if let Err(e) = listen::set_connection_options(&socket, &service.socket, transport) {
            warn!(service = %active.name, %peer, error = %e, "cannot set the connection's socket options");
        }
        let mut client = ClientEnv::new(transport, &peer, &local);
        if let Some((Peer::Ip(through), header)) = &proxied {
            client.proxied(*through, header);
        }
        let through = proxied.map(|(through, _)| through);
        let conn = match &service.tls {
            None => Conn::Plain(socket),
            Some(tls) => match until_stop(&context, Box::pin(tls.accept(socket))).await {
                Some(Ok(accepted)) => {
                    client.tls(accepted.vars);
                    Conn::Tls(Box::new(accepted.stream))
                }
                Some(Err(e)) => return log_handshake_failure(&active, &peer, &e),
                None => return,
            },
        };
        let backend = match active.launcher.start(conn, client, &context.reaper).await {
            Ok(backend) => backend,
            Err(e) => {
                log_start_failure(&active, &local, &peer, None, &e);
                return active.backoff.note_if_exhausted(&e);
            }
        };
        let info = SessionInfo {
            service: Arc::clone(&active.name),
            peer,
            local,
            pid: backend.pid(),
            user: active.user.clone(),
        };
        info!(
            service = %info.service,
            port = info.port(),
            peer = %info.peer,
            local = %info.local,
            proxy = through.as_ref().map(tracing::field::display),
            pid = info.pid,
            user = info.user.as_deref().map(tracing::field::display),
            "session start"
        );
        let (local, pid) = (info.local.clone(), info.pid);
        let session = Session {
            backend,
            slots,
            started,
            info,
            max_lifetime: service.max_lifetime,
        };
        let stop = context.stop.clone();
        if let Some(e) = supervise::supervise(session, stop, context.shutdown_grace).await {
            log_start_failure(&active, &local, &peer, Some(pid), &e);
            active.backoff.note_if_exhausted(&e);
        }
    }
}

/// `work`, unless the server stops first: then `None`, and what `work`
/// held (a connection in its handshake) is dropped.
async fn until_stop<T>(context: &Context, work: impl Future<Output = T>) -> Option<T> {
    let mut stop = context.stop.clone();
    tokio::select! {
        done = work => Some(done),
        _ = stop.wait_for(|stopping| *stopping) => None,
    }
}

/// Logs a failed TLS handshake, rate-limited like the refusals.
fn log_handshake_failure(active: &Active, peer: &Peer, e: &tls::HandshakeError) {
    if let Some(suppressed) = active.gate.log_refusal(Instant::now()) {
        warn!(service = %active.name, %peer, reason = %e, suppressed, "TLS handshake failed");
    }
}

/// The address a connection was made to, when its listener's is a
/// wildcard.
fn local_address(socket: &Socket) -> std::io::Result<Local> {
    Ok(match platform::local_address(socket)? {
        Local::Ip(addr) => Local::Ip(listen::canonical(addr)),
        unix => unix,
    })
}

/// Logs a refused connection, unless too many were logged just now (then
/// the next line counts it among those suppressed).
fn log_refusal(active: &Active, peer: &Peer, local: Option<&Local>, refusal: &Refusal) {
    if let Some(suppressed) = active.gate.log_refusal(Instant::now()) {
        warn!(
            service = %active.name,
            %peer,
            local = %local.map_or_else(|| "-".to_owned(), ToString::to_string),
            rule = %refusal.rule(),
            reason = %refusal,
            suppressed,
            "connection refused"
        );
    }
}

/// Closes a refused connection, after the service's `reject_message`.
fn refuse(active: &Active, socket: Socket, peer: &Peer, bound: Option<Local>, refusal: &Refusal) {
    let local = bound.map_or_else(|| local_address(&socket).ok(), Some);
    log_refusal(active, peer, local.as_ref(), refusal);
    // Never wait for a refused client: no lingering, no blocking call.
    let _ = socket.set_linger(None);
    if socket.set_nonblocking(true).is_err() {
        return;
    }
    if let Some(message) = &active.service.reject_message {
        let _ = socket.send(message.as_bytes());
    }
    let _ = socket.shutdown(std::net::Shutdown::Write);
    // What the client already sent would turn the close into a reset (RFC
    // 1122 4.2.2.13) that can destroy the message in flight: read it first.
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
    for _ in 0..16 {
        match socket.recv(&mut buf) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
}

/// Logs that a connection's program could not start (the connection is
/// closed: its last copy went with the child). `pid` is the process that
/// was made for it, when its exec is what failed.
fn log_start_failure(
    active: &Active,
    local: &Local,
    peer: &Peer,
    pid: Option<u32>,
    e: &std::io::Error,
) {
    let program = match active.service.builtin {
        // What failed is making the connection async (`builtin NAME`).
        Some(_) => active.service.cmdline.clone(),
        None => active.service.program.display().to_string(),
    };
    error!(
        service = %active.name, port = local.port(), %peer, pid, program = %program, error = %e,
        "cannot start the program; closing the connection"
    );
}

/// The pause before a service accepts again after its program could not
/// start for lack of a resource (descriptors, memory, its user's processes).
/// Per service: one run-as user at its RLIMIT_NPROC must not slow the
/// services of other users.
#[derive(Debug, Default)]
pub struct SpawnBackoff(Mutex<Option<(Instant, Duration)>>);

impl SpawnBackoff {
    /// Records a failed start if it failed for lack of a resource: the
    /// pause before the next accept doubles, up to [`BACKOFF_MAX`].
    fn note_if_exhausted(&self, e: &std::io::Error) {
        if !platform::is_resource_exhaustion(e) {
            return;
        }
        let mut backoff = self.0.lock().expect("never poisoned");
        let pause = match *backoff {
            Some((_, pause)) => (pause * 2).min(BACKOFF_MAX),
            None => BACKOFF_MIN,
        };
        *backoff = Some((Instant::now() + pause, pause));
    }

    /// How long to pause before accepting, after a start failed for lack of
    /// a resource; clears the record once the pause has passed.
    pub fn pause(&self) -> Option<Duration> {
        let mut backoff = self.0.lock().expect("never poisoned");
        let (until, _) = (*backoff)?;
        let now = Instant::now();
        if now < until {
            Some(until - now)
        } else {
            // Keep the last pause length for a while, so a failure that
            // persists keeps doubling it; forget it once starts succeed.
            if now > until + BACKOFF_MAX {
                *backoff = None;
            }
            None
        }
    }
}
