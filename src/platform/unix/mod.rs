//! Unix: POSIX users and groups, process groups, signals, syslog, systemd.

#![allow(unsafe_code)]

#[cfg(target_os = "linux")]
mod clone;
mod install;
mod local_socket;
mod process;
#[cfg(target_os = "linux")]
mod reaper;
#[cfg(target_os = "linux")]
mod signals;
#[cfg(target_os = "linux")]
mod splice;
mod wait;

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Gid, Pid, Uid, User};
use socket2::Socket;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::peer::{Local, Peer};
use crate::secret::Secret;

pub use install::{InstallError, InstallSpec, install, remove, request_reload};
pub use local_socket::{
    FileId, PathKind, local_address, path_kind, remove_socket_file, set_socket_file_mode,
    socket_file_id,
};

/// Where the daemon looks for its config when `--cfgfile` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/wininetd.conf";

/// [`DEFAULT_CONFIG`] as a path.
pub fn default_config_path() -> PathBuf {
    PathBuf::from(DEFAULT_CONFIG)
}

/// Unix switches users without their password.
pub const USES_PASSWORDS: bool = false;

/// Linux copies a listening socket's options (SO_LINGER, SO_RCVTIMEO,
/// SO_SNDTIMEO) to the sockets `accept` returns, so they are set once on the
/// listener instead of on every connection. Other systems get them per
/// connection.
pub const LISTENER_OPTIONS_INHERITED: bool = cfg!(any(target_os = "linux", target_os = "android"));

// ---------------------------------------------------------------- users --

/// An account to run a service's program as, resolved at load so that the
/// accept path does no lookup.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub name: String,
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
    home: PathBuf,
}

/// Why a user cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("unknown user {0:?}")]
    Unknown(String),
    #[error("unknown group {0:?}")]
    UnknownGroup(String),
    #[error("user name {0:?} contains a NUL byte")]
    Nul(String),
    #[error("cannot look up user {name:?}")]
    Lookup {
        name: String,
        #[source]
        source: nix::Error,
    },
}

/// Looks up `name` in the user database with its supplementary groups;
/// `group`, if given, replaces its primary group. The password is not
/// needed on Unix.
pub fn lookup_user(
    name: &str,
    group: Option<&str>,
    _password: Option<&Secret>,
) -> Result<Identity, UserError> {
    let lookup = |source| UserError::Lookup {
        name: name.to_owned(),
        source,
    };
    let mut user = User::from_name(name)
        .map_err(lookup)?
        .ok_or_else(|| UserError::Unknown(name.to_owned()))?;
    if let Some(group) = group {
        user.gid = nix::unistd::Group::from_name(group)
            .map_err(lookup)?
            .ok_or_else(|| UserError::UnknownGroup(group.to_owned()))?
            .gid;
    }
    let cname = CString::new(name).map_err(|_| UserError::Nul(name.to_owned()))?;
    let groups = nix::unistd::getgrouplist(&cname, user.gid).map_err(lookup)?;
    Ok(Identity {
        name: user.name,
        uid: user.uid,
        gid: user.gid,
        groups,
        home: user.dir,
    })
}

/// Unix domain sockets can be listened on.
pub const UNIX_SOCKETS: bool = true;

/// The ID of the user (or, with `group`, the group) named `name`.
pub fn account_id(name: &str, group: bool) -> Result<u32, String> {
    let found = if group {
        nix::unistd::Group::from_name(name).map(|g| g.map(|g| g.gid.as_raw()))
    } else {
        User::from_name(name).map(|u| u.map(|u| u.uid.as_raw()))
    };
    let what = if group { "group" } else { "user" };
    match found {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err(format!("unknown {what} {name:?}")),
        Err(e) => Err(format!("cannot look up {what} {name:?}: {e}")),
    }
}

/// The permission bits of the file at `path` when its group or others may
/// read it (a private key should be its owner's alone).
pub fn readable_by_others(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o044 != 0).then_some(mode)
}

/// Only root can start programs as another user.
pub fn can_switch_users() -> bool {
    Uid::effective().is_root()
}

// ------------------------------------------------------------- programs --

