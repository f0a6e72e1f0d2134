//! The server: wires the stages of a connection's life, one accept task
//! per listen address, a config reload that keeps listening sockets, and an
//! orderly stop.
//!
//! ```text
//! listen → admit → start → supervise
//! ```
//!
//! Each accept task takes a global and a service slot (at a cap, accepting
//! pauses and connections wait in the backlog), accepts, and hands the
//! connection to a task of its own ([`Connection`]), which runs the other
//! stages. An accept error backs off instead of spinning; a connection's
//! failure stays with that connection; nothing here blocks on a name
//! lookup or a file. A wait service's address gets a watching task
//! instead ([`wait`]): its program takes the socket itself.

use std::collections::HashMap;
use std::ffi::OsString;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::admit::{Admission, Gate, Permit, ServiceSlot};
use crate::cli::Settings;
use crate::config::{
    Config, ListenAddr, Loaded, Service, Severity, StderrMode, StdioMode, Transport,
};
use crate::connection::{Active, BACKOFF_MAX, Connection, Context, SpawnBackoff};
use crate::datagram;
use crate::error::Error;
use crate::listen::{self, Acceptor, SocketFile};
use crate::logging;
use crate::peer::Local;
use crate::platform::{self, Listener, WaitSocket};
use crate::start::Launcher;
use crate::wait;

/// Connections an accept loop takes in a row, at most, before it lets the
/// other tasks run. Each yield costs a system call (tokio polls for events
/// first): yielding at every connection would add one per session.
const YIELD_EVERY: u32 = 8;

/// Loads the config again, for a reload.
pub type Loader = Box<dyn Fn() -> Loaded + Send>;

/// What every accept task shares.
#[derive(Debug)]
struct Shared {
    admission: Arc<Admission>,
    context: Arc<Context>,
}

/// A listening address's accept task and the channel that gives it new
/// settings on reload.
#[derive(Debug)]
struct Endpoint {
    task: JoinHandle<()>,
    current: watch::Sender<Arc<Active>>,
    /// A Unix socket's file: removed when the endpoint goes.
    file: Option<SocketFile>,
}

impl Endpoint {
    /// Ends the accept task and waits until it is gone, and its listening
    /// socket closed, so that the port can be bound again at once.
    async fn close(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        // Ending the task drops its listener: the port closes at once.
        self.task.abort();
    }
}

/// The running server.
struct Server {
    shared: Arc<Shared>,
    daemon_env: Vec<(OsString, OsString)>,
    services: HashMap<String, Arc<Active>>,
    endpoints: HashMap<ListenAddr, Endpoint>,
    max_sessions: usize,
    log_format: crate::config::LogFormat,
    /// Shared with the blocking thread that loads the config on reload.
    loader: Arc<std::sync::Mutex<Loader>>,
}

