//! A program's stderr in the daemon's log (`stderr = "log"`).
//!
//! Each line the program writes is one INFO event with the fixed message
//! `program output` and the line in a field of its own, `output`: quoted
//! and escaped in text (control characters, quotes, backslashes; bytes
//! that are not UTF-8 as `\xNN`), a JSON string in JSON. Nothing a program
//! writes can pass for a line of the daemon's own, nor end a line or a
//! journal record early. Lines longer than [`MAX_LINE`] are split.
//!
//! A program may write far more than a log can take (`yes >&2`). Its lines
//! are bounded by two token buckets, each in lines and in bytes: the
//! session's ([`SESSION`]) and its service's, shared by all the sessions
//! of the service ([`SERVICE`]). Lines over either budget are dropped and
//! counted, and the count is logged (`program output dropped`) when the
//! flood ends, at most every [`SUMMARY_INTERVAL`] while it lasts, and when
//! the session ends. Once over budget the pipe is read only once per
//! [`PAUSE`]: the pipe fills and the program blocks in its write. The
//! flood then costs the daemon one small read now and then instead of its
//! runtime thread, which accepts for every service, and the flooding
//! program waits instead of taking a core from the others. (Reading and
//! discarding at full speed would keep both the daemon and the program
//! busy; blocking the program for good, never dropping, would stall a
//! merely chatty program at the log's pace and keep its pipe full.)
//!
//! The reading ends with the session: when the [`StderrLog`] guard drops,
//! what the pipe holds then is read (within its budget) and the pipe is
//! closed, so that a process that outlives its session cannot keep a
//! descriptor of the daemon's.
//!
//! Not here: where log lines go and how they are queued ([`crate::logging`]).

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::LogFormat;
use crate::logging;
use crate::platform;
use crate::session::SessionInfo;

/// The longest line logged as one event; longer ones are split.
pub const MAX_LINE: usize = 8 * 1024;

/// The bytes read from the pipe at a time.
const READ_SIZE: usize = 8 * 1024;

/// A token bucket's size and refill.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub burst: f64,
    pub per_second: f64,
}

/// What a budget allows, in lines and in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub lines: Rate,
    pub bytes: Rate,
}

/// One session's budget: a burst of 200 lines (64 KiB), then 20 lines
/// (16 KiB) a second.
pub const SESSION: Limit = Limit {
    lines: Rate {
        burst: 200.0,
        per_second: 20.0,
    },
    bytes: Rate {
        burst: 64.0 * 1024.0,
        per_second: 16.0 * 1024.0,
    },
};

/// One service's budget, all its sessions together: a burst of 2000 lines
/// (1 MiB), then 500 lines (256 KiB) a second.
pub const SERVICE: Limit = Limit {
    lines: Rate {
        burst: 2000.0,
        per_second: 500.0,
    },
    bytes: Rate {
        burst: 1024.0 * 1024.0,
        per_second: 256.0 * 1024.0,
    },
};

/// Once over budget, the pipe is read at most once per `PAUSE`.
pub const PAUSE: Duration = Duration::from_millis(250);

/// While lines are being dropped, the count is logged at most this often.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// At the session's end, the pipe is read until it has nothing more for
/// [`DRAIN_IDLE`], and for no longer than [`DRAIN_TIME`] or
/// [`DRAIN_BYTES`]: a pipe holds 64 KiB on Linux, and the program has
/// exited.
const DRAIN_IDLE: Duration = Duration::from_millis(20);
const DRAIN_TIME: Duration = Duration::from_millis(500);
const DRAIN_BYTES: usize = 256 * 1024;

/// Reads a session's stderr into the log while it lives; dropping it ends
/// the reading (see the module's documentation).
#[derive(Debug)]
#[must_use = "the stderr is read only while the guard lives"]
pub struct StderrLog {
    _ended: oneshot::Sender<()>,
    /// The reading task, until [`StderrLog::drained`] has seen it end.
    task: Option<JoinHandle<()>>,
}

