//! Wait mode (`wait = true`, and every UDP service with a command): the
//! program takes the service's socket itself, a listening stream socket it
//! accepts on or a bound UDP socket it reads, as inetd's `wait` services
//! and systemd's socket-activated ones (`Accept=no`) do.
//!
//! One task per socket ([`serve`]) watches it while no program holds it:
//!
//! ```text
//! readable → (backing off?) → admit → slots → start → supervise → readable…
//! ```
//!
//! - When the socket becomes readable (a datagram, a pending connection),
//!   the first datagram's source is peeked at (never consumed) and admitted
//!   by the service's gate (`allow`, `deny`, `rate`, `rate_per_source`); a
//!   refused datagram is read and dropped, and logged (a few lines a
//!   second at most). A stream socket's clients are its program's to accept,
//!   so only `rate` applies there: it delays the program's start.
//! - The program gets the socket as its stdin, stdout and stderr (and on
//!   Unix as fd 3 with `LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`, see
//!   `platform`), and its session is supervised like any other
//!   ([`supervise`]): `max_lifetime`, the stop, the whole process group,
//!   the session's log lines and slots. The socket is not watched until
//!   the session has ended; then it is watched again.
//! - A program that ends at once without taking what woke it (a datagram
//!   it never read, a connection it never accepted), or that cannot start,
//!   would be started again at once, forever: such restarts back off,
//!   doubling from [`BACKOFF_FIRST`] up to [`BACKOFF_MAX`], logged once
//!   when the episode starts and once when a program serves again. The
//!   service is never switched off.
//!
//! The session runs on a task of its own: a reload that removes the service
//! ends this task (closing the daemon's copy of the socket) but never the
//! running program, and the stop ends the program like any session.
//!
//! The loop takes any socket the platform can watch ([`WaitSocket`]): IP
//! sockets here; a Unix listening socket needs only its variables
//! ([`variables`]) and its address in the log lines.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::admit::{Admission, Refusal, SourceSlot};
use crate::config::Transport;
use crate::connection::{Active, Context};
use crate::listen;
use crate::peer::{Local, Peer};
use crate::platform::{self, Datagram, WaitSocket};
use crate::session::{SessionInfo, Slots};
use crate::supervise::{self, Session};
pub use backoff::{BACKOFF_FIRST, BACKOFF_MAX};
use backoff::{EPISODE, Restarts, token_interval};

mod backoff;

/// A program that runs this long has served, whatever it read.
const RAN_LONG_ENOUGH: Duration = Duration::from_secs(1);
/// The pause after an error waiting for the socket.
const WATCH_ERROR_PAUSE: Duration = Duration::from_secs(1);
/// Refused datagrams dropped in a row before the task lets others run.
const YIELD_EVERY: u32 = 8;

/// Watches a wait service's socket (shown in logs as `shown`) and runs its
/// program each time it
/// becomes readable, with the service's current settings (`current`:
/// replaced on reload), until the task is ended (the endpoint closes).
pub async fn serve(
    shown: Local,
    socket: WaitSocket,
    transport: Transport,
    current: watch::Receiver<Arc<Active>>,
    admission: Arc<Admission>,
    context: Arc<Context>,
) {
    let local = socket.local_addr().map(listen::canonical);
    Waiter {
        shown,
        socket,
        transport,
        local,
        current,
        admission,
        context,
        restarts: Restarts::default(),
        refused: 0,
    }
    .run()
    .await;
}

/// One wait service's socket and what its loop keeps between programs.
struct Waiter {
    socket: WaitSocket,
    transport: Transport,
    /// The socket's address, when it is an IP socket.
    local: Option<SocketAddr>,
    /// Its address as the logs show it (a Unix socket's path).
    shown: Local,
    current: watch::Receiver<Arc<Active>>,
    admission: Arc<Admission>,
    context: Arc<Context>,
    restarts: Restarts,
    /// Refused datagrams dropped in a row.
    refused: u32,
}

/// What woke the socket, admitted: the program's turn.
struct Turn {
    active: Arc<Active>,
    /// The first datagram, on a datagram socket.
    first: Option<Datagram>,
    source: SourceSlot,
}

