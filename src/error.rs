//! The top-level error and the exit codes it maps to.
//!
//! Exit codes: 0 success; 1 the config is invalid or the daemon could not
//! start or install; 2 the command line is wrong (clap exits with it).

use std::io;
use std::path::PathBuf;

/// Why `wininetd` stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{count} error(s) in {file}")]
    Config { file: String, count: usize },
    #[error("cannot listen on {addr}")]
    Listen {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the event loop")]
    Runtime(#[source] io::Error),
    #[error("cannot watch for the programs' exits")]
    Reaper(#[source] io::Error),
    #[error("cannot connect to the service manager")]
    ServiceManager(#[source] io::Error),
    #[error("cannot find this program's own path")]
    CurrentExe(#[source] io::Error),
    /// Installing or removing the system service failed (the platform's
    /// error, kept whole so that its causes print).
    #[error(transparent)]
    Install(Box<dyn std::error::Error + Send + Sync>),
    /// `--install` checked the config first and found errors.
    #[error("{count} error(s) in {file}: not installed (--force installs anyway)")]
    InstallRefused { file: String, count: usize },
    /// `--reload` checked the config first and found errors: the daemon
    /// was not asked to reload, and keeps its config.
    #[error("{count} error(s) in {file}: the running wininetd was not asked to reload")]
    ReloadRefused { file: String, count: usize },
    /// `--reload --cfgfile FILE` where the daemon reads another file.
    #[error(
        "the running wininetd reads {}, not {}: --reload checks and reloads the file the daemon reads",
        .running.display(),
        .given.display()
    )]
    ReloadOtherConfig { given: PathBuf, running: PathBuf },
    #[error("cannot write the pid file {}", .path.display())]
    PidFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("not started by the service manager (run with --debug to use the console, or --help)")]
    NotAService,
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::NotAService => 2,
            _ => 1,
        }
    }
}

/// A text the user wrote (a path, a user name) in a message, in double
/// quotes and as written: unlike `{:?}`, a backslash stays one
/// (`"C:\dir\x.exe"`, not `"C:\\dir\\x.exe"`) and a quote inside is not
/// escaped. Control characters alone are shown escaped (`\n`, `\u{1b}`), so
/// a message stays one line that nothing in it can forge.
#[derive(Debug, Clone, Copy)]
pub struct Quoted<'a>(pub &'a str);

impl std::fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        f.write_char('"')?;
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        f.write_char('"')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_keeps_backslashes_and_escapes_control_characters() {
        assert_eq!(
            Quoted(r"C:\nope\missing.exe").to_string(),
            r#""C:\nope\missing.exe""#
        );
        assert_eq!(Quoted(r"CORP\alice").to_string(), r#""CORP\alice""#);
        assert_eq!(Quoted("say \"hi\"").to_string(), r#""say "hi"""#);
        assert_eq!(Quoted("a\nb\t\0\x1b").to_string(), r#""a\nb\t\u{0}\u{1b}""#);
        assert_eq!(Quoted("héllo ✓").to_string(), "\"héllo ✓\"");
    }
}