/// Binds every service's addresses, announces them, then serves until
/// `stop` resolves, reloading the config (with `loader`) on each request
/// from `reload`; returns once every session has ended.
pub async fn serve(
    config: Config,
    settings: Settings,
    stop: impl Future<Output = &'static str>,
    mut reload: Option<platform::Reload>,
    loader: Loader,
) -> Result<(), Error> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let max_sessions = settings.max_sessions(config.max_sessions);
    let mut server = Server {
        shared: Arc::new(Shared {
            admission: Arc::new(Admission::new(max_sessions)),
            context: Arc::new(Context {
                stop: stop_rx,
                shutdown_grace: settings.shutdown_grace,
                // After `stop` and `reload` have set up their signals: the
                // reaper notes which signals children must reset.
                reaper: platform::Reaper::start().map_err(Error::Reaper)?,
            }),
        }),
        daemon_env: std::env::vars_os().collect(),
        services: HashMap::new(),
        endpoints: HashMap::new(),
        max_sessions,
        log_format: config.log_format,
        loader: Arc::new(std::sync::Mutex::new(loader)),
    };
    warn_if_descriptors_short(&config, max_sessions);
    let actives = server.activate(&config);
    let mut bound = Vec::new();
    for (addr, active) in listen_plan(&actives) {
        let socket = listen::bind(&addr, &active.service).map_err(|source| Error::Listen {
            addr: addr.to_string(),
            source,
        })?;
        bound.push((addr, active, socket));
    }
    // Only now that every port is bound: announce, then tell the service
    // manager (WinInetd reported "running" before binding).
    let mut listeners = Vec::with_capacity(bound.len());
    for (addr, active, bound) in bound {
        let listen_error = |source| Error::Listen {
            addr: addr.to_string(),
            source,
        };
        let listener = Bound::new(&addr, &active, bound.socket).map_err(listen_error)?;
        let local = listener.local_addr(&addr).map_err(listen_error)?;
        logging::announce(
            &active.name,
            &local,
            addr.transport(),
            &active.service.cmdline,
        );
        listeners.push((addr, active, (listener, bound.file)));
    }
    if let Err(e) = platform::notify_ready() {
        warn!(error = %e, "cannot notify the service manager");
    }
    for (addr, active, listener) in listeners {
        server.start_endpoint(addr, active, listener);
    }
    server.services = actives;

    tokio::pin!(stop);
    let signal = loop {
        tokio::select! {
            signal = &mut stop => break signal,
            Some(()) = next_reload(&mut reload) => {
                info!("reload requested");
                // Reading the file may block (a slow or stuck file system):
                // never on the thread that accepts, and a stop does not
                // wait for it.
                let loader = Arc::clone(&server.loader);
                let load = tokio::task::spawn_blocking(move || {
                    (loader.lock().unwrap_or_else(std::sync::PoisonError::into_inner))()
                });
                tokio::select! {
                    signal = &mut stop => break signal,
                    loaded = load => match loaded {
                        Ok(loaded) => server.reload(loaded).await,
                        Err(e) => error!(error = %e, "reload failed: the config could not be loaded"),
                    },
                }
            }
        }
    };
    info!(
        signal,
        sessions = server.shared.admission.active(),
        "shutting down"
    );
    // Close the listeners at once: new connections are refused from here on.
    server.endpoints.clear();
    stop_tx.send_replace(true);
    server.shared.admission.all_ended().await;
    info!("stopped");
    Ok(())
}

async fn next_reload(reload: &mut Option<platform::Reload>) -> Option<()> {
    match reload {
        Some(reload) => reload.recv().await,
        None => std::future::pending().await,
    }
}

/// A bound address registered with the runtime, and its Unix socket's
/// file.
type Listening = (Bound, Option<SocketFile>);

/// Binds `addr` for `active`'s service and registers it with the runtime.
fn bind_listener(addr: &ListenAddr, active: &Active) -> std::io::Result<Listening> {
    let bound = listen::bind(addr, &active.service)?;
    Ok((Bound::new(addr, active, bound.socket)?, bound.file))
}

/// A bound address, registered with the runtime: connections for an
/// accept loop, datagrams the daemon answers itself, or, for a wait
/// service, a socket watched and handed to its program.
#[derive(Debug)]
enum Bound {
    Listener(Listener),
    Datagrams(datagram::Socket),
    Wait(WaitSocket),
}

impl Bound {
    fn new(addr: &ListenAddr, active: &Active, socket: socket2::Socket) -> std::io::Result<Self> {
        if active.service.wait {
            return WaitSocket::new(socket).map(Self::Wait);
        }
        if datagram::serves(addr, &active.service) {
            return datagram::Socket::new(socket).map(Self::Datagrams);
        }
        Listener::new(socket).map(Self::Listener)
    }

    /// Where it listens (`addr`, with the port the system chose).
    fn local_addr(&self, addr: &ListenAddr) -> std::io::Result<Local> {
        match self {
            Self::Listener(listener) => listener.local_addr(),
            Self::Datagrams(socket) => Ok(Local::Ip(socket.local_addr())),
            Self::Wait(socket) => wait_local(socket, addr).ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "not an IP socket")
            }),
        }
    }
}

/// Where a wait service's socket listens: its IP address, or `addr`'s
/// path for a Unix socket.
fn wait_local(socket: &WaitSocket, addr: &ListenAddr) -> Option<Local> {
    match (socket.local_addr(), addr) {
        (Some(local), _) => Some(Local::Ip(listen::canonical(local))),
        (None, ListenAddr::Unix(path)) => Some(Local::Unix(path.display().to_string().into())),
        (None, _) => None,
    }
}

/// Every (address, service) pair to listen on.
fn listen_plan(actives: &HashMap<String, Arc<Active>>) -> Vec<(ListenAddr, Arc<Active>)> {
    let mut plan: Vec<(ListenAddr, Arc<Active>)> = actives
        .values()
        .flat_map(|active| {
            active
                .service
                .listen
                .iter()
                .map(move |addr| (addr.clone(), Arc::clone(active)))
        })
        .collect();
    // In config order, so the listening lines are too.
    plan.sort_by_key(|(_, active)| active.service.line);
    plan
}

