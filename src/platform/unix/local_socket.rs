//! Unix domain sockets: who connected (the peer's credentials), the
//! daemon's end of a connection, and the socket's file (what is at a path
//! before binding, its owner and mode, its removal).
//!
//! The policy (when a file may be replaced, in which order a socket is
//! bound, chmodded and made to listen) is the listen stage's; these are
//! the system calls it needs.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use socket2::Socket;

use crate::peer::{Credentials, Local};

/// The credentials the kernel recorded when the peer of `socket`, an
/// accepted Unix stream connection, connected: SO_PEERCRED (unix(7)).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn peer_credentials(socket: &Socket) -> io::Result<Credentials> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let cred = getsockopt(socket, PeerCredentials)?;
    Ok(Credentials {
        uid: cred.uid(),
        gid: cred.gid(),
        // 0 when the peer is in a pid namespace the daemon cannot see.
        pid: u32::try_from(cred.pid()).ok().filter(|&pid| pid != 0),
    })
}

/// The credentials the kernel recorded when the peer of `socket`, an
/// accepted Unix stream connection, connected: LOCAL_PEERCRED (unix(4)),
/// whose `xucred` holds the effective user ID, the groups (the effective
/// group first) and, since FreeBSD 13, the pid.
#[cfg(target_os = "freebsd")]
pub fn peer_credentials(socket: &Socket) -> io::Result<Credentials> {
    use std::os::fd::AsRawFd;
    // SAFETY: `xucred` is plain integers and a union of integers: all
    // zeros is a valid value.
    let mut cred: libc::xucred = unsafe { std::mem::zeroed() };
    let mut len =
        libc::socklen_t::try_from(std::mem::size_of::<libc::xucred>()).expect("xucred is small");
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, which is
    // that large, and sets `len` to what it wrote.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_LOCAL,
            libc::LOCAL_PEERCRED,
            std::ptr::from_mut(&mut cred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if cred.cr_version != libc::XUCRED_VERSION || cred.cr_ngroups < 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "LOCAL_PEERCRED gave no credentials",
        ));
    }
    // SAFETY: both members of the union are integers; a kernel older than
    // FreeBSD 13 leaves it zero.
    let pid = unsafe { cred.cr_pid__c_anonymous_union.cr_pid };
    Ok(Credentials {
        uid: cred.cr_uid,
        gid: cred.cr_groups[0],
        pid: u32::try_from(pid).ok().filter(|&pid| pid != 0),
    })
}

/// The effective user and group IDs of the peer of `socket`, an accepted
/// Unix stream connection: getpeereid(3). These systems do not say the
/// peer's pid.
#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "openbsd",
    target_os = "netbsd",
    target_os = "dragonfly"
))]
pub fn peer_credentials(socket: &Socket) -> io::Result<Credentials> {
    let (uid, gid) = nix::unistd::getpeereid(socket)?;
    Ok(Credentials {
        uid: uid.as_raw(),
        gid: gid.as_raw(),
        pid: None,
    })
}

/// No way to learn a Unix socket peer's credentials is known here: such a
/// connection is refused rather than served as an unknown user.
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "macos",
    target_os = "ios",
    target_os = "openbsd",
    target_os = "netbsd",
    target_os = "dragonfly"
)))]
pub fn peer_credentials(_socket: &Socket) -> io::Result<Credentials> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "this system does not say who connected to a Unix socket",
    ))
}

/// The address `socket` is bound to: an IP address and port, or a Unix
/// socket's path.
pub fn local_address(socket: &Socket) -> io::Result<Local> {
    let addr = socket.local_addr()?;
    if let Some(ip) = addr.as_socket() {
        return Ok(Local::Ip(ip));
    }
    match addr.as_pathname() {
        Some(path) => Ok(Local::Unix(path.to_string_lossy().into())),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "neither an IP nor a named Unix socket",
        )),
    }
}

/// What is at a path where a Unix socket is to be bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// Nothing.
    Missing,
    /// A socket file (live or stale).
    Socket,
    /// Anything else, a symbolic link included (never followed).
    Other,
}

/// What is at `path`, without following a symbolic link.
pub fn path_kind(path: &Path) -> io::Result<PathKind> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => Ok(PathKind::Socket),
        Ok(_) => Ok(PathKind::Other),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(PathKind::Missing),
        Err(e) => Err(e),
    }
}

/// Which file a path named: its device and inode. The socket file the
/// daemon made is removed only while its path still names that file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

/// Which file the socket just bound at `path` made (never following a
/// symbolic link): an error if the path does not name a socket.
pub fn socket_file_id(path: &Path) -> io::Result<FileId> {
    let meta = fs::symlink_metadata(path)?;
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the socket file was replaced as it was made",
        ));
    }
    Ok(FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

/// Gives the socket file at `path` its owner and group (those given;
/// lchown(2), never through a symbolic link), then its mode (chmod(2)).
/// Called between bind(2) and listen(2): until the socket listens, a
/// connect(2) to it is refused, so the file's mode before this (0777 less
/// the umask) lets nobody in.
pub fn set_socket_file_mode(
    path: &Path,
    mode: u32,
    owner: Option<u32>,
    group: Option<u32>,
) -> io::Result<()> {
    if owner.is_some() || group.is_some() {
        std::os::unix::fs::lchown(path, owner, group)?;
    }
    // chmod follows a symbolic link, and no lchmod is portable: the path
    // named our socket an instant ago ([`socket_file_id`]). Only who may
    // write in the directory can swap it in between, and they can replace
    // the socket anyway: a socket's directory must be the daemon's (or
    // sticky, as /tmp is).
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Removes the socket file at `path` if it is still the file `id`; true
/// when it was removed. Another file there (the socket of a daemon that
/// took the path over, or one an operator put there) is left alone.
pub fn remove_socket_file(path: &Path, id: FileId) -> io::Result<bool> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() || meta.dev() != id.dev || meta.ino() != id.ino {
        return Ok(false);
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}
