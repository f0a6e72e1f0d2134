//! Starting a connection's program on Windows, waiting for it, ending its
//! tree.
//!
//! Each child:
//! - receives exactly its own standard handles through
//!   `PROC_THREAD_ATTRIBUTE_HANDLE_LIST` (WinInetd let every child inherit
//!   every inheritable handle, so a connection stayed open until an
//!   unrelated child exited);
//! - gets an environment block of its own (WinInetd set `CLIENT_IP` in its
//!   own environment, so concurrent clients raced);
//! - starts suspended, joins a job object with kill-on-close, then runs, so
//!   that ending the job ends every process it started;
//! - with a user, runs under a token from `LogonUserW` and never, if that
//!   fails, as the daemon's own account (WinInetd fell back to SYSTEM);
//!   with the user's profile loaded (`LoadUserProfileW`, unloaded when the
//!   session ends) and the user's own environment (`CreateEnvironmentBlock`:
//!   `USERPROFILE`, `TEMP`, `APPDATA`...) under the service's `env` and the
//!   connection's variables; and on the window station of its own logon
//!   session (`lpDesktop = ""`, as WinInetd did), not the service's, which
//!   the user cannot open: a program that loads user32 would fail to start
//!   (0xC0000142).
//!
//! See CreateProcessW, UpdateProcThreadAttribute, LogonUserW,
//! CreateProcessAsUserW, LoadUserProfileW, CreateEnvironmentBlock,
//! STARTUPINFOW and RegisterWaitForSingleObject in the Win32 docs.

use std::ffi::{OsStr, OsString, c_void};
use std::io;
use std::os::windows::ffi::{OsStrExt, OsStringExt};
use std::os::windows::io::{AsRawHandle, AsRawSocket, FromRawHandle, OwnedHandle, RawHandle};
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use socket2::Socket;
use tokio::net::windows::named_pipe::{NamedPipeServer, ServerOptions};
use tokio::sync::oneshot;
use windows_sys::Win32::Foundation::{
    ERROR_LOGON_TYPE_NOT_GRANTED, ERROR_PRIVILEGE_NOT_HELD, GENERIC_READ, GENERIC_WRITE, HANDLE,
    HANDLE_FLAG_INHERIT, INVALID_HANDLE_VALUE, SetHandleInformation,
};
use windows_sys::Win32::Security::{
    LOGON32_LOGON_BATCH, LOGON32_PROVIDER_DEFAULT, LogonUserW, SECURITY_ATTRIBUTES,
};
use windows_sys::Win32::Storage::FileSystem::{CreateFileW, OPEN_EXISTING};
use windows_sys::Win32::System::Environment::{CreateEnvironmentBlock, DestroyEnvironmentBlock};
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION, JobObjectExtendedLimitInformation,
    SetInformationJobObject, TerminateJobObject,
};
use windows_sys::Win32::System::Threading::{
    CREATE_NEW_PROCESS_GROUP, CREATE_NO_WINDOW, CREATE_SUSPENDED, CREATE_UNICODE_ENVIRONMENT,
    CreateProcessAsUserW, CreateProcessW, DeleteProcThreadAttributeList,
    EXTENDED_STARTUPINFO_PRESENT, GetExitCodeProcess, INFINITE, InitializeProcThreadAttributeList,
    LPPROC_THREAD_ATTRIBUTE_LIST, PROC_THREAD_ATTRIBUTE_HANDLE_LIST, PROCESS_INFORMATION,
    RegisterWaitForSingleObject, ResumeThread, STARTF_USESTDHANDLES, STARTUPINFOEXW,
    TerminateProcess, UnregisterWaitEx, UpdateProcThreadAttribute, WT_EXECUTEONLYONCE,
};
use windows_sys::Win32::UI::Shell::{LoadUserProfileW, PROFILEINFOW, UnloadUserProfile};

/// PROFILEINFOW's "no user interface" flag (profinfo.h; windows-sys has it
/// only with the Group Policy API): a service has no one to show a dialog.
const PI_NOUI: u32 = 1;

use super::Identity;
use crate::error::Quoted;
use crate::platform::{ChildStdio, Program, relay};

/// What to run for a connection: fixed per service, built at load.
#[derive(Debug)]
pub struct ChildSpec {
    /// The program's path, NUL-terminated UTF-16.
    application: Vec<u16>,
    /// The command line as written in the config, UTF-16 without NUL.
    command_line: Vec<u16>,
    env: Vec<(OsString, OsString)>,
    /// `env` as `K=V\0` entries, without the block's final NUL.
    env_block: Vec<u16>,
    /// The service's own `env`: what a run-as program gets on top of its
    /// user's environment (the daemon's does not reach it).
    service_env: Vec<(OsString, OsString)>,
    user: Option<Identity>,
    /// NUL-terminated UTF-16.
    working_dir: Option<Vec<u16>>,
    stderr_to_log: bool,
}

