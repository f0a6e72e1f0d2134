//! The original WinInetd 0.7 config format: `PORT  USER:PASS  CMDLINE`.
//!
//! Pure: bytes in, entries and every error with its line number out. This
//! module knows nothing of users, programs or ports in use; `config::resolve`
//! checks those.
//!
//! Rules, as the original applied them and without its parser's defects
//! (it dropped the last character of a final line with no newline and read
//! past the end of short lines):
//! - a line whose first byte is not an ASCII digit is a comment;
//! - fields are separated by runs of spaces or tabs;
//! - the first field is the port, the second `none`, `USER:PASS` or `USER`,
//!   and the command line is the rest of the line, trailing blanks removed;
//! - `\r\n` line ends and a UTF-8 byte-order mark are accepted.

use crate::secret::Secret;

/// One service line as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based line number.
    pub line: usize,
    pub port: u16,
    /// `None` for `none`: run as the daemon's own account.
    pub user: Option<UserField>,
    /// The command line, exactly as written (not yet split).
    pub cmdline: String,
}

/// The `USER:PASS` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserField {
    pub name: String,
    /// `None` when the field has no `:`.
    pub password: Option<Secret>,
}

/// A line that is not a valid service line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("port {0:?} is not a number")]
    PortNotNumber(String),
    #[error("port {0} is out of range (1-65535)")]
    PortOutOfRange(String),
    #[error("missing user field (`none` or USER:PASS) and command")]
    MissingUser,
    #[error("missing command after the user field")]
    MissingCommand,
    #[error("empty user name before ':'")]
    EmptyUserName,
    #[error("the user field has a control character (fields are separated by spaces or tabs only)")]
    UserNameControl,
    #[error("line is not valid UTF-8")]
    NotUtf8,
}

/// Result of parsing one file: the good entries and the bad lines.
#[derive(Debug, Default)]
pub struct Parsed {
    pub entries: Vec<Entry>,
    pub errors: Vec<(usize, LineError)>,
    /// Lines that look like service lines but are comments by the rules
    /// (they start with a blank before a digit): worth a warning.
    pub indented: Vec<usize>,
}

