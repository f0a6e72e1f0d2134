//! `--install` / `--remove` on Windows: the service `wininetd` in the
//! service control manager (SCM), and its Event Log source.
//!
//! WinInetd 0.7 registered itself as a service whose extra parameters
//! (`--cfgfile`, `--timeout`, ...) persisted. Here they persist the same way,
//! as the service's launch arguments: the SCM starts
//! `"C:\...\wininetd.exe" --cfgfile C:\... --timeout 30`. Installing again
//! updates the service's configuration in place; removing stops the service
//! (a bounded wait) and deletes it. Both need an elevated prompt.
//!
//! The Event Log source is the key
//! `HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application\wininetd`,
//! whose message file lets Event Viewer show each line's text (see
//! [`super::eventlog`]).
//!
//! This module owns the service's settings, the SCM calls and the registry
//! key. It does not decide which parameters persist or make them absolute:
//! the caller (`main`) does, and hands over an [`InstallSpec`].

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::ptr;
use std::thread;
use std::time::{Duration, Instant};

use windows_service::service::{
    Service, ServiceAccess, ServiceConfig, ServiceErrorControl, ServiceInfo, ServiceStartType,
    ServiceState, ServiceType,
};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_FILE_NOT_FOUND, ERROR_SERVICE_CANNOT_ACCEPT_CTRL,
    ERROR_SERVICE_DOES_NOT_EXIST, ERROR_SERVICE_MARKED_FOR_DELETE, ERROR_SERVICE_NOT_ACTIVE,
};
use windows_sys::Win32::System::Registry::{
    HKEY, HKEY_LOCAL_MACHINE, KEY_SET_VALUE, REG_CREATED_NEW_KEY, REG_DWORD, REG_EXPAND_SZ,
    REG_OPTION_NON_VOLATILE, REG_VALUE_TYPE, RegCloseKey, RegCreateKeyExW, RegDeleteKeyW,
    RegSetValueExW,
};

use super::eventlog::{MESSAGE_FILE, SOURCES_KEY, TYPES_SUPPORTED, wide_nul};
use super::service::SERVICE_NAME;
use crate::platform::StartType;

/// What Services (services.msc) shows in its Name column.
const DISPLAY_NAME: &str = "wininetd super-server";

/// What Services shows in its Description column.
const DESCRIPTION: &str = "Runs a program for each TCP connection, with the connection as its \
     standard input and output (an inetd-style super-server, compatible with WinInetd).";

/// How long `--remove` waits for a running service to stop before deleting
/// it anyway (it then goes away when it stops).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How often `--remove` looks whether the service has stopped.
const STOP_POLL: Duration = Duration::from_millis(250);

/// What to install.
#[derive(Debug)]
pub struct InstallSpec {
    /// Ignored on Windows (services live in the SCM's database, not in files
    /// under a root); a value other than `/` gets a note in the output.
    pub root: PathBuf,
    /// Absolute path of the wininetd executable to run.
    pub exe: PathBuf,
    /// The daemon parameters to persist as the service's launch arguments,
    /// already normalised by the caller; paths in them are absolute.
    pub args: Vec<OsString>,
    /// `--auto-start` or `--demand-start`; `None` keeps the start type of
    /// an installed service (a new one starts on demand, as WinInetd's).
    pub start: Option<StartType>,
    /// Services that would get `--timeout` on a socket handed to their
    /// program: Windows ignores it there (a synchronous socket takes no
    /// SO_RCVTIMEO), so `--install` warns.
    pub socket_timeouts: Vec<String>,
}

