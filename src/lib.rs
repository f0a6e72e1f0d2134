//! wininetd: an inetd-style super-server.
//!
//! A config file maps ports to command lines. For each connection the
//! server starts the port's program with the connection as its standard
//! input, output and error. A connection's life has four stages, each a
//! module, and the connection walks them on a task of its own
//! ([`connection`]):
//!
//! ```text
//! listen    →  admit       →  start          →  supervise
//! (bind,       (access,       (what serves      (wait for the exit or
//!  accept,      rates,         the session:      a deadline, drain the
//!  back off)    limits:        a program with    relay, log, give the
//!               a permit)      the socket,       slots back, end the
//!                              behind a relay,   whole tree on stop)
//!                              or a built-in)
//! ```
//!
//! Around them: [`config`] (parse, then resolve), [`server`] (wires the
//! stages: the accept tasks, reload, the stop), [`relay`] (the daemon
//! between a connection and a program's pipes), [`builtin`] (the services
//! the daemon serves itself), [`datagram`] (the built-ins over UDP, a
//! datagram at a time), [`wait`] (wait services, whose program takes the
//! socket itself), [`stderr_log`],
//! [`logging`], [`cli`], and [`platform`], the only place where operating
//! systems differ.

pub mod admit;
pub mod builtin;
pub mod cli;
pub mod config;
pub mod connection;
pub mod datagram;
pub mod error;
pub mod listen;
pub mod logging;
pub mod peer;
#[allow(unsafe_code)]
pub mod platform;
pub mod proxy;
pub mod relay;
pub mod secret;
pub mod server;
pub mod session;
pub mod start;
pub mod stderr_log;
pub mod supervise;
pub mod tls;
pub mod wait;

use std::future::Future;

pub use error::Error;

/// Runs the server for `config` until the future that `stop` returns
/// resolves (with the name of what asked for the stop), on a single-threaded
/// runtime: the daemon's own work is small next to starting processes, and
/// one thread keeps it lean. `stop` is called inside the runtime before any
/// port is bound, so it can register signal handlers there; so are the
/// reload requests, which reload the config with `loader`.
pub fn run<F>(
    config: config::Config,
    settings: cli::Settings,
    stop: impl FnOnce() -> F,
    loader: server::Loader,
) -> Result<(), Error>
where
    F: Future<Output = &'static str>,
{
    // Programs are started on the blocking pool (see `server`): two threads
    // per core keep every core busy with execs; more would only queue.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(2 * cores)
        .build()
        .map_err(Error::Runtime)?;
    let result = runtime.block_on(async {
        let stop = stop();
        let reload = match platform::Reload::listen() {
            Ok(reload) => Some(reload),
            Err(e) => {
                tracing::warn!(error = %e, "cannot wait for reload requests; reload is off");
                None
            }
        };
        // From here on no log write may block serving (see `logging`);
        // the guard writes what is queued when serving ends. Only now, as
        // `stop` and `reload` have blocked their signals on this thread:
        // the writer thread, started with the first line, inherits the
        // mask, so it cannot take a signal meant for the runtime's
        // signalfd.
        let _log = logging::Background::start();
        server::serve(config, settings, stop, reload, loader).await
    });
    // Every session has ended; a reload may still be reading its file on
    // the blocking pool (a stuck file system): do not wait for it.
    runtime.shutdown_background();
    result
}