impl ChildSpec {
    pub fn new(program: Program) -> Self {
        let mut env_block = Vec::new();
        for (key, value) in &program.env {
            push_env(&mut env_block, key, value);
        }
        Self {
            application: wide_nul(program.path.as_os_str()),
            command_line: OsStr::new(&program.command_line).encode_wide().collect(),
            env: program.env,
            env_block,
            service_env: program.service_env,
            user: program.user,
            working_dir: program
                .working_dir
                .as_ref()
                .map(|d| wide_nul(d.as_os_str())),
            stderr_to_log: program.stderr_to_log,
        }
    }

    pub fn env(&self) -> &[(OsString, OsString)] {
        &self.env
    }
}

fn push_env(block: &mut Vec<u16>, key: &OsStr, value: &OsStr) {
    block.extend(key.encode_wide());
    block.push(u16::from(b'='));
    block.extend(value.encode_wide());
    block.push(0);
}

fn wide_nul(s: &OsStr) -> Vec<u16> {
    s.encode_wide().chain(std::iter::once(0)).collect()
}

fn last_error() -> io::Error {
    io::Error::last_os_error()
}

/// A child's exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus(u32);

/// `exit N`, with codes that are NTSTATUS values (crashes, kills) in hex.
pub fn describe_exit(status: &ExitStatus) -> String {
    if status.0 >= 0xC000_0000 {
        format!("exit {:#010X}", status.0)
    } else {
        format!("exit {}", status.0)
    }
}

/// The exit code a job's processes get when the daemon ends them:
/// STATUS_CONTROL_C_EXIT, what a console program stopped by Ctrl-C shows.
const KILLED_EXIT_CODE: u32 = 0xC000_013A;

/// A child's stderr when it goes to the daemon's log.
pub type StderrPipe = NamedPipeServer;

/// Readies a stderr pipe for reading: the runtime starts reading a pipe
/// server only after `connect` (the child's end is open, so it returns at
/// once).
pub async fn stderr_ready(pipe: &mut StderrPipe) -> io::Result<()> {
    pipe.connect().await
}

/// A running child and its job.
#[derive(Debug)]
pub struct Child {
    stderr: Option<StderrPipe>,
    // Field order is drop order: the wait is unregistered before the
    // process handle it waits on is closed, and the job (kill-on-close)
    // goes last.
    exit: ExitWait,
    process: OwnedHandle,
    job: OwnedHandle,
    /// A run-as session's profile, unloaded once the job is gone.
    _profile: Option<Profile>,
    pid: u32,
}

impl Child {
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// The child's stderr, when it goes to the daemon's log (once).
    pub fn take_stderr(&mut self) -> Option<StderrPipe> {
        self.stderr.take()
    }

    /// Waits for the child to exit.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.exit.exited().await;
        let mut code = 0u32;
        // SAFETY: a valid process handle and a valid out pointer.
        if unsafe { GetExitCodeProcess(self.process.as_raw_handle(), &mut code) } == 0 {
            return Err(last_error());
        }
        Ok(ExitStatus(code))
    }

    /// A failed start is reported by [`spawn`] itself on Windows.
    pub fn start_error(&self) -> Option<io::Error> {
        None
    }

    /// Windows has no polite stop for a program without a console of its
    /// own to signal, so this ends the tree at once, like [`Child::kill_tree`].
    pub fn terminate_tree(&self) {
        self.kill_tree();
    }

    /// Ends every process of the child's job.
    pub fn kill_tree(&self) {
        // SAFETY: a valid job handle. Failure (the job is empty) is harmless.
        unsafe { TerminateJobObject(self.job.as_raw_handle(), KILLED_EXIT_CODE) };
    }

    /// Whether something the program started is left to wait for: never,
    /// since the job (kill-on-close) ends every process it holds when the
    /// session drops the child.
    pub fn tree_alive(&self) -> bool {
        false
    }
}

/// [`spawn`] blocks (logon, CreateProcess, the job), so the server calls it
/// on the blocking pool.
pub const SPAWN_BLOCKS: bool = true;

/// Each child's exit is waited for on its own process handle.
#[derive(Debug, Clone)]
pub struct Reaper;

impl Reaper {
    pub fn start() -> io::Result<Self> {
        Ok(Self)
    }

    /// Nothing to do: each child's exit is waited for on its own.
    pub fn reap_exited(&self, _all: bool) {}

    /// Nothing to do: each child's exit is seen as it happens.
    pub fn hurry(&self) -> Hurry {
        Hurry
    }
}

/// Held while a connection waits for a session slot.
#[derive(Debug)]
pub struct Hurry;

