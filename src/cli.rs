//! The command line: WinInetd 0.7's flags and the new ones.
//!
//! The original's flags keep their names and meaning (`--install`,
//! `--remove`, `--debug`, `--cfgfile`, `--timeout`, `--linger-timeout`);
//! unlike the original, an unknown flag or a bad value is an error.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};

use crate::config::{ServiceDefaults, StdioMode, bounds};
use crate::platform;

/// An inetd-style super-server: runs a program for each TCP connection, with
/// the connection as its standard input, output and error.
//
// The flags whose meaning differs by OS get their help from
// `platform::help` (see `Cli::command_for_os`); their doc comments here
// are the Unix wording.
#[derive(Debug, Parser)]
#[command(name = "wininetd", version, about, max_term_width = 100)]
#[command(group(clap::ArgGroup::new("install_or_remove").args(["install", "remove"])))]
pub struct Cli {
    /// Config file [default: /etc/wininetd.conf]
    #[arg(long, value_name = "FILE")]
    pub cfgfile: Option<PathBuf>,

    /// Send and receive timeout on each connection, in seconds (0: none) [default: none]
    #[arg(long, value_name = "NSECS", value_parser = clap::value_parser!(u32).range(flag_range(bounds::TIMEOUT_SECS)))]
    pub timeout: Option<u32>,

    /// How long closing a connection may wait to send what is left, in seconds (0: do not linger) [default: 60]
    #[arg(long, value_name = "NSECS", value_parser = clap::value_parser!(u16).range(flag_range(bounds::LINGER_SECS)))]
    pub linger_timeout: Option<u16>,

    /// At most this many sessions at once; more connections wait [default: 1024]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(flag_range(bounds::SESSIONS)))]
    pub max_sessions: Option<u32>,

    /// On stop, how long sessions get after SIGTERM before SIGKILL, in seconds [default: 5]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(flag_range(bounds::SHUTDOWN_GRACE_SECS)))]
    pub shutdown_grace: Option<u32>,

    /// How a program's stdin, stdout and stderr reach the connection: the socket itself, or pipes that wininetd relays [default: socket]
    #[arg(long, value_name = "MODE", value_enum)]
    pub stdio: Option<StdioMode>,

    /// Run in the foreground and log to the console
    #[arg(long)]
    pub debug: bool,

    /// Check the config file (FILE, else --cfgfile's, else the default), print every problem, and exit (0: clean, 1: not)
    #[arg(
        long,
        value_name = "FILE",
        num_args = 0..=1,
        conflicts_with_all = ["install", "remove"]
    )]
    pub check: Option<Option<PathBuf>>,

    /// Write the daemon's process ID to FILE, removed at stop; --reload signals the process it names [default as root without --debug: /run/wininetd.pid]
    #[arg(long, value_name = "FILE")]
    pub pidfile: Option<PathBuf>,

    /// Install wininetd as a system service that runs with the other parameters given, once its config passes --check
    #[arg(long, conflicts_with_all = ["remove", "debug"])]
    pub install: bool,

    /// With --install: install even if the config has errors
    #[arg(long, requires = "install")]
    pub force: bool,

    /// With --install on Windows: start the service at boot
    #[arg(long, requires = "install")]
    pub auto_start: bool,

    /// With --install on Windows: start the service on demand
    #[arg(long, requires = "install", conflicts_with = "auto_start")]
    pub demand_start: bool,

    /// On Windows: also send each session's start and end to the Event Log
    #[arg(long)]
    pub log_sessions: bool,

    /// Remove the installed system service
    #[arg(long, conflicts_with = "debug")]
    pub remove: bool,

    /// Check the running daemon's config, then ask it to reload it
    #[arg(long, conflicts_with_all = ["install", "remove", "check", "debug"])]
    pub reload: bool,

    /// With --install/--remove: a directory that prefixes every path written
    #[arg(long, value_name = "DIR", requires = "install_or_remove")]
    pub root: Option<PathBuf>,
}

pub use crate::platform::StartType;

/// What the daemon runs with, from the command line, every default applied.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config_path: PathBuf,
    /// `--max-sessions` if given: it wins over the config's `max_sessions`.
    pub max_sessions: Option<usize>,
    pub shutdown_grace: Duration,
    /// What a service gets for the options it does not set.
    pub service_defaults: ServiceDefaults,
    /// The pid file to write while the daemon runs: `--pidfile`, else the
    /// OS's default for a daemon that is not in the foreground.
    pub pidfile: Option<PathBuf>,
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
/// A bound of `config::bounds` as clap takes it: the flags share the
/// config keys' ranges.
fn flag_range(range: std::ops::RangeInclusive<u64>) -> std::ops::RangeInclusive<i64> {
    let wide = |n: u64| i64::try_from(n).expect("every bound fits an i64");
    wide(*range.start())..=wide(*range.end())
}