/// Splits a command line into argv the way a POSIX shell would (quotes and
/// backslashes), without running a shell.
pub fn split_command_line(cmdline: &str) -> Result<Vec<String>, String> {
    shlex::split(cmdline)
        .ok_or_else(|| "unterminated quote or trailing backslash in the command line".to_owned())
}

/// The files a bare program name may be in `dir`.
pub fn executable_candidates(dir: &Path, name: &str) -> impl Iterator<Item = PathBuf> + use<> {
    std::iter::once(dir.join(name))
}

/// A regular file with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

// -------------------------------------------------------------- sockets --

/// A new TCP socket, close-on-exec. Whether the daemon relays its
/// connections (`relayed`) matters only on Windows.
pub fn tcp_socket(domain: socket2::Domain, _relayed: bool) -> io::Result<Socket> {
    Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))
}

/// A new UDP socket, close-on-exec. Whether a program takes it over (a
/// wait service's) matters only on Windows.
pub fn udp_socket(domain: socket2::Domain, _handed_over: bool) -> io::Result<Socket> {
    Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))
}

pub use wait::WaitSocket;

/// Whether a listener made for connections the daemon relays (or hands
/// over) serves the other kind too: always on Unix, where it is the same
/// socket.
pub fn same_listener(_relayed_before: bool, _relayed_now: bool) -> bool {
    true
}

/// SO_RCVTIMEO and SO_SNDTIMEO hold on a socket a program reads and
/// writes itself.
pub const SOCKET_TIMEOUTS_APPLY: bool = true;

/// Options every listening socket gets before `bind`: SO_REUSEADDR, so a
/// restart is not refused while old connections are in TIME_WAIT (on Unix
/// it does not let another process take a port that is in use).
pub fn configure_listener(socket: &Socket) -> io::Result<()> {
    socket.set_reuse_address(true)
}

/// The error `socket()` gives for an address family the host lacks.
pub fn is_family_unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EAFNOSUPPORT)
}

/// A bound, listening socket registered with the runtime.
#[derive(Debug)]
pub struct Listener {
    socket: AsyncFd<Socket>,
}

impl Listener {
    /// Takes a socket that is already bound and listening.
    pub fn new(socket: Socket) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        // SAFETY: a `socket2::Socket` owns its descriptor and returns the
        // same one from `as_raw_fd` until it is dropped, which only happens
        // with the `AsyncFd`.
        let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Self { socket })
    }

    /// Waits until a connection is pending.
    pub async fn ready(&self) -> io::Result<()> {
        self.socket.readable().await.map(drop)
    }

    /// Accepts one pending connection, with its peer: an IP address, or
    /// the credentials of a Unix socket's client (read now: they are the
    /// admission's and the program's). `None` when nothing was pending
    /// after all. The new socket is blocking (a child's stdio must be) and
    /// close-on-exec.
    pub async fn accept(&self) -> io::Result<Option<(Socket, Peer)>> {
        let mut guard = self.socket.readable().await?;
        match guard.try_io(|s| s.get_ref().accept()) {
            Ok(Ok((socket, addr))) => {
                let peer = match addr.as_socket() {
                    Some(addr) => Peer::Ip(addr),
                    None => Peer::Unix(local_socket::peer_credentials(&socket)?),
                };
                Ok(Some((socket, peer)))
            }
            Ok(Err(e)) => Err(e),
            Err(_would_block) => Ok(None),
        }
    }

    /// The listening socket, to update the options accepted sockets
    /// inherit from it ([`LISTENER_OPTIONS_INHERITED`]).
    pub fn socket(&self) -> Option<&Socket> {
        Some(self.socket.get_ref())
    }

    /// What it listens on: an IP address and port, or a Unix socket's path.
    pub fn local_addr(&self) -> io::Result<Local> {
        local_address(self.socket.get_ref())
    }
}

/// Errors of `accept` or of starting a child that say the system is short
/// of a resource (descriptors, memory, processes: EAGAIN from fork), so that
/// retrying at once would spin, rather than that one connection failed.
pub fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EAGAIN)
    )
}

// ------------------------------------------------------------- children --

pub use process::{Child, ChildSpec, ExitStatus, Reaper, SPAWN_BLOCKS, StderrPipe, spawn};
#[cfg(not(target_os = "linux"))]
pub use process::{ChildEnds, Pipes, Relay};
#[cfg(target_os = "linux")]
pub use splice::{ChildEnds, Pipes, Relay};

