//! Stage 1, listen: bind a service's listen addresses and set the options of
//! the connections they accept.
//!
//! A bare port is bound once on every IPv6 and IPv4 address through one
//! dual-stack socket, or on IPv4 alone where the host has no IPv6; an
//! explicit address is bound as given. A Unix socket's file is made here,
//! with its owner and mode, and removed when its listener goes
//! ([`SocketFile`]); a stale one is replaced, a live one or another file
//! never ([`bind`]). This module owns the sockets' options; what happens
//! to an accepted connection is the business of the next stages.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, TcpKeepalive, Type};
use tracing::{debug, error, info, warn};

use crate::config::{
    IpListen, ListenAddr, Service, SocketFile as FileOptions, SocketOptions, StdioMode, Transport,
};
use crate::peer::{Local, Peer};
use crate::platform::{self, Listener, PathKind};

/// Shortest and longest pause after an accept error that says the system
/// is out of a resource (descriptors, memory).
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A listener's accepting side: one connection at a time, backing off
/// instead of spinning when the system is out of descriptors or memory.
#[derive(Debug)]
pub struct Acceptor {
    listener: Listener,
    transport: Transport,
    /// The listener's address when it is not a wildcard (a Unix socket's
    /// path, always): then every connection has it as its local address,
    /// with no getsockname.
    bound: Option<Local>,
    backoff: Duration,
    failing: bool,
}

impl Acceptor {
    pub fn new(listener: Listener, transport: Transport) -> Self {
        let bound = listener.local_addr().ok().and_then(|local| match local {
            Local::Ip(addr) if addr.ip().is_unspecified() => None,
            Local::Ip(addr) => Some(Local::Ip(canonical(addr))),
            unix @ Local::Unix(_) => Some(unix),
        });
        Self {
            listener,
            transport,
            bound,
            backoff: BACKOFF_MIN,
            failing: false,
        }
    }

    /// How its connections arrive.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The listener's own address when it is not a wildcard.
    pub fn bound(&self) -> Option<&Local> {
        self.bound.as_ref()
    }

    /// Waits until a connection is pending (it may still be gone when
    /// accepted).
    pub async fn ready(&self) {
        if let Err(e) = self.listener.ready().await {
            error!(error = %e, "cannot wait for connections");
            tokio::time::sleep(BACKOFF_MAX).await;
        }
    }

    /// Accepts a pending connection of `service`; `None` when there was
    /// none after all, or when accepting failed (then after a pause, if the
    /// system is short of a resource).
    pub async fn accept(&mut self, service: &str) -> Option<(Socket, Peer)> {
        match self.listener.accept().await {
            Ok(Some(accepted)) => {
                if self.failing {
                    info!(service, "accept recovered");
                    self.failing = false;
                    self.backoff = BACKOFF_MIN;
                }
                Some(accepted)
            }
            Ok(None) => None,
            Err(e) if platform::is_resource_exhaustion(&e) => {
                if !self.failing {
                    warn!(service, error = %e, "accept failed: backing off until resources free up");
                    self.failing = true;
                }
                tokio::time::sleep(self.backoff).await;
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                None
            }
            Err(e) => {
                // A connection that failed before we took it (reset, aborted).
                debug!(service, error = %e, "accept failed");
                None
            }
        }
    }

    /// Gives the listening socket a reloaded service's options, those its
    /// connections inherit from it.
    pub fn update(&self, options: &SocketOptions) {
        if let Some(socket) = self.listener.socket() {
            if let Err(e) = set_inherited_options(socket, options) {
                warn!(error = %e, "cannot update the listener's options");
            }
        }
    }
}

/// A bound socket, listening if it is a stream socket, and the file it
/// made if it is a Unix socket (which must live as long as the listener:
/// dropping it removes the file).
#[derive(Debug)]
pub struct Bound {
    pub socket: Socket,
    pub file: Option<SocketFile>,
}

