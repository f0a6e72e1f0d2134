//! The configuration: load a file, parse it, and resolve it into the model
//! the server runs.
//!
//! Two formats resolve into one model: WinInetd's flat `PORT USER:PASS
//! CMDLINE` lines ([`legacy`]) and, for a file whose name ends in `.toml`,
//! the extended format ([`toml`]). Each parser turns what the user typed into
//! [`Draft`]s, one per service; [`resolve`] then checks the drafts against the
//! system (users, programs, listen addresses used twice) and applies the
//! defaults, producing [`Service`]s with nothing left to check at run time.
//! Every problem is collected, so one run lists them all.

mod legacy;
mod secret;
mod toml;

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use ipnet::IpNet;
pub use secret::Secret;

use crate::cli::StdioMode;
use crate::platform::{self, Identity};

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

/// Where a service listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenAddr {
    /// A port on every address (one dual-stack socket).
    Any(u16),
    /// One address and port.
    At(SocketAddr),
}

impl ListenAddr {
    pub fn port(&self) -> u16 {
        match self {
            Self::Any(port) => *port,
            Self::At(addr) => addr.port(),
        }
    }

    /// Whether binding both would clash.
    pub fn overlaps(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::At(a), Self::At(b)) => a == b,
            _ => self.port() == other.port(),
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any(port) => write!(f, "port {port}"),
            Self::At(addr) => write!(f, "{addr}"),
        }
    }
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
}

/// One service: where it listens and the program run for each connection.
#[derive(Debug, PartialEq)]
pub struct Service {
    /// Its name in logs: the TOML `name`, or the port for a flat file.
    pub name: String,
    /// Line of the config file that defined it.
    pub line: usize,
    pub listen: Vec<ListenAddr>,
    /// The command line as written (an argv array joined by spaces), for logs.
    pub cmdline: String,
    /// The program to execute: an absolute path.
    pub program: PathBuf,
    /// argv[1..].
    pub args: Vec<OsString>,
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
    /// A session (its whole process tree) is killed after this long.
    pub max_lifetime: Option<Duration>,
}

/// The command line's defaults for what a service does not set.
#[derive(Debug, Clone)]
pub struct ServiceDefaults {
    pub timeout: Option<Duration>,
    pub linger: Option<Duration>,
    pub stdio: StdioMode,
}

/// A service as a config file describes it, before it is checked against
/// the system and given the defaults.
#[derive(Debug, Clone, Default)]
pub struct Draft {
    pub line: usize,
    pub name: String,
    pub listen: Vec<ListenAddr>,
    pub command: CommandLine,
    pub user: Option<String>,
    pub group: Option<String>,
    pub password: Option<Secret>,
    pub options: Options,
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

/// The per-service options a file set; `None` is "not said".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    pub env: Option<Vec<(String, String)>>,
    pub working_dir: Option<PathBuf>,
    pub stdio: Option<StdioMode>,
    pub stderr: Option<StderrMode>,
    /// Seconds; 0 is none.
    pub timeout: Option<u64>,
    /// Seconds; 0 is none.
    pub linger_timeout: Option<u64>,
    pub backlog: Option<u32>,
    pub nodelay: Option<bool>,
    /// Seconds of idle time; 0 is off.
    pub keepalive: Option<u64>,
    pub max_sessions: Option<usize>,
    pub max_per_source: Option<usize>,
    pub rate: Option<Rate>,
    pub rate_per_source: Option<Rate>,
    pub allow: Option<Vec<IpNet>>,
    pub deny: Option<Vec<IpNet>>,
    pub source_prefix_v6: Option<u8>,
    pub reject_message: Option<String>,
    /// Seconds.
    pub max_lifetime: Option<u64>,
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
/// ends in `.toml`, WinInetd's flat format otherwise.
pub fn load(path: &Path, defaults: &ServiceDefaults) -> Loaded {
    match std::fs::read(path) {
        Ok(text) => resolve(path, parse(path, &text), &System::current(), defaults),
        Err(e) => Loaded {
            config: None,
            diagnostics: vec![Diagnostic::error(
                path,
                None,
                format!("cannot read the config file: {e}"),
            )],
        },
    }
}

/// The `log_format` the config file at `path` asks for, read before
/// logging starts (the diagnostics of loading it are logged). Anything
/// unreadable gives the default; loading it reports why.
pub fn log_format_of(path: &Path) -> LogFormat {
    std::fs::read(path)
        .ok()
        .and_then(|text| parse(path, &text).log_format)
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
            let (user, password) = match entry.user {
                Some(field) => (Some(field.name), field.password),
                None => (None, None),
            };
            Draft {
                line: entry.line,
                name: entry.port.to_string(),
                listen: vec![ListenAddr::Any(entry.port)],
                command: CommandLine::Line(entry.cmdline),
                user,
                group: None,
                password,
                options: Options::default(),
            }
        })
        .collect();
    Parsed {
        drafts,
        diagnostics,
        ..Parsed::default()
    }
}

