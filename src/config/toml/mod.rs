//! The extended config format: TOML, for a file whose name ends in `.toml`.
//!
//! Pure: bytes in, [`Draft`]s and every problem with its line and column out.
//! Like [`super::legacy`], this module knows nothing of users, programs or
//! ports in use; `config::resolve` checks those.
//!
//! The document is parsed by the `toml` crate into a tree that keeps the
//! position of every key and value; this module then walks the tree itself
//! instead of deriving `serde::Deserialize`. A derived parser stops at the
//! first wrong type or unknown key, and its messages quote the offending
//! value, which could be a password or a page of text. The walk reports every
//! problem at once (`--check` lists them all), each at the key or value it is
//! about, and its messages show only short, quoted pieces of what the user
//! typed, never a password. Unknown keys are errors in every table, as serde's
//! `deny_unknown_fields` would make them.
//!
//! This file walks the document: the top level, `[defaults]`, and each
//! `[[service]]` with the keys that make it (name, listen, command, user,
//! group, password). The per-service options are declared once each, in
//! [`options`]; [`values`] reads each kind of value.
//!
//! Rules the format does not spell out:
//! - a service's options are the `[defaults]` overridden key by key by its
//!   own; `env` is merged by variable (the service's value of a variable wins),
//!   every other key is replaced whole;
//! - `env` is kept sorted by variable name;
//! - a service whose `name`, `listen` and `command` are valid becomes a draft
//!   even when other keys are wrong (their options are left unset), so that
//!   `resolve` can report its other problems in the same run; the file is
//!   rejected either way;
//! - when the TOML itself is malformed only its first syntax error is
//!   reported: the parser's recovery turns one unclosed bracket into errors
//!   on every line after it.

mod options;
mod values;

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

pub use self::options::Options;
use self::options::{Key, OPTIONS, Scope};
use super::{
    Builtin, CommandLine, Diagnostic, Draft, FileFormat, IpListen, ListenAddr, LogFormat, Parsed,
    Placed, Pos, Protocol, Secret, Severity, StdioMode, bounds,
};

type Value<'i> = Spanned<DeValue<'i>>;

/// The keys of the top level that are values.
const TOP_KEYS: &[&str] = &["max_sessions", "log_format"];
/// The keys of the top level that are tables.
const TOP_TABLES: &[&str] = &["defaults", "service"];
/// The keys that make a service what it is: [`Walker::service`] reads them
/// into the draft itself. Only a `[[service]]` may have them.
const SERVICE_KEYS: &[Key] = &[
    Key::service_only("name"),
    Key::service_only("listen"),
    Key::service_only("command"),
    Key::service_only("builtin"),
    Key::service_only("user"),
    Key::service_only("group"),
    Key::service_only("password"),
];
/// The keys of a `[[service]]` that only a program has a use for: errors
/// beside `builtin`. (`[defaults]`' values of them do not apply to it.)
const BUILTIN_MEANINGLESS: [&str; 7] = [
    "user",
    "group",
    "password",
    "env",
    "working_dir",
    "stdio",
    "stderr",
];
/// The longest Unix socket path: `sun_path` holds 108 bytes with its NUL
/// on Linux, 104 on the BSDs and macOS.
const UNIX_PATH_MAX: usize = 103;

#[cfg(test)]
use self::values::TLS_KEYS;

/// The keys of a `rate` or `rate_per_source` table.
const RATE_KEYS: &[&str] = &["per_second", "burst"];

/// Every key a `[[service]]` may have: those that make it, then its options.
fn service_keys() -> impl Iterator<Item = &'static Key> {
    SERVICE_KEYS.iter().chain(OPTIONS)
}

/// The names of `keys`, for "did you mean".
fn key_names<'k>(keys: impl IntoIterator<Item = &'k Key>) -> Vec<&'static str> {
    keys.into_iter().map(|key| key.name).collect()
}

/// What a problem message shows of a user's text at most, in characters.
const SHOWN_CHARS: usize = 40;

/// Parses a whole TOML config file.
pub fn parse(file: &Path, text: &[u8]) -> Parsed {
    let text = match std::str::from_utf8(text) {
        Ok(text) => text,
        Err(e) => {
            let (line, column) = position(text, e.valid_up_to());
            return Parsed {
                diagnostics: vec![Diagnostic {
                    line: Some(line),
                    column: Some(column),
                    ..Diagnostic::error(file, None, Problem::NotUtf8.to_string())
                }],
                ..Parsed::default()
            };
        }
    };
    let mut walker = Walker {
        file,
        text,
        diagnostics: Vec::new(),
    };
    let parsed = match DeTable::parse(text) {
        Ok(document) => walker.document(document.get_ref()),
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            walker.error(span, Problem::Syntax(e.message().to_owned()));
            Parsed::default()
        }
    };
    let mut diagnostics = walker.diagnostics;
    diagnostics.sort_by_key(|d| (d.line, d.column));
    Parsed {
        diagnostics,
        ..parsed
    }
}