/// Why installing or removing the service failed. Each variant's source is
/// the Windows error (its text, then `(os error N)`).
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The SCM runs a service's program by absolute path.
    #[error("the executable path {} is not absolute", .path.display())]
    ExeNotAbsolute { path: PathBuf },
    #[error("cannot connect to the service control manager{}", admin_hint(.source))]
    Manager {
        #[source]
        source: io::Error,
    },
    /// The SCM refused an operation on the service.
    #[error("cannot {action} service {name}{}", admin_hint(.source))]
    Service {
        action: ServiceAction,
        name: String,
        #[source]
        source: io::Error,
    },
    /// `--remove` or `--reload` with no such service: the original's
    /// "service not installed".
    #[error("service {name} is not installed")]
    NotInstalled { name: String },
    /// `--reload` of a service that does not run.
    #[error("service {name} is not running ({state:?}): start it with `net start {name}`")]
    NotRunning { name: String, state: ServiceState },
    #[error("cannot register the event log source (HKLM\\{key}){}", admin_hint(.source))]
    RegisterSource {
        key: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove the event log source (HKLM\\{key}){}", admin_hint(.source))]
    RemoveSource {
        key: String,
        #[source]
        source: io::Error,
    },
}

/// What `--install` or `--remove` was doing to the service when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceAction {
    Open,
    Create,
    Configure,
    Query,
    Stop,
    Delete,
    /// Send a control (ParamChange for `--reload`).
    Control,
}

impl std::fmt::Display for ServiceAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServiceAction::Open => "open",
            ServiceAction::Create => "create",
            ServiceAction::Configure => "change the configuration of",
            ServiceAction::Query => "query",
            ServiceAction::Stop => "stop",
            ServiceAction::Delete => "delete",
            ServiceAction::Control => "send a reload request to",
        })
    }
}

/// A `map_err` for an SCM call doing `action` to service `name`.
fn failed(
    action: ServiceAction,
    name: &str,
) -> impl FnOnce(windows_service::Error) -> InstallError + '_ {
    move |e| InstallError::Service {
        action,
        name: name.to_owned(),
        source: os(e),
    }
}

/// Most install failures are a missing elevation; say what to do about it.
fn admin_hint(e: &io::Error) -> &'static str {
    if e.raw_os_error() == Some(ERROR_ACCESS_DENIED as i32) {
        " (this needs an elevated prompt: run it as administrator)"
    } else {
        ""
    }
}

/// Creates the service `wininetd` (display name "wininetd super-server",
/// its own process, demand or automatic start, LocalSystem, launch
/// arguments `spec.args`), or updates it if it exists, and registers the
/// Event Log source. Returns lines saying what was done.
pub fn install(spec: &InstallSpec) -> Result<Vec<String>, InstallError> {
    install_named(spec, SERVICE_NAME)
}

/// Stops (waiting up to 30 s) and deletes the service `wininetd`, and
/// removes its Event Log source. Removing when nothing is installed is an
/// error saying so.
pub fn remove(root: &Path) -> Result<Vec<String>, InstallError> {
    remove_named(root, SERVICE_NAME)
}