/// Readies a stderr pipe for reading: nothing to do on Unix.
pub async fn stderr_ready(_pipe: &mut StderrPipe) -> io::Result<()> {
    Ok(())
}

/// Text in the system's legacy code page, for a config file that is not
/// UTF-8: Unix has none (a locale's charset is the reader's, not the
/// file's), so such a file stays an error that says where it is not UTF-8.
pub fn decode_ansi(_bytes: &[u8]) -> Option<(String, u32)> {
    None
}

/// Joins argv into one command line for display, quoted so that splitting
/// it again gives the same words.
pub fn join_command_line(argv: &[String]) -> String {
    shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| argv.join(" "))
}

/// Variables that must not reach a child: they describe the daemon's own
/// relation to its service manager and would let a child speak for it.
pub const PRIVATE_VARIABLES: &[&str] = &[
    "NOTIFY_SOCKET",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
    "JOURNAL_STREAM",
];

/// What running as `user` means to the environment: its `HOME`, `USER`
/// and `LOGNAME`.
pub fn user_environment(user: &Identity) -> Vec<(OsString, OsString)> {
    vec![
        ("HOME".into(), user.home.clone().into_os_string()),
        ("USER".into(), user.name.clone().into()),
        ("LOGNAME".into(), user.name.clone().into()),
    ]
}

impl Child {
    /// Asks the child's whole process group to stop (SIGTERM).
    pub fn terminate_tree(&self) {
        self.signal_tree(Signal::SIGTERM);
    }

    /// Kills the child's whole process group (SIGKILL).
    pub fn kill_tree(&self) {
        self.signal_tree(Signal::SIGKILL);
    }

    /// Whether the child's process group still has a member: the program
    /// itself, or what it started and left running (a zombie not yet
    /// reaped counts too). While it has one, its number is not given to
    /// another process, so the group can be signalled safely.
    pub fn tree_alive(&self) -> bool {
        // Signal 0 sends nothing; the daemon runs as root or as the user
        // of its children, so EPERM cannot hide a member.
        killpg(self.group(), None).is_ok()
    }

    fn group(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.id()).expect("pids fit in pid_t"))
    }

    fn signal_tree(&self, signal: Signal) {
        // Once the program has been reaped, its number may serve another
        // group only when nothing of this one is left: look first.
        if self.tree_alive() {
            // ESRCH: the group has just gone; nothing else can fail here.
            let _ = killpg(self.group(), signal);
        } else if self.before_its_session() {
            // Started but not the leader of its group yet (Linux does not
            // wait for its `setsid`): the signal reaches it alone, blocked
            // until the eve of its exec, where it takes its default action.
            // Not reaped, so its pid is still its own.
            let _ = nix::sys::signal::kill(self.group(), signal);
        }
    }
}

/// `exit N` or `signal N (NAME)`, for the session end line.
pub fn describe_exit(status: &ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit {code}");
    }
    match status.signal() {
        Some(n) => match Signal::try_from(n) {
            Ok(signal) => format!("signal {n} ({})", signal.as_str()),
            Err(_) => format!("signal {n}"),
        },
        None => format!("{status}"),
    }
}

// -------------------------------------------------------------- process --

/// Makes every descriptor the daemon inherited, apart from 0, 1 and 2,
/// close-on-exec, so that no child ever receives one (the original leaked
/// every inheritable handle into every child). On Linux, also blocks
/// SIGCHLD before any thread exists, so that every thread inherits the
/// block and the reaper's signalfd sees every exit.
pub fn init_process() {
    // Cannot fail with a valid `how`; the reaper blocks it again anyway.
    #[cfg(target_os = "linux")]
    let _ = signals::block(&[Signal::SIGCHLD]);
    #[cfg(target_os = "linux")]
    raise_descriptor_limit();
    // What a session's program leaves running when it exits becomes the
    // daemon's child rather than init's: the reaper reaps it when it ends,
    // so no zombie of it stays a member of the session's process group
    // (which the session waits to be empty) where init does not reap.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // SAFETY: prctl with integer arguments; changes only this process's
    // attribute.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    // Descriptors 0, 1 and 2 are always open (on /dev/null if the daemon
    // was started without them), so an accepted socket is never one of them
    // and cannot be lost when it is moved onto a child's stdio.
    for fd in 0..=2 {
        // SAFETY: F_GETFD on a descriptor number only reads its flags.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            // SAFETY: a constant path; the lowest free descriptor, `fd`
            // itself, is the one open returns, and it stays open for good.
            unsafe {
                libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            }
        }
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: close_range only changes descriptor flags; the arguments
        // are plain integers. CLOSE_RANGE_CLOEXEC needs Linux 5.11.
        let done = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        } == 0;
        if done {
            return;
        }
    }
    let Ok(dir) = std::fs::read_dir("/dev/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD on a descriptor number only sets a flag; a number
        // that is not open (the directory's own, now closed) gives EBADF.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
}