/// A problem with the file; the message of a [`Diagnostic`].
///
/// The messages show what the user typed only through [`quoted`] (short,
/// escaped), and never show a password: no variant is built from one.
#[derive(Debug, thiserror::Error)]
enum Problem {
    #[error("the file is not valid UTF-8")]
    NotUtf8,
    #[error("invalid TOML: {0}")]
    Syntax(String),
    #[error("unknown key {} in {table}{}", quoted(.key), suggestion(.key, .known))]
    UnknownKey {
        key: String,
        table: String,
        known: Vec<&'static str>,
    },
    #[error("`{0}` belongs in each [[service]], not in [defaults]")]
    ServiceOnly(&'static str),
    #[error("`{key}` must be {expected}, not {found}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("`{key}` must be {}, not {value}", range(*.min, *.max))]
    OutOfRange {
        key: String,
        value: i128,
        min: i128,
        max: i128,
    },
    #[error("`{key}` must be a number of at least 1/86400 (one a day)")]
    RateTooLow { key: String },
    #[error("`{key}` must be {}, not {}", one_of(.choices), quoted(.value))]
    NotAChoice {
        key: &'static str,
        value: String,
        choices: Vec<&'static str>,
    },
    #[error("{table} has no `{key}`")]
    Missing { key: &'static str, table: String },
    #[error("`{0}` must not be empty")]
    Empty(&'static str),
    #[error("the program (the first element of `command`) must not be empty")]
    EmptyProgram,
    #[error("`name` must not contain control characters")]
    ControlInName,
    #[error("duplicate service name {} (first on line {first_line})", quoted(.name))]
    DuplicateName { name: String, first_line: usize },
    #[error("{} is not a listen address: use PORT, IPV4:PORT or [IPV6]:PORT", quoted(.0))]
    BadListen(String),
    #[error("port {0} is out of range (1-65535)")]
    PortOutOfRange(String),
    #[error("`{key}` entry {} is not an IP address or CIDR network", quoted(.value))]
    BadNetwork { key: &'static str, value: String },
    #[error("`{0}` must be an absolute path")]
    RelativePath(&'static str),
    #[error("`{0}` contains a NUL character")]
    NulInPath(&'static str),
    #[error("`{0}` needs `user`")]
    NeedsUser(&'static str),
    #[error("`builtin` and `command` are mutually exclusive: a built-in service runs no program")]
    BuiltinAndCommand,
    #[error("`{0}` has no meaning for a built-in service: it starts no program")]
    NotForBuiltin(&'static str),
    #[error("`{key}` has no meaning for {kind}: {why}")]
    NotForKind {
        key: &'static str,
        kind: &'static str,
        why: &'static str,
    },
    #[error("`{key}` must be an octal string of permission bits (0-777), such as \"0660\", not {}", quoted(.value))]
    BadMode { key: &'static str, value: String },
    #[error("`{key}` entry {} is not a user or group name", quoted(.value))]
    BadAccount { key: &'static str, value: String },
    #[error("{} is not a Unix socket path: use unix:/ABSOLUTE/PATH, at most {UNIX_PATH_MAX} bytes", quoted(.0))]
    BadUnixPath(String),
    #[error("Unix sockets here are stream sockets: `protocol = \"udp\"` listens on IP addresses")]
    UdpUnix,
    #[error("a service listens on Unix sockets or on IP addresses, not both")]
    MixedListen,
    #[error(
        "a UDP service with a command runs in wait mode (its program reads the datagrams itself): remove `wait = false`"
    )]
    UdpCommandNotWait,
    #[error(
        "`proxy_protocol` needs `trusted_proxies`: the proxies whose headers are believed (a header from anyone else would let them pass for any address)"
    )]
    ProxyNeedsTrusted,
    #[error("`{0}` needs `proxy_protocol`")]
    NeedsProxyProtocol(&'static str),
    #[error("`{0}` needs `{1}`")]
    NeedsKey(&'static str, &'static str),
    #[error("an ALPN protocol name is at most 255 bytes")]
    LongAlpn,
    #[error("a TLS session is relayed (the program gets pipes): `stdio = \"socket\"` cannot be")]
    TlsSocket,
    #[error("`wait` is for programs: a built-in answers each connection or datagram itself")]
    WaitBuiltin,
    #[error("environment variable name {} must not be empty or contain `=` or NUL", quoted(.0))]
    BadEnvName(String),
    #[error("environment variable {} must not contain NUL", quoted(.0))]
    NulInEnvValue(String),
    #[error("no services: add a [[service]] table")]
    NoServices,
}

/// Walks the parsed document, collecting diagnostics.
struct Walker<'a> {
    file: &'a Path,
    text: &'a str,
    diagnostics: Vec<Diagnostic>,
}

impl Walker<'_> {
    fn error(&mut self, span: Range<usize>, problem: Problem) {
        let message = problem.to_string();
        let (line, column) = position(self.text.as_bytes(), span.start);
        self.diagnostics.push(Diagnostic {
            severity: Severity::Error,
            file: self.file.to_owned(),
            line: Some(line),
            column: Some(column),
            message,
        });
    }

    fn line(&self, span: &Range<usize>) -> usize {
        position(self.text.as_bytes(), span.start).0
    }

    fn pos(&self, span: &Range<usize>) -> Pos {
        let (line, column) = position(self.text.as_bytes(), span.start);
        Pos {
            line,
            column: Some(column),
        }
    }

    fn document(&mut self, root: &DeTable<'_>) -> Parsed {
        let mut parsed = Parsed::default();
        let mut defaults = None;
        let mut services = None;
        for (key, value) in root {
            match key.get_ref().as_ref() {
                "max_sessions" => {
                    parsed.max_sessions = self.within("max_sessions", value, bounds::SESSIONS);
                }
                "log_format" => {
                    parsed.log_format = self.choice(
                        "log_format",
                        value,
                        &[("text", LogFormat::Text), ("json", LogFormat::Json)],
                    );
                }
                "defaults" => defaults = Some(value),
                "service" => services = Some((key, value)),
                _ => self.unknown_key(key, "the top level", [TOP_KEYS, TOP_TABLES].concat()),
            }
        }
        let defaults = defaults
            .and_then(|value| self.defaults(value))
            .unwrap_or_default();
        let mut names = Vec::new();
        if let Some((key, value)) = services {
            match value.get_ref() {
                DeValue::Array(entries) if entries.is_empty() => {
                    self.error(key.span(), Problem::NoServices);
                }
                DeValue::Array(entries) => {
                    for entry in entries {
                        if let Some(draft) = self.service(entry, &defaults, &mut names) {
                            parsed.drafts.push(draft);
                        }
                    }
                }
                _ => self.wrong_type("service", "an array of tables ([[service]])", value),
            }
        } else {
            // Said here rather than by `resolve`, whose message describes the
            // flat format.
            let message = Problem::NoServices.to_string();
            self.diagnostics
                .push(Diagnostic::error(self.file, None, message));
        }
        parsed
    }

    fn defaults(&mut self, value: &Value<'_>) -> Option<Options> {
        let DeValue::Table(table) = value.get_ref() else {
            self.wrong_type("defaults", "a table", value);
            return None;
        };
        let mut options = Options::default();
        for (key, value) in table {
            let name = key.get_ref().as_ref();
            match service_keys().find(|known| known.name == name) {
                Some(known) if known.scope == Scope::ServiceOnly => {
                    self.error(key.span(), Problem::ServiceOnly(known.name));
                }
                Some(_) => {
                    self.option(&mut options, name, value);
                }
                None => {
                    let known = service_keys().filter(|k| k.scope == Scope::ServiceOrDefaults);
                    self.unknown_key(key, "[defaults]", key_names(known));
                }
            }
        }
        Some(options)
    }

    /// One `[[service]]`: a draft for any table, complete when its name,
    /// listen and command are valid. `names` holds the names seen so far,
    /// with their lines.
    fn service(
        &mut self,
        value: &Value<'_>,
        defaults: &Options,
        names: &mut Vec<(String, usize)>,
    ) -> Option<Draft> {
        let DeValue::Table(table) = value.get_ref() else {
            self.wrong_type("service", "an array of tables ([[service]])", value);
            return None;
        };
        let header = value.span();
        let line = self.line(&header);
        let mut name = None;
        let mut listen = None;
        let mut command = None;
        let mut builtin = None;
        let (mut user, mut group, mut password) = (None, None, None);
        let mut options = Options::default();
        for (key, value) in table {
            let at = self.pos(&value.span());
            let text = |t: &str| Placed::new(t.to_owned(), at);
            match key.get_ref().as_ref() {
                "name" => name = self.name(value, line, names),
                "listen" => listen = Some(self.listen(value)),
                "command" => command = self.command(value).map(|c| Placed::new(c, at)),
                "builtin" => {
                    builtin = self
                        .choice("builtin", value, &Builtin::ALL)
                        .map(|b| Placed::new(b, at));
                }
                "user" => user = self.non_empty("user", value).map(text),
                "group" => group = self.non_empty("group", value).map(text),
                // The warning that a password is ignored is about the key.
                "password" => {
                    let key_at = self.pos(&key.span());
                    password = self.password(value).map(|p| Placed::new(p, key_at));
                }
                other => {
                    if !self.option(&mut options, other, value) {
                        self.unknown_key(key, "[[service]]", key_names(service_keys()));
                    }
                }
            }
        }
        let find = |wanted: &str| table.iter().find(|(key, _)| key.get_ref() == wanted);
        for key in ["name", "listen", "command"] {
            if find(key).is_none() && !(key == "command" && find("builtin").is_some()) {
                let table = "[[service]]".to_owned();
                self.error(header.clone(), Problem::Missing { key, table });
            }
        }
        if find("user").is_none() {
            for key in ["group", "password"] {
                if let Some((found, _)) = find(key) {
                    self.error(found.span(), Problem::NeedsUser(key));
                }
            }
        }
        let mut exclusive = true;
        let (mut listen, mut all_listen) = listen.unwrap_or_default();
        if let Some((_, value)) = find("listen")
            && !self.listen_kinds(value, &mut listen, options.protocol)
        {
            all_listen = false;
        }
        let kind = Kind {
            udp: options.protocol == Some(Protocol::Udp),
            unix: listen
                .iter()
                .any(|l| matches!(l.value, ListenAddr::Unix(_))),
            builtin: find("builtin").is_some(),
            wait: options.wait,
        };
        if !self.kind_rules(&kind, table, &options) {
            exclusive = false;
        }
        if let Some((_, value)) = find("builtin") {
            if find("command").is_some() {
                self.error(value.span(), Problem::BuiltinAndCommand);
                exclusive = false;
            }
            for key in BUILTIN_MEANINGLESS {
                if let Some((found, _)) = find(key) {
                    self.error(found.span(), Problem::NotForBuiltin(key));
                    exclusive = false;
                }
            }
        }
        let mut options = options.inherit(defaults);
        // What [defaults] says of a key this kind of service has no use for
        // is for the others.
        for (key, _) in kind.meaningless() {
            options.clear(key);
        }
        if options.stdio == Some(StdioMode::Pipe) && kind.is_wait() {
            options.stdio = None;
        }
        if !self.dependent_keys(table, &header, &options) {
            exclusive = false;
        }
        let complete =
            name.is_some() && all_listen && exclusive && (command.is_some() || builtin.is_some());
        Some(Draft {
            line,
            format: FileFormat::Toml,
            name: name.unwrap_or_default(),
            listen,
            command,
            builtin,
            user,
            group,
            password,
            options,
            complete,
        })
    }

    fn name(
        &mut self,
        value: &Value<'_>,
        line: usize,
        names: &mut Vec<(String, usize)>,
    ) -> Option<String> {
        let name = self.non_empty("name", value)?;
        if name.chars().any(char::is_control) {
            self.error(value.span(), Problem::ControlInName);
            return None;
        }
        if let Some((_, first_line)) = names.iter().find(|(seen, _)| seen == name) {
            let problem = Problem::DuplicateName {
                name: name.to_owned(),
                first_line: *first_line,
            };
            self.error(value.span(), problem);
        } else {
            names.push((name.to_owned(), line));
        }
        Some(name.to_owned())
    }

    /// `listen`: one address or an array of them. Returns the valid ones,
    /// and whether they are all there is (no error, not empty).
    fn listen(&mut self, value: &Value<'_>) -> (Vec<Placed<ListenAddr>>, bool) {
        let entries = match value.get_ref() {
            DeValue::Array(entries) if entries.is_empty() => {
                self.error(value.span(), Problem::Empty("listen"));
                return (Vec::new(), false);
            }
            DeValue::Array(entries) => entries.iter().collect(),
            _ => vec![value],
        };
        let count = entries.len();
        let addrs: Vec<Placed<ListenAddr>> = entries
            .into_iter()
            .filter_map(|entry| {
                let addr = match entry.get_ref() {
                    DeValue::Integer(n) => i128::from_str_radix(n.as_str(), n.radix())
                        .ok()
                        .and_then(|n| u64::try_from(n).ok())
                        .filter(|port| bounds::PORT.contains(port))
                        .and_then(|port| u16::try_from(port).ok())
                        .map(|port| ListenAddr::Tcp(IpListen::Any(port)))
                        .ok_or_else(|| Problem::PortOutOfRange(cut(&n.to_string()))),
                    DeValue::String(text) => listen_addr(text),
                    _ => {
                        let expected = "a port, an address string, or an array of them";
                        self.wrong_type("listen", expected, entry);
                        return None;
                    }
                };
                let pos = self.pos(&entry.span());
                addr.map(|addr| Placed::new(addr, pos))
                    .map_err(|problem| self.error(entry.span(), problem))
                    .ok()
            })
            .collect();
        let all = addrs.len() == count;
        (addrs, all)
    }

    /// Makes `listen`'s IP addresses UDP ones when `protocol` says so, and
    /// checks that its entries are of one kind; false if they are not.
    fn listen_kinds(
        &mut self,
        value: &Value<'_>,
        listen: &mut [Placed<ListenAddr>],
        protocol: Option<Protocol>,
    ) -> bool {
        let mut ok = true;
        let first_unix = listen
            .first()
            .is_some_and(|l| matches!(l.value, ListenAddr::Unix(_)));
        for entry in listen.iter_mut() {
            let span = self.span_at(value, entry.pos);
            match &entry.value {
                ListenAddr::Unix(_) if protocol == Some(Protocol::Udp) => {
                    self.error(span, Problem::UdpUnix);
                    ok = false;
                }
                ListenAddr::Unix(_) if !first_unix => {
                    self.error(span, Problem::MixedListen);
                    ok = false;
                }
                ListenAddr::Tcp(_) if first_unix => {
                    self.error(span, Problem::MixedListen);
                    ok = false;
                }
                ListenAddr::Tcp(ip) if protocol == Some(Protocol::Udp) => {
                    entry.value = ListenAddr::Udp(*ip);
                }
                _ => {}
            }
        }
        ok
    }

    /// The span of the entry of `value` (`listen`) written at `pos`.
    fn span_at(&self, value: &Value<'_>, pos: Pos) -> Range<usize> {
        let entries: Vec<&Value<'_>> = match value.get_ref() {
            DeValue::Array(entries) => entries.iter().collect(),
            _ => vec![value],
        };
        entries
            .into_iter()
            .map(Spanned::span)
            .find(|span| self.pos(span) == pos)
            .unwrap_or_else(|| value.span())
    }

    /// Reports each key the service set that means nothing for its kind,
    /// and the combinations that cannot be; false if there was one.
    fn kind_rules(&mut self, kind: &Kind, table: &DeTable<'_>, options: &Options) -> bool {
        let find = |wanted: &str| table.iter().find(|(key, _)| key.get_ref() == wanted);
        let mut ok = true;
        for (key, why) in kind.meaningless() {
            if let Some((found, _)) = find(key) {
                self.error(
                    found.span(),
                    Problem::NotForKind {
                        key,
                        kind: kind.name(),
                        why,
                    },
                );
                ok = false;
            }
        }
        if kind.is_wait()
            && options.stdio == Some(StdioMode::Pipe)
            && let Some((_, value)) = find("stdio")
        {
            self.error(
                value.span(),
                Problem::NotForKind {
                    key: "stdio",
                    kind: kind.name(),
                    why: "`stdio = \"pipe\"`: the program takes the listening socket itself",
                },
            );
            ok = false;
        }
        if let Some((_, value)) = find("wait") {
            if kind.builtin && options.wait == Some(true) {
                self.error(value.span(), Problem::WaitBuiltin);
                ok = false;
            }
            if kind.udp && !kind.builtin && options.wait == Some(false) {
                self.error(value.span(), Problem::UdpCommandNotWait);
                ok = false;
            }
        }
        ok
    }

    /// The keys that need another: `proxy_protocol` needs `trusted_proxies`
    /// (whose headers to believe), the other PROXY keys need it, and
    /// `tls_timeout` needs `tls` (whose sessions are relayed, so `stdio =
    /// "socket"` cannot be); false if a rule is broken.
    fn dependent_keys(
        &mut self,
        table: &DeTable<'_>,
        header: &Range<usize>,
        options: &Options,
    ) -> bool {
        let find = |wanted: &str| table.iter().find(|(key, _)| key.get_ref() == wanted);
        let trusted = options
            .trusted_proxies
            .as_ref()
            .is_some_and(|t| !t.is_empty());
        if options.proxy_protocol.is_some() && !trusted {
            let span = find("proxy_protocol").map_or_else(|| header.clone(), |(key, _)| key.span());
            self.error(span, Problem::ProxyNeedsTrusted);
            return false;
        }
        if options.tls.is_some()
            && options.stdio == Some(StdioMode::Socket)
            && let Some((_, value)) = find("stdio")
        {
            self.error(value.span(), Problem::TlsSocket);
            return false;
        }
        if options.tls.is_none()
            && find("tls").is_none()
            && let Some((found, _)) = find("tls_timeout")
        {
            self.error(found.span(), Problem::NeedsKey("tls_timeout", "tls"));
            return false;
        }
        // (A key that means nothing for this kind of service was said so.)
        if options.proxy_protocol.is_none() && find("proxy_protocol").is_none() {
            for key in ["trusted_proxies", "proxy_timeout"] {
                if let Some((found, _)) = find(key) {
                    self.error(found.span(), Problem::NeedsProxyProtocol(key));
                    return false;
                }
            }
        }
        true
    }

    /// `command`: a line to split later, or argv.
    fn command(&mut self, value: &Value<'_>) -> Option<CommandLine> {
        match value.get_ref() {
            DeValue::String(line) if line.trim().is_empty() => {
                self.error(value.span(), Problem::Empty("command"));
                None
            }
            DeValue::String(line) => Some(CommandLine::Line(line.to_string())),
            DeValue::Array(argv) if argv.is_empty() => {
                self.error(value.span(), Problem::Empty("command"));
                None
            }
            DeValue::Array(argv) => {
                if let Some(first) = argv.first()
                    && matches!(first.get_ref(), DeValue::String(program) if program.is_empty())
                {
                    self.error(first.span(), Problem::EmptyProgram);
                    return None;
                }
                let count = argv.len();
                let argv: Vec<String> = argv
                    .iter()
                    .filter_map(|arg| self.string("command", arg).map(str::to_owned))
                    .collect();
                (argv.len() == count).then_some(CommandLine::Argv(argv))
            }
            _ => {
                self.wrong_type("command", "a string or an array of strings", value);
                None
            }
        }
    }

    /// `password`: checked without ever showing it.
    fn password(&mut self, value: &Value<'_>) -> Option<Secret> {
        self.string("password", value).map(Secret::new)
    }

    fn wrong_type(&mut self, key: &str, expected: &'static str, value: &Value<'_>) {
        let problem = Problem::WrongType {
            key: key.to_owned(),
            expected,
            found: kind(value.get_ref()),
        };
        self.error(value.span(), problem);
    }

    /// `key` is none of `known`, the keys of `table`.
    fn unknown_key(&mut self, key: &Spanned<Cow<'_, str>>, table: &str, known: Vec<&'static str>) {
        let problem = Problem::UnknownKey {
            key: key.get_ref().to_string(),
            table: table.to_owned(),
            known,
        };
        self.error(key.span(), problem);
    }
}

/// What kind of service a `[[service]]` is, for the keys that mean
/// something only for some kinds.
struct Kind {
    udp: bool,
    unix: bool,
    builtin: bool,
    /// `wait` as written.
    wait: Option<bool>,
}

const NO_CONNECTIONS: &str = "UDP has no connections";
const ONE_PROGRAM: &str = "a wait service runs one program at a time, which serves every client";
const UNSEEN_SOURCE: &str = "a stream wait service's program accepts its connections itself: who connects is not known before it runs (use a nowait service, or a firewall)";
const ACCEPTS_ITSELF: &str = "a wait service's program accepts its connections itself";
const NO_ADDRESS: &str =
    "a Unix socket's clients have no address (use allow_uid and allow_gid to choose them)";
const BUILTIN_NO_TLS: &str = "a built-in is served on the connection itself, not over TLS";
const UNIX_NO_TLS: &str = "TLS is served on TCP connections (a Unix socket is local)";
const TCP_ONLY: &str = "it is a TCP option";
const UNIX_ONLY: &str = "only a Unix socket (listen = \"unix:PATH\") has it";
const PER_DATAGRAM: &str = "a UDP built-in answers each datagram at once: it has no sessions that last (limit it with rate and rate_per_source)";

impl Kind {
    /// Whether the program gets the listening socket.
    fn is_wait(&self) -> bool {
        !self.builtin && self.wait.unwrap_or(self.udp)
    }

    fn name(&self) -> &'static str {
        match (self.udp, self.unix, self.builtin, self.is_wait()) {
            (true, _, true, _) => "a UDP built-in",
            (true, _, _, _) => "a UDP service",
            (_, true, _, true) => "a Unix socket wait service",
            (_, true, _, _) => "a Unix socket service",
            (_, _, _, true) => "a wait service",
            _ => "this service",
        }
    }

    /// The keys with no meaning for this kind, each with the reason.
    fn meaningless(&self) -> Vec<(&'static str, &'static str)> {
        let mut keys: Vec<(&'static str, &'static str)> = Vec::new();
        let mut add = |names: &[&'static str], why: &'static str| {
            for name in names {
                if !keys.iter().any(|(k, _)| k == name) {
                    keys.push((name, why));
                }
            }
        };
        if self.udp {
            add(
                &[
                    "timeout",
                    "linger_timeout",
                    "keepalive",
                    "nodelay",
                    "backlog",
                    "reject_message",
                    "max_per_source",
                    "proxy_protocol",
                    "trusted_proxies",
                    "proxy_timeout",
                    "tls",
                    "tls_timeout",
                ],
                NO_CONNECTIONS,
            );
            if self.builtin {
                add(&["max_sessions", "max_lifetime"], PER_DATAGRAM);
            }
        }
        if self.builtin {
            add(&["tls", "tls_timeout"], BUILTIN_NO_TLS);
        }
        if self.is_wait() {
            add(&["max_sessions", "max_per_source"], ONE_PROGRAM);
            if !self.udp {
                add(
                    &[
                        "allow",
                        "deny",
                        "rate_per_source",
                        "source_prefix_v6",
                        "allow_uid",
                        "allow_gid",
                        "reject_message",
                        "proxy_protocol",
                        "trusted_proxies",
                        "proxy_timeout",
                    ],
                    UNSEEN_SOURCE,
                );
                add(&["tls", "tls_timeout"], ACCEPTS_ITSELF);
            }
            add(
                &["timeout", "linger_timeout", "keepalive", "nodelay"],
                ACCEPTS_ITSELF,
            );
        }
        if self.unix {
            add(&["keepalive", "nodelay"], TCP_ONLY);
            add(
                &[
                    "allow",
                    "deny",
                    "source_prefix_v6",
                    "max_per_source",
                    "rate_per_source",
                    "proxy_protocol",
                    "trusted_proxies",
                    "proxy_timeout",
                ],
                NO_ADDRESS,
            );
            add(&["tls", "tls_timeout"], UNIX_NO_TLS);
        } else {
            add(
                &[
                    "socket_mode",
                    "socket_owner",
                    "socket_group",
                    "allow_uid",
                    "allow_gid",
                ],
                UNIX_ONLY,
            );
        }
        keys
    }
}

/// `PORT` (every address), `IPV4:PORT`, `[IPV6]:PORT` or `unix:PATH`.
fn listen_addr(text: &str) -> Result<ListenAddr, Problem> {
    if let Some(path) = text.strip_prefix("unix:") {
        if !path.starts_with('/') || text.len() - 5 > UNIX_PATH_MAX || text.contains('\0') {
            return Err(Problem::BadUnixPath(text.to_owned()));
        }
        return Ok(ListenAddr::Unix(PathBuf::from(path)));
    }
    if is_digits(text) {
        return port(text).map(|port| ListenAddr::Tcp(IpListen::Any(port)));
    }
    let bad = || Problem::BadListen(text.to_owned());
    let (host, port_text) = text.rsplit_once(':').ok_or_else(bad)?;
    if !is_digits(port_text) {
        return Err(bad());
    }
    let ip = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().map(IpAddr::V6),
        None => host.parse::<Ipv4Addr>().map(IpAddr::V4),
    }
    .map_err(|_| bad())?;
    Ok(ListenAddr::Tcp(IpListen::At(SocketAddr::new(
        ip,
        port(port_text)?,
    ))))
}

fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// A port from its digits.
fn port(digits: &str) -> Result<u16, Problem> {
    digits
        .parse::<u64>()
        .ok()
        .filter(|port| bounds::PORT.contains(port))
        .and_then(|port| u16::try_from(port).ok())
        .ok_or_else(|| Problem::PortOutOfRange(cut(digits)))
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
/// A byte-order mark at the start does not count as a column.
fn position(text: &[u8], offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |newline| newline + 1);
    let line = before[..line_start].iter().filter(|&&b| b == b'\n').count() + 1;
    let mut columns = &before[line_start..];
    if line_start == 0 {
        columns = columns.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(columns);
    }
    // Count characters: every byte but UTF-8 continuation bytes starts one.
    let column = columns.iter().filter(|&&b| b & 0xC0 != 0x80).count() + 1;
    (line, column)
}

/// What kind of value this is, for a message.
fn kind(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// A user's text for a message: quoted, escaped and cut short.
fn quoted(text: &str) -> String {
    let mut shown = format!("{:?}", text.chars().take(SHOWN_CHARS).collect::<String>());
    if text.chars().nth(SHOWN_CHARS).is_some() {
        shown.push('…');
    }
    shown
}

/// Digits for a message, cut short.
fn cut(digits: &str) -> String {
    match digits.char_indices().nth(SHOWN_CHARS) {
        Some((end, _)) => format!("{}…", &digits[..end]),
        None => digits.to_owned(),
    }
}

fn range(min: i128, max: i128) -> String {
    if max >= i128::from(i64::MAX) {
        format!("at least {min}")
    } else {
        format!("{min}-{max}")
    }
}

fn one_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// " (did you mean `KEY`?)" when a known key is a typo away from `key`.
fn suggestion(key: &str, known: &[&str]) -> String {
    known
        .iter()
        .map(|k| (edit_distance(key, k), k))
        .filter(|(distance, k)| *distance <= 2 && *distance < k.len() / 2 + 1)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::config::{Account, IpNet, ProxyVersions, Rate, StderrMode};

    fn parse_str(text: &str) -> Parsed {
        parse(Path::new("t.toml"), text.as_bytes())
    }

    /// Every diagnostic, as `--check` prints it.
    fn messages(text: &str) -> Vec<String> {
        parse_str(text)
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// The one diagnostic of `text`.
    fn message(text: &str) -> String {
        let m = messages(text);
        assert_eq!(m.len(), 1, "{m:?}");
        m[0].clone()
    }

    /// The one draft of a clean file.
    fn draft(text: &str) -> Draft {
        let mut parsed = parse_str(text);
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        assert_eq!(parsed.drafts.len(), 1);
        parsed.drafts.remove(0)
    }

    fn addrs(draft: &Draft) -> Vec<ListenAddr> {
        draft.listen.iter().map(|l| l.value.clone()).collect()
    }

    /// A valid service, to which a test adds keys.
    const SERVICE: &str = "[[service]]\nname = \"s\"\nlisten = 7007\ncommand = \"cat\"\n";

    fn net(text: &str) -> IpNet {
        text.parse().expect("a CIDR network")
    }

    fn absolute_dir() -> &'static str {
        if cfg!(windows) { r"C:\\srv" } else { "/srv" }
    }

    #[test]
    fn a_full_file_sets_every_field() {
        let text = format!(
            r#"max_sessions = 500
log_format = "json"

[[service]]
name = "echo"
listen = ["127.0.0.1:7007", "[::1]:7007"]
command = ["/bin/cat", "-u"]
user = "nobody"
group = "nogroup"
password = "pw"
env = {{ GREETING = "hi", A = "1" }}
working_dir = "{dir}"
stdio = "pipe"
stderr = "log"
timeout = 30
linger_timeout = 60
keepalive = 61
max_lifetime = 3600
backlog = 128
nodelay = true
max_sessions = 10
max_per_source = 2
rate = {{ per_second = 5.5, burst = 10 }}
rate_per_source = {{ per_second = 1, burst = 3 }}
allow = ["127.0.0.0/8", "::1"]
deny = ["127.0.0.3"]
source_prefix_v6 = 48
reject_message = "busy\n"
"#,
            dir = absolute_dir()
        );
        let mut parsed = parse_str(&text);
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        assert_eq!(parsed.max_sessions, Some(500));
        assert_eq!(parsed.log_format, Some(LogFormat::Json));
        assert_eq!(parsed.drafts.len(), 1);
        let d = parsed.drafts.remove(0);
        assert_eq!(d.line, 4);
        assert_eq!(d.name, "echo");
        assert_eq!(
            addrs(&d),
            vec![
                ListenAddr::Tcp(IpListen::At("127.0.0.1:7007".parse().expect("an address"))),
                ListenAddr::Tcp(IpListen::At("[::1]:7007".parse().expect("an address"))),
            ]
        );
        assert_eq!(
            d.command.as_ref().map(|c| &c.value),
            Some(&CommandLine::Argv(vec!["/bin/cat".into(), "-u".into()]))
        );
        let at = |line, column| Pos {
            line,
            column: Some(column),
        };
        assert_eq!(d.user, Some(Placed::new("nobody".to_owned(), at(8, 8))));
        assert_eq!(d.group, Some(Placed::new("nogroup".to_owned(), at(9, 9))));
        assert_eq!(d.password.as_ref().map(|p| p.value.expose()), Some("pw"));
        assert_eq!(d.password.as_ref().map(|p| p.pos), Some(at(10, 1)));
        assert_eq!(d.listen[1].pos, at(6, 29));
        assert_eq!(d.command.as_ref().map(|c| c.pos), Some(at(7, 11)));
        assert!(d.complete);
        let expected = Options {
            env: Some(vec![
                ("A".into(), "1".into()),
                ("GREETING".into(), "hi".into()),
            ]),
            working_dir: Some(PathBuf::from(absolute_dir())),
            stdio: Some(StdioMode::Pipe),
            stderr: Some(StderrMode::Log),
            timeout: Some(30),
            linger_timeout: Some(60),
            backlog: Some(128),
            nodelay: Some(true),
            keepalive: Some(61),
            max_sessions: Some(10),
            max_per_source: Some(2),
            rate: Some(Rate {
                per_second: 5.5,
                burst: 10,
            }),
            rate_per_source: Some(Rate {
                per_second: 1.0,
                burst: 3,
            }),
            allow: Some(vec![net("127.0.0.0/8"), net("::1/128")]),
            deny: Some(vec![net("127.0.0.3/32")]),
            source_prefix_v6: Some(48),
            reject_message: Some("busy\n".into()),
            max_lifetime: Some(3600),
            ..Options::default()
        };
        assert_eq!(d.options, expected);
    }

    #[test]
    fn the_smallest_file() {
        let d = draft(SERVICE);
        assert_eq!(d.line, 1);
        assert_eq!(d.name, "s");
        assert_eq!(addrs(&d), vec![ListenAddr::Tcp(IpListen::Any(7007))]);
        assert_eq!(
            d.command.map(|c| c.value),
            Some(CommandLine::Line("cat".into()))
        );
        assert_eq!((d.user, d.group, d.password), (None, None, None));
        assert_eq!(d.options, Options::default());
        let parsed = parse_str(SERVICE);
        assert_eq!((parsed.max_sessions, parsed.log_format), (None, None));
    }

    #[test]
    fn defaults_are_inherited_and_overridden_key_by_key() {
        let text = r#"
[defaults]
timeout = 30
nodelay = true
env = { A = "default", B = "default" }
rate = { per_second = 2, burst = 4 }
allow = ["10.0.0.0/8"]

[[service]]
name = "inherits"
listen = 1
command = "cat"

[[service]]
name = "overrides"
listen = 2
command = "cat"
timeout = 0
env = { B = "own", C = "own" }
rate = { per_second = 9, burst = 9 }
allow = ["192.168.0.0/16"]
"#;
        let parsed = parse_str(text);
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        let [inherits, overrides] = &parsed.drafts[..] else {
            panic!("two drafts: {:?}", parsed.drafts);
        };
        let o = &inherits.options;
        assert_eq!(o.timeout, Some(30));
        assert_eq!(o.nodelay, Some(true));
        assert_eq!(
            o.env,
            Some(vec![
                ("A".into(), "default".into()),
                ("B".into(), "default".into())
            ])
        );
        assert_eq!(
            o.rate,
            Some(Rate {
                per_second: 2.0,
                burst: 4
            })
        );
        assert_eq!(o.allow, Some(vec![net("10.0.0.0/8")]));
        assert_eq!(o.backlog, None);

        let o = &overrides.options;
        assert_eq!(o.timeout, Some(0));
        assert_eq!(o.nodelay, Some(true));
        // env is merged by variable; the service's value wins.
        assert_eq!(
            o.env,
            Some(vec![
                ("A".into(), "default".into()),
                ("B".into(), "own".into()),
                ("C".into(), "own".into()),
            ])
        );
        assert_eq!(
            o.rate,
            Some(Rate {
                per_second: 9.0,
                burst: 9
            })
        );
        assert_eq!(o.allow, Some(vec![net("192.168.0.0/16")]));
        assert_eq!(overrides.line, 14);
    }

    #[test]
    fn service_keys_are_errors_in_defaults() {
        let text = format!(
            "[defaults]\nname = \"x\"\nlisten = 1\ncommand = \"x\"\nuser = \"u\"\ngroup = \"g\"\npassword = \"pw-SECRET\"\n{SERVICE}"
        );
        assert_eq!(
            messages(&text),
            [
                "t.toml:2:1: error: `name` belongs in each [[service]], not in [defaults]",
                "t.toml:3:1: error: `listen` belongs in each [[service]], not in [defaults]",
                "t.toml:4:1: error: `command` belongs in each [[service]], not in [defaults]",
                "t.toml:5:1: error: `user` belongs in each [[service]], not in [defaults]",
                "t.toml:6:1: error: `group` belongs in each [[service]], not in [defaults]",
                "t.toml:7:1: error: `password` belongs in each [[service]], not in [defaults]",
            ]
        );
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        assert_eq!(
            message("max_sessions = 1\nlog_format = \n"),
            "t.toml:2:14: error: invalid TOML: string values must be quoted, expected literal string"
        );
        assert_eq!(
            message(&format!("{SERVICE}name = \"again\"\n")),
            "t.toml:5:1: error: invalid TOML: duplicate key"
        );
        assert_eq!(
            message("[[service]\n"),
            "t.toml:1:11: error: invalid TOML: unclosed array table, expected `]`"
        );
    }

    #[test]
    fn only_the_first_syntax_error_is_reported() {
        // Recovery would report the lines after the bracket as errors too.
        assert_eq!(
            messages("c = [1,\nb = 1\na = \"x\n"),
            ["t.toml:2:3: error: invalid TOML: unexpected `=` in array, expected value, `]`"]
        );
    }

    #[test]
    fn unknown_keys_in_every_table() {
        let text = r#"max_session = 1
colour = "red"

[defaults]
timout = 3

[[service]]
name = "s"
listen = 1
command = "cat"
lisen = 2
rate = { per_second = 1, burst = 1, brust = 2 }
rate_per_source = { per_second = 1, burst = 1, x = 2 }
"#;
        assert_eq!(
            messages(text),
            [
                "t.toml:1:1: error: unknown key \"max_session\" in the top level (did you mean `max_sessions`?)",
                "t.toml:2:1: error: unknown key \"colour\" in the top level",
                "t.toml:5:1: error: unknown key \"timout\" in [defaults] (did you mean `timeout`?)",
                "t.toml:11:1: error: unknown key \"lisen\" in [[service]] (did you mean `listen`?)",
                "t.toml:12:37: error: unknown key \"brust\" in `rate` (did you mean `burst`?)",
                "t.toml:13:48: error: unknown key \"x\" in `rate_per_source`",
            ]
        );
    }

    #[test]
    fn wrong_types_name_the_key_and_both_types() {
        let text = format!(
            r#"{SERVICE}timeout = "30"
nodelay = 1
env = {{ A = 1 }}
rate = 5
allow = "10.0.0.0/8"
deny = [1]
stderr = true
reject_message = 1.5
working_dir = 1970-01-01
"#
        );
        assert_eq!(
            messages(&text),
            [
                "t.toml:5:11: error: `timeout` must be an integer, not a string",
                "t.toml:6:11: error: `nodelay` must be true or false, not an integer",
                "t.toml:7:13: error: `env.A` must be a string, not an integer",
                "t.toml:8:8: error: `rate` must be a table { per_second = NUMBER, burst = INTEGER }, not an integer",
                "t.toml:9:9: error: `allow` must be an array of addresses or CIDR networks, not a string",
                "t.toml:10:9: error: `deny` must be a string, not an integer",
                "t.toml:11:10: error: `stderr` must be a string, not a boolean",
                "t.toml:12:18: error: `reject_message` must be a string, not a float",
                "t.toml:13:15: error: `working_dir` must be a string, not a date-time",
            ]
        );
        assert_eq!(
            messages("[[service]]\nname = 1\nlisten = true\ncommand = {}\n"),
            [
                "t.toml:2:8: error: `name` must be a string, not an integer",
                "t.toml:3:10: error: `listen` must be a port, an address string, or an array of them, not a boolean",
                "t.toml:4:11: error: `command` must be a string or an array of strings, not a table",
            ]
        );
        assert_eq!(
            message(
                "max_sessions = \"1\"\nlog_format = \"text\"\n[[service]]\nname = \"s\"\nlisten = 1\ncommand = \"c\"\n"
            ),
            "t.toml:1:16: error: `max_sessions` must be an integer, not a string"
        );
    }

    #[test]
    fn numbers_out_of_range() {
        let text = format!(
            r#"max_sessions = 0
{SERVICE}backlog = 0
source_prefix_v6 = 129
max_sessions = 0
max_per_source = -1
max_lifetime = 0
timeout = -1
linger_timeout = 4294967296
keepalive = 9223372036854775807
rate = {{ per_second = 0, burst = 0 }}
rate_per_source = {{ per_second = -1.5, burst = 1 }}

[[service]]
name = "t"
listen = 1
command = "cat"
backlog = 65536
rate = {{ per_second = inf, burst = 4294967296 }}
rate_per_source = {{ per_second = nan, burst = 1 }}
"#
        );
        assert_eq!(
            messages(&text),
            [
                "t.toml:1:16: error: `max_sessions` must be 1-1000000, not 0",
                "t.toml:6:11: error: `backlog` must be 1-65535, not 0",
                "t.toml:7:20: error: `source_prefix_v6` must be 0-128, not 129",
                "t.toml:8:16: error: `max_sessions` must be 1-1000000, not 0",
                "t.toml:9:18: error: `max_per_source` must be 1-1000000, not -1",
                "t.toml:10:16: error: `max_lifetime` must be 1-946080000, not 0",
                "t.toml:11:11: error: `timeout` must be 0-4294967, not -1",
                "t.toml:12:18: error: `linger_timeout` must be 0-65535, not 4294967296",
                "t.toml:13:13: error: `keepalive` must be 0-32767, not 9223372036854775807",
                "t.toml:14:23: error: `rate.per_second` must be a number of at least 1/86400 (one a day)",
                "t.toml:14:34: error: `rate.burst` must be 1-4294967295, not 0",
                "t.toml:15:34: error: `rate_per_source.per_second` must be a number of at least 1/86400 (one a day)",
                "t.toml:21:11: error: `backlog` must be 1-65535, not 65536",
                "t.toml:22:23: error: `rate.per_second` must be a number of at least 1/86400 (one a day)",
                "t.toml:22:36: error: `rate.burst` must be 1-4294967295, not 4294967296",
                "t.toml:23:34: error: `rate_per_source.per_second` must be a number of at least 1/86400 (one a day)",
            ]
        );
    }

    #[test]
    fn the_slowest_rate_is_one_a_day() {
        let d = draft(&format!(
            "{SERVICE}rate = {{ per_second = 1.1574074074074073e-5, burst = 1 }}\n"
        ));
        assert_eq!(d.options.rate.map(|r| r.per_second), Some(1.0 / 86_400.0));
        assert_eq!(
            message(&format!(
                "{SERVICE}rate = {{ per_second = 1e-300, burst = 1 }}\n"
            )),
            "t.toml:5:23: error: `rate.per_second` must be a number of at least 1/86400 (one a day)"
        );
    }

    /// The key lists (for suggestions and [defaults]) match what is parsed.
    #[test]
    fn the_key_lists_match_the_parser() {
        let (document, errors) = DeTable::parse_recoverable("x = 1");
        assert!(errors.is_empty());
        let value = document.get_ref().values().next().expect("one value");
        let mut walker = Walker {
            file: Path::new("t.toml"),
            text: "x = 1",
            diagnostics: Vec::new(),
        };
        for key in key_names(OPTIONS) {
            assert!(walker.option(&mut Options::default(), key, value), "{key}");
        }
        let others = [
            key_names(SERVICE_KEYS),
            TOP_KEYS.to_vec(),
            TOP_TABLES.to_vec(),
        ];
        for key in others.concat().into_iter().chain(RATE_KEYS.iter().copied()) {
            let parsed = walker.option(&mut Options::default(), key, value);
            assert_eq!(parsed, key == "max_sessions", "{key}");
        }
        let text = format!(
            "{SERVICE}{}",
            // After name, listen, command and builtin: user, group, password.
            key_names(&SERVICE_KEYS[4..]).join(" = \"x\"\n")
        );
        let text = format!("{text} = \"x\"\n");
        assert!(parse_str(&text).diagnostics.is_empty(), "{text}");
    }

    #[test]
    fn integers_in_every_notation() {
        let d = draft(&format!(
            "{SERVICE}timeout = 0x1E\nbacklog = 1_024\nkeepalive = 0o17\nmax_sessions = 0b11\n"
        ));
        assert_eq!(d.options.timeout, Some(30));
        assert_eq!(d.options.backlog, Some(1024));
        assert_eq!(d.options.keepalive, Some(15));
        assert_eq!(d.options.max_sessions, Some(3));
    }

    #[test]
    fn a_rate_needs_both_fields() {
        let text = format!("{SERVICE}rate = {{ per_second = 1 }}\nrate_per_source = {{}}\n");
        assert_eq!(
            messages(&text),
            [
                "t.toml:5:8: error: `rate` has no `burst`",
                "t.toml:6:19: error: `rate_per_source` has no `per_second`",
                "t.toml:6:19: error: `rate_per_source` has no `burst`",
            ]
        );
        let d = draft(&format!("{SERVICE}rate.per_second = 0.5\nrate.burst = 1\n"));
        assert_eq!(
            d.options.rate,
            Some(Rate {
                per_second: 0.5,
                burst: 1
            })
        );
    }

    #[test]
    fn udp_and_unix_listen_forms() {
        let udp = "[[service]]\nname = \"s\"\nprotocol = \"udp\"\nlisten = [69, \"127.0.0.1:69\"]\ncommand = \"cat\"\n";
        let d = draft(udp);
        assert_eq!(
            addrs(&d),
            [
                ListenAddr::Udp(IpListen::Any(69)),
                ListenAddr::Udp(IpListen::At("127.0.0.1:69".parse().expect("valid"))),
            ]
        );
        assert_eq!(d.options.protocol, Some(Protocol::Udp));
        let unix = "[[service]]\nname = \"s\"\nlisten = \"unix:/run/s.sock\"\ncommand = \"cat\"\nsocket_mode = \"0660\"\nsocket_owner = 0\nsocket_group = \"wheel\"\nallow_uid = [0, \"alice\"]\n";
        let d = draft(unix);
        assert_eq!(addrs(&d), [ListenAddr::Unix(PathBuf::from("/run/s.sock"))]);
        assert_eq!(d.options.socket_mode, Some(0o660));
        assert_eq!(d.options.socket_owner, Some(Account::Id(0)));
        assert!(
            matches!(&d.options.socket_group, Some(Account::Name(n)) if n.value == "wheel" && n.pos == Pos { line: 7, column: Some(16) })
        );
        assert_eq!(d.options.allow_uid.as_ref().map(Vec::len), Some(2));
        for (bad, expected) in [
            (
                "\"unix:run/s.sock\"",
                "t.toml:3:10: error: \"unix:run/s.sock\" is not a Unix socket path: use unix:/ABSOLUTE/PATH, at most 103 bytes",
            ),
            (
                "[\"unix:/a\", 7]",
                "t.toml:3:22: error: a service listens on Unix sockets or on IP addresses, not both",
            ),
            (
                "[7, \"unix:/a\"]",
                "t.toml:3:14: error: a service listens on Unix sockets or on IP addresses, not both",
            ),
        ] {
            let text = format!("[[service]]\nname = \"s\"\nlisten = {bad}\ncommand = \"cat\"\n");
            assert_eq!(message(&text), expected, "{bad}");
        }
        let long = format!("\"unix:/{}\"", "a".repeat(103));
        let text = format!("[[service]]\nname = \"s\"\nlisten = {long}\ncommand = \"cat\"\n");
        assert!(message(&text).contains("is not a Unix socket path"));
        assert_eq!(
            message(
                "[[service]]\nname = \"s\"\nprotocol = \"udp\"\nlisten = \"unix:/a\"\ncommand = \"cat\"\n"
            ),
            "t.toml:4:10: error: Unix sockets here are stream sockets: `protocol = \"udp\"` listens on IP addresses"
        );
        for (key, value, expected) in [
            (
                "socket_mode",
                "\"0888\"",
                "t.toml:5:15: error: `socket_mode` must be an octal string of permission bits (0-777), such as \"0660\", not \"0888\"",
            ),
            (
                "socket_mode",
                "\"4755\"",
                "t.toml:5:15: error: `socket_mode` must be an octal string of permission bits (0-777), such as \"0660\", not \"4755\"",
            ),
            (
                "socket_mode",
                "660",
                "t.toml:5:15: error: `socket_mode` must be an octal string such as \"0660\", not an integer",
            ),
            (
                "socket_owner",
                "-1",
                "t.toml:5:16: error: `socket_owner` must be 0-4294967294, not -1",
            ),
            (
                "socket_owner",
                "\"a:b\"",
                "t.toml:5:16: error: `socket_owner` entry \"a:b\" is not a user or group name",
            ),
            (
                "allow_gid",
                "\"wheel\"",
                "t.toml:5:13: error: `allow_gid` must be an array of names or numeric IDs, not a string",
            ),
        ] {
            let text = format!(
                "[[service]]\nname = \"s\"\nlisten = \"unix:/a\"\ncommand = \"cat\"\n{key} = {value}\n"
            );
            assert_eq!(message(&text), expected, "{key}");
        }
    }

    /// Issue 19, item 3: the `tls` table, each problem at its place.
    #[test]
    fn tls_keys() {
        let a = absolute_dir();
        let d = draft(&format!(
            "{SERVICE}tls = {{ cert = \"{a}/c.pem\", key = \"{a}/k.pem\", client_ca = \"{a}/ca.pem\", min_version = \"1.3\", alpn = [\"h2\"] }}\ntls_timeout = 3\n"
        ));
        let tls = d.options.tls.expect("tls");
        assert_eq!(
            tls.pos,
            Pos {
                line: 5,
                column: Some(7)
            }
        );
        assert!(tls.value.cert.is_absolute() && tls.value.cert.ends_with("c.pem"));
        assert!(tls.value.client_ca.is_some_and(|p| p.ends_with("ca.pem")));
        assert_eq!(tls.value.min_version, crate::tls::MinVersion::Tls13);
        assert_eq!(tls.value.alpn, ["h2"]);
        assert_eq!(d.options.tls_timeout, Some(3));
        let (c, k) = (format!("\"{a}/c\""), format!("\"{a}/k\""));
        for (extra, expected) in [
            (
                format!("tls = {{ cert = {c} }}"),
                "t.toml:5:7: error: `tls` has no `key`",
            ),
            (
                format!("tls = {{ cert = \"c.pem\", key = {k} }}"),
                "t.toml:5:16: error: `tls.cert` must be an absolute path",
            ),
            (
                format!("tls = {{ cert = {c}, key = {k}, ky = 1 }}"),
                "error: unknown key \"ky\" in `tls` (did you mean `key`?)",
            ),
            (
                format!("tls = {{ cert = {c}, key = {k}, min_version = \"1.1\" }}"),
                "error: `tls.min_version` must be \"1.2\" or \"1.3\", not \"1.1\"",
            ),
            (
                "tls = \"/c\"".to_owned(),
                "t.toml:5:7: error: `tls` must be a table",
            ),
            (
                "tls_timeout = 5".to_owned(),
                "t.toml:5:1: error: `tls_timeout` needs `tls`",
            ),
            (
                format!("tls = {{ cert = {c}, key = {k} }}\nstdio = \"socket\""),
                "t.toml:6:9: error: a TLS session is relayed",
            ),
        ] {
            let m = message(&format!("{SERVICE}{extra}\n"));
            assert!(
                m.starts_with("t.toml:") && m.contains(expected),
                "{extra}: {m}"
            );
        }
        let tls = format!("tls = {{ cert = {c}, key = {k} }}");
        for (kind, why) in [
            (
                "protocol = \"udp\"",
                "a UDP service: UDP has no connections",
            ),
            ("wait = true", "a wait service"),
        ] {
            let m = message(&format!("{SERVICE}{kind}\n{tls}\n"));
            assert!(
                m.contains(&format!("`tls` has no meaning for {why}")),
                "{m}"
            );
        }
        let m = message(&format!(
            "[[service]]\nname = \"b\"\nlisten = 7\nbuiltin = \"echo\"\n{tls}\n"
        ));
        assert!(
            m.contains("`tls` has no meaning for this service: a built-in"),
            "{m}"
        );
    }

    /// Issue 19, item 1: `proxy_protocol` needs `trusted_proxies`, the
    /// other PROXY keys need `proxy_protocol`, and none means anything off
    /// a TCP nowait service.
    #[test]
    fn proxy_keys() {
        let d = draft(&format!(
            "{SERVICE}proxy_protocol = \"any\"\ntrusted_proxies = [\"10.0.0.0/8\"]\nproxy_timeout = 2\n"
        ));
        assert_eq!(d.options.proxy_protocol, Some(ProxyVersions::Any));
        assert_eq!(d.options.proxy_timeout, Some(2));
        for (extra, expected) in [
            (
                "proxy_protocol = \"v1\"",
                "t.toml:5:1: error: `proxy_protocol` needs `trusted_proxies`",
            ),
            (
                "proxy_protocol = \"v1\"\ntrusted_proxies = []",
                "t.toml:5:1: error: `proxy_protocol` needs `trusted_proxies`",
            ),
            (
                "trusted_proxies = [\"10.0.0.1\"]",
                "t.toml:5:1: error: `trusted_proxies` needs `proxy_protocol`",
            ),
            (
                "proxy_protocol = \"v1\"\ntrusted_proxies = [\"10.0.0.1\"]\nproxy_timeout = 0",
                "t.toml:7:17: error: `proxy_timeout` must be 1-3600, not 0",
            ),
            (
                "proxy_protocol = \"v3\"",
                "t.toml:5:18: error: `proxy_protocol` must be \"v1\", \"v2\" or \"any\", not \"v3\"",
            ),
        ] {
            let m = message(&format!("{SERVICE}{extra}\n"));
            assert!(m.starts_with(expected), "{extra}: {m}");
        }
        let m = messages(&format!(
            "{SERVICE}protocol = \"udp\"\nproxy_protocol = \"v1\"\ntrusted_proxies = [\"10.0.0.1\"]\n"
        ));
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(
            m[0].contains("`proxy_protocol` has no meaning for a UDP service"),
            "{m:?}"
        );
        assert!(
            m[1].contains("`trusted_proxies` has no meaning for a UDP service"),
            "{m:?}"
        );
        // From [defaults]: the services it means nothing for drop it.
        let parsed = parse_str(&format!(
            "[defaults]\nproxy_protocol = \"v2\"\ntrusted_proxies = [\"10.0.0.1\"]\n{SERVICE}{}",
            "[[service]]\nname = \"u\"\nlisten = 7\nprotocol = \"udp\"\nbuiltin = \"echo\"\n"
        ));
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        assert_eq!(
            parsed.drafts[0].options.proxy_protocol,
            Some(ProxyVersions::V2)
        );
        assert_eq!(parsed.drafts[1].options.proxy_protocol, None);
    }

    /// Issue 18, item 5: a key with no meaning for a kind of service is an
    /// error that says why, at the key; `[defaults]`' value of it is for
    /// the other services.
    #[test]
    fn keys_with_no_meaning_for_a_kind_are_errors() {
        let udp_command =
            "[[service]]\nname = \"s\"\nlisten = 69\nprotocol = \"udp\"\ncommand = \"cat\"\n";
        let udp_builtin =
            "[[service]]\nname = \"s\"\nlisten = 7\nprotocol = \"udp\"\nbuiltin = \"echo\"\n";
        let tcp_wait = "[[service]]\nname = \"s\"\nlisten = 7\nwait = true\ncommand = \"cat\"\n";
        let unix = "[[service]]\nname = \"s\"\nlisten = \"unix:/a\"\ncommand = \"cat\"\n";
        let cases = [
            (
                udp_command,
                "nodelay = true",
                "`nodelay` has no meaning for a UDP service: UDP has no connections",
            ),
            (
                udp_command,
                "max_sessions = 2",
                "`max_sessions` has no meaning for a UDP service: a wait service runs one program at a time, which serves every client",
            ),
            (
                udp_command,
                "wait = false",
                "a UDP service with a command runs in wait mode (its program reads the datagrams itself): remove `wait = false`",
            ),
            (
                udp_command,
                "stdio = \"pipe\"",
                "`stdio` has no meaning for a UDP service: `stdio = \"pipe\"`: the program takes the listening socket itself",
            ),
            (
                udp_builtin,
                "max_sessions = 2",
                "`max_sessions` has no meaning for a UDP built-in: a UDP built-in answers each datagram at once: it has no sessions that last (limit it with rate and rate_per_source)",
            ),
            (
                udp_builtin,
                "timeout = 2",
                "`timeout` has no meaning for a UDP built-in: UDP has no connections",
            ),
            (
                udp_builtin,
                "wait = true",
                "`wait` is for programs: a built-in answers each connection or datagram itself",
            ),
            (
                tcp_wait,
                "max_per_source = 2",
                "`max_per_source` has no meaning for a wait service: a wait service runs one program at a time, which serves every client",
            ),
            (
                tcp_wait,
                "timeout = 3",
                "`timeout` has no meaning for a wait service: a wait service's program accepts its connections itself",
            ),
            (
                tcp_wait,
                "stdio = \"pipe\"",
                "`stdio` has no meaning for a wait service: `stdio = \"pipe\"`: the program takes the listening socket itself",
            ),
            (
                unix,
                "deny = [\"10.0.0.1\"]",
                "`deny` has no meaning for a Unix socket service: a Unix socket's clients have no address (use allow_uid and allow_gid to choose them)",
            ),
            (
                unix,
                "keepalive = 5",
                "`keepalive` has no meaning for a Unix socket service: it is a TCP option",
            ),
            (
                SERVICE,
                "allow_uid = [0]",
                "`allow_uid` has no meaning for this service: only a Unix socket (listen = \"unix:PATH\") has it",
            ),
            (
                SERVICE,
                "socket_mode = \"0600\"",
                "`socket_mode` has no meaning for this service: only a Unix socket (listen = \"unix:PATH\") has it",
            ),
        ];
        for (service, line, expected) in cases {
            let text = format!("{service}{line}\n");
            let line_no = text.lines().count();
            let m = message(&text);
            assert!(m.starts_with(&format!("t.toml:{line_no}:")), "{m}");
            assert!(m.ends_with(&format!("error: {expected}")), "{line}: {m}");
        }
        // What is meaningful stays allowed.
        for (service, line) in [
            (
                udp_command,
                "rate = { per_second = 1, burst = 1 }\nstderr = \"log\"\nuser = \"nobody\"",
            ),
            (udp_command, "wait = true\nstdio = \"socket\""),
            (
                udp_builtin,
                "rate_per_source = { per_second = 1, burst = 1 }\nallow = [\"127.0.0.0/8\"]",
            ),
            (
                tcp_wait,
                "rate = { per_second = 1, burst = 1 }\nmax_lifetime = 60",
            ),
            (
                unix,
                "allow_uid = [0]\nallow_gid = [0]\nmax_sessions = 3\nrate = { per_second = 1, burst = 1 }",
            ),
            (
                unix,
                "wait = true\nsocket_owner = \"root\"\nsocket_mode = \"0600\"",
            ),
        ] {
            draft(&format!("{service}{line}\n"));
        }
        // [defaults]' values of such keys are dropped for these services,
        // kept for the others.
        let defaults = "[defaults]\ntimeout = 30\nnodelay = true\nmax_sessions = 5\nstdio = \"pipe\"\ndeny = [\"10.0.0.1\"]\nallow_uid = [0]\n";
        let parsed = parse_str(&format!(
            "{defaults}{udp_command}{}",
            SERVICE.replace("\"s\"", "\"t\"")
        ));
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        let (udp, tcp) = (&parsed.drafts[0].options, &parsed.drafts[1].options);
        assert_eq!(
            (udp.timeout, udp.nodelay, udp.max_sessions, udp.stdio),
            (None, None, None, None)
        );
        assert!(udp.deny.is_some() && udp.allow_uid.is_none());
        assert_eq!(
            (tcp.timeout, tcp.nodelay, tcp.max_sessions),
            (Some(30), Some(true), Some(5))
        );
        assert_eq!(tcp.stdio, Some(StdioMode::Pipe));
        assert!(tcp.allow_uid.is_none());
    }

    #[test]
    fn listen_forms() {
        let listen = |value: &str| {
            let text = format!("[[service]]\nname = \"s\"\ncommand = \"cat\"\nlisten = {value}\n");
            addrs(&draft(&text))
        };
        let at =
            |text: &str| ListenAddr::Tcp(IpListen::At(text.parse().expect("a socket address")));
        assert_eq!(listen("\"7007\""), [ListenAddr::Tcp(IpListen::Any(7007))]);
        assert_eq!(listen("7007"), [ListenAddr::Tcp(IpListen::Any(7007))]);
        assert_eq!(listen("65535"), [ListenAddr::Tcp(IpListen::Any(65535))]);
        assert_eq!(listen("\"127.0.0.1:7007\""), [at("127.0.0.1:7007")]);
        assert_eq!(listen("\"[::1]:7007\""), [at("[::1]:7007")]);
        assert_eq!(listen("\"0.0.0.0:1\""), [at("0.0.0.0:1")]);
        assert_eq!(
            listen("[\"10.1.2.3:80\", 81, \"82\", \"[fe80::1]:83\"]"),
            [
                at("10.1.2.3:80"),
                ListenAddr::Tcp(IpListen::Any(81)),
                ListenAddr::Tcp(IpListen::Any(82)),
                at("[fe80::1]:83")
            ]
        );
    }

    #[test]
    fn bad_listen_addresses() {
        let text = r#"[[service]]
name = "s"
command = "cat"
listen = ["0", 0, 70000, "70000", "localhost:80", "::1:80", "1.2.3.4:0", "1.2.3.4:x", "[::1]:99999", "1.2.3.4", -1, 1.5]
"#;
        assert_eq!(
            messages(text),
            [
                "t.toml:4:11: error: port 0 is out of range (1-65535)",
                "t.toml:4:16: error: port 0 is out of range (1-65535)",
                "t.toml:4:19: error: port 70000 is out of range (1-65535)",
                "t.toml:4:26: error: port 70000 is out of range (1-65535)",
                "t.toml:4:35: error: \"localhost:80\" is not a listen address: use PORT, IPV4:PORT or [IPV6]:PORT",
                "t.toml:4:51: error: \"::1:80\" is not a listen address: use PORT, IPV4:PORT or [IPV6]:PORT",
                "t.toml:4:61: error: port 0 is out of range (1-65535)",
                "t.toml:4:74: error: \"1.2.3.4:x\" is not a listen address: use PORT, IPV4:PORT or [IPV6]:PORT",
                "t.toml:4:87: error: port 99999 is out of range (1-65535)",
                "t.toml:4:102: error: \"1.2.3.4\" is not a listen address: use PORT, IPV4:PORT or [IPV6]:PORT",
                "t.toml:4:113: error: port -1 is out of range (1-65535)",
                "t.toml:4:117: error: `listen` must be a port, an address string, or an array of them, not a float",
            ]
        );
        assert_eq!(
            message("[[service]]\nname = \"s\"\ncommand = \"cat\"\nlisten = []\n"),
            "t.toml:4:10: error: `listen` must not be empty"
        );
    }

    #[test]
    fn command_forms() {
        let command = |value: &str| {
            let text = format!("[[service]]\nname = \"s\"\nlisten = 1\ncommand = {value}\n");
            parse_str(&text)
        };
        let only = |value: &str| {
            let mut parsed = command(value);
            assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
            parsed.drafts.remove(0).command.expect("a command").value
        };
        assert_eq!(
            only("\"sh -c 'echo hi'\""),
            CommandLine::Line("sh -c 'echo hi'".into())
        );
        assert_eq!(
            only("[\"sh\", \"-c\", \"echo hi\"]"),
            CommandLine::Argv(vec!["sh".into(), "-c".into(), "echo hi".into()])
        );
        assert_eq!(only("[\"cat\"]"), CommandLine::Argv(vec!["cat".into()]));
        let error = |value: &str| {
            let parsed = command(value);
            assert!(!parsed.drafts[0].complete);
            assert_eq!(parsed.drafts[0].command, None);
            let m: Vec<String> = parsed.diagnostics.iter().map(ToString::to_string).collect();
            assert_eq!(m.len(), 1, "{m:?}");
            m[0].clone()
        };
        assert_eq!(
            error("[]"),
            "t.toml:4:11: error: `command` must not be empty"
        );
        assert_eq!(
            error("\" \""),
            "t.toml:4:11: error: `command` must not be empty"
        );
        assert_eq!(
            error("[\"\", \"x\"]"),
            "t.toml:4:12: error: the program (the first element of `command`) must not be empty"
        );
        assert_eq!(
            error("[\"cat\", 1]"),
            "t.toml:4:19: error: `command` must be a string, not an integer"
        );
    }

    #[test]
    fn required_keys_are_reported_at_the_service_header() {
        let text = format!("{SERVICE}\n[[service]]\nuser = \"u\"\n");
        let parsed = parse_str(&text);
        // A draft all the same, incomplete, so that `resolve` checks its user.
        assert_eq!(parsed.drafts.len(), 2);
        assert!(!parsed.drafts[1].complete);
        assert_eq!(parsed.drafts[1].user.as_ref().map(|u| u.pos.line), Some(7));
        let m: Vec<String> = parsed.diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(
            m,
            [
                "t.toml:6:1: error: [[service]] has no `name`",
                "t.toml:6:1: error: [[service]] has no `listen`",
                "t.toml:6:1: error: [[service]] has no `command`",
            ]
        );
    }

    #[test]
    fn duplicate_names_point_at_the_first() {
        let text = format!("{SERVICE}\n{SERVICE}\n{SERVICE}");
        let parsed = parse_str(&text);
        let m: Vec<String> = parsed.diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(
            m,
            [
                "t.toml:7:8: error: duplicate service name \"s\" (first on line 1)",
                "t.toml:12:8: error: duplicate service name \"s\" (first on line 1)",
            ]
        );
        // Still drafts, so that `resolve` reports their other problems too.
        assert_eq!(parsed.drafts.len(), 3);
    }

    #[test]
    fn bad_networks_are_reported_where_they_are() {
        let text = format!(
            "{SERVICE}allow = [\"10.0.0.0/8\", \"10.0.0.0/33\", \"example.com\"]\ndeny = [\"::1/129\", \"fe80::/10\"]\n"
        );
        assert_eq!(
            messages(&text),
            [
                "t.toml:5:24: error: `allow` entry \"10.0.0.0/33\" is not an IP address or CIDR network",
                "t.toml:5:39: error: `allow` entry \"example.com\" is not an IP address or CIDR network",
                "t.toml:6:9: error: `deny` entry \"::1/129\" is not an IP address or CIDR network",
            ]
        );
        let d = draft(&format!(
            "{SERVICE}allow = []\ndeny = [\"10.0.0.1\", \"::/0\"]\n"
        ));
        assert_eq!(d.options.allow, Some(vec![]));
        assert_eq!(d.options.deny, Some(vec![net("10.0.0.1/32"), net("::/0")]));
    }

    #[test]
    fn choices() {
        let text = format!("log_format = \"xml\"\n{SERVICE}stderr = \"file\"\nstdio = \"tty\"\n");
        assert_eq!(
            messages(&text),
            [
                "t.toml:1:14: error: `log_format` must be \"text\" or \"json\", not \"xml\"",
                "t.toml:6:10: error: `stderr` must be \"socket\" or \"log\", not \"file\"",
                "t.toml:7:9: error: `stdio` must be \"socket\" or \"pipe\", not \"tty\"",
            ]
        );
        let parsed = parse_str(&format!(
            "log_format = \"text\"\n{SERVICE}stderr = \"socket\"\n"
        ));
        assert_eq!(parsed.log_format, Some(LogFormat::Text));
        assert_eq!(parsed.drafts[0].options.stderr, Some(StderrMode::Socket));
    }

    #[test]
    fn a_service_stdio_overrides_the_default_one() {
        let text = format!(
            "[defaults]\nstdio = \"pipe\"\n{SERVICE}\n[[service]]\nname = \"b\"\nlisten = 8\ncommand = \"cat\"\nstdio = \"socket\"\n"
        );
        let parsed = parse_str(&text);
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        assert_eq!(parsed.drafts[0].options.stdio, Some(StdioMode::Pipe));
        assert_eq!(parsed.drafts[1].options.stdio, Some(StdioMode::Socket));
    }

    #[test]
    fn builtins() {
        const BUILTIN: &str = "[[service]]\nname = \"s\"\nlisten = 7\nbuiltin = \"chargen\"\n";
        let d = draft(BUILTIN);
        assert_eq!(
            d.builtin.map(|b| (b.value, b.pos)),
            Some((
                Builtin::Chargen,
                Pos {
                    line: 4,
                    column: Some(11)
                }
            ))
        );
        assert!(d.command.is_none() && d.complete);
        for (name, builtin) in Builtin::ALL {
            let d = draft(&BUILTIN.replace("chargen", name));
            assert_eq!(d.builtin.map(|b| b.value), Some(builtin));
        }
        assert_eq!(
            message(&BUILTIN.replace("chargen", "qotd")),
            "t.toml:4:11: error: `builtin` must be \"echo\", \"discard\", \"daytime\", \"time\" or \"chargen\", not \"qotd\""
        );
        let mut both = parse_str(&format!("{BUILTIN}command = \"cat\"\n"));
        assert_eq!(
            both.diagnostics
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            [
                "t.toml:4:11: error: `builtin` and `command` are mutually exclusive: a built-in service runs no program"
            ]
        );
        assert!(!both.drafts.remove(0).complete);
        let meaningless = format!(
            "user = \"u\"\ngroup = \"g\"\npassword = \"pw-SECRET\"\nenv = {{ A = \"1\" }}\n\
             working_dir = \"{}\"\nstdio = \"pipe\"\nstderr = \"log\"\n",
            absolute_dir()
        );
        let found = messages(&format!("{BUILTIN}{meaningless}"));
        let expected: Vec<String> = BUILTIN_MEANINGLESS
            .iter()
            .enumerate()
            .map(|(i, key)| {
                format!(
                    "t.toml:{}:1: error: `{key}` has no meaning for a built-in service: it starts no program",
                    i + 5
                )
            })
            .collect();
        assert_eq!(found, expected);
        // What [defaults] says of them is for the programs.
        let defaults = "[defaults]\nenv = { A = \"1\" }\nstdio = \"pipe\"\nstderr = \"log\"\n";
        assert!(draft(&format!("{defaults}{BUILTIN}")).complete);
    }

    #[test]
    fn user_group_and_password() {
        let text = format!("{SERVICE}group = \"g\"\npassword = \"pw\"\n");
        assert_eq!(
            messages(&text),
            [
                "t.toml:5:1: error: `group` needs `user`",
                "t.toml:6:1: error: `password` needs `user`",
            ]
        );
        assert_eq!(
            message(&format!("{SERVICE}user = \"\"\n")),
            "t.toml:5:8: error: `user` must not be empty"
        );
        let d = draft(&format!("{SERVICE}user = \"u\"\npassword = \"\"\n"));
        assert_eq!(d.password.as_ref().map(|p| p.value.expose()), Some(""));
    }

    /// Whatever goes wrong around a password, no message shows it.
    #[test]
    fn passwords_never_appear_in_messages() {
        let secret = "pw-SECRET";
        let texts = [
            format!("{SERVICE}password = \"{secret}\"\n"),
            format!("{SERVICE}user = \"u\"\npassword = [\"{secret}\"]\n"),
            format!("{SERVICE}user = \"u\"\npassword = {{ p = \"{secret}\" }}\n"),
            format!("{SERVICE}user = \"u\"\npassword = \"{secret}\n"),
            format!("{SERVICE}user = \"u\"\npassword = \"{secret}\" x\n"),
            format!("{SERVICE}user = \"u\"\npassword = \"{secret}\"\npassword = \"{secret}\"\n"),
            format!("{SERVICE}user = \"u\"\npasword = \"{secret}\"\n"),
            format!("[defaults]\npassword = \"{secret}\"\n{SERVICE}"),
            format!("[[service]]\nuser = \"u\"\npassword = \"{secret}\"\n"),
        ];
        for text in &texts {
            let parsed = parse_str(text);
            assert!(!parsed.diagnostics.is_empty(), "{text}");
            for d in &parsed.diagnostics {
                assert!(!d.to_string().contains(secret), "{d}");
            }
            assert!(!format!("{parsed:?}").contains(secret), "{text}");
        }
    }

    #[test]
    fn env_names_and_values() {
        let text = format!(
            "{SERVICE}env = {{ \"A=B\" = \"1\", \"\" = \"2\", OK = \"3\", NUL = \"a\\u0000b\" }}\n"
        );
        assert_eq!(
            messages(&text),
            [
                "t.toml:5:9: error: environment variable name \"A=B\" must not be empty or contain `=` or NUL",
                "t.toml:5:22: error: environment variable name \"\" must not be empty or contain `=` or NUL",
                "t.toml:5:48: error: environment variable \"NUL\" must not contain NUL",
            ]
        );
        assert_eq!(
            message(&format!("{SERVICE}env = [\"A=1\"]\n")),
            "t.toml:5:7: error: `env` must be a table of strings, not an array"
        );
    }

    #[test]
    fn working_dir_must_be_absolute() {
        assert_eq!(
            message(&format!("{SERVICE}working_dir = \"srv\"\n")),
            "t.toml:5:15: error: `working_dir` must be an absolute path"
        );
        assert_eq!(
            message(&format!("{SERVICE}working_dir = \"\"\n")),
            "t.toml:5:15: error: `working_dir` must not be empty"
        );
    }

    #[test]
    fn names_must_be_printable() {
        assert_eq!(
            message("[[service]]\nname = \"a\\nb\"\nlisten = 1\ncommand = \"c\"\n"),
            "t.toml:2:8: error: `name` must not contain control characters"
        );
        assert_eq!(
            message("[[service]]\nname = \"\"\nlisten = 1\ncommand = \"c\"\n"),
            "t.toml:2:8: error: `name` must not be empty"
        );
    }

    #[test]
    fn no_services() {
        assert_eq!(
            message("max_sessions = 5\n"),
            "t.toml: error: no services: add a [[service]] table"
        );
        assert_eq!(
            message("service = []\n"),
            "t.toml:1:1: error: no services: add a [[service]] table"
        );
        assert_eq!(
            message("[service]\nname = \"s\"\n"),
            "t.toml:1:1: error: `service` must be an array of tables ([[service]]), not a table"
        );
        assert_eq!(
            message("service = [1]\n"),
            "t.toml:1:12: error: `service` must be an array of tables ([[service]]), not an integer"
        );
        assert_eq!(
            message(&format!("defaults = 1\n{SERVICE}")),
            "t.toml:1:12: error: `defaults` must be a table, not an integer"
        );
    }

    #[test]
    fn inline_service_tables() {
        let d = draft("service = [{ name = \"s\", listen = 1, command = \"c\" }]\n");
        assert_eq!(d.line, 1);
        assert_eq!(d.name, "s");
    }

    #[test]
    fn not_utf8() {
        let parsed = parse(Path::new("t.toml"), b"# ok\n# caf\xE9\n");
        let m: Vec<String> = parsed.diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(m, ["t.toml:2:6: error: the file is not valid UTF-8"]);
    }

    #[test]
    fn columns_count_characters_and_skip_a_byte_order_mark() {
        assert_eq!(
            message(
                "\u{feff}max_sessions = 0\n[[service]]\nname = \"é\"\nlisten = 1\ncommand = \"c\"\n"
            ),
            "t.toml:1:16: error: `max_sessions` must be 1-1000000, not 0"
        );
        assert_eq!(
            message(&format!(
                "{SERVICE}reject_message = \"é\"; timeout = \"x\"\n"
            )),
            "t.toml:5:21: error: invalid TOML: unexpected key or value, expected newline, `#`"
        );
        assert_eq!(
            message(&format!(
                "{SERVICE}env = {{ \"é\" = \"x\", \"é=\" = \"y\" }}\n"
            )),
            "t.toml:5:20: error: environment variable name \"é=\" must not be empty or contain `=` or NUL"
        );
    }

    #[test]
    fn long_text_is_cut_short_in_messages() {
        let long = "x".repeat(10_000);
        let m = message(&format!(
            "[[service]]\nname = \"s\"\ncommand = \"c\"\nlisten = \"{long}\"\n"
        ));
        assert!(m.len() < 200, "{m}");
        assert!(m.contains("xxx\"…"), "{m}");
        let digits = "9".repeat(10_000);
        let m = message(&format!(
            "[[service]]\nname = \"s\"\ncommand = \"c\"\nlisten = \"{digits}\"\n"
        ));
        assert!(m.len() < 200, "{m}");
    }

    #[test]
    fn edit_distance_and_suggestions() {
        assert_eq!(edit_distance("timout", "timeout"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", "abc"), 0);
        let options = key_names(OPTIONS);
        assert_eq!(suggestion("x", &options), "");
        assert_eq!(suggestion("deny_", &options), " (did you mean `deny`?)");
    }

    /// The annotated example is valid and sets every option.
    #[test]
    fn the_example_file_is_valid() {
        let text = include_bytes!("../../../examples/wininetd.toml");
        let parsed = parse(Path::new("wininetd.toml"), text);
        let errors: Vec<String> = parsed
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(ToString::to_string)
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
        assert!(parsed.drafts.len() >= 3, "{:?}", parsed.drafts);
        // Every option key appears in the example, at least in a comment.
        let text = std::str::from_utf8(text).expect("UTF-8");
        for key in every_key() {
            let documented = [format!("{key} ="), format!("[{key}]")];
            assert!(
                documented.iter().any(|d| text.contains(d.as_str())),
                "{key} is not documented in examples/wininetd.toml"
            );
        }
    }

    /// Every key of the file: the top level's, a service's, a rate's.
    fn every_key() -> Vec<&'static str> {
        let keys = [
            TOP_KEYS,
            TOP_TABLES,
            &key_names(service_keys()),
            RATE_KEYS,
            TLS_KEYS,
        ];
        keys.concat()
    }

    /// Issue 17, item 4: a key set in a comment of the example (to show it
    /// without setting it) is not checked by parsing it, so one renamed or
    /// removed would have stayed there.
    #[test]
    fn the_example_file_comments_out_only_real_keys() {
        let text = include_str!("../../../examples/wininetd.toml");
        let known = every_key();
        let mut seen = 0;
        for line in text.lines() {
            let Some(comment) = line.trim_start().strip_prefix('#') else {
                continue;
            };
            let Some((key, _)) = comment.split_once('=') else {
                continue;
            };
            let key = key.trim();
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                continue;
            }
            assert!(
                known.contains(&key),
                "examples/wininetd.toml: {line:?} sets no key of the format"
            );
            seen += 1;
        }
        assert!(seen > 0, "no key in a comment of the example");
    }

    /// Issue 17, item 4: the README's TOML field table names every key a
    /// service (or the top level) may have, each in one row, and no other.
    #[test]
    fn the_readme_field_table_names_every_key_and_no_other() {
        let readme = include_str!("../../../README.md");
        let (_, section) = readme
            .split_once("\n## The extended config (TOML)\n")
            .expect("the README has a TOML section");
        let section = section.split("\n## ").next().unwrap_or_default();
        let rows = section
            .lines()
            .skip_while(|line| *line != "| field | meaning |")
            .skip(2)
            .take_while(|line| line.starts_with('|'));
        let mut named = Vec::new();
        for row in rows {
            let field = row.split('|').nth(1).unwrap_or_default();
            named.extend(field.split('`').skip(1).step_by(2));
        }
        assert!(
            !named.is_empty(),
            "no field table in the README's TOML section"
        );
        let mut expected: Vec<&str> = [TOP_KEYS, &key_names(service_keys())].concat();
        expected.sort_unstable();
        expected.dedup();
        let missing: Vec<_> = expected.iter().filter(|k| !named.contains(k)).collect();
        let unknown: Vec<_> = named.iter().filter(|k| !expected.contains(k)).collect();
        assert!(
            missing.is_empty() && unknown.is_empty(),
            "README.md's TOML field table: no row for {missing:?}; rows for no key: {unknown:?}"
        );
        let mut once = named.clone();
        once.sort_unstable();
        once.dedup();
        assert_eq!(once.len(), named.len(), "a key in two rows: {named:?}");
    }
}
