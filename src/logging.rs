//! Where log lines go: the console with `--debug`; otherwise the journal
//! (when stderr is connected to it) or the system log.
//!
//! Every event is one line. The `listening on ADDR (CMDLINE)` lines are not
//! log events but an announcement tests and supervisors read: they always go
//! to stderr, see [`announce`].

use std::io::{self, Write};
use std::sync::OnceLock;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;
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

static SYSTEM_LOG: OnceLock<SystemLog> = OnceLock::new();

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
    // A log line that cannot be written is lost, nothing more: the reader
    // of stderr may go away (`wininetd --debug | tee log` and tee ends, a
    // restarted log collector). By default the layer would report that on
    // stderr with `eprintln!`, which fails in turn and aborts the daemon.
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .log_internal_errors(false);
    // Only fails if a subscriber is already set (tests): keep that one.
    let _ = match (format, target) {
        (LogFormat::Json, Target::Console) => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(io::stderr)
            .try_init(),
        (LogFormat::Json, _) => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(Prefixed)
            .try_init(),
        (LogFormat::Text, Target::Console) => builder
            .with_writer(io::stderr)
            .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
            .try_init(),
        (LogFormat::Text, _) => builder
            .without_time()
            .with_level(false)
            .with_ansi(false)
            .with_writer(Prefixed)
            .try_init(),
    };
}

/// Writes an announcement line to stderr (and the system log when that is
/// the target), whatever the log target.
pub fn announce(line: &str) {
    let _ = writeln!(io::stderr().lock(), "{line}");
    if let Some(log) = SYSTEM_LOG.get() {
        log.write(Priority::Info, line);
    }
}

fn priority(level: &Level) -> Priority {
    match *level {
        Level::ERROR => Priority::Error,
        Level::WARN => Priority::Warning,
        Level::INFO => Priority::Info,
        _ => Priority::Debug,
    }
}

/// A writer per event that prefixes (journal) or forwards (system log) one
/// line with its priority.
#[derive(Debug, Clone, Copy)]
struct Prefixed;

impl<'a> MakeWriter<'a> for Prefixed {
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
        let text = text.trim_end();
        if text.is_empty() {
            return;
        }
        match SYSTEM_LOG.get() {
            Some(log) => log.write(self.priority, text),
            None => {
                let prefix = platform::journal_prefix(self.priority);
                let _ = writeln!(io::stderr().lock(), "{prefix}{text}");
            }
        }
    }
}
