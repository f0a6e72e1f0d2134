//! Reading a config file: which files may be read, how much of one, and in
//! which encoding.
//!
//! A config is a regular file (or a symbolic link to one) of at most
//! [`MAX_FILE_BYTES`]: a FIFO would block its reader until someone writes
//! to it, a device such as `/dev/zero` never ends, and a directory is a
//! mistake. What is read is decoded to UTF-8 text:
//! - a UTF-16 file (little- or big-endian) by its byte-order mark: Notepad's
//!   "Unicode" and Windows PowerShell 5.1's `>` write such files;
//! - a UTF-8 file as it is (a UTF-8 byte-order mark is left for the parsers,
//!   which skip it);
//! - on Windows, a file that is not valid UTF-8 in the system's ANSI code
//!   page, as WinInetd (an ANSI program) read every file. Elsewhere such a
//!   file stays as it is, and the parsers report where it is not UTF-8.
//!
//! Plain functions with no runtime: safe to call from any thread.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::Pos;
use crate::platform;

/// The largest config file read: far beyond any real one (a thousand
/// services take some 60 KiB), and small enough that reading a file that
/// grows as it is read costs little.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// How a config file's bytes were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// UTF-8, with or without a byte-order mark; also a file that is not
    /// valid UTF-8 where there is no ANSI code page (its errors say where).
    #[default]
    Utf8,
    /// UTF-16, little-endian, by its byte-order mark.
    Utf16Le,
    /// UTF-16, big-endian, by its byte-order mark.
    Utf16Be,
    /// Windows's ANSI code page (GetACP) of this number, for a file that is
    /// not valid UTF-8.
    Ansi(u32),
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Utf8 => f.write_str("UTF-8"),
            Self::Utf16Le => f.write_str("UTF-16LE"),
            Self::Utf16Be => f.write_str("UTF-16BE"),
            Self::Ansi(page) => write!(f, "ANSI code page {page}"),
        }
    }
}

/// A config file's text, decoded to UTF-8 (unless it is not valid UTF-8 and
/// has no code page to be read in).
#[derive(Debug)]
pub struct Text {
    pub bytes: Vec<u8>,
    pub encoding: Encoding,
}

/// Why a file could not be read, and where in it when that is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadError {
    pub pos: Option<Pos>,
    pub message: String,
}

impl ReadError {
    fn whole(message: String) -> Self {
        Self { pos: None, message }
    }
}

/// Reads and decodes the config file at `path`.
pub fn read(path: &Path) -> Result<Text, ReadError> {
    decode(read_bytes(path).map_err(ReadError::whole)?)
}

