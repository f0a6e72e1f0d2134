//! A wait service's socket on Windows: watched by the daemon while no
//! program holds it, handed to the program as its standard handles when it
//! becomes readable.
//!
//! A socket can be a program's standard handle only if it was made without
//! `WSA_FLAG_OVERLAPPED` (KB Q131623; see `tcp_socket` and `udp_socket`),
//! and such a socket cannot join the runtime's completion port: a thread of
//! its own waits for it (WSAPoll, which takes a blocking socket, checking
//! every [`POLL_INTERVAL`] whether the socket was closed), only when asked.
//! The program must find it blocking (FIONBIO is the socket's, and shared
//! with the program), so it stays blocking but for the one call the daemon
//! makes on it while no program runs: a peek at the first datagram, or its
//! read when it is refused. The daemon never accepts on a stream socket: its
//! program does.

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::windows::io::AsRawSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use socket2::{Socket, Type};
use tokio::sync::mpsc;
use windows_sys::Win32::Networking::WinSock;

use super::wsa_error;
use crate::platform::{ChildStdio, Datagram};

/// How often the watching thread checks whether its socket was closed.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The largest UDP payload: a peek sees a whole datagram's length, and a
/// read drops a whole datagram.
const DATAGRAM_MAX: usize = 65_536;

/// A wait service's socket, as the daemon watches it.
#[derive(Debug)]
pub struct WaitSocket {
    socket: Arc<Socket>,
    datagram: bool,
    /// Asks the thread to wait for the socket once.
    watch: mpsc::Sender<()>,
    /// Its answers: readable, or why it cannot wait.
    ready: mpsc::Receiver<io::Result<()>>,
    closed: Arc<AtomicBool>,
    buffer: Box<[MaybeUninit<u8>]>,
}

impl WaitSocket {
    /// Takes a bound socket (listening, for a stream) made for a program's
    /// standard handles, and starts the thread that waits for it.
    pub fn new(socket: Socket) -> io::Result<Self> {
        socket.set_nonblocking(false)?;
        let datagram = socket.r#type()? == Type::DGRAM;
        if datagram {
            no_connection_resets(&socket);
        }
        let socket = Arc::new(socket);
        let (watch, requests) = mpsc::channel(1);
        let (answers, ready) = mpsc::channel(1);
        let closed = Arc::new(AtomicBool::new(false));
        let (thread_socket, thread_closed) = (Arc::clone(&socket), Arc::clone(&closed));
        std::thread::Builder::new()
            .name("wait socket".to_owned())
            .spawn(move || watch_thread(&thread_socket, requests, answers, &thread_closed))?;
        Ok(Self {
            socket,
            datagram,
            watch,
            ready,
            closed,
            buffer: Box::new_uninit_slice(if datagram { DATAGRAM_MAX } else { 0 }),
        })
    }

    /// Whether it is a datagram socket (a stream socket's program accepts).
    pub fn is_datagram(&self) -> bool {
        self.datagram
    }

    /// Waits until a datagram or a connection is waiting (or an error is
    /// pending).
    pub async fn readable(&mut self) -> io::Result<()> {
        let gone = || io::Error::new(io::ErrorKind::BrokenPipe, "the watching thread stopped");
        // An answer left by a wait that was cancelled says nothing now.
        while self.ready.try_recv().is_ok() {}
        self.watch.send(()).await.map_err(|_| gone())?;
        self.ready.recv().await.ok_or_else(gone)?
    }

    /// Whether a datagram or a connection is waiting now.
    pub fn is_readable_now(&self) -> bool {
        poll(&self.socket, 0).is_ok_and(|ready| ready)
    }

    /// The first waiting datagram's source and length, left in place;
    /// `None` when none is waiting after all.
    pub fn peek(&mut self) -> io::Result<Option<Datagram>> {
        let (socket, buffer) = (&self.socket, &mut self.buffer);
        let received = without_blocking(socket, || {
            socket.recv_from_with_flags(buffer, WinSock::MSG_PEEK)
        });
        Datagram::peeked(received, &self.buffer)
    }

    /// Reads the first waiting datagram and drops it.
    pub fn discard(&mut self) -> io::Result<()> {
        let (socket, buffer) = (&self.socket, &mut self.buffer);
        match without_blocking(socket, || socket.recv(buffer)) {
            Ok(_) => Ok(()),
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.raw_os_error() == Some(WinSock::WSAEMSGSIZE) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The socket as a program's standard handles; the daemon keeps its
    /// own.
    pub fn for_program(&self) -> ChildStdio {
        ChildStdio::Shared(Arc::clone(&self.socket))
    }

    /// The address it is bound to.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.socket.local_addr().ok()?.as_socket()
    }
}

impl Drop for WaitSocket {
    fn drop(&mut self) {
        // The thread lets its copy go when it sees this (or when the
        // request channel closes).
        self.closed.store(true, Ordering::Relaxed);
    }
}

/// Runs `call` with the socket non-blocking, then makes it blocking again:
/// only the daemon holds the socket while it calls (no program runs, and
/// the last one's job ended what it had started).
fn without_blocking<T>(socket: &Socket, call: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    socket.set_nonblocking(true)?;
    let result = call();
    socket.set_nonblocking(false)?;
    result
}

/// Without this, an ICMP "port unreachable" for a reply the program sent
/// makes the next receive on the socket fail with WSAECONNRESET
/// (SIO_UDP_CONNRESET, KB 263823): the program's, or the daemon's peek.
fn no_connection_resets(socket: &Socket) {
    let off: u32 = 0;
    let mut returned = 0u32;
    // SAFETY: a valid socket, an input buffer of the size given, no
    // output buffer, no overlapped call.
    let rc = unsafe {
        WinSock::WSAIoctl(
            socket.as_raw_socket() as WinSock::SOCKET,
            WinSock::SIO_UDP_CONNRESET,
            (&raw const off).cast(),
            std::mem::size_of::<u32>() as u32,
            std::ptr::null_mut(),
            0,
            &mut returned,
            std::ptr::null_mut(),
            None,
        )
    };
    if rc != 0 {
        tracing::debug!(error = %wsa_error(), "cannot turn off SIO_UDP_CONNRESET");
    }
}

/// Waits for the socket each time it is asked to, until the socket is
/// closed or the daemon's side is gone.
fn watch_thread(
    socket: &Socket,
    mut requests: mpsc::Receiver<()>,
    answers: mpsc::Sender<io::Result<()>>,
    closed: &AtomicBool,
) {
    let timeout = i32::try_from(POLL_INTERVAL.as_millis()).expect("a short interval");
    while requests.blocking_recv().is_some() {
        let answer = loop {
            if closed.load(Ordering::Relaxed) {
                return;
            }
            match poll(socket, timeout) {
                Ok(false) => continue,
                Ok(true) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        let failed = answer.is_err();
        if answers.blocking_send(answer).is_err() {
            return;
        }
        if failed {
            // The daemon backs off after an error; do not race ahead of it.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Whether the socket is readable within `timeout` milliseconds (WSAPoll).
fn poll(socket: &Socket, timeout: i32) -> io::Result<bool> {
    let mut poll = WinSock::WSAPOLLFD {
        fd: socket.as_raw_socket() as WinSock::SOCKET,
        events: WinSock::POLLRDNORM,
        revents: 0,
    };
    // SAFETY: one valid WSAPOLLFD.
    match unsafe { WinSock::WSAPoll(&mut poll, 1, timeout) } {
        0 => Ok(false),
        n if n < 0 => Err(wsa_error()),
        _ => Ok(true),
    }
}
