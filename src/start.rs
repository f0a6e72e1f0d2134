//! Stage 3, start: what serves a session, started on its connection.
//!
//! A session is served by a [`Backend`]: today a program, with the
//! connection as its stdio or behind a [`relay`](crate::relay) (`stdio =
//! "pipe"`), or a [built-in service](crate::builtin) on the connection.
//! The supervise stage waits on a backend through the same few calls
//! whatever it is: its exit, its drain, its end.
//!
//! What does not change from one connection to the next (program, argv, the
//! environment, the identity) is built once per service at load
//! ([`Launcher::new`]); a connection adds only its addresses ([`ClientEnv`]).
//! The environment is the child's own: the daemon's is never modified (the
//! original set `CLIENT_IP` in its own environment, so concurrent clients
//! raced).

use std::ffi::OsString;
use std::fmt::{self, Write as _};
use std::io;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use socket2::Socket;

use crate::builtin;
use crate::config::{Builtin, Service, StderrMode, StdioMode, Transport};
use crate::peer::{Local, Peer};
use crate::platform::{self, ChildSpec, ChildStdio, Program};
use crate::relay::{self, Relay};
use crate::session::SessionInfo;
use crate::stderr_log::{self, StderrLog};

/// The variables a connection may add: for a TCP client the original's
/// `CLIENT_IP` and `CLIENT_PORT` and the UCSPI-TCP set that tcpserver
/// programs expect; for a Unix socket client the UCSPI-UNIX set (its
/// credentials and the socket's path). A program gets the ones of its
/// connection's kind, and never the daemon's own values of any of them.
pub const CLIENT_VARIABLES: [&str; 11] = [
    "CLIENT_IP",
    "CLIENT_PORT",
    "PROTO",
    "TCPREMOTEIP",
    "TCPREMOTEPORT",
    "TCPLOCALIP",
    "TCPLOCALPORT",
    "UNIXREMOTEEUID",
    "UNIXREMOTEEGID",
    "UNIXREMOTEPID",
    "UNIXLOCALPATH",
];

/// The variables a connection through a proxy adds (PROXY protocol): the
/// proxy's own address, and what its header carried. Never taken from the
/// daemon's environment, so that a program is told of a proxy only when
/// there is one.
pub const PROXY_VARIABLES: [&str; 4] = [
    "PROXY_IP",
    "PROXY_PORT",
    "PROXY_AUTHORITY",
    "PROXY_UNIQUE_ID",
];

/// What is fixed about starting a service's sessions, built once at load.
#[derive(Debug)]
pub struct Launcher {
    spec: Arc<ChildSpec>,
    /// The daemon serves the sessions itself, with no program.
    builtin: Option<Builtin>,
    /// The daemon relays the connection (`stdio = "pipe"`).
    relayed: bool,
    /// Bounds each of a relay's waits on the connection.
    timeout: Option<Duration>,
}

impl Launcher {
    /// `daemon_env` is the daemon's environment at start; the service's
    /// `env` and its user's variables override it, and the per-connection
    /// variables override all.
    pub fn new(service: &Service, daemon_env: &[(OsString, OsString)]) -> Self {
        let relayed = service.stdio == StdioMode::Pipe;
        if service.builtin.is_none()
            && !relayed
            && !platform::SOCKET_TIMEOUTS_APPLY
            && service.socket.timeout.is_some()
        {
            tracing::warn!(
                service = %service.name,
                "--timeout has no effect with --stdio socket on Windows: a synchronous socket \
                 ignores SO_RCVTIMEO and SO_SNDTIMEO; use --stdio pipe, where the relay applies it"
            );
        }
        let program = Program {
            path: service.program.clone(),
            args: service.args.clone(),
            command_line: service.cmdline.clone(),
            env: environment(service, daemon_env),
            service_env: service.env.clone(),
            user: service.user.clone(),
            working_dir: service.working_dir.clone(),
            stderr_to_log: service.stderr == StderrMode::Log,
            listen_fd_name: (service.wait && service.builtin.is_none())
                .then(|| listen_fd_name(&service.name)),
        };
        Self {
            spec: Arc::new(ChildSpec::new(program)),
            builtin: service.builtin,
            relayed,
            timeout: service.socket.timeout,
        }
    }