/// Starts `spec` for a connection with `stdio` as its standard handles.
pub fn spawn(
    spec: &ChildSpec,
    stdio: ChildStdio,
    client_env: &[(&str, &str)],
    _reaper: &Reaper,
) -> io::Result<Child> {
    let (env, profile) = match &spec.user {
        None => {
            let mut env = spec.env_block.clone();
            for (key, value) in client_env {
                push_env(&mut env, OsStr::new(key), OsStr::new(value));
            }
            env.push(0);
            (env, None)
        }
        Some(user) => {
            let profile = Profile::load(logon(user)?, user)?;
            let base = user_environment_block(&profile.token).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot build the environment of user {}: {e}",
                        Quoted(&user.name)
                    ),
                )
            })?;
            let client: Vec<(OsString, OsString)> = client_env
                .iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v)))
                .collect();
            let env = merge_env(base, &[&spec.service_env, &client]);
            (env, Some(profile))
        }
    };
    let token = profile.as_ref().map(|p| &p.token);
    let job = new_job()?;
    let (log_end, child_stderr) = if spec.stderr_to_log {
        let (server, client) = pipe(Direction::FromChild)?;
        (Some(server), Some(client))
    } else {
        (None, None)
    };
    let stderr_for = |fallback: HANDLE| {
        child_stderr
            .as_ref()
            .map_or(fallback, |h| h.as_raw_handle())
    };
    let started = match stdio {
        ChildStdio::Socket(socket) => {
            let handle = socket.as_raw_socket() as HANDLE;
            set_inheritable(handle)?;
            let std = [handle, handle, stderr_for(handle)];
            let started = create_process(spec, &env, token, std, &job);
            drop(socket);
            started?
        }
        ChildStdio::Shared(socket) => {
            // A wait service's socket, which the daemon keeps: inherited
            // only by this child (the handle list), and not inheritable
            // again once it has it.
            let handle = socket.as_raw_socket() as HANDLE;
            set_inheritable(handle)?;
            let std = [handle, handle, stderr_for(handle)];
            let started = create_process(spec, &env, token, std, &job);
            // SAFETY: a valid handle; only its inherit flag changes.
            unsafe { SetHandleInformation(handle, HANDLE_FLAG_INHERIT, 0) };
            started?
        }
        ChildStdio::Relayed(ends) => {
            let stdout = ends.stdout.as_raw_handle();
            let std = [ends.stdin.as_raw_handle(), stdout, stderr_for(stdout)];
            let started = create_process(spec, &env, token, std, &job)?;
            // The program's EOF on its stdin, and the relay's on its
            // output, come only once the daemon's copies are closed too.
            drop(ends);
            started
        }
    };
    drop(child_stderr);
    let exit = ExitWait::register(&started.process)?;
    Ok(Child {
        stderr: log_end,
        exit,
        process: started.process,
        job,
        _profile: profile,
        pid: started.pid,
    })
}

/// A user's profile, loaded for a session (LoadUserProfileW: the user's
/// registry hive and profile folder, which `APPDATA` and the like point
/// into) and unloaded when the session ends. Owns the logon token, which
/// the program is started with and UnloadUserProfile needs.
#[derive(Debug)]
struct Profile {
    token: OwnedHandle,
    handle: HANDLE,
}

// SAFETY: the profile handle is a registry key handle, usable from any
// thread; it is only passed to UnloadUserProfile, once, in drop.
unsafe impl Send for Profile {}

impl Profile {
    fn load(token: OwnedHandle, user: &Identity) -> io::Result<Self> {
        let mut name = wide_nul(OsStr::new(&user.user));
        // SAFETY: plain data; all zero is a valid starting value.
        let mut info = unsafe { std::mem::zeroed::<PROFILEINFOW>() };
        info.dwSize = std::mem::size_of::<PROFILEINFOW>() as u32;
        info.dwFlags = PI_NOUI;
        info.lpUserName = name.as_mut_ptr();
        // SAFETY: a valid token; `info` has its size set and points at a
        // NUL-terminated name that outlives the call.
        if unsafe { LoadUserProfileW(token.as_raw_handle(), &mut info) } == 0 {
            let error = last_error();
            return Err(io::Error::new(
                error.kind(),
                format!(
                    "cannot load the profile of user {}: {error}",
                    Quoted(&user.name)
                ),
            ));
        }
        Ok(Self {
            token,
            handle: info.hProfile,
        })
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        // SAFETY: the token and the profile handle LoadUserProfileW gave,
        // unloaded once. A failure (the hive is still in use) leaves the
        // profile to the system, which unloads it when it is no longer used.
        unsafe { UnloadUserProfile(self.token.as_raw_handle(), self.handle) };
    }
}

