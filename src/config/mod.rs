//! The configuration: load a file, parse it, and resolve it into the model
//! the server runs.
//!
//! Two steps, as STYLE.md asks: the parser (`legacy`) fills in what the user
//! typed; [`resolve`] checks it against the system (users, programs, duplicate
//! ports) and produces a [`Config`] with nothing left to check at run time.
//! Every problem is collected, so one run lists them all.

mod legacy;
mod secret;

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use secret::Secret;

use crate::platform::{self, Identity};

/// A resolved configuration: what the server listens on and runs.
#[derive(Debug)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    pub services: Vec<Arc<Service>>,
}

/// One service: a port and the program run for each of its connections.
#[derive(Debug)]
pub struct Service {
    /// Line of the config file that defined it.
    pub line: usize,
    pub port: u16,
    /// The command line as written, for logs.
    pub cmdline: String,
    /// The program to execute: an absolute path.
    pub program: PathBuf,
    /// argv[1..].
    pub args: Vec<OsString>,
    /// Run as this account instead of the daemon's own.
    pub user: Option<Identity>,
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

/// Reads, parses and resolves the config file at `path`.
pub fn load(path: &Path) -> Loaded {
    match std::fs::read(path) {
        Ok(text) => resolve(path, &text, &System::current()),
        Err(e) => Loaded {
            config: None,
            diagnostics: vec![Diagnostic {
                severity: Severity::Error,
                file: path.to_owned(),
                line: None,
                message: format!("cannot read the config file: {e}"),
            }],
        },
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

/// Parses `text` (the contents of `file`) and resolves it against `system`.
pub fn resolve(file: &Path, text: &[u8], system: &System) -> Loaded {
    let parsed = legacy::parse(text);
    let mut diagnostics: Vec<Diagnostic> = Vec::new();
    let mut diag = |severity, line, message: String| {
        diagnostics.push(Diagnostic {
            severity,
            file: file.to_owned(),
            line,
            message,
        });
        severity == Severity::Error
    };
    let mut has_errors = false;
    for (line, error) in &parsed.errors {
        has_errors |= diag(Severity::Error, Some(*line), error.to_string());
    }
    for line in &parsed.indented {
        diag(
            Severity::Warning,
            Some(*line),
            "line starts with a blank, so it is a comment, not a service".to_owned(),
        );
    }

    let mut services = Vec::new();
    let mut first_line_of_port: HashMap<u16, usize> = HashMap::new();
    let mut lines_with_password = Vec::new();
    for entry in parsed.entries {
        let mut ok = true;
        if let Some(first) = first_line_of_port.insert(entry.port, entry.line) {
            first_line_of_port.insert(entry.port, first);
            has_errors |= diag(
                Severity::Error,
                Some(entry.line),
                format!("duplicate port {} (first used on line {first})", entry.port),
            );
            ok = false;
        }
        let user = match &entry.user {
            None => None,
            Some(field) => {
                if field.password.is_some() && !platform::USES_PASSWORDS {
                    lines_with_password.push(entry.line);
                }
                match resolve_user(&field.name, field.password.as_ref(), system) {
                    Ok(identity) => Some(identity),
                    Err(message) => {
                        has_errors |= diag(Severity::Error, Some(entry.line), message);
                        ok = false;
                        None
                    }
                }
            }
        };
        let command = match resolve_command(&entry.cmdline, system) {
            Ok((program, args, warning)) => {
                if let Some(warning) = warning {
                    diag(Severity::Warning, Some(entry.line), warning);
                }
                Some((program, args))
            }
            Err(message) => {
                has_errors |= diag(Severity::Error, Some(entry.line), message);
                None
            }
        };
        if let (true, Some((program, args))) = (ok, command) {
            services.push(Arc::new(Service {
                line: entry.line,
                port: entry.port,
                cmdline: entry.cmdline,
                program,
                args,
                user,
            }));
        }
    }
    if !lines_with_password.is_empty() {
        let lines: Vec<String> = lines_with_password.iter().map(usize::to_string).collect();
        diag(
            Severity::Warning,
            None,
            format!(
                "passwords are ignored on this system (line {}): running as a user needs none",
                lines.join(", ")
            ),
        );
    }
    if !has_errors && services.is_empty() {
        has_errors = diag(
            Severity::Error,
            None,
            "no services: a service line is `PORT USER:PASS CMDLINE` and starts with a digit"
                .to_owned(),
        );
    }
    diagnostics.sort_by_key(|d| d.line.unwrap_or(usize::MAX));
    let config = (!has_errors).then(|| Config {
        path: file.to_owned(),
        services,
    });
    Loaded {
        config,
        diagnostics,
    }
}

fn resolve_user(
    name: &str,
    password: Option<&Secret>,
    system: &System,
) -> Result<Identity, String> {
    if !system.can_switch_users {
        return Err(format!(
            "service runs as user {name:?}, but wininetd is not running as root and cannot switch users"
        ));
    }
    platform::lookup_user(name, password).map_err(|e| e.to_string())
}

/// Splits a command line and finds its program. Returns the program, its
/// arguments and an optional warning.
fn resolve_command(
    cmdline: &str,
    system: &System,
) -> Result<(PathBuf, Vec<OsString>, Option<String>), String> {
    let mut argv = platform::split_command_line(cmdline)?.into_iter();
    let program = argv
        .next()
        .ok_or_else(|| "missing command after the user field".to_owned())?;
    let args = argv.map(OsString::from).collect();
    let path = Path::new(&program);
    if path.is_absolute() {
        let warning = (!platform::is_executable(path)).then(|| {
            format!(
                "{} is not an executable file now; its connections will fail until it is",
                path.display()
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

    fn messages(text: &str, system: &System) -> Vec<String> {
        resolve(Path::new("t.conf"), text.as_bytes(), system)
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
        let loaded = resolve(Path::new("t.conf"), line.as_bytes(), &system());
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
        let loaded = resolve(Path::new("t.conf"), text.as_bytes(), &system());
        assert!(loaded.config.is_some());
        assert_eq!(loaded.diagnostics.len(), 1, "{:?}", loaded.diagnostics);
        assert_eq!(loaded.diagnostics[0].severity, Severity::Warning);
    }
}
