//! Resolving: checking parsed [`Draft`]s against the running system (users,
//! programs, listen addresses used twice) and applying the defaults.
//!
//! Each problem is reported where it was written: a listen clash at the
//! address, an unknown user at the user, a missing program at the command,
//! the "password ignored" warning at the password. A draft the parser found
//! incomplete is checked all the same, so that one run lists every problem.
//!
//! The flat format splits its fields at blanks, so a password with a blank
//! in it, or a line that forgot its user field, shifts the fields after it:
//! the command then starts inside the password, or the program became the
//! user. On a line that may be so, a message never shows the program's name
//! (it may be a piece of the password) and says what seems to be wrong
//! instead. These guesses are made only about a line that fails to resolve,
//! so a valid line never draws one.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{
    Access, Account, CommandLine, Config, Diagnostic, Draft, FileFormat, IpListen, Limits,
    ListenAddr, Loaded, Options, Parsed, Placed, Pos, Service, ServiceDefaults, Severity,
    SocketFile, SocketOptions, StdioMode,
};
use crate::platform::{self, Identity};
use crate::tls;

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

/// A listen address taken by an earlier service.
struct Taken {
    addr: ListenAddr,
    line: usize,
    name: String,
}

/// Checks parsed drafts against `system` and applies `defaults`.
pub fn resolve(file: &Path, parsed: Parsed, system: &System, defaults: &ServiceDefaults) -> Loaded {
    let mut diagnostics = parsed.diagnostics;
    let mut services = Vec::new();
    let mut taken: Vec<Taken> = Vec::new();
    for draft in parsed.drafts {
        let mut problems = Vec::new();
        let resolved = check(&draft, system, &mut taken, &mut problems);
        let ids = ids(&draft.options, &mut problems);
        let tls = tls(&draft.options, &mut problems);
        let failed = problems.iter().any(|(s, _, _)| *s == Severity::Error);
        diagnostics.extend(
            problems
                .into_iter()
                .map(|(severity, pos, message)| Diagnostic::at(severity, file, pos, message)),
        );
        if let Some((program, args, user)) = resolved
            && let Some(ids) = ids
            && let Ok(tls) = tls
            && draft.complete
            && !failed
        {
            let service = build(draft, program, args, user, ids, tls, defaults);
            services.push(Arc::new(service));
        }
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
    // Stable: the problems of one place keep their order.
    diagnostics.sort_by_key(|d| (d.line.unwrap_or(usize::MAX), d.column));
    let config = (!has_errors).then(|| Config {
        path: file.to_owned(),
        services,
        max_sessions: parsed.max_sessions,
        log_format: parsed.log_format.unwrap_or_default(),
        encoding: super::Encoding::default(),
    });
    Loaded {
        config,
        diagnostics,
        encoding: None,
    }
}

/// A problem found in a draft: how bad, where, and what.
type Problem = (Severity, Pos, String);

/// Checks one draft, whole, adding its problems to `problems` and its
/// listen addresses to `taken`. Returns its program, arguments and user
/// when they resolved.
fn check(
    draft: &Draft,
    system: &System,
    taken: &mut Vec<Taken>,
    problems: &mut Vec<Problem>,
) -> Option<(PathBuf, Vec<OsString>, Option<Identity>)> {
    let error = |pos: Pos, message: String| (Severity::Error, pos, message);
    for Placed { value: addr, pos } in &draft.listen {
        if matches!(addr, ListenAddr::Unix(_)) && !platform::UNIX_SOCKETS {
            problems.push(error(
                *pos,
                "Unix sockets are not supported on this system: listen on a TCP or UDP port"
                    .to_owned(),
            ));
            continue;
        }
        match taken.iter().find(|t| t.addr.overlaps(addr)) {
            Some(Taken {
                addr: first, line, ..
            }) if matches!(
                (first.ip(), addr.ip()),
                (Some(IpListen::Any(_)), Some(IpListen::Any(_)))
            ) =>
            {
                let port = addr.ip().map_or(0, IpListen::port);
                let udp = if matches!(addr, ListenAddr::Udp(_)) {
                    "UDP "
                } else {
                    ""
                };
                problems.push(error(
                    *pos,
                    format!("duplicate {udp}port {port} (first used on line {line})"),
                ));
            }
            Some(t) => {
                let of = if t.name.is_empty() {
                    "the service".to_owned()
                } else {
                    format!("service {:?}", t.name)
                };
                problems.push(error(
                    *pos,
                    format!("{addr} clashes with {} of {of} (line {})", t.addr, t.line),
                ));
            }
            None => taken.push(Taken {
                addr: addr.clone(),
                line: draft.line,
                name: draft.name.clone(),
            }),
        }
    }
    let user = draft.user.as_ref().map(|user| {
        let password = draft.password.as_ref().map(|p| &p.value);
        let group = draft.group.as_ref().map(|g| g.value.as_str());
        (user.pos, resolve_user(&user.value, group, password, system))
    });
    let command = draft
        .command
        .as_ref()
        .map(|command| (command.pos, resolve_command(&command.value, system)));

    let user_failed = matches!(user, Some((_, Err(_))));
    let guess = match &command {
        Some(command) if draft.format == FileFormat::Flat => {
            flat_guess(draft, user_failed, command, system)
        }
        _ => None,
    };
    match guess {
        Some(Guess::MissingUser) => {
            let pos = draft.user.as_ref().map_or(Pos::line(draft.line), |u| u.pos);
            problems.push(error(pos, MISSING_USER.to_owned()));
            return None;
        }
        Some(Guess::SpaceInPassword(pos)) => {
            problems.push(error(pos, SPACE_IN_PASSWORD.to_owned()))
        }
        Some(Guess::Hidden(pos)) => {
            if let Some((_, Err(e))) = &command {
                problems.push(error(pos, e.hidden()));
            }
        }
        None => {
            if let Some((pos, Err(e))) = &command {
                problems.push(error(*pos, e.to_string()));
            }
        }
    }
    if let Some((pos, Ok(found))) = &command
        && let Some(program) = &found.not_executable
    {
        match guess {
            // Not a warning: the service would then run, and its command
            // line (which may hold the rest of the password) would be shown
            // in the `listening on` line and in the failures of its
            // sessions.
            Some(Guess::Hidden(_)) => problems.push((
                Severity::Error,
                *pos,
                NOT_EXECUTABLE_HIDDEN.to_owned(),
            )),
            Some(Guess::SpaceInPassword(_)) => {}
            _ => problems.push((
                Severity::Warning,
                *pos,
                format!(
                    "{program:?} is not an executable file now; its connections will fail until it is"
                ),
            )),
        }
    }
    if let Some((pos, Err(message))) = &user {
        problems.push(error(*pos, message.clone()));
    }
    if let Some(password) = &draft.password
        && draft.user.is_some()
        && !platform::USES_PASSWORDS
    {
        problems.push((
            Severity::Warning,
            password.pos,
            "the password is ignored on this system: running as a user needs none".to_owned(),
        ));
    }
    if matches!(guess, Some(Guess::SpaceInPassword(_))) {
        return None;
    }
    let user = match user {
        Some((_, Ok(identity))) => Some(identity),
        Some((_, Err(_))) => return None,
        None => None,
    };
    if draft.builtin.is_some() {
        // Runs no program, as no one: the parser refused what would say
        // otherwise.
        return Some((PathBuf::new(), Vec::new(), None));
    }
    let (_, Ok(found)) = command? else {
        return None;
    };
    Some((found.program, found.args, user))
}

const MISSING_USER: &str =
    "the user field looks like a program: missing `none` or USER:PASS before the command?";
const SPACE_IN_PASSWORD: &str = "the USER:PASS field seems to contain a space: fields are split at blanks, so the command starts inside the password (a password with a blank needs the TOML format)";
const NOT_EXECUTABLE_HIDDEN: &str = "the program (the first word of the command) is not an executable file; on a line with a password it must be one, since the command may start inside the password (not shown)";

/// What a flat line that fails to resolve seems to have got wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guess {
    /// The user field is a program: `PORT CMDLINE`, with no user.
    MissingUser,
    /// The command starts inside the password, and a later word is the
    /// program.
    SpaceInPassword(Pos),
    /// The program may be a piece of the password: say what is wrong with
    /// it without its name.
    Hidden(Pos),
}

