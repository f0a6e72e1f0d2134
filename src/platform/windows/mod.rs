//! Windows: accounts and logon, Winsock listeners, processes in job
//! objects, the service control manager and the Event Log.
//!
//! The shape follows the Unix module item for item (see `platform/mod.rs`).
//! Where Windows differs in substance, the item says so: a socket can be a
//! child's standard handle only if it was created without
//! `WSA_FLAG_OVERLAPPED` (KB Q131623), so the listener of `--stdio socket`
//! is synchronous and accepts on a thread of its own; `--stdio pipe` gives
//! the child pipes and relays them with overlapped I/O.

#![allow(unsafe_code)]

mod codepage;
mod eventlog;
mod install;
mod service;
mod spawn;
mod wait;

use std::ffi::OsString;
use std::io;
use std::net::SocketAddr;
use std::os::windows::ffi::OsStringExt;
use std::os::windows::io::{AsRawSocket, FromRawSocket, RawSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use socket2::{Domain, Socket};
use tokio::sync::{Mutex, mpsc};
use windows_sys::Win32::Networking::WinSock;

use crate::error::Quoted;
use crate::peer::{Local, Peer};
use crate::secret::Secret;

pub use codepage::decode_ansi;
pub use eventlog::{Priority, SystemLog, journal_prefix, stderr_is_journal, system_log_available};
pub use install::{InstallError, InstallSpec, install, remove, request_reload};
pub use service::{Daemon, Reload, Stop, StopFuture, notify_ready, run_as_service};
pub use spawn::{
    Child, ChildEnds, ChildSpec, ExitStatus, Pipes, Reaper, Relay, SPAWN_BLOCKS, StderrPipe,
    describe_exit, spawn, stderr_ready,
};
pub use wait::WaitSocket;

/// The config file's name in the Windows directory, where WinInetd kept it.
pub const DEFAULT_CONFIG: &str = "wininetd.conf";

/// Windows needs the account's password to log it on.
pub const USES_PASSWORDS: bool = true;

/// Accepted sockets get their options one by one.
pub const LISTENER_OPTIONS_INHERITED: bool = false;

/// `%WINDIR%\wininetd.conf` (GetWindowsDirectoryW).
pub fn default_config_path() -> PathBuf {
    let mut buf = vec![0u16; 260];
    loop {
        let capacity = u32::try_from(buf.len()).expect("the buffer stays small");
        // SAFETY: the buffer is valid for `capacity` UTF-16 units.
        let len = unsafe {
            windows_sys::Win32::System::SystemInformation::GetWindowsDirectoryW(
                buf.as_mut_ptr(),
                capacity,
            )
        } as usize;
        if len == 0 {
            return PathBuf::from(r"C:\Windows").join(DEFAULT_CONFIG);
        }
        if len < buf.len() {
            return PathBuf::from(OsString::from_wide(&buf[..len])).join(DEFAULT_CONFIG);
        }
        buf.resize(len + 1, 0);
    }
}

// ---------------------------------------------------------------- users --

/// An account to run a service's program as. Windows logs it on for each
/// connection (LogonUserW), as WinInetd did, so a changed password or a
/// revoked right takes effect without a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// As written in the config (`user`, `DOMAIN\user` or `user@domain`).
    pub name: String,
    user: String,
    domain: Option<String>,
    password: Secret,
}

/// Why a user cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user name {} is empty or has a NUL character", Quoted(.0))]
    Invalid(String),
    /// Ignoring the group would run the program with more rights than the
    /// config asks for.
    #[error(
        "`group = {}` cannot be honoured on Windows (a program runs with its user's groups)",
        Quoted(.0)
    )]
    Group(String),
    /// LookupAccountNameW knows no such account (ERROR_NONE_MAPPED).
    #[error("unknown user {}", Quoted(.0))]
    Unknown(String),
    /// A group, an alias, a domain: LogonUserW would refuse it at every
    /// connection.
    #[error("{} is a {kind}, not a user account", Quoted(.name))]
    NotAUser { name: String, kind: &'static str },
    #[error("cannot look up user {}", Quoted(.name))]
    Lookup {
        name: String,
        #[source]
        source: io::Error,
    },
}

