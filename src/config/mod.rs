//! The configuration: load a file, parse it, and resolve it into the model
//! the server runs.
//!
//! A file is read ([`read`]: only a regular file, at most 16 MiB, UTF-8,
//! UTF-16 by its byte-order mark, or Windows's ANSI code page). Two formats
//! resolve into one model: WinInetd's flat `PORT USER:PASS CMDLINE` lines
//! ([`legacy`]) and, for a file whose name ends in `.toml`, the extended
//! format ([`toml`]). Each parser turns what the user typed into [`Draft`]s,
//! one per service, each part with the [`Pos`] it was written at;
//! [`resolve`] then checks the drafts against the system (users, programs,
//! listen addresses used twice) and applies the defaults, producing
//! [`Service`]s with nothing left to check at run time. Every problem is
//! collected, each at the key or field it is about, so one run lists them
//! all. Numbers are checked against [`bounds`].

pub mod bounds;
mod legacy;
mod read;
mod resolve;
mod toml;

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use crate::secret::Secret;
pub use ipnet::IpNet;
pub use read::{Encoding, MAX_FILE_BYTES, ReadError, Text, decode};
pub use resolve::{System, resolve};
pub use toml::Options;

use crate::platform::Identity;

/// A resolved configuration: what the server listens on and runs.
#[derive(Debug)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    pub services: Vec<Arc<Service>>,
    /// The config's own global session cap (TOML `max_sessions`); the
    /// command line's `--max-sessions` wins over it.
    pub max_sessions: Option<usize>,
    pub log_format: LogFormat,
    /// How the file was read.
    pub encoding: Encoding,
}

/// How log events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event.
    Json,
}

/// Where a service listens: a transport and its address. The transport
/// decides how clients arrive and what a program is told of them (`PROTO`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenAddr {
    /// TCP: a stream listener.
    Tcp(IpListen),
    /// UDP: a bound datagram socket.
    Udp(IpListen),
    /// A Unix domain stream socket at this path (`unix:PATH`).
    Unix(PathBuf),
}

/// An IP listening address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpListen {
    /// A port on every address (one dual-stack socket).
    Any(u16),
    /// One address and port.
    At(SocketAddr),
}

/// How a service's clients arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Udp,
    Unix,
}

impl Transport {
    /// The name programs find in `PROTO` (UCSPI).
    pub fn proto(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Unix => "UNIX",
        }
    }
}

impl IpListen {
    pub fn port(&self) -> u16 {
        match self {
            Self::Any(port) => *port,
            Self::At(addr) => addr.port(),
        }
    }

    /// Whether binding both (for the same transport) would clash.
    fn overlaps(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::At(a), Self::At(b)) => a == b,
            _ => self.port() == other.port(),
        }
    }
}

impl ListenAddr {
    pub fn transport(&self) -> Transport {
        match self {
            Self::Tcp(_) => Transport::Tcp,
            Self::Udp(_) => Transport::Udp,
            Self::Unix(_) => Transport::Unix,
        }
    }

    /// The IP address and port, for the transports that have them.
    pub fn ip(&self) -> Option<&IpListen> {
        match self {
            Self::Tcp(ip) | Self::Udp(ip) => Some(ip),
            Self::Unix(_) => None,
        }
    }

    /// Whether binding both would clash.
    pub fn overlaps(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Unix(a), Self::Unix(b)) => a == b,
            _ => {
                self.transport() == other.transport()
                    && matches!((self.ip(), other.ip()), (Some(a), Some(b)) if a.overlaps(b))
            }
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let suffix = match self {
            Self::Tcp(_) => "",
            Self::Udp(_) => "/udp",
            Self::Unix(path) => return write!(f, "unix:{}", path.display()),
        };
        match self.ip() {
            Some(IpListen::Any(port)) => write!(f, "port {port}{suffix}"),
            Some(IpListen::At(addr)) => write!(f, "{addr}{suffix}"),
            None => Ok(()),
        }
    }
}

