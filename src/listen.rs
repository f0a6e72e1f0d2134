//! Stage 1, listen: bind each service's port and accept its connections.
//!
//! A port is bound once, on every IPv6 and IPv4 address through one
//! dual-stack socket, or on IPv4 alone where the host has no IPv6. This
//! module owns the listening socket's options; what happens to an accepted
//! connection is the business of the next stages.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Socket};

use crate::cli::Settings;
use crate::platform;

/// Pending connections the kernel may queue per port (capped by the system,
/// e.g. `net.core.somaxconn`). Large, so that a burst waits rather than being
/// refused while the daemon is at its session cap.
const BACKLOG: i32 = 4096;

/// Binds `port` on all addresses and starts listening.
pub fn bind(port: u16, settings: &Settings) -> io::Result<Socket> {
    let socket = match bind_addr(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)), settings) {
        Err(e) if no_ipv6(&e) => {
            bind_addr(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)), settings)?
        }
        result => result?,
    };
    socket.listen(BACKLOG)?;
    Ok(socket)
}

/// The errors that mean "this host has no IPv6", as opposed to a port
/// problem.
fn no_ipv6(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::AddrNotAvailable || platform::is_family_unsupported(e)
}

fn bind_addr(addr: SocketAddr, settings: &Settings) -> io::Result<Socket> {
    let socket = platform::tcp_socket(Domain::for_address(addr), settings.stdio)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    platform::configure_listener(&socket)?;
    if platform::LISTENER_OPTIONS_INHERITED {
        set_connection_options(&socket, settings)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// `--timeout` and `--linger-timeout`, on an accepted socket (or on the
/// listener, where accepted sockets inherit them).
pub fn set_connection_options(socket: &Socket, settings: &Settings) -> io::Result<()> {
    if let Some(timeout) = settings.timeout {
        socket.set_read_timeout(Some(timeout))?;
        socket.set_write_timeout(Some(timeout))?;
    }
    socket.set_linger(settings.linger)?;
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
