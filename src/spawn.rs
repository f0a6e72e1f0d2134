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

use crate::cli::Settings;
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
/// daemon's environment at load.
pub fn prepare(
    service: &Service,
    daemon_env: &[(OsString, OsString)],
    settings: &Settings,
) -> ChildSpec {
    let user_env = service.user.as_ref().map(platform::user_environment);
    let overridden = |key: &OsString| {
        CLIENT_VARIABLES.iter().any(|v| key == v)
            || platform::PRIVATE_VARIABLES.iter().any(|v| key == v)
            || user_env
                .as_ref()
                .is_some_and(|env| env.iter().any(|(k, _)| k == key))
    };
    let mut env: Vec<(OsString, OsString)> = daemon_env
        .iter()
        .filter(|(k, _)| !overridden(k))
        .cloned()
        .collect();
    env.extend(user_env.into_iter().flatten());
    ChildSpec::new(service, env, settings)
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
    use clap::Parser;
    use std::path::PathBuf;

    fn service() -> Service {
        Service {
            line: 1,
            port: 7,
            cmdline: "/bin/cat".into(),
            program: PathBuf::from("/bin/cat"),
            args: vec![],
            user: None,
        }
    }

    #[test]
    fn daemon_values_of_client_and_private_variables_are_dropped() {
        let daemon_env: Vec<(OsString, OsString)> = [
            ("PATH", "/bin"),
            ("CLIENT_IP", "6.6.6.6"),
            ("NOTIFY_SOCKET", "/run/x"),
            ("TCPLOCALPORT", "1"),
        ]
        .iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect();
        let settings = crate::cli::Cli::try_parse_from(["wininetd"])
            .expect("valid")
            .settings();
        let spec = prepare(&service(), &daemon_env, &settings);
        let mut expected = vec![(OsString::from("PATH"), OsString::from("/bin"))];
        if !platform::PRIVATE_VARIABLES.contains(&"NOTIFY_SOCKET") {
            expected.push(("NOTIFY_SOCKET".into(), "/run/x".into()));
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
