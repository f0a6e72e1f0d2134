//! `--install` / `--remove` on Linux: the systemd unit that keeps wininetd's
//! parameters, as the original's Windows service did.
//!
//! WinInetd 0.7 registered a Windows service whose extra parameters
//! (`--cfgfile`, `--timeout`, ...) persisted. Here the same parameters go on
//! the `ExecStart=` line of `ROOT/etc/systemd/system/wininetd.service`, and the
//! unit is enabled with `systemctl` when it is on `PATH`. Installing again
//! rewrites the unit (new parameters replace the old ones); removing disables
//! and deletes it.
//!
//! This module owns the unit's text, its quoting (systemd's command-line syntax
//! is not the shell's), the atomic write and the `systemctl` calls. It does not
//! decide which parameters persist or make them absolute: the caller
//! (`main`) does, and hands over an [`InstallSpec`].

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use crate::platform::pidfile::{DEFAULT_PIDFILE, PidFileError, read_pid};

/// The unit's file name, and the name `systemctl` knows it by.
const UNIT_NAME: &str = "wininetd.service";

/// Where unit files written by the administrator live (systemd.unit(5),
/// "Unit File Load Path"); relative to the root.
const UNIT_DIR: &str = "etc/systemd/system";

/// The target the unit is wanted by; `systemctl enable` links the unit into
/// `UNIT_DIR/TARGET.wants/`.
const WANTED_BY: &str = "multi-user.target";

/// wininetd's own default for `--shutdown-grace` (see the CLI): how long it
/// waits after SIGTERM-ing the sessions before SIGKILL-ing them.
const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = super::super::DEFAULT_SHUTDOWN_GRACE_SECS as u64;

/// What systemd waits beyond the shutdown grace before it SIGKILLs whatever is
/// left: time for the daemon to kill the sessions, reap them and exit itself.
const STOP_MARGIN_SECS: u64 = 10;

/// Where and what to install.
#[derive(Debug)]
pub struct InstallSpec {
    /// Prefix for every path written (`/` normally).
    pub root: PathBuf,
    /// Absolute path of the wininetd executable to run.
    pub exe: PathBuf,
    /// The daemon parameters to persist, already normalised by the caller
    /// (e.g. ["--cfgfile", "/srv/x.conf", "--timeout", "30"]); paths in them are absolute.
    pub args: Vec<OsString>,
    /// `--auto-start`/`--demand-start`: a Windows choice. On Linux the
    /// unit is always enabled (started at boot) where systemctl is present.
    pub start: Option<crate::platform::StartType>,
    /// Services that would get `--timeout` on a socket handed to their
    /// program: a Windows concern (Unix sockets honour the timeout).
    pub socket_timeouts: Vec<String>,
}

