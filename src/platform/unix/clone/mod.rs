//! Linux: starting a session's program with `clone(CLONE_VM)` and an exec,
//! without waiting for the exec. The children are reaped in `reaper.rs`.
//!
//! The child shares the daemon's memory from `clone` to `exec`, like a
//! vfork child. On x86-64 and aarch64 the daemon does not wait for it
//! (no `CLONE_VFORK`), so the runtime thread starts children itself, with
//! no hand-off to another thread and no sleep per spawn, and closes its copy
//! of the socket before the child can have exited, so that close never
//! lingers. What makes that safe:
//!
//! - the child runs on a stack of its own from a pool ([`Slot`]), and reads
//!   only bytes the slot owns (program, argv, environment, groups, copied
//!   there per spawn). A slot is reused only once the kernel has zeroed its
//!   `CLONE_CHILD_CLEARTID` word, which it does when the child execs or
//!   exits: after that the child no longer touches the daemon's memory;
//! - the child makes raw system calls that never write `errno` (it shares
//!   the calling thread's TLS while that thread runs on) and calls no libc
//!   function;
//! - the daemon has no handler for any asynchronous signal (it reads its
//!   signals from signalfds, `signals.rs`), so none of its code can run in
//!   the child on a signal; the child resets to their defaults the signals
//!   the daemon ignores before it unblocks them all. Should a handler be
//!   installed anyway, every signal is blocked around `clone`;
//! - a failure before or at exec is written to the child's [`Record`],
//!   which the reaper keeps until the child has been reaped, and read only
//!   after that.
//!
//! On other architectures, and on aarch64 with musl (whose `clone` refuses
//! `CLONE_CHILD_CLEARTID`), `CLONE_VFORK` takes the place of that word: the
//! caller then waits for the exec, and `libc::syscall` (which may set
//! errno) is safe to use.

use std::ffi::{c_int, c_void};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use super::process::ChildSpec;
use super::reaper::{Child, Reaper, Record};
use crate::platform::ChildStdio;
pub(super) use child::Failure;
use child::{KernelSigaction, Step, child_main};
use slot::{POOL, Slot, fill, free_slot};

/// Whether [`spawn`] blocks until the child has exec'd: only where raw
/// system calls are not written here for the architecture, and on aarch64
/// with musl, whose `clone` refuses `CLONE_CHILD_CLEARTID` (on x86-64 the
/// `clone` call itself is made here, [`sys::clone_vm`]).
pub const SPAWN_BLOCKS: bool = !cfg!(any(
    target_arch = "x86_64",
    all(target_arch = "aarch64", not(target_env = "musl"))
));

/// A child's stderr when it goes to the daemon's log.
pub type StderrPipe = tokio::net::unix::pipe::Receiver;

/// The child's stack size; what runs on it is a few system calls.
const STACK_SIZE: usize = 64 * 1024;
const PAGE: usize = 4096;
/// Children between `clone` and exec at once, at most. More than a few is
/// rare (an exec takes well under a millisecond); past this the spawn fails
/// with EAGAIN and the accept loop backs off.
const MAX_SLOTS: usize = 256;

/// Size of the kernel's signal set, for raw `rt_sigprocmask` and
/// `rt_sigaction`.
const KERNEL_SIGSET: usize = 8;
/// The highest signal number (`_NSIG - 1`).
const SIGNAL_MAX: c_int = 64;

mod child;
mod slot;
mod sys;

mod ids;