/// The environment a program run as the token's user starts with
/// (CreateEnvironmentBlock, without the daemon's own variables): the
/// system's variables and the user's, with `USERPROFILE`, `TEMP`,
/// `APPDATA` and `USERNAME` of that user.
fn user_environment_block(token: &OwnedHandle) -> io::Result<Vec<(OsString, OsString)>> {
    let mut block: *mut c_void = null_mut();
    // SAFETY: a valid token and a valid out pointer; FALSE: do not inherit
    // this process's environment.
    if unsafe { CreateEnvironmentBlock(&mut block, token.as_raw_handle(), 0) } == 0 {
        return Err(last_error());
    }
    let mut vars = Vec::new();
    let mut entry = block.cast::<u16>().cast_const();
    loop {
        // SAFETY: the block is a sequence of NUL-terminated UTF-16 strings
        // ended by an empty one; `entry` points at the start of one of them.
        let len = unsafe { (0..).take_while(|&i| *entry.add(i) != 0).count() };
        if len == 0 {
            break;
        }
        // SAFETY: `len` units are readable at `entry` (counted above).
        let units = unsafe { std::slice::from_raw_parts(entry, len) };
        // `=C:=C:\dir` and the like: a name may start with `=`.
        if let Some(eq) = units.iter().skip(1).position(|&u| u == u16::from(b'=')) {
            vars.push((
                OsString::from_wide(&units[..=eq]),
                OsString::from_wide(&units[eq + 2..]),
            ));
        }
        // SAFETY: the string's NUL is followed by the next string.
        entry = unsafe { entry.add(len + 1) };
    }
    // SAFETY: the block CreateEnvironmentBlock returned, freed once.
    unsafe { DestroyEnvironmentBlock(block) };
    Ok(vars)
}

/// An environment block from `base` with each of `layers` on top, in order
/// (a later one wins): names compare without regard to case, as Windows
/// does, and the block is sorted by name as CreateProcess documents
/// ("Changing Environment Variables"). Double-NUL-terminated UTF-16.
fn merge_env(base: Vec<(OsString, OsString)>, layers: &[&[(OsString, OsString)]]) -> Vec<u16> {
    fn key(name: &OsStr) -> Vec<u16> {
        name.to_string_lossy()
            .to_uppercase()
            .encode_utf16()
            .collect()
    }
    let mut vars: std::collections::BTreeMap<Vec<u16>, (OsString, OsString)> = base
        .into_iter()
        .map(|(name, value)| (key(&name), (name, value)))
        .collect();
    for layer in layers {
        for (name, value) in layer.iter() {
            vars.insert(key(name), (name.clone(), value.clone()));
        }
    }
    let mut block = Vec::new();
    for (name, value) in vars.values() {
        push_env(&mut block, name, value);
    }
    if block.is_empty() {
        block.push(0);
    }
    block.push(0);
    block
}

/// Logs `user` on for a batch job. The error names the user, never the
/// password, and the right to grant when that is the cause.
fn logon(user: &Identity) -> io::Result<OwnedHandle> {
    let name = wide_nul(OsStr::new(&user.user));
    let domain = user.domain.as_deref().map(|d| wide_nul(OsStr::new(d)));
    let mut password = wide_nul(OsStr::new(user.password.expose()));
    let mut token: HANDLE = null_mut();
    // SAFETY: NUL-terminated UTF-16 strings that outlive the call, and a
    // valid out pointer for the token.
    let ok = unsafe {
        LogonUserW(
            name.as_ptr(),
            domain.as_ref().map_or(null(), |d| d.as_ptr()),
            password.as_ptr(),
            LOGON32_LOGON_BATCH,
            LOGON32_PROVIDER_DEFAULT,
            &mut token,
        )
    };
    let error = last_error();
    password.fill(0);
    if ok == 0 {
        let hint = if error.raw_os_error() == Some(ERROR_LOGON_TYPE_NOT_GRANTED as i32) {
            "; grant the user the \"Log on as a batch job\" right"
        } else {
            ""
        };
        return Err(io::Error::new(
            error.kind(),
            format!(
                "cannot log on as user {}: {error}{hint}",
                Quoted(&user.name)
            ),
        ));
    }
    // SAFETY: LogonUserW succeeded, so `token` is a handle we own.
    Ok(unsafe { OwnedHandle::from_raw_handle(token as RawHandle) })
}

fn new_job() -> io::Result<OwnedHandle> {
    // SAFETY: null attributes and name are allowed.
    let job = unsafe { CreateJobObjectW(null(), null()) };
    if job.is_null() {
        return Err(last_error());
    }
    // SAFETY: a handle CreateJobObjectW just returned, owned by nobody else.
    let job = unsafe { OwnedHandle::from_raw_handle(job as RawHandle) };
    // SAFETY: plain data, all zero is a valid starting value.
    let mut limits = unsafe { std::mem::zeroed::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() };
    limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
    // SAFETY: a valid job handle and a pointer to a structure of the size given.
    let ok = unsafe {
        SetInformationJobObject(
            job.as_raw_handle(),
            JobObjectExtendedLimitInformation,
            (&limits as *const JOBOBJECT_EXTENDED_LIMIT_INFORMATION).cast(),
            std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
        )
    };
    if ok == 0 {
        return Err(last_error());
    }
    Ok(job)
}

