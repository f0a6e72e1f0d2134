//! The per-service options, each declared once: the `options!` table at
//! the foot of this file.
//!
//! An entry says all there is to an option in the file: its key (also its
//! field in [`Options`]), its type, the walker's method that reads and
//! checks its value (with its range from [`bounds`]), where it may be
//! written, and, when a service's value is not simply preferred to
//! `[defaults]`', how the two combine. From the table come the [`Options`]
//! struct, the key list that "unknown key" and "did you mean" use, the arm
//! that reads the key (its problems reported at line and column like every
//! other), and the inheritance from `[defaults]`. What an option does, and
//! its value when no file sets it, are where it is used:
//! `config::resolve` builds the [`Service`](crate::config::Service) from
//! it. A test checks that the README's field table and
//! `examples/wininetd.toml` name every key, and no other.
//!
//! Adding an option: an entry in the table; a method in `values` if its
//! value is of a kind no method reads yet; its use in `resolve::build`;
//! a row in the README's table and an example in `examples/wininetd.toml`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{Value, Walker};
use crate::config::{Account, IpNet, Protocol, ProxyVersions, Rate, StderrMode, StdioMode, bounds};

/// A key of a `[[service]]`, and where else it may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Key {
    pub name: &'static str,
    pub scope: Scope,
}

impl Key {
    pub(super) const fn service_only(name: &'static str) -> Self {
        Self {
            name,
            scope: Scope::ServiceOnly,
        }
    }
}

/// Where a key of a service may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// Only in each `[[service]]`.
    ServiceOnly,
    /// In a `[[service]]`, or in `[defaults]` for every service.
    ServiceOrDefaults,
}

