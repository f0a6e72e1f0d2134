//! Session programs on Unix: what to run for a service, built once at
//! load, and (on systems other than Linux) starting it with the standard
//! library's `Command`: `posix_spawn`, or a fork for run-as sessions.
//!
//! Linux starts programs with `clone` directly (`clone.rs`): run-as
//! sessions included, the daemon is never copied; the program, argv and
//! the fixed part of the environment are built once per service; no thread
//! waits for an exec; one reaper reaps every child on SIGCHLD.

use std::ffi::OsString;
use std::path::PathBuf;

use super::Identity;
use crate::platform::Program;

/// What to run for a connection: fixed per service, built at load.
#[derive(Debug)]
pub struct ChildSpec {
    pub(super) program: PathBuf,
    pub(super) args: Vec<OsString>,
    /// The complete environment apart from the per-connection variables.
    pub(super) env: Vec<(OsString, OsString)>,
    pub(super) user: Option<Identity>,
    pub(super) working_dir: Option<PathBuf>,
    /// Send stderr to a pipe the daemon logs, instead of the socket.
    pub(super) stderr_to_log: bool,
    /// A wait service's socket name: the socket is fd 3 too, with the
    /// `LISTEN_*` variables (see [`Program::listen_fd_name`]).
    pub(super) listen_fd_name: Option<String>,
    #[cfg(target_os = "linux")]
    pub(super) image: Result<super::clone::Image, String>,
}

impl ChildSpec {
    pub fn new(program: Program) -> Self {
        #[cfg_attr(not(target_os = "linux"), expect(unused_mut))]
        let mut spec = Self {
            program: program.path,
            args: program.args,
            env: program.env,
            user: program.user,
            working_dir: program.working_dir,
            stderr_to_log: program.stderr_to_log,
            listen_fd_name: program.listen_fd_name,
            #[cfg(target_os = "linux")]
            image: Err(String::new()),
        };
        #[cfg(target_os = "linux")]
        {
            spec.image = super::clone::Image::new(&spec);
        }
        spec
    }

    pub fn env(&self) -> &[(OsString, OsString)] {
        &self.env
    }

    /// The fixed environment of a program: `env`, and for a wait service
    /// `LISTEN_FDS=1` and `LISTEN_FDNAMES`, which nothing else may set
    /// (`LISTEN_PID` is added in the child, which alone knows its pid).
    pub(super) fn program_env(&self) -> Vec<(OsString, OsString)> {
        let Some(name) = &self.listen_fd_name else {
            return self.env.clone();
        };
        let mut env: Vec<(OsString, OsString)> = self
            .env
            .iter()
            .filter(|(key, _)| !LISTEN_VARIABLES.iter().any(|v| key == v))
            .cloned()
            .collect();
        env.push(("LISTEN_FDS".into(), "1".into()));
        env.push(("LISTEN_FDNAMES".into(), name.into()));
        env
    }
}

/// The variables of socket activation (sd_listen_fds(3)).
const LISTEN_VARIABLES: [&str; 3] = ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"];

/// The descriptor a socket-activated program finds its socket at
/// (`SD_LISTEN_FDS_START`).
#[cfg_attr(target_os = "linux", allow(dead_code))]
pub(super) const LISTEN_FD: i32 = 3;

#[cfg(target_os = "linux")]
pub use super::clone::{SPAWN_BLOCKS, StderrPipe, spawn};
#[cfg(target_os = "linux")]
pub use super::reaper::{Child, Reaper};
#[cfg(not(target_os = "linux"))]
pub use portable::{Child, ChildEnds, Pipes, Reaper, Relay, SPAWN_BLOCKS, StderrPipe, spawn};

/// The standard exit status, made from what `waitid` reports.
pub type ExitStatus = std::process::ExitStatus;

#[cfg(not(target_os = "linux"))]
mod portable {
    use std::ffi::{CString, OsString};
    use std::io;
    use std::os::fd::OwnedFd;
    use std::os::unix::ffi::OsStrExt;
    use std::process::Stdio;

    use std::time::Duration;