    /// Starts the service's program for the connection `conn`, with the
    /// connection's variables `client`. Where starting blocks (Windows,
    /// Unix other than Linux) it runs on the blocking pool, so that other
    /// connections are served meanwhile. The socket is closed (the
    /// program has its own copy) when this returns.
    pub async fn start(
        &self,
        conn: Conn,
        client: ClientEnv,
        reaper: &platform::Reaper,
    ) -> io::Result<Backend> {
        let (relay, stdio) = match (conn, self.builtin) {
            (Conn::Plain(socket), Some(builtin)) => {
                return Ok(Backend::Builtin(builtin::Running::start(
                    builtin,
                    socket,
                    self.timeout,
                )?));
            }
            (Conn::Tls(_), Some(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "a built-in is not served over TLS",
                ));
            }
            (Conn::Plain(socket), None) if self.relayed => {
                let (relay, stdio) = Relay::new(socket, self.timeout)?;
                (Some(relay), stdio)
            }
            (Conn::Plain(socket), None) => (None, ChildStdio::Socket(socket)),
            (Conn::Tls(stream), None) => {
                let (relay, stdio) = Relay::tls(*stream, self.timeout)?;
                (Some(relay), stdio)
            }
        };
        let child = self.spawn(stdio, client, reaper).await?;
        Ok(Backend::Process(Process {
            child,
            relay: relay.map(Relay::start),
            stderr: None,
        }))
    }

    /// Starts a wait service's program on the service's own socket
    /// (`socket`, from [`platform::WaitSocket::for_program`]), with the
    /// variables `vars` (see `wait`).
    pub async fn start_waiting(
        &self,
        socket: ChildStdio,
        vars: Vec<(&'static str, String)>,
        reaper: &platform::Reaper,
    ) -> io::Result<Backend> {
        let child = self.spawn(socket, vars, reaper).await?;
        Ok(Backend::Process(Process {
            child,
            relay: None,
            stderr: None,
        }))
    }

    /// Starts the program, on the blocking pool where that blocks.
    async fn spawn<V: StartVars>(
        &self,
        stdio: ChildStdio,
        vars: V,
        reaper: &platform::Reaper,
    ) -> io::Result<platform::Child> {
        if platform::SPAWN_BLOCKS {
            let (spec, reaper) = (Arc::clone(&self.spec), reaper.clone());
            tokio::task::spawn_blocking(move || {
                vars.with(|vars| platform::spawn(&spec, stdio, vars, &reaper))
            })
            .await
            .map_err(io::Error::other)?
        } else {
            vars.with(|vars| platform::spawn(&self.spec, stdio, vars, reaper))
        }
    }
}

/// The variables a program's start adds to its service's environment.
trait StartVars: Send + 'static {
    fn with<R>(&self, f: impl FnOnce(&[(&str, &str)]) -> R) -> R;
}

impl StartVars for ClientEnv {
    fn with<R>(&self, f: impl FnOnce(&[(&str, &str)]) -> R) -> R {
        self.with_vars(f)
    }
}

impl StartVars for Vec<(&'static str, String)> {
    fn with<R>(&self, f: impl FnOnce(&[(&str, &str)]) -> R) -> R {
        let vars: Vec<(&str, &str)> = self.iter().map(|(k, v)| (*k, v.as_str())).collect();
        f(&vars)
    }
}

/// The variables a wait service's start may add besides
/// [`CLIENT_VARIABLES`]: a UDP service's first datagram's (the UCSPI names
/// under `PROTO=UDP`). The daemon's own values never reach a program.
pub const WAIT_VARIABLES: [&str; 4] =
    ["UDPREMOTEIP", "UDPREMOTEPORT", "UDPLOCALIP", "UDPLOCALPORT"];