/// Reads at most [`MAX_FILE_BYTES`] of a regular file.
fn read_bytes(path: &Path) -> Result<Vec<u8>, String> {
    let cannot = |e: std::io::Error| format!("cannot read the config file: {e}");
    // Look before opening: opening a FIFO blocks until a writer comes. The
    // name could still be swapped for a FIFO between this look and the open
    // by whoever may write the config's directory; the second look below,
    // on what was opened, keeps anything but a file from being read.
    regular_file(&std::fs::metadata(path).map_err(cannot)?)?;
    let file = File::open(path).map_err(cannot)?;
    let size = regular_file(&file.metadata().map_err(cannot)?)?;
    if size > MAX_FILE_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    // One byte past the cap tells a file that grew past it while it was
    // read.
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

/// The size of a regular file; an error for anything else.
fn regular_file(metadata: &std::fs::Metadata) -> Result<u64, String> {
    if metadata.is_file() {
        Ok(metadata.len())
    } else if metadata.is_dir() {
        Err("is a directory, not a config file".to_owned())
    } else {
        Err("is not a regular file (a pipe, socket or device?): a config must be a file".to_owned())
    }
}

fn too_large() -> String {
    format!(
        "the config file is larger than {} MiB, the most a config may be",
        MAX_FILE_BYTES / (1024 * 1024)
    )
}

/// Decodes a config file's bytes (see the module's documentation).
pub fn decode(bytes: Vec<u8>) -> Result<Text, ReadError> {
    let utf16 = match bytes.get(..2) {
        Some([0xFF, 0xFE]) => Some((Encoding::Utf16Le, u16::from_le_bytes as fn([u8; 2]) -> u16)),
        Some([0xFE, 0xFF]) => Some((Encoding::Utf16Be, u16::from_be_bytes as fn([u8; 2]) -> u16)),
        _ => None,
    };
    if let Some((encoding, unit)) = utf16 {
        let text = utf16_text(&bytes[2..], unit, encoding)?;
        return Ok(Text {
            bytes: text.into_bytes(),
            encoding,
        });
    }
    if std::str::from_utf8(&bytes).is_ok() {
        return Ok(Text {
            bytes,
            encoding: Encoding::Utf8,
        });
    }
    match platform::decode_ansi(&bytes) {
        Some((text, page)) => Ok(Text {
            bytes: text.into_bytes(),
            encoding: Encoding::Ansi(page),
        }),
        None => Ok(Text {
            bytes,
            encoding: Encoding::Utf8,
        }),
    }
}

/// The text of UTF-16 `bytes` (after the byte-order mark).
fn utf16_text(
    bytes: &[u8],
    unit: fn([u8; 2]) -> u16,
    encoding: Encoding,
) -> Result<String, ReadError> {
    let units = bytes.chunks_exact(2).map(|pair| unit([pair[0], pair[1]]));
    let mut text = String::with_capacity(bytes.len() / 2);
    for c in char::decode_utf16(units) {
        match c {
            Ok(c) => text.push(c),
            Err(_) => {
                return Err(ReadError {
                    pos: Some(end_of(&text)),
                    message: format!("the file is not valid {encoding} (an unpaired surrogate)"),
                });
            }
        }
    }
    if bytes.len() % 2 == 1 {
        return Err(ReadError {
            pos: Some(end_of(&text)),
            message: format!("the file is not valid {encoding} (an odd number of bytes)"),
        });
    }
    Ok(text)
}

/// The position just past `text`: where a problem after it is.
fn end_of(text: &str) -> Pos {
    let line = text.matches('\n').count() + 1;
    let last = text.rsplit('\n').next().unwrap_or_default();
    Pos {
        line,
        column: Some(last.chars().count() + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16le(text: &str) -> Vec<u8> {
        let mut bytes = vec![0xFF, 0xFE];
        bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        bytes
    }

    fn utf16be(text: &str) -> Vec<u8> {
        let mut bytes = vec![0xFE, 0xFF];
        bytes.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
        bytes
    }

    #[test]
    fn utf16_is_read_by_its_byte_order_mark() {
        let text = "# caf\u{e9} \u{1F600}\r\n7 none /bin/cat\r\n";
        let le = decode(utf16le(text)).expect("valid UTF-16LE");
        assert_eq!(le.encoding, Encoding::Utf16Le);
        assert_eq!(le.bytes, text.as_bytes());
        let be = decode(utf16be(text)).expect("valid UTF-16BE");
        assert_eq!(be.encoding, Encoding::Utf16Be);
        assert_eq!(be.bytes, text.as_bytes());
        assert_eq!(decode(vec![0xFF, 0xFE]).expect("empty").bytes, b"");
    }

    #[test]
    fn broken_utf16_says_where() {
        let mut bytes = utf16le("a\nbc");
        bytes.extend([0x00, 0xD8, b'x', 0]);
        let e = decode(bytes).expect_err("an unpaired surrogate");
        assert_eq!(
            e.pos,
            Some(Pos {
                line: 2,
                column: Some(3)
            })
        );
        assert_eq!(
            e.message,
            "the file is not valid UTF-16LE (an unpaired surrogate)"
        );
        let mut bytes = utf16be("ab");
        bytes.push(b'c');
        let e = decode(bytes).expect_err("an odd length");
        assert_eq!(
            e.message,
            "the file is not valid UTF-16BE (an odd number of bytes)"
        );
    }

    #[test]
    fn utf8_stays_as_it_is() {
        for bytes in [&b"7 none /bin/cat\n"[..], b"\xEF\xBB\xBF# \xC3\xA9\n", b""] {
            let text = decode(bytes.to_vec()).expect("UTF-8");
            assert_eq!(text.encoding, Encoding::Utf8);
            assert_eq!(text.bytes, bytes);
        }
    }

    /// Windows reads it in the ANSI code page (its own test runs under
    /// Wine); elsewhere it is left for the parsers to report.
    #[test]
    fn not_utf8_is_read_in_the_ansi_code_page_where_there_is_one() {
        let bytes = b"# caf\xE9\n7 none /bin/caf\xE9\n".to_vec();
        let text = decode(bytes.clone()).expect("read");
        match platform::decode_ansi(&bytes) {
            Some((decoded, page)) => {
                assert_eq!(text.encoding, Encoding::Ansi(page));
                assert_eq!(text.bytes, decoded.as_bytes());
            }
            None => {
                assert_eq!(text.encoding, Encoding::Utf8);
                assert_eq!(text.bytes, bytes);
            }
        }
    }

    #[test]
    fn encodings_are_named() {
        let names: Vec<String> = [
            Encoding::Utf8,
            Encoding::Utf16Le,
            Encoding::Utf16Be,
            Encoding::Ansi(1252),
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            names,
            ["UTF-8", "UTF-16LE", "UTF-16BE", "ANSI code page 1252"]
        );
    }

    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let e = read(dir.path()).expect_err("a directory");
        assert_eq!(e.message, "is a directory, not a config file");
        let missing = read(&dir.path().join("missing")).expect_err("no file");
        assert!(
            missing.message.starts_with("cannot read the config file: "),
            "{missing:?}"
        );
        let file = dir.path().join("c.conf");
        std::fs::write(&file, "7 none /bin/cat\n").expect("write");
        assert_eq!(read(&file).expect("a file").bytes, b"7 none /bin/cat\n");
    }

    #[test]
    fn a_file_past_the_cap_is_refused_without_reading_it() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let file = dir.path().join("big.conf");
        let f = File::create(&file).expect("create");
        // Sparse: no disk space, and no read either.
        f.set_len(MAX_FILE_BYTES + 1).expect("set_len");
        let e = read(&file).expect_err("too large");
        assert_eq!(
            e.message,
            "the config file is larger than 16 MiB, the most a config may be"
        );
        f.set_len(MAX_FILE_BYTES).expect("set_len");
        assert_eq!(
            read(&file).expect("at the cap").bytes.len() as u64,
            MAX_FILE_BYTES
        );
    }
}
