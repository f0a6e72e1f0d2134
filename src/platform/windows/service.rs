//! Running as the Windows service `wininetd` under the service control
//! manager (SCM): a thin shell around the same daemon function the console
//! mode runs.
//!
//! The SCM starts the program, which hands its main thread to the service
//! dispatcher (StartServiceCtrlDispatcherW); the SCM then calls
//! `service_main` on a thread of its own. There the daemon runs, and its
//! status is reported as the SCM expects (SetServiceStatus, "Service
//! State Transitions"):
//!
//! ```text
//! START_PENDING ──(every port bound: notify_ready)──▶ RUNNING
//!      │                                                │ STOP / SHUTDOWN
//!      │ (the daemon failed)                            ▼
//!      │                                          STOP_PENDING (checkpoints while sessions end)
//!      ▼                                                │
//!   STOPPED (service-specific exit code)     STOPPED (exit code 0)
//! ```
//!
//! RUNNING is reported only once the ports are bound, not before (the
//! original reported it first). This module owns that state machine and the
//! stop request; it does not know what the daemon does.

use std::ffi::OsString;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::Duration;

use tokio::sync::watch;
use windows_service::define_windows_service;
use windows_service::service::{
    ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{
    self, ServiceControlHandlerResult, ServiceStatusHandle,
};
use windows_service::service_dispatcher;
use windows_sys::Win32::Foundation::ERROR_FAILED_SERVICE_CONTROLLER_CONNECT;

use super::eventlog::{Priority, SystemLog};

/// The service's name in the SCM (`net start wininetd`).
pub(super) const SERVICE_NAME: &str = "wininetd";

/// What the stop future resolves to: the name of what asked for the stop.
pub type StopFuture = Pin<Box<dyn Future<Output = &'static str> + Send>>;

/// A factory for the stop future, called inside the async runtime (see
/// `lib::run`'s `shutdown` parameter).
pub type Stop = Box<dyn FnOnce() -> StopFuture + Send>;

/// The daemon: runs until the stop future resolves, or fails to start.
pub type Daemon = Box<dyn FnOnce(Stop) -> Result<(), crate::Error> + Send>;

/// How long the SCM should wait for RUNNING: loading the config and binding
/// the ports take far less.
const START_WAIT_HINT: Duration = Duration::from_secs(30);

/// How long the SCM should wait for the next checkpoint while stopping.
/// Sessions get `--shutdown-grace` to end, which may be longer: the
/// checkpoint moves every [`STOP_PULSE`] until the daemon has returned.
const STOP_WAIT_HINT: Duration = Duration::from_secs(10);
const STOP_PULSE: Duration = Duration::from_secs(1);

/// The service to run, from `run_as_service` to `service_main` (a function
/// the SCM calls on its own thread, with no context pointer).
static PENDING: Mutex<Option<(String, Daemon)>> = Mutex::new(None);

/// What the daemon returned, from `service_main` back to `run_as_service`.
static OUTCOME: Mutex<Option<Result<(), crate::Error>>> = Mutex::new(None);

/// The status reporter, set when running under the SCM.
static STATUS: OnceLock<Status> = OnceLock::new();

/// Where the control handler sends the SCM's ParamChange (reload) requests;
/// set by [`Reload::listen`].
static RELOAD: Mutex<Option<tokio::sync::mpsc::UnboundedSender<()>>> = Mutex::new(None);

/// Requests to reload the config: the service manager's ParamChange
/// control (`sc control wininetd paramchange`, `wininetd --reload`).
#[derive(Debug)]
pub struct Reload {
    rx: tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl Reload {
    pub fn listen() -> io::Result<Self> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *lock(&RELOAD) = Some(tx);
        Ok(Self { rx })
    }

    /// The next request.
    pub async fn recv(&mut self) -> Option<()> {
        self.rx.recv().await
    }
}

/// Locks `m`, ignoring poisoning: the data is a plain slot.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `daemon` as the Windows service `wininetd`: connects to the SCM and
/// returns when the service has stopped, with what the daemon returned. If
/// the process was not started by the SCM, returns
/// [`crate::Error::NotAService`] at once without calling `daemon`.
pub fn run_as_service(daemon: Daemon) -> Result<(), crate::Error> {
    run_as_named(SERVICE_NAME, daemon)
}

/// [`run_as_service`] under another service name (the tests install this
/// test program as services of their own).
fn run_as_named(name: &str, daemon: Daemon) -> Result<(), crate::Error> {
    *lock(&PENDING) = Some((name.to_owned(), daemon));
    let dispatched = service_dispatcher::start(name, ffi_service_main);
    // Not taken if the SCM never called service_main: drop it unrun.
    lock(&PENDING).take();
    match dispatched {
        Ok(()) => lock(&OUTCOME).take().unwrap_or(Ok(())),
        Err(windows_service::Error::Winapi(e))
            if e.raw_os_error() == Some(ERROR_FAILED_SERVICE_CONTROLLER_CONNECT as i32) =>
        {
            Err(crate::Error::NotAService)
        }
        Err(windows_service::Error::Winapi(e)) => Err(crate::Error::ServiceManager(e)),
        Err(other) => Err(crate::Error::ServiceManager(io::Error::new(
            io::ErrorKind::InvalidInput,
            other.to_string(),
        ))),
    }
}

/// Called by the server once every listener is bound: under the SCM,
/// reports RUNNING (accepting Stop and Shutdown); otherwise does nothing.
pub fn notify_ready() -> io::Result<()> {
    match STATUS.get() {
        Some(status) => status.running(),
        None => Ok(()),
    }
}

define_windows_service!(ffi_service_main, service_main);

/// The service's entry point, on a thread the SCM started.
fn service_main(_arguments: Vec<OsString>) {
    let Some((name, daemon)) = lock(&PENDING).take() else {
        return;
    };
    let (tx, rx) = watch::channel(None);
    let handler = move |control| match control {
        ServiceControl::Stop => request_stop(&tx, "service stop"),
        ServiceControl::Shutdown => request_stop(&tx, "system shutdown"),
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        ServiceControl::ParamChange => {
            // `sc control wininetd paramchange`: reload the config.
            if let Some(tx) = lock(&RELOAD).as_ref() {
                let _ = tx.send(());
            }
            ServiceControlHandlerResult::NoError
        }
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let handle = match service_control_handler::register(&name, handler) {
        Ok(handle) => handle,
        Err(e) => {
            // Without a status handle nothing can be reported; the SCM ends
            // the start with a timeout. Say why where an operator looks.
            let e = io_error(e);
            SystemLog::open().write(
                Priority::Error,
                &format!("cannot register with the service control manager: {e}"),
            );
            *lock(&OUTCOME) = Some(Err(crate::Error::ServiceManager(e)));
            return;
        }
    };
    let status = STATUS.get_or_init(|| Status::new(handle));
    if let Err(e) = status.start_pending() {
        tracing::warn!("cannot report START_PENDING to the service manager: {e}");
    }

    let stop: Stop = Box::new(move || {
        Box::pin(async move {
            let mut rx = rx;
            match rx.wait_for(Option::is_some).await {
                Ok(reason) => reason.expect("waited for Some"),
                // The sender lives in the handler, which the SCM keeps for
                // the life of the process.
                Err(_) => "service manager gone",
            }
        })
    });
    let result = daemon(stop);
    let exit_code = match &result {
        Ok(()) => ServiceExitCode::Win32(0),
        Err(e) => {
            tracing::error!("{}", chain(e));
            ServiceExitCode::ServiceSpecific(e.exit_code() as u32)
        }
    };
    // Before STOPPED: after it the SCM may end the process at any time.
    *lock(&OUTCOME) = Some(result);
    if let Err(e) = status.stopped(exit_code) {
        tracing::warn!("cannot report STOPPED to the service manager: {e}");
    }
}

/// The control handler's part of a stop: report STOP_PENDING, then wake the
/// daemon. Runs on the dispatcher thread, which must not block.
fn request_stop(
    tx: &watch::Sender<Option<&'static str>>,
    reason: &'static str,
) -> ServiceControlHandlerResult {
    if let Some(status) = STATUS.get() {
        status.stop_pending();
    }
    tx.send_if_modified(|current| {
        if current.is_some() {
            return false;
        }
        *current = Some(reason);
        true
    });
    ServiceControlHandlerResult::NoError
}

/// The state last reported, and the checkpoint of a pending one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    StartPending,
    Running,
    StopPending(u32),
    Stopped,
}

/// Reports the service's status; one lock orders the reports of the
/// service thread, the control handler and the stop pulse, so that nothing
/// is reported after STOPPED.
#[derive(Debug)]
struct Status {
    handle: ServiceStatusHandle,
    phase: Mutex<Phase>,
}

impl Status {
    fn new(handle: ServiceStatusHandle) -> Self {
        Self {
            handle,
            phase: Mutex::new(Phase::StartPending),
        }
    }

    fn start_pending(&self) -> io::Result<()> {
        let mut phase = lock(&self.phase);
        *phase = Phase::StartPending;
        self.report(*phase, ServiceExitCode::Win32(0))
    }

    /// START_PENDING → RUNNING; in any other phase (stopping already, or
    /// running after a reload) nothing changes.
    fn running(&self) -> io::Result<()> {
        let mut phase = lock(&self.phase);
        if *phase != Phase::StartPending {
            return Ok(());
        }
        *phase = Phase::Running;
        self.report(*phase, ServiceExitCode::Win32(0))
    }

    /// RUNNING → STOP_PENDING, with a thread that moves the checkpoint
    /// until the service has stopped.
    fn stop_pending(&'static self) {
        {
            let mut phase = lock(&self.phase);
            if matches!(*phase, Phase::StopPending(_) | Phase::Stopped) {
                return;
            }
            *phase = Phase::StopPending(1);
            let _ = self.report(*phase, ServiceExitCode::Win32(0));
        }
        let pulse = move || {
            loop {
                thread::sleep(STOP_PULSE);
                let mut phase = lock(&self.phase);
                let Phase::StopPending(checkpoint) = *phase else {
                    return;
                };
                *phase = Phase::StopPending(checkpoint + 1);
                let _ = self.report(*phase, ServiceExitCode::Win32(0));
            }
        };
        // Without the thread the stop still happens; the SCM only shows it
        // as slow.
        let _ = thread::Builder::new()
            .name("service stop pulse".into())
            .spawn(pulse);
    }

    fn stopped(&self, exit_code: ServiceExitCode) -> io::Result<()> {
        let mut phase = lock(&self.phase);
        *phase = Phase::Stopped;
        self.report(*phase, exit_code)
    }

    fn report(&self, phase: Phase, exit_code: ServiceExitCode) -> io::Result<()> {
        let (current_state, controls_accepted, checkpoint, wait_hint) = match phase {
            Phase::StartPending => (
                ServiceState::StartPending,
                ServiceControlAccept::empty(),
                1,
                START_WAIT_HINT,
            ),
            Phase::Running => (
                ServiceState::Running,
                ServiceControlAccept::STOP
                    | ServiceControlAccept::SHUTDOWN
                    | ServiceControlAccept::PARAM_CHANGE,
                0,
                Duration::ZERO,
            ),
            Phase::StopPending(checkpoint) => (
                ServiceState::StopPending,
                ServiceControlAccept::empty(),
                checkpoint,
                STOP_WAIT_HINT,
            ),
            Phase::Stopped => (
                ServiceState::Stopped,
                ServiceControlAccept::empty(),
                0,
                Duration::ZERO,
            ),
        };
        self.handle
            .set_service_status(ServiceStatus {
                service_type: ServiceType::OWN_PROCESS,
                current_state,
                controls_accepted,
                exit_code,
                checkpoint,
                wait_hint,
                process_id: None,
            })
            .map_err(io_error)
    }
}

/// The Windows error inside a windows-service error.
fn io_error(e: windows_service::Error) -> io::Error {
    match e {
        windows_service::Error::Winapi(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

/// `e` and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    use windows_service::service::ServiceAccess;
    use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
    use windows_sys::Win32::Foundation::ERROR_SERVICE_REQUEST_TIMEOUT;

    use crate::platform::windows::install::tests::{Cleanup, scm_lock, unique_name};
    use crate::platform::windows::install::{InstallSpec, install_named, remove_named};

    /// Marks the launch argument that tells [`service_entry`] it runs under
    /// the SCM: `PREFIX NAME|MODE|RESULT_FILE`.
    const ARG_PREFIX: &str = "wininetd-service-test=";

    #[test]
    fn not_started_by_the_scm() {
        // Also keeps this test from running while another one starts a
        // service: Wine's StartServiceCtrlDispatcherW takes the control pipe
        // of whatever service is starting, so this process could catch that
        // start (Windows checks the process).
        let _scm = scm_lock();
        let called = Arc::new(AtomicBool::new(false));
        let daemon: Daemon = {
            let called = Arc::clone(&called);
            Box::new(move |_stop| {
                called.store(true, Ordering::SeqCst);
                Ok(())
            })
        };
        let result = run_as_service(daemon);
        assert!(
            matches!(result, Err(crate::Error::NotAService)),
            "{result:?}"
        );
        assert!(!called.load(Ordering::SeqCst), "the daemon ran");
        assert!(lock(&PENDING).is_none(), "the daemon was not dropped");
        assert!(STATUS.get().is_none());
        notify_ready().expect("outside the SCM, notify_ready does nothing");
    }

    /// The service side of the SCM tests below; it does nothing when the
    /// test harness runs it. Run by the SCM (the tests install this test
    /// program with this test as its filter), it runs a daemon that, in mode
    /// `serve`, reports ready, waits for the stop and writes the stop's
    /// reason to RESULT_FILE (and a line `reloaded` to RESULT_FILE with
    /// the extension `reloads` for each reload request); in mode `slow`
    /// does the same but takes a while to stop; and in mode `fail` fails at
    /// once.
    #[test]
    fn service_entry() {
        let Some(job) =
            std::env::args().find_map(|a| a.strip_prefix(ARG_PREFIX).map(str::to_owned))
        else {
            return;
        };
        let mut parts = job.splitn(3, '|');
        let (Some(name), Some(mode), Some(file)) = (parts.next(), parts.next(), parts.next())
        else {
            panic!("bad test service argument {job:?}");
        };
        let mode = mode.to_owned();
        let file = PathBuf::from(file);
        let daemon: Daemon = Box::new(move |stop: Stop| {
            if mode == "fail" {
                return Err(crate::Error::Config {
                    file: "test".into(),
                    count: 1,
                });
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(crate::Error::Runtime)?;
            let reloads = file.with_extension("reloads");
            let reason = runtime.block_on(async move {
                let stop = stop();
                let mut reload = Reload::listen().map_err(crate::Error::Runtime)?;
                notify_ready().map_err(crate::Error::ServiceManager)?;
                tokio::pin!(stop);
                loop {
                    tokio::select! {
                        reason = &mut stop => break Ok::<_, crate::Error>(reason),
                        Some(()) = reload.recv() => {
                            let mut text = std::fs::read_to_string(&reloads).unwrap_or_default();
                            text.push_str("reloaded\n");
                            std::fs::write(&reloads, text).map_err(crate::Error::Runtime)?;
                        }
                    }
                }
            })?;
            if mode == "slow" {
                thread::sleep(STOP_PULSE * 2);
            }
            std::fs::write(&file, reason).map_err(crate::Error::Runtime)
        });
        run_as_named(name, daemon).expect("runs as a service");
    }

    /// Installs this test program as service `name` running [`service_entry`]
    /// in `mode`; returns the result file.
    fn install_entry(name: &str, mode: &str) -> PathBuf {
        let file = std::env::temp_dir().join(format!("{name}.result"));
        let _ = std::fs::remove_file(&file);
        let test = format!(
            "{}::service_entry",
            module_path!().split_once("::").expect("a module path").1
        );
        let spec = InstallSpec {
            root: PathBuf::from("/"),
            exe: std::env::current_exe().expect("test exe path"),
            args: [
                test,
                "--exact".into(),
                "--test-threads=1".into(),
                format!("{ARG_PREFIX}{name}|{mode}|{}", file.display()),
            ]
            .map(OsString::from)
            .into(),
            start: None,
            socket_timeouts: Vec::new(),
        };
        install_named(&spec, name).expect("install the test service");
        file
    }

    fn open(name: &str) -> windows_service::service::Service {
        ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
            .expect("connect to the SCM")
            .open_service(
                name,
                ServiceAccess::START | ServiceAccess::STOP | ServiceAccess::QUERY_STATUS,
            )
            .expect("open the test service")
    }

    /// Polls until the service is in `state`; returns its status.
    fn wait_for(service: &windows_service::service::Service, state: ServiceState) -> ServiceStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = service.query_status().expect("query status");
            if status.current_state == state {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still {:?}, waited for {state:?}",
                status.current_state
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn runs_until_stopped_under_the_scm() {
        let _scm = scm_lock();
        let name = unique_name("serve");
        let _cleanup = Cleanup(name.clone());
        let file = install_entry(&name, "serve");
        let service = open(&name);
        service.start::<&str>(&[]).expect("start");
        let status = wait_for(&service, ServiceState::Running);
        assert_eq!(
            status.controls_accepted,
            ServiceControlAccept::STOP
                | ServiceControlAccept::SHUTDOWN
                | ServiceControlAccept::PARAM_CHANGE
        );

        // --remove stops it, then deletes it.
        let lines = remove_named(Path::new("/"), &name).expect("remove");
        assert!(
            lines[0].starts_with(&format!("stopped service {name}")),
            "{lines:?}"
        );
        assert_eq!(lines[1], format!("deleted service {name}"));
        let status = wait_for(&service, ServiceState::Stopped);
        assert_eq!(status.exit_code, ServiceExitCode::Win32(0));
        let reason = std::fs::read_to_string(&file).expect("the daemon wrote its result");
        assert_eq!(reason, "service stop");
        let _ = std::fs::remove_file(&file);
    }

    #[test]
    fn a_slow_stop_moves_the_checkpoint() {
        let _scm = scm_lock();
        let name = unique_name("slow");
        let _cleanup = Cleanup(name.clone());
        let file = install_entry(&name, "slow");
        let service = open(&name);
        service.start::<&str>(&[]).expect("start");
        wait_for(&service, ServiceState::Running);
        service.stop().expect("stop");
        let mut checkpoints = Vec::new();
        let status = loop {
            let status = service.query_status().expect("query status");
            if status.current_state != ServiceState::StopPending {
                break status;
            }
            assert_eq!(status.wait_hint, STOP_WAIT_HINT);
            checkpoints.push(status.checkpoint);
            thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(status.current_state, ServiceState::Stopped);
        assert_eq!(status.exit_code, ServiceExitCode::Win32(0));
        checkpoints.dedup();
        assert!(checkpoints.len() >= 2, "{checkpoints:?}");
        assert!(checkpoints.is_sorted(), "{checkpoints:?}");
        assert_eq!(
            std::fs::read_to_string(&file).expect("the daemon wrote its result"),
            "service stop"
        );
        let _ = std::fs::remove_file(&file);
    }

    #[test]
    fn a_failing_daemon_stops_the_service_with_its_exit_code() {
        let _scm = scm_lock();
        let name = unique_name("fail");
        let _cleanup = Cleanup(name.clone());
        let file = install_entry(&name, "fail");
        let service = open(&name);
        match service.start::<&str>(&[]) {
            Ok(()) => {}
            // Wine's StartService fails with a timeout when the service has
            // already stopped by the time it looks; Windows returns as soon
            // as the service has its start request.
            Err(windows_service::Error::Winapi(e))
                if e.raw_os_error() == Some(ERROR_SERVICE_REQUEST_TIMEOUT as i32) => {}
            Err(e) => panic!("start: {e:?}"),
        }
        let status = wait_for(&service, ServiceState::Stopped);
        assert_eq!(status.exit_code, ServiceExitCode::ServiceSpecific(1));
        assert!(!file.exists());
        let lines = remove_named(Path::new("/"), &name).expect("remove");
        assert_eq!(lines[0], format!("service {name} was not running"));
    }

    /// `--reload` checks the config first, with the service's own launch
    /// arguments, and asks the service to reload only when the check
    /// passes. Regression test: it asked whatever the config held, and
    /// printed success when the reload then failed in the service.
    #[test]
    fn reload_asks_the_service_only_after_the_check_passed() {
        use crate::platform::windows::install::reload_named;
        let _scm = scm_lock();
        let name = unique_name("reload");
        let _cleanup = Cleanup(name.clone());
        let file = install_entry(&name, "serve");
        let reloads = file.with_extension("reloads");
        let _ = std::fs::remove_file(&reloads);

        // Not running yet: nothing to ask, and the check does not run.
        let mut checked = false;
        let err = reload_named(
            None,
            &mut |_, _| {
                checked = true;
                Ok(())
            },
            &name,
        )
        .expect_err("not running");
        assert!(err.to_string().contains("is not running"), "{err}");
        assert!(!checked);

        let service = open(&name);
        service.start::<&str>(&[]).expect("start");
        wait_for(&service, ServiceState::Running);

        // A config with errors: the error comes back, nothing is sent.
        let mut seen_args = Vec::new();
        let err = reload_named(
            None,
            &mut |args, cwd| {
                seen_args = args.expect("the launch arguments").to_vec();
                assert_eq!(cwd, None);
                Err(crate::Error::ReloadRefused {
                    file: "w.conf".into(),
                    count: 2,
                })
            },
            &name,
        )
        .expect_err("refused");
        assert!(
            matches!(err, crate::Error::ReloadRefused { count: 2, .. }),
            "{err:?}"
        );
        assert!(
            seen_args
                .iter()
                .any(|a| a.to_string_lossy().starts_with(ARG_PREFIX)),
            "the check gets the service's own arguments: {seen_args:?}"
        );

        // A clean config: one request, one reload.
        let lines = reload_named(None, &mut |_, _| Ok(()), &name).expect("reload");
        assert!(
            lines[0].starts_with(&format!("asked service {name} to reload")),
            "{lines:?}"
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let text = loop {
            let text = std::fs::read_to_string(&reloads).unwrap_or_default();
            if !text.is_empty() || Instant::now() > deadline {
                break text;
            }
            thread::sleep(Duration::from_millis(50));
        };
        // Controls arrive in order: had the refused reload been sent, it
        // would show as a first line.
        assert_eq!(text, "reloaded\n");

        remove_named(Path::new("/"), &name).expect("remove");
        let _ = std::fs::remove_file(&file);
        let _ = std::fs::remove_file(&reloads);
        // Gone, or (Wine) marked for deletion until its handles close.
        let err = reload_named(None, &mut |_, _| Ok(()), &name).expect_err("removed");
        let text = err.to_string();
        assert!(
            text.contains("is not installed") || text.contains("is not running"),
            "{text}"
        );
    }

    #[test]
    fn chain_joins_the_causes() {
        let e = crate::Error::ServiceManager(io::Error::other("boom"));
        assert_eq!(chain(&e), format!("{e}: boom"));
    }
}