/// A service's name as `LISTEN_FDNAMES` may hold it (sd_listen_fds(3)):
/// ASCII without control characters or `:` (the list's separator), at
/// most 255 characters; anything else becomes `_`.
fn listen_fd_name(name: &str) -> String {
    name.chars()
        .take(255)
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() && c != ':' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The complete environment of `service`'s programs apart from the
/// per-connection variables.
fn environment(
    service: &Service,
    daemon_env: &[(OsString, OsString)],
) -> Vec<(OsString, OsString)> {
    let mut added: Vec<(OsString, OsString)> = service.env.clone();
    if let Some(user) = &service.user {
        added.extend(platform::user_environment(user));
    }
    if let Some(dir) = &service.working_dir {
        // Shells and programs trust PWD over getcwd(): it must not name the
        // daemon's directory (a service's own `env` may still set it).
        if !added.iter().any(|(k, _)| k == "PWD") {
            added.push(("PWD".into(), dir.clone().into_os_string()));
        }
    }
    let started_with = |key: &OsString| {
        CLIENT_VARIABLES.iter().any(|v| key == v) || WAIT_VARIABLES.iter().any(|v| key == v)
    };
    let overridden = |key: &OsString| {
        started_with(key)
            || PROXY_VARIABLES.iter().any(|v| key == v)
            || crate::tls::VARIABLES.iter().any(|v| key == v)
            || platform::PRIVATE_VARIABLES.iter().any(|v| key == v)
            || added.iter().any(|(k, _)| k == key)
    };
    let mut env: Vec<(OsString, OsString)> = daemon_env
        .iter()
        .filter(|(k, _)| !overridden(k))
        .cloned()
        .collect();
    env.extend(added.iter().filter(|(k, _)| !started_with(k)).cloned());
    env
}

/// A connection, as the start stage gets it.
#[derive(Debug)]
pub enum Conn {
    /// The accepted socket.
    Plain(Socket),
    /// A TLS connection whose handshake is done: always relayed.
    Tls(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
}

/// What serves a session.
#[derive(Debug)]
pub enum Backend {
    /// A program, with the connection as its stdio or behind a relay.
    Process(Process),
    /// A built-in service: a task of the daemon's on the connection.
    Builtin(builtin::Running),
}

/// How what served a session ended.
#[derive(Debug)]
pub enum Exit {
    /// The program's exit status.
    Process(platform::ExitStatus),
    /// How a built-in's session ended, in words.
    Builtin(String),
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Process(status) => f.write_str(&platform::describe_exit(status)),
            Self::Builtin(end) => f.write_str(end),
        }
    }
}

/// A session's program, its relay and its stderr log.
#[derive(Debug)]
pub struct Process {
    child: platform::Child,
    relay: Option<relay::Running>,
    stderr: Option<StderrLog>,
}

impl Backend {
    /// The pid the session is known by: 0 for a built-in, which has no
    /// process of its own.
    pub fn pid(&self) -> u32 {
        match self {
            Self::Process(p) => p.child.id(),
            Self::Builtin(_) => 0,
        }
    }

    /// Starts what the session logs as it runs (a program's stderr, with
    /// `stderr = "log"`), now that it is known as `info`.
    pub fn log_output(&mut self, info: &SessionInfo) {
        match self {
            Self::Process(p) => {
                p.stderr = p
                    .child
                    .take_stderr()
                    .map(|pipe| stderr_log::start(pipe, info.clone()));
            }
            Self::Builtin(_) => {}
        }
    }

    /// Resolves when the program has exited, with its status.
    pub async fn exited(&mut self) -> io::Result<Exit> {
        match self {
            Self::Process(p) => p.child.wait().await.map(Exit::Process),
            Self::Builtin(b) => Ok(Exit::Builtin(b.ended().await)),
        }
    }

    /// After [`Backend::exited`]: why the program never ran, if it did
    /// not (found only once it has exited where starting does not wait
    /// for the exec).
    pub fn start_error(&self) -> Option<io::Error> {
        match self {
            Self::Process(p) => p.child.start_error(),
            Self::Builtin(_) => None,
        }
    }

    /// Resolves once nothing of the session is left but its record: its
    /// relay and its stderr are drained, and its process group has no
    /// member. The group is looked at with a signal 0, more rarely as time
    /// goes on: a program that leaves something running is rare, and one
    /// look is all most sessions cost.
    pub async fn drained(&mut self) {
        match self {
            Self::Process(p) => {
                if let Some(relay) = &mut p.relay {
                    relay.drained().await;
                }
                if let Some(log) = &mut p.stderr {
                    log.drained().await;
                }
                let mut pause = Duration::from_millis(5);
                while p.child.tree_alive() {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(LEFTOVER_POLL_MAX);
                }
            }
            Self::Builtin(_) => {}
        }
    }

