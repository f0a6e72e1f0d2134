//! Linux: the pipe relay of `stdio = "pipe"`, with splice(2).
//!
//! The child reads its stdin from one pipe and writes its stdout (and,
//! unless it goes to the log, its stderr) to another. The daemon moves the
//! bytes between the connection and those pipes with `splice`, which hands
//! the kernel's pages from the socket to the pipe and back: they are never
//! copied into the daemon. EOF is carried both ways, as on Windows
//! (`platform/relay.rs`): the client's EOF closes the child's stdin, the
//! child's EOF half-closes the connection, and the relay ends with the
//! child's output.
//!
//! `splice` from a TCP socket stops at an urgent byte (`tcp_read_sock`)
//! while the socket stays readable. So when `splice` moves nothing although
//! both ends are ready, a few KiB go through `read` and `write` instead,
//! which step over the urgent mark as a program reading the socket would;
//! no client can make the relay spin.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::unistd::{Uid, pipe2, read, write};
use socket2::{SockRef, Socket};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::platform::relay::{bounded, until_output};

/// Bytes asked of one `splice`: more than a pipe holds, so that each call
/// moves whatever there is room for.
const CHUNK: usize = 1 << 20;

/// A splice this large filled a pipe of the default size (64 KiB): the
/// session is moving bulk data, and its pipe grows to [`BULK_PIPE`].
const BULK_SPLICE: usize = 64 << 10;

/// The size a bulk session's pipe grows to (the default `pipe-max-size`):
/// fewer and larger splices, fewer wake-ups. In the benchmark's bulk echo
/// the daemon spends about 40 % less CPU per GB than with 64 KiB pipes.
const BULK_PIPE: i32 = 1 << 20;

/// The bytes the fallback moves at once: one page, which a pipe with any
/// room left takes whole.
const FALLBACK: usize = 4096;

/// A connection and the daemon's ends of a child's pipes, registered with
/// the runtime.
#[derive(Debug)]
pub struct Relay {
    socket: AsyncFd<OwnedFd>,
    to_child: AsyncFd<OwnedFd>,
    from_child: AsyncFd<OwnedFd>,
    timeout: Option<Duration>,
}

/// The child's ends of the relay's pipes: blocking, as a program expects
/// of its stdio, and close-on-exec until they are made fds 0 and 1.
#[derive(Debug)]
pub struct ChildEnds {
    pub(super) stdin: OwnedFd,
    pub(super) stdout: OwnedFd,
}

/// The daemon's ends of a program's stdin and stdout pipes, async, for a
/// relay that moves the bytes itself (TLS).
#[derive(Debug)]
pub struct Pipes {
    pub to_child: tokio::net::unix::pipe::Sender,
    pub from_child: tokio::net::unix::pipe::Receiver,
}

impl Pipes {
    /// Makes the pipes: the daemon's ends, and the program's.
    pub fn new() -> io::Result<(Self, ChildEnds)> {
        let (stdin, to_child) = pipe2(OFlag::O_CLOEXEC)?;
        let (from_child, stdout) = pipe2(OFlag::O_CLOEXEC)?;
        let pipes = Self {
            to_child: tokio::net::unix::pipe::Sender::from_owned_fd(to_child)?,
            from_child: tokio::net::unix::pipe::Receiver::from_owned_fd(from_child)?,
        };
        Ok((pipes, ChildEnds { stdin, stdout }))
    }

    /// Ready to move bytes (at once: a pipe needs no connecting here).
    pub async fn connect(&self) -> io::Result<()> {
        Ok(())
    }
}