fn set_inheritable(handle: HANDLE) -> io::Result<()> {
    // SAFETY: a valid handle; only its inherit flag changes. Only children
    // that list it in their handle list receive it.
    if unsafe { SetHandleInformation(handle, HANDLE_FLAG_INHERIT, HANDLE_FLAG_INHERIT) } == 0 {
        return Err(last_error());
    }
    Ok(())
}

struct Started {
    process: OwnedHandle,
    pid: u32,
}

/// A `PROC_THREAD_ATTRIBUTE_LIST` with one attribute, deleted on drop.
struct AttributeList {
    buf: Vec<u64>,
}

impl AttributeList {
    fn new() -> io::Result<Self> {
        let mut size = 0usize;
        // SAFETY: the documented size query: a null list and a valid size
        // pointer (it fails with ERROR_INSUFFICIENT_BUFFER and sets `size`).
        unsafe { InitializeProcThreadAttributeList(null_mut(), 1, 0, &mut size) };
        let mut list = Self {
            buf: vec![0u64; size.div_ceil(8)],
        };
        // SAFETY: the buffer has at least `size` bytes, 8-byte aligned.
        if unsafe { InitializeProcThreadAttributeList(list.as_ptr(), 1, 0, &mut size) } == 0 {
            list.buf = Vec::new();
            return Err(last_error());
        }
        Ok(list)
    }

    fn as_ptr(&mut self) -> LPPROC_THREAD_ATTRIBUTE_LIST {
        self.buf.as_mut_ptr().cast()
    }
}

impl Drop for AttributeList {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            // SAFETY: the list was initialised and is deleted once.
            unsafe { DeleteProcThreadAttributeList(self.as_ptr()) };
        }
    }
}

/// A child's STARTUPINFOEXW: its standard handles, the handle list, and
/// for a program run as another user `lpDesktop = ""`, so that the system
/// connects it to the window station and desktop of its own logon session
/// (STARTUPINFOW, "lpDesktop"). Without it the program inherits the
/// service's (`WinSta0` under LocalSystem, or `Service-0x0-3e7$`), which
/// the user cannot open. A program run as the daemon's account keeps the
/// daemon's (null).
struct Startup {
    info: STARTUPINFOEXW,
    /// The empty desktop name `info.StartupInfo.lpDesktop` points at; in a
    /// box so that the pointer stays valid when `Startup` moves.
    _desktop: Box<[u16; 1]>,
}

impl Startup {
    fn new(std: [HANDLE; 3], attributes: &mut AttributeList, run_as: bool) -> Self {
        let mut desktop = Box::new([0u16; 1]);
        // SAFETY: plain data, all zero is a valid starting value.
        let mut info = unsafe { std::mem::zeroed::<STARTUPINFOEXW>() };
        info.StartupInfo.cb = std::mem::size_of::<STARTUPINFOEXW>() as u32;
        info.StartupInfo.dwFlags = STARTF_USESTDHANDLES;
        info.StartupInfo.hStdInput = std[0];
        info.StartupInfo.hStdOutput = std[1];
        info.StartupInfo.hStdError = std[2];
        if run_as {
            info.StartupInfo.lpDesktop = desktop.as_mut_ptr();
        }
        info.lpAttributeList = attributes.as_ptr();
        Self {
            info,
            _desktop: desktop,
        }
    }
}

