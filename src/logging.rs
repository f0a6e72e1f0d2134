//! Where log lines go: the console with `--debug`; otherwise the journal
//! (when stderr is connected to it) or the system log.
//!
//! Every event is one line, and one record in the journal or the system
//! log: a control character inside a line (a newline in a path, say) is
//! escaped, never written raw. The `listening on ADDR (CMDLINE)` lines are
//! not log events but an announcement tests and supervisors read: they
//! always go to stderr, see [`announce`].

use std::fmt::Write as _;
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

/// Writes an announcement line to stderr (and the system log when that is
/// the target), whatever the log target.
pub fn announce(line: &str) {
    Line::new(
        Priority::Info,
        Destination::Announcement,
        one_record(line, false),
    )
    .write();
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
        Line::new(
            self.priority,
            Destination::Log(setup.target),
            one_record(text, setup.ansi),
        )
        .write();
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
}
