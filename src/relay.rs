//! The relay of `stdio = "pipe"`: the daemon stands between the connection
//! and a program's pipes, carrying EOF both ways.
//!
//! A relay is part of its session: it is made before the program starts
//! (so that nothing is left to fail once the program runs), runs on a task
//! the session owns, and the session ends only once the program has exited
//! *and* the relay has drained. So a relay held open by whatever inherited
//! the program's output still counts against the session caps and the
//! daemon's descriptors. Ending a session early (stop, `max_lifetime`)
//! ends its relay with it.
//!
//! Two kinds: a plain connection's bytes move in the platform's byte
//! movers (`platform::Relay`: splice(2) on Linux, buffered copies
//! elsewhere); a TLS connection's are decrypted and encrypted by rustls in
//! the daemon and copied to and from the program's pipes through one
//! buffer per direction, kept for the session. Either way EOF is carried
//! both ways: the client's (for TLS, its close_notify, or the connection's
//! end) closes the program's stdin; the end of the program's output
//! half-closes the connection (for TLS, after a close_notify).

use std::io;
use std::time::Duration;

use socket2::Socket;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;

use crate::platform::relay::{bounded, copy, until_output};
use crate::platform::{self, ChildStdio};

/// A relay made for a connection, not running yet.
#[derive(Debug)]
pub enum Relay {
    /// A plain connection.
    Plain(platform::Relay),
    /// A TLS connection whose handshake is done.
    Tls {
        stream: Box<TlsStream<TcpStream>>,
        pipes: platform::Pipes,
        timeout: Option<Duration>,
    },
}

/// A running relay, owned by its session; dropping it ends the relay.
#[derive(Debug)]
pub struct Running(Option<JoinHandle<()>>);

impl Relay {
    /// Makes the pipes for `socket`: the relay, and what the program gets
    /// as its stdin and stdout. `timeout` bounds each wait on the
    /// connection, as SO_RCVTIMEO and SO_SNDTIMEO do in socket mode.
    pub fn new(socket: Socket, timeout: Option<Duration>) -> io::Result<(Self, ChildStdio)> {
        let (relay, ends) = platform::Relay::new(socket, timeout)?;
        Ok((Self::Plain(relay), ChildStdio::Relayed(ends)))
    }

    /// Makes the pipes for a TLS connection: the relay, and what the
    /// program gets as its stdin and stdout.
    pub fn tls(
        stream: TlsStream<TcpStream>,
        timeout: Option<Duration>,
    ) -> io::Result<(Self, ChildStdio)> {
        let (pipes, ends) = platform::Pipes::new()?;
        let relay = Self::Tls {
            stream: Box::new(stream),
            pipes,
            timeout,
        };
        Ok((relay, ChildStdio::Relayed(ends)))
    }

    /// Starts moving bytes, once the program runs.
    pub fn start(self) -> Running {
        let task = match self {
            Self::Plain(relay) => tokio::spawn(relay.run()),
            Self::Tls {
                stream,
                pipes,
                timeout,
            } => tokio::spawn(relay_tls(*stream, pipes, timeout)),
        };
        Running(Some(task))
    }
}

/// Relays a TLS connection and a program's pipes until the program's output
/// ends.
async fn relay_tls(
    stream: TlsStream<TcpStream>,
    pipes: platform::Pipes,
    timeout: Option<Duration>,
) {
    if pipes.connect().await.is_err() {
        return;
    }
    let platform::Pipes {
        mut to_child,
        mut from_child,
    } = pipes;
    let (mut tls_in, mut tls_out) = tokio::io::split(stream);
    let input = async move {
        // Ends at the client's close_notify, or at the connection's end
        // without one (a truncation: the program gets EOF all the same).
        let _ = copy(&mut tls_in, &mut to_child, timeout, None).await;
        drop(to_child);
    };
    let output = async move {
        let _ = copy(&mut from_child, &mut tls_out, None, timeout).await;
        // A close_notify, then the connection's sending side is shut down.
        let _ = bounded(timeout, tls_out.shutdown()).await;
    };
    until_output(input, output).await;
}

impl Running {
    /// Resolves once the relay is done: the program's output has ended (and
    /// the connection's sending side is shut down), or the connection has
    /// failed.
    pub async fn drained(&mut self) {
        if let Some(task) = &mut self.0 {
            let _ = task.await;
            self.0 = None;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}
