//! Long-lived sessions: open `count` echo sessions (a few at a time), verify
//! each with a line it must echo, hold them all for `hold`, verify each
//! again, then close each (shut down our side, expect the server's EOF).
//! The server's memory is read before the first is opened and while all are
//! held. A session succeeds if it passed all three steps.

use std::cell::RefCell;
use std::error::Error;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::LocalSet;

use crate::line::{Line, Tags};
use crate::procfs::{self, ServerMemory};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The echo service's address.
    #[arg(long)]
    addr: SocketAddr,
    /// Sessions to open and hold.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// How long to hold them, once all are open.
    #[arg(long, value_parser = crate::parse_duration, default_value = "10s")]
    hold: Duration,
    /// Sessions being opened, verified or closed at once.
    #[arg(long, default_value_t = 32)]
    parallel: usize,
    /// Each step of one session (connect, echo, close) fails after this.
    #[arg(long, value_parser = crate::parse_duration, default_value = "10s")]
    timeout: Duration,
    /// The daemon serving this port.
    #[arg(long)]
    pid: u32,
    /// The served program's command name (`comm`), so that its processes are
    /// not counted as the server's memory. Repeatable.
    #[arg(long = "program", default_value = "bench-echo")]
    programs: Vec<String>,
    #[command(flatten)]
    tags: Tags,
}

/// One held session.
#[derive(Debug, Default)]
struct Slot {
    stream: Option<TcpStream>,
    opened: bool,
    verified: bool,
    closed: bool,
}

type Slots = Rc<RefCell<Vec<Slot>>>;

pub fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let slots: Slots = Rc::new(RefCell::new(
        (0..args.count).map(|_| Slot::default()).collect(),
    ));
    let local = LocalSet::new();
    let (before, during, open_secs) = local.block_on(&crate::runtime()?, async {
        let before = procfs::server_memory(args.pid, &args.programs)?;
        let started = Instant::now();
        let (addr, timeout) = (args.addr, args.timeout);
        let s = Rc::clone(&slots);
        in_parallel(args.count, args.parallel, move |i| {
            open(Rc::clone(&s), i, addr, timeout)
        })
        .await;
        let open_secs = started.elapsed().as_secs_f64();
        // Let the server settle (reap, free) before reading its memory.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let during = procfs::server_memory(args.pid, &args.programs)?;
        tokio::time::sleep(args.hold.saturating_sub(Duration::from_millis(500))).await;
        let s = Rc::clone(&slots);
        in_parallel(args.count, args.parallel, move |i| {
            verify(Rc::clone(&s), i, timeout)
        })
        .await;
        let s = Rc::clone(&slots);
        in_parallel(args.count, args.parallel, move |i| {
            close(Rc::clone(&s), i, timeout)
        })
        .await;
        Ok::<_, io::Error>((before, during, open_secs))
    })?;

    let slots = slots.borrow();
    let count = |f: fn(&Slot) -> bool| slots.iter().filter(|s| f(s)).count();
    let opened = count(|s| s.opened);
    let successes = count(|s| s.opened && s.verified && s.closed);
    let per_session = |kib_before: u64, kib_during: u64| match opened {
        0 => "nan".to_owned(),
        n => format!(
            "{:.0}",
            // PSS moves as other processes map or drop shared pages: memory
            // that shrank while sessions were added grew by nothing.
            kib_during.saturating_sub(kib_before) as f64 * 1024.0 / n as f64
        ),
    };
    let ServerMemory {
        daemon_rss_kib: rss0,
        server_pss_kib: pss0,
        ..
    } = before;
    Line::new(&args.tags)
        .field("count", args.count)
        .field("hold_secs", format!("{:.0}", args.hold.as_secs_f64()))
        .field("opened", opened)
        .field("verified", count(|s| s.verified))
        .field("closed", count(|s| s.closed))
        .field("successes", successes)
        .field("open_secs", format!("{open_secs:.3}"))
        .field("rss_before_kib", rss0)
        .field("rss_during_kib", during.daemon_rss_kib)
        .field(
            "rss_per_session_b",
            per_session(rss0, during.daemon_rss_kib),
        )
        .field("server_pss_before_kib", pss0)
        .field("server_pss_during_kib", during.server_pss_kib)
        .field(
            "server_per_session_b",
            per_session(pss0, during.server_pss_kib),
        )
        .field("server_processes", during.server_processes)
        .field("programs", during.programs)
        .print();
    if successes < args.count {
        eprintln!(
            "wininetd-bench hold: {successes} of {} sessions succeeded ({opened} opened)",
            args.count
        );
    }
    Ok(())
}

/// Runs `task(0..n)`, `parallel` at a time, on the current `LocalSet`.
async fn in_parallel<F, Fut>(n: usize, parallel: usize, task: F)
where
    F: Fn(usize) -> Fut + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let next = Rc::new(std::cell::Cell::new(0));
    let runners: Vec<_> = (0..parallel.clamp(1, n.max(1)))
        .map(|_| {
            let (next, task) = (Rc::clone(&next), task.clone());
            tokio::task::spawn_local(async move {
                loop {
                    let i = next.get();
                    if i >= n {
                        break;
                    }
                    next.set(i + 1);
                    task(i).await;
                }
            })
        })
        .collect();
    for runner in runners {
        let _ = runner.await;
    }
}

/// Sends a line naming the session and the step, and expects it back.
async fn echo(stream: &mut TcpStream, i: usize, step: &str) -> io::Result<()> {
    let line = format!("{step} {i}\n");
    stream.write_all(line.as_bytes()).await?;
    let mut back = vec![0; line.len()];
    stream.read_exact(&mut back).await?;
    if back != line.as_bytes() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "echo differs"));
    }
    Ok(())
}

async fn open(slots: Slots, i: usize, addr: SocketAddr, timeout: Duration) {
    let opened = tokio::time::timeout(timeout, async {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        let mut stream = socket.connect(addr).await?;
        echo(&mut stream, i, "open").await?;
        Ok::<_, io::Error>(stream)
    })
    .await;
    if let Ok(Ok(stream)) = opened {
        let mut slots = slots.borrow_mut();
        slots[i].stream = Some(stream);
        slots[i].opened = true;
    }
}

async fn verify(slots: Slots, i: usize, timeout: Duration) {
    let Some(mut stream) = slots.borrow_mut()[i].stream.take() else {
        return;
    };
    let ok = matches!(
        tokio::time::timeout(timeout, echo(&mut stream, i, "again")).await,
        Ok(Ok(()))
    );
    let mut slots = slots.borrow_mut();
    slots[i].verified = ok;
    slots[i].stream = Some(stream);
}

/// Shuts our side down; the echo program sees EOF and exits, and the
/// server's side must then close with nothing more sent.
async fn close(slots: Slots, i: usize, timeout: Duration) {
    let Some(mut stream) = slots.borrow_mut()[i].stream.take() else {
        return;
    };
    let closed = tokio::time::timeout(timeout, async {
        stream.shutdown().await?;
        let mut rest = [0; 64];
        match stream.read(&mut rest).await? {
            0 => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "data after close",
            )),
        }
    })
    .await;
    slots.borrow_mut()[i].closed = matches!(closed, Ok(Ok(())));
}