/// CreateProcess(AsUser)W with exactly `std`'s handles inherited, suspended
/// until it has joined `job`.
fn create_process(
    spec: &ChildSpec,
    env: &[u16],
    token: Option<&OwnedHandle>,
    std: [HANDLE; 3],
    job: &OwnedHandle,
) -> io::Result<Started> {
    let mut inherit: Vec<HANDLE> = Vec::with_capacity(3);
    for handle in std {
        if !inherit.contains(&handle) {
            inherit.push(handle);
        }
    }
    let mut attributes = AttributeList::new()?;
    // SAFETY: an initialised list; the handle array outlives the
    // CreateProcess call below (the list only points at it).
    let ok = unsafe {
        UpdateProcThreadAttribute(
            attributes.as_ptr(),
            0,
            PROC_THREAD_ATTRIBUTE_HANDLE_LIST as usize,
            inherit.as_ptr().cast::<c_void>(),
            inherit.len() * std::mem::size_of::<HANDLE>(),
            null_mut(),
            null(),
        )
    };
    if ok == 0 {
        return Err(last_error());
    }
    let startup = Startup::new(std, &mut attributes, token.is_some());
    let mut command_line: Vec<u16> = spec.command_line.clone();
    command_line.push(0);
    let flags = CREATE_UNICODE_ENVIRONMENT
        | EXTENDED_STARTUPINFO_PRESENT
        | CREATE_SUSPENDED
        | CREATE_NEW_PROCESS_GROUP
        | CREATE_NO_WINDOW;
    let current_dir = spec.working_dir.as_ref().map_or(null(), |d| d.as_ptr());
    // SAFETY: plain data that CreateProcess fills in.
    let mut info = unsafe { std::mem::zeroed::<PROCESS_INFORMATION>() };
    let created = match token {
        // SAFETY: NUL-terminated application name, a mutable NUL-terminated
        // command line, a double-NUL-terminated UTF-16 environment, a
        // STARTUPINFOEXW whose size is in `cb`, all alive for the call.
        None => unsafe {
            CreateProcessW(
                spec.application.as_ptr(),
                command_line.as_mut_ptr(),
                null(),
                null(),
                1,
                flags,
                env.as_ptr().cast(),
                current_dir,
                &startup.info.StartupInfo,
                &mut info,
            )
        },
        // SAFETY: as above, with a primary token from LogonUserW; the
        // desktop name `lpDesktop` points at lives in `startup`.
        Some(token) => unsafe {
            CreateProcessAsUserW(
                token.as_raw_handle(),
                spec.application.as_ptr(),
                command_line.as_mut_ptr(),
                null(),
                null(),
                1,
                flags,
                env.as_ptr().cast(),
                current_dir,
                &startup.info.StartupInfo,
                &mut info,
            )
        },
    };
    drop(startup);
    if created == 0 {
        let error = last_error();
        return Err(match (token, &spec.user) {
            (Some(_), Some(user)) => {
                let hint = if error.raw_os_error() == Some(ERROR_PRIVILEGE_NOT_HELD as i32) {
                    "; wininetd's account needs the \"Replace a process level token\" right \
                     (LocalSystem has it)"
                } else {
                    ""
                };
                io::Error::new(
                    error.kind(),
                    format!(
                        "cannot start the program as user {}: {error}{hint}",
                        Quoted(&user.name)
                    ),
                )
            }
            _ => error,
        });
    }
    // SAFETY: CreateProcess succeeded: both handles are ours.
    let (process, thread) = unsafe {
        (
            OwnedHandle::from_raw_handle(info.hProcess as RawHandle),
            OwnedHandle::from_raw_handle(info.hThread as RawHandle),
        )
    };
    // SAFETY: valid job and process handles.
    if unsafe { AssignProcessToJobObject(job.as_raw_handle(), process.as_raw_handle()) } == 0 {
        let error = last_error();
        // SAFETY: a valid process handle; the process never ran.
        unsafe { TerminateProcess(process.as_raw_handle(), 1) };
        return Err(error);
    }
    // SAFETY: a valid thread handle of the suspended process.
    if unsafe { ResumeThread(thread.as_raw_handle()) } == u32::MAX {
        let error = last_error();
        // SAFETY: as above.
        unsafe { TerminateProcess(process.as_raw_handle(), 1) };
        return Err(error);
    }
    Ok(Started {
        process,
        pid: info.dwProcessId,
    })
}

/// Notice of a process's exit from the system thread pool
/// (RegisterWaitForSingleObject), so that a thousand sessions need no
/// thousand threads.
#[derive(Debug)]
struct ExitWait {
    wait: HANDLE,
    /// The sender given to the callback, freed by the callback when it runs.
    context: *mut oneshot::Sender<()>,
    rx: oneshot::Receiver<()>,
    fired: bool,
}

// SAFETY: the wait handle and the context pointer are used only through
// `&mut self` or in drop; the thread pool's use of the context is
// synchronised by UnregisterWaitEx(INVALID_HANDLE_VALUE).
unsafe impl Send for ExitWait {}

unsafe extern "system" fn process_exited(context: *mut c_void, _timed_out: bool) {
    // SAFETY: `context` is the Box leaked in `register`; WT_EXECUTEONLYONCE
    // runs this at most once, and `drop` frees the Box only if it did not run.
    let tx = unsafe { Box::from_raw(context.cast::<oneshot::Sender<()>>()) };
    let _ = tx.send(());
}

impl ExitWait {
    fn register(process: &OwnedHandle) -> io::Result<Self> {
        let (tx, rx) = oneshot::channel();
        let context = Box::into_raw(Box::new(tx));
        let mut wait: HANDLE = null_mut();
        // SAFETY: a valid process handle that outlives the wait (see
        // `Child`'s field order), a callback of the right type, and a
        // context it owns.
        let ok = unsafe {
            RegisterWaitForSingleObject(
                &mut wait,
                process.as_raw_handle(),
                Some(process_exited),
                context.cast::<c_void>(),
                INFINITE,
                WT_EXECUTEONLYONCE,
            )
        };
        if ok == 0 {
            let error = last_error();
            // SAFETY: the registration failed, so the callback never runs.
            drop(unsafe { Box::from_raw(context) });
            return Err(error);
        }
        Ok(Self {
            wait,
            context,
            rx,
            fired: false,
        })
    }

