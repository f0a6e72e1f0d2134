//! Stage 3, spawn: start the service's program on an accepted connection.
//!
//! What does not change from one connection to the next (program, argv, the
//! environment, the identity) is built once per service at load
//! ([`prepare`]); a connection adds only its addresses ([`ClientEnv`]).
//! The environment is the child's own: the daemon's is never modified (the
//! original set `CLIENT_IP` in its own environment, so concurrent clients
//! raced).

use std::ffi::OsString;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;

use crate::config::Service;
use crate::platform::{self, ChildSpec};

/// The variables a connection adds: the original's `CLIENT_IP` and
/// `CLIENT_PORT`, and the UCSPI-TCP set that tcpserver programs expect.
pub const CLIENT_VARIABLES: [&str; 7] = [
    "CLIENT_IP",
    "CLIENT_PORT",
    "PROTO",
    "TCPREMOTEIP",
    "TCPREMOTEPORT",
    "TCPLOCALIP",
    "TCPLOCALPORT",
];

/// Builds what is fixed about `service`'s children. `daemon_env` is the
/// daemon's environment at start; the service's `env` and its user's
/// variables override it, and the per-connection variables override all.
pub fn prepare(service: &Service, daemon_env: &[(OsString, OsString)]) -> ChildSpec {
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
    let overridden = |key: &OsString| {
        CLIENT_VARIABLES.iter().any(|v| key == v)
            || platform::PRIVATE_VARIABLES.iter().any(|v| key == v)
            || added.iter().any(|(k, _)| k == key)
    };
    let mut env: Vec<(OsString, OsString)> = daemon_env
        .iter()
        .filter(|(k, _)| !overridden(k))
        .cloned()
        .collect();
    let client = |key: &OsString| CLIENT_VARIABLES.iter().any(|v| key == v);
    env.extend(added.iter().filter(|(k, _)| !client(k)).cloned());
    ChildSpec::new(service, env)
}

/// The per-connection variables, formatted on the stack: a connection
/// costs the daemon no allocation for them. Addresses are canonical (IPv4
/// clients as `a.b.c.d`, not `::ffff:a.b.c.d`).
#[derive(Debug)]
pub struct ClientEnv {
    peer_ip: Field,
    peer_port: Field,
    local_ip: Field,
    local_port: Field,
}

impl ClientEnv {
    pub fn new(peer: SocketAddr, local: SocketAddr) -> Self {
        Self {
            peer_ip: Field::new(peer.ip()),
            peer_port: Field::new(peer.port()),
            local_ip: Field::new(local.ip()),
            local_port: Field::new(local.port()),
        }
    }

    /// Each of [`CLIENT_VARIABLES`] with its value, in that order.
    pub fn vars(&self) -> [(&'static str, &str); 7] {
        [
            (CLIENT_VARIABLES[0], self.peer_ip.as_str()),
            (CLIENT_VARIABLES[1], self.peer_port.as_str()),
            (CLIENT_VARIABLES[2], "TCP"),
            (CLIENT_VARIABLES[3], self.peer_ip.as_str()),
            (CLIENT_VARIABLES[4], self.peer_port.as_str()),
            (CLIENT_VARIABLES[5], self.local_ip.as_str()),
            (CLIENT_VARIABLES[6], self.local_port.as_str()),
        ]
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
        let spec = prepare(
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
        assert_eq!(spec.env(), expected);
    }

    #[test]
    fn client_variables() {
        let env = ClientEnv::new(
            "[::1]:4000".parse().expect("valid"),
            "[::1]:7".parse().expect("valid"),
        );
        assert_eq!(
            env.vars(),
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
    fn the_longest_addresses_fit() {
        let longest = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let peer = SocketAddr::new(longest.parse().expect("valid"), 65535);
        let local = SocketAddr::new("255.255.255.255".parse().expect("valid"), 65535);
        let env = ClientEnv::new(peer, local);
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
