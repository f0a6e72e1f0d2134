//! The command line: WinInetd 0.7's flags and the new ones.
//!
//! The original's flags keep their names and meaning (`--install`,
//! `--remove`, `--debug`, `--cfgfile`, `--timeout`, `--linger-timeout`);
//! unlike the original, an unknown flag or a bad value is an error.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

use crate::config::ServiceDefaults;
use crate::platform;

/// An inetd-style super-server: runs a program for each TCP connection, with
/// the connection as its standard input, output and error.
#[derive(Debug, Parser)]
#[command(name = "wininetd", version, about, max_term_width = 100)]
#[command(group(clap::ArgGroup::new("install_or_remove").args(["install", "remove"])))]
pub struct Cli {
    /// Config file [default: /etc/wininetd.conf; on Windows %WINDIR%\wininetd.conf]
    #[arg(long, value_name = "FILE")]
    pub cfgfile: Option<PathBuf>,

    /// Send and receive timeout on each connection, in seconds (0: none) [default: none]
    #[arg(long, value_name = "NSECS", value_parser = clap::value_parser!(u32))]
    pub timeout: Option<u32>,

    /// How long closing a connection may wait to send what is left, in seconds (0: do not linger) [default: 60]
    #[arg(long, value_name = "NSECS", value_parser = clap::value_parser!(u16))]
    pub linger_timeout: Option<u16>,

    /// At most this many sessions at once; more connections wait [default: 1024]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_sessions: Option<u32>,

    /// On stop, how long sessions get after SIGTERM before SIGKILL, in seconds [default: 5]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(0..=3600))]
    pub shutdown_grace: Option<u32>,

    /// How a program's stdin, stdout and stderr reach the connection: the socket itself, or pipes that wininetd relays [default: socket]
    #[arg(long, value_name = "MODE", value_enum)]
    pub stdio: Option<StdioMode>,

    /// Run in the foreground and log to the console
    #[arg(long)]
    pub debug: bool,

    /// Check the config file, print every problem, and exit (0: clean, 1: not)
    #[arg(long, conflicts_with_all = ["install", "remove"])]
    pub check: bool,

    /// Install wininetd as a system service that runs with the other parameters given
    #[arg(long, conflicts_with_all = ["remove", "debug"])]
    pub install: bool,

    /// With --install on Windows: start the service at boot (default: on demand, as WinInetd)
    #[arg(long, requires = "install")]
    pub auto_start: bool,

    /// Remove the installed system service
    #[arg(long, conflicts_with = "debug")]
    pub remove: bool,

    /// Ask the installed, running service to reload its config (Linux: systemctl reload; Windows: the service manager's ParamChange)
    #[arg(long, conflicts_with_all = ["install", "remove", "check", "debug"])]
    pub reload: bool,

    /// With --install/--remove: a directory that prefixes every path written
    #[arg(long, value_name = "DIR", requires = "install_or_remove")]
    pub root: Option<PathBuf>,
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

/// What the daemon runs with, from the command line, every default applied.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config_path: PathBuf,
    /// `--max-sessions` if given: it wins over the config's `max_sessions`.
    pub max_sessions: Option<usize>,
    pub shutdown_grace: Duration,
    /// What a service gets for the options it does not set.
    pub service_defaults: ServiceDefaults,
}

impl Settings {
    /// The global session cap: the command line's, else the config's, else
    /// the default.
    pub fn max_sessions(&self, config: Option<usize>) -> usize {
        self.max_sessions
            .or(config)
            .unwrap_or(DEFAULT_MAX_SESSIONS as usize)
    }
}

pub const DEFAULT_LINGER_SECS: u16 = 60;
pub const DEFAULT_MAX_SESSIONS: u32 = 1024;
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u32 = 5;

impl Cli {
    /// Parses the process's arguments; prints the error and exits 2 on bad input.
    pub fn from_env() -> Self {
        Self::parse()
    }