/// [`install`] for a service (and event source) called `name`, so that
/// tests do not touch a real installation.
pub(super) fn install_named(spec: &InstallSpec, name: &str) -> Result<Vec<String>, InstallError> {
    let mut lines = Vec::new();
    root_note(&spec.root, &mut lines);
    if !spec.exe.is_absolute() {
        return Err(InstallError::ExeNotAbsolute {
            path: spec.exe.clone(),
        });
    }
    if !spec.socket_timeouts.is_empty() {
        lines.push(format!(
            "warning: --timeout has no effect on {}: with --stdio socket the program gets a \
             synchronous socket, which ignores send and receive timeouts on Windows; \
             use --stdio pipe (or stdio = \"pipe\"), where the relay applies it",
            spec.socket_timeouts.join(", ")
        ));
    }
    let mut info = ServiceInfo {
        name: name.into(),
        display_name: display_name(name).into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: match spec.start {
            Some(StartType::Auto) => ServiceStartType::AutoStart,
            Some(StartType::Demand) | None => ServiceStartType::OnDemand,
        },
        error_control: ServiceErrorControl::Normal,
        executable_path: spec.exe.clone(),
        launch_arguments: spec.args.clone(),
        dependencies: vec![],
        account_name: None, // LocalSystem: it must be able to log users on.
        account_password: None,
    };

    // The source first: it is harmless alone, and a service that logs to
    // an unregistered source shows "description cannot be found".
    let key = source_key(name);
    let created = register_event_source(&key).map_err(|source| InstallError::RegisterSource {
        key: key.clone(),
        source,
    })?;

    let manager = ServiceManager::local_computer(
        None::<&str>,
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    )
    .map_err(|e| InstallError::Manager { source: os(e) })?;
    let access =
        ServiceAccess::QUERY_CONFIG | ServiceAccess::CHANGE_CONFIG | ServiceAccess::QUERY_STATUS;
    let (service, previous) = match manager.open_service(name, access) {
        Ok(service) => {
            let previous = service
                .query_config()
                .map_err(failed(ServiceAction::Query, name))?;
            if spec.start.is_none() {
                // Installing again changes the parameters, not how the
                // service starts: an operator who made it automatic
                // (`--auto-start`, services.msc) keeps that.
                info.start_type = previous.start_type;
            }
            service
                .change_config(&info)
                .map_err(failed(ServiceAction::Configure, name))?;
            (service, Some(previous))
        }
        Err(e) if is(&e, ERROR_SERVICE_DOES_NOT_EXIST) => {
            let service = manager
                .create_service(&info, access)
                .map_err(failed(ServiceAction::Create, name))?;
            (service, None)
        }
        Err(e) => return Err(failed(ServiceAction::Open, name)(e)),
    };
    service
        .set_description(DESCRIPTION)
        .map_err(failed(ServiceAction::Configure, name))?;

    let config = service
        .query_config()
        .map_err(failed(ServiceAction::Query, name))?;
    let start = match config.start_type {
        ServiceStartType::AutoStart => "starts with Windows",
        _ => "starts on demand",
    };
    let command = config.executable_path.display();
    lines.push(match &previous {
        None => format!(
            "created service {name} ({}), {start}: {command}",
            config.display_name.to_string_lossy()
        ),
        Some(old) if same_config(old, &config) => {
            format!("service {name} was already installed as is, {start}: {command}")
        }
        Some(old) => {
            let mut line = format!("updated service {name}, {start}: {command}");
            if old.executable_path != config.executable_path {
                line.push_str(&format!(" (was: {})", old.executable_path.display()));
            }
            line
        }
    });
    lines.push(if created {
        format!("registered event log source {name} (HKLM\\{key})")
    } else {
        format!("updated event log source {name} (HKLM\\{key})")
    });

    let running = service
        .query_status()
        .map_err(failed(ServiceAction::Query, name))?
        .current_state
        != ServiceState::Stopped;
    lines.push(if running {
        format!(
            "service {name} is running: restart it for the new settings to take effect \
             (`net stop {name}` then `net start {name}`)"
        )
    } else {
        format!("start it with `net start {name}` (or `sc start {name}`)")
    });
    Ok(lines)
}

/// [`remove`] for a service (and event source) called `name`.
pub(super) fn remove_named(root: &Path, name: &str) -> Result<Vec<String>, InstallError> {
    let mut lines = Vec::new();
    root_note(root, &mut lines);
    let key = source_key(name);
    let remove_source = |lines: &mut Vec<String>| {
        let existed = remove_event_source(&key).map_err(|source| InstallError::RemoveSource {
            key: key.clone(),
            source,
        })?;
        if existed {
            lines.push(format!("removed event log source {name} (HKLM\\{key})"));
        }
        Ok::<bool, InstallError>(existed)
    };

    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .map_err(|e| InstallError::Manager { source: os(e) })?;
    let access = ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE;
    let service = match manager.open_service(name, access) {
        Ok(service) => service,
        Err(e) if is(&e, ERROR_SERVICE_DOES_NOT_EXIST) => {
            // A source left behind by a failed install still goes; with
            // nothing at all to remove, say so as an error.
            lines.push(format!("service {name} is not installed"));
            return if remove_source(&mut lines)? {
                Ok(lines)
            } else {
                Err(InstallError::NotInstalled { name: name.into() })
            };
        }
        Err(e) => return Err(failed(ServiceAction::Open, name)(e)),
    };

    lines.push(stop(&service, name)?);
    match service.delete() {
        Ok(()) => lines.push(format!("deleted service {name}")),
        Err(e) if is(&e, ERROR_SERVICE_MARKED_FOR_DELETE) => lines.push(format!(
            "service {name} was already marked for deletion: it goes away once it has stopped \
             and no program (services.msc...) holds it open"
        )),
        Err(e) => return Err(failed(ServiceAction::Delete, name)(e)),
    }
    drop(service);
    remove_source(&mut lines)?;
    Ok(lines)
}