/// What resolving needs from the running system; a parameter so that tests
/// can pin it.
#[derive(Debug, Clone)]
pub struct System {
    /// Can the daemon start programs as other users?
    pub can_switch_users: bool,
    /// The search path for bare program names.
    pub path: Option<OsString>,
}

impl System {
    pub fn current() -> Self {
        Self {
            can_switch_users: platform::can_switch_users(),
            path: std::env::var_os("PATH"),
        }
    }
}

/// Checks parsed drafts against `system` and applies `defaults`.
pub fn resolve(file: &Path, parsed: Parsed, system: &System, defaults: &ServiceDefaults) -> Loaded {
    let mut diagnostics = parsed.diagnostics;
    let mut services = Vec::new();
    let mut used: Vec<(ListenAddr, usize, String)> = Vec::new();
    let mut lines_with_password = Vec::new();
    for draft in parsed.drafts {
        let mut errors = Vec::new();
        for addr in &draft.listen {
            match used.iter().find(|(other, _, _)| other.overlaps(addr)) {
                Some((ListenAddr::Any(port), line, _)) if matches!(addr, ListenAddr::Any(_)) => {
                    errors.push(format!("duplicate port {port} (first used on line {line})"));
                }
                Some((other, line, name)) => errors.push(format!(
                    "{addr} clashes with {other} of service {name:?} (line {line})"
                )),
                None => used.push((*addr, draft.line, draft.name.clone())),
            }
        }
        let user = match &draft.user {
            None => None,
            Some(name) => {
                if draft.password.is_some() && !platform::USES_PASSWORDS {
                    lines_with_password.push(draft.line);
                }
                match resolve_user(
                    name,
                    draft.group.as_deref(),
                    draft.password.as_ref(),
                    system,
                ) {
                    Ok(identity) => Some(identity),
                    Err(message) => {
                        errors.push(message);
                        None
                    }
                }
            }
        };
        let command = resolve_command(&draft.command, system)
            .map_err(|message| errors.push(message))
            .ok();
        if draft
            .options
            .working_dir
            .as_ref()
            .is_some_and(|dir| dir.as_os_str().as_encoded_bytes().contains(&0))
        {
            errors.push("`working_dir` contains a NUL character".to_owned());
        }
        if let Some((_, _, Some(warning))) = &command {
            diagnostics.push(Diagnostic::warning(file, Some(draft.line), warning.clone()));
        }
        if !errors.is_empty() {
            diagnostics.extend(
                errors
                    .into_iter()
                    .map(|m| Diagnostic::error(file, Some(draft.line), m)),
            );
            continue;
        }
        let Some((program, args, _)) = command else {
            continue;
        };
        services.push(Arc::new(build(draft, program, args, user, defaults)));
    }
    if !lines_with_password.is_empty() {
        let lines: Vec<String> = lines_with_password.iter().map(usize::to_string).collect();
        diagnostics.push(Diagnostic::warning(
            file,
            None,
            format!(
                "passwords are ignored on this system (line {}): running as a user needs none",
                lines.join(", ")
            ),
        ));
    }
    let mut has_errors = diagnostics.iter().any(|d| d.severity == Severity::Error);
    if !has_errors && services.is_empty() {
        diagnostics.push(Diagnostic::error(
            file,
            None,
            "no services: a service line is `PORT USER:PASS CMDLINE` and starts with a digit"
                .to_owned(),
        ));
        has_errors = true;
    }
    diagnostics.sort_by_key(|d| d.line.unwrap_or(usize::MAX));
    let config = (!has_errors).then(|| Config {
        path: file.to_owned(),
        services,
        max_sessions: parsed.max_sessions,
        log_format: parsed.log_format.unwrap_or_default(),
    });
    Loaded {
        config,
        diagnostics,
    }
}