pub const DEFAULT_MAX_SESSIONS: u32 = 1024;
pub use crate::platform::DEFAULT_SHUTDOWN_GRACE_SECS;

/// The flags that take a path: a `/?` after one of them is its value, not a
/// request for help.
const PATH_FLAGS: [&str; 4] = ["--cfgfile", "--check", "--pidfile", "--root"];

impl Cli {
    /// Parses the process's arguments. `/?` anywhere a flag may be prints
    /// the help, as Windows tools do; a bad command line prints the error
    /// and exits 2.
    pub fn from_env() -> Self {
        let args: Vec<OsString> = std::env::args_os().collect();
        if asks_for_help(&args) {
            let _ = Self::command_for_os().print_help();
            std::process::exit(0);
        }
        match Self::try_parse_for_os(args) {
            Ok(cli) => cli,
            Err(e) => e.exit(),
        }
    }

    /// [`Cli::from_env`] on `args` (the program name first), without
    /// exiting.
    pub fn try_parse_for_os<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut command = Self::command_for_os();
        let matches = command.try_get_matches_from_mut(args)?;
        let cli = Self::from_arg_matches(&matches)?;
        cli.check_paths()
            .map_err(|message| command.error(clap::error::ErrorKind::ArgumentConflict, message))?;
        Ok(cli)
    }

    /// The command with this OS's help for the flags whose meaning differs
    /// (the default config path, what a stop does, how a reload reaches the
    /// daemon, the Windows-only flags).
    pub fn command_for_os() -> clap::Command {
        use platform::help;
        Self::command()
            .mut_arg("cfgfile", |a| a.help(help::CFGFILE))
            .mut_arg("shutdown_grace", |a| a.help(help::SHUTDOWN_GRACE))
            .mut_arg("pidfile", |a| a.help(help::PIDFILE))
            .mut_arg("reload", |a| a.help(help::RELOAD))
            .mut_arg("auto_start", |a| a.help(help::AUTO_START))
            .mut_arg("demand_start", |a| a.help(help::DEMAND_START))
            .mut_arg("log_sessions", |a| a.help(help::LOG_SESSIONS))
    }

    /// Prints this OS's help on stdout.
    pub fn print_help() {
        let _ = Self::command_for_os().print_help();
    }

    /// `--check FILE` and `--cfgfile FILE` name the same file when both are
    /// given (`wininetd --check a.conf --cfgfile b.conf` would check one
    /// and leave the reader guessing which).
    fn check_paths(&self) -> Result<(), String> {
        let (Some(Some(checked)), Some(cfgfile)) = (&self.check, &self.cfgfile) else {
            return Ok(());
        };
        let same = checked == cfgfile
            || matches!(
                (checked.canonicalize(), cfgfile.canonicalize()),
                (Ok(a), Ok(b)) if a == b
            );
        if same {
            Ok(())
        } else {
            Err(format!(
                "--check {} and --cfgfile {} name different files: give one of them",
                checked.display(),
                cfgfile.display()
            ))
        }
    }

    /// The config file given on the command line (`--check FILE` or
    /// `--cfgfile FILE`), if any.
    pub fn given_config(&self) -> Option<&Path> {
        match &self.check {
            Some(Some(file)) => Some(file),
            _ => self.cfgfile.as_deref(),
        }
    }

    /// `--check`, with or without a file.
    pub fn checks(&self) -> bool {
        self.check.is_some()
    }

    /// How `--install` should set the service's start type; `None` keeps
    /// an installed service's (a new one starts on demand).
    pub fn start_type(&self) -> Option<StartType> {
        if self.auto_start {
            Some(StartType::Auto)
        } else if self.demand_start {
            Some(StartType::Demand)
        } else {
            None
        }
    }

    pub fn settings(&self) -> Settings {
        let secs = |s: u64| Duration::from_secs(s);
        let foreground = self.debug || self.checks();
        Settings {
            config_path: self
                .given_config()
                .map_or_else(platform::default_config_path, Path::to_owned),
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
            pidfile: self
                .pidfile
                .clone()
                .or_else(|| (!foreground).then(platform::default_pidfile).flatten()),
        }
    }

    /// The daemon parameters given explicitly, as they should be stored in an
    /// installed service so that they persist (the original kept the
    /// parameters after `--install` as the service's parameters). Relative
    /// paths are made absolute against `cwd`, since a service does not
    /// start where `--install` ran.
    pub fn service_args(&self, cwd: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut path = |flag: &str, value: Option<&Path>| {
            if let Some(value) = value {
                args.push(flag.into());
                args.push(cwd.join(value).into_os_string());
            }
        };
        path("--cfgfile", self.cfgfile.as_deref());
        path("--pidfile", self.pidfile.as_deref());
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
        if self.log_sessions {
            args.push("--log-sessions".into());
        }
        args
    }
}