impl Server {
    /// The runtime form of each of `config`'s services, keeping the gate
    /// (and so the counters) of a service whose rules did not change.
    fn activate(&self, config: &Config) -> HashMap<String, Arc<Active>> {
        config
            .services
            .iter()
            .map(|service| {
                let gate = match self.services.get(&service.name) {
                    Some(old) if old.gate.same_rules(&service.limits, &service.access) => {
                        Arc::clone(&old.gate)
                    }
                    _ => Gate::new(&service.name, &service.limits, &service.access),
                };
                let active = Active {
                    name: service.name.as_str().into(),
                    user: service.user.as_ref().map(|u| u.name.as_str().into()),
                    launcher: Launcher::new(service, &self.daemon_env),
                    service: Arc::clone(service),
                    gate,
                    backoff: SpawnBackoff::default(),
                };
                (service.name.clone(), Arc::new(active))
            })
            .collect()
    }

    fn start_endpoint(&mut self, addr: ListenAddr, active: Arc<Active>, listening: Listening) {
        let (listener, file) = listening;
        let (current, rx) = watch::channel(active);
        let shared = &self.shared;
        let task = match listener {
            Bound::Datagrams(socket) => {
                tokio::spawn(datagram::serve(socket, rx, shared.context.stop.clone()))
            }
            Bound::Listener(listener) => tokio::spawn(accept_loop(
                listener,
                addr.transport(),
                rx,
                Arc::clone(shared),
            )),
            Bound::Wait(socket) => tokio::spawn(wait::serve(
                wait_local(&socket, &addr).unwrap_or(Local::Ip(([0, 0, 0, 0], 0).into())),
                socket,
                addr.transport(),
                rx,
                Arc::clone(&shared.admission),
                Arc::clone(&shared.context),
            )),
        };
        self.endpoints.insert(
            addr,
            Endpoint {
                task,
                current,
                file,
            },
        );
    }

