//! The `wininetd` binary: parse the command line, pick what to do, report
//! errors once, map them to an exit code. Everything else is in the library.

use std::fmt::Display;
use std::io::{self, Write};
use std::process::ExitCode;

use wininetd::cli::{Cli, Settings};
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
            let _ = <Cli as clap::CommandFactory>::command().print_help();
            ExitCode::from(2)
        }
        Err(e) => {
            report(&e);
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}

fn real_main(cli: &Cli) -> Result<(), Error> {
    platform::init_process();
    if cli.install || cli.remove {
        return install_or_remove(cli);
    }
    if cli.reload {
        for line in platform::request_reload()? {
            out(line);
        }
        return Ok(());
    }
    let settings = cli.settings();
    let target = logging::target(cli.debug || cli.check);
    logging::init(target, config::log_format_of(&settings.config_path));

    if cli.check {
        let (config, warnings) = load(&settings, target)?;
        out(format_args!(
            "{}: ok, {} service(s), {warnings} warning(s), {}",
            config.path.display(),
            config.services.len(),
            config.encoding
        ));
        return Ok(());
    }
    let daemon: platform::Daemon = Box::new(move |stop| {
        let (config, _warnings) = load(&settings, target)?;
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

fn install_or_remove(cli: &Cli) -> Result<(), Error> {
    let root = cli.root.clone().unwrap_or_else(|| "/".into());
    let lines = if cli.install {
        let cwd = std::env::current_dir().map_err(Error::CurrentExe)?;
        let spec = platform::InstallSpec {
            root,
            exe: std::env::current_exe().map_err(Error::CurrentExe)?,
            args: cli.service_args(&cwd),
            auto_start: cli.auto_start,
        };
        platform::install(&spec)?
    } else {
        platform::remove(&root)?
    };
    for line in lines {
        out(line);
    }
    Ok(())
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

/// Prints a line on stdout. A reader that has gone (`wininetd --check |
/// head -1`) loses the line, where `println!` would panic (and abort).
fn out(line: impl Display) {
    let _ = writeln!(io::stdout().lock(), "{line}");
}

/// Prints a line on stderr, as [`out`] does on stdout.
fn err(line: impl Display) {
    let _ = writeln!(io::stderr().lock(), "{line}");
}