/// Who may read a file is an ACL on Windows, which is not checked: `None`.
pub fn readable_by_others(_path: &Path) -> Option<u32> {
    None
}

/// Unix domain sockets are not offered: Windows has them only since 2018,
/// without credentials passing, and no inetd-style program expects one.
pub const UNIX_SOCKETS: bool = false;

/// User and group IDs are a Unix notion: only a Unix socket's options
/// name them, and those are refused on Windows before this is asked.
pub fn account_id(name: &str, group: bool) -> Result<u32, String> {
    let what = if group { "group" } else { "user" };
    Err(format!(
        "{what} {name:?}: Windows has no numeric user and group IDs"
    ))
}

// What a Unix socket's file needs ([`UNIX_SOCKETS`] is false: the config
// refuses a `unix:` address, so none of these is reached).

fn no_unix_sockets() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "Unix sockets are not served on Windows",
    )
}

/// What is at a path where a Unix socket is to be bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    Missing,
    Socket,
    Other,
}

/// Which file a path named (never made here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId(());

pub fn path_kind(_path: &Path) -> io::Result<PathKind> {
    Err(no_unix_sockets())
}

pub fn socket_file_id(_path: &Path) -> io::Result<FileId> {
    Err(no_unix_sockets())
}

pub fn set_socket_file_mode(
    _path: &Path,
    _mode: u32,
    _owner: Option<u32>,
    _group: Option<u32>,
) -> io::Result<()> {
    Err(no_unix_sockets())
}

pub fn remove_socket_file(_path: &Path, _id: FileId) -> io::Result<bool> {
    Err(no_unix_sockets())
}

/// The IP address and port `socket` is bound to.
pub fn local_address(socket: &Socket) -> io::Result<Local> {
    socket
        .local_addr()?
        .as_socket()
        .map(Local::Ip)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP socket"))
}

/// Checks that `name` is a user account (LookupAccountNameW), as Unix looks
/// its users up at load, so that a typo is a config error with its line
/// rather than a refused connection later. `DOMAIN\user` and
/// `user@domain` go to LogonUserW as they are; a plain `user` (or
/// `.\user`) is logged on at this machine, ".". The password is checked
/// only when the user is logged on, at each connection, as WinInetd did
/// (so a changed password takes effect without a reload).
pub fn lookup_user(
    name: &str,
    group: Option<&str>,
    password: Option<&Secret>,
) -> Result<Identity, UserError> {
    if let Some(group) = group {
        return Err(UserError::Group(group.to_owned()));
    }
    let (domain, user) = split_user(name)?;
    // The local machine's "." is no name LookupAccountNameW knows: a plain
    // name is looked up among the well-known, built-in and local accounts,
    // then the domain's, which is where LogonUserW finds it too.
    let account = if domain.as_deref() == Some(".") {
        &user
    } else {
        name
    };
    check_account(name, account)?;
    Ok(Identity {
        name: name.to_owned(),
        user,
        domain,
        password: password.cloned().unwrap_or_else(|| Secret::new("")),
    })
}

/// `DOMAIN\\user` as its domain and user; `user@domain` as no domain and
/// the whole name (LogonUserW takes a UPN in its user argument); a plain
/// `user` in the domain ".", this machine.
fn split_user(name: &str) -> Result<(Option<String>, String), UserError> {
    let (domain, user) = match name.split_once('\\') {
        Some((domain, user)) => (Some(domain.to_owned()), user.to_owned()),
        None if name.contains('@') => (None, name.to_owned()),
        None => (Some(".".to_owned()), name.to_owned()),
    };
    if user.is_empty() || name.contains('\0') || domain.as_deref() == Some("") {
        return Err(UserError::Invalid(name.to_owned()));
    }
    Ok((domain, user))
}