/// A service's program as the kernel wants it, built at load: NUL-ended
/// strings with their offsets, and the run-as credentials.
#[derive(Debug)]
pub(super) struct Image {
    /// The program's path, argv (from argv\[0\]), then `NAME=value` for
    /// every fixed variable, each NUL-ended.
    strings: Vec<u8>,
    /// Where each of those strings starts in `strings`.
    starts: Vec<usize>,
    argc: usize,
    working_dir: Option<Vec<u8>>,
    user: Option<Credentials>,
    /// A wait service's: the socket is fd 3 too, and the child adds
    /// `LISTEN_PID` (its own pid) to the environment.
    listen_fd: bool,
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
        let program = spec.program.as_os_str().as_bytes();
        let argv: Vec<Vec<u8>> = std::iter::once(program)
            .chain(spec.args.iter().map(|a| a.as_bytes()))
            .map(<[u8]>::to_vec)
            .collect();
        let env: Vec<Vec<u8>> = spec
            .program_env()
            .iter()
            .map(|(key, value)| [key.as_bytes(), b"=", value.as_bytes()].concat())
            .collect();
        let working_dir = spec.working_dir.as_ref().map(|d| d.as_os_str().as_bytes());
        let user = spec.user.as_ref().map(|user| {
            // Sorted as the kernel keeps them, so that the child can check
            // what it got against this list.
            let mut groups: Vec<libc::gid_t> = user.groups.iter().map(|g| g.as_raw()).collect();
            groups.sort_unstable();
            groups.dedup();
            Credentials {
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
                groups,
            }
        });
        Self::from_parts(program, &argv, &env, working_dir, user)
            .map(|image| image.with_listen_fd(spec.listen_fd_name.is_some()))
    }

    fn with_listen_fd(self, listen_fd: bool) -> Self {
        Self { listen_fd, ..self }
    }

    /// `argv` starts with argv\[0\]; `env` holds `NAME=value` strings.
    fn from_parts(
        program: &[u8],
        argv: &[impl AsRef<[u8]>],
        env: &[impl AsRef<[u8]>],
        working_dir: Option<&[u8]>,
        user: Option<Credentials>,
    ) -> Result<Self, String> {
        let nul_ended = |part: &[u8]| -> Result<Vec<u8>, String> {
            if part.contains(&0) {
                return Err(
                    "a NUL byte in the command, environment or working directory".to_owned(),
                );
            }
            Ok([part, b"\0"].concat())
        };
        let mut strings = Vec::new();
        let mut starts = Vec::new();
        let parts = std::iter::once(program)
            .chain(argv.iter().map(AsRef::as_ref))
            .chain(env.iter().map(AsRef::as_ref));
        for part in parts {
            starts.push(strings.len());
            strings.extend(nul_ended(part)?);
        }
        Ok(Self {
            strings,
            starts,
            argc: argv.len(),
            working_dir: working_dir.map(nul_ended).transpose()?,
            user,
            listen_fd: false,
        })
    }
}

/// Signals raised only by the faulting thread itself: a child before its
/// exec gets one only through a bug of its own, never from outside.
const SYNCHRONOUS: u64 = 1 << (libc::SIGSEGV - 1)
    | 1 << (libc::SIGBUS - 1)
    | 1 << (libc::SIGILL - 1)
    | 1 << (libc::SIGFPE - 1)
    | 1 << (libc::SIGTRAP - 1);

/// What children must do about the daemon's signals, read once the daemon's
/// own dispositions are final (when the reaper starts): the signals a child
/// sets back to their default before its exec (bit `n - 1` for signal `n`),
/// and whether every signal must be blocked around `clone` (the daemon has a
/// handler for an asynchronous signal, which a child must not run).
pub(super) fn signal_plan() -> (u64, bool) {
    let (reset, handled) = dispositions();
    (reset, handled & !SYNCHRONOUS != 0)
}

/// The signals whose disposition is not the default now, and among them
/// those with a handler: bit `n - 1` for signal `n`.
fn dispositions() -> (u64, u64) {
    let (mut changed, mut handled) = (0, 0);
    for signal in 1..=SIGNAL_MAX {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        let mut old = KernelSigaction::default();
        // SAFETY: reads the disposition of `signal` into `old`, a buffer of
        // the kernel's layout; changes nothing.
        let rc = unsafe {
            sys::call(
                libc::SYS_rt_sigaction,
                signal as usize,
                0,
                (&raw mut old) as usize,
                KERNEL_SIGSET,
            )
        };
        let bit = 1 << (signal - 1);
        // A signal number the kernel rejects counts as handled (it fails
        // the same way in the child, harmlessly).
        if rc != 0 || old.handler != libc::SIG_DFL {
            changed |= bit;
        }
        if rc != 0 || (old.handler != libc::SIG_DFL && old.handler != libc::SIG_IGN) {
            handled |= bit;
        }
    }
    (changed, handled)
}