/// Stops `service` if it runs, waiting up to [`STOP_TIMEOUT`]; returns the
/// line to print. A service that does not stop in time is not an error:
/// it is deleted anyway and goes away when it stops.
fn stop(service: &Service, name: &str) -> Result<String, InstallError> {
    let start = Instant::now();
    let mut was_running = false;
    loop {
        let state = service
            .query_status()
            .map_err(failed(ServiceAction::Query, name))?
            .current_state;
        match state {
            ServiceState::Stopped if was_running => {
                return Ok(format!(
                    "stopped service {name} ({:.1} s)",
                    start.elapsed().as_secs_f64()
                ));
            }
            ServiceState::Stopped => return Ok(format!("service {name} was not running")),
            ServiceState::StopPending => was_running = true,
            _ => {
                was_running = true;
                match service.stop() {
                    Ok(_) => {}
                    // It stopped meanwhile, or cannot take a stop now
                    // (start pending): look again.
                    Err(e)
                        if is(&e, ERROR_SERVICE_NOT_ACTIVE)
                            || is(&e, ERROR_SERVICE_CANNOT_ACCEPT_CTRL) => {}
                    Err(e) => return Err(failed(ServiceAction::Stop, name)(e)),
                }
            }
        }
        if start.elapsed() >= STOP_TIMEOUT {
            return Ok(format!(
                "note: service {name} did not stop within {} s; it is deleted once it stops",
                STOP_TIMEOUT.as_secs()
            ));
        }
        thread::sleep(STOP_POLL);
    }
}

fn root_note(root: &Path, lines: &mut Vec<String>) {
    if root != Path::new("/") {
        lines.push(format!(
            "note: --root {} is ignored on Windows: the service is registered with this \
             machine's service control manager",
            root.display()
        ));
    }
}

/// The display name of service `name`: display names must be unique too,
/// so services other than the real one (tests) get their name in theirs.
fn display_name(name: &str) -> String {
    if name == SERVICE_NAME {
        DISPLAY_NAME.to_owned()
    } else {
        format!("{DISPLAY_NAME} ({name})")
    }
}

/// The settings `--install` controls, compared to say "already installed as is".
fn same_config(a: &ServiceConfig, b: &ServiceConfig) -> bool {
    a.executable_path == b.executable_path
        && a.start_type == b.start_type
        && a.display_name == b.display_name
        && a.service_type == b.service_type
        && a.error_control == b.error_control
}

/// The event source's registry key, relative to HKEY_LOCAL_MACHINE.
fn source_key(name: &str) -> String {
    format!(r"{SOURCES_KEY}\{name}")
}

/// An open registry key, closed on drop.
struct Key(HKEY);

impl Drop for Key {
    fn drop(&mut self) {
        // SAFETY: the handle came from RegCreateKeyExW and is closed only here.
        unsafe {
            RegCloseKey(self.0);
        }
    }
}

