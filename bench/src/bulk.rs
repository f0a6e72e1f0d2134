//! Bulk throughput through one echo session: write `bytes` of a known
//! pattern while reading them back (both halves on the one thread), shut
//! down our side, and expect EOF after exactly `bytes`. Every byte that comes
//! back is checked.
//!
//! With `--tls-cert`, the session is TLS 1.3 (a full handshake, timed with
//! the transfer; see `tls`): our shutdown is a close_notify, and the
//! server's close_notify is the EOF expected.

use std::error::Error;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use crate::line::{Line, Tags};
use crate::procfs;
use crate::tls;

/// The pattern's period: a prime, so that it never lines up with a buffer.
const PERIOD: usize = 251;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The echo service's address.
    #[arg(long)]
    addr: SocketAddr,
    /// Bytes to send (and receive back).
    #[arg(long, default_value_t = 256 << 20)]
    bytes: u64,
    /// Size of each write and read.
    #[arg(long, default_value_t = 128 << 10)]
    chunk: usize,
    /// Shut our side down (for TLS: send our close_notify) only once every
    /// byte came back, then expect EOF, rather than as soon as the last
    /// byte is written: a server that ends the session at the client's
    /// EOF (stunnel at its close_notify) drops what the program still had
    /// to send.
    #[arg(long)]
    close_after_echo: bool,
    /// The whole transfer fails after this.
    #[arg(long, value_parser = crate::parse_duration, default_value = "60s")]
    timeout: Duration,
    #[command(flatten)]
    tls: tls::TlsArgs,
    #[command(flatten)]
    cpu: procfs::CpuSource,
    #[command(flatten)]
    tags: Tags,
}

pub fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let pattern: Vec<u8> = (0..PERIOD + args.chunk)
        .map(|i| (i % PERIOD) as u8)
        .collect();
    let tls = tls::Client::from_args(&args.tls)?;
    let cpu0 = args.cpu.sample()?;
    let started = Instant::now();
    let agreed = crate::runtime()?.block_on(async {
        tokio::time::timeout(args.timeout, transfer(args, tls.as_ref(), &pattern))
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "transfer timed out",
                ))
            })
    })?;
    let secs = started.elapsed().as_secs_f64();
    let mut line = Line::new(&args.tags);
    line.field("bytes", args.bytes)
        .field("secs", format!("{secs:.3}"))
        .field("mb_per_s", format!("{:.1}", args.bytes as f64 / secs / 1e6));
    if let Some(before) = cpu0 {
        // A forking server reaps its per-connection process just after the
        // close: give it a moment, so that its time is counted.
        std::thread::sleep(Duration::from_millis(200));
        let cpu = args.cpu.sample()?.unwrap_or(before).since(before);
        let per_gb = |ns: u64| format!("{:.1}", ns as f64 / 1e6 / (args.bytes as f64 / 1e9));
        line.field("own_cpu_ms_per_gb", per_gb(cpu.own_ns))
            .field("tree_cpu_ms_per_gb", per_gb(cpu.tree_ns));
    }
    if let Some(agreed) = agreed {
        line.field("tls_version", agreed.version)
            .field("cipher", agreed.cipher)
            .field("kx", agreed.kx)
            .field("retried", u8::from(agreed.retried));
    }
    line.print();
    Ok(())
}

/// Connects (and with TLS, shakes hands), then moves the bytes; for TLS,
/// returns what the handshake agreed on.
async fn transfer(
    args: &Args,
    tls: Option<&tls::Client>,
    pattern: &[u8],
) -> io::Result<Option<tls::Agreed>> {
    let socket = match args.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    let mut stream = socket.connect(args.addr).await?;
    match tls {
        None => {
            let (reader, writer) = stream.split();
            echo(args, reader, writer, pattern).await?;
            Ok(None)
        }
        Some(client) => {
            let stream = client.connect(stream).await?;
            let agreed = tls::agreed(&stream);
            let (reader, writer) = tokio::io::split(stream);
            echo(args, reader, writer, pattern).await?;
            Ok(Some(agreed))
        }
    }
}

/// Writes the bytes while reading them back, both halves on this thread.
async fn echo<R, W>(args: &Args, mut reader: R, mut writer: W, pattern: &[u8]) -> io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let write = async {
        let mut sent = 0u64;
        while sent < args.bytes {
            let offset = (sent % PERIOD as u64) as usize;
            let n = args
                .chunk
                .min(usize::try_from(args.bytes - sent).unwrap_or(usize::MAX));
            writer.write_all(&pattern[offset..offset + n]).await?;
            sent += n as u64;
        }
        if args.close_after_echo {
            writer.flush().await
        } else {
            writer.shutdown().await
        }
    };
    let read = async {
        let mut buf = vec![0; args.chunk];
        let mut received = 0u64;
        loop {
            if args.close_after_echo && received == args.bytes {
                break;
            }
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            let offset = (received % PERIOD as u64) as usize;
            if buf[..n] != pattern[offset..offset + n] {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("echoed bytes differ near offset {received}"),
                ));
            }
            received += n as u64;
        }
        if received != args.bytes {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{received} of {} bytes came back", args.bytes),
            ));
        }
        Ok(())
    };
    tokio::try_join!(write, read)?;
    if args.close_after_echo {
        writer.shutdown().await?;
        let mut more = [0u8; 1];
        if reader.read(&mut more).await? != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bytes came back past those sent",
            ));
        }
    }
    Ok(())
}