/// Starts `spec` with `socket` as its stdin, stdout and stderr, in a new
/// session (and so process group) with no controlling terminal, with `spec.env` plus `client_env`. The caller's copy of
/// the socket is closed when this returns. A failure at exec (or at a step
/// before it) is found when the child is reaped: [`Child::start_error`].
pub fn spawn(
    spec: &ChildSpec,
    stdio: ChildStdio,
    client_env: &[(&str, &str)],
    reaper: &Reaper,
) -> io::Result<Child> {
    let image = spec
        .image
        .as_ref()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.clone()))?;
    // The child's stdin and stdout: the socket itself, or a relay's pipes.
    // The stderr pipe's read end is registered before the child exists, so
    // that nothing can fail once it runs.
    let (stdin, stdout) = match stdio {
        ChildStdio::Socket(socket) => (OwnedFd::from(socket), None),
        ChildStdio::Relayed(ends) => (ends.stdin, Some(ends.stdout)),
        // The daemon keeps its own descriptor: the child gets a copy.
        ChildStdio::Shared(socket) => (OwnedFd::from(socket.try_clone()?), None),
    };
    let stdout_fd = stdout.as_ref().unwrap_or(&stdin).as_raw_fd();
    let (stderr, stderr_write) = if spec.stderr_to_log {
        let (read, write) = pipe()?;
        (Some(StderrPipe::from_owned_fd(read)?), Some(write))
    } else {
        (None, None)
    };
    let stderr_fd = stderr_write.as_ref().map_or(stdout_fd, AsRawFd::as_raw_fd);
    let record = Arc::new(Record::default());
    let shared = &reaper.shared;

    let pid = POOL.with(|pool| -> io::Result<libc::pid_t> {
        let mut pool = pool.borrow_mut();
        let slot = free_slot(&mut pool.0)?;
        fill(
            slot,
            image,
            client_env,
            [stdin.as_raw_fd(), stdout_fd, stderr_fd],
            shared.reset,
            &record.failure,
        );
        // Registered under the lock, before the reaper can see the exit.
        let mut running = shared
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let pid = start(slot, shared.block_signals)?;
        running.insert(pid, Arc::clone(&record));
        Ok(pid)
    })?;
    // The child has its own copies (clone copied the descriptor table):
    // the daemon's go now, before the child can have exited, so this
    // close is never the last one and never lingers.
    drop((stdin, stdout, stderr_write));
    Ok(Child {
        record,
        pid: u32::try_from(pid).expect("pids are positive"),
        stderr,
        user: spec.user.as_ref().map(|u| u.name.clone()),
        working_dir: spec.working_dir.clone(),
    })
}

