//! Where log lines go: the console with `--debug`; otherwise the journal
//! (when stderr is connected to it) or the system log.
//!
//! Every event is one line, and one record in the journal or the system
//! log: a control character inside a line (a newline in a path, say) is
//! escaped, never written raw. The `listening on` lines are an announcement
//! that tests and supervisors read: they always go to stderr (and to the
//! system log when that is the target), see [`announce`]; with
//! `log_format = "json"` they are JSON like every other line.
//!
//! While the server runs (a [`Background`] guard is alive), lines are not
//! written by the thread that logs them but queued for a thread of their
//! own: a log reader that stops reading (a stopped `tee`, a journal that
//! has fallen behind) must never block the runtime thread that accepts
//! connections. The queue is bounded; when it is full, lines are dropped
//! and counted, and the count is logged where the gap is, once there is
//! room again. Before and after (loading the config, `--check`, the errors
//! that end the process) lines are written at once, so none is lost at
//! exit.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};

use crate::config::{LogFormat, Transport};
use crate::peer::Local;
use crate::platform::{self, Priority, SystemLog};

/// Where the daemon logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Human-readable lines with time stamps on stderr.
    Console,
    /// Lines on stderr with sd-daemon(3) priority prefixes and no time stamp
    /// (the journal adds its own).
    Journal,
    /// The OS's system log.
    System,
}

/// The most lines the queue holds while the log reader does not keep up.
const QUEUE_LINES: usize = 4096;
/// The most bytes the queue holds (a bound on its memory).
const QUEUE_BYTES: usize = 1 << 20;
/// How long the end of [`Background`] waits for the queued lines to be
/// written: a reader that stopped for good must not keep the daemon from
/// exiting.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// How the daemon logs, as [`init`] set it up.
#[derive(Debug, Clone, Copy)]
struct Setup {
    target: Target,
    format: LogFormat,
    /// Colours on a console that is a terminal: the escape sequences of
    /// the formatter must then survive [`one_record`].
    ansi: bool,
}

static SETUP: OnceLock<Setup> = OnceLock::new();
static SYSTEM_LOG: OnceLock<SystemLog> = OnceLock::new();
/// The queue, made by the first [`Background`]; its writer thread starts
/// with the first line queued.
static QUEUE: OnceLock<Queue> = OnceLock::new();
/// Whether lines go through [`QUEUE`] now.
static QUEUED: AtomicBool = AtomicBool::new(false);

/// Picks the target: the console for `--debug` (and `--check`), otherwise
/// the journal if stderr is connected to it, else the system log, if there
/// is one (a container often has none: then stderr, with priorities, rather
/// than lines that go nowhere).
pub fn target(debug: bool) -> Target {
    if debug {
        Target::Console
    } else if platform::stderr_is_journal() || !platform::system_log_available() {
        Target::Journal
    } else {
        Target::System
    }
}

/// The format [`init`] set up (text until then).
pub fn format() -> LogFormat {
    SETUP.get().map_or(LogFormat::Text, |setup| setup.format)
}

/// Installs the global subscriber. `RUST_LOG`-style filtering is not
/// offered: the levels used are few and all of them matter to an operator,
/// except debug, which `WININETD_LOG=debug` turns on.
pub fn init(target: Target, format: LogFormat) {
    let level = match std::env::var("WININETD_LOG").as_deref() {
        Ok("debug") => Level::DEBUG,
        Ok("warn") => Level::WARN,
        _ => Level::INFO,
    };
    if target == Target::System {
        SYSTEM_LOG.get_or_init(SystemLog::open);
    }
    let ansi = target == Target::Console
        && format == LogFormat::Text
        && io::IsTerminal::is_terminal(&io::stderr());
    // The first setup wins, as the first subscriber does below.
    let _ = SETUP.set(Setup {
        target,
        format,
        ansi,
    });
    // A log line that cannot be written is lost, nothing more: the reader
    // of stderr may go away (`wininetd --debug | tee log` and tee ends, a
    // restarted log collector). By default the layer would report that on
    // stderr with `eprintln!`, which fails in turn and aborts the daemon.
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .log_internal_errors(false)
        .with_writer(Sink);
    // Only fails if a subscriber is already set (tests): keep that one.
    let _ = match (format, target) {
        (LogFormat::Json, _) => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        (LogFormat::Text, Target::Console) => builder.with_ansi(ansi).try_init(),
        (LogFormat::Text, _) => builder
            .without_time()
            .with_level(false)
            .with_ansi(false)
            .try_init(),
    };
}

