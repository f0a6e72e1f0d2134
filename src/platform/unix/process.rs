//! Session programs on Unix: start one on a connection, wait for it, signal
//! its process group.
//!
//! On Linux a child is started with `clone(CLONE_VM | CLONE_VFORK |
//! CLONE_PIDFD)` and an exec, the way `posix_spawn` works, but with what
//! `posix_spawn` cannot do and without what it need not do:
//!
//! - run-as sessions switch user in the child before exec, so no session
//!   ever forks (copies) the multi-threaded daemon;
//! - the program, argv and the fixed part of the environment are C strings
//!   built once per service; a connection adds its seven variables in one
//!   buffer;
//! - each pool thread keeps its child stack for good, where glibc maps and
//!   unmaps one per spawn (and the unmap flushes the TLB of every core);
//! - the pidfd comes from `clone` itself and is what the runtime waits on,
//!   so there is no SIGCHLD handler and no `pidfd_open`.
//!
//! Other Unix systems use the standard library's `Command`.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::config::{Service, StderrMode};

use super::Identity;

/// What to run for a connection: fixed per service, built at load.
#[derive(Debug)]
pub struct ChildSpec {
    program: PathBuf,
    args: Vec<OsString>,
    /// The complete environment apart from the per-connection variables.
    env: Vec<(OsString, OsString)>,
    user: Option<Identity>,
    working_dir: Option<PathBuf>,
    /// Send stderr to a pipe the daemon logs, instead of the socket.
    stderr_to_log: bool,
    #[cfg(target_os = "linux")]
    image: Result<linux::Image, String>,
}

impl ChildSpec {
    /// `env` is the complete environment apart from the per-connection
    /// variables. On Unix the socket is always the child's stdio.
    pub fn new(service: &Service, env: Vec<(OsString, OsString)>) -> Self {
        #[cfg_attr(not(target_os = "linux"), expect(unused_mut))]
        let mut spec = Self {
            program: service.program.clone(),
            args: service.args.clone(),
            env,
            user: service.user.clone(),
            working_dir: service.working_dir.clone(),
            stderr_to_log: service.stderr == StderrMode::Log,
            #[cfg(target_os = "linux")]
            image: Err(String::new()),
        };
        #[cfg(target_os = "linux")]
        {
            spec.image = linux::Image::new(&spec);
        }
        spec
    }

    pub fn env(&self) -> &[(OsString, OsString)] {
        &self.env
    }
}

#[cfg(target_os = "linux")]
pub use linux::{Child, StderrPipe, spawn};
#[cfg(not(target_os = "linux"))]
pub use portable::{Child, StderrPipe, spawn};

/// The standard exit status, made from what `waitid` reports.
pub type ExitStatus = std::process::ExitStatus;

#[cfg(target_os = "linux")]
mod linux {
    use std::cell::RefCell;
    use std::ffi::{CString, c_char, c_int, c_void};
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::ExitStatusExt;
    use std::ptr;

    use socket2::Socket;
    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;

    use super::{ChildSpec, ExitStatus};

    /// A child's stderr when it goes to the daemon's log.
    pub type StderrPipe = tokio::net::unix::pipe::Receiver;

    /// A service's program as the kernel wants it: C strings, built at load.
    #[derive(Debug)]
    pub(super) struct Image {
        program: CString,
        /// argv, from argv\[0\] (the program's path).
        argv: Vec<CString>,
        /// `NAME=value` for every fixed variable.
        env: Vec<CString>,
        working_dir: Option<CString>,
        user: Option<Credentials>,
    }

    #[derive(Debug)]
    struct Credentials {
        uid: libc::uid_t,
        gid: libc::gid_t,
        groups: Vec<libc::gid_t>,
    }