/// How a child's standard handles reach its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum StdioMode {
    /// The accepted socket is the program's stdin, stdout and stderr; the
    /// daemon is not in the data path.
    #[default]
    Socket,
    /// The program gets pipes and the daemon relays them to the socket: for
    /// programs that want pipes, to turn the timeout into EOF, and for
    /// Windows programs that read and write at the same time (they stall on
    /// a synchronous socket).
    Pipe,
}

/// Where a child's stderr goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StderrMode {
    /// The connection, like stdout (WinInetd, inetd).
    #[default]
    Socket,
    /// The daemon's log, line by line, tagged with service and pid.
    Log,
}

/// New sessions per second, with a burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

/// Options of a service's sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketOptions {
    /// SO_RCVTIMEO and SO_SNDTIMEO of each connection.
    pub timeout: Option<Duration>,
    /// SO_LINGER of each connection.
    pub linger: Option<Duration>,
    /// The listen backlog.
    pub backlog: u32,
    /// TCP_NODELAY on each connection.
    pub nodelay: bool,
    /// TCP keepalive: idle time before the first probe.
    pub keepalive: Option<Duration>,
}

/// The listen backlog when the config does not set one.
pub const DEFAULT_BACKLOG: u32 = 4096;
/// How IPv6 sources are grouped for per-source limits when the config does
/// not say: a /64 is what one site or one host usually gets.
pub const DEFAULT_SOURCE_PREFIX_V6: u8 = 64;

/// Admission limits of one service.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Concurrent sessions of this service.
    pub max_sessions: Option<usize>,
    /// Concurrent sessions from one source.
    pub max_per_source: Option<usize>,
    /// New sessions of this service.
    pub rate: Option<Rate>,
    /// New sessions from one source.
    pub rate_per_source: Option<Rate>,
    /// IPv6 sources are grouped by this prefix length.
    pub source_prefix_v6: u8,
}

/// Who may connect: a source in `deny` is refused; otherwise, a non-empty
/// `allow` must hold it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
    /// A Unix socket's clients: a non-empty list must hold the peer's
    /// effective user ID, or `allow_gid` its group ID.
    pub allow_uid: Vec<u32>,
    pub allow_gid: Vec<u32>,
}

/// The file of a Unix socket service: its permissions and owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketFile {
    /// Permission bits (`socket_mode`, default 0666).
    pub mode: u32,
    /// Owner and group IDs (`socket_owner`, `socket_group`); unset keeps the
    /// daemon's.
    pub owner: Option<u32>,
    pub group: Option<u32>,
}

/// A Unix socket's mode when the config does not set one, as inetd's.
pub const DEFAULT_SOCKET_MODE: u32 = 0o666;

/// One service: where it listens and the program run for each connection.
///
/// Two services are equal when they do the same: where they were written
/// (`line`) is not compared, so that a reload which only moved a service
/// (a comment added above it) finds it unchanged. See
/// [`Service::same_behaviour`].
#[derive(Debug)]
pub struct Service {
    /// Its name in logs: the TOML `name`, or the port for a flat file.
    pub name: String,
    /// Line of the config file that defined it.
    pub line: usize,
    pub listen: Vec<ListenAddr>,
    /// Wait mode (`wait = true`, and every UDP service with a command): the
    /// program gets the listening socket itself and the daemon watches it
    /// again only once the program has exited.
    pub wait: bool,
    /// The socket file of a Unix socket service.
    pub socket_file: Option<SocketFile>,
    /// The command line as written (an argv array joined by spaces), for logs.
    pub cmdline: String,
    /// The program to execute: an absolute path.
    pub program: PathBuf,
    /// argv[1..].
    pub args: Vec<OsString>,
    /// Served by the daemon itself, with no program (`program` is then
    /// empty and `cmdline` names the built-in).
    pub builtin: Option<Builtin>,
    /// Run as this account instead of the daemon's own.
    pub user: Option<Identity>,
    /// Variables added to the child's environment.
    pub env: Vec<(OsString, OsString)>,
    pub working_dir: Option<PathBuf>,
    pub stdio: StdioMode,
    pub stderr: StderrMode,
    pub socket: SocketOptions,
    pub limits: Limits,
    pub access: Access,
    /// Sent to a refused client before the connection is closed.
    pub reject_message: Option<String>,
    /// Connections come through proxies that send a PROXY header.
    pub proxy: Option<ProxyProtocol>,
    /// The daemon terminates TLS: its certificate and key, loaded.
    pub tls: Option<crate::tls::Server>,
    /// A session (its whole process tree) is killed after this long.
    pub max_lifetime: Option<Duration>,
}

