//! Stage 1, listen: bind a service's listen addresses and set the options of
//! the connections they accept.
//!
//! A bare port is bound once on every IPv6 and IPv4 address through one
//! dual-stack socket, or on IPv4 alone where the host has no IPv6; an
//! explicit address is bound as given. This module owns the sockets'
//! options; what happens to an accepted connection is the business of the
//! next stages.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Socket, TcpKeepalive};
use tracing::{debug, error, info, warn};

use crate::config::{IpListen, ListenAddr, Service, SocketOptions, StdioMode, Transport};
use crate::platform::{self, Listener};

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
    /// The listener's address when it is not a wildcard: then every
    /// connection has it as its local address, with no getsockname.
    bound: Option<SocketAddr>,
    backoff: Duration,
    failing: bool,
}

impl Acceptor {
    pub fn new(listener: Listener, transport: Transport) -> Self {
        let bound = listener
            .local_addr()
            .ok()
            .filter(|a| !a.ip().is_unspecified())
            .map(canonical);
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
    pub fn bound(&self) -> Option<SocketAddr> {
        self.bound
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
    pub async fn accept(&mut self, service: &str) -> Option<(Socket, SocketAddr)> {
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

/// Binds `addr` for `service` and starts listening.
pub fn bind(addr: &ListenAddr, service: &Service) -> io::Result<Socket> {
    match addr {
        ListenAddr::Tcp(ip) => bind_tcp(*ip, &service.socket, service.stdio),
        ListenAddr::Udp(ip) => bind_udp(*ip, service.wait),
        ListenAddr::Unix(_) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "Unix sockets are not served yet",
        )),
    }
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
/// did not pass on, and TCP_NODELAY and keepalive when asked for (nothing
/// at all by default on Linux).
pub fn set_connection_options(socket: &Socket, options: &SocketOptions) -> io::Result<()> {
    if !platform::LISTENER_OPTIONS_INHERITED {
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