/// Looks `account` up (LookupAccountNameW); an error names the user as the
/// config wrote it, `name`.
fn check_account(name: &str, account: &str) -> Result<(), UserError> {
    use windows_sys::Win32::Foundation::{ERROR_INSUFFICIENT_BUFFER, ERROR_NONE_MAPPED};
    use windows_sys::Win32::Security::{
        LookupAccountNameW, SID_NAME_USE, SidTypeAlias, SidTypeDeletedAccount, SidTypeDomain,
        SidTypeGroup, SidTypeInvalid, SidTypeLabel, SidTypeLogonSession, SidTypeUnknown,
        SidTypeWellKnownGroup,
    };
    let wide: Vec<u16> = account.encode_utf16().chain(std::iter::once(0)).collect();
    let mut sid = vec![0u8; 68];
    let mut domain = vec![0u16; 64];
    let mut kind: SID_NAME_USE = 0;
    for _ in 0..3 {
        let mut sid_len = u32::try_from(sid.len()).expect("a small buffer");
        let mut domain_len = u32::try_from(domain.len()).expect("a small buffer");
        // SAFETY: a NUL-terminated name; each buffer is valid for the
        // length passed with it, which the call updates.
        let ok = unsafe {
            LookupAccountNameW(
                std::ptr::null(),
                wide.as_ptr(),
                sid.as_mut_ptr().cast(),
                &mut sid_len,
                domain.as_mut_ptr(),
                &mut domain_len,
                &mut kind,
            )
        };
        if ok != 0 {
            let what = match kind {
                k if k == SidTypeGroup || k == SidTypeWellKnownGroup => "group",
                k if k == SidTypeAlias => "local group",
                k if k == SidTypeDomain => "domain",
                k if k == SidTypeDeletedAccount => "deleted account",
                k if k == SidTypeInvalid || k == SidTypeUnknown => "unknown account",
                k if k == SidTypeLabel || k == SidTypeLogonSession => "special name",
                _ => return Ok(()),
            };
            return Err(UserError::NotAUser {
                name: name.to_owned(),
                kind: what,
            });
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(code) if code == ERROR_NONE_MAPPED as i32 => {
                return Err(UserError::Unknown(name.to_owned()));
            }
            Some(code) if code == ERROR_INSUFFICIENT_BUFFER as i32 => {
                sid.resize((sid_len as usize).max(sid.len()), 0);
                domain.resize((domain_len as usize).max(domain.len()) + 1, 0);
            }
            _ => {
                return Err(UserError::Lookup {
                    name: name.to_owned(),
                    source: error,
                });
            }
        }
    }
    Err(UserError::Lookup {
        name: name.to_owned(),
        source: io::Error::other("the account's SID kept growing"),
    })
}

/// The service runs as LocalSystem, which may start programs as others;
/// whether it really can is known only when it tries (a console run by an
/// ordinary administrator lacks "Replace a process level token"), and a
/// failure then refuses that connection.
pub fn can_switch_users() -> bool {
    true
}

/// What running as `user` adds to the environment.
pub fn user_environment(user: &Identity) -> Vec<(OsString, OsString)> {
    vec![("USERNAME".into(), user.user.clone().into())]
}

// ------------------------------------------------------------- programs --

/// Splits a command line the way CreateProcess and the C runtime do: the
/// program is the first token (quoted if it has spaces), arguments follow
/// the `CommandLineToArgvW` rules. The command line itself is passed to
/// the program as written, as WinInetd did.
pub fn split_command_line(cmdline: &str) -> Result<Vec<String>, String> {
    let cmdline = cmdline.trim_start();
    let (program, rest) = if let Some(quoted) = cmdline.strip_prefix('"') {
        let end = quoted
            .find('"')
            .ok_or_else(|| "unterminated quote in the program name".to_owned())?;
        (quoted[..end].to_owned(), &quoted[end + 1..])
    } else {
        let end = cmdline.find([' ', '\t']).unwrap_or(cmdline.len());
        (cmdline[..end].to_owned(), &cmdline[end..])
    };
    let mut argv = vec![program];
    argv.extend(split_arguments(rest));
    Ok(argv)
}