/// Why installing or removing the unit failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// `--root` could not be made absolute (the current directory is gone).
    #[error("cannot resolve the root directory {}", .path.display())]
    Root {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// systemd runs programs by absolute path only (or a name it looks up in
    /// its own fixed path, which would not be this executable).
    #[error("the executable path {} is not absolute", .path.display())]
    ExeNotAbsolute { path: PathBuf },
    /// systemd refuses a program path with `..` in it.
    #[error("the executable path {} contains `..`, which systemd refuses", .path.display())]
    ExeNotNormalized { path: PathBuf },
    /// `$$` unescapes to `$` in arguments but not in the program path
    /// (systemd.service(5): "the program to execute may not be a variable"),
    /// so such a path cannot be written at all.
    #[error(
        "the executable path {path:?} contains `$`, which systemd cannot take literally in a program path"
    )]
    ExeDollar { path: String },
    /// Unit files are UTF-8.
    #[error("{what} {value:?} is not valid UTF-8, which a systemd unit file must be")]
    NotUtf8 { what: String, value: OsString },
    /// A newline would end the `ExecStart=` line; systemd forbids control
    /// characters in command lines anyway.
    #[error(
        "{what} {value:?} contains a control character (newline, tab...), which a systemd command line cannot carry"
    )]
    ControlCharacter { what: String, value: String },
    /// `TimeoutStopSec=` is derived from `--shutdown-grace`.
    #[error("--shutdown-grace {value:?} is not a whole number of seconds")]
    ShutdownGrace { value: String },
    #[error("cannot create directory {}", .path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot delete {}", .path.display())]
    Delete {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `--remove` with no unit: the original's "service not installed".
    #[error("the service is not installed: {} does not exist", .path.display())]
    NotInstalled { path: PathBuf },
    /// `--reload` found neither an active systemd unit nor a pid file.
    #[error(
        "no running wininetd found: {UNIT_NAME} is not active under systemd and there is no {}. \
         A wininetd started otherwise writes {} when it runs as root without --debug, or the file \
         given with --pidfile FILE: give the same --pidfile FILE to --reload, or send the daemon \
         SIGHUP yourself (`kill -HUP PID`)",
        DEFAULT_PIDFILE,
        DEFAULT_PIDFILE
    )]
    NoDaemon,
    #[error(transparent)]
    PidFile(#[from] PidFileError),
    /// The pid file names no process (the daemon stopped without removing
    /// it, e.g. killed).
    #[error("the pid file {} names process {pid}, which is not running", .path.display())]
    NotRunning { path: PathBuf, pid: u32 },
    /// The pid file names a process that is not wininetd: signalling it
    /// could end it (SIGHUP's default action), so `--reload` refuses.
    #[error("the pid file {} names process {pid}, which is {what}, not wininetd", .path.display())]
    NotWininetd {
        path: PathBuf,
        pid: u32,
        what: String,
    },
    #[error("cannot send SIGHUP to wininetd (pid {pid})")]
    Signal {
        pid: u32,
        #[source]
        source: io::Error,
    },
    /// `systemctl` is on `PATH` but could not be started.
    #[error("cannot run `{command}`")]
    RunSystemctl {
        command: String,
        #[source]
        source: io::Error,
    },
    /// `systemctl` ran and failed; `stderr` is what it said.
    #[error("`{command}` failed ({status}){}", stderr_suffix(.stderr))]
    Systemctl {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// Writes (or rewrites) ROOT/etc/systemd/system/wininetd.service and enables it
/// with `systemctl [--root ROOT] enable wininetd.service` when systemctl is on PATH
/// (`--root` only when root != "/"; when root == "/" also `systemctl daemon-reload`
/// first, whose failure — systemd not running — is only reported as a note).
/// Returns human-readable lines describing what was done (path written, enabled or why not).
pub fn install(spec: &InstallSpec) -> Result<Vec<String>, InstallError> {
    install_with(spec, OsStr::new("systemctl"))
}

/// Finds the running daemon and asks it to reload its config once
/// `check` has passed the config it will read; `check` gets the daemon's
/// parameters (without the program name) and working directory, when they
/// can be read (`/proc`), to check with them.
///
/// The daemon is, in this order: the process `pidfile` names (when given);
/// the main process of the active unit `wininetd.service`, asked with
/// `systemctl reload` (its ExecReload sends SIGHUP, and systemd shows the
/// unit reloading); the process [`DEFAULT_PIDFILE`] names. A pid file must
/// name a running wininetd, or nothing is sent.
pub fn request_reload(
    pidfile: Option<&Path>,
    check: &mut crate::platform::ReloadCheck<'_>,
) -> Result<Vec<String>, crate::Error> {
    request_reload_with(
        pidfile,
        check,
        OsStr::new("systemctl"),
        Path::new(DEFAULT_PIDFILE),
    )
}

/// [`request_reload`] with the `systemctl` program and the default pid
/// file as parameters, for tests.
fn request_reload_with(
    pidfile: Option<&Path>,
    check: &mut crate::platform::ReloadCheck<'_>,
    systemctl: &OsStr,
    default_pidfile: &Path,
) -> Result<Vec<String>, crate::Error> {
    if let Some(path) = pidfile {
        return reload_by_pidfile(path, check);
    }
    let ctl = Systemctl::new(systemctl, Path::new("/"));
    if let Some(pid) = ctl.main_pid(UNIT_NAME) {
        let (args, cwd) = command_line(pid);
        check(args.as_deref(), cwd.as_deref())?;
        match ctl.run(&["reload", UNIT_NAME])? {
            Ran::Done => {
                return Ok(vec![format!(
                    "asked {UNIT_NAME} (pid {pid}) to reload its config; its log says whether \
                     the reload applied"
                )]);
            }
            Ran::NotFound => {}
        }
    }
    if fs::symlink_metadata(default_pidfile).is_ok() {
        return reload_by_pidfile(default_pidfile, check);
    }
    Err(InstallError::NoDaemon.into())
}

/// Checks and signals the wininetd that the pid file at `path` names.
fn reload_by_pidfile(
    path: &Path,
    check: &mut crate::platform::ReloadCheck<'_>,
) -> Result<Vec<String>, crate::Error> {
    let pid = read_pid(path).map_err(InstallError::from)?;
    is_wininetd(path, pid)?;
    let (args, cwd) = command_line(pid);
    check(args.as_deref(), cwd.as_deref())?;
    let target = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("read_pid bounds it"));
    nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGHUP).map_err(|e| {
        InstallError::Signal {
            pid,
            source: e.into(),
        }
    })?;
    Ok(vec![format!(
        "asked wininetd (pid {pid}, from {}) to reload its config; its log says whether the \
         reload applied",
        path.display()
    )])
}

/// Whether process `pid` (named by the pid file at `path`) is a running
/// wininetd: its executable has this program's file name (or
/// `wininetd`). Anything else is refused: SIGHUP ends most programs.
fn is_wininetd(path: &Path, pid: u32) -> Result<(), InstallError> {
    let not_running = || InstallError::NotRunning {
        path: path.to_owned(),
        pid,
    };
    if pid == std::process::id() {
        return Err(InstallError::NotWininetd {
            path: path.to_owned(),
            pid,
            what: "this --reload itself".to_owned(),
        });
    }
    let name = process_name(pid).ok_or_else(not_running)?;
    let ours = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.file_name()?.to_string_lossy().into_owned()));
    if name == "wininetd" || Some(&name) == ours.as_ref() {
        Ok(())
    } else {
        Err(InstallError::NotWininetd {
            path: path.to_owned(),
            pid,
            what: format!("`{name}`"),
        })
    }
}