/// Whether `args` (the program name first) hold `/?` where a flag may be.
fn asks_for_help(args: &[OsString]) -> bool {
    args.iter()
        .enumerate()
        .skip(1)
        .any(|(i, arg)| arg == "/?" && !PATH_FLAGS.iter().any(|flag| args[i - 1] == *flag))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_for_os(std::iter::once("wininetd").chain(args.iter().copied()))
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
            &["--force"],
            &["--demand-start"],
            &["--install", "--auto-start", "--demand-start"],
            &["--check", "a.conf", "--install"],
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

    /// Regression test: `wininetd --check examples/wininetd.toml`, as the
    /// example's own comment says, was "unexpected argument".
    #[test]
    fn check_takes_an_optional_file() {
        let cli = parse(&["--check", "examples/wininetd.toml"]).expect("valid");
        assert!(cli.checks());
        assert_eq!(
            cli.settings().config_path,
            Path::new("examples/wininetd.toml")
        );
        let cli = parse(&["--check=x.conf"]).expect("valid");
        assert_eq!(cli.settings().config_path, Path::new("x.conf"));
        // Without a file: --cfgfile's, else the default.
        let cli = parse(&["--check", "--cfgfile", "y.conf"]).expect("valid");
        assert!(cli.checks());
        assert_eq!(cli.settings().config_path, Path::new("y.conf"));
        let cli = parse(&["--cfgfile", "y.conf", "--check"]).expect("valid");
        assert_eq!(cli.settings().config_path, Path::new("y.conf"));
        let cli = parse(&["--check"]).expect("valid");
        assert_eq!(cli.settings().config_path, platform::default_config_path());
        assert!(!parse(&[]).expect("valid").checks());
    }

    #[test]
    fn check_and_cfgfile_must_agree() {
        let cli = parse(&["--check", "same.conf", "--cfgfile", "same.conf"]).expect("valid");
        assert_eq!(cli.given_config(), Some(Path::new("same.conf")));
        let err = parse(&["--check", "a.conf", "--cfgfile", "b.conf"]).expect_err("conflict");
        assert_eq!(err.exit_code(), 2);
        let text = err.to_string();
        assert!(
            text.contains("a.conf") && text.contains("b.conf") && text.contains("different"),
            "{text}"
        );
    }

    #[test]
    fn a_foreground_daemon_writes_a_pid_file_only_when_asked() {
        for args in [&["--debug"][..], &["--check"]] {
            assert_eq!(parse(args).expect("valid").settings().pidfile, None);
        }
        let s = parse(&["--debug", "--pidfile", "/tmp/w.pid"])
            .expect("valid")
            .settings();
        assert_eq!(s.pidfile.as_deref(), Some(Path::new("/tmp/w.pid")));
        assert_eq!(
            parse(&[]).expect("valid").settings().pidfile,
            platform::default_pidfile()
        );
    }

    #[test]
    fn service_args_keep_paths_absolute_and_the_log_setting() {
        let cli = parse(&["--install", "--pidfile", "w.pid", "--log-sessions"]).expect("valid");
        let expected: Vec<OsString> = vec![
            "--pidfile".into(),
            Path::new("/srv").join("w.pid").into_os_string(),
            "--log-sessions".into(),
        ];
        assert_eq!(cli.service_args(Path::new("/srv")), expected);
    }

    #[test]
    fn start_type_is_kept_unless_given() {
        let start = |args: &[&str]| parse(args).expect("valid").start_type();
        assert_eq!(start(&["--install"]), None);
        assert_eq!(start(&["--install", "--auto-start"]), Some(StartType::Auto));
        assert_eq!(
            start(&["--install", "--demand-start"]),
            Some(StartType::Demand)
        );
    }

    #[test]
    fn slash_question_mark_asks_for_help() {
        let args = |a: &[&str]| -> Vec<OsString> {
            std::iter::once("wininetd")
                .chain(a.iter().copied())
                .map(OsString::from)
                .collect()
        };
        assert!(asks_for_help(&args(&["/?"])));
        assert!(asks_for_help(&args(&["--install", "/?"])));
        assert!(!asks_for_help(&args(&[])));
        assert!(!asks_for_help(&args(&["--help"])));
        // A path that happens to be `/?` is a path.
        assert!(!asks_for_help(&args(&["--cfgfile", "/?"])));
    }

    /// The help names this OS's default config and says what a stop and a
    /// reload do here, in this OS's words.
    #[test]
    fn help_is_worded_for_this_os() {
        let help = Cli::command_for_os().render_long_help().to_string();
        for text in [
            platform::help::CFGFILE,
            platform::help::SHUTDOWN_GRACE,
            platform::help::RELOAD,
            platform::help::PIDFILE,
        ] {
            let start: String = text
                .split_whitespace()
                .take(4)
                .collect::<Vec<_>>()
                .join(" ");
            assert!(
                help.split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .contains(&start),
                "{start:?} not in\n{help}"
            );
        }
        assert!(help.contains("--check [<FILE>]"), "{help}");
    }
}