    impl Image {
        /// Fails only on a NUL byte, which the config already rejects.
        pub(super) fn new(spec: &ChildSpec) -> Result<Self, String> {
            let c = |bytes: &[u8]| {
                CString::new(bytes).map_err(|_| {
                    "a NUL byte in the command, environment or working directory".to_owned()
                })
            };
            let program = c(spec.program.as_os_str().as_bytes())?;
            let mut argv = vec![program.clone()];
            for arg in &spec.args {
                argv.push(c(arg.as_bytes())?);
            }
            let mut env = Vec::with_capacity(spec.env.len());
            for (key, value) in &spec.env {
                let mut pair = Vec::with_capacity(key.len() + value.len() + 1);
                pair.extend_from_slice(key.as_bytes());
                pair.push(b'=');
                pair.extend_from_slice(value.as_bytes());
                env.push(c(&pair)?);
            }
            let working_dir = match &spec.working_dir {
                Some(dir) => Some(c(dir.as_os_str().as_bytes())?),
                None => None,
            };
            let user = spec.user.as_ref().map(|user| Credentials {
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
                groups: user.groups.iter().map(|g| g.as_raw()).collect(),
            });
            Ok(Self {
                program,
                argv,
                env,
                working_dir,
                user,
            })
        }
    }

    /// What the child runs with, on the spawning thread's stack; the child
    /// shares the daemon's memory until it execs, and reports a failure
    /// here.
    #[repr(C)]
    struct Launch {
        program: *const c_char,
        argv: *const *const c_char,
        envp: *const *const c_char,
        socket: RawFd,
        stderr: RawFd,
        working_dir: *const c_char,
        switch_user: bool,
        uid: libc::uid_t,
        gid: libc::gid_t,
        groups: *const libc::gid_t,
        group_count: usize,
        /// Set by the child when a step fails: the step and its errno.
        failed_step: Step,
        failed_errno: c_int,
    }

    /// The child's steps before exec.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    #[repr(u8)]
    enum Step {
        None,
        ProcessGroup,
        Stdio,
        Groups,
        Gid,
        Uid,
        IdentityCheck,
        WorkingDir,
        Exec,
    }

    /// The child's stack size; what runs on it is a few system calls.
    const STACK_SIZE: usize = 64 * 1024;
    const PAGE: usize = 4096;

    /// A stack for children, mapped once per thread, with a guard page.
    struct Stack {
        base: *mut c_void,
        len: usize,
    }

    impl Stack {
        fn new() -> io::Result<Self> {
            let len = STACK_SIZE + PAGE;
            // SAFETY: an anonymous private mapping at an address of the
            // kernel's choice; no existing memory is touched.
            let base = unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let stack = Self { base, len };
            // SAFETY: the lowest page of the mapping just made, ours alone.
            if unsafe { libc::mprotect(base, PAGE, libc::PROT_NONE) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(stack)
        }

        /// The top of the stack (it grows down), 16-byte aligned.
        fn top(&self) -> *mut c_void {
            // SAFETY: one past the end of the mapping, which is page-aligned.
            unsafe { self.base.cast::<u8>().add(self.len).cast() }
        }
    }

    impl Drop for Stack {
        fn drop(&mut self) {
            // SAFETY: the mapping made in `new`; no child runs on it (each
            // spawn waits until its child has exec'd or exited).
            unsafe {
                libc::munmap(self.base, self.len);
            }
        }
    }

    thread_local! {
        static STACK: RefCell<Option<Stack>> = const { RefCell::new(None) };
    }

    /// A running child: one session's program, leader of its own process
    /// group.
    #[derive(Debug)]
    pub struct Child {
        pidfd: AsyncFd<OwnedFd>,
        pid: u32,
        stderr: Option<StderrPipe>,
        status: Option<ExitStatus>,
    }

    /// Starts `spec` with `socket` as its stdin, stdout and stderr, in a
    /// new process group, with `spec.env` plus `client_env`. The caller's
    /// copy of the socket is closed when this returns. Blocks until the
    /// child has exec'd (or failed to).
    pub fn spawn(
        spec: &ChildSpec,
        socket: Socket,
        client_env: &[(&str, String)],
    ) -> io::Result<Child> {
        let image = spec
            .image
            .as_ref()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.clone()))?;
        let socket = OwnedFd::from(socket);

        // The connection's variables, `NAME=value\0` each, in one buffer.
        let mut client = Vec::with_capacity(256);
        let mut starts = [0usize; 8];
        for (i, (key, value)) in client_env.iter().take(starts.len()).enumerate() {
            starts[i] = client.len();
            client.extend_from_slice(key.as_bytes());
            client.push(b'=');
            client.extend_from_slice(value.as_bytes());
            client.push(0);
        }
        let client_count = client_env.len().min(starts.len());
        let mut envp: Vec<*const c_char> = Vec::with_capacity(image.env.len() + client_count + 1);
        envp.extend(image.env.iter().map(|s| s.as_ptr()));
        envp.extend(
            starts[..client_count]
                .iter()
                .map(|&at| client[at..].as_ptr().cast::<c_char>()),
        );
        envp.push(ptr::null());
        let mut argv: Vec<*const c_char> = Vec::with_capacity(image.argv.len() + 1);
        argv.extend(image.argv.iter().map(|s| s.as_ptr()));
        argv.push(ptr::null());