    async fn exited(&mut self) {
        if !self.fired {
            let _ = (&mut self.rx).await;
            self.fired = true;
        }
    }
}

impl Drop for ExitWait {
    fn drop(&mut self) {
        // SAFETY: a registered wait; INVALID_HANDLE_VALUE makes the call
        // wait for a running callback to finish.
        unsafe { UnregisterWaitEx(self.wait, INVALID_HANDLE_VALUE) };
        if !self.fired && matches!(self.rx.try_recv(), Err(oneshot::error::TryRecvError::Empty)) {
            // SAFETY: the callback did not run and never will: the Box is
            // still ours.
            drop(unsafe { Box::from_raw(self.context) });
        }
    }
}

/// A connection and the daemon's ends of a program's pipes: the relay of
/// `stdio = "pipe"`, copying through a buffer, with overlapped I/O.
#[derive(Debug)]
pub struct Relay {
    stream: tokio::net::TcpStream,
    to_child: NamedPipeServer,
    from_child: NamedPipeServer,
    timeout: Option<Duration>,
}

/// The program's ends of a relay's pipes: synchronous and inheritable, as
/// a program's standard handles must be.
#[derive(Debug)]
pub struct ChildEnds {
    stdin: OwnedHandle,
    stdout: OwnedHandle,
}

impl Relay {
    /// Makes the pipes and registers the daemon's ends (on the runtime's
    /// thread). `timeout` bounds each wait on the connection.
    pub fn new(socket: Socket, timeout: Option<Duration>) -> io::Result<(Self, ChildEnds)> {
        // The daemon's close is the last one here: with a linger timeout,
        // closing a non-blocking socket would fail and leave it open
        // (WSAEWOULDBLOCK).
        socket.set_linger(None)?;
        let (to_child, stdin) = pipe(Direction::ToChild)?;
        let (from_child, stdout) = pipe(Direction::FromChild)?;
        let stream = std::net::TcpStream::from(socket);
        stream.set_nonblocking(true)?;
        let relay = Self {
            stream: tokio::net::TcpStream::from_std(stream)?,
            to_child,
            from_child,
            timeout,
        };
        Ok((relay, ChildEnds { stdin, stdout }))
    }

    /// Relays until the program's output ends.
    pub async fn run(self) {
        // The program's ends were opened when the pipes were made, so each
        // connect returns at once.
        if self.to_child.connect().await.is_ok() && self.from_child.connect().await.is_ok() {
            relay::relay(self.stream, self.to_child, self.from_child, self.timeout).await;
        }
    }
}

/// The daemon's ends of a program's stdin and stdout pipes, async, for a
/// relay that moves the bytes itself (TLS).
#[derive(Debug)]
pub struct Pipes {
    pub to_child: NamedPipeServer,
    pub from_child: NamedPipeServer,
}

impl Pipes {
    /// Makes the pipes: the daemon's ends (on the runtime's thread), and
    /// the program's.
    pub fn new() -> io::Result<(Self, ChildEnds)> {
        let (to_child, stdin) = pipe(Direction::ToChild)?;
        let (from_child, stdout) = pipe(Direction::FromChild)?;
        Ok((
            Self {
                to_child,
                from_child,
            },
            ChildEnds { stdin, stdout },
        ))
    }