/// How a program's turn ended.
enum Outcome {
    /// It could not start.
    NotStarted(std::io::Error),
    /// Its session ended after `ran`.
    Ended { ran: Duration },
}

impl Waiter {
    async fn run(mut self) {
        loop {
            let Some(turn) = self.next_turn().await else {
                continue;
            };
            let first = turn.first;
            let outcome = self.take_turn(turn).await;
            self.after(first, outcome);
        }
    }

    /// Waits until the socket is readable and what woke it is admitted;
    /// `None` when nothing is to be started after all (a datagram was
    /// refused, or gone).
    async fn next_turn(&mut self) -> Option<Turn> {
        if let Err(e) = self.socket.readable().await {
            error!(service = %self.current.borrow().name, error = %e, "cannot watch the socket");
            tokio::time::sleep(WATCH_ERROR_PAUSE).await;
            return None;
        }
        self.pause().await;
        let active = Arc::clone(&self.current.borrow_and_update());
        if !self.socket.is_datagram() {
            return self.admit_stream(active).await;
        }
        let first = match self.socket.peek() {
            Ok(Some(first)) => first,
            Ok(None) => return None,
            Err(e) => {
                // A pending error (an ICMP report, say) is read with it.
                debug!(service = %active.name, error = %e, "cannot peek at the first datagram");
                let _ = self.socket.discard();
                return None;
            }
        };
        let peer = listen::canonical(first.source);
        match active.gate.admit(&Peer::Ip(peer), Instant::now()) {
            Ok(source) => {
                self.refused = 0;
                Some(Turn {
                    active,
                    first: Some(first),
                    source,
                })
            }
            Err(refusal) => {
                self.refuse(&active, peer, &refusal).await;
                None
            }
        }
    }

    /// A stream socket's pending connection: its program accepts it, so
    /// only the service's `rate` applies; past it, the start waits.
    async fn admit_stream(&mut self, active: Arc<Active>) -> Option<Turn> {
        match active.gate.admit(&Peer::Unknown, Instant::now()) {
            Ok(source) => Some(Turn {
                active,
                first: None,
                source,
            }),
            Err(refusal) => {
                if let Some(suppressed) = active.gate.log_refusal(Instant::now()) {
                    warn!(
                        service = %active.name,
                        local = %self.local_text(),
                        rule = %refusal.rule(),
                        reason = %refusal,
                        suppressed,
                        "program start delayed"
                    );
                }
                let per_second = active.service.limits.rate.map_or(1.0, |r| r.per_second);
                tokio::time::sleep(token_interval(per_second)).await;
                None
            }
        }
    }

    /// Reads a refused datagram and drops it, after logging it (a few
    /// lines a second at most, by the gate).
    async fn refuse(&mut self, active: &Active, peer: SocketAddr, refusal: &Refusal) {
        let peer = Peer::Ip(peer);
        if let Some(suppressed) = active.gate.log_refusal(Instant::now()) {
            warn!(
                service = %active.name,
                %peer,
                local = %self.local_text(),
                rule = %refusal.rule(),
                reason = %refusal,
                suppressed,
                "datagram refused"
            );
        }
        if let Err(e) = self.socket.discard() {
            debug!(service = %active.name, error = %e, "cannot drop a refused datagram");
        }
        self.refused += 1;
        if self.refused % YIELD_EVERY == 0 {
            tokio::task::yield_now().await;
        }
    }

    /// Waits out the pause of a backoff episode, if one is on; a reload
    /// (a new command, perhaps) ends it at once.
    async fn pause(&mut self) {
        let Some(until) = self.restarts.not_before else {
            return;
        };
        let until = tokio::time::Instant::from_std(until);
        tokio::select! {
            () = tokio::time::sleep_until(until) => {}
            changed = self.current.changed() => {
                if changed.is_err() {
                    // The endpoint is going away: its task is ended.
                    std::future::pending::<()>().await;
                }
            }
        }
        self.restarts.not_before = None;
    }