    use nix::fcntl::OFlag;
    use nix::unistd::{Gid, Uid, pipe2};
    use socket2::Socket;
    use tokio::net::unix::pipe;

    use super::{ChildSpec, ExitStatus};
    use crate::platform::ChildStdio;
    use crate::platform::relay::relay;

    /// A connection and the daemon's ends of a program's pipes: the relay
    /// of `stdio = "pipe"`, which copies through a buffer here (Linux
    /// splices).
    #[derive(Debug)]
    pub struct Relay {
        stream: tokio::net::TcpStream,
        to_child: pipe::Sender,
        from_child: pipe::Receiver,
        timeout: Option<Duration>,
    }

    /// The program's ends of a relay's pipes.
    #[derive(Debug)]
    pub struct ChildEnds {
        stdin: OwnedFd,
        stdout: OwnedFd,
    }

    /// The daemon's ends of a program's stdin and stdout pipes, async, for
    /// a relay that moves the bytes itself (TLS).
    #[derive(Debug)]
    pub struct Pipes {
        pub to_child: pipe::Sender,
        pub from_child: pipe::Receiver,
    }

    impl Pipes {
        /// Makes the pipes: the daemon's ends, and the program's.
        pub fn new() -> io::Result<(Self, ChildEnds)> {
            let (stdin, to_child) = pipe2(OFlag::O_CLOEXEC)?;
            let (from_child, stdout) = pipe2(OFlag::O_CLOEXEC)?;
            let pipes = Self {
                to_child: pipe::Sender::from_owned_fd(to_child)?,
                from_child: pipe::Receiver::from_owned_fd(from_child)?,
            };
            Ok((pipes, ChildEnds { stdin, stdout }))
        }