/// Binds `addr` for `service` and starts listening.
pub fn bind(addr: &ListenAddr, service: &Service) -> io::Result<Bound> {
    let socket = match addr {
        ListenAddr::Tcp(ip) => bind_tcp(*ip, &service.socket, service.stdio)?,
        ListenAddr::Udp(ip) => bind_udp(*ip, service.wait)?,
        ListenAddr::Unix(path) => {
            let options = service.socket_file.unwrap_or(FileOptions {
                mode: crate::config::DEFAULT_SOCKET_MODE,
                owner: None,
                group: None,
            });
            let (socket, file) = bind_unix(path, &options, service.socket.backlog)?;
            return Ok(Bound {
                socket,
                file: Some(file),
            });
        }
    };
    Ok(Bound { socket, file: None })
}

/// The file of a Unix socket the daemon listens on. Dropping it removes
/// the file, if the path still names the file the daemon made: when the
/// daemon stops, and when a reload removes the address (a reload that
/// keeps it keeps the listener, and so this). Another file there (the
/// socket of a daemon that has taken the path over since) is left alone.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    id: platform::FileId,
}

impl SocketFile {
    /// Gives the file a reloaded service's owner, group and mode, if the
    /// path still names it.
    pub fn update(&self, options: Option<&FileOptions>) {
        let Some(options) = options else {
            return;
        };
        let ours = platform::socket_file_id(&self.path).is_ok_and(|id| id == self.id);
        if !ours {
            return;
        }
        if let Err(e) =
            platform::set_socket_file_mode(&self.path, options.mode, options.owner, options.group)
        {
            warn!(path = %self.path.display(), error = %e, "cannot update the socket file's owner and mode");
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        match platform::remove_socket_file(&self.path, self.id) {
            Ok(true) => debug!(path = %self.path.display(), "socket file removed"),
            Ok(false) => info!(
                path = %self.path.display(),
                "socket file not removed: the path names another file now"
            ),
            Err(e) => {
                warn!(path = %self.path.display(), error = %e, "cannot remove the socket file")
            }
        }
    }
}

/// Binds a Unix domain stream socket at `path`, gives its file `options`'
/// owner, group and mode, and only then starts listening: until a socket
/// listens, a connect(2) to its file is refused, so whatever mode the file
/// had between bind(2) and chmod(2) (0777 less the umask) let nobody in.
/// The umask is never changed: it is the whole process's, and a program
/// started meanwhile on another thread would inherit it.
///
/// A socket file already at `path` is removed first only if nothing
/// listens on it (a connect(2) to it is refused: the file of a daemon that
/// ended without removing it); a live one is an error ("in use"), and so is
/// any other kind of file, which is never removed.
fn bind_unix(path: &Path, options: &FileOptions, backlog: u32) -> io::Result<(Socket, SocketFile)> {
    clear_stale(path)?;
    let addr = SockAddr::unix(path)?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.bind(&addr)?;
    // From here on, dropping `file` removes it, on an error too.
    let file = SocketFile {
        path: path.to_owned(),
        id: platform::socket_file_id(path)?,
    };
    platform::set_socket_file_mode(path, options.mode, options.owner, options.group).map_err(
        |e| {
            io::Error::new(
                e.kind(),
                format!("cannot give the socket file its owner, group and mode: {e}"),
            )
        },
    )?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok((socket, file))
}

/// Removes a stale socket file at `path`; an error if a socket there is
/// live or the file is not a socket.
fn clear_stale(path: &Path) -> io::Result<()> {
    match platform::path_kind(path)? {
        PathKind::Missing => Ok(()),
        PathKind::Other => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket: it is left alone (remove it, or listen elsewhere)",
        )),
        PathKind::Socket => match probe(path) {
            Ok(()) => Err(in_use()),
            // A full backlog (EAGAIN on the non-blocking connect) is a
            // listener too.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(in_use()),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                info!(path = %path.display(), "removed a stale socket file (nothing listened on it)");
                Ok(())
            }
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("cannot tell whether something listens on the socket already: {e}"),
            )),
        },
    }
}