impl Service {
    /// Whether `other` does what this service does: every field but where
    /// it was written. A reload keeps a service for which this holds.
    pub fn same_behaviour(&self, other: &Self) -> bool {
        // Destructured, so that a new field must be placed on one side or
        // the other here before this compiles.
        let Self {
            name,
            line: _,
            listen,
            wait,
            socket_file,
            cmdline,
            program,
            args,
            builtin,
            user,
            env,
            working_dir,
            stdio,
            stderr,
            socket,
            limits,
            access,
            reject_message,
            proxy,
            tls,
            max_lifetime,
        } = self;
        *name == other.name
            && *listen == other.listen
            && *wait == other.wait
            && *socket_file == other.socket_file
            && *cmdline == other.cmdline
            && *program == other.program
            && *builtin == other.builtin
            && *args == other.args
            && *user == other.user
            && *env == other.env
            && *working_dir == other.working_dir
            && *stdio == other.stdio
            && *stderr == other.stderr
            && *socket == other.socket
            && *limits == other.limits
            && *access == other.access
            && *reject_message == other.reject_message
            && *proxy == other.proxy
            && *tls == other.tls
            && *max_lifetime == other.max_lifetime
    }
}

impl PartialEq for Service {
    /// [`Service::same_behaviour`].
    fn eq(&self, other: &Self) -> bool {
        self.same_behaviour(other)
    }
}

/// The command line's defaults for what a service does not set.
#[derive(Debug, Clone)]
pub struct ServiceDefaults {
    pub timeout: Option<Duration>,
    pub linger: Option<Duration>,
    pub stdio: StdioMode,
}

/// Where something was written in a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters, where the format knows it (TOML).
    pub column: Option<usize>,
}

impl Pos {
    /// A whole line (the flat format).
    pub fn line(line: usize) -> Self {
        Self { line, column: None }
    }
}

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed<T> {
    pub value: T,
    pub pos: Pos,
}

impl<T> Placed<T> {
    pub fn new(value: T, pos: Pos) -> Self {
        Self { value, pos }
    }
}

/// The two config formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileFormat {
    /// WinInetd's `PORT USER:PASS CMDLINE` lines.
    #[default]
    Flat,
    /// The extended format.
    Toml,
}

/// A service as a config file describes it, before it is checked against
/// the system and given the defaults. Each part keeps where it was
/// written, so that a problem `resolve` finds is reported there.
#[derive(Debug, Clone, Default)]
pub struct Draft {
    /// Where the service starts: its line, or its `[[service]]` header.
    pub line: usize,
    pub format: FileFormat,
    /// Empty when the file gave no valid name.
    pub name: String,
    /// The valid listen addresses.
    pub listen: Vec<Placed<ListenAddr>>,
    pub command: Option<Placed<CommandLine>>,
    /// A built-in service instead of a command (TOML only).
    pub builtin: Option<Placed<Builtin>>,
    pub user: Option<Placed<String>>,
    pub group: Option<Placed<String>>,
    /// Placed at its key (TOML): what is said of it is about the key.
    pub password: Option<Placed<Secret>>,
    pub options: Options,
    /// Whether the parser found its name, listen addresses and command
    /// valid. `resolve` checks the rest of a draft that is not complete (so
    /// that one run reports every problem), but makes no service of it.
    pub complete: bool,
}

/// A service the daemon serves itself, with no program started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// RFC 862: sends back what it receives.
    Echo,
    /// RFC 863: reads and drops what it receives.
    Discard,
    /// RFC 867: the date and time as text.
    Daytime,
    /// RFC 868: seconds since 1900 as 32 bits.
    Time,
    /// RFC 864: lines of printable characters until the client leaves.
    Chargen,
}