    /// Takes the slots, starts the program on the socket and waits for its
    /// session to end, on a task of its own: should this loop be ended (a
    /// reload removed the service), the session goes on to its end.
    async fn take_turn(&mut self, turn: Turn) -> Outcome {
        let global = self.admission.acquire().await;
        let service = turn.active.gate.slot().await;
        let slots = Slots {
            global,
            service,
            source: turn.source,
        };
        let peer = turn
            .first
            .map_or(Peer::Unknown, |d| Peer::Ip(listen::canonical(d.source)));
        let local = self.shown.clone();
        let start = Start {
            vars: variables(
                self.transport,
                turn.first.map(|d| listen::canonical(d.source)),
                self.local,
            ),
            stdio: self.socket.for_program(),
            active: turn.active,
            peer,
            local,
            slots,
            context: Arc::clone(&self.context),
            // Within a backoff episode its failures were said already.
            quiet: self.restarts.failures >= EPISODE,
        };
        match tokio::spawn(start.run()).await {
            Ok(outcome) => outcome,
            Err(e) => Outcome::NotStarted(std::io::Error::other(e)),
        }
    }

    /// Notes how a turn ended: a program that did not serve (it could not
    /// start, or ended at once leaving what woke it) backs the next start
    /// off; one that served ends the backoff.
    fn after(&mut self, first: Option<Datagram>, outcome: Outcome) {
        let active = Arc::clone(&self.current.borrow());
        let served = match &outcome {
            Outcome::NotStarted(_) => false,
            Outcome::Ended { ran, .. } => *ran >= RAN_LONG_ENOUGH || self.woke_taken(first),
        };
        let now = Instant::now();
        if served {
            if let Some(failures) = self.restarts.served() {
                info!(
                    service = %active.name,
                    failed_starts = failures,
                    "program restarts no longer back off: it serves again"
                );
            }
            return;
        }
        let Some(pause) = self.restarts.failed(now) else {
            return;
        };
        let left = if self.socket.is_datagram() {
            "its first datagram unread"
        } else {
            "no connection accepted"
        };
        let reason = match &outcome {
            Outcome::NotStarted(e) => format!("cannot start: {e}"),
            Outcome::Ended { .. } => format!("ended at once, {left}"),
        };
        warn!(
            service = %active.name,
            program = %active.service.program.display(),
            %reason,
            pause = ?pause,
            max_pause = ?BACKOFF_MAX,
            "program restarts back off: it does not serve"
        );
    }

    /// Whether what woke the socket is gone: the first datagram read (the
    /// one first now, if any, is another), or no connection pending.
    fn woke_taken(&mut self, first: Option<Datagram>) -> bool {
        match first {
            Some(first) => !matches!(self.socket.peek(), Ok(Some(now)) if now == first),
            None => !self.socket.is_readable_now(),
        }
    }

    fn local_text(&self) -> String {
        self.shown.to_string()
    }
}