/// Parses a whole file.
pub fn parse(text: &[u8]) -> Parsed {
    let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
    let mut parsed = Parsed::default();
    for (index, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        match raw.first() {
            Some(b) if b.is_ascii_digit() => {}
            Some(b' ' | b'\t') => {
                if raw
                    .trim_ascii_start()
                    .first()
                    .is_some_and(u8::is_ascii_digit)
                {
                    parsed.indented.push(line);
                }
                continue;
            }
            _ => continue,
        }
        let Ok(raw) = std::str::from_utf8(raw) else {
            parsed.errors.push((line, LineError::NotUtf8));
            continue;
        };
        match parse_line(raw) {
            Ok((port, user, cmdline)) => parsed.entries.push(Entry {
                line,
                port,
                user,
                cmdline: cmdline.to_owned(),
            }),
            Err(e) => parsed.errors.push((line, e)),
        }
    }
    parsed
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Splits off the first field; returns it and the rest with leading blanks removed.
fn field(s: &str) -> (&str, &str) {
    match s.find(is_blank) {
        Some(end) => (&s[..end], s[end..].trim_start_matches(is_blank)),
        None => (s, ""),
    }
}

fn parse_line(line: &str) -> Result<(u16, Option<UserField>, &str), LineError> {
    let (port, rest) = field(line);
    let port = parse_port(port)?;
    let (user, rest) = field(rest);
    if user.is_empty() {
        return Err(LineError::MissingUser);
    }
    let cmdline = rest.trim_end_matches(|c: char| c.is_ascii_whitespace());
    if cmdline.is_empty() {
        return Err(LineError::MissingCommand);
    }
    let user = if user.eq_ignore_ascii_case("none") {
        None
    } else {
        let (name, password) = match user.split_once(':') {
            Some((name, pass)) => (name, Some(Secret::new(pass))),
            None => (user, None),
        };
        if name.is_empty() {
            return Err(LineError::EmptyUserName);
        }
        // A vertical tab or form feed between the port and `USER:PASS` is
        // a field of its own here: the user meant it as a blank, and the
        // next field (the password) would become the command line.
        if name.contains(char::is_control) {
            return Err(LineError::UserNameControl);
        }
        Some(UserField {
            name: name.to_owned(),
            password,
        })
    };
    Ok((port, user, cmdline))
}

fn parse_port(text: &str) -> Result<u16, LineError> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        // Something like `80x`. Show only the field's leading run of
        // name-like characters: a blank other than space or tab (form
        // feed, a mid-line CR) glues the user field to the port, and its
        // password must not be quoted.
        let shown: String = text
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            .take(40)
            .collect();
        let cut = shown.len() < text.len();
        return Err(LineError::PortNotNumber(if cut {
            format!("{shown}…")
        } else {
            shown
        }));
    }
    text.parse::<u64>()
        .ok()
        .filter(|port| super::bounds::PORT.contains(port))
        .and_then(|port| u16::try_from(port).ok())
        .ok_or_else(|| LineError::PortOutOfRange(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Result<Entry, LineError> {
        let mut p = parse(text.as_bytes());
        assert_eq!(p.entries.len() + p.errors.len(), 1, "{p:?}");
        match p.errors.pop() {
            Some((_, e)) => Err(e),
            None => Ok(p.entries.remove(0)),
        }
    }

    #[test]
    fn a_full_line() {
        let e = one("7001 alice:s3cret /bin/cat -u\n").expect("valid");
        assert_eq!(e.line, 1);
        assert_eq!(e.port, 7001);
        let user = e.user.expect("user");
        assert_eq!(user.name, "alice");
        assert_eq!(user.password.expect("password").expose(), "s3cret");
        assert_eq!(e.cmdline, "/bin/cat -u");
    }

    #[test]
    fn none_user_tabs_and_blank_runs() {
        let e = one("23\t \tnone\t/usr/sbin/in.telnetd  -h \t").expect("valid");
        assert_eq!(e.port, 23);
        assert_eq!(e.user, None);
        assert_eq!(e.cmdline, "/usr/sbin/in.telnetd  -h");
    }

    #[test]
    fn user_without_password() {
        let e = one("80 www /bin/true").expect("valid");
        let user = e.user.expect("user");
        assert_eq!(user.name, "www");
        assert!(user.password.is_none());
    }

    /// The original dropped the last character of a final line with no newline.
    #[test]
    fn last_line_without_newline_keeps_its_last_character() {
        let p = parse(b"# c\n7 none /bin/cat");
        assert_eq!(p.entries[0].cmdline, "/bin/cat");
    }

    #[test]
    fn crlf_and_bom() {
        let p = parse(b"\xEF\xBB\xBF7 none /bin/cat\r\n8 none /bin/echo hi\r\n");
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(p.entries[0].port, 7);
        assert_eq!(p.entries[0].cmdline, "/bin/cat");
        assert_eq!(p.entries[1].cmdline, "/bin/echo hi");
    }

    #[test]
    fn comments_and_line_numbers() {
        let p = parse(b"# comment\n\n; also\nx 1 none y\n  7 none /bin/cat\n9 none /bin/cat\n");
        assert_eq!(p.entries.len(), 1);
        assert_eq!(p.entries[0].line, 6);
        assert_eq!(p.indented, vec![5]);
    }

    /// The original read past the end of short lines.
    #[test]
    fn short_lines_are_errors() {
        assert_eq!(one("7"), Err(LineError::MissingUser));
        assert_eq!(one("7 "), Err(LineError::MissingUser));
        assert_eq!(one("7 none"), Err(LineError::MissingCommand));
        assert_eq!(one("7 none \t "), Err(LineError::MissingCommand));
        assert_eq!(one("7 :pw /bin/cat"), Err(LineError::EmptyUserName));
    }

    #[test]
    fn bad_ports() {
        assert_eq!(
            one("0 none /bin/cat"),
            Err(LineError::PortOutOfRange("0".into()))
        );
        assert_eq!(
            one("65536 none /bin/cat"),
            Err(LineError::PortOutOfRange("65536".into()))
        );
        assert_eq!(
            one("99999999999999999999999 none /bin/cat"),
            Err(LineError::PortOutOfRange("99999999999999999999999".into()))
        );
        assert_eq!(
            one("80x none /bin/cat"),
            Err(LineError::PortNotNumber("80x".into()))
        );
        assert!(one("65535 none /bin/cat").is_ok());
        assert!(one("00080 none /bin/cat").is_ok());
    }

    #[test]
    fn errors_never_show_the_password() {
        for line in ["7x u:pw-XYZ /bin/cat", "7 :pw-XYZ /bin/cat", "7 u:pw-XYZ"] {
            let p = parse(line.as_bytes());
            let (_, e) = &p.errors[0];
            assert!(!e.to_string().contains("pw-XYZ"), "{e}");
            assert!(!format!("{p:?}").contains("pw-XYZ"));
        }
    }

    #[test]
    fn invalid_utf8_in_a_service_line_is_an_error_but_not_in_a_comment() {
        let p = parse(b"# caf\xE9\n7 none /bin/caf\xE9\n");
        assert_eq!(p.errors, vec![(2, LineError::NotUtf8)]);
    }

    #[test]
    fn every_line_reported() {
        let p = parse(b"0 none a\n7\n8 none\n9 none /bin/cat\n70000 none x\n");
        let lines: Vec<usize> = p.errors.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![1, 2, 3, 5]);
        assert_eq!(p.entries.len(), 1);
    }

    /// Found by fuzzing: a port followed by a blank other than space or tab
    /// made the whole `PORT<blank>USER:PASS` the port field, and its error
    /// showed the password.
    #[test]
    fn a_port_glued_to_the_user_field_does_not_show_the_password() {
        for line in [
            "7\x0c:pw-XYZ /bin/cat",
            "7\u{a0}u:pw-XYZ /bin/cat",
            "7\ru:pw-XYZ /bin/cat",
            "7:pw-XYZ /bin/cat",
        ] {
            let p = parse(line.as_bytes());
            let message = p.errors[0].1.to_string();
            assert!(!message.contains("pw-XYZ"), "{line:?}: {message}");
            assert!(message.contains("port \"7"), "{message}");
        }
    }

    /// Found by fuzzing: a vertical tab between runs of tabs made a user
    /// field of its own, so `alice:PASS` became the command line and was
    /// shown with it. A control character in the user field is an error.
    #[test]
    fn a_control_character_as_the_user_field_is_an_error() {
        for line in [
            "7 \t\x0b\talice:pw-XYZ /bin/cat",
            "7 \x0c alice:pw-XYZ /bin/cat",
            "7 al\x07ice:pw-XYZ /bin/cat",
        ] {
            let p = parse(line.as_bytes());
            assert!(p.entries.is_empty(), "{line:?}: {p:?}");
            assert_eq!(p.errors, [(1, LineError::UserNameControl)], "{line:?}");
            assert!(!p.errors[0].1.to_string().contains("pw-XYZ"));
        }
    }
}
