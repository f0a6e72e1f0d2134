//! What the fuzz targets check of every input, beyond "does not panic".
//!
//! - Parsing and resolving are deterministic: the same bytes give the same
//!   result, password included.
//! - Every diagnostic and every service points at a line of the file.
//! - A password given in the input never shows: not in a diagnostic's
//!   `Display`, not in the `Debug` of what the parser or `resolve` returns.
//! - What `resolve` accepts holds what it promises: absolute programs, at
//!   least one listen address each, no two services on one address, and
//!   every number within the bounds the daemon runs with (`config::bounds`:
//!   a value past them failed or panicked at start, on a connection or at
//!   stop); the admission gate of each service and the global cap build
//!   from them.
//! - Decoding a file (UTF-16 by its byte-order mark, else as it is) is
//!   deterministic, gives UTF-8 for UTF-16, and says where it failed.
//!
//! The password check has to know which text of an arbitrary input is a
//! password. It recognises one: [`SECRET`] (seeded into the corpora and the
//! dictionaries) written where the format puts a password and nowhere else.
//! When the secret is also elsewhere (in a command, say), it may rightly
//! show, and the input is not checked for it. In the flat format, a
//! password with a blank in it runs into the command: on a `USER:PASS`
//! line, the words of the command before its first absolute path may be
//! the rest of the password, and a secret there must not show in a
//! diagnostic either (nor in what `resolve` returns, which has no config
//! then: such a command has no program it can find).
//!
//! The `cmdline` target fuzzes this platform's command-line splitter
//! (`shlex` on Unix). The Windows one is compiled on Windows only, where
//! these targets do not run.

use std::path::Path;

use toml::de::{DeTable, DeValue};
use wininetd::admit::{Admission, Gate};
use wininetd::config::StdioMode;
use wininetd::config::{
    self, Diagnostic, Encoding, ListenAddr, Loaded, Parsed, ServiceDefaults, System, bounds,
};

/// The password the oracle looks for. Short, so that mutations keep it
/// whole, and in no message the parsers write.
pub const SECRET: &str = "hunter2";

/// The two config formats; the file name picks one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Flat,
    Toml,
}

impl Format {
    /// The name the file is parsed under.
    pub fn path(self) -> &'static Path {
        match self {
            Self::Flat => Path::new("fuzz.conf"),
            Self::Toml => Path::new("fuzz.toml"),
        }
    }
}

/// Parses `data` as `format` and checks the result.
pub fn check_parse(format: Format, data: &[u8]) {
    let parsed = config::parse(format.path(), data);
    let again = config::parse(format.path(), data);
    let shown = format!("{parsed:?}");
    assert!(
        shown == format!("{again:?}") && passwords(&parsed) == passwords(&again),
        "parsing the same input twice gave different results"
    );
    let lines = line_count(data);
    check_lines(&parsed.diagnostics, lines);
    for draft in &parsed.drafts {
        assert!(
            (1..=lines).contains(&draft.line),
            "service on line {} of a {lines}-line file",
            draft.line
        );
    }
    check_secret(format, data, &shown, &parsed.diagnostics);
    // The command may hold the rest of a password: only the messages are
    // checked (the parser's `Debug` shows the command).
    if format == Format::Flat && flat_secret_maybe_password(data) {
        check_secret_in(&parsed.diagnostics, None);
    }
}

/// Parses `data` as `format` and resolves it on a system that has nothing
/// on PATH and cannot switch users, then checks what came out.
pub fn check_resolve(format: Format, data: &[u8]) {
    let loaded = resolve(format, data);
    let again = resolve(format, data);
    let shown = format!("{loaded:?}");
    assert_eq!(
        shown,
        format!("{again:?}"),
        "resolving the same input twice gave different results"
    );
    let lines = line_count(data);
    check_lines(&loaded.diagnostics, lines);
    check_secret(format, data, &shown, &loaded.diagnostics);
    if format == Format::Flat && flat_secret_maybe_password(data) {
        check_secret_in(&loaded.diagnostics, Some(&shown));
    }

    let has_errors = loaded.error_count() > 0;
    assert_eq!(
        loaded.config.is_some(),
        !has_errors,
        "a config comes exactly when there is no error"
    );
    let Some(config) = loaded.config else {
        return;
    };
    assert!(!config.services.is_empty(), "a config without services");
    let mut seen: Vec<(&ListenAddr, &str)> = Vec::new();
    for service in &config.services {
        assert!(
            (1..=lines).contains(&service.line),
            "service on line {} of a {lines}-line file",
            service.line
        );
        assert!(
            service.program.is_absolute(),
            "program {:?} is not absolute",
            service.program
        );
        assert!(
            !service.listen.is_empty(),
            "service {:?} listens nowhere",
            service.name
        );
        for addr in &service.listen {
            if let Some((other, name)) = seen.iter().find(|(other, _)| other.overlaps(addr)) {
                panic!(
                    "{addr} of service {:?} clashes with {other} of service {name:?}",
                    service.name
                );
            }
            seen.push((addr, &service.name));
        }
        check_bounds(service);
        // What the server builds from it at start and at each reload.
        let _gate = Gate::new(&service.name, &service.limits, &service.access);
    }
    if let Some(max) = config.max_sessions {
        within("max_sessions", max as u64, &bounds::SESSIONS);
        let _cap = Admission::new(max);
    }
}