/// The file name of process `pid`'s executable, `None` if there is no
/// such process. Linux: `/proc/PID/exe` (an executable replaced since it
/// started reads `NAME (deleted)`), else `/proc/PID/comm`, which an
/// unprivileged caller may read for another user's process; elsewhere,
/// `ps -o comm=`.
fn process_name(pid: u32) -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        if let Ok(exe) = fs::read_link(proc.join("exe")) {
            let name = exe.file_name()?.to_string_lossy().into_owned();
            return Some(name.strip_suffix(" (deleted)").unwrap_or(&name).to_owned());
        }
        let comm = fs::read_to_string(proc.join("comm")).ok()?;
        Some(comm.trim_end_matches('\n').to_owned())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let out = Command::new("ps")
            .args(["-o", "comm=", "-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let name = Path::new(&name).file_name()?.to_string_lossy().into_owned();
        (out.status.success() && !name.is_empty()).then_some(name)
    }
}

/// Process `pid`'s arguments after the program name, and its working
/// directory, where the system shows them (`/proc` on Linux).
fn command_line(pid: u32) -> (Option<Vec<OsString>>, Option<PathBuf>) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStringExt as _;
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let args = fs::read(proc.join("cmdline")).ok().map(|bytes| {
            bytes
                .split(|&b| b == 0)
                .skip(1)
                .map(|arg| OsString::from_vec(arg.to_vec()))
                .collect::<Vec<_>>()
        });
        // The last argument ends with a NUL too: drop the empty piece.
        let args = args.map(|mut args| {
            if args.last().is_some_and(|a| a.is_empty()) {
                args.pop();
            }
            args
        });
        (args, fs::read_link(proc.join("cwd")).ok())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        (None, None)
    }
}

/// Disables (systemctl [--root ROOT] disable, when present; stop first with `systemctl stop`
/// when root == "/", failure tolerated) and deletes the unit.
/// Removing when nothing is installed is an error saying so (like the original's "service not installed").
pub fn remove(root: &Path) -> Result<Vec<String>, InstallError> {
    remove_with(root, OsStr::new("systemctl"))
}

/// [`install`] with the `systemctl` program as a parameter, so tests can make
/// it absent.
fn install_with(spec: &InstallSpec, systemctl: &OsStr) -> Result<Vec<String>, InstallError> {
    let text = render_unit(&spec.exe, &spec.args)?;
    let root = absolute_root(&spec.root)?;
    let unit = root.join(UNIT_DIR).join(UNIT_NAME);

    let previous = match fs::read(&unit) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(source) => return Err(InstallError::Read { path: unit, source }),
    };
    write_atomically(&unit, text.as_bytes())?;
    let mut lines = vec![match &previous {
        None => format!("created {}", unit.display()),
        Some(old) if *old == text.as_bytes() => format!("rewrote {} (unchanged)", unit.display()),
        Some(_) => format!("updated {}", unit.display()),
    }];

    let ctl = Systemctl::new(systemctl, &root);
    if ctl.live() {
        // The manager reads unit files only when told to; without this,
        // `systemctl restart` would run the old ExecStart.
        if let Err(e) = ctl.run(&["daemon-reload"]) {
            lines.push(format!(
                "note: {} (systemd is not running?); the unit takes effect when it is",
                chain(&e)
            ));
        }
    }
    match ctl.run(&["enable", UNIT_NAME])? {
        Ran::Done if ctl.live() => {
            let verb = if previous.is_some() {
                "restart"
            } else {
                "start"
            };
            lines.push(format!(
                "enabled {UNIT_NAME}: it starts at boot; {verb} it now with `systemctl {verb} {UNIT_NAME}`"
            ));
        }
        Ran::Done => lines.push(format!("enabled {UNIT_NAME} in {}", root.display())),
        Ran::NotFound => lines.push(format!(
            "systemctl not found on PATH: {UNIT_NAME} is not enabled"
        )),
    }
    Ok(lines)
}

/// [`remove`] with the `systemctl` program as a parameter, so tests can make
/// it absent.
fn remove_with(root: &Path, systemctl: &OsStr) -> Result<Vec<String>, InstallError> {
    let root = absolute_root(root)?;
    let unit = root.join(UNIT_DIR).join(UNIT_NAME);
    match fs::symlink_metadata(&unit) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(InstallError::NotInstalled { path: unit });
        }
        Err(source) => return Err(InstallError::Read { path: unit, source }),
    }

    let mut lines = Vec::new();
    let ctl = Systemctl::new(systemctl, &root);
    if ctl.live() {
        // Stopping a unit that is not running succeeds; failing here means
        // systemd itself is not running, and then there is nothing to stop.
        match ctl.run(&["stop", UNIT_NAME]) {
            Ok(Ran::Done) => lines.push(format!("stopped {UNIT_NAME}")),
            Ok(Ran::NotFound) => {}
            Err(e) => lines.push(format!("note: {}; continuing", chain(&e))),
        }
    }
    // Disabling reads the unit's [Install] section, so it goes before the delete.
    match ctl.run(&["disable", UNIT_NAME])? {
        Ran::Done => lines.push(format!("disabled {UNIT_NAME}")),
        Ran::NotFound => {
            // What `systemctl enable` did on an earlier install, undone by hand.
            let wants = root.join(UNIT_DIR).join(format!("{WANTED_BY}.wants"));
            let link = wants.join(UNIT_NAME);
            let is_link = fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink());
            if is_link {
                fs::remove_file(&link).map_err(|source| InstallError::Delete {
                    path: link.clone(),
                    source,
                })?;
                // Only if empty, as systemctl does.
                let _ = fs::remove_dir(&wants);
                lines.push(format!(
                    "systemctl not found on PATH: deleted the link {}",
                    link.display()
                ));
            } else {
                lines.push(format!(
                    "systemctl not found on PATH: {UNIT_NAME} was not enabled"
                ));
            }
        }
    }

    fs::remove_file(&unit).map_err(|source| InstallError::Delete {
        path: unit.clone(),
        source,
    })?;
    lines.push(format!("deleted {}", unit.display()));

    if ctl.live() {
        if let Err(e) = ctl.run(&["daemon-reload"]) {
            lines.push(format!("note: {}", chain(&e)));
        }
    }
    Ok(lines)
}

