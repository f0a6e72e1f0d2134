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

use socket2::{Domain, Socket, TcpKeepalive};

use crate::config::StdioMode;
use crate::config::{ListenAddr, SocketOptions};
use crate::platform;

/// Binds `addr` and starts listening.
pub fn bind(addr: ListenAddr, options: &SocketOptions, stdio: StdioMode) -> io::Result<Socket> {
    let socket = match addr {
        ListenAddr::Any(port) => {
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
        ListenAddr::At(addr) => bind_addr(addr, true, options, stdio)?,
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
    let socket = platform::tcp_socket(Domain::for_address(addr), stdio)?;
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