impl Key {
    fn set(&self, value: &str, kind: REG_VALUE_TYPE, data: &[u8]) -> io::Result<()> {
        let value = wide_nul(value);
        let len = u32::try_from(data.len()).expect("registry values here are small");
        // SAFETY: `self.0` is an open key with KEY_SET_VALUE; `value` is a
        // NUL-terminated UTF-16 name; `data` is `len` readable bytes laid out
        // as `kind` requires (a NUL-terminated UTF-16 string for
        // REG_EXPAND_SZ, 4 little-endian bytes for REG_DWORD).
        let status = unsafe { RegSetValueExW(self.0, value.as_ptr(), 0, kind, data.as_ptr(), len) };
        win32(status)
    }
}

/// Creates or updates the event source key (`EventMessageFile`,
/// `TypesSupported`); true if it was created.
fn register_event_source(key: &str) -> io::Result<bool> {
    let path = wide_nul(key);
    let mut handle: HKEY = ptr::null_mut();
    let mut disposition = 0;
    // SAFETY: `path` is NUL-terminated UTF-16; no class, default security;
    // `handle` and `disposition` are valid for writes.
    let status = unsafe {
        RegCreateKeyExW(
            HKEY_LOCAL_MACHINE,
            path.as_ptr(),
            0,
            ptr::null(),
            REG_OPTION_NON_VOLATILE,
            KEY_SET_VALUE,
            ptr::null(),
            &mut handle,
            &mut disposition,
        )
    };
    win32(status)?;
    let key = Key(handle);
    let file: Vec<u8> = wide_nul(MESSAGE_FILE)
        .iter()
        .flat_map(|unit| unit.to_le_bytes())
        .collect();
    key.set("EventMessageFile", REG_EXPAND_SZ, &file)?;
    key.set("TypesSupported", REG_DWORD, &TYPES_SUPPORTED.to_le_bytes())?;
    Ok(disposition == REG_CREATED_NEW_KEY)
}

/// Deletes the event source key (it has no subkeys); false if there was none.
fn remove_event_source(key: &str) -> io::Result<bool> {
    let path = wide_nul(key);
    // SAFETY: `path` is a NUL-terminated UTF-16 string alive for the call.
    let status = unsafe { RegDeleteKeyW(HKEY_LOCAL_MACHINE, path.as_ptr()) };
    if status == ERROR_FILE_NOT_FOUND {
        return Ok(false);
    }
    win32(status).map(|()| true)
}

/// A registry function's result (it returns the error rather than setting it).
fn win32(status: u32) -> io::Result<()> {
    if status == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(status as i32))
    }
}

/// The Windows error inside a windows-service error (whose own message is
/// only "IO error in winapi call"); its other errors are bad arguments.
fn os(e: windows_service::Error) -> io::Error {
    match e {
        windows_service::Error::Winapi(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidInput, other.to_string()),
    }
}

/// Whether a windows-service error is the Windows error `code`.
fn is(e: &windows_service::Error, code: u32) -> bool {
    matches!(e, windows_service::Error::Winapi(e) if e.raw_os_error() == Some(code as i32))
}

/// Asks the running service to reload its config, once `check` has passed
/// the config it will read: `check` gets the service's parameters (its
/// launch arguments, as `--install` stored them). The request is the
/// service manager's ParamChange control, which the service handles as a
/// reload. `pidfile` is not used: the service manager finds the service.
pub fn request_reload(
    pidfile: Option<&Path>,
    check: &mut crate::platform::ReloadCheck<'_>,
) -> Result<Vec<String>, crate::Error> {
    reload_named(pidfile, check, SERVICE_NAME)
}