/// Every number of a resolved service is within its bound.
fn check_bounds(service: &config::Service) {
    let seconds = |key: &str, value: Option<std::time::Duration>, range| {
        if let Some(value) = value {
            assert_eq!(value.subsec_nanos(), 0, "{key}: {value:?}");
            within(key, value.as_secs(), range);
        }
    };
    let socket = &service.socket;
    seconds("timeout", socket.timeout, &bounds::TIMEOUT_SECS);
    seconds("linger_timeout", socket.linger, &bounds::LINGER_SECS);
    seconds("keepalive", socket.keepalive, &bounds::KEEPALIVE_SECS);
    seconds("max_lifetime", service.max_lifetime, &bounds::LIFETIME_SECS);
    within("backlog", u64::from(socket.backlog), &bounds::BACKLOG);
    let limits = &service.limits;
    for (key, value) in [
        ("max_sessions", limits.max_sessions),
        ("max_per_source", limits.max_per_source),
    ] {
        if let Some(value) = value {
            within(key, value as u64, &bounds::SESSIONS);
        }
    }
    within(
        "source_prefix_v6",
        u64::from(limits.source_prefix_v6),
        &bounds::SOURCE_PREFIX_V6,
    );
    for rate in [&limits.rate, &limits.rate_per_source]
        .into_iter()
        .flatten()
    {
        assert!(
            rate.per_second.is_finite() && rate.per_second >= bounds::MIN_PER_SECOND,
            "{rate:?}"
        );
        within("burst", u64::from(rate.burst), &bounds::BURST);
    }
}

fn within(key: &str, value: u64, range: &std::ops::RangeInclusive<u64>) {
    assert!(range.contains(&value), "{key} = {value}, outside {range:?}");
}

/// Decodes `data` as a config file's bytes and checks the result.
pub fn check_decode(data: &[u8]) {
    let decoded = config::decode(data.to_vec());
    assert_eq!(
        format!("{decoded:?}"),
        format!("{:?}", config::decode(data.to_vec())),
        "decoding the same input twice gave different results"
    );
    match decoded {
        Ok(text) => {
            if matches!(text.encoding, Encoding::Utf16Le | Encoding::Utf16Be) {
                assert!(
                    std::str::from_utf8(&text.bytes).is_ok(),
                    "UTF-16 gave no UTF-8"
                );
            }
        }
        Err(e) => {
            let pos = e.pos.expect("a decoding error says where");
            assert!(
                pos.line >= 1 && pos.column.is_some_and(|c| c >= 1),
                "{pos:?}"
            );
            // UTF-16: at most one line per two bytes, one for the start.
            assert!(
                pos.line <= data.len() / 2 + 1,
                "{pos:?} of {} bytes",
                data.len()
            );
        }
    }
}

/// Splits `line` with the platform's command-line splitter.
pub fn check_split(line: &str) {
    let argv = wininetd::platform::split_command_line(line);
    assert_eq!(
        argv,
        wininetd::platform::split_command_line(line),
        "splitting the same line twice gave different results"
    );
}

fn resolve(format: Format, data: &[u8]) -> Loaded {
    let system = System {
        can_switch_users: false,
        path: Some("".into()),
    };
    let defaults = ServiceDefaults {
        timeout: None,
        linger: None,
        stdio: StdioMode::Socket,
    };
    let parsed = config::parse(format.path(), data);
    config::resolve(format.path(), parsed, &system, &defaults)
}

/// The passwords of the drafts, which their `Debug` masks.
fn passwords(parsed: &Parsed) -> Vec<Option<&str>> {
    parsed
        .drafts
        .iter()
        .map(|d| d.password.as_ref().map(|p| p.value.expose()))
        .collect()
}

