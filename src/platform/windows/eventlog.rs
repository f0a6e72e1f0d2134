//! The Windows Event Log as the daemon's system log: one event per log line,
//! reported under the source `wininetd` in the Application log.
//!
//! Event Viewer shows an event's text by looking its ID up in the message
//! file registered for the source, and shows "The description for Event ID
//! N cannot be found" without one. Rather than shipping a message DLL, the
//! source is registered (by [`super::install`]) with `EventCreate.exe`,
//! which every Windows since XP has and whose message table maps each ID
//! from 1 to 1000 to `%1`, the event's first string: the line shows as
//! written. This module owns those constants and the reporting; it does not
//! write the registry.
//!
//! Session start and end lines are information events that only
//! `--log-sessions` sends ([`is_session_line`]): WinInetd reported only
//! errors, and two events per connection rotate the other programs' events
//! out of the Application log. Errors and warnings always go.

use std::io::{self, Write as _};
use std::ptr;

use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::System::EventLog::{
    DeregisterEventSource, EVENTLOG_ERROR_TYPE, EVENTLOG_INFORMATION_TYPE, EVENTLOG_WARNING_TYPE,
    REPORT_EVENT_TYPE, RegisterEventSourceW, ReportEventW,
};

/// The event source, and the name of its registry key under
/// `HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application`.
pub(super) const SOURCE: &str = "wininetd";

/// The registry key of the Application log's sources, relative to
/// `HKEY_LOCAL_MACHINE` (Event Logging, "Event Sources").
pub(super) const SOURCES_KEY: &str = r"SYSTEM\CurrentControlSet\Services\EventLog\Application";

/// The message file registered for the source (`EventMessageFile`, a
/// REG_EXPAND_SZ): its message table maps IDs 1 to 1000 to `%1`.
pub(super) const MESSAGE_FILE: &str = r"%SystemRoot%\System32\EventCreate.exe";

/// `TypesSupported`: error, warning and information.
pub(super) const TYPES_SUPPORTED: u32 =
    (EVENTLOG_ERROR_TYPE | EVENTLOG_WARNING_TYPE | EVENTLOG_INFORMATION_TYPE) as u32;

/// ReportEventW limits each string to 31,839 characters; longer lines are
/// cut (at a character boundary) well below that.
const MAX_MESSAGE_UNITS: usize = 31_000;

/// Severity of a system log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Error,
    Warning,
    Info,
    Debug,
}

impl Priority {
    /// The event type and event ID a line of this priority is reported
    /// with. The IDs let Event Viewer filter by severity on the ID column
    /// too; debug lines are information events with their own ID, since the
    /// Event Log has no debug type.
    fn event(self) -> (REPORT_EVENT_TYPE, u32) {
        match self {
            Priority::Info => (EVENTLOG_INFORMATION_TYPE, 1),
            Priority::Warning => (EVENTLOG_WARNING_TYPE, 2),
            Priority::Error => (EVENTLOG_ERROR_TYPE, 3),
            Priority::Debug => (EVENTLOG_INFORMATION_TYPE, 4),
        }
    }
}

/// A registered event source (RegisterEventSourceW). Reporting works even
/// when the source is not registered in the registry (Windows then uses the
/// Application log), only Event Viewer cannot show the text.
#[derive(Debug)]
pub struct SystemLog {
    /// Null when RegisterEventSourceW failed: lines then go to stderr.
    handle: HANDLE,
}

// SAFETY: an event log handle is not tied to the thread that opened it, and
// ReportEventW may be called on one handle from several threads at once
// (the handle is only read; the Event Log service serialises the writes).
unsafe impl Send for SystemLog {}
// SAFETY: as above; `&SystemLog` only allows ReportEventW.
unsafe impl Sync for SystemLog {}

impl SystemLog {
    /// Opens the `wininetd` event source on this machine.
    pub fn open() -> Self {
        let source = wide_nul(SOURCE);
        // SAFETY: a null server name means the local machine; `source` is a
        // NUL-terminated UTF-16 string that outlives the call.
        let handle = unsafe { RegisterEventSourceW(ptr::null(), source.as_ptr()) };
        Self { handle }
    }

    /// Reports `message` as one event; if that fails, writes it to stderr
    /// (which a service does not have, but a console run does). A session's
    /// start and end are reported only with `--log-sessions`.
    pub fn write(&self, priority: Priority, message: &str) {
        if !wanted(priority, message, crate::platform::log_sessions()) {
            return;
        }
        if self.report(priority, message).is_err() {
            let _ = writeln!(io::stderr().lock(), "{message}");
        }
    }