/// Announces that `service` listens on `address`, serving `command`: the
/// line tests and supervisors wait for. It goes to stderr (and to the
/// system log when that is the target), whatever the log target and level.
/// In text, `listening on ADDRESS (COMMAND)` (a Unix socket's address is
/// `unix:PATH`, a UDP one ends in `/udp`); in JSON, an object with the
/// message `listening on` and `service`, `address` and `command` members.
pub fn announce(service: &str, address: &Local, transport: Transport, command: &str) {
    let setup = setup();
    // A UDP port says so: TCP and UDP may share a number.
    let address = match transport {
        Transport::Udp => format!("{address}/udp"),
        Transport::Tcp | Transport::Unix => address.to_string(),
    };
    let text = match setup.format {
        LogFormat::Text => format!("listening on {address} ({command})"),
        LogFormat::Json => json_line(
            Level::INFO,
            "listening on",
            &[
                ("service", Value::Text(service)),
                ("address", Value::Text(&address)),
                ("command", Value::Text(command)),
            ],
        ),
    };
    emit(Line::new(
        Priority::Info,
        Destination::Announcement,
        one_record(&text, false),
    ));
}

/// While a `Background` is alive, log lines are queued for a thread of
/// their own instead of written by the thread that logs them. Dropping it
/// waits (a while, see [`FLUSH_WAIT`]) for the queued lines to be written,
/// and lines are written at once again: what the process logs as it ends
/// (its exit error) comes after them, and is not lost.
#[derive(Debug)]
#[must_use = "lines are queued only while the guard lives"]
pub struct Background {
    _private: (),
}

impl Background {
    /// Queues log lines from now on.
    ///
    /// The writer thread starts with the first line queued (if it cannot,
    /// lines are written at once, as before), and inherits the signal mask
    /// of the thread that logs it. Call this only once the signals the
    /// runtime reads from a signalfd are blocked, so that the writer cannot
    /// take them; and log nothing before the platform's `Reaper` has
    /// started: glibc installs a signal handler at the first thread it
    /// starts, which would make every later spawn block all signals.
    pub fn start() -> Self {
        QUEUE.get_or_init(Queue::default);
        QUEUED.store(true, Ordering::SeqCst);
        Self { _private: () }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let Some(queue) = QUEUE.get() else {
            return;
        };
        let deadline = Instant::now() + FLUSH_WAIT;
        queue.flush(deadline);
        QUEUED.store(false, Ordering::SeqCst);
        // Lines queued by another thread between the flush and the switch.
        queue.flush(deadline);
    }
}

fn setup() -> Setup {
    SETUP.get().copied().unwrap_or(Setup {
        target: Target::Console,
        format: LogFormat::Text,
        ansi: false,
    })
}

fn priority(level: &Level) -> Priority {
    match *level {
        Level::ERROR => Priority::Error,
        Level::WARN => Priority::Warning,
        Level::INFO => Priority::Info,
        _ => Priority::Debug,
    }
}

/// Where one line goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Destination {
    /// The target's: stderr (with a priority prefix for the journal) or
    /// the system log.
    Log(Target),
    /// Stderr, plain, and the system log if it is open.
    Announcement,
}

/// One formatted line, without its newline.
#[derive(Debug)]
struct Line {
    priority: Priority,
    to: Destination,
    text: String,
}

impl Line {
    fn new(priority: Priority, to: Destination, text: String) -> Self {
        Self { priority, to, text }
    }

    /// The line that says `lines` lines were dropped, where they were.
    fn dropped(lines: u64) -> Self {
        let message = "log lines dropped: the log reader did not keep up";
        let setup = setup();
        let text = match setup.format {
            LogFormat::Json => json_line(Level::WARN, message, &[("lines", Value::Count(lines))]),
            LogFormat::Text => {
                let mut text = String::new();
                if setup.target == Target::Console {
                    let mut time = String::new();
                    let _ = SystemTime
                        .format_time(&mut tracing_subscriber::fmt::format::Writer::new(&mut time));
                    let _ = write!(text, "{time}  WARN ");
                }
                let _ = write!(text, "{message} lines={lines}");
                text
            }
        };
        Self::new(Priority::Warning, Destination::Log(setup.target), text)
    }

