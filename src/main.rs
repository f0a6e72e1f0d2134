//! The `wininetd` binary: parse the command line, pick what to do, report
//! errors once, map them to an exit code. Everything else is in the library.

use std::ffi::OsString;
use std::fmt::Display;
use std::io::{self, IsTerminal as _, Write};
use std::path::Path;
use std::process::ExitCode;

use wininetd::cli::{Cli, Settings};
use wininetd::config::StdioMode;
use wininetd::config::{self, Config, Severity};
use wininetd::logging::Target;
use wininetd::{Error, logging, platform};

fn main() -> ExitCode {
    let cli = Cli::from_env();
    match real_main(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::NotAService) => {
            // Started from a console with no flag: print the usage, as
            // WinInetd did.
            Cli::print_help();
            ExitCode::from(2)
        }
        Err(e) => {
            report(&e);
            if let Some(hint) = hint(&cli, &e) {
                err(hint);
            }
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}

fn real_main(cli: &Cli) -> Result<(), Error> {
    platform::init_process();
    platform::set_log_sessions(cli.log_sessions);
    if cli.install || cli.remove {
        return install_or_remove(cli);
    }
    if cli.reload {
        return reload(cli);
    }
    let settings = cli.settings();
    let target = logging::target(cli.debug || cli.checks() || on_a_terminal());
    logging::init(target, config::log_format_of(&settings.config_path));

    if cli.checks() {
        let (config, warnings) = load(&settings, target)?;
        out(summary(&config, warnings));
        return Ok(());
    }
    let pidfile_given = cli.pidfile.is_some();
    let daemon: platform::Daemon = Box::new(move |stop| {
        let (config, _warnings) = load(&settings, target)?;
        let _pidfile = write_pidfile(&settings, pidfile_given)?;
        let path = settings.config_path.clone();
        let defaults = settings.service_defaults.clone();
        let loader = Box::new(move || config::load(&path, &defaults));
        wininetd::run(config, settings, stop, loader)
    });
    if cli.debug {
        daemon(platform::console_stop())
    } else {
        platform::run_as_service(daemon)
    }
}

/// A daemon run by hand on a terminal, where no system log takes its lines
/// (a container has no `/dev/log`): its lines go to the terminal as in
/// `--debug`, not with the journal's `<3>` priority prefixes, which only the
/// journal reads.
fn on_a_terminal() -> bool {
    io::stderr().is_terminal() && logging::target(false) == Target::Journal
}

/// Writes the pid file, if there is one to write. One given with
/// `--pidfile` must be written; the default one (`/run/wininetd.pid` as
/// root) only gets a warning when it cannot be. The file is removed when
/// the returned value is dropped, after the daemon has stopped.
fn write_pidfile(settings: &Settings, given: bool) -> Result<Option<platform::PidFile>, Error> {
    let Some(path) = &settings.pidfile else {
        return Ok(None);
    };
    match platform::PidFile::create(path) {
        Ok(file) => Ok(Some(file)),
        Err(source) if given => Err(Error::PidFile {
            path: path.clone(),
            source,
        }),
        Err(e) => {
            tracing::warn!(
                "cannot write the pid file {}: {e}; `wininetd --reload` will not find this daemon",
                path.display()
            );
            Ok(None)
        }
    }
}

/// Loads the config and reports its diagnostics: plain lines on stderr, and
/// log events too when logging goes to the system log (a service's stderr
/// may go nowhere). Returns the config and its number of warnings.
fn load(settings: &Settings, target: Target) -> Result<(Config, usize), Error> {
    let loaded = config::load(&settings.config_path, &settings.service_defaults);
    for diagnostic in &loaded.diagnostics {
        if target != Target::Journal {
            err(diagnostic);
        }
        match (target, diagnostic.severity) {
            (Target::Console, _) => {}
            (_, Severity::Error) => tracing::error!("{diagnostic}"),
            (_, Severity::Warning) => tracing::warn!("{diagnostic}"),
        }
    }
    let warnings = loaded.diagnostics.len() - loaded.error_count();
    match loaded.config {
        Some(config) => Ok((config, warnings)),
        None => Err(Error::Config {
            file: settings.config_path.display().to_string(),
            count: loaded.error_count(),
        }),
    }
}

/// `FILE: ok, N service(s), W warning(s)`, what `--check` prints.
fn summary(config: &Config, warnings: usize) -> String {
    format!(
        "{}: ok, {} service(s), {warnings} warning(s), {}",
        config.path.display(),
        config.services.len(),
        config.encoding
    )
}

/// `--install` (once the config passes `--check`, unless `--force`) or
/// `--remove`.
fn install_or_remove(cli: &Cli) -> Result<(), Error> {
    let root = cli.root.clone().unwrap_or_else(|| "/".into());
    if cli.remove {
        for line in platform::remove(&root)? {
            out(line);
        }
        return Ok(());
    }
    let settings = cli.settings();
    let socket_timeouts = match load(&settings, Target::Console) {
        Ok((config, warnings)) => {
            out(summary(&config, warnings));
            config
                .services
                .iter()
                .filter(|s| s.stdio == StdioMode::Socket && s.socket.timeout.is_some())
                .map(|s| s.name.clone())
                .collect()
        }
        Err(Error::Config { file, count }) if cli.force => {
            err(format_args!(
                "wininetd: {count} error(s) in {file}: installing anyway (--force)"
            ));
            Vec::new()
        }
        Err(Error::Config { file, count }) => return Err(Error::InstallRefused { file, count }),
        Err(e) => return Err(e),
    };
    let cwd = std::env::current_dir().map_err(Error::CurrentExe)?;
    let spec = platform::InstallSpec {
        root,
        exe: std::env::current_exe().map_err(Error::CurrentExe)?,
        args: cli.service_args(&cwd),
        start: cli.start_type(),
        socket_timeouts,
    };
    for line in platform::install(&spec)? {
        out(line);
    }
    Ok(())
}

/// `--reload`: finds the running daemon, checks the config it will read
/// (with its own parameters) as `--check` would, and asks it to reload
/// only if that config has no error.
fn reload(cli: &Cli) -> Result<(), Error> {
    let own = cli.settings();
    let mut check = |args: Option<&[OsString]>, cwd: Option<&Path>| -> Result<(), Error> {
        let settings = match args.map(|args| daemon_settings(args, cwd)) {
            Some(Ok(settings)) => settings,
            Some(Err(e)) => {
                err(format_args!(
                    "wininetd: note: cannot read the running daemon's parameters ({}); \
                     checking {} instead",
                    e.kind(),
                    own.config_path.display()
                ));
                own.clone()
            }
            None => own.clone(),
        };
        if let Some(given) = cli.given_config() {
            if !same_file(given, &settings.config_path) {
                return Err(Error::ReloadOtherConfig {
                    given: given.to_owned(),
                    running: settings.config_path,
                });
            }
        }
        match load(&settings, Target::Console) {
            Ok((config, warnings)) => {
                out(summary(&config, warnings));
                Ok(())
            }
            Err(Error::Config { file, count }) => Err(Error::ReloadRefused { file, count }),
            Err(e) => Err(e),
        }
    };
    for line in platform::request_reload(cli.pidfile.as_deref(), &mut check)? {
        out(line);
    }
    Ok(())
}

/// The settings of a running daemon started with `args` (without the
/// program name) in the directory `cwd`.
fn daemon_settings(args: &[OsString], cwd: Option<&Path>) -> Result<Settings, clap::Error> {
    let program = std::iter::once(OsString::from("wininetd"));
    let cli = Cli::try_parse_for_os(program.chain(args.iter().cloned()))?;
    let mut settings = cli.settings();
    if let Some(cwd) = cwd {
        settings.config_path = cwd.join(&settings.config_path);
    }
    Ok(settings)
}

/// Whether `a` and `b` name the same file: the same path, or the same file
/// once resolved.
fn same_file(a: &Path, b: &Path) -> bool {
    a == b
        || matches!(
            (a.canonicalize(), b.canonicalize()),
            (Ok(a), Ok(b)) if a == b
        )
}

/// Prints an error and its causes on one line.
fn report(error: &Error) {
    let mut message = format!("wininetd: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    err(message);
}

/// What to try when the default config could not be used: a newcomer who
/// runs `wininetd` with no argument learns where it looked and what the
/// usual next steps are.
fn hint(cli: &Cli, error: &Error) -> Option<String> {
    let config_failed = matches!(
        error,
        Error::Config { .. } | Error::InstallRefused { .. } | Error::ReloadRefused { .. }
    );
    if !config_failed || cli.given_config().is_some() || cli.reload {
        return None;
    }
    let mut hint = format!(
        "wininetd: hint: with no --cfgfile it reads {}: give a config with --cfgfile FILE",
        platform::default_config_path().display()
    );
    if !cli.debug && !cli.checks() && !cli.install {
        hint.push_str("; --debug runs it in the foreground, logging to the console");
    }
    hint.push_str("; --help lists every flag");
    Some(hint)
}

/// Prints a line on stdout. A reader that has gone (`wininetd --check |
/// head -1`) loses the line, where `println!` would panic (and abort).
fn out(line: impl Display) {
    let _ = writeln!(io::stdout().lock(), "{line}");
}

/// Prints a line on stderr, as [`out`] does on stdout.
fn err(line: impl Display) {
    let _ = writeln!(io::stderr().lock(), "{line}");
}