    /// ReportEventW with `message` as the event's only string.
    fn report(&self, priority: Priority, message: &str) -> io::Result<()> {
        if self.handle.is_null() {
            return Err(io::Error::other("no event source"));
        }
        let (kind, id) = priority.event();
        let text = event_text(message);
        let strings = [text.as_ptr()];
        // SAFETY: `self.handle` is a live event source handle (closed only on
        // drop); `strings` holds one pointer to a NUL-terminated UTF-16
        // string, both alive for the call; no SID and no raw data.
        let ok = unsafe {
            ReportEventW(
                self.handle,
                kind,
                0,
                id,
                ptr::null_mut(),
                1,
                0,
                strings.as_ptr(),
                ptr::null(),
            )
        };
        if ok == 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

impl Drop for SystemLog {
    fn drop(&mut self) {
        if !self.handle.is_null() {
            // SAFETY: the handle came from RegisterEventSourceW and is closed
            // only here.
            unsafe {
                DeregisterEventSource(self.handle);
            }
        }
    }
}

/// Whether a line goes to the Event Log: everything but a session's start
/// and end, which go only when `sessions` (`--log-sessions`) is set. An
/// error at a session's end ("session end: cannot wait for the program")
/// is an error, and goes.
fn wanted(priority: Priority, message: &str, sessions: bool) -> bool {
    sessions || priority != Priority::Info || !is_session_line(message)
}

/// A session start or end line: the event's message is `session start` or
/// `session end`, the first words of a text line (the writer prints neither
/// time nor level) or the `message` of a JSON one. A program's stderr line
/// (`stderr = "log"`) that imitates one is at most dropped from the Event
/// Log, never forged into it.
fn is_session_line(message: &str) -> bool {
    ["session start", "session end"].iter().any(|event| {
        message
            .strip_prefix(event)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
            || message.contains(&format!("\"message\":\"{event}\""))
    })
}

/// No priority prefixes on Windows: stderr is never the journal.
pub fn journal_prefix(_priority: Priority) -> &'static str {
    ""
}

/// There is no journal on Windows.
/// The Event Log is always there.
pub fn system_log_available() -> bool {
    true
}

pub fn stderr_is_journal() -> bool {
    false
}

/// `s` as a NUL-terminated UTF-16 string.
pub(super) fn wide_nul(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

/// The event string for a log line: UTF-16, NUL-terminated, an embedded NUL
/// shown as `\0` (it would end the string), cut to [`MAX_MESSAGE_UNITS`]
/// without splitting a surrogate pair.
fn event_text(message: &str) -> Vec<u16> {
    let mut text: Vec<u16> = message.replace('\0', "\\0").encode_utf16().collect();
    if text.len() > MAX_MESSAGE_UNITS {
        let mut end = MAX_MESSAGE_UNITS;
        if (0xD800..0xDC00).contains(&text[end - 1]) {
            end -= 1;
        }
        text.truncate(end);
        text.extend(" [cut]".encode_utf16());
    }
    text.push(0);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_and_report_every_priority() {
        let log = SystemLog::open();
        assert!(!log.handle.is_null(), "{}", io::Error::last_os_error());
        for priority in [
            Priority::Error,
            Priority::Warning,
            Priority::Info,
            Priority::Debug,
        ] {
            log.report(priority, &format!("wininetd unit test: {priority:?} event"))
                .unwrap_or_else(|e| panic!("{priority:?}: {e}"));
        }
        log.report(Priority::Info, &"x".repeat(100_000))
            .expect("a long line is cut, not refused");
    }

    #[test]
    fn system_log_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<SystemLog>();
        let log = SystemLog::open();
        std::thread::scope(|s| {
            for i in 0..4 {
                let log = &log;
                s.spawn(move || log.write(Priority::Info, &format!("thread {i}")));
            }
        });
    }

    #[test]
    fn event_ids_are_in_the_message_files_range() {
        let mut ids: Vec<u32> = [
            Priority::Error,
            Priority::Warning,
            Priority::Info,
            Priority::Debug,
        ]
        .map(|p| p.event().1)
        .into();
        assert!(ids.iter().all(|id| (1..=1000).contains(id)), "{ids:?}");
        ids.dedup();
        assert_eq!(ids.len(), 4, "each priority has its own ID");
        assert_eq!(Priority::Error.event().0, EVENTLOG_ERROR_TYPE);
        assert_eq!(Priority::Warning.event().0, EVENTLOG_WARNING_TYPE);
        assert_eq!(Priority::Info.event().0, EVENTLOG_INFORMATION_TYPE);
        assert_eq!(TYPES_SUPPORTED, 7);
    }

    #[test]
    fn event_text_is_utf16_and_nul_terminated() {
        assert_eq!(event_text("é"), [0xE9, 0]);
        assert_eq!(
            String::from_utf16(&event_text("a\0b")[..4]).unwrap(),
            r"a\0b"
        );
        assert_eq!(event_text("a\0b").last(), Some(&0));
    }

    #[test]
    fn long_text_is_cut_between_characters() {
        // A surrogate pair straddling the cut is dropped whole.
        let message = format!("{}😀tail", "a".repeat(MAX_MESSAGE_UNITS - 1));
        let text = event_text(&message);
        let text = String::from_utf16(&text[..text.len() - 1]).expect("valid UTF-16");
        assert_eq!(text, format!("{} [cut]", "a".repeat(MAX_MESSAGE_UNITS - 1)));
    }

    /// Regression test: every session's start and end went to the Event
    /// Log, two events per connection. They go only with --log-sessions;
    /// errors, warnings and the other information lines always go.
    #[test]
    fn sessions_go_to_the_event_log_only_when_asked() {
        let start = "session start service=echo port=7 peer=127.0.0.1:5000 local=127.0.0.1:7 pid=4";
        let end = "session end service=echo pid=4 status=exit 0 duration=1ms";
        let json = r#"{"timestamp":"t","level":"INFO","message":"session end","service":"echo"}"#;
        for line in [start, end, json, "session start"] {
            assert!(!wanted(Priority::Info, line, false), "{line}");
            assert!(wanted(Priority::Info, line, true), "{line}");
        }
        for line in [
            "listening on [::]:7 (echo)",
            "reload done: 1 service(s) kept",
            "shutting down",
            "session started by nobody",
            r#"{"level":"INFO","message":"listening on [::]:7"}"#,
        ] {
            assert!(wanted(Priority::Info, line, false), "{line}");
        }
        for priority in [Priority::Error, Priority::Warning] {
            assert!(wanted(
                priority,
                "session end: cannot wait for the program",
                false
            ));
        }
    }

    #[test]
    fn no_journal_on_windows() {
        assert!(!stderr_is_journal());
        assert_eq!(journal_prefix(Priority::Error), "");
    }
}
