//! The services the daemon serves itself over TCP, with no program:
//! echo (RFC 862), discard (RFC 863), daytime (RFC 867), time (RFC 868)
//! and chargen (RFC 864). What they send is made here for UDP too
//! (the datagram module answers each datagram with it).
//!
//! daytime and time send a few bytes and close: those are written at once,
//! on the connection's own task, without making the connection async (a
//! reply that small always fits an empty send buffer; were it ever not
//! taken whole, the rest goes the async way). Every other session is a
//! task on the daemon's runtime, on the connection made async: it never
//! blocks the thread, and every wait is on the socket's
//! readiness, so a client that stops reading holds only what the kernel's
//! socket buffers hold (chargen writes its next lines only once the socket
//! takes them). Each read and write is bounded by the service's `timeout`,
//! as a program's socket is. What the session is, and how it ended, is
//! what [`Running`] gives the supervise stage; it ends when the task does,
//! or when the daemon aborts it (stop, `max_lifetime`).

use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use socket2::Socket;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::config::Builtin;

/// The size of a read of echo and discard.
const BUFFER: usize = 16 * 1024;

/// A built-in's session, running.
#[derive(Debug)]
pub struct Running {
    /// `None` for a reply sent at once.
    task: Option<JoinHandle<String>>,
    /// How it ended, once it has.
    ended: Option<String>,
}