/// Joins argv into one command line that the C runtime's rules (and
/// [`split_arguments`]) split back into the same arguments: an argument
/// with blanks or quotes, or an empty one, is quoted; backslashes are
/// doubled only before a quote.
pub fn join_command_line(argv: &[String]) -> String {
    let mut line = String::new();
    for (i, arg) in argv.iter().enumerate() {
        if i > 0 {
            line.push(' ');
        }
        if !arg.is_empty() && !arg.contains([' ', '\t', '\n', '\x0b', '"']) {
            line.push_str(arg);
            continue;
        }
        line.push('"');
        let mut backslashes = 0usize;
        for c in arg.chars() {
            match c {
                '\\' => backslashes += 1,
                '"' => {
                    line.extend(std::iter::repeat_n('\\', backslashes * 2 + 1));
                    line.push('"');
                    backslashes = 0;
                }
                c => {
                    line.extend(std::iter::repeat_n('\\', backslashes));
                    line.push(c);
                    backslashes = 0;
                }
            }
        }
        line.extend(std::iter::repeat_n('\\', backslashes * 2));
        line.push('"');
    }
    line
}

/// The C runtime's argument rules: 2n backslashes before a quote are n
/// backslashes and a quote toggle; 2n+1 are n backslashes and a literal
/// quote; `""` inside quotes is a literal quote.
fn split_arguments(s: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        if chars.peek().is_none() {
            return args;
        }
        let mut arg = String::new();
        let mut quoted = false;
        let mut backslashes = 0usize;
        while let Some(&c) = chars.peek() {
            match c {
                '\\' => {
                    backslashes += 1;
                    chars.next();
                    continue;
                }
                '"' => {
                    arg.extend(std::iter::repeat_n('\\', backslashes / 2));
                    chars.next();
                    if backslashes % 2 == 1 {
                        arg.push('"');
                    } else if quoted && chars.peek() == Some(&'"') {
                        arg.push('"');
                        chars.next();
                    } else {
                        quoted = !quoted;
                    }
                }
                ' ' | '\t' if !quoted => {
                    arg.extend(std::iter::repeat_n('\\', backslashes));
                    backslashes = 0;
                    break;
                }
                c => {
                    arg.extend(std::iter::repeat_n('\\', backslashes));
                    arg.push(c);
                    chars.next();
                }
            }
            backslashes = 0;
        }
        arg.extend(std::iter::repeat_n('\\', backslashes));
        args.push(arg);
    }
}

/// The files a bare program name may be in `dir`: the name itself if it has
/// an extension, else with `.exe` and `.com` (what CreateProcess runs).
pub fn executable_candidates(dir: &Path, name: &str) -> impl Iterator<Item = PathBuf> + use<> {
    let plain = dir.join(name);
    let candidates = if plain.extension().is_some() {
        vec![plain]
    } else {
        vec![plain.with_extension("exe"), plain.with_extension("com")]
    };
    candidates.into_iter()
}

/// A regular file (Windows has no execute bit; CreateProcess judges the rest).
pub fn is_executable(path: &Path) -> bool {
    path.metadata().is_ok_and(|m| m.is_file())
}

// -------------------------------------------------------------- sockets --

/// Whether a listener made for connections the daemon relays (or hands
/// over, when false) serves the other kind too: not on Windows, where the
/// socket kinds differ (overlapped or not, see [`tcp_socket`]).
pub fn same_listener(relayed_before: bool, relayed_now: bool) -> bool {
    relayed_before == relayed_now
}

/// Windows ignores SO_RCVTIMEO and SO_SNDTIMEO on a synchronous socket,
/// which a socket handed to a program must be: `timeout` applies only to
/// relayed connections.
pub const SOCKET_TIMEOUTS_APPLY: bool = false;

/// A TCP socket that no child inherits. For a connection handed to the
/// program it is created without `WSA_FLAG_OVERLAPPED`, because only such
/// a socket (and the sockets it accepts) can be a child's standard handle
/// (KB Q131623); for one the daemon relays (`relayed`) it is overlapped,
/// so the relay can use asynchronous I/O.
pub fn tcp_socket(domain: Domain, relayed: bool) -> io::Result<Socket> {
    new_socket(domain, WinSock::SOCK_STREAM, WinSock::IPPROTO_TCP, relayed)
}