/// [`request_reload`] for the service `name`.
pub(super) fn reload_named(
    pidfile: Option<&Path>,
    check: &mut crate::platform::ReloadCheck<'_>,
    name: &str,
) -> Result<Vec<String>, crate::Error> {
    use windows_sys::Win32::System::Services::{
        ControlService, SERVICE_CONTROL_PARAMCHANGE, SERVICE_STATUS,
    };
    let mut lines = Vec::new();
    if let Some(path) = pidfile {
        lines.push(format!(
            "note: --pidfile {} is not used on Windows: the service manager finds the service",
            path.display()
        ));
    }
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .map_err(|e| InstallError::Manager { source: os(e) })?;
    let access =
        ServiceAccess::QUERY_CONFIG | ServiceAccess::QUERY_STATUS | ServiceAccess::PAUSE_CONTINUE;
    let service = manager.open_service(name, access).map_err(|e| {
        match is(&e, ERROR_SERVICE_DOES_NOT_EXIST) {
            true => InstallError::NotInstalled { name: name.into() },
            false => failed(ServiceAction::Open, name)(e),
        }
    })?;
    let state = service
        .query_status()
        .map_err(failed(ServiceAction::Query, name))?
        .current_state;
    if state != ServiceState::Running {
        return Err(InstallError::NotRunning {
            name: name.into(),
            state,
        }
        .into());
    }
    let config = service
        .query_config()
        .map_err(failed(ServiceAction::Query, name))?;
    let command_line = config.executable_path.to_string_lossy().into_owned();
    let args = super::split_command_line(&command_line).ok().map(|argv| {
        argv.into_iter()
            .skip(1)
            .map(OsString::from)
            .collect::<Vec<_>>()
    });
    check(args.as_deref(), None)?;
    // SAFETY: plain data that ControlService fills in.
    let mut status = unsafe { std::mem::zeroed::<SERVICE_STATUS>() };
    // SAFETY: a valid service handle, opened with SERVICE_PAUSE_CONTINUE
    // (which ParamChange needs), and a valid out pointer.
    let sent = unsafe {
        ControlService(
            service.raw_handle(),
            SERVICE_CONTROL_PARAMCHANGE,
            &mut status,
        )
    };
    if sent == 0 {
        return Err(InstallError::Service {
            action: ServiceAction::Control,
            name: name.into(),
            source: io::Error::last_os_error(),
        }
        .into());
    }
    lines.push(format!(
        "asked service {name} to reload its config; the Event Log says whether the reload applied"
    ));
    Ok(lines)
}

/// The crate's error for a failed install, remove or reload request: the
/// platform's error kept whole (its causes print).
impl From<InstallError> for crate::Error {
    fn from(e: InstallError) -> Self {
        crate::Error::Install(Box::new(e))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    use windows_sys::Win32::System::Registry::{KEY_QUERY_VALUE, RegOpenKeyExW, RegQueryValueExW};

    /// Serialises the tests that talk to the SCM. Wine's SCM client is not
    /// safe for concurrent calls from one process (answers get mixed up:
    /// "Invalid handle" from a handle just opened, or a hang); Windows' is.
    /// The program itself makes its SCM calls from one thread at a time.
    pub(in super::super) fn scm_lock() -> std::sync::MutexGuard<'static, ()> {
        static SCM: std::sync::Mutex<()> = std::sync::Mutex::new(());
        SCM.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A service name no real installation and no other test uses, now or
    /// in an earlier run (Wine reuses process IDs soon).
    pub(in super::super) fn unique_name(what: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() % 1_000_000_000);
        format!(
            "wininetd-test-{what}-{}-{clock}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Removes the test service (and event source) `.0` on drop, so that a
    /// failed test leaves nothing behind.
    pub(in super::super) struct Cleanup(pub String);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = remove_named(Path::new("/"), &self.0);
        }
    }

    fn spec(args: &[&str], start: Option<StartType>) -> InstallSpec {
        InstallSpec {
            root: PathBuf::from("/"),
            exe: std::env::current_exe().expect("test exe path"),
            args: args.iter().map(OsString::from).collect(),
            start,
            socket_timeouts: Vec::new(),
        }
    }

    fn config(name: &str) -> ServiceConfig {
        let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
            .expect("connect to the SCM");
        manager
            .open_service(name, ServiceAccess::QUERY_CONFIG)
            .expect("service exists")
            .query_config()
            .expect("query config")
    }