/// The guess for a flat line whose user or command failed to resolve;
/// `None` for a line that resolved, or whose problems show no password.
fn flat_guess(
    draft: &Draft,
    user_failed: bool,
    (pos, command): &(Pos, Result<Found, CommandError>),
    system: &System,
) -> Option<Guess> {
    let program_failed = match command {
        Ok(found) => found.not_executable.is_some(),
        Err(_) => true,
    };
    if let Some(field) = &draft.user {
        let mut text = field.value.clone();
        if let Some(password) = &draft.password {
            text.push(':');
            text.push_str(password.value.expose());
        }
        if looks_like_program(&text) && (user_failed || program_failed) {
            return Some(Guess::MissingUser);
        }
    }
    if !program_failed {
        return None;
    }
    let CommandLine::Line(line) = &draft.command.as_ref()?.value else {
        return None;
    };
    let argv = platform::split_command_line(line).ok();
    let first = argv.as_ref().and_then(|argv| argv.first());
    // A password on the line, or a first word that holds a `USER:PASS`
    // (a blank in the user name): the program may be part of a password.
    let may_be_password = draft.password.is_some()
        || first.is_some_and(|word| word.contains(':') && !is_drive_path(word));
    if !may_be_password {
        return None;
    }
    let later_program =
        argv.iter().flatten().skip(1).any(|word| {
            is_drive_path(word) || has_program_extension(word) || resolves(word, system)
        });
    Some(if later_program {
        Guess::SpaceInPassword(*pos)
    } else {
        Guess::Hidden(*pos)
    })
}