impl Running {
    /// Starts serving `socket` as `builtin`; each wait on it is bounded by
    /// `timeout`.
    pub fn start(builtin: Builtin, socket: Socket, timeout: Option<Duration>) -> io::Result<Self> {
        // A close never waits for the peer to take what is left (SO_LINGER
        // makes close() block even on a non-blocking socket, which would
        // hold up the runtime's thread): the kernel still sends it.
        socket.set_linger(None)?;
        socket.set_nonblocking(true)?;
        let mut rest = Vec::new();
        let mut reply = [0; DAYTIME_MAX];
        let reply = match builtin {
            Builtin::Daytime => daytime(SystemTime::now(), &mut reply),
            Builtin::Time => {
                reply[..4].copy_from_slice(&rfc868(SystemTime::now()).to_be_bytes());
                &reply[..4]
            }
            _ => &[][..],
        };
        if !reply.is_empty() {
            match socket.send(reply) {
                // The close sends the FIN.
                Ok(n) if n == reply.len() => {
                    return Ok(Self {
                        task: None,
                        ended: Some("sent".to_owned()),
                    });
                }
                Ok(n) => rest.extend_from_slice(&reply[n..]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => rest.extend_from_slice(reply),
                Err(e) => {
                    return Ok(Self {
                        task: None,
                        ended: Some(format!("connection error: {e}")),
                    });
                }
            }
        }
        let stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
        let task = tokio::spawn(async move {
            let mut stream = stream;
            match serve(builtin, &mut stream, &rest, timeout).await {
                Ok(end) => end.to_owned(),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => "timeout".to_owned(),
                Err(e) => format!("connection error: {e}"),
            }
        });
        Ok(Self {
            task: Some(task),
            ended: None,
        })
    }

    /// Resolves when the session has ended, with how it ended.
    pub async fn ended(&mut self) -> String {
        if let (None, Some(task)) = (&self.ended, &mut self.task) {
            let end = match task.await {
                Ok(end) => end,
                Err(e) if e.is_cancelled() => "ended by the daemon".to_owned(),
                Err(e) => format!("failed: {e}"),
            };
            self.ended = Some(end);
        }
        self.ended.clone().unwrap_or_default()
    }

    /// Ends the session now: its connection is closed.
    pub fn abort(&self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Serves the connection to its end (for daytime and time, `rest` is what
/// is left of the reply); the description of a normal end.
async fn serve(
    builtin: Builtin,
    stream: &mut TcpStream,
    rest: &[u8],
    timeout: Option<Duration>,
) -> io::Result<&'static str> {
    match builtin {
        Builtin::Echo => {
            let mut buf = vec![0; BUFFER];
            loop {
                let n = bounded(timeout, stream.read(&mut buf)).await?;
                if n == 0 {
                    break;
                }
                bounded(timeout, stream.write_all(&buf[..n])).await?;
            }
            bounded(timeout, stream.shutdown()).await?;
            Ok("closed by the client")
        }
        Builtin::Discard => {
            let mut buf = vec![0; BUFFER];
            while bounded(timeout, stream.read(&mut buf)).await? > 0 {}
            bounded(timeout, stream.shutdown()).await?;
            Ok("closed by the client")
        }
        Builtin::Daytime | Builtin::Time => {
            // What the first write did not take.
            bounded(timeout, stream.write_all(rest)).await?;
            bounded(timeout, stream.shutdown()).await?;
            Ok("sent")
        }
        Builtin::Chargen => {
            let lines = chargen_period();
            // Until the client closes or stops taking lines for `timeout`:
            // the write then fails, or times out. What the client sends is
            // left unread, as BSD inetd does.
            loop {
                bounded(timeout, stream.write_all(&lines)).await?;
            }
        }
    }
}

/// `io` within `timeout`, if there is one.
async fn bounded<T>(
    timeout: Option<Duration>,
    io: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match timeout {
        Some(limit) => tokio::time::timeout(limit, io)
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?,
        None => io.await,
    }
}

/// The printable ASCII characters chargen cycles through (RFC 864).
const PRINTABLE: std::ops::RangeInclusive<u8> = b' '..=b'~';
/// The characters of a chargen line, before its CR LF.
pub const CHARGEN_LINE: usize = 72;

/// The bytes of a chargen line, with its CR LF.
pub const CHARGEN_LINE_BYTES: usize = CHARGEN_LINE + 2;
/// The lines of a period of chargen's output: one per printable character.
pub const CHARGEN_LINES: usize = 95;

/// One whole period of chargen's output: 95 lines of 72 characters, each
/// starting one character further along the printable set than the last.
pub fn chargen_period() -> Vec<u8> {
    let chars: Vec<u8> = PRINTABLE.collect();
    let mut out = Vec::with_capacity(chars.len() * (CHARGEN_LINE + 2));
    for start in 0..chars.len() {
        out.extend((0..CHARGEN_LINE).map(|i| chars[(start + i) % chars.len()]));
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Seconds from 1900-01-01 to 1970-01-01.
const SECS_1900_TO_1970: u64 = 2_208_988_800;

/// RFC 868's time: seconds since 1900-01-01 00:00 UTC, modulo 2^32 (the
/// count wraps in 2036, as the RFC's 32 bits do).
pub fn rfc868(now: SystemTime) -> u32 {
    let unix = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // Truncation is the protocol's wrap-around.
    #[allow(clippy::cast_possible_truncation)]
    let time = (unix + SECS_1900_TO_1970) as u32;
    time
}

/// Room for [`daytime`]'s line, whatever the year.
pub const DAYTIME_MAX: usize = 64;

/// RFC 867's daytime, in UTC, in the form of C's `asctime`: `Sat Dec  5
/// 12:34:56 2026\r\n`, written into `out` (no allocation: UDP answers
/// each datagram with it); the line is the part of `out` it returns.
pub fn daytime(now: SystemTime, out: &mut [u8; DAYTIME_MAX]) -> &[u8] {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let of_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut rest = &mut out[..];
    write!(
        rest,
        "{} {} {:2} {:02}:{:02}:{:02} {}\r\n",
        DAYS[usize::try_from(days % 7).expect("below 7")],
        MONTHS[usize::try_from(month - 1).expect("below 12")],
        day,
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        year
    )
    .expect("a year of at most 20 digits fits");
    let len = DAYTIME_MAX - rest.len();
    &out[..len]
}

/// The date (year, month 1-12, day 1-31) `days` days after 1970-01-01, in
/// the proleptic Gregorian calendar (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn daytime_text(secs: u64) -> String {
        String::from_utf8(daytime(at(secs), &mut [0; DAYTIME_MAX]).to_vec()).expect("ASCII")
    }

    #[test]
    fn daytime_is_asctime_in_utc() {
        assert_eq!(daytime_text(0), "Thu Jan  1 00:00:00 1970\r\n");
        // 2026-12-05 12:34:56 UTC.
        assert_eq!(daytime_text(1_796_474_096), "Sat Dec  5 12:34:56 2026\r\n");
        // A leap day.
        assert_eq!(daytime_text(951_782_400), "Tue Feb 29 00:00:00 2000\r\n");
        // A year of five digits still fits.
        assert_eq!(
            daytime_text(253_402_300_800),
            "Sat Jan  1 00:00:00 10000\r\n"
        );
    }

    #[test]
    fn time_counts_from_1900_and_wraps() {
        assert_eq!(rfc868(at(0)), 2_208_988_800);
        // RFC 868's own example: 2,629,584,000 is 1983-05-01 00:00 UTC.
        assert_eq!(rfc868(at(420_595_200)), 2_629_584_000);
        // 2036-02-07 06:28:16 UTC: the 32 bits wrap to 0.
        assert_eq!(rfc868(at(2_085_978_496)), 0);
    }

    #[test]
    fn chargen_lines_rotate_through_the_printable_set() {
        let period = chargen_period();
        let lines: Vec<&[u8]> = period.split(|&b| b == b'\n').collect();
        assert_eq!(period.len(), CHARGEN_LINES * CHARGEN_LINE_BYTES);
        assert_eq!(lines.len(), 96, "95 lines and what follows the last");
        assert_eq!(&lines[0][..3], b" !\"");
        assert_eq!(&lines[1][..3], b"!\"#");
        assert_eq!(&lines[94][..2], b"~ ");
        for line in &lines[..95] {
            assert_eq!(line.len(), CHARGEN_LINE + 1);
            assert_eq!(line[CHARGEN_LINE], b'\r');
        }
    }
}