    pub fn settings(&self) -> Settings {
        let secs = |s: u64| Duration::from_secs(s);
        Settings {
            config_path: self
                .cfgfile
                .clone()
                .unwrap_or_else(platform::default_config_path),
            max_sessions: self.max_sessions.map(|n| n as usize),
            shutdown_grace: secs(
                self.shutdown_grace
                    .unwrap_or(DEFAULT_SHUTDOWN_GRACE_SECS)
                    .into(),
            ),
            service_defaults: ServiceDefaults {
                timeout: self.timeout.filter(|&t| t > 0).map(|t| secs(t.into())),
                linger: Some(self.linger_timeout.unwrap_or(DEFAULT_LINGER_SECS))
                    .filter(|&t| t > 0)
                    .map(|t| secs(t.into())),
                stdio: self.stdio.unwrap_or_default(),
            },
        }
    }

    /// The daemon parameters given explicitly, as they should be stored in an
    /// installed service so that they persist (the original kept the
    /// parameters after `--install` as the service's parameters). A relative
    /// config path is made absolute against `cwd`, since a service does not
    /// start where `--install` ran.
    pub fn service_args(&self, cwd: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        if let Some(file) = &self.cfgfile {
            args.push("--cfgfile".into());
            args.push(cwd.join(file).into_os_string());
        }
        let mut number = |flag: &str, value: Option<u32>| {
            if let Some(value) = value {
                args.push(flag.into());
                args.push(value.to_string().into());
            }
        };
        number("--timeout", self.timeout);
        number("--linger-timeout", self.linger_timeout.map(u32::from));
        number("--max-sessions", self.max_sessions);
        number("--shutdown-grace", self.shutdown_grace);
        if let Some(mode) = self.stdio {
            args.push("--stdio".into());
            args.push(
                clap::ValueEnum::to_possible_value(&mode)
                    .expect("no variant is skipped")
                    .get_name()
                    .into(),
            );
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("wininetd").chain(args.iter().copied()))
    }

    #[test]
    fn defaults() {
        let s = parse(&[]).expect("valid").settings();
        assert_eq!(s.service_defaults.timeout, None);
        assert_eq!(s.service_defaults.linger, Some(Duration::from_secs(60)));
        assert_eq!(s.max_sessions(None), 1024);
        assert_eq!(s.max_sessions(Some(7)), 7);
        assert_eq!(s.shutdown_grace, Duration::from_secs(5));
    }

    #[test]
    fn zero_means_off() {
        let s = parse(&[
            "--timeout",
            "0",
            "--linger-timeout",
            "0",
            "--max-sessions",
            "3",
        ])
        .expect("valid")
        .settings();
        assert_eq!(s.service_defaults.timeout, None);
        assert_eq!(s.service_defaults.linger, None);
        assert_eq!(s.max_sessions(Some(7)), 3);
    }

    #[test]
    fn bad_values_are_errors() {
        for args in [
            &["--timeout", "-1"][..],
            &["--timeout", "x"],
            &["--linger-timeout", "70000"],
            &["--max-sessions", "0"],
            &["--frobnicate"],
            &["--root", "/tmp"],
            &["--install", "--remove"],
        ] {
            assert!(parse(args).is_err(), "{args:?} was accepted");
        }
    }

    #[test]
    fn service_args_keep_only_what_was_given() {
        let cli = parse(&[
            "--install",
            "--root",
            "/r",
            "--cfgfile",
            "x.conf",
            "--timeout",
            "30",
            "--stdio",
            "pipe",
        ])
        .expect("valid");
        let config = Path::new("/srv").join("x.conf");
        let expected: Vec<OsString> = vec![
            "--cfgfile".into(),
            config.into_os_string(),
            "--timeout".into(),
            "30".into(),
            "--stdio".into(),
            "pipe".into(),
        ];
        assert_eq!(cli.service_args(Path::new("/srv")), expected);
    }
}