/// A draft that passed every check, with the defaults applied.
fn build(
    draft: Draft,
    program: PathBuf,
    args: Vec<OsString>,
    user: Option<Identity>,
    defaults: &ServiceDefaults,
) -> Service {
    let o = draft.options;
    let seconds = |value: Option<u64>, default: Option<Duration>| match value {
        Some(0) => None,
        Some(secs) => Some(Duration::from_secs(secs)),
        None => default,
    };
    let cmdline = match draft.command {
        CommandLine::Line(line) => line,
        CommandLine::Argv(argv) => platform::join_command_line(&argv),
    };
    Service {
        name: draft.name,
        line: draft.line,
        listen: draft.listen,
        cmdline,
        program,
        args,
        user,
        env: o
            .env
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect(),
        working_dir: o.working_dir,
        stdio: o.stdio.unwrap_or(defaults.stdio),
        stderr: o.stderr.unwrap_or_default(),
        socket: SocketOptions {
            timeout: seconds(o.timeout, defaults.timeout),
            linger: seconds(o.linger_timeout, defaults.linger),
            backlog: o.backlog.unwrap_or(DEFAULT_BACKLOG),
            nodelay: o.nodelay.unwrap_or(false),
            keepalive: seconds(o.keepalive, None),
        },
        limits: Limits {
            max_sessions: o.max_sessions,
            max_per_source: o.max_per_source,
            rate: o.rate,
            rate_per_source: o.rate_per_source,
            source_prefix_v6: o.source_prefix_v6.unwrap_or(DEFAULT_SOURCE_PREFIX_V6),
        },
        access: Access {
            allow: o.allow.unwrap_or_default(),
            deny: o.deny.unwrap_or_default(),
        },
        reject_message: o.reject_message,
        max_lifetime: seconds(o.max_lifetime, None),
    }
}

fn resolve_user(
    name: &str,
    group: Option<&str>,
    password: Option<&Secret>,
    system: &System,
) -> Result<Identity, String> {
    if !system.can_switch_users {
        return Err(format!(
            "service runs as user {name:?}, but wininetd is not running as root and cannot switch users"
        ));
    }
    platform::lookup_user(name, group, password).map_err(|e| e.to_string())
}