        /// Ready to move bytes (at once: a pipe needs no connecting here).
        pub async fn connect(&self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Relay {
        /// Makes the pipes and registers the daemon's ends. `timeout`
        /// bounds each wait on the connection, as SO_RCVTIMEO and
        /// SO_SNDTIMEO do in socket mode.
        pub fn new(socket: Socket, timeout: Option<Duration>) -> io::Result<(Self, ChildEnds)> {
            // The daemon's close is the last one here: it must never wait.
            socket.set_linger(None)?;
            let (stdin, to_child) = pipe2(OFlag::O_CLOEXEC)?;
            let (from_child, stdout) = pipe2(OFlag::O_CLOEXEC)?;
            let stream = std::net::TcpStream::from(socket);
            stream.set_nonblocking(true)?;
            let relay = Self {
                stream: tokio::net::TcpStream::from_std(stream)?,
                to_child: pipe::Sender::from_owned_fd(to_child)?,
                from_child: pipe::Receiver::from_owned_fd(from_child)?,
                timeout,
            };
            Ok((relay, ChildEnds { stdin, stdout }))
        }

        /// Relays until the program's output ends.
        pub async fn run(self) {
            relay(self.stream, self.to_child, self.from_child, self.timeout).await;
        }
    }

    /// A child's stderr when it goes to the daemon's log.
    pub type StderrPipe = tokio::process::ChildStderr;

    /// `posix_spawn` (or fork) returns once the child has exec'd.
    pub const SPAWN_BLOCKS: bool = true;

    /// The runtime reaps each child here (tokio's own SIGCHLD handling).
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

    /// A running child: one session's program, leader of its own session
    /// and process group.
    #[derive(Debug)]
    pub struct Child {
        inner: tokio::process::Child,
        pid: u32,
    }

    /// Starts `spec` with `stdio` as its stdin, stdout and stderr, in a
    /// new session, with `spec.env` plus `client_env`. The caller's copies
    /// of `stdio` are closed when this returns. Without a user the
    /// standard library spawns with `posix_spawn`; with one it must fork.
    pub fn spawn(
        spec: &ChildSpec,
        stdio: ChildStdio,
        client_env: &[(&str, &str)],
        _reaper: &Reaper,
    ) -> io::Result<Child> {
        let (stdin, stdout) = match stdio {
            ChildStdio::Socket(socket) => {
                let socket = OwnedFd::from(socket);
                let stdout = socket.try_clone()?;
                (socket, stdout)
            }
            ChildStdio::Relayed(ends) => (ends.stdin, ends.stdout),
            // The daemon keeps its own descriptor: the child gets copies.
            ChildStdio::Shared(socket) => {
                let socket = OwnedFd::from(socket.try_clone()?);
                let stdout = socket.try_clone()?;
                (socket, stdout)
            }
        };
        let stderr = if spec.stderr_to_log {
            Stdio::piped()
        } else {
            Stdio::from(stdout.try_clone()?)
        };
        let mut command = tokio::process::Command::new(&spec.program);
        command
            .args(&spec.args)
            .env_clear()
            .envs(spec.program_env())
            .envs(client_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::from(stdout))
            .stderr(stderr)
            .kill_on_drop(false);
        // SAFETY: the closure runs in the child before exec and makes one
        // async-signal-safe system call. A session of its own: the program
        // leads its process group and has no controlling terminal, so it
        // cannot reach the terminal the daemon was started from.
        unsafe {
            command.pre_exec(|| nix::unistd::setsid().map(drop).map_err(io::Error::from));
        }
        if let Some(dir) = &spec.working_dir {
            command.current_dir(dir);
        }
        if let Some(user) = &spec.user {
            let uid = user.uid;
            let gid = user.gid;
            let groups = user.groups.clone();
            // SAFETY: the closure runs in the forked child before exec and
            // only makes async-signal-safe system calls; it allocates
            // nothing (`groups` was copied before the fork).
            unsafe {
                command.pre_exec(move || switch_user(uid, gid, &groups));
            }
        }
        if spec.listen_fd_name.is_some() {
            let mut exec = Activated::new(spec, client_env)?;
            // SAFETY: registered last, the closure runs in the forked child
            // after the others; it makes async-signal-safe system calls
            // only and writes only into its own (copied) memory.
            unsafe {
                command.pre_exec(move || exec.exec());
            }
        }
        let inner = command.spawn()?;
        // The command holds the child's ends of the pipes; the child's
        // EOF comes only once they are closed here too.
        drop(command);
        let pid = inner
            .id()
            .expect("a child just spawned has not been reaped");
        Ok(Child { inner, pid })
    }

    /// A socket-activated program's exec, made ready before the fork: its
    /// socket goes to fd 3 too, and `LISTEN_PID` must be its own pid, which
    /// only the child knows; the standard library's exec cannot add it, so
    /// this execs in its place, with the same program, argv and
    /// environment plus `LISTEN_PID`.
    struct Activated {
        program: CString,
        _argv: Vec<CString>,
        argv_ptrs: Vec<*const libc::c_char>,
        _env: Vec<CString>,
        /// `LISTEN_PID=` and room for the digits and a NUL.
        listen_pid: Vec<u8>,
        env_ptrs: Vec<*const libc::c_char>,
    }

    // SAFETY: the pointers point into the strings the struct owns, whose
    // heap buffers do not move; it is used by the forked child alone.
    unsafe impl Send for Activated {}
    // SAFETY: as above; nothing is shared with another thread.
    unsafe impl Sync for Activated {}

    const LISTEN_PID: &[u8] = b"LISTEN_PID=";
    const PID_DIGITS: usize = 10;

    impl Activated {
        fn new(spec: &ChildSpec, client_env: &[(&str, &str)]) -> io::Result<Self> {
            let c = |bytes: &[u8]| {
                CString::new(bytes).map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the command")
                })
            };
            let program = c(spec.program.as_os_str().as_bytes())?;
            let argv = std::iter::once(spec.program.as_os_str())
                .chain(spec.args.iter().map(OsString::as_os_str))
                .map(|a| c(a.as_bytes()))
                .collect::<io::Result<Vec<_>>>()?;
            let env = spec
                .program_env()
                .iter()
                .map(|(k, v)| c(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
                .chain(
                    client_env
                        .iter()
                        .map(|(k, v)| c(format!("{k}={v}").as_bytes())),
                )
                .collect::<io::Result<Vec<_>>>()?;
            let mut listen_pid = LISTEN_PID.to_vec();
            listen_pid.resize(LISTEN_PID.len() + PID_DIGITS + 1, 0);
            let argv_ptrs = argv
                .iter()
                .map(|a| a.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect();
            let env_ptrs = env
                .iter()
                .map(|e| e.as_ptr())
                .chain([listen_pid.as_ptr().cast(), std::ptr::null()])
                .collect();
            Ok(Self {
                program,
                _argv: argv,
                argv_ptrs,
                _env: env,
                listen_pid,
                env_ptrs,
            })
        }

        /// In the child: fd 3, `LISTEN_PID`, exec; returns only its error.
        fn exec(&mut self) -> io::Result<()> {
            // SAFETY: dup2 on descriptor numbers; 0 is the socket here.
            if unsafe { libc::dup2(0, super::LISTEN_FD) } < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut pid = u32::try_from(nix::unistd::getpid().as_raw()).unwrap_or(0);
            let mut digits = [0u8; PID_DIGITS];
            let mut len = 0;
            while len == 0 || (pid > 0 && len < PID_DIGITS) {
                digits[PID_DIGITS - 1 - len] = b'0' + (pid % 10) as u8;
                pid /= 10;
                len += 1;
            }
            let at = LISTEN_PID.len();
            self.listen_pid[at..at + len].copy_from_slice(&digits[PID_DIGITS - len..]);
            self.listen_pid[at + len] = 0;
            // SAFETY: NUL-ended strings and null-ended arrays of them, all
            // owned by `self`; execve returns only on failure.
            unsafe {
                libc::execve(
                    self.program.as_ptr(),
                    self.argv_ptrs.as_ptr(),
                    self.env_ptrs.as_ptr(),
                );
            }
            Err(io::Error::last_os_error())
        }
    }

    /// Drops root for good: supplementary groups, then the primary group,
    /// then the user, each checked. Runs in the child between fork and exec.
    fn switch_user(uid: Uid, gid: Gid, groups: &[Gid]) -> io::Result<()> {
        nix::unistd::setgroups(groups)?;
        nix::unistd::setgid(gid)?;
        nix::unistd::setuid(uid)?;
        if Uid::current() != uid
            || Uid::effective() != uid
            || Gid::current() != gid
            || Gid::effective() != gid
        {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "identity did not change",
            ));
        }
        Ok(())
    }

