//! Stage 3, spawn: start the service's program on an accepted connection.
//!
//! What does not change from one connection to the next (program, argv, the
//! environment, the identity) is built once per service at load
//! ([`prepare`]); a connection adds only its addresses ([`client_env`]).
//! The environment is the child's own: the daemon's is never modified (the
//! original set `CLIENT_IP` in its own environment, so concurrent clients
//! raced).

use std::ffi::OsString;
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

/// The per-connection variables. Addresses are canonical (IPv4 clients as
/// `a.b.c.d`, not `::ffff:a.b.c.d`).
pub fn client_env(peer: SocketAddr, local: SocketAddr) -> [(&'static str, String); 7] {
    let peer_ip = peer.ip().to_string();
    let peer_port = peer.port().to_string();
    [
        (CLIENT_VARIABLES[0], peer_ip.clone()),
        (CLIENT_VARIABLES[1], peer_port.clone()),
        (CLIENT_VARIABLES[2], "TCP".to_owned()),
        (CLIENT_VARIABLES[3], peer_ip),
        (CLIENT_VARIABLES[4], peer_port),
        (CLIENT_VARIABLES[5], local.ip().to_string()),
        (CLIENT_VARIABLES[6], local.port().to_string()),
    ]
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
            stdio: crate::cli::StdioMode::Socket,
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
        let env = client_env(
            "[::1]:4000".parse().expect("valid"),
            "[::1]:7".parse().expect("valid"),
        );
        assert_eq!(env[0], ("CLIENT_IP", "::1".to_owned()));
        assert_eq!(env[1], ("CLIENT_PORT", "4000".to_owned()));
        assert_eq!(env[2], ("PROTO", "TCP".to_owned()));
        assert_eq!(env[6], ("TCPLOCALPORT", "7".to_owned()));
    }
}
