//! The top-level error and the exit codes it maps to.
//!
//! Exit codes: 0 success; 1 the config is invalid or the daemon could not
//! start or install; 2 the command line is wrong (clap exits with it).

use std::io;

use crate::platform;

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
    #[error(transparent)]
    Install(#[from] platform::InstallError),
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