/// Whether a flat line's user field is a program's path rather than
/// `none`, `USER` or `USER:PASS`: a drive path (`C:\…`), a UNC path, a
/// name with a `/` (neither Unix nor Windows allows one in a user name),
/// two backslashes (`DOMAIN\user` has one), or a program's extension.
fn looks_like_program(field: &str) -> bool {
    let name = field.split(':').next().unwrap_or_default();
    is_drive_path(field)
        || field.starts_with(r"\\")
        || name.contains('/')
        || name.matches('\\').count() >= 2
        || has_program_extension(name)
}

/// `C:\…` or `C:/…`.
fn is_drive_path(word: &str) -> bool {
    matches!(word.as_bytes(), [drive, b':', b'\\' | b'/', ..] if drive.is_ascii_alphabetic())
}

/// What Windows runs: `.exe`, `.com`, `.bat`, `.cmd`.
fn has_program_extension(word: &str) -> bool {
    let lower = word.to_ascii_lowercase();
    [".exe", ".com", ".bat", ".cmd"]
        .iter()
        .any(|ext| lower.len() > ext.len() && lower.ends_with(ext))
}

/// Whether `word` names an executable: an absolute path to one, or a bare
/// name found on PATH.
fn resolves(word: &str, system: &System) -> bool {
    resolve_command(&CommandLine::Argv(vec![word.to_owned()]), system)
        .is_ok_and(|found| found.not_executable.is_none())
}

/// The user and group IDs of a service's options, looked up by name where
/// they were written so.
#[derive(Debug, Default)]
struct Ids {
    owner: Option<u32>,
    group: Option<u32>,
    allow_uid: Vec<u32>,
    allow_gid: Vec<u32>,
}