    /// Writes the line where it goes; errors lose the line.
    fn write(&self) {
        let to_stderr = |prefix: &str| {
            let mut bytes = Vec::with_capacity(prefix.len() + self.text.len() + 1);
            bytes.extend_from_slice(prefix.as_bytes());
            bytes.extend_from_slice(self.text.as_bytes());
            bytes.push(b'\n');
            // One write: a line is not torn by another writer.
            let _ = io::stderr().lock().write_all(&bytes);
        };
        match self.to {
            Destination::Log(Target::Console) => to_stderr(""),
            Destination::Log(Target::Journal) => to_stderr(platform::journal_prefix(self.priority)),
            Destination::Log(Target::System) => match SYSTEM_LOG.get() {
                Some(log) => log.write(self.priority, &self.text),
                None => to_stderr(platform::journal_prefix(self.priority)),
            },
            Destination::Announcement => {
                to_stderr("");
                if let Some(log) = SYSTEM_LOG.get() {
                    log.write(self.priority, &self.text);
                }
            }
        }
    }
}

/// Writes `line` now, or queues it while a [`Background`] lives.
fn emit(line: Line) {
    let line = match QUEUE.get() {
        Some(queue) if QUEUED.load(Ordering::SeqCst) => match queue.push(line) {
            Ok(()) => return,
            Err(line) => line,
        },
        _ => line,
    };
    line.write();
}

/// The lines waiting for the writer thread.
#[derive(Debug, Default)]
struct Queue {
    state: Mutex<QueueState>,
    /// Signalled when a line is queued.
    queued: Condvar,
    /// Signalled when the writer has written everything.
    idle: Condvar,
}

#[derive(Debug, Default)]
struct QueueState {
    lines: VecDeque<Line>,
    bytes: usize,
    /// Lines dropped since the last "dropped" line.
    dropped: u64,
    /// The writer is writing a line it took (otherwise it waits, or is
    /// about to, for `queued`).
    busy: bool,
    writer: Writer,
}

/// The writer thread's state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// Not started: nothing was queued yet.
    #[default]
    Unborn,
    Running,
    /// It could not be started: lines are written at once.
    Failed,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A panic while holding the lock leaves nothing half-done that
        // matters: a line more or less.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `line`, or drops and counts it when the queue is full. The
    /// first line queued after some were dropped is preceded by the count.
    /// Starts the writer thread with the first line; gives the line back
    /// if there is no writer thread.
    fn push(&'static self, line: Line) -> Result<(), Line> {
        let mut state = self.lock();
        match state.writer {
            Writer::Running => {}
            Writer::Failed => return Err(line),
            Writer::Unborn => {
                let started = std::thread::Builder::new()
                    .name("wininetd-log".to_owned())
                    .spawn(move || self.write_lines());
                if started.is_err() {
                    state.writer = Writer::Failed;
                    return Err(line);
                }
                state.writer = Writer::Running;
            }
        }
        let full = state.lines.len() >= QUEUE_LINES || state.bytes + line.text.len() > QUEUE_BYTES;
        if full {
            state.dropped = state.dropped.saturating_add(1);
            return Ok(());
        }
        if state.dropped > 0 {
            let dropped = Line::dropped(std::mem::take(&mut state.dropped));
            state.bytes += dropped.text.len();
            state.lines.push_back(dropped);
        }
        state.bytes += line.text.len();
        state.lines.push_back(line);
        // A busy writer takes the line when it is done with the one it
        // writes: no wake-up (a system call) for it.
        let idle = !state.busy;
        drop(state);
        if idle {
            self.queued.notify_one();
        }
        Ok(())
    }

    /// The writer thread: writes lines as they come; once it has caught
    /// up, says how many were dropped, if any.
    fn write_lines(&self) {
        let mut state = self.lock();
        loop {
            let line = match state.lines.pop_front() {
                Some(line) => {
                    state.bytes -= line.text.len();
                    line
                }
                None if state.dropped > 0 => Line::dropped(std::mem::take(&mut state.dropped)),
                None => {
                    state.busy = false;
                    self.idle.notify_all();
                    state = self
                        .queued
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                    continue;
                }
            };
            state.busy = true;
            drop(state);
            line.write();
            state = self.lock();
        }
    }

    /// Waits until every queued line is written, or `deadline`.
    fn flush(&self, deadline: Instant) {
        let mut state = self.lock();
        while state.busy || !state.lines.is_empty() || state.dropped > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            // Wake the writer for a count of dropped lines with no line after.
            self.queued.notify_one();
            state = self
                .idle
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// A value in a line [`json_line`] writes.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Text(&'a str),
    Count(u64),
}