impl StderrLog {
    /// Resolves once the program's stderr is at its end: every process
    /// that held the pipe has closed it.
    pub async fn drained(&mut self) {
        if let Some(task) = &mut self.task {
            let _ = task.await;
            self.task = None;
        }
    }
}

/// Starts logging `pipe`, the stderr of the session `info`, on a task of
/// its own.
pub fn start(pipe: platform::StderrPipe, info: SessionInfo) -> StderrLog {
    let (ended_tx, ended) = oneshot::channel();
    let now = Instant::now();
    let log = SessionLog {
        service: service_budget(&info.service, now),
        info,
        budget: Budget::new(&SESSION, now),
        dropped: Dropped::default(),
        format: logging::format(),
    };
    let task = tokio::spawn(read(pipe, log, ended));
    StderrLog {
        _ended: ended_tx,
        task: Some(task),
    }
}

/// A service's budget, shared by its sessions.
type SharedBudget = Arc<Mutex<Budget>>;

/// The budgets of the services that have sessions with a logged stderr,
/// by name; an entry goes with the last of them.
static SERVICES: LazyLock<Mutex<Budgets>> = LazyLock::new(Mutex::default);
type Budgets = HashMap<Arc<str>, Weak<Mutex<Budget>>>;

/// The budget of `service`, shared by its sessions; a new one if it has
/// none left.
fn service_budget(service: &Arc<str>, now: Instant) -> SharedBudget {
    let mut services = SERVICES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(budget) = services.get(service).and_then(Weak::upgrade) {
        return budget;
    }
    services.retain(|_, budget| budget.strong_count() > 0);
    let budget = Arc::new(Mutex::new(Budget::new(&SERVICE, now)));
    services.insert(Arc::clone(service), Arc::downgrade(&budget));
    budget
}

async fn read(
    mut pipe: platform::StderrPipe,
    mut log: SessionLog,
    mut ended: oneshot::Receiver<()>,
) {
    tokio::select! {
        biased;
        _ = &mut ended => return,
        ready = platform::stderr_ready(&mut pipe) => if ready.is_err() {
            return;
        },
    }
    let mut buf = vec![0; READ_SIZE];
    let mut lines = Lines::default();
    loop {
        let n = tokio::select! {
            biased;
            _ = &mut ended => break,
            read = pipe.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    log.finish(&mut lines);
                    return;
                }
                Ok(n) => n,
            },
        };
        if log.chunk(&mut lines, &buf[..n], Instant::now()) {
            tokio::select! {
                biased;
                _ = &mut ended => break,
                () = tokio::time::sleep(PAUSE) => {}
            }
        }
    }
    // The session has ended: what the pipe holds now, then no more.
    let started = Instant::now();
    let mut left = DRAIN_BYTES;
    while left > 0 && started.elapsed() < DRAIN_TIME {
        match tokio::time::timeout(DRAIN_IDLE, pipe.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                log.chunk(&mut lines, &buf[..n], Instant::now());
                left = left.saturating_sub(n);
            }
            _ => break,
        }
    }
    log.finish(&mut lines);
}

/// One session's logging state.
#[derive(Debug)]
struct SessionLog {
    info: SessionInfo,
    budget: Budget,
    service: SharedBudget,
    dropped: Dropped,
    format: LogFormat,
}

/// Lines dropped and not yet reported.
#[derive(Debug, Default)]
struct Dropped {
    lines: u64,
    bytes: u64,
    /// When the last report was made, or the first line dropped since.
    since: Option<Instant>,
}

impl SessionLog {
    /// Logs the lines `bytes` completes; returns whether any was dropped.
    fn chunk(&mut self, lines: &mut Lines, bytes: &[u8], now: Instant) -> bool {
        let before = self.dropped.lines;
        lines.feed(bytes, |line| self.line(line, now));
        let dropping = self.dropped.lines > before;
        let due = self
            .dropped
            .since
            .is_some_and(|since| now.saturating_duration_since(since) >= SUMMARY_INTERVAL);
        if self.dropped.lines > 0 && (!dropping || due) {
            self.report(now);
        }
        dropping
    }