/// Looks up the users and groups `options` names; `None` if one is
/// unknown (each reported where it was written).
fn ids(options: &Options, problems: &mut Vec<Problem>) -> Option<Ids> {
    let before = problems.len();
    let mut id = |account: &Account, group: bool| match account {
        Account::Id(id) => Some(*id),
        Account::Name(name) => platform::account_id(&name.value, group)
            .map_err(|message| problems.push((Severity::Error, name.pos, message)))
            .ok(),
    };
    let ids = Ids {
        owner: options.socket_owner.as_ref().and_then(|a| id(a, false)),
        group: options.socket_group.as_ref().and_then(|a| id(a, true)),
        allow_uid: (options.allow_uid.iter().flatten())
            .filter_map(|a| id(a, false))
            .collect(),
        allow_gid: (options.allow_gid.iter().flatten())
            .filter_map(|a| id(a, true))
            .collect(),
    };
    (problems.len() == before).then_some(ids)
}

/// Reads a service's TLS files: its certificate, key and client CAs,
/// checked together; `Err` when they are wrong (said at `tls`).
fn tls(options: &Options, problems: &mut Vec<Problem>) -> Result<Option<tls::Server>, ()> {
    let Some(files) = &options.tls else {
        return Ok(None);
    };
    let timeout = options
        .tls_timeout
        .map_or(super::DEFAULT_TLS_TIMEOUT, Duration::from_secs);
    let mut warn = |message| problems.push((Severity::Warning, files.pos, message));
    match tls::Server::load(&files.value, timeout, &mut warn) {
        Ok(server) => Ok(Some(server)),
        Err(e) => {
            problems.push((Severity::Error, files.pos, e.to_string()));
            Err(())
        }
    }
}

/// A draft that passed every check, with the defaults applied.
fn build(
    draft: Draft,
    program: PathBuf,
    args: Vec<OsString>,
    user: Option<Identity>,
    ids: Ids,
    tls: Option<tls::Server>,
    defaults: &ServiceDefaults,
) -> Service {
    let o = draft.options;
    let listen: Vec<ListenAddr> = draft.listen.into_iter().map(|l| l.value).collect();
    let udp = listen.iter().any(|l| matches!(l, ListenAddr::Udp(_)));
    let unix = listen.iter().any(|l| matches!(l, ListenAddr::Unix(_)));
    let wait = draft.builtin.is_none() && o.wait.unwrap_or(udp);
    // The daemon accepts the connections (and sets their options) only of
    // a stream service that is not in wait mode.
    let accepts = !udp && !wait;
    let seconds = |value: Option<u64>, default: Option<Duration>| match value {
        Some(0) => None,
        Some(secs) => Some(Duration::from_secs(secs)),
        None => default,
    };
    let builtin = draft.builtin.map(|b| b.value);
    let cmdline = match (draft.command.map(|c| c.value), builtin) {
        (_, Some(builtin)) => format!("builtin {}", builtin.name()),
        (Some(CommandLine::Line(line)), None) => line,
        (Some(CommandLine::Argv(argv)), None) => platform::join_command_line(&argv),
        (None, None) => String::new(),
    };
    Service {
        name: draft.name,
        line: draft.line,
        listen,
        wait,
        socket_file: unix.then(|| SocketFile {
            mode: o.socket_mode.unwrap_or(super::DEFAULT_SOCKET_MODE),
            owner: ids.owner,
            group: ids.group,
        }),
        cmdline,
        program,
        args,
        builtin,
        user,
        env: o
            .env
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect(),
        working_dir: o.working_dir,
        stdio: if tls.is_some() {
            // A TLS session's plaintext is relayed to the program's pipes.
            StdioMode::Pipe
        } else if accepts {
            o.stdio.unwrap_or(defaults.stdio)
        } else {
            StdioMode::Socket
        },
        stderr: o.stderr.unwrap_or_default(),
        socket: SocketOptions {
            timeout: seconds(o.timeout, defaults.timeout.filter(|_| accepts)),
            linger: seconds(o.linger_timeout, defaults.linger.filter(|_| accepts)),
            backlog: o.backlog.unwrap_or(super::DEFAULT_BACKLOG),
            nodelay: o.nodelay.unwrap_or(false),
            keepalive: seconds(o.keepalive, None),
        },
        limits: Limits {
            max_sessions: o.max_sessions,
            max_per_source: o.max_per_source,
            rate: o.rate,
            rate_per_source: o.rate_per_source,
            source_prefix_v6: o
                .source_prefix_v6
                .unwrap_or(super::DEFAULT_SOURCE_PREFIX_V6),
        },
        access: Access {
            allow: o.allow.unwrap_or_default(),
            deny: o.deny.unwrap_or_default(),
            allow_uid: ids.allow_uid,
            allow_gid: ids.allow_gid,
        },
        reject_message: o.reject_message,
        tls,
        proxy: o.proxy_protocol.map(|versions| super::ProxyProtocol {
            versions,
            trusted: o.trusted_proxies.unwrap_or_default(),
            timeout: o
                .proxy_timeout
                .map_or(super::DEFAULT_PROXY_TIMEOUT, Duration::from_secs),
        }),
        max_lifetime: seconds(o.max_lifetime, None),
    }
}