/// The unit file for running `exe` with `args`.
fn render_unit(exe: &Path, args: &[OsString]) -> Result<String, InstallError> {
    let exec_start = exec_start(exe, args)?;
    let stop_timeout = shutdown_grace(args)?.saturating_add(STOP_MARGIN_SECS);
    let mut unit = String::new();
    // `write!` into a String cannot fail.
    let _ = write!(
        unit,
        "\
# Generated by `wininetd --install`: running it again overwrites this file and
# `wininetd --remove` deletes it. To change wininetd's parameters, run
# `wininetd --install` again with the new ones; put other local settings in a
# drop-in (`systemctl edit {UNIT_NAME}`), which both leave alone.

[Unit]
Description=wininetd super-server
After=network.target

[Service]
# wininetd stays in the foreground and sends READY=1 once every port is bound.
Type=notify
ExecStart={exec_start}
# SIGTERM to wininetd alone: it closes its ports, SIGTERMs each session's
# process group and SIGKILLs them after --shutdown-grace. systemd SIGKILLs
# whatever is left only if that has not finished within TimeoutStopSec.
KillMode=mixed
# SIGHUP reloads the config (`systemctl reload wininetd`, `wininetd --reload`).
ExecReload=/bin/kill -HUP $MAINPID
TimeoutStopSec={stop_timeout}
Restart=on-failure
RestartSec=2

[Install]
WantedBy={WANTED_BY}
"
    );
    Ok(unit)
}

/// The `ExecStart=` value: `exe` and `args`, each quoted for systemd.
fn exec_start(exe: &Path, args: &[OsString]) -> Result<String, InstallError> {
    if !exe.is_absolute() {
        return Err(InstallError::ExeNotAbsolute {
            path: exe.to_owned(),
        });
    }
    if exe.components().any(|c| c == Component::ParentDir) {
        return Err(InstallError::ExeNotNormalized {
            path: exe.to_owned(),
        });
    }
    // Rebuilding from components drops `//`, `/./` and a trailing `/`, which
    // systemd would also refuse as "not normalized".
    let exe: PathBuf = exe.components().collect();
    let exe_str = checked_str("the executable path", exe.as_os_str())?;
    if exe_str.contains('$') {
        return Err(InstallError::ExeDollar {
            path: exe_str.to_owned(),
        });
    }
    let mut line = quote_word(exe_str);
    for (i, arg) in args.iter().enumerate() {
        let arg = checked_str(&format!("daemon parameter {}", i + 1), arg)?;
        line.push(' ');
        line.push_str(&quote_word(arg));
    }
    Ok(line)
}

/// `value` as UTF-8 without control characters, or why not.
fn checked_str<'a>(what: &str, value: &'a OsStr) -> Result<&'a str, InstallError> {
    let s = value.to_str().ok_or_else(|| InstallError::NotUtf8 {
        what: what.to_owned(),
        value: value.to_owned(),
    })?;
    if s.chars().any(char::is_control) {
        return Err(InstallError::ControlCharacter {
            what: what.to_owned(),
            value: s.to_owned(),
        });
    }
    Ok(s)
}

/// One word of a systemd command line (systemd.service(5) "COMMAND LINES",
/// systemd.syntax(7) "Quoting") that unquotes to exactly `word`.
///
/// A word of only harmless characters stays bare; any other is put in double
/// quotes with `\\` and `\"` escaped. Everything else inside double quotes is
/// literal, including `'`, `#` and `;` (a bare `;` would separate commands).
/// In both forms `%` becomes `%%` (specifiers are expanded on the whole line
/// before unquoting) and `$` becomes `$$` (variables are expanded in each
/// argument when the service starts). The caller has rejected control
/// characters.
fn quote_word(word: &str) -> String {
    let bare = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:,+=@%$".contains(c));
    let mut out = String::with_capacity(word.len() + 2);
    if !bare {
        out.push('"');
    }
    for c in word.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    if !bare {
        out.push('"');
    }
    out
}