    /// Waits until the program's ends are connected (they were opened when
    /// the pipes were made, so this returns at once).
    pub async fn connect(&self) -> io::Result<()> {
        self.to_child.connect().await?;
        self.from_child.connect().await
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToChild,
    FromChild,
}

/// A pipe whose daemon end is overlapped (for the runtime) and whose
/// child end is synchronous and inheritable (a child's standard handle).
fn pipe(direction: Direction) -> io::Result<(NamedPipeServer, OwnedHandle)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        r"\\.\pipe\wininetd-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let inbound = direction == Direction::FromChild;
    let server = ServerOptions::new()
        .first_pipe_instance(true)
        .reject_remote_clients(true)
        .max_instances(1)
        .access_inbound(inbound)
        .access_outbound(!inbound)
        .in_buffer_size(64 * 1024)
        .out_buffer_size(64 * 1024)
        .create(&name)?;
    let attributes = SECURITY_ATTRIBUTES {
        nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: null_mut(),
        bInheritHandle: 1,
    };
    let access = if inbound { GENERIC_WRITE } else { GENERIC_READ };
    let wide = wide_nul(OsStr::new(&name));
    // SAFETY: a NUL-terminated name and valid security attributes.
    let client = unsafe {
        CreateFileW(
            wide.as_ptr(),
            access,
            0,
            &attributes,
            OPEN_EXISTING,
            0,
            null_mut(),
        )
    };
    if client == INVALID_HANDLE_VALUE {
        return Err(last_error());
    }
    // SAFETY: CreateFileW succeeded: the handle is ours.
    Ok((server, unsafe {
        OwnedHandle::from_raw_handle(client as RawHandle)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use windows_sys::Win32::Security::{TOKEN_DUPLICATE, TOKEN_IMPERSONATE, TOKEN_QUERY};
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

    fn os(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    /// The block's `K=V` strings, in order.
    fn entries(block: &[u16]) -> Vec<String> {
        assert_eq!(&block[block.len() - 2..], [0, 0], "double NUL at the end");
        block[..block.len() - 2]
            .split(|&u| u == 0)
            .map(|e| String::from_utf16(e).expect("UTF-16"))
            .collect()
    }

    /// Regression test for WinInetd's (and our) run-as children on the
    /// service's window station: a program run as another user gets
    /// `lpDesktop = ""`; one run as the daemon's account keeps the
    /// daemon's (null). (Wine shows neither effect: it has one window
    /// station for everybody.)
    #[test]
    fn a_run_as_program_gets_its_own_logon_sessions_desktop() {
        let std = [null_mut(); 3];
        let mut attributes = AttributeList::new().expect("attribute list");
        let startup = Startup::new(std, &mut attributes, true);
        let desktop = startup.info.StartupInfo.lpDesktop;
        assert!(!desktop.is_null(), "lpDesktop is set");
        // SAFETY: points at the one-unit buffer `startup` owns.
        assert_eq!(unsafe { *desktop }, 0, "an empty string");
        assert_eq!(
            startup.info.StartupInfo.cb as usize,
            std::mem::size_of::<STARTUPINFOEXW>()
        );
        assert_eq!(startup.info.StartupInfo.dwFlags, STARTF_USESTDHANDLES);
        let moved = startup;
        // SAFETY: as above; the buffer is boxed, so moving keeps it valid.
        assert_eq!(unsafe { *moved.info.StartupInfo.lpDesktop }, 0);

        let own = Startup::new(std, &mut attributes, false);
        assert!(own.info.StartupInfo.lpDesktop.is_null());
    }

    /// The service's `env`, then the connection's variables, go on top of
    /// the user's environment; names compare without regard to case, and
    /// the block is sorted.
    #[test]
    fn the_user_environment_is_merged_under_the_service_and_the_connection() {
        let base = os(&[
            ("Path", r"C:\Windows"),
            ("TEMP", r"C:\Users\alice\AppData\Local\Temp"),
            ("USERPROFILE", r"C:\Users\alice"),
            ("=C:", r"C:\"),
            ("client_ip", "forged by the user's registry"),
        ]);
        let service = os(&[("PATH", r"C:\tools"), ("GREETING", "hello")]);
        let client = os(&[("CLIENT_IP", "192.0.2.1"), ("CLIENT_PORT", "5000")]);
        let block = merge_env(base, &[&service, &client]);
        assert_eq!(
            entries(&block),
            [
                r"=C:=C:\",
                "CLIENT_IP=192.0.2.1",
                "CLIENT_PORT=5000",
                "GREETING=hello",
                r"PATH=C:\tools",
                r"TEMP=C:\Users\alice\AppData\Local\Temp",
                r"USERPROFILE=C:\Users\alice",
            ]
        );
        assert_eq!(entries(&merge_env(Vec::new(), &[])), [""], "an empty block");
    }

    /// CreateEnvironmentBlock gives the token's user's variables, not the
    /// daemon's: tried with this process's own token (Wine's LogonUserW
    /// token cannot run a program, see shared/wine.md).
    #[test]
    fn the_user_environment_block_is_the_users_not_the_daemons() {
        let mut raw: HANDLE = null_mut();
        // SAFETY: the current process's pseudo handle and a valid out
        // pointer.
        let ok = unsafe {
            OpenProcessToken(
                GetCurrentProcess(),
                TOKEN_QUERY | TOKEN_DUPLICATE | TOKEN_IMPERSONATE,
                &mut raw,
            )
        };
        assert_ne!(ok, 0, "{}", last_error());
        // SAFETY: OpenProcessToken succeeded: the handle is ours.
        let token = unsafe { OwnedHandle::from_raw_handle(raw as RawHandle) };
        let vars = user_environment_block(&token).expect("CreateEnvironmentBlock");
        let names: Vec<String> = vars
            .iter()
            .map(|(k, _)| k.to_string_lossy().to_uppercase())
            .collect();
        for expected in ["USERPROFILE", "TEMP", "APPDATA"] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
        // Cargo gives this test process CARGO_MANIFEST_DIR; the user's
        // environment has no such variable.
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        assert!(
            !names.iter().any(|n| n == "CARGO_MANIFEST_DIR"),
            "the daemon's own environment leaked: {names:?}"
        );
    }
}