/// Starts the child on `slot` and returns its pid. With `block_signals`,
/// every signal is blocked in this thread around the `clone`, so that no
/// handler of the daemon's runs in the child before it has reset them.
fn start(slot: &mut Slot, block_signals: bool) -> io::Result<libc::pid_t> {
    // Where the caller goes on at once, the kernel tells when the slot is
    // free again (`busy` zeroed); where it waits for the exec, it is free
    // when `clone` returns.
    let wait = if SPAWN_BLOCKS {
        libc::CLONE_VFORK
    } else {
        libc::CLONE_CHILD_CLEARTID
    };
    let flags = libc::CLONE_VM | libc::SIGCHLD | wait;
    // Blocks glibc's internal signals too (raw rt_sigprocmask), as
    // posix_spawn does.
    let old = block_signals.then(|| set_mask(!0));
    slot.busy.store(1, Ordering::Release);
    let launch = (&raw mut slot.launch).cast::<c_void>();
    // SAFETY: the child runs `child_main` on the slot's stack and reads
    // only the slot's `Launch` and the bytes it points to, which stay
    // unchanged until the kernel zeroes `busy` at the child's exec or exit
    // (the slot is not reused before), or until `clone` returns with
    // CLONE_VFORK.
    #[cfg(target_arch = "x86_64")]
    let result = unsafe {
        sys::clone_vm(
            flags as usize,
            slot.stack.top(),
            slot.busy.as_ptr(),
            child_main,
            launch,
        )
    };
    // SAFETY: as above.
    #[cfg(not(target_arch = "x86_64"))]
    let result = unsafe {
        match libc::clone(
            child_main,
            slot.stack.top(),
            flags,
            launch,
            std::ptr::null_mut::<c_int>(),
            std::ptr::null_mut::<c_void>(),
            slot.busy.as_ptr(),
        ) {
            -1 => {
                -(io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO) as isize)
            }
            pid => pid as isize,
        }
    };
    if let Some(old) = old {
        set_mask(old);
    }
    if result < 0 || SPAWN_BLOCKS {
        slot.busy.store(0, Ordering::Release);
    }
    if result < 0 {
        return Err(io::Error::from_raw_os_error(-result as i32));
    }
    Ok(result as libc::pid_t)
}

/// Sets this thread's signal mask (the kernel's 64-bit set) and returns the
/// old one.
fn set_mask(mask: u64) -> u64 {
    let mut old = 0u64;
    // SAFETY: raw rt_sigprocmask on this thread, with two 8-byte sets.
    unsafe {
        sys::call(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK as usize,
            (&raw const mask) as usize,
            (&raw mut old) as usize,
            KERNEL_SIGSET,
        );
    }
    old
}