    /// The value `value` of key HKLM\`key`, as its type and bytes; None if
    /// the key does not exist.
    fn registry_value(key: &str, value: &str) -> Option<(u32, Vec<u8>)> {
        let path = wide_nul(key);
        let mut handle: HKEY = ptr::null_mut();
        // SAFETY: `path` is NUL-terminated; `handle` is valid for writes.
        let status = unsafe {
            RegOpenKeyExW(
                HKEY_LOCAL_MACHINE,
                path.as_ptr(),
                0,
                KEY_QUERY_VALUE,
                &mut handle,
            )
        };
        if status == ERROR_FILE_NOT_FOUND {
            return None;
        }
        win32(status).expect("open key");
        let key = Key(handle);
        let name = wide_nul(value);
        let mut kind = 0;
        let mut data = vec![0u8; 1024];
        let mut len = data.len() as u32;
        // SAFETY: `key.0` is open with KEY_QUERY_VALUE; `data` has `len`
        // writable bytes; `kind` and `len` are valid for writes.
        let status = unsafe {
            RegQueryValueExW(
                key.0,
                name.as_ptr(),
                ptr::null(),
                &mut kind,
                data.as_mut_ptr(),
                &mut len,
            )
        };
        win32(status).expect("query value");
        data.truncate(len as usize);
        Some((kind, data))
    }

    fn utf16(bytes: &[u8]) -> String {
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        String::from_utf16(&units).expect("UTF-16")
    }