/// The soft and hard `RLIMIT_NOFILE` the daemon was started with, when
/// [`raise_descriptor_limit`] raised its own: programs get them back.
#[cfg(target_os = "linux")]
static PROGRAM_NOFILE: std::sync::OnceLock<[u64; 2]> = std::sync::OnceLock::new();

/// Raises the daemon's soft descriptor limit to its hard one. A relay
/// session (`stdio = "pipe"`) holds three descriptors in the daemon, and a
/// session whose stderr goes to the log one; the soft limit of 1,024 that
/// service managers and login shells give would stop pipe mode at about
/// 330 sessions, a third of the default session cap. The hard limit
/// (524,288 under systemd) is the operator's to set. Each program gets
/// the soft limit back before its exec, as systemd does for its services:
/// `select(2)` cannot take a descriptor above 1,023.
#[cfg(target_os = "linux")]
fn raise_descriptor_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        // `rlim_t` is 32 bits wide on 32-bit Linux; prlimit64 takes 64.
        #[allow(clippy::useless_conversion)]
        let _ = PROGRAM_NOFILE.set([u64::from(soft), u64::from(hard)]);
    }
}

/// The descriptor limit a program must get back before its exec, if the
/// daemon raised its own.
#[cfg(target_os = "linux")]
fn program_nofile() -> Option<[u64; 2]> {
    PROGRAM_NOFILE.get().copied()
}

/// The daemon's soft descriptor limit.
pub fn descriptor_limit() -> Option<u64> {
    let (soft, _) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).ok()?;
    // `rlim_t` is u64 on Linux and i64 on the BSDs.
    #[allow(clippy::useless_conversion, clippy::unnecessary_fallible_conversions)]
    let soft = u64::try_from(soft).ok();
    soft
}

/// Starts listening for the stop signals (SIGTERM, SIGINT) now, and returns
/// a future that resolves with the signal's name when one arrives. Must be
/// called inside the runtime, before the daemon announces itself: a signal
/// that came earlier would otherwise kill it with the default action.
#[cfg(target_os = "linux")]
pub fn shutdown_signal() -> io::Result<impl std::future::Future<Output = &'static str>> {
    let stops = signals::SignalStream::new(&[Signal::SIGTERM, Signal::SIGINT])?;
    Ok(async move {
        match stops.recv().await {
            Ok(signal) => signal.as_str(),
            Err(e) => {
                tracing::error!(error = %e, "cannot wait for stop signals; stopping");
                "error"
            }
        }
    })
}

/// Starts listening for the stop signals (SIGTERM, SIGINT) now, and returns
/// a future that resolves with the signal's name when one arrives. Must be
/// called inside the runtime, before the daemon announces itself: a signal
/// that came earlier would otherwise kill it with the default action.
#[cfg(not(target_os = "linux"))]
pub fn shutdown_signal() -> io::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}

/// Requests to reload the config: SIGHUP.
#[derive(Debug)]
pub struct Reload {
    #[cfg(target_os = "linux")]
    hangup: signals::SignalStream,
    #[cfg(not(target_os = "linux"))]
    hangup: tokio::signal::unix::Signal,
}