    /// Applies a reloaded config; with any error the old one keeps running.
    /// Listening sockets of addresses still in use are kept (with the new
    /// settings), so no connection is refused; running sessions are not
    /// touched. An address that takes the port of one that goes away (or
    /// needs another kind of socket) is bound once that one is closed; if
    /// it cannot be, what was closed is bound again and the old config
    /// keeps running.
    async fn reload(&mut self, loaded: Loaded) {
        for d in &loaded.diagnostics {
            match d.severity {
                Severity::Error => error!("{d}"),
                Severity::Warning => warn!("{d}"),
            }
        }
        let Some(config) = loaded.config else {
            error!(
                errors = loaded.error_count(),
                "reload failed: the config has errors; the old one keeps running"
            );
            return;
        };
        if settings_need_restart(&config, self) {
            warn!("max_sessions and log_format changes take effect at the next start");
        }
        warn_if_descriptors_short(&config, self.max_sessions);
        let actives = self.activate(&config);
        let plan = listen_plan(&actives);
        let wanted: HashMap<ListenAddr, Arc<Active>> = plan.iter().cloned().collect();

        // The old listeners that must close: gone from the config, or whose
        // service now needs another kind of socket.
        let closing: Vec<ListenAddr> = self
            .endpoints
            .iter()
            .filter(|(addr, endpoint)| match wanted.get(*addr) {
                None => true,
                Some(new) => {
                    let old = &endpoint.current.borrow().service;
                    // A wait service's socket is watched, not accepted on;
                    // a UDP built-in's is read by the daemon.
                    old.wait != new.service.wait
                        || !platform::same_listener(
                            old.stdio == StdioMode::Pipe,
                            new.service.stdio == StdioMode::Pipe,
                        )
                        || datagram::serves(addr, old) != datagram::serves(addr, &new.service)
                }
            })
            .map(|(addr, _)| addr.clone())
            .collect();
        // Bind what is new and clashes with nothing first: if that fails,
        // nothing has changed yet. What needs a closing listener's port
        // waits for it.
        let mut bound = Vec::new();
        let mut after_close = Vec::new();
        for (addr, active) in &plan {
            let kept = self.endpoints.contains_key(addr) && !closing.contains(addr);
            if kept {
                continue;
            }
            if closing.iter().any(|old| old.overlaps(addr)) {
                after_close.push((addr.clone(), Arc::clone(active)));
                continue;
            }
            match bind_listener(addr, active) {
                Ok(listener) => bound.push((addr.clone(), Arc::clone(active), listener)),
                Err(e) => {
                    error!(%addr, service = %active.name, error = %e, "reload failed: cannot listen; the old config keeps running");
                    return;
                }
            }
        }

        // Close, wait until the sockets are closed, then bind in their place.
        let mut closed = Vec::new();
        for addr in &closing {
            if let Some(endpoint) = self.endpoints.remove(addr) {
                let old = Arc::clone(&endpoint.current.borrow());
                endpoint.close().await;
                closed.push((addr.clone(), old));
            }
        }
        let mut rebound = Vec::new();
        for (addr, active) in after_close {
            match bind_listener(&addr, &active) {
                Ok(listener) => rebound.push((addr, active, listener)),
                Err(e) => {
                    // Put the old listeners back before saying so.
                    drop((bound, rebound));
                    self.restore(closed);
                    error!(%addr, service = %active.name, error = %e, "reload failed: cannot listen; the old config keeps running");
                    return;
                }
            }
        }

        for (addr, endpoint) in &self.endpoints {
            if let Some(active) = wanted.get(addr) {
                let file_changed =
                    endpoint.current.borrow().service.socket_file != active.service.socket_file;
                if let Some(file) = endpoint.file.as_ref().filter(|_| file_changed) {
                    file.update(active.service.socket_file.as_ref());
                }
                endpoint.current.send_replace(Arc::clone(active));
            }
        }
        for (addr, active, listener) in bound.into_iter().chain(rebound) {
            self.announce(&listener, &addr, &active);
            self.start_endpoint(addr, active, listener);
        }
        let names = |pick: &dyn Fn(&String) -> bool, from: &HashMap<String, Arc<Active>>| {
            let mut names: Vec<&str> = from
                .keys()
                .filter(|n| pick(n))
                .map(String::as_str)
                .collect();
            names.sort_unstable();
            names.join(",")
        };
        let old = &self.services;
        let added = names(&|n| !old.contains_key(n), &actives);
        let removed = names(&|n| !actives.contains_key(n), old);
        let same = |n: &String| {
            old.get(n)
                .is_some_and(|o| o.service.same_behaviour(&actives[n].service))
        };
        let changed = names(&|n| old.contains_key(n) && !same(n), &actives);
        let unchanged = names(&|n| same(n), &actives);
        let listeners_closed = closed
            .iter()
            .filter(|(a, _)| !wanted.contains_key(a))
            .count();
        info!(
            %added,
            %removed,
            %changed,
            %unchanged,
            listeners_closed,
            listeners = self.endpoints.len(),
            "reload done"
        );
        self.services = actives;
    }

    /// Binds again the listeners a failed reload closed, with the settings
    /// they had. Should one of their ports have been taken meanwhile, that
    /// address is left without a listener, and said so.
    fn restore(&mut self, closed: Vec<(ListenAddr, Arc<Active>)>) {
        for (addr, active) in closed {
            match bind_listener(&addr, &active) {
                Ok(listener) => self.start_endpoint(addr, active, listener),
                Err(e) => error!(
                    %addr, service = %active.name, error = %e,
                    "cannot listen again after a failed reload: the service has no listener there"
                ),
            }
        }
    }

    fn announce(&self, (listener, _): &Listening, addr: &ListenAddr, active: &Active) {
        if let Ok(local) = listener.local_addr(addr) {
            let transport = addr.transport();
            logging::announce(&active.name, &local, transport, &active.service.cmdline);
        }
    }
}

/// Descriptors the daemon keeps for itself besides its listeners and
/// sessions: the runtime's, the reaper's, the log's, a connection being
/// accepted, a program being started.
const SPARE_DESCRIPTORS: u64 = 64;

/// Descriptors a running session holds in the daemon: a relay's socket and
/// two pipes, and a pipe for a stderr that goes to the log. A session in
/// socket mode holds none.
fn descriptors_per_session(service: &Service) -> u64 {
    let relay = match service.stdio {
        StdioMode::Pipe => 3,
        StdioMode::Socket => 0,
    };
    let log = match service.stderr {
        StderrMode::Log => 1,
        StderrMode::Socket => 0,
    };
    relay + log
}