    /// Asks everything serving the session to stop: SIGTERM to the
    /// program's whole process group (Windows: its job ends).
    pub fn terminate(&self) {
        match self {
            Self::Process(p) => p.child.terminate_tree(),
            // Nothing to ask: its connection is closed at once.
            Self::Builtin(b) => b.abort(),
        }
    }

    /// Ends everything serving the session at once.
    pub fn kill(&self) {
        match self {
            Self::Process(p) => p.child.kill_tree(),
            Self::Builtin(b) => b.abort(),
        }
    }

    /// Waits for the program's group to be gone after [`Backend::kill`],
    /// for at most `limit`: a killed group is gone at once, and what holds
    /// a pipe from outside the group is not waited for.
    pub async fn gone(&mut self, limit: Duration) {
        match self {
            Self::Process(p) => {
                let child = &mut p.child;
                let _ = child.wait().await;
                // `child` moves in by `&mut`: a `Child` need not be `Sync`.
                let _ = tokio::time::timeout(limit, async move {
                    while child.tree_alive() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
                .await;
            }
            Self::Builtin(b) => {
                b.ended().await;
            }
        }
    }
}

/// The longest pause between two looks at whether a session's process
/// group still has a member, once its program has exited.
const LEFTOVER_POLL_MAX: Duration = Duration::from_secs(1);

/// The per-connection variables, formatted on the stack: a connection
/// costs the daemon no allocation for them. Addresses are canonical (IPv4
/// clients as `a.b.c.d`, not `::ffff:a.b.c.d`).
///
/// A Unix socket's client has no address: its program gets the UCSPI-UNIX
/// variables and no `CLIENT_IP`, `CLIENT_PORT` or `TCP*` at all (an empty
/// `CLIENT_IP` would read as a client with no address, which a program
/// could take for a local IP client).
#[derive(Debug)]
pub struct ClientEnv {
    proto: &'static str,
    client: Client,
    /// What a proxy's header or a TLS handshake adds: the
    /// [`PROXY_VARIABLES`] and [`tls::VARIABLES`](crate::tls::VARIABLES)
    /// with their values (empty, and unallocated, for most connections).
    extra: Vec<(&'static str, String)>,
}

/// What a connection's variables say of its client.
#[derive(Debug)]
enum Client {
    Ip {
        peer_ip: Field,
        peer_port: Field,
        local_ip: Field,
        local_port: Field,
    },
    Unix {
        euid: Field,
        egid: Field,
        /// Where the system says it.
        pid: Option<Field>,
        path: Arc<str>,
    },
}

impl ClientEnv {
    pub fn new(transport: Transport, peer: &Peer, local: &Local) -> Self {
        let client = match (peer, local) {
            (Peer::Unix(peer), Local::Unix(path)) => Client::Unix {
                euid: Field::new(peer.uid),
                egid: Field::new(peer.gid),
                pid: peer.pid.map(Field::new),
                path: Arc::clone(path),
            },
            (peer, local) => {
                // A TCP connection has both addresses; were one missing,
                // its variables would be empty rather than wrong.
                let (peer_ip, peer_port) = match peer {
                    Peer::Ip(addr) => (Field::new(addr.ip()), Field::new(addr.port())),
                    Peer::Unix(_) | Peer::Unknown => (Field::new(""), Field::new("")),
                };
                let (local_ip, local_port) = match local {
                    Local::Ip(addr) => (Field::new(addr.ip()), Field::new(addr.port())),
                    Local::Unix(_) => (Field::new(""), Field::new("")),
                };
                Client::Ip {
                    peer_ip,
                    peer_port,
                    local_ip,
                    local_port,
                }
            }
        };
        Self {
            proto: transport.proto(),
            client,
            extra: Vec::new(),
        }
    }

    /// Adds what a connection through the proxy at `through` carries.
    pub fn proxied(&mut self, through: std::net::SocketAddr, header: &crate::proxy::Proxied) {
        let through = crate::listen::canonical(through);
        let vars = &mut self.extra;
        vars.push((PROXY_VARIABLES[0], through.ip().to_string()));
        vars.push((PROXY_VARIABLES[1], through.port().to_string()));
        if let Some(authority) = &header.authority {
            vars.push((PROXY_VARIABLES[2], authority.clone()));
        }
        if let Some(id) = &header.unique_id {
            vars.push((PROXY_VARIABLES[3], id.clone()));
        }
    }

    /// Adds what a TLS handshake tells (`SSL_*`).
    pub fn tls(&mut self, vars: Vec<(&'static str, String)>) {
        self.extra.extend(vars);
    }

    /// Calls `f` with every variable: [`ClientEnv::vars`], and those of a
    /// proxy or a TLS handshake.
    pub fn with_vars<R>(&self, f: impl FnOnce(&[(&str, &str)]) -> R) -> R {
        if self.extra.is_empty() {
            return f(&self.vars());
        }
        let mut all: Vec<(&str, &str)> = self.vars().to_vec();
        all.extend(self.extra.iter().map(|(k, v)| (*k, v.as_str())));
        f(&all)
    }

    /// The connection's variables, each of [`CLIENT_VARIABLES`] it sets
    /// with its value, in that order.
    pub fn vars(&self) -> Vars<'_> {
        let mut vars = Vars {
            items: [("", ""); 7],
            len: 0,
        };
        match &self.client {
            Client::Ip {
                peer_ip,
                peer_port,
                local_ip,
                local_port,
            } => {
                vars.push("CLIENT_IP", peer_ip.as_str());
                vars.push("CLIENT_PORT", peer_port.as_str());
                vars.push("PROTO", self.proto);
                vars.push("TCPREMOTEIP", peer_ip.as_str());
                vars.push("TCPREMOTEPORT", peer_port.as_str());
                vars.push("TCPLOCALIP", local_ip.as_str());
                vars.push("TCPLOCALPORT", local_port.as_str());
            }
            Client::Unix {
                euid,
                egid,
                pid,
                path,
            } => {
                vars.push("PROTO", self.proto);
                vars.push("UNIXREMOTEEUID", euid.as_str());
                vars.push("UNIXREMOTEEGID", egid.as_str());
                if let Some(pid) = pid {
                    vars.push("UNIXREMOTEPID", pid.as_str());
                }
                vars.push("UNIXLOCALPATH", path);
            }
        }
        vars
    }
}

/// A connection's variables, as a slice of `(name, value)` pairs.
#[derive(Debug)]
pub struct Vars<'a> {
    items: [(&'static str, &'a str); 7],
    len: usize,
}

impl<'a> Vars<'a> {
    fn push(&mut self, name: &'static str, value: &'a str) {
        debug_assert!(CLIENT_VARIABLES.contains(&name), "{name} is listed");
        self.items[self.len] = (name, value);
        self.len += 1;
    }
}

impl<'a> Deref for Vars<'a> {
    type Target = [(&'static str, &'a str)];

    fn deref(&self) -> &Self::Target {
        &self.items[..self.len]
    }
}

/// An address or a port as text, in a buffer of its own.
#[derive(Debug)]
struct Field {
    bytes: [u8; Field::CAPACITY],
    len: usize,
}

impl Field {
    /// The longest IP address's text: `ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`.
    const CAPACITY: usize = 45;

    fn new(value: impl fmt::Display) -> Self {
        let mut field = Self {
            bytes: [0; Self::CAPACITY],
            len: 0,
        };
        write!(field, "{value}").expect("an IP address or a port is at most 45 bytes");
        field
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).expect("only whole strs are written")
    }
}

impl fmt::Write for Field {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        self.bytes
            .get_mut(self.len..end)
            .ok_or(fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, ServiceDefaults};
    use std::path::Path;

