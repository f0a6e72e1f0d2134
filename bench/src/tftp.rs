//! One file fetched with a TFTP client (tftp-hpa's `tftp`) from a server
//! that runs `in.tftpd` in wait mode: the time the client took, the file
//! checked byte for byte, and the server's CPU time over the whole cycle.
//!
//! Each transfer starts from an idle server: before it, the server's tree
//! must hold the daemon alone (the previous `in.tftpd` gone), so that the
//! request is the datagram that makes the daemon start `in.tftpd` on its
//! socket. The CPU time is read from then until the tree is idle again, so
//! it counts the daemon's whole wait-mode cycle (start, wait, reap, watch
//! the socket again) and the transfer's processes.

use std::error::Error;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::line::{Line, Tags};
use crate::procfs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The TFTP service's address (a literal address).
    #[arg(long)]
    addr: SocketAddr,
    /// The file to ask for, as the server names it.
    #[arg(long)]
    file: String,
    /// The same file on this machine, to check what came.
    #[arg(long)]
    source: PathBuf,
    /// Where the client writes it (removed first, and after the check).
    #[arg(long)]
    out: PathBuf,
    /// The client program (tftp-hpa's command line: `-m binary HOST PORT
    /// -c get FILE OUT`).
    #[arg(long, default_value = "tftp")]
    client: String,
    /// The transfer fails after this; the client is killed.
    #[arg(long, value_parser = crate::parse_duration, default_value = "60s")]
    timeout: Duration,
    /// How long to wait for the server's tree to be idle, before and after.
    #[arg(long, value_parser = crate::parse_duration, default_value = "10s")]
    idle_timeout: Duration,
    #[command(flatten)]
    cpu: procfs::CpuSource,
    #[command(flatten)]
    tags: Tags,
}

pub fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let expected =
        std::fs::read(&args.source).map_err(|e| format!("{}: {e}", args.source.display()))?;
    match std::fs::remove_file(&args.out) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("{}: {e}", args.out.display()).into());
        }
        _ => {}
    }
    let fresh = wait_idle(&args.cpu, args.idle_timeout)?;
    let cpu0 = args.cpu.sample()?;
    let started = Instant::now();
    let output = fetch(args)?;
    let secs = started.elapsed().as_secs_f64();
    let idle_after = wait_idle(&args.cpu, args.idle_timeout)?;
    let cpu = match cpu0 {
        Some(before) => args.cpu.sample()?.map(|now| now.since(before)),
        None => None,
    };
    let got = std::fs::read(&args.out).unwrap_or_default();
    let _ = std::fs::remove_file(&args.out);
    let mut line = Line::new(&args.tags);
    line.field("bytes", expected.len())
        .field("secs", format!("{secs:.3}"))
        .field(
            "mb_per_s",
            format!("{:.2}", expected.len() as f64 / secs / 1e6),
        )
        .field("fresh", yes_no(fresh))
        .field("idle_after", yes_no(idle_after));
    if let Some(cpu) = cpu {
        line.field("own_cpu_ms", format!("{:.3}", cpu.own_ns as f64 / 1e6))
            .field("tree_cpu_ms", format!("{:.3}", cpu.tree_ns as f64 / 1e6));
    }
    let verdict = check(&expected, &got);
    line.field("ok", yes_no(verdict.is_ok()));
    line.print();
    verdict.map_err(|e| {
        let said = output.trim();
        if said.is_empty() {
            e.into()
        } else {
            format!("{e}; the client said: {said}").into()
        }
    })
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Runs the client to its end (or kills it at the timeout); returns what
/// it printed.
fn fetch(args: &Args) -> Result<String, Box<dyn Error>> {
    let mut child = Command::new(&args.client)
        .args(["-m", "binary"])
        .arg(args.addr.ip().to_string())
        .arg(args.addr.port().to_string())
        .arg("-c")
        .arg("get")
        .arg(&args.file)
        .arg(&args.out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", args.client))?;
    let deadline = Instant::now() + args.timeout;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("the transfer took more than {:?}", args.timeout).into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // What it printed is small (an error line at most): the pipes cannot
    // have filled and blocked it.
    let mut said = String::new();
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read>),
    ]
    .into_iter()
    .flatten()
    {
        let _ = pipe.take(4096).read_to_string(&mut said);
    }
    Ok(said)
}

/// Whether what came is the file, byte for byte.
fn check(expected: &[u8], got: &[u8]) -> Result<(), String> {
    if got.len() != expected.len() {
        return Err(format!("{} of {} bytes came", got.len(), expected.len()));
    }
    match expected.iter().zip(got).position(|(a, b)| a != b) {
        Some(at) => Err(format!("the file differs at byte {at}")),
        None => Ok(()),
    }
}

/// Waits until the server's tree holds the daemon alone; `false` if it
/// still did not at the timeout (or without a pid to look at).
fn wait_idle(cpu: &procfs::CpuSource, timeout: Duration) -> Result<bool, Box<dyn Error>> {
    let Some(pid) = cpu.pid else {
        return Ok(false);
    };
    let deadline = Instant::now() + timeout;
    loop {
        if procfs::tree_pids(pid, cpu.cgroup.as_deref())? == [pid] {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_must_come_whole_and_exact() {
        assert_eq!(check(b"abc", b"abc"), Ok(()));
        assert_eq!(check(b"abc", b"ab"), Err("2 of 3 bytes came".to_owned()));
        assert_eq!(
            check(b"abc", b"abd"),
            Err("the file differs at byte 2".to_owned())
        );
        assert_eq!(check(b"", b""), Ok(()));
    }
}