impl Builtin {
    /// Each built-in with its name in a config file.
    pub const ALL: [(&'static str, Builtin); 5] = [
        ("echo", Builtin::Echo),
        ("discard", Builtin::Discard),
        ("daytime", Builtin::Daytime),
        ("time", Builtin::Time),
        ("chargen", Builtin::Chargen),
    ];

    /// Its name in a config file.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, b)| *b == self)
            .map(|(name, _)| *name)
            .expect("every built-in is listed")
    }
}

/// The PROXY protocol versions a service takes (`proxy_protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersions {
    /// The text header only.
    V1,
    /// The binary header only.
    V2,
    /// Either.
    Any,
}

/// A service behind proxies that send the PROXY protocol: whom to trust,
/// what to take, how long to wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyProtocol {
    pub versions: ProxyVersions,
    /// Connections from elsewhere are refused.
    pub trusted: Vec<IpNet>,
    /// How long a proxy has to send its whole header.
    pub timeout: Duration,
}

/// `tls_timeout` when the config does not set one.
pub const DEFAULT_TLS_TIMEOUT: Duration = Duration::from_secs(10);

/// `proxy_timeout` when the config does not set one.
pub const DEFAULT_PROXY_TIMEOUT: Duration = Duration::from_secs(5);

/// A service's transport protocol (`protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

/// A user or group as written: its numeric ID, or its name, looked up when
/// the file is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Account {
    Id(u32),
    Name(Placed<String>),
}

/// A command as written: one string to split, or argv itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    Line(String),
    Argv(Vec<String>),
}

impl Default for CommandLine {
    fn default() -> Self {
        Self::Line(String::new())
    }
}

/// What a parser makes of a whole file.
#[derive(Debug, Default)]
pub struct Parsed {
    pub drafts: Vec<Draft>,
    pub max_sessions: Option<usize>,
    pub log_format: Option<LogFormat>,
    pub diagnostics: Vec<Diagnostic>,
}

/// How serious a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in a config file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    /// 1-based; `None` for the file as a whole.
    pub line: Option<usize>,
    /// 1-based, when the parser knows it (TOML syntax errors).
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {severity}: {}", self.message)
    }
}

/// What loading a file produced: a config when there was no error, and every
/// diagnostic either way.
#[derive(Debug)]
pub struct Loaded {
    pub config: Option<Config>,
    pub diagnostics: Vec<Diagnostic>,
    /// How the file was read, when it could be.
    pub encoding: Option<Encoding>,
}

impl Loaded {
    pub fn error_count(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }
}

/// Reads, parses and resolves the config file at `path`: TOML if its name
/// ends in `.toml`, WinInetd's flat format otherwise. A plain function that
/// blocks on the file system: call it from any thread but a runtime's.
pub fn load(path: &Path, defaults: &ServiceDefaults) -> Loaded {
    match read::read(path) {
        Ok(text) => {
            let mut loaded = resolve(path, parse(path, &text.bytes), &System::current(), defaults);
            if let Some(config) = &mut loaded.config {
                config.encoding = text.encoding;
            }
            loaded.encoding = Some(text.encoding);
            loaded
        }
        Err(e) => {
            let diagnostic = match e.pos {
                Some(pos) => Diagnostic::at(Severity::Error, path, pos, e.message),
                None => Diagnostic::error(path, None, e.message),
            };
            Loaded {
                config: None,
                diagnostics: vec![diagnostic],
                encoding: None,
            }
        }
    }
}

/// The `log_format` the config file at `path` asks for, read before
/// logging starts (the diagnostics of loading it are logged). Anything
/// unreadable gives the default; loading it reports why.
pub fn log_format_of(path: &Path) -> LogFormat {
    read::read(path)
        .ok()
        .and_then(|text| parse(path, &text.bytes).log_format)
        .unwrap_or_default()
}

/// Parses `text` in the format `path`'s name says.
pub fn parse(path: &Path, text: &[u8]) -> Parsed {
    let is_toml = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    if is_toml {
        toml::parse(path, text)
    } else {
        parse_flat(path, text)
    }
}