    impl Child {
        pub fn id(&self) -> u32 {
            self.pid
        }

        /// The child's stderr, when it goes to the daemon's log (once).
        pub fn take_stderr(&mut self) -> Option<StderrPipe> {
            self.inner.stderr.take()
        }

        /// Waits for the child to exit and reaps it.
        pub async fn wait(&mut self) -> io::Result<ExitStatus> {
            self.inner.wait().await
        }

        /// A failed start is reported by `spawn` itself here.
        pub fn start_error(&self) -> Option<io::Error> {
            None
        }

        /// Never: `spawn` returns once the child has exec'd, its `setsid`
        /// done.
        pub(in crate::platform::unix) fn before_its_session(&self) -> bool {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(env: &[(&str, &str)], listen_fd_name: Option<&str>) -> Program {
        Program {
            path: "/bin/true".into(),
            args: Vec::new(),
            command_line: "/bin/true".into(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            service_env: Vec::new(),
            user: None,
            working_dir: None,
            stderr_to_log: false,
            listen_fd_name: listen_fd_name.map(str::to_owned),
        }
    }

    /// A wait service's `LISTEN_*` are the daemon's to set: the service's
    /// own `env` cannot give others (sd_listen_fds would take them).
    #[test]
    fn a_wait_services_listen_variables_are_the_daemons() {
        let env = [("LISTEN_FDS", "7"), ("PATH", "/bin"), ("LISTEN_PID", "1")];
        let spec = ChildSpec::new(program(&env, Some("tftp")));
        let expected: Vec<(OsString, OsString)> = [
            ("PATH", "/bin"),
            ("LISTEN_FDS", "1"),
            ("LISTEN_FDNAMES", "tftp"),
        ]
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
        assert_eq!(spec.program_env(), expected);
        let plain = ChildSpec::new(program(&env, None));
        assert_eq!(plain.program_env(), plain.env());
    }
}