/// A JSON log line as the subscriber writes one: time stamp, level,
/// message, then the fields.
fn json_line(level: Level, message: &str, fields: &[(&str, Value<'_>)]) -> String {
    let string = |s: &str| serde_json::to_string(s).expect("a string always serializes");
    let mut time = String::new();
    let _ = SystemTime.format_time(&mut tracing_subscriber::fmt::format::Writer::new(&mut time));
    let mut line = format!(
        "{{\"timestamp\":{},\"level\":{},\"message\":{}",
        string(&time),
        string(level.as_str()),
        string(message)
    );
    for (key, value) in fields {
        let value = match value {
            Value::Text(text) => string(text),
            Value::Count(n) => n.to_string(),
        };
        let _ = write!(line, ",{}:{value}", string(key));
    }
    line.push('}');
    line
}

/// `text` as one record: the control characters that would end a line or
/// a journal record (newline, carriage return, NUL) or garble a terminal
/// written as escapes. ESC is kept when `ansi`: the formatter's colours use
/// it (and it escapes the messages it colours itself).
fn one_record(text: &str, ansi: bool) -> String {
    let keep = |c: char| !c.is_control() || c == '\t' || (ansi && c == '\x1b');
    if text.chars().all(keep) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if keep(c) => out.push(c),
            c => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
        }
    }
    out
}

/// Gives the subscriber a [`LineWriter`] per event.
#[derive(Debug, Clone, Copy)]
struct Sink;

impl<'a> MakeWriter<'a> for Sink {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter::new(Priority::Info)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        LineWriter::new(priority(meta.level()))
    }
}

/// Buffers one formatted event and emits it whole on drop.
#[derive(Debug)]
struct LineWriter {
    priority: Priority,
    buf: Vec<u8>,
}

impl LineWriter {
    fn new(priority: Priority) -> Self {
        Self {
            priority,
            buf: Vec::with_capacity(256),
        }
    }
}

impl Write for LineWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        let text = text.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            return;
        }
        let setup = setup();
        emit(Line::new(
            self.priority,
            Destination::Log(setup.target),
            one_record(text, setup.ansi),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_holds_no_line_break_nul_or_terminal_control() {
        assert_eq!(one_record("plain\ttext é", false), "plain\ttext é");
        assert_eq!(
            one_record("a\nsession end\r\0\x1b[2J\x7f", false),
            "a\\nsession end\\r\\0\\u{1b}[2J\\u{7f}"
        );
        assert_eq!(
            one_record("\x1b[32mINFO\x1b[0m x\ny", true),
            "\x1b[32mINFO\x1b[0m x\\ny"
        );
    }

    #[test]
    fn json_lines_escape_and_keep_numbers() {
        let line = json_line(
            Level::INFO,
            "listening on",
            &[
                ("command", Value::Text("a \"b\"\n")),
                ("lines", Value::Count(3)),
            ],
        );
        assert!(line.starts_with("{\"timestamp\":\""), "{line}");
        assert!(
            line.ends_with(
                r#""level":"INFO","message":"listening on","command":"a \"b\"\n","lines":3}"#
            ),
            "{line}"
        );
    }

    #[test]
    fn a_full_queue_drops_and_then_counts_where_the_gap_is() {
        // A writer said to run, but none: the test reads what is queued.
        let queue: &'static Queue = Box::leak(Box::default());
        queue.lock().writer = Writer::Running;
        let line = |text: &str| {
            Line::new(
                Priority::Info,
                Destination::Log(Target::Console),
                text.to_owned(),
            )
        };
        for i in 0..QUEUE_LINES + 3 {
            queue.push(line(&format!("line {i}"))).expect("a writer");
        }
        {
            let state = queue.lock();
            assert_eq!(state.lines.len(), QUEUE_LINES);
            assert_eq!(state.dropped, 3);
        }
        queue.lock().lines.pop_front();
        queue.push(line("after")).expect("a writer");
        let state = queue.lock();
        assert_eq!(state.dropped, 0);
        let texts: Vec<&str> = state
            .lines
            .iter()
            .rev()
            .take(2)
            .map(|l| l.text.as_str())
            .collect();
        assert_eq!(texts[0], "after");
        assert!(
            texts[1].contains("log lines dropped") && texts[1].ends_with("lines=3"),
            "{}",
            texts[1]
        );
    }
}