/// Warns when the descriptor limit cannot hold every session the caps let
/// run at once: past it, sessions fail with "Too many open files".
fn warn_if_descriptors_short(config: &Config, max_sessions: usize) {
    let Some(limit) = platform::descriptor_limit() else {
        return;
    };
    let cap = max_sessions as u64;
    let (mut held, mut worst, mut listeners) = (0, 0, 0);
    for service in &config.services {
        let each = descriptors_per_session(service);
        let service_cap = service
            .limits
            .max_sessions
            .map_or(cap, |n| cap.min(n as u64));
        held += each * service_cap;
        worst = worst.max(each);
        listeners += service.listen.len() as u64;
    }
    // The global cap bounds the sessions of all services together.
    let needed = held.min(worst * cap) + listeners + SPARE_DESCRIPTORS;
    if held > 0 && needed > limit {
        warn!(
            limit,
            needed,
            "the descriptor limit is below what the session caps allow \
             (relay and logged-stderr sessions hold descriptors): past it, \
             sessions fail; raise the limit (LimitNOFILE=, ulimit -Hn) or lower max_sessions"
        );
    }
}

fn settings_need_restart(config: &Config, server: &Server) -> bool {
    let max = config.max_sessions.unwrap_or(server.max_sessions);
    config.log_format != server.log_format || max != server.max_sessions
}

/// Accepts the connections of one listening address, each on a task of its
/// own, with the service's current settings (`current`: replaced on
/// reload).
async fn accept_loop(
    listener: Listener,
    transport: Transport,
    mut current: watch::Receiver<Arc<Active>>,
    shared: Arc<Shared>,
) {
    let mut acceptor = Acceptor::new(listener, transport);
    let mut in_a_row = 0;
    loop {
        acceptor.ready().await;
        if current.has_changed().unwrap_or(false) {
            // A reload: the options accepted sockets inherit may have changed.
            acceptor.update(&current.borrow().service.socket);
        }
        let active = Arc::clone(&current.borrow_and_update());
        let Some((global, slot)) = shared.slots(&active, &mut current).await else {
            continue;
        };
        let Some((socket, peer)) = acceptor.accept(&active.name).await else {
            continue;
        };
        // Reap the children that have exited (while connections keep
        // coming, this is where they are reaped): where a source's
        // sessions are counted, all of them, and let their sessions end
        // before this connection is admitted (their tasks run first).
        let counts_sources = active.gate.counts_sources();
        shared.context.reaper.reap_exited(counts_sources);
        let pause = active.backoff.pause();
        tokio::spawn(
            Connection {
                socket,
                peer,
                transport: acceptor.transport(),
                bound: acceptor.bound().cloned(),
                active,
                global,
                slot,
                context: Arc::clone(&shared.context),
            }
            .serve(),
        );
        // Let the connections' tasks (and the other ports, and relays) run
        // every few connections while connections are always pending.
        in_a_row += 1;
        if counts_sources || in_a_row == YIELD_EVERY {
            in_a_row = 0;
            tokio::task::yield_now().await;
        }
        if let Some(pause) = pause {
            // A start of this service failed for lack of a resource: the
            // next would fail the same way, so do not accept it yet.
            tokio::time::sleep(pause.min(BACKOFF_MAX)).await;
        }
    }
}

impl Shared {
    /// Takes a global and a service slot for the next connection, waiting
    /// at a cap; `None` when the service's settings changed meanwhile (a
    /// reload), to start over with them.
    async fn slots(
        &self,
        active: &Active,
        current: &mut watch::Receiver<Arc<Active>>,
    ) -> Option<(Permit, ServiceSlot)> {
        let full = self.admission.is_full() || active.gate.is_full();
        if full {
            // Sessions reaped at the last connections give their slots back
            // when their tasks run: let them, before waiting for a slot
            // (and saying the limit is reached).
            tokio::task::yield_now().await;
        }
        // Only the end of a session frees a slot: while this connection
        // waits for one, have each reaped as soon as it exits.
        let _hurry = (self.admission.is_full() || active.gate.is_full())
            .then(|| self.context.reaper.hurry());
        let global = self.admission.acquire().await;
        tokio::select! {
            slot = active.gate.slot() => Some((global, slot)),
            changed = current.changed() => {
                if changed.is_err() {
                    // The endpoint is going away: its task is ended.
                    std::future::pending::<()>().await;
                }
                None
            }
        }
    }
}