/// A UDP socket that no child inherits. For a wait service, whose program
/// takes it over (`handed_over`), it is created without
/// `WSA_FLAG_OVERLAPPED`, so that it can be the program's standard handles
/// (KB Q131623); otherwise overlapped, for the runtime.
pub fn udp_socket(domain: Domain, handed_over: bool) -> io::Result<Socket> {
    new_socket(
        domain,
        WinSock::SOCK_DGRAM,
        WinSock::IPPROTO_UDP,
        !handed_over,
    )
}

fn new_socket(
    domain: Domain,
    kind: WinSock::WINSOCK_SOCKET_TYPE,
    protocol: WinSock::IPPROTO,
    overlapped: bool,
) -> io::Result<Socket> {
    init_winsock();
    let mut flags = WinSock::WSA_FLAG_NO_HANDLE_INHERIT;
    if overlapped {
        flags |= WinSock::WSA_FLAG_OVERLAPPED;
    }
    // SAFETY: plain arguments; a null protocol info pointer is allowed.
    let raw = unsafe {
        WinSock::WSASocketW(
            i32::from(domain),
            kind,
            protocol,
            std::ptr::null(),
            0,
            flags,
        )
    };
    if raw == WinSock::INVALID_SOCKET {
        return Err(wsa_error());
    }
    // SAFETY: `raw` is a new, valid socket that nothing else owns.
    Ok(unsafe { Socket::from_raw_socket(raw as RawSocket) })
}

fn wsa_error() -> io::Error {
    // SAFETY: no arguments; reads the calling thread's last Winsock error.
    io::Error::from_raw_os_error(unsafe { WinSock::WSAGetLastError() })
}

/// Winsock must be started before the first raw socket call; the standard
/// library only does it when its own networking is first used.
fn init_winsock() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        // SAFETY: WSADATA is plain data that WSAStartup fills in.
        let mut data = unsafe { std::mem::zeroed::<WinSock::WSADATA>() };
        // SAFETY: version 2.2 and a valid out pointer. Never cleaned up:
        // the daemon uses Winsock until it exits.
        unsafe { WinSock::WSAStartup(0x202, &mut data) };
    });
}

/// SO_EXCLUSIVEADDRUSE: on Windows SO_REUSEADDR would let another process
/// bind the same port and steal connections, so the listener asks for the
/// opposite.
pub fn configure_listener(socket: &Socket) -> io::Result<()> {
    let on: i32 = 1;
    // SAFETY: a valid socket and a pointer to an i32 of the given size.
    let rc = unsafe {
        WinSock::setsockopt(
            socket.as_raw_socket() as WinSock::SOCKET,
            WinSock::SOL_SOCKET,
            WinSock::SO_EXCLUSIVEADDRUSE,
            (&on as *const i32).cast(),
            std::mem::size_of::<i32>() as i32,
        )
    };
    if rc != 0 {
        return Err(wsa_error());
    }
    Ok(())
}

pub fn is_family_unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(WinSock::WSAEAFNOSUPPORT)
}

/// Errors that say the system is short of a resource, so that retrying at
/// once would spin.
pub fn is_resource_exhaustion(e: &io::Error) -> bool {
    use windows_sys::Win32::Foundation::{
        ERROR_NO_SYSTEM_RESOURCES, ERROR_NOT_ENOUGH_MEMORY, ERROR_OUTOFMEMORY,
    };
    matches!(
        e.raw_os_error(),
        Some(code) if code == WinSock::WSAEMFILE
            || code == WinSock::WSAENOBUFS
            || code == ERROR_NOT_ENOUGH_MEMORY as i32
            || code == ERROR_OUTOFMEMORY as i32
            || code == ERROR_NO_SYSTEM_RESOURCES as i32
    )
}

/// One accepted connection or the error accept gave.
type Accepted = io::Result<(Socket, Peer)>;

/// A listening socket and the thread that accepts on it.
///
/// A synchronous socket cannot be registered with the runtime's completion
/// port, so a thread waits for connections (WSAPoll, so that it notices a
/// close within [`POLL_INTERVAL`]) and hands each accepted socket over a
/// channel of one. While the daemon is at its session cap the thread stops
/// after one connection, and the rest wait in the backlog.
#[derive(Debug)]
pub struct Listener {
    addr: SocketAddr,
    incoming: Mutex<Incoming>,
    closed: Arc<AtomicBool>,
}