impl Relay {
    /// Makes the pipes and registers everything, so that nothing is left to
    /// fail once the child runs. `timeout` bounds each wait on the
    /// connection, as SO_RCVTIMEO and SO_SNDTIMEO do in socket mode.
    pub fn new(socket: Socket, timeout: Option<Duration>) -> io::Result<(Self, ChildEnds)> {
        socket.set_nonblocking(true)?;
        // The daemon's close is the last one here: it must never wait.
        socket.set_linger(None)?;
        let (stdin, to_child) = pipe2(OFlag::O_CLOEXEC)?;
        let (from_child, stdout) = pipe2(OFlag::O_CLOEXEC)?;
        // The daemon's ends only: each end is an open file of its own.
        fcntl(&to_child, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        fcntl(&from_child, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        let relay = Self {
            socket: register(
                OwnedFd::from(socket),
                Interest::READABLE | Interest::WRITABLE,
            )?,
            to_child: register(to_child, Interest::WRITABLE)?,
            from_child: register(from_child, Interest::READABLE)?,
            timeout,
        };
        Ok((relay, ChildEnds { stdin, stdout }))
    }

    /// Relays until the child's output ends.
    pub async fn run(self) {
        let Self {
            socket,
            to_child,
            from_child,
            timeout,
        } = self;
        let socket = &socket;
        let input = async move {
            let _ = pump(socket, &to_child, &to_child, timeout, None).await;
            // Closing the pipe gives the child EOF.
            drop(to_child);
        };
        let output = async move {
            let _ = pump(&from_child, socket, &from_child, None, timeout).await;
            let _ = SockRef::from(socket.get_ref()).shutdown(std::net::Shutdown::Write);
        };
        until_output(input, output).await;
    }
}

fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` returns the descriptor it owns from `as_raw_fd`
    // until it is dropped, which only happens with the `AsyncFd`.
    unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(|e| e.into_parts().1)
}

/// Moves bytes from `from` to `to` until `from` ends; each wait on an end
/// is bounded by that end's timeout. `pipe` is whichever end is the
/// child's pipe.
async fn pump(
    from: &AsyncFd<OwnedFd>,
    to: &AsyncFd<OwnedFd>,
    pipe: &AsyncFd<OwnedFd>,
    from_timeout: Option<Duration>,
    to_timeout: Option<Duration>,
) -> io::Result<()> {
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    let mut grown = false;
    loop {
        let mut readable = bounded(from_timeout, from.readable()).await?;
        let mut writable = bounded(to_timeout, to.writable()).await?;
        match splice(from.get_ref(), None, to.get_ref(), None, CHUNK, flags) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                if n >= BULK_SPLICE && !grown {
                    grown = true;
                    grow(pipe.get_ref());
                }
            }
            Err(Errno::EAGAIN) => {
                // One end was not ready after all; which one, `poll` says.
                let (can_read, can_write) = ready(from, to)?;
                if can_read && can_write {
                    drop((readable, writable));
                    if !copy_some(from, to, to_timeout).await? {
                        return Ok(());
                    }
                } else {
                    if !can_read {
                        readable.clear_ready();
                    }
                    if !can_write {
                        writable.clear_ready();
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Grows a bulk session's pipe to [`BULK_PIPE`], if the daemon runs as
/// root. An ordinary user's pipe buffers count against its
/// `pipe-user-pages-soft` (64 MiB by default), past which every new pipe
/// of that user gets 8 KiB: growing pipes would shrink other sessions'.
/// Where growing fails, the pipe keeps its size.
fn grow(pipe: &OwnedFd) {
    if Uid::effective().is_root() {
        let _ = fcntl(pipe, FcntlArg::F_SETPIPE_SZ(BULK_PIPE));
    }
}

/// Whether `from` has something to read and `to` room to write, at once.
/// An error or hang-up counts as ready: the next call reports it.
fn ready(from: &AsyncFd<OwnedFd>, to: &AsyncFd<OwnedFd>) -> io::Result<(bool, bool)> {
    let failed = PollFlags::POLLERR | PollFlags::POLLHUP;
    let mut fds = [
        PollFd::new(from.get_ref().as_fd(), PollFlags::POLLIN),
        PollFd::new(to.get_ref().as_fd(), PollFlags::POLLOUT),
    ];
    poll(&mut fds, PollTimeout::ZERO)?;
    let has = |fd: &PollFd<'_>, wanted: PollFlags| {
        fd.revents()
            .is_some_and(|revents| revents.intersects(wanted | failed))
    };
    Ok((
        has(&fds[0], PollFlags::POLLIN),
        has(&fds[1], PollFlags::POLLOUT),
    ))
}

/// Moves what `splice` would not: up to [`FALLBACK`] bytes, read, then
/// written in full. False at `from`'s EOF.
async fn copy_some(
    from: &AsyncFd<OwnedFd>,
    to: &AsyncFd<OwnedFd>,
    to_timeout: Option<Duration>,
) -> io::Result<bool> {
    let mut buf = vec![0; FALLBACK];
    let n = {
        let mut guard = from.readable().await?;
        match guard.try_io(|fd| Ok(read(fd.get_ref(), &mut buf)?)) {
            Ok(n) => n?,
            Err(_would_block) => return Ok(true),
        }
    };
    if n == 0 {
        return Ok(false);
    }
    let mut written = 0;
    while written < n {
        let mut guard = bounded(to_timeout, to.writable()).await?;
        if let Ok(result) = guard.try_io(|fd| Ok(write(fd.get_ref(), &buf[written..n])?)) {
            written += result?;
        }
    }
    Ok(true)
}