/// Makes, from one entry per option,
///
/// ```text
/// /// DOC
/// KEY: TYPE = METHOD(ARGS) in SCOPE [, merged by MERGE];
/// ```
///
/// the field `KEY: Option<TYPE>` of [`Options`] (with the entry's doc), its
/// [`Key`] in [`OPTIONS`], the arm of [`Walker::option`] that reads it with
/// `walker.METHOD("KEY", value, ARGS)`, and its line of
/// [`Options::inherit`]: the service's value if it has one, else the
/// default's, or `MERGE(own, default)`.
macro_rules! options {
    ($(
        $(#[doc = $doc:literal])*
        $key:ident: $type:ty = $method:ident($($arg:expr),*) in $scope:ident
            $(, merged by $merge:ident)?;
    )*) => {
        /// The per-service options a file set; `None` is "not said". Only
        /// the TOML format has them.
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct Options {
            $($(#[doc = $doc])* pub $key: Option<$type>,)*
        }

        /// Every option, in the order declared.
        pub(super) const OPTIONS: &[Key] = &[
            $(Key { name: stringify!($key), scope: Scope::$scope },)*
        ];

        impl Walker<'_> {
            /// Reads option `key` into `options`; false if no option has
            /// that key.
            pub(super) fn option(
                &mut self,
                options: &mut Options,
                key: &str,
                value: &Value<'_>,
            ) -> bool {
                match key {
                    $(stringify!($key) => {
                        options.$key = self.$method(stringify!($key), value $(, $arg)*);
                    })*
                    _ => return false,
                }
                true
            }
        }

        impl Options {
            /// A service's options: its own, and `defaults`' for what it
            /// does not set.
            pub(super) fn inherit(self, defaults: &Options) -> Options {
                let defaults = defaults.clone();
                Options {
                    $($key: options!(@inherit self.$key, defaults.$key $(, $merge)?),)*
                }
            }

            /// Forgets option `key`: a value `[defaults]` gave a service
            /// for which it means nothing.
            pub(super) fn clear(&mut self, key: &str) {
                match key {
                    $(stringify!($key) => self.$key = None,)*
                    _ => {}
                }
            }
        }
    };
    (@inherit $own:expr, $default:expr) => {
        $own.or($default)
    };
    (@inherit $own:expr, $default:expr, $merge:ident) => {
        $merge($own, $default)
    };
}

// In this order in the key lists: of two keys equally near a typo, "did you
// mean" names the first.
options! {
    /// The transport: TCP (the default) or UDP.
    protocol: Protocol = choice(&[("tcp", Protocol::Tcp), ("udp", Protocol::Udp)]) in ServiceOnly;

    /// Wait mode: the program gets the listening socket itself. Default:
    /// off, on for a UDP service with a command.
    wait: bool = boolean() in ServiceOnly;

    /// Variables added to the program's environment, sorted by name. A
    /// service's own are merged with `[defaults]`' by name (its value wins).
    env: Vec<(String, String)> = env() in ServiceOrDefaults, merged by merge_env;

    /// The program's working directory, absolute. Default: the daemon's.
    working_dir: PathBuf = absolute_path() in ServiceOrDefaults;

    /// How the program's standard handles reach the connection. Default:
    /// `--stdio`, else the socket.
    stdio: StdioMode = choice(&[("socket", StdioMode::Socket), ("pipe", StdioMode::Pipe)])
        in ServiceOrDefaults;

    /// Where the program's stderr goes. Default: the connection.
    stderr: StderrMode = choice(&[("socket", StderrMode::Socket), ("log", StderrMode::Log)])
        in ServiceOrDefaults;

    /// Seconds a read or write on the connection may block; 0 is none.
    /// Default: `--timeout`.
    timeout: u64 = within(bounds::TIMEOUT_SECS) in ServiceOrDefaults;

    /// Seconds a close lingers to send what is left; 0 is none. Default:
    /// `--linger-timeout`.
    linger_timeout: u64 = within(bounds::LINGER_SECS) in ServiceOrDefaults;

    /// Seconds of idle time before TCP keepalive probes; 0 (the default)
    /// is off.
    keepalive: u64 = within(bounds::KEEPALIVE_SECS) in ServiceOrDefaults;

    /// Seconds a session may last. Default: no limit.
    max_lifetime: u64 = within(bounds::LIFETIME_SECS) in ServiceOrDefaults;

    /// The listen backlog. Default: [`DEFAULT_BACKLOG`](crate::config::DEFAULT_BACKLOG).
    backlog: u32 = within(bounds::BACKLOG) in ServiceOrDefaults;

    /// TCP_NODELAY on each connection. Default: off.
    nodelay: bool = boolean() in ServiceOrDefaults;

    /// Sessions of this service at once. Default: no cap of its own.
    max_sessions: usize = within(bounds::SESSIONS) in ServiceOrDefaults;

    /// Sessions from one source at once. Default: no cap.
    max_per_source: usize = within(bounds::SESSIONS) in ServiceOrDefaults;

    /// New sessions of this service. Default: no limit.
    rate: Rate = rate() in ServiceOrDefaults;

    /// New sessions from one source. Default: no limit.
    rate_per_source: Rate = rate() in ServiceOrDefaults;

    /// Who may connect; empty or unset is everyone not denied.
    allow: Vec<IpNet> = networks() in ServiceOrDefaults;

    /// Who may not connect.
    deny: Vec<IpNet> = networks() in ServiceOrDefaults;

    /// A Unix socket's clients by effective user: empty or unset is
    /// everyone (`allow_gid` may still let them in).
    allow_uid: Vec<Account> = accounts() in ServiceOrDefaults;

    /// A Unix socket's clients by effective group.
    allow_gid: Vec<Account> = accounts() in ServiceOrDefaults;

    /// A Unix socket file's permission bits, in octal. Default:
    /// [`DEFAULT_SOCKET_MODE`](crate::config::DEFAULT_SOCKET_MODE).
    socket_mode: u32 = octal_mode() in ServiceOnly;

    /// A Unix socket file's owner. Default: the daemon's user.
    socket_owner: Account = account() in ServiceOnly;

    /// A Unix socket file's group. Default: the daemon's group.
    socket_group: Account = account() in ServiceOnly;

    /// IPv6 sources are grouped by this prefix length for the per-source
    /// limits. Default: [`DEFAULT_SOURCE_PREFIX_V6`](crate::config::DEFAULT_SOURCE_PREFIX_V6).
    source_prefix_v6: u8 = within(bounds::SOURCE_PREFIX_V6) in ServiceOrDefaults;

    /// Sent to a refused client before the connection is closed.
    reject_message: String = text() in ServiceOrDefaults;

    /// Each connection starts with a PROXY protocol header of this version.
    /// Default: none.
    proxy_protocol: ProxyVersions = choice(&[
        ("v1", ProxyVersions::V1),
        ("v2", ProxyVersions::V2),
        ("any", ProxyVersions::Any),
    ]) in ServiceOrDefaults;

    /// The proxies whose connections are taken (required with
    /// `proxy_protocol`).
    trusted_proxies: Vec<IpNet> = networks() in ServiceOrDefaults;

    /// TLS termination: the daemon does the handshake and relays plaintext
    /// to the program's pipes. Default: none.
    tls: crate::config::Placed<crate::tls::Files> = tls() in ServiceOrDefaults;

    /// Seconds a client has to finish its TLS handshake. Default:
    /// [`DEFAULT_TLS_TIMEOUT`](crate::config::DEFAULT_TLS_TIMEOUT).
    tls_timeout: u64 = within(bounds::TLS_TIMEOUT_SECS) in ServiceOrDefaults;

    /// Seconds a proxy has to send its header. Default:
    /// [`DEFAULT_PROXY_TIMEOUT`](crate::config::DEFAULT_PROXY_TIMEOUT).
    proxy_timeout: u64 = within(bounds::PROXY_TIMEOUT_SECS) in ServiceOrDefaults;
}

/// `env`: the default's variables, and the service's own over them.
fn merge_env(
    own: Option<Vec<(String, String)>>,
    default: Option<Vec<(String, String)>>,
) -> Option<Vec<(String, String)>> {
    match (own, default) {
        (Some(own), Some(default)) => {
            let mut merged: BTreeMap<String, String> = default.into_iter().collect();
            merged.extend(own);
            Some(merged.into_iter().collect())
        }
        (own, default) => own.or(default),
    }
}
