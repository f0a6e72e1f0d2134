//! The one place where operating systems differ.
//!
//! Everything outside this module is portable: it uses no `cfg(unix)` or
//! `cfg(windows)`, no OS crate and no `unsafe`. Each OS module provides the
//! same items:
//!
//! - users: [`Identity`], [`lookup_user`], [`can_switch_users`],
//!   [`USES_PASSWORDS`];
//! - programs: [`split_command_line`], [`executable_candidates`],
//!   [`is_executable`], [`DEFAULT_CONFIG`];
//! - sockets: [`Listener`] (an accept loop's socket), [`WaitSocket`] (a
//!   wait service's, watched while no program holds it), [`udp_socket`],
//!   [`LISTENER_OPTIONS_INHERITED`];
//! - children: [`spawn`] a program on an accepted socket ([`SPAWN_BLOCKS`]:
//!   whether it blocks, so the server runs it on the blocking pool),
//!   [`Child`] (wait, signal its whole tree, and `start_error`: a start
//!   that failed after `spawn` returned), the [`Reaper`] that sees every
//!   child's exit, [`ExitStatus`] formatting; in `stdio = "pipe"` mode
//!   the relay between the connection and the child's pipes;
//! - the process: [`init_process`], [`descriptor_limit`], [`shutdown_signal`], [`notify_ready`],
//!   the system log ([`SystemLog`]) and service installation;
//! - the daemon as others find it: its pid file ([`PidFile`],
//!   [`default_pidfile`]), which the Unix `--reload` reads;
//! - the words of `--help` where the OSes differ ([`help`]).
//!
//! The pid file and the help texts keep both OSes' halves in one file
//! each, beside this one.

pub mod help;
mod pidfile;
pub mod relay;

pub use pidfile::{PidFile, default_pidfile};

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// How long sessions get between SIGTERM and SIGKILL when the daemon
/// stops, unless `--shutdown-grace` says otherwise. Here because the
/// service manager's own stop timeout (the systemd unit's) is built on it.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u32 = 5;

/// What to run for a service's sessions: plain data, built once per
/// service by the start stage; each OS turns it into its [`ChildSpec`]
/// (what can be made ready before any connection comes).
#[derive(Debug, Clone)]
pub struct Program {
    /// The program's path, resolved at load.
    pub path: PathBuf,
    /// Its arguments, after the program itself.
    pub args: Vec<OsString>,
    /// The command line as written in the config: Windows hands it to the
    /// program as it is, as WinInetd did.
    pub command_line: String,
    /// The complete environment apart from the per-connection variables.
    pub env: Vec<(OsString, OsString)>,
    /// The service's own `env`: on Windows a program run as another user
    /// gets that user's environment with these on top (the daemon's does
    /// not reach it).
    pub service_env: Vec<(OsString, OsString)>,
    pub user: Option<Identity>,
    pub working_dir: Option<PathBuf>,
    /// Send stderr to a pipe the daemon logs, instead of the connection.
    pub stderr_to_log: bool,
    /// A wait service's name for its socket: on Unix the program also
    /// finds the socket as fd 3, with `LISTEN_FDS=1`, `LISTEN_PID` (its
    /// own pid) and `LISTEN_FDNAMES` set to this (sd_listen_fds(3)), so
    /// that programs written for socket activation can be served. Windows
    /// passes the socket as the standard handles only.
    pub listen_fd_name: Option<String>,
}

/// `--auto-start` or `--demand-start`: how Windows starts the installed
/// service. Neither keeps the start type of a service already installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartType {
    /// With Windows.
    Auto,
    /// When asked (`net start`), as WinInetd's service did.
    Demand,
}

/// What becomes a program's standard input and output (and its error,
/// unless that goes to the log).
#[derive(Debug)]
pub enum ChildStdio {
    /// The connection itself (socket mode: the daemon is not in the data
    /// path).
    Socket(socket2::Socket),
    /// The program's ends of a [`Relay`]'s pipes.
    Relayed(ChildEnds),
    /// A wait service's listening or bound socket ([`WaitSocket`]): the
    /// program takes it over while the daemon keeps its own copy, to watch
    /// it again once the program has exited.
    Shared(std::sync::Arc<socket2::Socket>),
}

/// The first datagram waiting on a wait service's socket, as a peek shows
/// it ([`WaitSocket::peek`]): enough to tell, once a program has ended,
/// whether the same datagram is still first (the program never read it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    pub source: std::net::SocketAddr,
    pub len: usize,
    /// FNV-1a of its first bytes: a retransmission of the same request is
    /// still taken for the same datagram, which costs one short pause.
    digest: u64,
}

impl Datagram {
    /// What a peek with `recv_from` into `buffer` gave: the first datagram,
    /// `None` when none was waiting, or the error.
    fn peeked(
        received: std::io::Result<(usize, socket2::SockAddr)>,
        buffer: &[std::mem::MaybeUninit<u8>],
    ) -> std::io::Result<Option<Self>> {
        match received {
            Ok((len, source)) => {
                let source = source.as_socket().ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "a datagram from a non-IP address",
                    )
                })?;
                // SAFETY: the receive wrote the first `len` bytes (a
                // datagram longer than the buffer is cut to it).
                let bytes = unsafe {
                    std::slice::from_raw_parts(buffer.as_ptr().cast::<u8>(), len.min(buffer.len()))
                };
                Ok(Some(Self::new(source, bytes)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// How many of its first bytes the digest covers: a request's kind and
    /// what it names.
    const DIGESTED: usize = 512;

    pub fn new(source: std::net::SocketAddr, bytes: &[u8]) -> Self {
        let digest = bytes
            .iter()
            .take(Self::DIGESTED)
            .fold(0xcbf2_9ce4_8422_2325_u64, |hash, &byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
            });
        Self {
            source,
            len: bytes.len(),
            digest,
        }
    }
}

/// What `request_reload` runs before it asks the daemon to reload: `main`'s
/// check of the config the daemon will read, given the daemon's parameters
/// (without the program name) and working directory when the OS shows them.
/// An error stops the reload request.
pub type ReloadCheck<'a> =
    dyn FnMut(Option<&[OsString]>, Option<&Path>) -> Result<(), crate::Error> + 'a;

/// `--log-sessions`, for the system log's writer (see [`set_log_sessions`]).
static LOG_SESSIONS: AtomicBool = AtomicBool::new(false);

/// `--log-sessions`: whether each session's start and end go to the system
/// log. The Windows Event Log takes them only when asked (WinInetd sent
/// only errors, and two events per connection rotate other programs'
/// events out); on Unix every line goes to the journal or syslog, as under
/// inetd, and this changes nothing. Set once, before logging starts.
pub fn set_log_sessions(on: bool) {
    LOG_SESSIONS.store(on, Ordering::Relaxed);
}

/// What [`set_log_sessions`] set.
#[cfg_attr(unix, allow(dead_code))]
pub(crate) fn log_sessions() -> bool {
    LOG_SESSIONS.load(Ordering::Relaxed)
}

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;