    #[test]
    fn install_update_and_remove_through_the_scm() {
        let _scm = scm_lock();
        let name = unique_name("install");
        let _cleanup = Cleanup(name.clone());
        let key = source_key(&name);

        let lines = install_named(
            &spec(&["--cfgfile", r"C:\my dir\w.conf", "--timeout", "30"], None),
            &name,
        )
        .expect("install");
        assert!(
            lines[0].starts_with(&format!("created service {name}")),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("registered event log source"),
            "{lines:?}"
        );
        let c = config(&name);
        let command = c.executable_path.to_string_lossy().into_owned();
        assert!(
            command.ends_with(r#" --cfgfile "C:\my dir\w.conf" --timeout 30"#),
            "{command}"
        );
        assert!(command.contains(".exe"), "{command}");
        assert_eq!(c.start_type, ServiceStartType::OnDemand);
        assert_eq!(c.display_name, display_name(&name).as_str());
        assert_eq!(display_name(SERVICE_NAME), DISPLAY_NAME);
        assert!(c.service_type.contains(ServiceType::OWN_PROCESS));
        let (kind, file) = registry_value(&key, "EventMessageFile").expect("source key");
        assert_eq!((kind, utf16(&file).as_str()), (REG_EXPAND_SZ, MESSAGE_FILE));
        let (kind, types) = registry_value(&key, "TypesSupported").expect("source key");
        assert_eq!(
            (kind, types.as_slice()),
            (REG_DWORD, &7u32.to_le_bytes()[..])
        );

        // Installing again updates the parameters and the start type.
        let lines = install_named(
            &spec(&["--linger-timeout", "5"], Some(StartType::Auto)),
            &name,
        )
        .expect("install again");
        assert!(
            lines[0].starts_with(&format!("updated service {name}")),
            "{lines:?}"
        );
        assert!(lines[0].contains("(was: "), "{lines:?}");
        assert!(
            lines[1].starts_with("updated event log source"),
            "{lines:?}"
        );
        let c = config(&name);
        let command = c.executable_path.to_string_lossy().into_owned();
        assert!(
            command.ends_with(".exe --linger-timeout 5")
                || command.ends_with(".exe\" --linger-timeout 5"),
            "{command}"
        );
        assert_eq!(c.start_type, ServiceStartType::AutoStart);
        // Regression test: installing again without --auto-start made an
        // automatic service start on demand. Now it keeps its start type,
        // and nothing else changed.
        let lines = install_named(&spec(&["--linger-timeout", "5"], None), &name)
            .expect("install a third time");
        assert!(lines[0].contains("already installed as is"), "{lines:?}");
        assert!(lines[0].contains("starts with Windows"), "{lines:?}");
        assert_eq!(config(&name).start_type, ServiceStartType::AutoStart);
        // --demand-start switches it back.
        let lines = install_named(
            &spec(&["--linger-timeout", "5"], Some(StartType::Demand)),
            &name,
        )
        .expect("install with --demand-start");
        assert!(lines[0].contains("starts on demand"), "{lines:?}");
        assert_eq!(config(&name).start_type, ServiceStartType::OnDemand);

        let lines = remove_named(Path::new("/"), &name).expect("remove");
        assert_eq!(
            lines,
            [
                format!("service {name} was not running"),
                format!("deleted service {name}"),
                format!("removed event log source {name} (HKLM\\{key})"),
            ]
        );
        assert!(registry_value(&key, "TypesSupported").is_none());

        let err = remove_named(Path::new("/"), &name).expect_err("remove twice");
        assert!(matches!(err, InstallError::NotInstalled { .. }), "{err:?}");
        assert_eq!(err.to_string(), format!("service {name} is not installed"));
    }

    #[test]
    fn remove_cleans_up_a_lone_event_source() {
        let _scm = scm_lock();
        let name = unique_name("source");
        let _cleanup = Cleanup(name.clone());
        let key = source_key(&name);
        assert!(register_event_source(&key).expect("register"));
        assert!(!register_event_source(&key).expect("register again"));
        let lines = remove_named(Path::new("/"), &name).expect("remove");
        assert_eq!(lines[0], format!("service {name} is not installed"));
        assert!(
            lines[1].starts_with("removed event log source"),
            "{lines:?}"
        );
        assert!(registry_value(&key, "TypesSupported").is_none());
        assert!(!remove_event_source(&key).expect("remove again"));
    }

    #[test]
    fn root_is_ignored_with_a_note() {
        let _scm = scm_lock();
        let name = unique_name("root");
        let _cleanup = Cleanup(name.clone());
        let mut spec = spec(&[], None);
        spec.root = PathBuf::from(r"C:\somewhere");
        let lines = install_named(&spec, &name).expect("install");
        assert!(
            lines[0].starts_with(r"note: --root C:\somewhere is ignored"),
            "{lines:?}"
        );
        let lines = remove_named(&spec.root, &name).expect("remove");
        assert!(lines[0].starts_with("note: --root"), "{lines:?}");
    }

    #[test]
    fn relative_executable_is_refused_before_anything_is_written() {
        let name = unique_name("relative");
        let mut spec = spec(&[], None);
        spec.exe = PathBuf::from(r"bin\wininetd.exe");
        let err = install_named(&spec, &name).expect_err("relative exe");
        assert!(
            matches!(err, InstallError::ExeNotAbsolute { .. }),
            "{err:?}"
        );
        assert!(registry_value(&source_key(&name), "TypesSupported").is_none());
    }

    #[test]
    fn access_denied_says_to_elevate() {
        let err = InstallError::Service {
            action: ServiceAction::Create,
            name: "wininetd".into(),
            source: io::Error::from_raw_os_error(ERROR_ACCESS_DENIED as i32),
        };
        assert_eq!(
            err.to_string(),
            "cannot create service wininetd (this needs an elevated prompt: run it as administrator)"
        );
        let err = InstallError::Service {
            action: ServiceAction::Delete,
            name: "wininetd".into(),
            source: io::Error::from_raw_os_error(ERROR_SERVICE_MARKED_FOR_DELETE as i32),
        };
        assert_eq!(err.to_string(), "cannot delete service wininetd");
    }

    #[test]
    fn windows_errors_keep_their_code() {
        let e = os(windows_service::Error::Winapi(
            io::Error::from_raw_os_error(5),
        ));
        assert_eq!(e.raw_os_error(), Some(5));
        let e = os(windows_service::Error::ArgumentHasNulByte(
            "launch argument",
        ));
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("nul byte"), "{e}");
    }

    #[test]
    fn the_event_source_is_named_after_the_service() {
        assert_eq!(super::super::eventlog::SOURCE, SERVICE_NAME);
    }
}
