//! Who is at either end of a connection: the client ([`Peer`]), as the
//! admission rules, the logs and the program's environment see it, and the
//! daemon's own end ([`Local`]).
//!
//! An IP client is its address and port; a Unix socket client has no
//! address (its socket is usually unnamed) but the kernel records who
//! connected: its effective user and group IDs and, where the system says,
//! its pid ([`Credentials`]). Both print as one word with no space, so
//! that a text log line keeps `peer=...` one token and a JSON line one
//! string: `192.0.2.7:51000`, `[2001:db8::1]:51000`,
//! `uid:1000,gid:1000,pid:4242`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The client of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A TCP client: its address and port.
    Ip(SocketAddr),
    /// A Unix socket client: the credentials the kernel recorded when it
    /// connected (SO_PEERCRED, LOCAL_PEERCRED).
    Unix(Credentials),
    /// Not known to the daemon: a stream wait service's program accepts its
    /// clients itself. Shown as `-`.
    Unknown,
}

/// Who connected to a Unix socket, as the kernel recorded it at
/// `connect(2)`: what the client process was then, not what it may have
/// become since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    /// Effective user ID.
    pub uid: u32,
    /// Effective group ID.
    pub gid: u32,
    /// Process ID, where the system records it.
    pub pid: Option<u32>,
}

impl Peer {
    /// The peer as it is shown and matched: an IPv4 client of a dual-stack
    /// socket (`::ffff:a.b.c.d`) as the IPv4 address it is.
    pub fn canonical(self) -> Self {
        match self {
            Self::Ip(addr) => Self::Ip(SocketAddr::new(addr.ip().to_canonical(), addr.port())),
            other => other,
        }
    }

    /// The client's IP address, if it has one.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Self::Ip(addr) => Some(addr.ip()),
            Self::Unix(_) | Self::Unknown => None,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(addr) => addr.fmt(f),
            Self::Unix(credentials) => credentials.fmt(f),
            Self::Unknown => f.write_str("-"),
        }
    }
}

impl fmt::Display for Credentials {
    /// `uid:U,gid:G,pid:P`, without `pid` where it is not known.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "uid:{},gid:{}", self.uid, self.gid)?;
        match self.pid {
            Some(pid) => write!(f, ",pid:{pid}"),
            None => Ok(()),
        }
    }
}

/// The daemon's end of a connection, or what a listener listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    /// An IP address and port.
    Ip(SocketAddr),
    /// A Unix socket's path.
    Unix(Arc<str>),
}

impl Local {
    /// The port, for an IP end.
    pub fn port(&self) -> Option<u16> {
        match self {
            Self::Ip(addr) => Some(addr.port()),
            Self::Unix(_) => None,
        }
    }
}

impl fmt::Display for Local {
    /// An address as `ADDR:PORT`, a path as the config writes it,
    /// `unix:PATH`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(addr) => addr.fmt(f),
            Self::Unix(path) => write!(f, "unix:{path}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_print_as_one_word() {
        let ip = Peer::Ip("[::ffff:127.0.0.2]:4000".parse().expect("valid"));
        assert_eq!(ip.canonical().to_string(), "127.0.0.2:4000");
        let v6 = Peer::Ip("[::1]:4000".parse().expect("valid"));
        assert_eq!(v6.canonical().to_string(), "[::1]:4000");
        let unix = Peer::Unix(Credentials {
            uid: 1000,
            gid: 100,
            pid: Some(4242),
        });
        assert_eq!(unix.canonical().to_string(), "uid:1000,gid:100,pid:4242");
        let no_pid = Peer::Unix(Credentials {
            uid: 0,
            gid: 0,
            pid: None,
        });
        assert_eq!(no_pid.to_string(), "uid:0,gid:0");
        assert_eq!(no_pid.ip(), None);
    }

    #[test]
    fn local_ends_print_as_the_config_writes_them() {
        let path = Local::Unix("/run/x.sock".into());
        assert_eq!(path.to_string(), "unix:/run/x.sock");
        assert_eq!(path.port(), None);
        let ip = Local::Ip("127.0.0.1:7".parse().expect("valid"));
        assert_eq!(ip.to_string(), "127.0.0.1:7");
        assert_eq!(ip.port(), Some(7));
    }
}