    /// Logs what is left: a last line with no newline, and the count of
    /// lines dropped.
    fn finish(&mut self, lines: &mut Lines) {
        let now = Instant::now();
        if let Some(line) = lines.rest() {
            self.line(&line, now);
        }
        if self.dropped.lines > 0 {
            self.report(now);
        }
    }

    /// Logs one line if the session's and the service's budgets allow it;
    /// otherwise counts it.
    fn line(&mut self, line: &[u8], now: Instant) {
        let cost = line.len() as f64;
        self.budget.refill(now);
        let allowed = self.budget.allows(cost) && {
            let mut service = self.service.lock().unwrap_or_else(PoisonError::into_inner);
            service.refill(now);
            service.allows(cost) && {
                service.take(cost);
                true
            }
        };
        if !allowed {
            self.dropped.lines += 1;
            self.dropped.bytes += line.len() as u64;
            self.dropped.since.get_or_insert(now);
            return;
        }
        self.budget.take(cost);
        let info = &self.info;
        match self.format {
            LogFormat::Text => info!(
                service = %info.service,
                pid = info.pid,
                stream = "stderr",
                output = %Quoted(line),
                "program output"
            ),
            LogFormat::Json => info!(
                service = %info.service,
                pid = info.pid,
                stream = "stderr",
                output = &*String::from_utf8_lossy(line),
                "program output"
            ),
        }
    }

    /// Logs the count of dropped lines and starts a new count.
    fn report(&mut self, now: Instant) {
        let info = &self.info;
        warn!(
            service = %info.service,
            pid = info.pid,
            stream = "stderr",
            lines = self.dropped.lines,
            bytes = self.dropped.bytes,
            "program output dropped: over the log budget"
        );
        self.dropped = Dropped {
            since: Some(now),
            ..Dropped::default()
        };
    }
}

/// Splits a byte stream into lines: at `\n` (a `\r` before it is
/// dropped too), and every [`MAX_LINE`] bytes.
#[derive(Debug, Default)]
struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    /// Calls `each` for every line `bytes` completes; keeps the rest.
    fn feed(&mut self, bytes: &[u8], mut each: impl FnMut(&[u8])) {
        for piece in bytes.split_inclusive(|&b| b == b'\n') {
            let (body, ends) = match piece.split_last() {
                Some((b'\n', body)) => (body, true),
                _ => (piece, false),
            };
            let mut body = body;
            // A line longer than MAX_LINE goes in pieces, each as soon as
            // more is known to follow it.
            while self.partial.len() + body.len() > MAX_LINE {
                let take = MAX_LINE - self.partial.len();
                if self.partial.is_empty() {
                    each(&body[..take]);
                } else {
                    self.partial.extend_from_slice(&body[..take]);
                    each(&self.partial);
                    self.partial.clear();
                }
                body = &body[take..];
            }
            if ends {
                if self.partial.is_empty() {
                    each(trim_cr(body));
                } else {
                    self.partial.extend_from_slice(body);
                    each(trim_cr(&self.partial));
                    self.partial.clear();
                }
            } else {
                self.partial.extend_from_slice(body);
            }
        }
    }

    /// The last line, if the stream ended without a newline.
    fn rest(&mut self) -> Option<Vec<u8>> {
        if self.partial.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.partial))
        }
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A budget in lines and bytes: two token buckets that start full.
#[derive(Debug)]
struct Budget {
    limit: &'static Limit,
    lines: Bucket,
    bytes: Bucket,
}

impl Budget {
    fn new(limit: &'static Limit, now: Instant) -> Self {
        Self {
            limit,
            lines: Bucket::full(&limit.lines, now),
            bytes: Bucket::full(&limit.bytes, now),
        }
    }

    fn refill(&mut self, now: Instant) {
        self.lines.refill(&self.limit.lines, now);
        self.bytes.refill(&self.limit.bytes, now);
    }

    /// Whether a line of `bytes` bytes fits.
    fn allows(&self, bytes: f64) -> bool {
        self.lines.tokens >= 1.0 && self.bytes.tokens >= bytes
    }