/// The `--shutdown-grace` in `args` (last one wins), or wininetd's default.
fn shutdown_grace(args: &[OsString]) -> Result<u64, InstallError> {
    let mut grace = DEFAULT_SHUTDOWN_GRACE_SECS;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let value = if arg == "--shutdown-grace" {
            iter.next().map(OsString::as_os_str).unwrap_or_default()
        } else if let Some(v) = arg
            .to_str()
            .and_then(|a| a.strip_prefix("--shutdown-grace="))
        {
            OsStr::new(v)
        } else {
            continue;
        };
        grace = value.to_str().and_then(|v| v.parse().ok()).ok_or_else(|| {
            InstallError::ShutdownGrace {
                value: value.to_string_lossy().into_owned(),
            }
        })?;
    }
    Ok(grace)
}

/// `root` made absolute, for `systemctl --root` and for the lines we print.
fn absolute_root(root: &Path) -> Result<PathBuf, InstallError> {
    std::path::absolute(root).map_err(|source| InstallError::Root {
        path: root.to_owned(),
        source,
    })
}

/// Writes `contents` to `path` so that a reader sees the old file or the new
/// one, never a part: a temporary file in the same directory, synced, then
/// renamed over `path`. Creates the parent directories; the file ends up 0644.
fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), InstallError> {
    let dir = path
        .parent()
        .expect("the unit path is ROOT/etc/systemd/system/NAME");
    fs::create_dir_all(dir).map_err(|source| InstallError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    let write_err = |source| InstallError::Write {
        path: path.to_owned(),
        source,
    };
    let name = path.file_name().expect("the unit path has a file name");
    let (tmp, mut file) = create_temp(dir, name).map_err(write_err)?;
    let result = file
        .write_all(contents)
        // Explicitly, because the mode given at creation goes through the umask.
        .and_then(|()| file.set_permissions(Permissions::from_mode(0o644)))
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(write_err(e));
    }
    // Make the rename itself durable; a failure here loses nothing written.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A new file `.NAME.PID.N.tmp` in `dir`; `create_new` so that nothing already
/// there (a leftover, a symlink) is followed or reused.
fn create_temp(dir: &Path, name: &OsStr) -> io::Result<(PathBuf, File)> {
    let mut last = None;
    for n in 0..100 {
        let mut tmp_name = OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{}.{n}.tmp", std::process::id()));
        let tmp = dir.join(tmp_name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("the loop ran at least once"))
}

/// Whether `systemctl` ran, or is not installed at all.
#[derive(Debug, PartialEq, Eq)]
enum Ran {
    Done,
    NotFound,
}

/// `systemctl`, either on the running system or offline on a root directory.
#[derive(Debug)]
struct Systemctl<'a> {
    program: &'a OsStr,
    /// `None` for the live system (root is `/`): then the manager is also told
    /// about changes and the unit is stopped before removal.
    root: Option<&'a Path>,
}

impl<'a> Systemctl<'a> {
    fn new(program: &'a OsStr, root: &'a Path) -> Self {
        let live = root == Path::new("/");
        Systemctl {
            program,
            root: (!live).then_some(root),
        }
    }

    fn live(&self) -> bool {
        self.root.is_none()
    }

    fn command_line(&self, args: &[&str]) -> String {
        let mut line = self.program.to_string_lossy().into_owned();
        if let Some(root) = self.root {
            let _ = write!(line, " --root {}", root.display());
        }
        for arg in args {
            line.push(' ');
            line.push_str(arg);
        }
        line
    }

    /// The main process of `unit` when it is active on the live system;
    /// `None` when it is not, or systemctl cannot tell (not installed,
    /// systemd not running).
    fn main_pid(&self, unit: &str) -> Option<u32> {
        let out = Command::new(self.program)
            .args(["show", "--property=MainPID", "--value", unit])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
        (out.status.success() && pid > 1).then_some(pid)
    }

    /// Runs `systemctl [--root ROOT] ARGS`, its output captured (it is only
    /// shown when it fails).
    fn run(&self, args: &[&str]) -> Result<Ran, InstallError> {
        let mut cmd = Command::new(self.program);
        if let Some(root) = self.root {
            cmd.arg("--root").arg(root);
        }
        cmd.args(args).stdin(Stdio::null());
        match cmd.output() {
            Ok(out) if out.status.success() => Ok(Ran::Done),
            Ok(out) => Err(InstallError::Systemctl {
                command: self.command_line(args),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join("; "),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Ran::NotFound),
            Err(source) => Err(InstallError::RunSystemctl {
                command: self.command_line(args),
                source,
            }),
        }
    }
}

/// `e` and its causes on one line, for the notes of tolerated failures.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let _ = write!(s, ": {c}");
        cause = c.source();
    }
    s
}