/// Splits a command line and finds its program. Returns the program, its
/// arguments and an optional warning.
fn resolve_command(
    command: &CommandLine,
    system: &System,
) -> Result<(PathBuf, Vec<OsString>, Option<String>), String> {
    let argv = match command {
        CommandLine::Line(line) => platform::split_command_line(line)?,
        CommandLine::Argv(argv) => argv.clone(),
    };
    if argv.iter().any(|arg| arg.contains('\0')) {
        return Err("the command contains a NUL character".to_owned());
    }
    let mut argv = argv.into_iter();
    let program = argv.next().ok_or_else(|| "missing command".to_owned())?;
    let args = argv.map(OsString::from).collect();
    let path = Path::new(&program);
    if path.is_absolute() {
        let warning = (!platform::is_executable(path)).then(|| {
            format!(
                "{:?} is not an executable file now; its connections will fail until it is",
                path
            )
        });
        return Ok((path.to_owned(), args, warning));
    }
    if path.components().count() > 1 {
        return Err(format!(
            "program {program:?} must be an absolute path or a bare name found on PATH"
        ));
    }
    let found = system
        .path
        .as_deref()
        .into_iter()
        .flat_map(std::env::split_paths)
        .filter(|dir| dir.is_absolute())
        .flat_map(|dir| platform::executable_candidates(&dir, &program))
        .find(|candidate| platform::is_executable(candidate));
    match found {
        Some(found) => Ok((found, args, None)),
        None => Err(format!("program {program:?} not found on PATH")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A program that exists on every OS: this test binary.
    fn this_exe() -> PathBuf {
        std::env::current_exe().expect("the test binary has a path")
    }

    fn system() -> System {
        let dir = this_exe().parent().expect("in a directory").to_owned();
        System {
            can_switch_users: false,
            path: Some(std::env::join_paths([dir]).expect("a plain path")),
        }
    }

    fn defaults() -> ServiceDefaults {
        ServiceDefaults {
            timeout: None,
            linger: None,
            stdio: StdioMode::Socket,
        }
    }

    /// Resolves a flat file's text.
    fn flat(text: &[u8], system: &System) -> Loaded {
        let file = Path::new("t.conf");
        resolve(file, parse(file, text), system, &defaults())
    }

    fn messages(text: &str, system: &System) -> Vec<String> {
        flat(text.as_bytes(), system)
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn resolves_a_bare_name_on_path() {
        let exe = this_exe();
        let name = exe
            .file_name()
            .and_then(|n| n.to_str())
            .expect("UTF-8 name");
        let line = format!("7 none {name} -c x\n");
        let loaded = flat(line.as_bytes(), &system());
        let config = loaded.config.expect("valid");
        let service = &config.services[0];
        assert_eq!(service.program, exe);
        assert_eq!(
            service.args,
            vec![OsString::from("-c"), OsString::from("x")]
        );
        assert_eq!(service.cmdline, format!("{name} -c x"));
    }

    #[test]
    fn every_error_is_listed_with_file_and_line() {
        let exe = this_exe();
        let exe = exe.display();
        let text = format!(
            "7 none {exe}\n7 none {exe}\n8 none nosuch-program-xyz\n9 none ./rel\n10 none \"{exe}\n"
        );
        let m = messages(&text, &system());
        assert_eq!(m.len(), 4, "{m:?}");
        assert_eq!(
            m[0],
            "t.conf:2: error: duplicate port 7 (first used on line 1)"
        );
        assert_eq!(
            m[1],
            "t.conf:3: error: program \"nosuch-program-xyz\" not found on PATH"
        );
        assert_eq!(
            m[2],
            "t.conf:4: error: program \"./rel\" must be an absolute path or a bare name found on PATH"
        );
        assert!(
            m[3].starts_with("t.conf:5: error: unterminated quote"),
            "{m:?}"
        );
    }

    #[test]
    fn empty_config_is_an_error() {
        assert_eq!(
            messages("# nothing\n", &system()),
            vec![
                "t.conf: error: no services: a service line is `PORT USER:PASS CMDLINE` and starts with a digit"
            ]
        );
    }

    #[test]
    fn user_lines_need_root_and_never_show_the_password() {
        let text = format!("7 alice:pw-SECRET {}\n", this_exe().display());
        let m = messages(&text, &system());
        assert!(m[0].contains("not running as root"), "{m:?}");
        assert!(m.iter().all(|m| !m.contains("pw-SECRET")));
    }

    #[test]
    fn missing_absolute_program_is_a_warning() {
        let missing = this_exe().with_file_name("no-such-program-here");
        let text = format!("7 none {}\n", missing.display());
        let loaded = flat(text.as_bytes(), &system());
        assert!(loaded.config.is_some());
        assert_eq!(loaded.diagnostics.len(), 1, "{:?}", loaded.diagnostics);
        assert_eq!(loaded.diagnostics[0].severity, Severity::Warning);
    }
}
