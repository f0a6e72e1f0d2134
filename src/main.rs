//! The `wininetd` binary: parse the command line, pick what to do, report
//! errors once, map them to an exit code. Everything else is in the library.

use std::process::ExitCode;

use wininetd::cli::Cli;
use wininetd::config::{self, Severity};
use wininetd::{Error, logging, platform};

fn main() -> ExitCode {
    let cli = Cli::from_env();
    match real_main(&cli) {
        Ok(()) => ExitCode::SUCCESS,
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
    let settings = cli.settings();
    let target = logging::target(cli.debug || cli.check);
    logging::init(target);

    let loaded = config::load(&settings.config_path);
    for diagnostic in &loaded.diagnostics {
        eprintln!("{diagnostic}");
    }
    let Some(config) = loaded.config else {
        return Err(Error::Config {
            file: settings.config_path.display().to_string(),
            count: loaded.error_count(),
        });
    };
    if cli.check {
        let warnings = loaded
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .count();
        println!(
            "{}: ok, {} service(s), {warnings} warning(s)",
            config.path.display(),
            config.services.len()
        );
        return Ok(());
    }
    wininetd::run(config, settings, || {
        let signal = platform::shutdown_signal();
        async move {
            match signal {
                Ok(signal) => signal.await,
                Err(e) => {
                    tracing::error!(error = %e, "cannot wait for stop signals; stopping");
                    "error"
                }
            }
        }
    })
}

fn install_or_remove(cli: &Cli) -> Result<(), Error> {
    let root = cli.root.clone().unwrap_or_else(|| "/".into());
    let lines = if cli.install {
        let cwd = std::env::current_dir().map_err(Error::CurrentExe)?;
        let spec = platform::InstallSpec {
            root,
            exe: std::env::current_exe().map_err(Error::CurrentExe)?,
            args: cli.service_args(&cwd),
        };
        platform::install(&spec)?
    } else {
        platform::remove(&root)?
    };
    for line in lines {
        println!("{line}");
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
    eprintln!("{message}");
}