#[derive(Debug)]
struct Incoming {
    rx: mpsc::Receiver<Accepted>,
    pending: Option<Accepted>,
}

/// How often the accept thread checks whether its listener was closed.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

impl Listener {
    pub fn new(socket: Socket) -> io::Result<Self> {
        let addr = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP socket"))?;
        socket.set_nonblocking(true)?;
        let (tx, rx) = mpsc::channel(1);
        let closed = Arc::new(AtomicBool::new(false));
        let thread_closed = Arc::clone(&closed);
        std::thread::Builder::new()
            .name(format!("accept {addr}"))
            .spawn(move || accept_thread(socket, tx, thread_closed))?;
        Ok(Self {
            addr,
            incoming: Mutex::new(Incoming { rx, pending: None }),
            closed,
        })
    }

    /// Waits until a connection is pending.
    pub async fn ready(&self) -> io::Result<()> {
        let mut incoming = self.incoming.lock().await;
        if incoming.pending.is_none() {
            let next = incoming.rx.recv().await.ok_or_else(|| {
                io::Error::new(io::ErrorKind::BrokenPipe, "the accept thread stopped")
            })?;
            incoming.pending = Some(next);
        }
        Ok(())
    }

    /// The pending connection, if any, with its peer (always an IP
    /// address here).
    pub async fn accept(&self) -> io::Result<Option<(Socket, Peer)>> {
        self.ready().await?;
        let mut incoming = self.incoming.lock().await;
        incoming.pending.take().transpose()
    }

    /// Accepted sockets inherit nothing here
    /// ([`LISTENER_OPTIONS_INHERITED`]), so there is nothing to update.
    pub fn socket(&self) -> Option<&Socket> {
        None
    }

    pub fn local_addr(&self) -> io::Result<Local> {
        Ok(Local::Ip(self.addr))
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // The thread owns the socket and closes it when it sees this.
        self.closed.store(true, Ordering::Relaxed);
    }
}

fn accept_thread(socket: Socket, tx: mpsc::Sender<Accepted>, closed: Arc<AtomicBool>) {
    let timeout = i32::try_from(POLL_INTERVAL.as_millis()).expect("a short interval");
    while !closed.load(Ordering::Relaxed) {
        let mut poll = WinSock::WSAPOLLFD {
            fd: socket.as_raw_socket() as WinSock::SOCKET,
            events: WinSock::POLLRDNORM,
            revents: 0,
        };
        // SAFETY: one valid WSAPOLLFD.
        let n = unsafe { WinSock::WSAPoll(&mut poll, 1, timeout) };
        if n == 0 {
            continue;
        }
        let accepted = if n < 0 {
            Err(wsa_error())
        } else {
            accept_one(&socket)
        };
        if matches!(&accepted, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
            continue;
        }
        let failed = accepted.is_err();
        if tx.blocking_send(accepted).is_err() {
            return;
        }
        if failed {
            // The server backs off after an error; do not race ahead of it.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Accepts one connection and makes it blocking again (it inherits the
/// listener's non-blocking mode), as a child's standard handle must be.
fn accept_one(listener: &Socket) -> Accepted {
    let (socket, addr) = listener.accept()?;
    socket.set_nonblocking(false)?;
    let addr = addr
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "accepted a non-IP socket"))?;
    Ok((socket, Peer::Ip(addr)))
}

// -------------------------------------------------------------- process --

/// Nothing to do: Windows handles are not inherited unless a child is given
/// them explicitly, and every spawn lists exactly the handles it passes.
pub fn init_process() {
    init_winsock();
}

/// No descriptor limit: Windows has no `RLIMIT_NOFILE`.
pub fn descriptor_limit() -> Option<u64> {
    None
}

/// Variables that must not reach a child (none are special on Windows; the
/// list is kept for symmetry with Unix).
pub const PRIVATE_VARIABLES: &[&str] = &[];

/// Logs settings this OS cannot honour (per service: see
/// `ChildSpec::new`).
/// Resolves when Ctrl-C or Ctrl-Break is pressed in the console.
pub fn shutdown_signal() -> io::Result<impl std::future::Future<Output = &'static str>> {
    let mut ctrl_c = tokio::signal::windows::ctrl_c()?;
    let mut ctrl_break = tokio::signal::windows::ctrl_break()?;
    Ok(async move {
        tokio::select! {
            _ = ctrl_c.recv() => "Ctrl-C",
            _ = ctrl_break.recv() => "Ctrl-Break",
        }
    })
}