/// Lines of `data` as the parsers number them: a final line without a
/// newline counts, and so does the empty one after a final newline (an
/// error at the end of the file is on it).
fn line_count(data: &[u8]) -> usize {
    data.iter().filter(|&&b| b == b'\n').count() + 1
}

fn check_lines(diagnostics: &[Diagnostic], lines: usize) {
    for d in diagnostics {
        if let Some(line) = d.line {
            assert!((1..=lines).contains(&line), "{d} of a {lines}-line file");
        }
        assert!(d.column.is_none_or(|c| c >= 1), "{d}: column 0");
    }
}

/// Asserts that [`SECRET`] is in neither `shown` nor a diagnostic when the
/// input has it only as a password.
fn check_secret(format: Format, data: &[u8], shown: &str, diagnostics: &[Diagnostic]) {
    if secret_only_as_password(format, data) {
        check_secret_in(diagnostics, Some(shown));
    }
}

/// Asserts that [`SECRET`] is in no diagnostic, nor in `shown` if given.
fn check_secret_in(diagnostics: &[Diagnostic], shown: Option<&str>) {
    if let Some(shown) = shown {
        assert!(
            !shown.contains(SECRET),
            "the password {SECRET:?} shows in the result: {shown}"
        );
    }
    for d in diagnostics {
        let message = d.to_string();
        assert!(
            !message.contains(SECRET),
            "the password {SECRET:?} shows in a diagnostic: {message}"
        );
    }
}

/// Whether `data` has [`SECRET`], and only where `format` puts a password.
pub fn secret_only_as_password(format: Format, data: &[u8]) -> bool {
    if find_all(data, SECRET.as_bytes()).next().is_none() {
        return false;
    }
    match format {
        Format::Flat => flat_secret_only_as_password(data),
        Format::Toml => toml_secret_only_as_password(data),
    }
}

/// Anything that may separate what a user meant as fields: the parser
/// splits on spaces and tabs only, so after another blank (`7<FF>alice:PASS`)
/// the whole run is its port field, whose error must still not show the
/// password (it did, until `legacy::parse_port` was fixed; this check found
/// it).
fn is_blank(c: char) -> bool {
    c.is_whitespace()
}

/// Flat format: the secret is in a `USER:PASS` field, the second of a line
/// that starts with a port (`PORT  USER:PASS  CMDLINE`).
fn flat_secret_only_as_password(data: &[u8]) -> bool {
    let data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    let mut found = false;
    for line in data.split(|&b| b == b'\n') {
        for start in find_all(line, SECRET.as_bytes()) {
            if !flat_password_at(&String::from_utf8_lossy(&line[..start])) {
                return false;
            }
            found = true;
        }
    }
    found
}

/// Whether what precedes a piece of a line is `PORT  USER:` and maybe the
/// start of the password. `PORT` is any field that starts with a digit: a
/// bad port does not make the password any less one.
fn flat_password_at(before: &str) -> bool {
    let rest = before.trim_start_matches(is_blank);
    if !rest.starts_with(|c: char| c.is_ascii_digit()) {
        return false;
    }
    let Some(end) = rest.find(is_blank) else {
        return false;
    };
    rest[end..]
        .trim_start_matches(is_blank)
        .split_once(':')
        .is_some_and(|(user, pass)| !user.contains(is_blank) && !pass.contains(is_blank))
}

/// Flat format: the secret is in a `USER:PASS` field, or in the words of
/// that line's command before its first absolute path (the rest of a
/// password with a blank), and nowhere else. Only commands the parser and
/// the oracle split alike are taken: words separated by spaces and tabs,
/// no quote, backslash or other blank.
fn flat_secret_maybe_password(data: &[u8]) -> bool {
    let data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    let mut found = false;
    for line in data.split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(line);
        // Byte ranges of the words that may be the rest of a password.
        let mut maybe = Vec::new();
        if let Some((user, words)) = flat_fields(&line)
            && user.contains(':')
        {
            maybe = words
                .iter()
                .take_while(|(_, w)| !w.starts_with('/'))
                .map(|(start, w)| *start..start + w.len())
                .collect();
        }
        for start in find_all(line.as_bytes(), SECRET.as_bytes()) {
            let end = start + SECRET.len();
            let in_password = flat_password_at(&line[..start]);
            let in_maybe = maybe.iter().any(|w| w.start <= start && end <= w.end);
            if !(in_password || in_maybe) {
                return false;
            }
            found = true;
        }
    }
    found
}