impl Reload {
    /// Starts listening for SIGHUP; call inside the runtime, before the
    /// daemon announces itself.
    pub fn listen() -> io::Result<Self> {
        #[cfg(target_os = "linux")]
        let hangup = signals::SignalStream::new(&[Signal::SIGHUP])?;
        #[cfg(not(target_os = "linux"))]
        let hangup = {
            use tokio::signal::unix::{SignalKind, signal};
            signal(SignalKind::hangup())?
        };
        Ok(Self { hangup })
    }

    /// The next request.
    pub async fn recv(&mut self) -> Option<()> {
        #[cfg(target_os = "linux")]
        return self.hangup.recv().await.ok().map(drop);
        #[cfg(not(target_os = "linux"))]
        return self.hangup.recv().await;
    }
}

/// The stop future a [`Stop`] factory makes.
pub type StopFuture = std::pin::Pin<Box<dyn std::future::Future<Output = &'static str> + Send>>;
/// Makes the stop future; called inside the runtime (see [`crate::run`]).
pub type Stop = Box<dyn FnOnce() -> StopFuture + Send>;
/// The daemon's body, given how it will be told to stop.
pub type Daemon = Box<dyn FnOnce(Stop) -> Result<(), crate::Error> + Send>;

/// Stop on SIGTERM or SIGINT.
pub fn console_stop() -> Stop {
    Box::new(|| {
        let signal = shutdown_signal();
        Box::pin(async move {
            match signal {
                Ok(signal) => signal.await,
                Err(e) => {
                    tracing::error!(error = %e, "cannot wait for stop signals; stopping");
                    "error"
                }
            }
        })
    })
}

/// Runs the daemon as a service: on Unix, in the foreground (no double
/// fork: systemd and other supervisors track the process they started).
pub fn run_as_service(daemon: Daemon) -> Result<(), crate::Error> {
    daemon(console_stop())
}

/// Tells the service manager the daemon is ready (`READY=1` on
/// `$NOTIFY_SOCKET`, sd_notify(3)), if it asked.
pub fn notify_ready() -> io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    let message = b"READY=1\nSTATUS=listening\n";
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(name) = bytes.strip_prefix(b"@") {
        #[cfg(target_os = "android")]
        use std::os::android::net::SocketAddrExt;
        #[cfg(target_os = "linux")]
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        return socket.send_to_addr(message, &addr).map(drop);
    }
    let _ = bytes;
    socket.send_to(message, &path).map(drop)
}

/// True when stderr is connected to the systemd journal (`$JOURNAL_STREAM`
/// names stderr's device and inode, systemd.exec(5)).
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    nix::sys::stat::fstat(std::io::stderr().as_fd())
        .is_ok_and(|st| dev.parse() == Ok(st.st_dev) && ino.parse() == Ok(st.st_ino))
}

/// Whether syslog(3) has somewhere to send lines (`/dev/log`).
pub fn system_log_available() -> bool {
    Path::new("/dev/log").exists()
}

/// The system log: syslog(3), facility daemon.
#[derive(Debug, Clone, Copy)]
pub struct SystemLog;

/// Severity of a system log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Error,
    Warning,
    Info,
    Debug,
}

impl SystemLog {
    pub fn open() -> Self {
        // SAFETY: the identifier is a 'static C string, as openlog(3)
        // requires (it keeps the pointer).
        unsafe {
            libc::openlog(
                c"wininetd".as_ptr(),
                libc::LOG_PID | libc::LOG_NDELAY,
                libc::LOG_DAEMON,
            );
        }
        Self
    }

    pub fn write(&self, priority: Priority, message: &str) {
        let level = match priority {
            Priority::Error => libc::LOG_ERR,
            Priority::Warning => libc::LOG_WARNING,
            Priority::Info => libc::LOG_INFO,
            Priority::Debug => libc::LOG_DEBUG,
        };
        let Ok(message) = CString::new(message.replace('\0', "\\0")) else {
            return;
        };
        // SAFETY: a constant "%s" format with one valid C string argument.
        unsafe {
            libc::syslog(level, c"%s".as_ptr(), message.as_ptr());
        }
    }
}

/// Priority prefix for a line on a stderr that is the journal (sd-daemon(3)).
pub fn journal_prefix(priority: Priority) -> &'static str {
    match priority {
        Priority::Error => "<3>",
        Priority::Warning => "<4>",
        Priority::Info => "<6>",
        Priority::Debug => "<7>",
    }
}