/// Stop on Ctrl-C or Ctrl-Break (`--debug`).
pub fn console_stop() -> Stop {
    Box::new(|| {
        let signal = shutdown_signal();
        Box::pin(async move {
            match signal {
                Ok(signal) => signal.await,
                Err(e) => {
                    tracing::error!(error = %e, "cannot wait for Ctrl-C; stopping");
                    "error"
                }
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_split_like_the_c_runtime() {
        let split = |s| split_command_line(s).expect("valid");
        assert_eq!(
            split(r#"C:\bin\x.exe a "b c" d"#),
            [r"C:\bin\x.exe", "a", "b c", "d"]
        );
        assert_eq!(
            split(r#""C:\Program Files\x.exe" -v"#),
            [r"C:\Program Files\x.exe", "-v"]
        );
        assert_eq!(
            split(r#"x a\\\"b "c\\" d\e"#),
            ["x", r#"a\"b"#, r"c\", r"d\e"]
        );
        assert!(split_command_line(r#""C:\x.exe a"#).is_err());
    }

    #[test]
    fn joined_arguments_split_back_unchanged() {
        let cases: [&[&str]; 4] = [
            &[r"C:\bin\x.exe", "a", "b c"],
            &["x", r#"say "hi""#, r"C:\my dir\", ""],
            &["x", r"a\\b", r#"\""#, "tab\there"],
            &["x", "plain"],
        ];
        for argv in cases {
            let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
            let line = join_command_line(&argv);
            assert_eq!(split_command_line(&line).expect("valid"), argv, "{line}");
        }
    }

    #[test]
    fn users_and_domains() {
        let split = |name| split_user(name).expect(name);
        assert_eq!(split(r"CORP\alice"), (Some("CORP".into()), "alice".into()));
        assert_eq!(split("bob"), (Some(".".into()), "bob".into()));
        assert_eq!(split(r".\bob"), (Some(".".into()), "bob".into()));
        assert_eq!(
            split("carol@corp.example"),
            (None, "carol@corp.example".into())
        );
        for bad in [r"CORP\", r"\alice", "", "a\0b"] {
            assert!(
                matches!(split_user(bad), Err(UserError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    /// The account this test runs as: it exists wherever the test runs.
    fn current_user() -> String {
        std::env::var("USERNAME").expect("Windows sets USERNAME")
    }

    /// Regression test: `nosuchuser:pw` passed --check and failed only
    /// when a client connected. Accounts are looked up at load now.
    #[test]
    fn unknown_accounts_are_refused_at_load() {
        let me = current_user();
        let id = lookup_user(&me, None, Some(&Secret::new("pw"))).expect("this account exists");
        assert_eq!(
            (id.domain.as_deref(), id.user.as_str()),
            (Some("."), me.as_str())
        );
        let id = lookup_user(&format!(r".\{me}"), None, None).expect("this account exists");
        assert_eq!(id.user, me);

        let err = lookup_user("wininetd-no-such-user-4711", None, None).expect_err("unknown");
        assert!(matches!(err, UserError::Unknown(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            r#"unknown user "wininetd-no-such-user-4711""#
        );
        let err = lookup_user(r"wininetd-no-such-domain-4711\x", None, None).expect_err("unknown");
        assert!(
            matches!(err, UserError::Unknown(_) | UserError::Lookup { .. }),
            "{err:?}"
        );
        // As written: one backslash, not two.
        assert!(
            err.to_string()
                .contains(r#""wininetd-no-such-domain-4711\x""#),
            "{err}"
        );
    }

    #[test]
    fn a_group_is_not_a_user() {
        let err = lookup_user("Administrators", None, None).expect_err("a group");
        assert!(matches!(err, UserError::NotAUser { .. }), "{err:?}");
        assert!(err.to_string().contains("not a user account"), "{err}");
    }
}
