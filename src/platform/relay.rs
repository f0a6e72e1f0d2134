//! The pipe relay of `stdio = "pipe"` where it copies through the daemon:
//! Windows, and Unix systems other than Linux (Linux splices instead,
//! `unix/splice.rs`).
//!
//! The child reads its stdin from one pipe and writes its stdout (and,
//! unless it goes to the log, its stderr) to another; the relay copies the
//! connection into the first and the second into the connection, and
//! carries EOF both ways: the client's EOF closes the child's stdin, the
//! child's EOF half-closes the connection. The relay ends with the child's
//! output; the session itself ends when the child exits.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Relays `stream` and a child's pipes until the child's output ends.
/// `timeout` bounds each wait on the connection, as SO_RCVTIMEO and
/// SO_SNDTIMEO do in socket mode: a client silent that long gives the
/// child EOF; one that reads nothing that long ends the relay.
#[cfg(not(target_os = "linux"))]
pub async fn relay<I, O>(
    stream: tokio::net::TcpStream,
    to_child: I,
    from_child: O,
    timeout: Option<Duration>,
) where
    I: AsyncWrite + Unpin,
    O: AsyncRead + Unpin,
{
    let (mut socket_in, mut socket_out) = stream.into_split();
    let mut to_child = to_child;
    let mut from_child = from_child;
    let input = async move {
        let _ = copy(&mut socket_in, &mut to_child, timeout, None).await;
        // Dropping the pipe gives the child EOF.
    };
    let output = async move {
        let _ = copy(&mut from_child, &mut socket_out, None, timeout).await;
        let _ = socket_out.shutdown().await;
    };
    until_output(input, output).await;
}

/// Runs a relay's two directions together until `output` (the child's
/// output) is done; `input` may end first.
pub async fn until_output(input: impl Future<Output = ()>, output: impl Future<Output = ()>) {
    tokio::pin!(input, output);
    let mut input_done = false;
    loop {
        tokio::select! {
            () = &mut input, if !input_done => input_done = true,
            () = &mut output => break,
        }
    }
}

/// Copies until EOF through one buffer, each read and write bounded by
/// its timeout.
pub async fn copy<R, W>(
    reader: &mut R,
    writer: &mut W,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = bounded(read_timeout, reader.read(&mut buf)).await?;
        if n == 0 {
            writer.flush().await?;
            return Ok(total);
        }
        bounded(write_timeout, writer.write_all(&buf[..n])).await?;
        total += n as u64;
    }
}

/// `io`, failing with `TimedOut` if it takes longer than `timeout`.
pub async fn bounded<T>(
    timeout: Option<Duration>,
    io: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match timeout {
        None => io.await,
        Some(timeout) => tokio::time::timeout(timeout, io)
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?,
    }
}