    /// The one service of a config file named `file` holding `text`.
    fn service(file: &str, text: &str) -> Service {
        let file = Path::new(file);
        let system = config::System::current();
        let defaults = ServiceDefaults {
            timeout: None,
            linger: None,
            stdio: crate::config::StdioMode::Socket,
        };
        let loaded = config::resolve(
            file,
            config::parse(file, text.as_bytes()),
            &system,
            &defaults,
        );
        let mut config = loaded
            .config
            .unwrap_or_else(|| panic!("{:?}", loaded.diagnostics));
        std::sync::Arc::into_inner(config.services.remove(0)).expect("one owner")
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    #[test]
    fn daemon_values_of_client_and_private_variables_are_dropped() {
        let exe = std::env::current_exe().expect("path");
        let env = environment(
            &service("t.conf", &format!("1 none {}\n", exe.display())),
            &vars(&[
                ("PATH", "/bin"),
                ("CLIENT_IP", "6.6.6.6"),
                ("NOTIFY_SOCKET", "/run/x"),
                ("TCPLOCALPORT", "1"),
            ]),
        );
        let mut expected = vars(&[("PATH", "/bin")]);
        if !platform::PRIVATE_VARIABLES.contains(&"NOTIFY_SOCKET") {
            expected.extend(vars(&[("NOTIFY_SOCKET", "/run/x")]));
        }
        assert_eq!(env, expected);
    }

    #[test]
    fn a_wait_programs_variables_never_come_from_the_daemon() {
        let exe = std::env::current_exe().expect("path");
        let env = environment(
            &service("t.conf", &format!("1 none {}\n", exe.display())),
            &vars(&[("PATH", "/bin"), ("UDPREMOTEIP", "6.6.6.6")]),
        );
        assert_eq!(env, vars(&[("PATH", "/bin")]));
    }

    #[test]
    fn a_service_name_is_made_a_valid_listen_fd_name() {
        assert_eq!(listen_fd_name("tftp"), "tftp");
        assert_eq!(listen_fd_name("a b-c.d"), "a b-c.d");
        assert_eq!(listen_fd_name("x:y\u{7f}é"), "x_y__");
        assert_eq!(listen_fd_name(&"n".repeat(300)).len(), 255);
    }

    #[test]
    fn client_variables() {
        let env = ClientEnv::new(
            Transport::Tcp,
            &Peer::Ip("[::1]:4000".parse().expect("valid")),
            &Local::Ip("[::1]:7".parse().expect("valid")),
        );
        assert_eq!(
            *env.vars(),
            [
                ("CLIENT_IP", "::1"),
                ("CLIENT_PORT", "4000"),
                ("PROTO", "TCP"),
                ("TCPREMOTEIP", "::1"),
                ("TCPREMOTEPORT", "4000"),
                ("TCPLOCALIP", "::1"),
                ("TCPLOCALPORT", "7"),
            ]
        );
    }

    #[test]
    fn a_unix_client_gets_the_ucspi_unix_variables_only() {
        let peer = |pid| {
            Peer::Unix(crate::peer::Credentials {
                uid: 4294967294,
                gid: 100,
                pid,
            })
        };
        let local = Local::Unix("/run/x.sock".into());
        let env = ClientEnv::new(Transport::Unix, &peer(Some(4242)), &local);
        assert_eq!(
            *env.vars(),
            [
                ("PROTO", "UNIX"),
                ("UNIXREMOTEEUID", "4294967294"),
                ("UNIXREMOTEEGID", "100"),
                ("UNIXREMOTEPID", "4242"),
                ("UNIXLOCALPATH", "/run/x.sock"),
            ]
        );
        // A system that does not say the pid: no UNIXREMOTEPID at all.
        let env = ClientEnv::new(Transport::Unix, &peer(None), &local);
        assert!(env.vars().iter().all(|(name, _)| *name != "UNIXREMOTEPID"));
        assert_eq!(env.vars().len(), 4);
    }

    #[test]
    fn the_longest_addresses_fit() {
        let longest = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let peer = std::net::SocketAddr::new(longest.parse().expect("valid"), 65535);
        let local = std::net::SocketAddr::new("255.255.255.255".parse().expect("valid"), 65535);
        let env = ClientEnv::new(Transport::Tcp, &Peer::Ip(peer), &Local::Ip(local));
        assert_eq!(env.vars()[0], ("CLIENT_IP", longest));
        assert_eq!(env.vars()[1], ("CLIENT_PORT", "65535"));
        assert_eq!(env.vars()[5], ("TCPLOCALIP", "255.255.255.255"));
        // Compatible and mapped addresses show their IPv4 part dotted.
        let mapped = "::ffff:255.255.255.255".parse().expect("valid");
        assert_eq!(
            Field::new(std::net::IpAddr::V6(mapped)).as_str(),
            "::ffff:255.255.255.255"
        );
    }

    #[test]
    fn a_field_refuses_what_does_not_fit() {
        let mut field = Field::new("");
        assert!(field.write_str(&"x".repeat(Field::CAPACITY)).is_ok());
        assert!(field.write_str("x").is_err());
        assert_eq!(field.as_str().len(), Field::CAPACITY);
    }
}
