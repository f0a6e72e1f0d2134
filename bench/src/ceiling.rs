//! The machine's spawn ceiling: what a super-server could do at best with no
//! network. Each of `threads` loops does what a server does for a session
//! minus the TCP part: a socket pair, the program spawned with one end as its
//! stdin, stdout and stderr (the standard library's `posix_spawn`, a vfork
//! on Linux, as wininetd's own spawn), the reply read to EOF, the child
//! waited for.

use std::error::Error;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::line::{Line, Tags};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The program to run (one of the suite's children).
    #[arg(long)]
    program: PathBuf,
    /// Loops running at once, each on its own thread.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// The measured window.
    #[arg(long, value_parser = crate::parse_duration, default_value = "2s")]
    duration: Duration,
    /// Spawns before the window, not counted.
    #[arg(long, value_parser = crate::parse_duration, default_value = "300ms")]
    warmup: Duration,
    /// The reply the program must write, exactly.
    #[arg(long, default_value = "hello\n")]
    expect: String,
    /// Stop each loop after this many spawns.
    #[arg(long, default_value_t = 1_000_000)]
    max_spawns: u64,
    #[command(flatten)]
    tags: Tags,
}

pub fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    if args.threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    let start = Instant::now() + args.warmup;
    let end = start + args.duration;
    let counts = std::thread::scope(|scope| {
        let loops: Vec<_> = (0..args.threads)
            .map(|_| scope.spawn(|| spawn_loop(args, start, end)))
            .collect();
        loops
            .into_iter()
            .map(|l| l.join().expect("a spawn loop does not panic"))
            .collect::<io::Result<Vec<u64>>>()
    })?;
    let total: u64 = counts.iter().sum();
    let secs = args.duration.as_secs_f64();
    Line::new(&args.tags)
        .field("threads", args.threads)
        .field("spawns", total)
        .field("secs", format!("{secs:.3}"))
        .field("rate", format!("{:.1}", total as f64 / secs))
        .print();
    Ok(())
}

/// Spawns until `end`; returns how many completed between `start` and `end`.
fn spawn_loop(args: &Args, start: Instant, end: Instant) -> io::Result<u64> {
    let mut counted = 0;
    let mut reply = Vec::with_capacity(args.expect.len() + 64);
    for _ in 0..args.max_spawns {
        once(&args.program, &mut reply)?;
        if reply != args.expect.as_bytes() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected reply {:?}", String::from_utf8_lossy(&reply)),
            ));
        }
        let now = Instant::now();
        if now >= end {
            break;
        }
        if now >= start {
            counted += 1;
        }
    }
    Ok(counted)
}

fn once(program: &Path, reply: &mut Vec<u8>) -> io::Result<()> {
    let (mut ours, theirs) = UnixStream::pair()?;
    let theirs = OwnedFd::from(theirs);
    let mut child = {
        // The command owns the child's copies of the socket; dropping it at
        // the end of this block closes them, so that we see EOF.
        let mut command = Command::new(program);
        command
            .stdin(Stdio::from(theirs.try_clone()?))
            .stdout(Stdio::from(theirs.try_clone()?))
            .stderr(Stdio::from(theirs));
        command.spawn()?
    };
    reply.clear();
    ours.read_to_end(reply)?;
    child.wait()?;
    Ok(())
}