        let stderr_pipe = if spec.stderr_to_log {
            Some(pipe()?)
        } else {
            None
        };
        let credentials = image.user.as_ref();
        let mut launch = Launch {
            program: image.program.as_ptr(),
            argv: argv.as_ptr(),
            envp: envp.as_ptr(),
            socket: socket.as_raw_fd(),
            stderr: stderr_pipe
                .as_ref()
                .map_or(socket.as_raw_fd(), |(_, write)| write.as_raw_fd()),
            working_dir: image
                .working_dir
                .as_ref()
                .map_or(ptr::null(), |d| d.as_ptr()),
            switch_user: credentials.is_some(),
            uid: credentials.map_or(0, |c| c.uid),
            gid: credentials.map_or(0, |c| c.gid),
            groups: credentials.map_or(ptr::null(), |c| c.groups.as_ptr()),
            group_count: credentials.map_or(0, |c| c.groups.len()),
            failed_step: Step::None,
            failed_errno: 0,
        };

        let (pid, pidfd) = STACK.with(|cell| -> io::Result<(libc::pid_t, RawFd)> {
            let mut stack = cell.borrow_mut();
            if stack.is_none() {
                *stack = Some(Stack::new()?);
            }
            let stack = stack.as_ref().expect("just made");
            clone_vfork(stack, &mut launch)
        })?;
        // The child has exec'd or exited: the daemon's copies go now.
        drop(socket);
        let stderr = match stderr_pipe {
            Some((read, write)) => {
                drop(write);
                Some(read)
            }
            None => None,
        };
        // SAFETY: `clone` stored a new pidfd there, which nothing else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        // SAFETY: the child wrote these before it exited, and has exited or
        // exec'd; no other thread sees `launch`.
        let (step, errno) = unsafe {
            (
                ptr::read_volatile(&launch.failed_step),
                ptr::read_volatile(&launch.failed_errno),
            )
        };
        if step != Step::None {
            // The child exited at once with status 127; reap it now.
            let _ = reap(pidfd.as_raw_fd(), true);
            return Err(step_error(step, errno, spec));
        }
        let stderr = match stderr {
            Some(read) => Some(StderrPipe::from_owned_fd(read)?),
            None => None,
        };
        let pid = u32::try_from(pid).expect("pids are positive");
        Ok(Child {
            // SAFETY: an `OwnedFd` returns the same descriptor from
            // `as_raw_fd` until it is dropped, which only happens with the
            // `AsyncFd`.
            pidfd: unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }
                .map_err(|e| e.into_parts().1)?,
            pid,
            stderr,
            status: None,
        })
    }

    /// The error for a failed step: exec's errno as it is (so `ENOENT`,
    /// `EACCES` and `EAGAIN` read as themselves), the others with what
    /// failed.
    fn step_error(step: Step, errno: c_int, spec: &ChildSpec) -> io::Error {
        let os = io::Error::from_raw_os_error(errno);
        let what = match step {
            Step::Exec | Step::None => return os,
            Step::ProcessGroup => "cannot start a process group".to_owned(),
            Step::Stdio => "cannot give the connection to the program".to_owned(),
            Step::Groups | Step::Gid | Step::Uid => {
                // EAGAIN here is the user's RLIMIT_NPROC: keep it readable
                // as resource exhaustion.
                if errno == libc::EAGAIN {
                    return os;
                }
                let user = spec.user.as_ref().map_or("?", |u| u.name.as_str());
                format!("cannot switch to user {user:?}")
            }
            Step::IdentityCheck => "the identity did not change".to_owned(),
            Step::WorkingDir => match &spec.working_dir {
                Some(dir) => format!("cannot change to working directory {}", dir.display()),
                None => "cannot change directory".to_owned(),
            },
        };
        io::Error::new(os.kind(), format!("{what}: {os}"))
    }

    /// A pipe, both ends close-on-exec.
    fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
        let mut fds = [0 as c_int; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 just made these two descriptors; nothing else owns
        // them.
        Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
    }

    /// Size of the kernel's signal set, for raw `rt_sigprocmask` and
    /// `rt_sigaction`.
    const KERNEL_SIGSET: usize = 8;
    /// The highest signal number (`_NSIG - 1`).
    const SIGNAL_MAX: c_int = 64;

    /// The kernel's `struct sigaction`, as on x86-64. Only its all-zero
    /// value is used (SIG_DFL, no flags, an empty mask), which means the
    /// same whatever the architecture's order of the fields.
    #[repr(C)]
    #[derive(Default)]
    struct KernelSigaction {
        handler: usize,
        flags: std::ffi::c_ulong,
        restorer: usize,
        mask: u64,
    }

    /// Starts the child on `stack` with every signal blocked in this thread
    /// (so no handler of the daemon's runs in the child before it has reset
    /// them) and returns its pid and pidfd once it has exec'd or exited.
    fn clone_vfork(stack: &Stack, launch: &mut Launch) -> io::Result<(libc::pid_t, RawFd)> {
        // SAFETY: sigset_t is plain data; sigfillset initialises it.
        let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `all` is a valid sigset_t.
        unsafe { libc::sigfillset(&mut all) };
        // SAFETY: raw rt_sigprocmask on this thread with valid sets, so that
        // glibc's internal signals are blocked too, as posix_spawn does.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &all as *const libc::sigset_t,
                &mut old as *mut libc::sigset_t,
                KERNEL_SIGSET,
            );
        }
        let mut pidfd: c_int = -1;
        // SAFETY: CLONE_VM | CLONE_VFORK suspends this thread until the
        // child execs or exits, so `stack` (this thread's, used by no one
        // else), `launch` and everything it points to stay valid and
        // untouched while the child uses them. `child_main` only makes
        // async-signal-safe system calls. CLONE_PIDFD stores a
        // close-on-exec pidfd in `pidfd`.
        let pid = unsafe {
            libc::clone(
                child_main,
                stack.top(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
                (launch as *mut Launch).cast::<c_void>(),
                &mut pidfd as *mut c_int,
            )
        };
        let error = io::Error::last_os_error();
        // SAFETY: restores this thread's mask saved above.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &old as *const libc::sigset_t,
                ptr::null_mut::<libc::sigset_t>(),
                KERNEL_SIGSET,
            );
        }
        if pid < 0 {
            return Err(error);
        }
        Ok((pid, pidfd))
    }

    /// The child, between clone and exec, on the daemon's memory: system
    /// calls only (glibc's thin wrappers at most; not its set*id wrappers,
    /// which would signal the daemon's threads), no allocation, no locks.
    extern "C" fn child_main(arg: *mut c_void) -> c_int {
        let launch = arg.cast::<Launch>();
        // SAFETY: `arg` is the `Launch` the suspended parent passed; every
        // pointer in it is valid until exec. Each call below is a plain
        // system call on integers or those pointers.
        unsafe {
            let fail = |step: Step| -> ! {
                let errno = *libc::__errno_location();
                ptr::write_volatile(&raw mut (*launch).failed_errno, errno);
                ptr::write_volatile(&raw mut (*launch).failed_step, step);
                libc::_exit(127)
            };
            let l = &*launch;
            if libc::setpgid(0, 0) != 0 {
                fail(Step::ProcessGroup);
            }
            for (from, to) in [(l.socket, 0), (l.socket, 1), (l.stderr, 2)] {
                let done = if from == to {
                    libc::fcntl(to, libc::F_SETFD, 0)
                } else {
                    libc::dup2(from, to)
                };
                if done < 0 {
                    fail(Step::Stdio);
                }
            }
            // A fresh start, as inetd gives: every signal to its default
            // (SIGPIPE is ignored by the daemon; handlers would run the
            // daemon's code here), then nothing blocked.
            // The kernel's own call, so that glibc's internal signals are
            // reset too.
            let default = KernelSigaction::default();
            for signal in 1..=SIGNAL_MAX {
                if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                    libc::syscall(
                        libc::SYS_rt_sigaction,
                        signal,
                        &default as *const KernelSigaction,
                        ptr::null_mut::<KernelSigaction>(),
                        KERNEL_SIGSET,
                    );
                }
            }
            if l.switch_user {
                if libc::syscall(libc::SYS_setgroups, l.group_count, l.groups) != 0 {
                    fail(Step::Groups);
                }
                if libc::syscall(libc::SYS_setgid, l.gid) != 0 {
                    fail(Step::Gid);
                }
                if libc::syscall(libc::SYS_setuid, l.uid) != 0 {
                    fail(Step::Uid);
                }
                if libc::getuid() != l.uid
                    || libc::geteuid() != l.uid
                    || libc::getgid() != l.gid
                    || libc::getegid() != l.gid
                {
                    *libc::__errno_location() = libc::EPERM;
                    fail(Step::IdentityCheck);
                }
            }
            if !l.working_dir.is_null() && libc::chdir(l.working_dir) != 0 {
                fail(Step::WorkingDir);
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &none as *const libc::sigset_t,
                ptr::null_mut::<libc::sigset_t>(),
                KERNEL_SIGSET,
            );
            libc::execve(l.program, l.argv, l.envp);
            fail(Step::Exec)
        }
    }

    /// Reaps the child behind `pidfd` if it has exited (or, with `block`,
    /// once it has).
    fn reap(pidfd: RawFd, block: bool) -> io::Result<Option<ExitStatus>> {
        let flags = libc::WEXITED | if block { 0 } else { libc::WNOHANG };
        loop {
            // SAFETY: siginfo_t is plain data; waitid fills it.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: a pidfd we own and a valid siginfo_t to fill.
            let rc = unsafe { libc::waitid(libc::P_PIDFD, pidfd as libc::id_t, &mut info, flags) };
            if rc != 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            // SAFETY: waitid filled `info` for a child (SIGCHLD layout).
            let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
            if pid == 0 {
                return Ok(None);
            }
            // The wait(2) status word: exit code in the second byte, or the
            // signal in the low bits (with 0x80 for a core dump).
            let raw = match info.si_code {
                libc::CLD_EXITED => (status & 0xff) << 8,
                libc::CLD_DUMPED => status | 0x80,
                _ => status,
            };
            return Ok(Some(ExitStatus::from_raw(raw)));
        }
    }

    impl Child {
        pub fn id(&self) -> u32 {
            self.pid
        }

        /// The child's stderr, when it goes to the daemon's log (once).
        pub fn take_stderr(&mut self) -> Option<StderrPipe> {
            self.stderr.take()
        }

        /// Waits for the child to exit and reaps it.
        pub async fn wait(&mut self) -> io::Result<ExitStatus> {
            if let Some(status) = self.status {
                return Ok(status);
            }
            loop {
                let mut ready = self.pidfd.readable().await?;
                match reap(self.pidfd.get_ref().as_raw_fd(), false)? {
                    Some(status) => {
                        self.status = Some(status);
                        return Ok(status);
                    }
                    None => ready.clear_ready(),
                }
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod portable {
    use std::io;
    use std::os::fd::OwnedFd;
    use std::process::Stdio;

    use nix::unistd::{Gid, Uid};
    use socket2::Socket;

    use super::{ChildSpec, ExitStatus};

    /// A child's stderr when it goes to the daemon's log.
    pub type StderrPipe = tokio::process::ChildStderr;

    /// A running child: one session's program, leader of its own process
    /// group.
    #[derive(Debug)]
    pub struct Child {
        inner: tokio::process::Child,
        pid: u32,
    }

    /// Starts `spec` with `socket` as its stdin, stdout and stderr, in a
    /// new process group, with `spec.env` plus `client_env`. The caller's
    /// copy of the socket is closed when this returns. Without a user the
    /// standard library spawns with `posix_spawn`; with one it must fork.
    pub fn spawn(
        spec: &ChildSpec,
        socket: Socket,
        client_env: &[(&str, String)],
    ) -> io::Result<Child> {
        let socket = OwnedFd::from(socket);
        let stdout = socket.try_clone()?;
        let stderr = if spec.stderr_to_log {
            Stdio::piped()
        } else {
            Stdio::from(socket.try_clone()?)
        };
        let mut command = tokio::process::Command::new(&spec.program);
        command
            .args(&spec.args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .envs(client_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::from(socket))
            .stdout(Stdio::from(stdout))
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(false);
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
        let inner = command.spawn()?;
        let pid = inner
            .id()
            .expect("a child just spawned has not been reaped");
        Ok(Child { inner, pid })
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
    }
}
