//! wininetd-bench: the load generator and report writer of wininetd's
//! benchmark suite. `bench/run.sh` starts the servers and calls this binary
//! once per measurement; see `bench/README.md`.
//!
//! Each measuring subcommand prints exactly one line of `key=value` fields on
//! stdout (the `--tag`s first), which `run.sh` collects and `report` turns
//! into `RESULTS.md`. The client does all its network work on one thread
//! (tokio's current-thread runtime), so it takes at most one core from the
//! machine it measures; only `ceiling`, which measures the machine itself,
//! uses one thread per loop.

mod bulk;
mod ceiling;
mod datagrams;
mod hold;
mod hottext;
mod line;
mod procfs;
mod report;
mod sessions;
mod tftp;
mod tls;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "wininetd's benchmark load generator (see bench/README.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Short sessions (connect, read the reply, see EOF) at a fixed
    /// concurrency: sessions per second, connect-to-first-byte latency, the
    /// daemon's CPU time per session.
    Sessions(sessions::Args),
    /// Datagrams to a UDP echo service, one in flight per socket:
    /// datagrams answered per second, round trips, the daemon's CPU time
    /// per answered datagram.
    Datagrams(datagrams::Args),
    /// One file fetched with a TFTP client from a server running in.tftpd
    /// in wait mode: time, checked bytes, the server's CPU time.
    Tftp(tftp::Args),
    /// Open long-lived echo sessions, verify them, hold them, verify again,
    /// close them; the daemon's memory before and during.
    Hold(hold::Args),
    /// Bulk throughput through one echo session.
    Bulk(bulk::Args),
    /// The machine's spawn ceiling: socketpair + spawn + read + wait in a
    /// loop, no network.
    Ceiling(ceiling::Args),
    /// Memory of running processes (idle daemons).
    Mem(procfs::MemArgs),
    /// Wait until something listens on a TCP port, or is bound to a UDP
    /// one (reads /proc/net, never connects or sends, so no session
    /// starts).
    WaitListen(procfs::WaitArgs),
    /// Write RESULTS.md from the collected lines.
    Report(report::Args),
    /// Write the linker script that groups the functions the daemon runs
    /// (link/hot-text.ld) from profiles of it; see bench/hot-text.sh.
    HotText(hottext::Args),
    /// How stale link/hot-text.ld is for a binary linked with it: how many
    /// of its patterns match no function any more (CI warns past a share).
    HotTextCheck(hottext::CheckArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sessions(args) => sessions::run(&args),
        Command::Datagrams(args) => datagrams::run(&args),
        Command::Tftp(args) => tftp::run(&args),
        Command::Hold(args) => hold::run(&args),
        Command::Bulk(args) => bulk::run(&args),
        Command::Ceiling(args) => ceiling::run(&args),
        Command::Mem(args) => procfs::mem(&args),
        Command::WaitListen(args) => procfs::wait_listen(&args),
        Command::Report(args) => report::run(&args),
        Command::HotText(args) => hottext::run(&args),
        Command::HotTextCheck(args) => hottext::check(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wininetd-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Parses `1.5s`, `200ms` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1e-3)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text:?} (e.g. 2s, 500ms)"))?;
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("{text:?}: {e}"))
}

/// A current-thread runtime: the client's whole network side on one thread.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