fn resolve_user(
    name: &str,
    group: Option<&str>,
    password: Option<&super::Secret>,
    system: &System,
) -> Result<Identity, String> {
    if !system.can_switch_users {
        return Err(format!(
            "service runs as user {name:?}, but wininetd is not running as root and cannot switch users"
        ));
    }
    platform::lookup_user(name, group, password).map_err(|e| e.to_string())
}

/// A command that resolved.
#[derive(Debug)]
struct Found {
    program: PathBuf,
    args: Vec<OsString>,
    /// An absolute program that is not an executable file now: a warning,
    /// since it may be installed later.
    not_executable: Option<PathBuf>,
}

/// Why a command did not resolve.
#[derive(Debug, thiserror::Error)]
enum CommandError {
    #[error("{0}")]
    Split(String),
    #[error("the command contains a NUL character")]
    Nul,
    #[error("missing command")]
    Missing,
    #[error("program {0:?} must be an absolute path or a bare name found on PATH")]
    NotAbsolute(String),
    #[error("program {0:?} not found on PATH")]
    NotFound(String),
}

impl CommandError {
    /// The message, without the program's name.
    fn hidden(&self) -> String {
        match self {
            Self::NotAbsolute(_) | Self::NotFound(_) => "the program (the first word of the command) is neither an absolute path nor a program found on PATH (not shown: it may be part of the password)".to_owned(),
            other => other.to_string(),
        }
    }
}