/// The user field and the command's words (with their byte offsets) of a
/// line the parser reads as a service line (it starts with a digit), when
/// its command splits alike for both.
fn flat_fields(line: &str) -> Option<(&str, Vec<(usize, &str)>)> {
    if !line.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut fields = line
        .split([' ', '\t'])
        .scan(0, |offset, field| {
            let start = *offset;
            *offset += field.len() + 1;
            Some((start, field))
        })
        .filter(|(_, f)| !f.is_empty());
    let _port = fields.next()?;
    let (_, user) = fields.next()?;
    let words: Vec<(usize, &str)> = fields.collect();
    let bare = |w: &str| !w.chars().any(|c| c.is_whitespace() || c.is_control());
    let plain = |w: &str| bare(w) && !w.contains(['"', '\'', '\\']);
    (bare(user) && words.iter().all(|(_, w)| plain(w))).then_some((user, words))
}

fn find_all<'a>(haystack: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(move |(_, w)| *w == needle)
        .map(|(i, _)| i)
}

/// TOML: the secret is in the string value of a `password` key of a
/// `[[service]]`, `[defaults]` or the top level, and in no other string or
/// key. When the document does not parse, the secret must follow
/// `password = "` on its line.
fn toml_secret_only_as_password(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        // The parser says only that the file is not UTF-8: nothing to
        // tell a password from.
        return true;
    };
    let Ok(document) = DeTable::parse(text) else {
        return text_secret_only_as_password(text);
    };
    let mut found = 0;
    walk_table(document.get_ref(), Place::Top, &mut found) && found > 0
}

/// Where a table is: where a `password` key is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Top,
    Defaults,
    Service,
    Other,
}

/// False when the secret is in a key or in a string that is not a
/// password; counts it in `found` where it is one.
fn walk_table(table: &DeTable<'_>, place: Place, found: &mut usize) -> bool {
    table.iter().all(|(key, value)| {
        let key = key.get_ref().as_ref();
        if key.contains(SECRET) {
            return false;
        }
        let inner = match (place, key) {
            (Place::Top, "defaults") => Place::Defaults,
            _ => Place::Other,
        };
        match value.get_ref() {
            DeValue::String(text) if text.contains(SECRET) => {
                if key == "password" && place != Place::Other {
                    *found += 1;
                    true
                } else {
                    false
                }
            }
            DeValue::Array(items) if place == Place::Top && key == "service" => items
                .iter()
                .all(|item| walk_value(item.get_ref(), Place::Service, found)),
            other => walk_value(other, inner, found),
        }
    })
}

/// A value that is not directly a `password`'s.
fn walk_value(value: &DeValue<'_>, place: Place, found: &mut usize) -> bool {
    match value {
        DeValue::String(text) => !text.contains(SECRET),
        DeValue::Table(table) => walk_table(table, place, found),
        DeValue::Array(items) => items
            .iter()
            .all(|item| walk_value(item.get_ref(), Place::Other, found)),
        _ => true,
    }
}