    fn take(&mut self, bytes: f64) {
        self.lines.tokens -= 1.0;
        self.bytes.tokens -= bytes;
    }
}

/// Tokens as of `last`, refilled continuously up to the burst.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(rate: &Rate, now: Instant) -> Self {
        Self {
            tokens: rate.burst,
            last: now,
        }
    }

    fn refill(&mut self, rate: &Rate, now: Instant) {
        if now > self.last {
            let added = (now - self.last).as_secs_f64() * rate.per_second;
            self.tokens = (self.tokens + added).min(rate.burst);
            self.last = now;
        }
    }
}

/// A program's bytes as a quoted string, as Rust writes a string literal:
/// `"`, `\` and control characters escaped (`\t`, `\r`, `\0`, `\u{1b}`...),
/// and each byte that is not UTF-8 as `\xNN`.
#[derive(Debug, Clone, Copy)]
pub struct Quoted<'a>(pub &'a [u8]);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    // A string literal need not escape a single quote.
                    '\'' => f.write_char(c)?,
                    c => write!(f, "{}", c.escape_debug())?,
                }
            }
            for byte in chunk.invalid() {
                write!(f, "\\x{byte:02x}")?;
            }
        }
        f.write_char('"')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quoted(bytes: &[u8]) -> String {
        Quoted(bytes).to_string()
    }

    #[test]
    fn output_is_quoted_with_every_control_and_invalid_byte_escaped() {
        assert_eq!(quoted(b"plain text"), r#""plain text""#);
        assert_eq!(
            quoted(b"session end service=ssh status=exit 0\r\t\0\x1b[2J"),
            r#""session end service=ssh status=exit 0\r\t\0\u{1b}[2J""#
        );
        assert_eq!(quoted(b"say \"hi\" \\ it's"), r#""say \"hi\" \\ it's""#);
        assert_eq!(quoted("é ✓".as_bytes()), "\"é ✓\"");
        assert_eq!(
            quoted(b"bad \xff\xfe end \xc3"),
            r#""bad \xff\xfe end \xc3""#
        );
        // A bidi override could reorder what a reader sees.
        assert_eq!(quoted("a\u{202e}b".as_bytes()), r#""a\u{202e}b""#);
    }

    fn split(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        for chunk in chunks {
            lines.feed(chunk, |l| out.push(l.to_vec()));
        }
        out.extend(lines.rest());
        out
    }

    #[test]
    fn lines_split_at_newlines_across_reads_and_every_max_line_bytes() {
        assert_eq!(
            split(&[b"one\r\ntw", b"o\n\nthree"]),
            [&b"one"[..], b"two", b"", b"three"]
        );
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        let mut stream = long.clone();
        stream.push(b'\n');
        let lines = split(&[&stream[..100], &stream[100..]]);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(lines[1].len(), MAX_LINE);
        assert_eq!(lines[2].len(), 10);
        // Exactly MAX_LINE bytes and a newline: one line, no empty one.
        let mut exact = vec![b'y'; MAX_LINE];
        exact.push(b'\n');
        assert_eq!(split(&[&exact]), [vec![b'y'; MAX_LINE]]);
    }

    #[test]
    fn a_budget_allows_its_burst_then_its_rate() {
        let start = Instant::now();
        let mut budget = Budget::new(&SESSION, start);
        let mut logged = 0;
        for _ in 0..1000 {
            budget.refill(start);
            if budget.allows(2.0) {
                budget.take(2.0);
                logged += 1;
            }
        }
        assert_eq!(logged, 200);
        budget.refill(start + Duration::from_secs(1));
        let mut more = 0;
        while budget.allows(2.0) {
            budget.take(2.0);
            more += 1;
        }
        assert_eq!(more, 20);
    }

    #[test]
    fn bytes_bound_long_lines() {
        let start = Instant::now();
        let mut budget = Budget::new(&SESSION, start);
        let line = MAX_LINE as f64;
        let mut logged = 0;
        while budget.allows(line) {
            budget.take(line);
            logged += 1;
        }
        assert_eq!(logged, 8, "64 KiB of 8 KiB lines");
    }
}