/// Splits a command line and finds its program.
fn resolve_command(command: &CommandLine, system: &System) -> Result<Found, CommandError> {
    let argv = match command {
        CommandLine::Line(line) => {
            platform::split_command_line(line).map_err(CommandError::Split)?
        }
        CommandLine::Argv(argv) => argv.clone(),
    };
    if argv.iter().any(|arg| arg.contains('\0')) {
        return Err(CommandError::Nul);
    }
    let mut argv = argv.into_iter();
    let program = argv.next().ok_or(CommandError::Missing)?;
    let args = argv.map(OsString::from).collect();
    let path = Path::new(&program);
    if path.is_absolute() {
        return Ok(Found {
            program: path.to_owned(),
            args,
            not_executable: (!platform::is_executable(path)).then(|| path.to_owned()),
        });
    }
    if path.components().count() > 1 {
        return Err(CommandError::NotAbsolute(program));
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
        Some(program) => Ok(Found {
            program,
            args,
            not_executable: None,
        }),
        None => Err(CommandError::NotFound(program)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StdioMode;
    use crate::config::parse;

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

    /// Resolves a file's text; its name's extension picks the format.
    fn load(name: &str, text: &str, system: &System) -> Loaded {
        let file = Path::new(name);
        resolve(file, parse(file, text.as_bytes()), system, &defaults())
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

    fn toml_messages(text: &str, system: &System) -> Vec<String> {
        load("t.toml", text, system)
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

    /// Issue 16, item 6: a password with a space made its second half the
    /// program, and the error showed it (`program "Word42" not found`).
    #[test]
    fn a_password_with_a_space_is_not_shown() {
        let exe = this_exe();
        for line in [
            r"22803 svcacct:Pass Word42 C:\windows\system32\whoami.exe".to_owned(),
            format!("22803 svcacct:Pass Word42 {}", exe.display()),
            format!("22803 svcacct:Pass Word42 and-more {} -x", exe.display()),
            // The second half is absolute: not an executable, and a later
            // word is.
            format!("22803 svcacct:Pass /Word42 {}", exe.display()),
            // A blank in the user name: `USER:PASS` became the program.
            format!("22803 svc acct:Word42 {}", exe.display()),
        ] {
            let m = messages(&line, &system());
            assert!(
                m.contains(&format!("t.conf:1: error: {SPACE_IN_PASSWORD}")),
                "{line}: {m:?}"
            );
            assert!(m.iter().all(|m| !m.contains("Word42")), "{line}: {m:?}");
            assert!(flat(line.as_bytes(), &system()).config.is_none());
        }
    }

    /// Without a later program, the error is the usual one, still without
    /// the name.
    #[test]
    fn a_missing_program_on_a_password_line_is_not_shown() {
        for line in [
            "7 svcacct:Pass Word42",
            "7 svcacct:Pass Word42 -x y",
            "7 svcacct:Pass ./Word42",
            "7 svc acct:Word42",
        ] {
            let m = messages(line, &system());
            let hidden = CommandError::NotFound(String::new()).hidden();
            assert!(
                m.contains(&format!("t.conf:1: error: {hidden}")),
                "{line}: {m:?}"
            );
            assert!(m.iter().all(|m| !m.contains("Word42")), "{line}: {m:?}");
        }
        let missing = this_exe().with_file_name("Word42");
        let line = format!("7 svcacct:Pass {}", missing.display());
        let loaded = flat(
            line.as_bytes(),
            &System {
                can_switch_users: true,
                ..system()
            },
        );
        let m: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
        // An error, not a warning: a service that ran would show its
        // command line (`listening on … (CMDLINE)`, failed starts).
        assert!(
            m.contains(&format!("t.conf:1: error: {NOT_EXECUTABLE_HIDDEN}")),
            "{m:?}"
        );
        assert!(loaded.config.is_none(), "{m:?}");
        assert!(m.iter().all(|m| !m.contains("Word42")), "{m:?}");
    }

    /// Issue 16, item 6: a line without its user field took the program as
    /// the user (`C` with the password `\windows\...`) and reported its
    /// first argument as the program.
    #[test]
    fn a_forgotten_user_field_is_named_as_such() {
        let exe = this_exe();
        for line in [
            r"22801 C:\windows\system32\cmd.exe /q /c echo x".to_owned(),
            r"22801 C:/tools/prog.exe -x".to_owned(),
            "22801 /bin/cat -u".to_owned(),
            format!("22801 {} -u", exe.display()),
            r"22801 \\server\share\prog.exe /q".to_owned(),
            r"22801 tools\bin\prog /q".to_owned(),
            "22801 prog.exe /q".to_owned(),
        ] {
            let m = messages(&line, &system());
            assert_eq!(m, [format!("t.conf:1: error: {MISSING_USER}")], "{line}");
        }
    }

    #[test]
    fn user_fields_that_look_like_programs() {
        for field in [
            r"C:\windows\system32\cmd.exe",
            "c:/x",
            "/bin/cat",
            "./run",
            r"\\server\share\p.exe",
            r"a\b\c",
            "prog.EXE",
            "run.cmd",
        ] {
            assert!(looks_like_program(field), "{field}");
        }
        for field in [
            "alice",
            "alice:pw",
            r"DOMAIN\svc:pw",
            r".\svc:pw",
            "svc@corp.example:pw",
            "svc:pass/word",
            r"svc:pass\\word.exe",
            "C:pw",
            "none",
            "www-data",
            ".exe",
        ] {
            assert!(!looks_like_program(field), "{field}");
        }
    }

    /// A line that resolves draws no guess, however its fields look.
    #[test]
    fn valid_lines_draw_no_guess() {
        let exe = this_exe().display().to_string();
        let drive = r"C:\windows\system32\cmd.exe".to_owned();
        for (user, password, command) in [
            ("C", Some(r"\windows\system32\cmd.exe"), format!("{exe} /q")),
            ("svcacct", Some("Pass"), format!("{exe} {drive}")),
            ("svcacct", Some("Pass"), format!("{exe} {exe}")),
            ("svc", None, format!("{exe} a:b {exe}")),
            (r"DOMAIN\svc", Some("pw"), exe.clone()),
        ] {
            let draft = Draft {
                line: 1,
                format: FileFormat::Flat,
                user: Some(Placed::new(user.to_owned(), Pos::line(1))),
                password: password.map(|p| Placed::new(super::super::Secret::new(p), Pos::line(1))),
                command: Some(Placed::new(
                    CommandLine::Line(command.clone()),
                    Pos::line(1),
                )),
                ..Draft::default()
            };
            let resolved = (
                Pos::line(1),
                resolve_command(&draft.command.as_ref().expect("set").value, &system()),
            );
            assert!(resolved.1.is_ok(), "{command}");
            assert_eq!(
                flat_guess(&draft, false, &resolved, &system()),
                None,
                "{command}"
            );
        }
    }

    /// Issue 16, item 15: a service with a bad key still has its user, its
    /// program and its addresses checked, each reported at its key's
    /// value; `group` needing `user` and the password warning at their keys.
    #[test]
    fn toml_problems_are_reported_at_their_keys() {
        let exe = toml_string(&this_exe().display().to_string());
        let text = format!(
            r#"[[service]]
name = "a"
listen = [7001, "127.0.0.1:7002"]
command = {exe}

[[service]]
name = "b"
timeout = "soon"
listen = [7003, 7001]
command = "no-such-program-xyz"
user = "no-such-user-xyz"

[[service]]
name = "c"
listen = ["x", "127.0.0.1:7002"]
group = "g"
  command = {exe}
"#
        );
        let m = toml_messages(&text, &system());
        assert_eq!(
            m,
            [
                "t.toml:8:11: error: `timeout` must be an integer, not a string",
                "t.toml:9:17: error: duplicate port 7001 (first used on line 1)",
                "t.toml:10:11: error: program \"no-such-program-xyz\" not found on PATH",
                "t.toml:11:8: error: service runs as user \"no-such-user-xyz\", but wininetd is not running as root and cannot switch users",
                "t.toml:15:11: error: \"x\" is not a listen address: use PORT, IPV4:PORT or [IPV6]:PORT",
                "t.toml:15:16: error: 127.0.0.1:7002 clashes with 127.0.0.1:7002 of service \"a\" (line 1)",
                "t.toml:16:1: error: `group` needs `user`",
            ]
        );
    }

    #[test]
    fn the_password_warning_is_at_each_password() {
        let exe = this_exe().display().to_string();
        let can = System {
            can_switch_users: true,
            ..system()
        };
        let text = format!(
            "[[service]]\nname = \"a\"\nlisten = 7001\ncommand = {}\nuser = \"root\"\n  password = \"pw-SECRET\"\n",
            toml_string(&exe)
        );
        let loaded = load("t.toml", &text, &can);
        let passwords: Vec<String> = loaded
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .filter(|d| d.contains("password"))
            .collect();
        if platform::USES_PASSWORDS {
            assert_eq!(passwords, Vec::<String>::new());
        } else {
            assert_eq!(
                passwords,
                [
                    "t.toml:6:3: warning: the password is ignored on this system: running as a user needs none"
                ]
            );
        }
        let text = format!("7001 root:pw-SECRET {exe}\n# c\n7002 root:pw-SECRET {exe}\n");
        let passwords = flat(text.as_bytes(), &can)
            .diagnostics
            .iter()
            .filter(|d| d.message.contains("password"))
            .map(|d| d.line)
            .collect::<Vec<_>>();
        let expected = if platform::USES_PASSWORDS {
            vec![]
        } else {
            vec![Some(1), Some(3)]
        };
        assert_eq!(passwords, expected);
    }

    fn toml_string(text: &str) -> String {
        format!("'{text}'")
    }
}