/// Connects to the socket at `path` and closes at once: `Ok` if something
/// listens there. Non-blocking, so a listener whose backlog is full does
/// not hold the daemon up.
fn probe(path: &Path) -> io::Result<()> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.connect(&SockAddr::unix(path)?)
}

fn in_use() -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrInUse,
        "the socket is in use: another process listens on it (it is left alone)",
    )
}

/// Binds a UDP address: one dual-stack socket for a bare port, as TCP.
/// A wait service's program takes the socket over (`handed_over`).
fn bind_udp(addr: IpListen, handed_over: bool) -> io::Result<Socket> {
    let bind = |addr: SocketAddr, only_v6: bool| -> io::Result<Socket> {
        let socket = platform::udp_socket(Domain::for_address(addr), handed_over)?;
        if addr.is_ipv6() {
            socket.set_only_v6(only_v6)?;
        }
        platform::configure_listener(&socket)?;
        socket.bind(&addr.into())?;
        Ok(socket)
    };
    match addr {
        IpListen::Any(port) => match bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)), false) {
            Err(e) if no_ipv6(&e) => bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)), false),
            result => result,
        },
        IpListen::At(addr) => bind(addr, true),
    }
}

/// Binds a TCP address and starts listening.
fn bind_tcp(addr: IpListen, options: &SocketOptions, stdio: StdioMode) -> io::Result<Socket> {
    let socket = match addr {
        IpListen::Any(port) => {
            let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
            match bind_addr(v6, false, options, stdio) {
                Err(e) if no_ipv6(&e) => bind_addr(
                    SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
                    false,
                    options,
                    stdio,
                )?,
                result => result?,
            }
        }
        IpListen::At(addr) => bind_addr(addr, true, options, stdio)?,
    };
    socket.listen(i32::try_from(options.backlog).unwrap_or(i32::MAX))?;
    Ok(socket)
}

/// The errors that mean "this host has no IPv6", as opposed to a port
/// problem.
fn no_ipv6(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::AddrNotAvailable || platform::is_family_unsupported(e)
}

fn bind_addr(
    addr: SocketAddr,
    only_v6: bool,
    options: &SocketOptions,
    stdio: StdioMode,
) -> io::Result<Socket> {
    let socket = platform::tcp_socket(Domain::for_address(addr), stdio == StdioMode::Pipe)?;
    if addr.is_ipv6() {
        socket.set_only_v6(only_v6)?;
    }
    platform::configure_listener(&socket)?;
    if platform::LISTENER_OPTIONS_INHERITED {
        set_inherited_options(&socket, options)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// The options an accepted socket inherits from its listener on Linux:
/// timeouts and linger. Also called again on a kept listener when a reload
/// changes them.
pub fn set_inherited_options(socket: &Socket, options: &SocketOptions) -> io::Result<()> {
    socket.set_read_timeout(options.timeout)?;
    socket.set_write_timeout(options.timeout)?;
    socket.set_linger(options.linger)
}

/// Sets a service's options on an accepted connection: those the listener
/// did not pass on (a Unix socket's connections inherit none of them),
/// and TCP_NODELAY and keepalive when asked for (nothing at all by
/// default on Linux).
pub fn set_connection_options(
    socket: &Socket,
    options: &SocketOptions,
    transport: Transport,
) -> io::Result<()> {
    if !platform::LISTENER_OPTIONS_INHERITED || transport == Transport::Unix {
        set_inherited_options(socket, options)?;
    }
    if options.nodelay {
        socket.set_tcp_nodelay(true)?;
    }
    if let Some(idle) = options.keepalive {
        socket.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))?;
    }
    Ok(())
}

/// The address to show for a peer or local end: IPv4 clients of a
/// dual-stack socket appear as `::ffff:a.b.c.d`; show them as `a.b.c.d`.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ipv4_is_shown_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:127.0.0.2]:4000".parse().expect("valid");
        assert_eq!(canonical(mapped).to_string(), "127.0.0.2:4000");
        let v6: SocketAddr = "[::1]:4000".parse().expect("valid");
        assert_eq!(canonical(v6).to_string(), "[::1]:4000");
    }
}