/// For a document that does not parse: each secret follows `password = "`
/// (or `'`, or a triple quote) at the start of its line.
fn text_secret_only_as_password(text: &str) -> bool {
    let mut found = false;
    for line in text.lines() {
        for start in find_all(line.as_bytes(), SECRET.as_bytes()) {
            let Some(rest) = line[..start].trim_start().strip_prefix("password") else {
                return false;
            };
            let Some(rest) = rest.trim_start().strip_prefix('=') else {
                return false;
            };
            let rest = rest.trim_start();
            let opened = rest.starts_with(['"', '\'']);
            let value = rest.trim_start_matches(['"', '\'']);
            if !opened || value.contains(['"', '\'']) {
                return false;
            }
            found = true;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_a_flat_password() {
        let yes = |text: &str| flat_secret_only_as_password(text.as_bytes());
        assert!(yes("7 alice:hunter2 /bin/cat\n"));
        assert!(yes("\u{feff}7\t alice:xhunter2x /bin/cat\n# c\n"));
        assert!(yes("7x alice:hunter2 /bin/cat"));
        assert!(yes("7 :a:hunter2"));
        assert!(!yes("7 none /bin/echo hunter2\n"));
        assert!(!yes("7 alice:hunter2 /bin/echo hunter2\n"));
        assert!(!yes("# 7 alice:hunter2 /bin/cat\n"));
        assert!(!yes("7 alice hunter2:x\n"));
        assert!(!yes("7 none /bin/cat\n"));
    }

    #[test]
    fn recognises_the_rest_of_a_flat_password() {
        let yes = |text: &str| flat_secret_maybe_password(text.as_bytes());
        assert!(yes("7 alice:Pass hunter2 /bin/cat\n"));
        assert!(yes("7 alice:Pass a hunter2 /bin/cat -x hunter\n"));
        assert!(yes("7 alice:Pass hunter2\n"));
        assert!(yes("7 alice:hunter2 /bin/cat\n"));
        assert!(yes("7\talice:Pass\thunter2\t/bin/cat\r\n# c\n"));
        assert!(!yes("7 alice:Pass /bin/cat hunter2\n"));
        assert!(!yes("7 alice hunter2 /bin/cat\n"));
        assert!(!yes("7 none hunter2 /bin/cat\n"));
        assert!(!yes("7 alice:Pass 'hunter2' /bin/cat\n"));
        assert!(!yes("# 7 alice:Pass hunter2 /bin/cat\n"));
        assert!(!yes(" 7 alice:Pass hunter2 /bin/cat\n"));
        assert!(!yes(
            "7 alice:Pass hunter2 /bin/cat\n8 none /bin/echo hunter2\n"
        ));
        // Found by fuzzing: a secret in the port field of a line whose
        // command has one too is not a password.
        assert!(!yes("8hunter2x alice:Pass hunter2\n"));
        assert!(yes("8 alice:Pass hunter2 hunter2x\n"));
    }

    #[test]
    fn decoding_is_checked() {
        check_decode(b"7 none /bin/cat\n");
        check_decode(&[0xFF, 0xFE, b'7', 0, b'\n', 0, 0x00, 0xD8]);
        check_decode(&[0xFE, 0xFF, 0, b'7', 0]);
        check_decode(b"\xFF");
    }

    #[test]
    fn recognises_a_toml_password() {
        let yes = |text: &str| toml_secret_only_as_password(text.as_bytes());
        let service = "[[service]]\nname = \"s\"\nlisten = 7\ncommand = \"cat\"\n";
        assert!(yes(&format!("{service}password = \"hunter2\"\n")));
        assert!(yes(&format!("{service}password = 'xhunter2'\n")));
        assert!(yes(&format!(
            "[defaults]\npassword = \"hunter2\"\n{service}"
        )));
        assert!(yes(&format!("password = \"hunter2\"\n{service}")));
        assert!(yes("service = [{ password = \"hunter2\" }]"));
        assert!(!yes(&format!("{service}password = [\"hunter2\"]\n")));
        assert!(!yes(&format!(
            "{service}env = {{ password = \"hunter2\" }}\n"
        )));
        assert!(!yes(&format!("{service}hunter2 = \"x\"\n")));
        assert!(!yes(&format!(
            "{service}password = \"hunter2\"\nname = \"hunter2\"\n"
        )));
        assert!(!yes(
            "[[service]]\nname = \"hunter\\u0032\"\npassword = \"hunter2\"\n"
        ));
        assert!(!yes(service));
        // Not TOML: the text rule.
        assert!(yes("password = \"hunter2\n"));
        assert!(yes("  password= '''a hunter2\n[["));
        assert!(!yes("command = \"hunter2\n"));
        assert!(!yes("password = \"a\" # hunter2\n[["));
    }

    /// The oracle fails on a leak: a stand-in for a parser that shows the
    /// password.
    #[test]
    #[should_panic(expected = "shows in the result")]
    fn a_shown_password_fails() {
        let data = b"7 alice:hunter2 /bin/cat\n";
        check_secret(Format::Flat, data, "Secret(\"hunter2\")", &[]);
    }

    #[test]
    fn the_seeds_pass() {
        for (format, text) in [
            (
                Format::Flat,
                "7 alice:hunter2 /bin/cat\n7x bob:hunter2 /bin/cat\n",
            ),
            (
                Format::Flat,
                "7 alice:Pass hunter2 /bin/cat\n8 bob:Pass hunter2\n9 /bin/cat -u\n",
            ),
            (
                Format::Toml,
                "[[service]]\nname = \"s\"\nlisten = 7\ncommand = \"/bin/cat\"\nuser = \"u\"\npassword = \"hunter2\"\n",
            ),
        ] {
            assert!(
                secret_only_as_password(format, text.as_bytes())
                    || flat_secret_maybe_password(text.as_bytes())
            );
            check_parse(format, text.as_bytes());
            check_resolve(format, text.as_bytes());
        }
        check_split("/bin/sh -c 'echo \"hi\"'");
    }
}