/// What one program's session needs, moved to its task.
struct Start {
    active: Arc<Active>,
    stdio: platform::ChildStdio,
    vars: Vec<(&'static str, String)>,
    peer: Peer,
    local: Local,
    slots: Slots,
    context: Arc<Context>,
    /// Log a failed start at debug level only.
    quiet: bool,
}

impl Start {
    async fn run(self) -> Outcome {
        let Self {
            active,
            stdio,
            vars,
            peer,
            local,
            slots,
            context,
            quiet,
        } = self;
        let started = Instant::now();
        let backend = match active
            .launcher
            .start_waiting(stdio, vars, &context.reaper)
            .await
        {
            Ok(backend) => backend,
            Err(e) => {
                log_start_failure(&active, &local, None, &e, quiet);
                return Outcome::NotStarted(e);
            }
        };
        let info = SessionInfo {
            service: Arc::clone(&active.name),
            peer,
            local: local.clone(),
            pid: backend.pid(),
            user: active.user.clone(),
        };
        info!(
            service = %info.service,
            port = info.port(),
            peer = %info.peer,
            local = %info.local,
            pid = info.pid,
            user = info.user.as_deref().map(tracing::field::display),
            "session start"
        );
        let pid = info.pid;
        let session = Session {
            backend,
            slots,
            started,
            info,
            max_lifetime: active.service.max_lifetime,
        };
        match supervise::supervise(session, context.stop.clone(), context.shutdown_grace).await {
            Some(e) => {
                log_start_failure(&active, &local, Some(pid), &e, quiet);
                Outcome::NotStarted(e)
            }
            None => Outcome::Ended {
                ran: started.elapsed(),
            },
        }
    }
}

/// Logs that the program could not start (`pid`: the process made for it,
/// when its exec is what failed).
fn log_start_failure(
    active: &Active,
    local: &Local,
    pid: Option<u32>,
    e: &std::io::Error,
    quiet: bool,
) {
    let program = active.service.program.display();
    if quiet {
        debug!(service = %active.name, program = %program, error = %e, "cannot start the program");
        return;
    }
    match pid {
        Some(pid) => error!(
            service = %active.name, local = %local, pid, program = %program, error = %e,
            "cannot start the program"
        ),
        None => error!(
            service = %active.name, local = %local, program = %program, error = %e,
            "cannot start the program"
        ),
    }
}

/// The variables a wait service's program gets besides its service's
/// environment, for `transport`: `PROTO`, and
///
/// - UDP: the first datagram's source as `CLIENT_IP` and `CLIENT_PORT`
///   (as for a connection) and the UCSPI names under `PROTO=UDP`,
///   `UDPREMOTEIP`, `UDPREMOTEPORT`, `UDPLOCALIP`, `UDPLOCALPORT` (the
///   address the socket is bound to: `::` for a bare port);
/// - TCP: `TCPLOCALIP` and `TCPLOCALPORT`, the listening address; no
///   client is known, so no `CLIENT_*` or `TCPREMOTE*` variable is set;
/// - a Unix socket: `PROTO=UNIX` alone.
pub fn variables(
    transport: Transport,
    first: Option<SocketAddr>,
    local: Option<SocketAddr>,
) -> Vec<(&'static str, String)> {
    let mut vars = vec![("PROTO", transport.proto().to_owned())];
    let (remote_ip, remote_port, local_ip, local_port) = match transport {
        Transport::Udp => ("UDPREMOTEIP", "UDPREMOTEPORT", "UDPLOCALIP", "UDPLOCALPORT"),
        Transport::Tcp => ("TCPREMOTEIP", "TCPREMOTEPORT", "TCPLOCALIP", "TCPLOCALPORT"),
        Transport::Unix => return vars,
    };
    if let Some(peer) = first {
        vars.extend([
            ("CLIENT_IP", peer.ip().to_string()),
            ("CLIENT_PORT", peer.port().to_string()),
            (remote_ip, peer.ip().to_string()),
            (remote_port, peer.port().to_string()),
        ]);
    }
    if let Some(local) = local {
        vars.extend([
            (local_ip, local.ip().to_string()),
            (local_port, local.port().to_string()),
        ]);
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_variables_name_the_first_source() {
        let vars = variables(
            Transport::Udp,
            Some("127.0.0.2:4000".parse().expect("valid")),
            Some("[::]:69".parse().expect("valid")),
        );
        let expected = [
            ("PROTO", "UDP"),
            ("CLIENT_IP", "127.0.0.2"),
            ("CLIENT_PORT", "4000"),
            ("UDPREMOTEIP", "127.0.0.2"),
            ("UDPREMOTEPORT", "4000"),
            ("UDPLOCALIP", "::"),
            ("UDPLOCALPORT", "69"),
        ];
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(vars, expected);
    }

    #[test]
    fn tcp_variables_have_no_client() {
        let vars = variables(
            Transport::Tcp,
            None,
            Some("127.0.0.1:8080".parse().expect("valid")),
        );
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            vars,
            [
                ("PROTO", "TCP"),
                ("TCPLOCALIP", "127.0.0.1"),
                ("TCPLOCALPORT", "8080")
            ]
        );
        let unix = variables(Transport::Unix, None, None);
        assert_eq!(unix, [("PROTO", "UNIX".to_owned())]);
    }

    #[test]
    fn variables_are_never_taken_from_the_daemon() {
        for (name, _) in variables(
            Transport::Udp,
            Some("127.0.0.2:4000".parse().expect("valid")),
            Some("[::]:69".parse().expect("valid")),
        )
        .into_iter()
        .chain(variables(
            Transport::Tcp,
            None,
            Some("[::]:1".parse().expect("valid")),
        )) {
            assert!(
                crate::start::CLIENT_VARIABLES.contains(&name)
                    || crate::start::WAIT_VARIABLES.contains(&name),
                "{name} is filtered from the daemon's environment"
            );
        }
    }
}