impl Diagnostic {
    /// A problem at `pos`.
    pub fn at(severity: Severity, file: &Path, pos: Pos, message: String) -> Self {
        Self {
            severity,
            file: file.to_owned(),
            line: Some(pos.line),
            column: pos.column,
            message,
        }
    }

    pub fn error(file: &Path, line: Option<usize>, message: String) -> Self {
        Self {
            severity: Severity::Error,
            file: file.to_owned(),
            line,
            column: None,
            message,
        }
    }

    pub fn warning(file: &Path, line: Option<usize>, message: String) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(file, line, message)
        }
    }
}

/// WinInetd's format: each entry is a service named after its port,
/// listening on every address.
fn parse_flat(file: &Path, text: &[u8]) -> Parsed {
    let parsed = legacy::parse(text);
    let mut diagnostics: Vec<Diagnostic> = parsed
        .errors
        .iter()
        .map(|(line, e)| Diagnostic::error(file, Some(*line), e.to_string()))
        .collect();
    diagnostics.extend(parsed.indented.iter().map(|line| {
        Diagnostic::warning(
            file,
            Some(*line),
            "line starts with a blank, so it is a comment, not a service".to_owned(),
        )
    }));
    let drafts = parsed
        .entries
        .into_iter()
        .map(|entry| {
            let at = Pos::line(entry.line);
            let (user, password) = match entry.user {
                Some(field) => (
                    Some(Placed::new(field.name, at)),
                    field.password.map(|p| Placed::new(p, at)),
                ),
                None => (None, None),
            };
            Draft {
                line: entry.line,
                format: FileFormat::Flat,
                name: entry.port.to_string(),
                listen: vec![Placed::new(ListenAddr::Tcp(IpListen::Any(entry.port)), at)],
                command: Some(Placed::new(CommandLine::Line(entry.cmdline), at)),
                builtin: None,
                user,
                group: None,
                password,
                options: Options::default(),
                complete: true,
            }
        })
        .collect();
    Parsed {
        drafts,
        diagnostics,
        ..Parsed::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> ServiceDefaults {
        ServiceDefaults {
            timeout: None,
            linger: None,
            stdio: StdioMode::Socket,
        }
    }

    /// The services of a TOML text, resolved on a system where this test
    /// binary is the program.
    fn services(text: &str) -> Vec<Arc<Service>> {
        let file = Path::new("t.toml");
        let exe = std::env::current_exe().expect("the test binary has a path");
        let text = text.replace("PROGRAM", &exe.display().to_string().replace('\\', "/"));
        let system = System {
            can_switch_users: false,
            path: None,
        };
        let loaded = resolve(file, parse(file, text.as_bytes()), &system, &defaults());
        assert_eq!(loaded.error_count(), 0, "{:?}", loaded.diagnostics);
        loaded.config.expect("valid").services
    }

    const TWO: &str = r#"
[[service]]
name = "a"
listen = 7001
command = ["PROGRAM", "x"]
timeout = 5

[[service]]
name = "b"
listen = 7002
command = ["PROGRAM"]
"#;

    /// Issue 16, item 10: a comment added above a service made a reload
    /// call it changed, since its line was compared.
    #[test]
    fn a_moved_service_is_the_same_service() {
        let before = services(TWO);
        let after = services(&format!("# a comment\n\n{TWO}"));
        assert_ne!(before[0].line, after[0].line);
        for (old, new) in before.iter().zip(&after) {
            assert!(old.same_behaviour(new), "{} changed", old.name);
            assert_eq!(old, new);
        }
    }

    #[test]
    fn a_changed_option_is_a_changed_service() {
        let before = services(TWO);
        for (from, to) in [
            ("timeout = 5", "timeout = 6"),
            ("timeout = 5", "timeout = 5\nmax_lifetime = 60"),
            (r#""x"]"#, r#""y"]"#),
            ("listen = 7001", "listen = \"127.0.0.1:7001\""),
        ] {
            let after = services(&TWO.replacen(from, to, 1));
            assert!(!before[0].same_behaviour(&after[0]), "{to}");
            assert_ne!(before[0], after[0], "{to}");
            assert!(
                before[1].same_behaviour(&after[1]),
                "{to}: b did not change"
            );
        }
    }
}
