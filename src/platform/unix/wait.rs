//! A wait service's socket on Unix: watched by the daemon while no program
//! holds it, handed to the program when it becomes readable.
//!
//! The program gets the socket itself (a listening TCP or Unix socket, or a
//! bound UDP socket) and must find it blocking: inetd programs read and
//! accept with blocking calls, and a non-blocking stdin makes them fail with
//! EAGAIN at their first read. `O_NONBLOCK` is a file status flag: it
//! belongs to the open socket, which every `dup` of it, and the copy a
//! child inherits, share. So the daemon cannot keep a non-blocking copy of
//! its own, and turning the flag on while it watches and off before a
//! program starts would race with whatever still holds the socket (what the
//! last program left running in the background, say). The socket therefore
//! stays blocking for good, and the daemon never makes a call on it that
//! can block:
//!
//! - readiness comes from the runtime's registration (epoll and kqueue take
//!   a blocking descriptor as well), checked with a `poll` of timeout 0:
//!   the registration is edge-triggered, and says nothing of what came
//!   while a program held the socket (or what the program left unread);
//! - datagrams are peeked at and dropped with `MSG_DONTWAIT`, which makes
//!   that one call non-blocking;
//! - the daemon never accepts on a stream socket: its program does.

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use socket2::{Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::platform::{ChildStdio, Datagram};

/// The largest UDP payload: a peek sees a whole datagram's length.
const DATAGRAM_MAX: usize = 65_536;

/// A wait service's socket, as the daemon watches it.
#[derive(Debug)]
pub struct WaitSocket {
    socket: AsyncFd<Arc<Socket>>,
    datagram: bool,
    /// Where peeked and dropped datagrams are read to.
    buffer: Box<[MaybeUninit<u8>]>,
}

impl WaitSocket {
    /// Takes a bound socket (listening, for a stream) and makes it
    /// blocking, for good (see the module's notes).
    pub fn new(socket: Socket) -> io::Result<Self> {
        socket.set_nonblocking(false)?;
        let datagram = socket.r#type()? == Type::DGRAM;
        // SAFETY: the `Arc` keeps the socket, and so its descriptor, open
        // as long as the `AsyncFd` holds it; the copies handed to programs
        // only keep it open longer.
        let socket =
            unsafe { AsyncFd::register_with_interest(Arc::new(socket), Interest::READABLE) }
                .map_err(|e| e.into_parts().1)?;
        Ok(Self {
            socket,
            datagram,
            buffer: Box::new_uninit_slice(if datagram { DATAGRAM_MAX } else { 0 }),
        })
    }

    /// Whether it is a datagram socket (a stream socket's program accepts).
    pub fn is_datagram(&self) -> bool {
        self.datagram
    }

    /// Waits until a datagram or a connection is waiting (or an error is
    /// pending), whenever it came.
    pub async fn readable(&mut self) -> io::Result<()> {
        loop {
            let mut guard = self.socket.readable().await?;
            if self.ready_now()? {
                return Ok(());
            }
            // Stale: what woke the registration was taken by a program
            // meanwhile. Clearing keeps an edge that came after the look
            // (the runtime compares the event's tick).
            guard.clear_ready();
        }
    }

    /// Whether a datagram or a connection is waiting now.
    pub fn is_readable_now(&self) -> bool {
        self.ready_now().unwrap_or(false)
    }

    fn ready_now(&self) -> io::Result<bool> {
        let mut fds = [PollFd::new(
            self.socket.get_ref().as_fd(),
            PollFlags::POLLIN,
        )];
        let n = poll(&mut fds, PollTimeout::ZERO)?;
        Ok(n > 0 && fds[0].revents().is_some_and(|r| !r.is_empty()))
    }

    /// The first waiting datagram's source and length, left in place;
    /// `None` when none is waiting after all.
    pub fn peek(&mut self) -> io::Result<Option<Datagram>> {
        let flags = libc::MSG_PEEK | libc::MSG_DONTWAIT;
        let received = self
            .socket
            .get_ref()
            .recv_from_with_flags(&mut self.buffer, flags);
        Datagram::peeked(received, &self.buffer)
    }

    /// Reads the first waiting datagram and drops it.
    pub fn discard(&mut self) -> io::Result<()> {
        match self
            .socket
            .get_ref()
            .recv_with_flags(&mut self.buffer, libc::MSG_DONTWAIT)
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The socket as a program's stdio (and fd 3); the daemon keeps its
    /// own descriptor.
    pub fn for_program(&self) -> ChildStdio {
        ChildStdio::Shared(Arc::clone(self.socket.get_ref()))
    }

    /// The address it is bound to, when it is an IP socket.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.socket.get_ref().local_addr().ok()?.as_socket()
    }
}