/// A pipe, both ends close-on-exec.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 just made these two descriptors; nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl Child {
    /// After [`Child::wait`]: why the program never ran, if it did not
    /// (exec failed, or a step before it). Exec's errno is returned as it
    /// is, so ENOENT, EACCES and EAGAIN read as themselves.
    pub fn start_error(&self) -> Option<io::Error> {
        self.status()?;
        let failure = &self.record.failure;
        let step = Step::from_u8(failure.step.load(Ordering::Acquire));
        let errno = failure.errno.load(Ordering::Relaxed);
        let os = io::Error::from_raw_os_error(errno);
        let what = match step {
            Step::None => return None,
            Step::Exec => return Some(os),
            Step::Session => "cannot start a session".to_owned(),
            Step::Stdio => "cannot give the connection to the program".to_owned(),
            Step::Groups | Step::Gid | Step::Uid => {
                // EAGAIN here is the user's RLIMIT_NPROC: keep it readable as
                // resource exhaustion.
                if errno == libc::EAGAIN {
                    return Some(os);
                }
                let user = self.user.as_deref().unwrap_or("?");
                format!("cannot switch to user {user:?}")
            }
            Step::IdentityCheck => "the identity did not change".to_owned(),
            Step::WorkingDir => match &self.working_dir {
                Some(dir) => format!("cannot change to working directory {}", dir.display()),
                None => "cannot change directory".to_owned(),
            },
            Step::DescriptorLimit => "cannot give back the descriptor limit".to_owned(),
        };
        Some(io::Error::new(os.kind(), format!("{what}: {os}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::{CStr, c_char};

    /// The NUL-ended strings a null-ended pointer array points to.
    fn strings(mut at: *const *const c_char) -> Vec<String> {
        let mut out = Vec::new();
        // SAFETY: `at` is a null-ended array of C strings built by `fill`.
        unsafe {
            while !(*at).is_null() {
                out.push(CStr::from_ptr(*at).to_string_lossy().into_owned());
                at = at.add(1);
            }
        }
        out
    }

    #[test]
    fn fill_lays_out_program_argv_envp_and_directory() {
        let image = Image::from_parts(
            b"/bin/prog",
            &["/bin/prog", "a", "", "b c"],
            &["PATH=/bin", "EMPTY="],
            Some(b"/srv/dir"),
            Some(Credentials {
                uid: 7,
                gid: 8,
                groups: vec![8, 9],
            }),
        )
        .expect("no NUL byte");
        let failure = Failure::default();
        let mut slots = Vec::new();
        let slot = free_slot(&mut slots).expect("a slot");
        let client = [("CLIENT_IP", "127.0.0.1"), ("CLIENT_PORT", "4000")];
        fill(slot, &image, &client, [5, 5, 6], 1 << 12, &failure);
        let l = &slot.launch;
        // SAFETY: pointers into the slot, which `fill` just wrote.
        let (program, dir, groups) = unsafe {
            (
                CStr::from_ptr(l.program).to_str().expect("utf-8"),
                CStr::from_ptr(l.working_dir).to_str().expect("utf-8"),
                std::slice::from_raw_parts(l.groups, l.group_count),
            )
        };
        assert_eq!(program, "/bin/prog");
        assert_eq!(strings(l.argv), ["/bin/prog", "a", "", "b c"]);
        assert_eq!(
            strings(l.envp),
            [
                "PATH=/bin",
                "EMPTY=",
                "CLIENT_IP=127.0.0.1",
                "CLIENT_PORT=4000"
            ]
        );
        assert_eq!(dir, "/srv/dir");
        assert_eq!((l.stdio, l.reset), ([5, 5, 6], 1 << 12));
        assert!(l.switch_user);
        assert_eq!((l.uid, l.gid, groups), (7, 8, &[8, 9][..]));

        // The slot is free (no child ran), so it is the one reused, and a
        // service without a directory or a user leaves them unset.
        let plain = Image {
            working_dir: None,
            user: None,
            ..image
        };
        let again = free_slot(&mut slots).expect("a slot");
        fill(again, &plain, &client[..1], [3; 3], 0, &failure);
        assert!(again.launch.working_dir.is_null());
        assert!(!again.launch.switch_user);
        assert_eq!(strings(again.launch.envp).len(), 3);
        assert_eq!(slots.len(), 1);
    }

    #[test]
    fn a_wait_services_child_has_room_for_its_own_pid_in_listen_pid() {
        let image = Image::from_parts(
            b"/bin/prog",
            &["/bin/prog"],
            &["PATH=/bin", "LISTEN_FDS=1", "LISTEN_FDNAMES=tftp"],
            None,
            None,
        )
        .expect("no NUL byte")
        .with_listen_fd(true);
        let failure = Failure::default();
        let mut slots = Vec::new();
        let slot = free_slot(&mut slots).expect("a slot");
        fill(slot, &image, &[("PROTO", "UDP")], [5, 5, 5], 0, &failure);
        let to = slot.launch.listen_pid;
        assert!(!to.is_null());
        for (pid, text) in [
            (4_194_304, "4194304"),
            (0, "0"),
            (4_294_967_295, "4294967295"),
        ] {
            // SAFETY: what the child does: `fill` made room for the digits.
            unsafe { child::write_decimal(to, pid) };
            assert_eq!(
                strings(slot.launch.envp),
                [
                    "PATH=/bin",
                    "LISTEN_FDS=1",
                    "LISTEN_FDNAMES=tftp",
                    "PROTO=UDP",
                    &format!("LISTEN_PID={text}"),
                ]
            );
        }
        // A service that is not in wait mode has none.
        let plain = image.with_listen_fd(false);
        fill(slot, &plain, &[], [5, 5, 5], 0, &failure);
        assert!(slot.launch.listen_pid.is_null());
        assert_eq!(strings(slot.launch.envp).len(), 3);
    }

    #[test]
    fn a_busy_slot_is_not_reused() {
        let mut slots = Vec::new();
        free_slot(&mut slots)
            .expect("a slot")
            .busy
            .store(1, Ordering::Release);
        free_slot(&mut slots).expect("a second slot");
        assert_eq!(slots.len(), 2);
        slots[0].busy.store(0, Ordering::Release);
        free_slot(&mut slots).expect("the first again");
        assert_eq!(slots.len(), 2);
    }
}