/// The crate's error for a failed install, remove or reload request: the
/// platform's error kept whole (its causes print).
impl From<InstallError> for crate::Error {
    fn from(e: InstallError) -> Self {
        crate::Error::Install(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt as _;

    const NO_SYSTEMCTL: &str = "wininetd-test-no-such-systemctl";

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn spec(root: &Path, args: &[&str]) -> InstallSpec {
        InstallSpec {
            root: root.to_owned(),
            exe: PathBuf::from("/usr/local/bin/wininetd"),
            args: os(args),
            start: None,
            socket_timeouts: Vec::new(),
        }
    }

    fn unit_path(root: &Path) -> PathBuf {
        root.join(UNIT_DIR).join(UNIT_NAME)
    }

    fn wants_link(root: &Path) -> PathBuf {
        root.join(UNIT_DIR)
            .join(format!("{WANTED_BY}.wants"))
            .join(UNIT_NAME)
    }

    /// Whether a real `systemctl` can be run (for the `--root` tests).
    fn have_systemctl() -> bool {
        Command::new("systemctl")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The value of the unit's `KEY=` line.
    fn directive<'a>(unit: &'a str, key: &str) -> &'a str {
        unit.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {key}= in:\n{unit}"))
    }

    #[test]
    fn quote_leaves_plain_words_bare() {
        assert_eq!(quote_word("--cfgfile"), "--cfgfile");
        assert_eq!(quote_word("/etc/wininetd.conf"), "/etc/wininetd.conf");
        assert_eq!(quote_word("--timeout=30"), "--timeout=30");
    }

    #[test]
    fn quote_wraps_whitespace() {
        assert_eq!(quote_word("/srv/my conf.conf"), r#""/srv/my conf.conf""#);
    }

    #[test]
    fn quote_escapes_quotes_inside_double_quotes() {
        assert_eq!(quote_word(r#"a"b"#), r#""a\"b""#);
        assert_eq!(quote_word("it's"), r#""it's""#);
    }

    #[test]
    fn quote_escapes_backslash() {
        assert_eq!(quote_word(r"a\b"), r#""a\\b""#);
        assert_eq!(quote_word(r"\"), r#""\\""#);
    }

    #[test]
    fn quote_doubles_percent_and_dollar() {
        assert_eq!(quote_word("100%"), "100%%");
        assert_eq!(quote_word("$HOME"), "$$HOME");
        assert_eq!(quote_word("a b%$"), r#""a b%%$$""#);
    }

    #[test]
    fn quote_keeps_empty_word() {
        assert_eq!(quote_word(""), r#""""#);
    }

    #[test]
    fn quote_wraps_specials() {
        // A bare `;` separates commands; a leading `#` or `'` means something too.
        assert_eq!(quote_word(";"), r#"";""#);
        assert_eq!(quote_word("#x"), r##""#x""##);
        assert_eq!(quote_word("naïve"), "\"naïve\"");
    }

    #[test]
    fn newline_in_a_parameter_is_rejected() {
        let err = exec_start(Path::new("/bin/w"), &os(&["--cfgfile", "/a\nb"])).unwrap_err();
        assert!(
            matches!(err, InstallError::ControlCharacter { .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("control character"), "{msg}");
        assert!(msg.contains(r"/a\nb"), "{msg}");
        assert!(msg.contains("parameter 2"), "{msg}");
    }

    #[test]
    fn tab_in_the_executable_path_is_rejected() {
        let err = exec_start(Path::new("/bin/a\tb"), &[]).unwrap_err();
        assert!(
            matches!(err, InstallError::ControlCharacter { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn non_utf8_parameter_is_rejected() {
        let bad = OsString::from_vec(vec![b'/', 0xff]);
        let err = exec_start(Path::new("/bin/w"), &[bad]).unwrap_err();
        assert!(matches!(err, InstallError::NotUtf8 { .. }), "{err:?}");
        assert!(err.to_string().contains("UTF-8"));
    }

    #[test]
    fn executable_must_be_absolute_normalised_and_dollar_free() {
        assert!(matches!(
            exec_start(Path::new("bin/wininetd"), &[]),
            Err(InstallError::ExeNotAbsolute { .. })
        ));
        assert!(matches!(
            exec_start(Path::new("/usr/../bin/wininetd"), &[]),
            Err(InstallError::ExeNotNormalized { .. })
        ));
        assert!(matches!(
            exec_start(Path::new("/opt/a$b/wininetd"), &[]),
            Err(InstallError::ExeDollar { .. })
        ));
        assert_eq!(
            exec_start(Path::new("//usr/./bin//wininetd"), &[]).unwrap(),
            "/usr/bin/wininetd"
        );
    }

    #[test]
    fn exec_start_quotes_each_word() {
        let line = exec_start(
            Path::new("/opt/win inetd/wininetd"),
            &os(&["--cfgfile", "/srv/my 100%.conf", "--timeout", "30"]),
        )
        .unwrap();
        assert_eq!(
            line,
            r#""/opt/win inetd/wininetd" --cfgfile "/srv/my 100%%.conf" --timeout 30"#
        );
    }

    #[test]
    fn unit_has_the_service_settings() {
        let unit = render_unit(
            Path::new("/usr/local/bin/wininetd"),
            &os(&["--cfgfile", "/etc/wininetd.conf"]),
        )
        .unwrap();
        assert!(
            unit.starts_with("# Generated by `wininetd --install`"),
            "{unit}"
        );
        assert_eq!(directive(&unit, "Description"), "wininetd super-server");
        assert_eq!(directive(&unit, "After"), "network.target");
        assert_eq!(directive(&unit, "Type"), "notify");
        assert_eq!(
            directive(&unit, "ExecStart"),
            "/usr/local/bin/wininetd --cfgfile /etc/wininetd.conf"
        );
        assert_eq!(directive(&unit, "KillMode"), "mixed");
        assert_eq!(directive(&unit, "TimeoutStopSec"), "15");
        assert_eq!(directive(&unit, "Restart"), "on-failure");
        assert_eq!(directive(&unit, "WantedBy"), "multi-user.target");
        assert_eq!(directive(&unit, "ExecReload"), "/bin/kill -HUP $MAINPID");
        for section in ["[Unit]", "[Service]", "[Install]"] {
            assert!(
                unit.lines().any(|l| l == section),
                "no {section} in:\n{unit}"
            );
        }
    }

    #[test]
    fn stop_timeout_outlasts_the_shutdown_grace() {
        let unit = |args: &[&str]| render_unit(Path::new("/bin/w"), &os(args));
        let u = unit(&["--shutdown-grace", "120"]).unwrap();
        assert_eq!(directive(&u, "TimeoutStopSec"), "130");
        let u = unit(&["--shutdown-grace=0"]).unwrap();
        assert_eq!(directive(&u, "TimeoutStopSec"), "10");
        assert!(matches!(
            unit(&["--shutdown-grace", "soon"]),
            Err(InstallError::ShutdownGrace { .. })
        ));
    }

    /// examples/wininetd.service must stay what `--install` writes for
    /// `/usr/local/bin/wininetd --cfgfile /etc/wininetd.conf`, comments aside.
    #[test]
    fn example_unit_matches_the_generated_one() {
        fn settings(unit: &str) -> Vec<&str> {
            unit.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .collect()
        }
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/wininetd.service");
        let example = fs::read_to_string(path).expect("examples/wininetd.service exists");
        let generated = render_unit(
            Path::new("/usr/local/bin/wininetd"),
            &os(&["--cfgfile", "/etc/wininetd.conf"]),
        )
        .unwrap();
        assert!(!settings(&generated).is_empty());
        assert_eq!(settings(&example), settings(&generated));
    }

    #[test]
    fn install_writes_the_unit_under_root() {
        let dir = tempfile::tempdir().unwrap();
        let lines = install_with(
            &spec(dir.path(), &["--timeout", "30"]),
            OsStr::new(NO_SYSTEMCTL),
        )
        .unwrap();
        let unit = unit_path(dir.path());
        let text = fs::read_to_string(&unit).unwrap();
        assert_eq!(
            directive(&text, "ExecStart"),
            "/usr/local/bin/wininetd --timeout 30"
        );
        let mode = fs::metadata(&unit).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o644);
        assert_eq!(lines[0], format!("created {}", unit.display()));
        assert!(
            lines.iter().any(|l| l.contains("systemctl not found")),
            "{lines:?}"
        );
        // Nothing but the unit: the temporary file was renamed, not left behind.
        let entries: Vec<_> = fs::read_dir(unit.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries, [OsString::from(UNIT_NAME)]);
    }

    #[test]
    fn install_twice_updates_the_unit() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = OsStr::new(NO_SYSTEMCTL);
        install_with(&spec(dir.path(), &["--timeout", "30"]), ctl).unwrap();
        let lines = install_with(&spec(dir.path(), &["--linger-timeout", "5"]), ctl).unwrap();
        let text = fs::read_to_string(unit_path(dir.path())).unwrap();
        assert_eq!(
            directive(&text, "ExecStart"),
            "/usr/local/bin/wininetd --linger-timeout 5"
        );
        assert!(lines[0].starts_with("updated "), "{lines:?}");
        let lines = install_with(&spec(dir.path(), &["--linger-timeout", "5"]), ctl).unwrap();
        assert!(lines[0].ends_with("(unchanged)"), "{lines:?}");
    }

    #[test]
    fn install_with_a_bad_parameter_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let err = install_with(
            &spec(dir.path(), &["--cfgfile", "/a\nb"]),
            OsStr::new(NO_SYSTEMCTL),
        )
        .unwrap_err();
        assert!(
            matches!(err, InstallError::ControlCharacter { .. }),
            "{err:?}"
        );
        assert!(!dir.path().join("etc").exists());
    }

    #[test]
    fn remove_deletes_the_unit() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = OsStr::new(NO_SYSTEMCTL);
        install_with(&spec(dir.path(), &[]), ctl).unwrap();
        let lines = remove_with(dir.path(), ctl).unwrap();
        assert!(!unit_path(dir.path()).exists());
        assert!(lines.iter().any(|l| l.starts_with("deleted ")), "{lines:?}");
    }

    #[test]
    fn remove_without_systemctl_deletes_an_enable_link() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = OsStr::new(NO_SYSTEMCTL);
        install_with(&spec(dir.path(), &[]), ctl).unwrap();
        let link = wants_link(dir.path());
        fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink("/etc/systemd/system/wininetd.service", &link).unwrap();
        remove_with(dir.path(), ctl).unwrap();
        assert!(fs::symlink_metadata(&link).is_err());
        assert!(!unit_path(dir.path()).exists());
    }

    #[test]
    fn remove_when_not_installed_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let err = remove_with(dir.path(), OsStr::new(NO_SYSTEMCTL)).unwrap_err();
        assert!(matches!(err, InstallError::NotInstalled { .. }), "{err:?}");
        assert!(err.to_string().contains("not installed"), "{err}");
    }

    #[test]
    fn install_and_remove_with_systemctl_enable_and_disable() {
        if !have_systemctl() {
            eprintln!("skipped: no systemctl");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let ctl = OsStr::new("systemctl");
        let lines = install_with(&spec(dir.path(), &["--timeout", "30"]), ctl).unwrap();
        let link = wants_link(dir.path());
        assert!(
            fs::symlink_metadata(&link).is_ok(),
            "no {link:?} after {lines:?}"
        );
        assert!(lines.iter().any(|l| l.starts_with("enabled ")), "{lines:?}");

        // Reinstalling keeps it enabled.
        install_with(&spec(dir.path(), &["--timeout", "10"]), ctl).unwrap();
        assert!(fs::symlink_metadata(&link).is_ok());

        let lines = remove_with(dir.path(), ctl).unwrap();
        assert!(fs::symlink_metadata(&link).is_err(), "{lines:?}");
        assert!(!unit_path(dir.path()).exists());
        assert!(
            lines.iter().any(|l| l.starts_with("disabled ")),
            "{lines:?}"
        );
    }

    #[test]
    fn relative_root_is_made_absolute() {
        let root = absolute_root(Path::new("some/dir")).unwrap();
        assert!(root.is_absolute());
        assert!(root.ends_with("some/dir"));
    }

    #[test]
    fn systemctl_uses_root_only_off_the_live_system() {
        let live = Systemctl::new(OsStr::new("systemctl"), Path::new("/"));
        assert!(live.live());
        assert_eq!(
            live.command_line(&["enable", UNIT_NAME]),
            "systemctl enable wininetd.service"
        );
        let off = Systemctl::new(OsStr::new("systemctl"), Path::new("/tmp/r"));
        assert!(!off.live());
        assert_eq!(
            off.command_line(&["disable", UNIT_NAME]),
            "systemctl --root /tmp/r disable wininetd.service"
        );
    }

    /// A `systemctl` that logs its arguments to `log` and answers `show`
    /// with `show_output` (exit 0) and everything else with success.
    fn fake_systemctl(dir: &Path, show_output: &str, show_status: i32) -> PathBuf {
        let path = dir.join("systemctl");
        let log = dir.join("log");
        fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"$@\" >> '{}'\nif [ \"$1\" = show ]; then echo '{show_output}'; exit {show_status}; fi\n",
                log.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o755)).unwrap();
        // A test thread that forks while the file is open for writing makes
        // its exec fail with ETXTBSY until that child has exec'd: wait
        // until it runs.
        for _ in 0..100 {
            match Command::new(&path).arg("--version").output() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                _ => break,
            }
        }
        path
    }

    /// Under systemd, --reload checks the config the unit's main process
    /// reads (its arguments from /proc), and only then runs `systemctl
    /// reload`.
    #[test]
    fn reload_under_systemd_checks_then_asks_systemctl() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let ctl = fake_systemctl(dir.path(), &me.to_string(), 0);
        let none = dir.path().join("no.pid");
        let log = || fs::read_to_string(dir.path().join("log")).unwrap_or_default();

        let mut seen = None;
        let err = request_reload_with(
            None,
            &mut |args, cwd| {
                seen = Some((args.map(<[OsString]>::to_vec), cwd.map(Path::to_owned)));
                Err(crate::Error::ReloadRefused {
                    file: "x".into(),
                    count: 1,
                })
            },
            ctl.as_os_str(),
            &none,
        )
        .unwrap_err();
        assert!(matches!(err, crate::Error::ReloadRefused { .. }), "{err:?}");
        assert!(!log().contains("reload"), "{}", log());
        let (args, cwd) = seen.expect("the check ran");
        let own: Vec<OsString> = std::env::args_os().skip(1).collect();
        assert_eq!(args, Some(own), "the main process's arguments");
        assert_eq!(cwd, std::env::current_dir().ok());

        let lines = request_reload_with(None, &mut |_, _| Ok(()), ctl.as_os_str(), &none).unwrap();
        assert!(
            log().lines().any(|l| l == "reload wininetd.service"),
            "{}",
            log()
        );
        assert!(lines[0].contains(&format!("(pid {me})")), "{lines:?}");
    }

    /// No systemd (systemctl fails, or names no main process) and no pid
    /// file: an error that says what to do.
    #[test]
    fn reload_without_systemd_or_pid_file_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let none = dir.path().join("no.pid");
        for (output, status) in [("", 1), ("0", 0)] {
            let ctl = fake_systemctl(dir.path(), output, status);
            let err = request_reload_with(
                None,
                &mut |_, _| panic!("nothing to check"),
                ctl.as_os_str(),
                &none,
            )
            .unwrap_err();
            let text = err.to_string();
            assert!(text.contains("no running wininetd found"), "{text}");
            assert!(text.contains("--pidfile FILE"), "{text}");
        }
        let err = request_reload_with(
            None,
            &mut |_, _| panic!("nothing to check"),
            OsStr::new(NO_SYSTEMCTL),
            &none,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("no running wininetd found"),
            "{err}"
        );
    }
}
