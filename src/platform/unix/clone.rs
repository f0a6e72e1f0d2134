//! Linux: starting a session's program with `clone(CLONE_VM)` and an exec,
//! without waiting for the exec; and one [`Reaper`] for every child.
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
//! Exits are seen the classic way, without a descriptor per child: SIGCHLD
//! stays blocked in every thread (`init_process`) and is read from a
//! signalfd; each time it is raised, `waitid` reaps every child that has
//! exited. Under load one wake-up reaps many children. While connections
//! keep coming, the accept loop reaps before it admits each one
//! ([`Reaper::reap_exited`]) and the reaping task leaves SIGCHLD unread,
//! sweeping up every [`DEFER`]: a signal already pending raises no new
//! event, so an exit then costs the daemon no wake-up of its own.
//!
//! On other architectures, and on aarch64 with musl (whose `clone` refuses
//! `CLONE_CHILD_CLEARTID`), `CLONE_VFORK` takes the place of that word: the
//! caller then waits for the exec, and `libc::syscall` (which may set
//! errno) is safe to use.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_long, c_void};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::ptr;
use std::sync::atomic::{AtomicI32, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use nix::sys::signal::Signal;
use socket2::Socket;
use tokio::sync::Notify;

use super::signals::SignalStream;
use super::splice::Relay;
use crate::config::StdioMode;

use super::process::{ChildSpec, ExitStatus};

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

/// Raw system calls that return `-errno` and never touch `errno`.
mod sys {
    use std::ffi::c_long;

    /// A system call with up to four arguments.
    ///
    /// # Safety
    /// The arguments must be what system call `nr` expects.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub unsafe fn call(nr: c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
        let ret: isize;
        // SAFETY: the x86-64 system call convention; the kernel clobbers
        // rcx and r11 only. The caller vouches for the arguments.
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") nr as isize => ret,
                in("rdi") a,
                in("rsi") b,
                in("rdx") c,
                in("r10") d,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }

    /// `clone` without a new thread-local area: the child starts on
    /// `stack_top`, runs `main(arg)` and exits with what it returns; the
    /// caller gets the child's pid or `-errno`. Made here rather than
    /// through libc because musl's `clone` refuses `CLONE_CHILD_CLEARTID`.
    ///
    /// # Safety
    /// `stack_top` must be the top of a writable stack that nothing else
    /// uses until the child has exec'd or exited, `clear_tid` (if
    /// `flags` has `CLONE_CHILD_CLEARTID`) a word that stays valid as long,
    /// and `main` must be safe to run in the child with `arg`.
    #[cfg(target_arch = "x86_64")]
    pub unsafe fn clone_vm(
        flags: usize,
        stack_top: *mut std::ffi::c_void,
        clear_tid: *mut u32,
        main: extern "C" fn(*mut std::ffi::c_void) -> std::ffi::c_int,
        arg: *mut std::ffi::c_void,
    ) -> isize {
        // The child finds `arg` and `main` on its stack; once it has popped
        // them the stack is 16-byte aligned, as the call below needs.
        let sp = (stack_top as usize & !15) - 16;
        // SAFETY: `sp` is within the caller's stack, below its top.
        unsafe {
            let words = sp as *mut usize;
            words.write(arg as usize);
            words.add(1).write(main as usize);
        }
        let ret: isize;
        // SAFETY: the x86-64 `clone` convention (flags, stack, parent tid,
        // child tid, tls). The parent leaves the block at label 2 like any
        // system call; the child never leaves it: it calls `main` on its
        // own stack and exits.
        unsafe {
            std::arch::asm!(
                "syscall",
                "test rax, rax",
                "jnz 2f",
                "xor ebp, ebp",
                "pop rdi",
                "pop rax",
                "call rax",
                "mov edi, eax",
                "mov eax, {exit}",
                "syscall",
                "ud2",
                "2:",
                exit = const libc::SYS_exit,
                inlateout("rax") libc::SYS_clone as isize => ret,
                in("rdi") flags,
                in("rsi") sp,
                in("rdx") 0usize,
                in("r10") clear_tid,
                in("r8") 0usize,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }

    /// A system call with up to four arguments.
    ///
    /// # Safety
    /// The arguments must be what system call `nr` expects.
    #[cfg(target_arch = "aarch64")]
    #[inline(always)]
    pub unsafe fn call(nr: c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
        let ret: isize;
        // SAFETY: the aarch64 system call convention (number in x8, result
        // in x0). The caller vouches for the arguments.
        unsafe {
            std::arch::asm!(
                "svc 0",
                in("x8") nr,
                inlateout("x0") a as isize => ret,
                in("x1") b,
                in("x2") c,
                in("x3") d,
                options(nostack),
            );
        }
        ret
    }

    /// A system call with up to four arguments, through libc (which sets
    /// errno on failure: only used where the caller waits for the child).
    ///
    /// # Safety
    /// The arguments must be what system call `nr` expects.
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    #[inline(always)]
    pub unsafe fn call(nr: c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
        // SAFETY: as the caller vouches.
        let ret = unsafe { libc::syscall(nr, a, b, c, d) };
        if ret < 0 {
            -(std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO) as isize)
        } else {
            ret as isize
        }
    }
}

/// The system calls that set and read the user and group IDs, in their
/// 32-bit-ID form. On 32-bit x86 and Arm the plain numbers are the old
/// 16-bit calls: `setgroups` would read the list as 16-bit entries (a user
/// with two groups got group 0) and IDs above 65535 would be cut. Other
/// architectures have only 32-bit calls under the plain names; one not
/// listed here is not built until its numbers are checked.
mod ids {
    #[cfg(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64",
        target_arch = "powerpc64",
        target_arch = "s390x",
        target_arch = "loongarch64",
        target_arch = "mips64",
    ))]
    pub use libc::{
        SYS_getegid as GETEGID, SYS_geteuid as GETEUID, SYS_getgid as GETGID,
        SYS_getgroups as GETGROUPS, SYS_getuid as GETUID, SYS_setgid as SETGID,
        SYS_setgroups as SETGROUPS, SYS_setuid as SETUID,
    };
    #[cfg(any(target_arch = "x86", target_arch = "arm"))]
    pub use libc::{
        SYS_getegid32 as GETEGID, SYS_geteuid32 as GETEUID, SYS_getgid32 as GETGID,
        SYS_getgroups32 as GETGROUPS, SYS_getuid32 as GETUID, SYS_setgid32 as SETGID,
        SYS_setgroups32 as SETGROUPS, SYS_setuid32 as SETUID,
    };
    #[cfg(not(any(
        target_arch = "x86",
        target_arch = "arm",
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64",
        target_arch = "powerpc64",
        target_arch = "s390x",
        target_arch = "loongarch64",
        target_arch = "mips64",
    )))]
    compile_error!(
        "the 32-bit-ID system calls of this architecture are not checked: add them to `ids`"
    );
}

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
            .env
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
        })
    }
}

/// The child's steps before exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Step {
    None,
    Session,
    Stdio,
    Groups,
    Gid,
    Uid,
    IdentityCheck,
    WorkingDir,
    DescriptorLimit,
    Exec,
}

impl Step {
    fn from_u8(value: u8) -> Self {
        [
            Self::None,
            Self::Session,
            Self::Stdio,
            Self::Groups,
            Self::Gid,
            Self::Uid,
            Self::IdentityCheck,
            Self::WorkingDir,
            Self::DescriptorLimit,
            Self::Exec,
        ]
        .get(usize::from(value))
        .copied()
        .unwrap_or(Self::Exec)
    }
}

/// Where a child reports the step that failed and its errno.
#[derive(Debug, Default)]
struct Failure {
    step: AtomicU8,
    errno: AtomicI32,
}

/// One child's shared record. The reaper holds it from `clone` until the
/// child is reaped, so it outlives the child's writes to `failure`; the
/// session's [`Child`] holds it to learn the exit.
#[derive(Debug, Default)]
struct Record {
    failure: Failure,
    exit: Mutex<Exit>,
}

#[derive(Debug, Default)]
struct Exit {
    status: Option<ExitStatus>,
    waiter: Option<Waker>,
}

/// The daemon's children: every one started by [`spawn`] is reaped here,
/// by one task. Make it with [`Reaper::start`] inside the runtime, once the
/// daemon has set up its own signals (stop and reload).
#[derive(Debug, Clone)]
pub struct Reaper {
    shared: Arc<Reapers>,
}

#[derive(Debug)]
struct Reapers {
    /// Children not reaped yet, by pid.
    running: Mutex<HashMap<libc::pid_t, Arc<Record>>>,
    /// The signals a child sets back to their default before its exec:
    /// those the daemon handles or ignores (bit `n - 1` for signal `n`).
    reset: u64,
    /// Whether the daemon has a handler for an asynchronous signal, which
    /// a child must not run: then every signal is blocked around `clone`.
    block_signals: bool,
    /// How many times the accept loop has reaped ([`Reaper::reap_exited`]).
    accepts: AtomicU64,
    /// Connections waiting for a session slot ([`Reaper::hurry`]): while
    /// there is one, each exit is reaped as soon as it is signalled.
    waiting: AtomicUsize,
    /// Wakes the reaping task from its deferral when one starts waiting.
    hurry: Notify,
}

/// How long the reaping task leaves SIGCHLD unread once it has seen a
/// connection come: while they keep coming, the accept loop reaps before
/// each one. It goes back to reaping each exit as it is signalled after a
/// pause this long without a connection, or at once while one waits for a
/// slot ([`Reaper::hurry`]). So an exit is reaped at most this late when
/// the connections stop.
const DEFER: Duration = Duration::from_millis(10);

/// What the child runs with; inside its [`Slot`], so it stays put.
#[repr(C)]
struct Launch {
    program: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    /// What becomes fds 0, 1 and 2.
    stdio: [RawFd; 3],
    working_dir: *const c_char,
    switch_user: bool,
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: *const libc::gid_t,
    group_count: usize,
    /// Room for `group_count + 1` groups, where the child reads back the
    /// groups it has.
    seen_groups: *mut libc::gid_t,
    /// The signals to set back to their default, as in [`Reapers::reset`].
    reset: u64,
    /// The descriptor limit to give back (soft, hard), when the daemon
    /// raised its own (see `raise_descriptor_limit`).
    nofile: Option<[u64; 2]>,
    failure: *const Failure,
}

/// A stack mapping with a guard page below it.
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

    /// The top of the stack (it grows down), page-aligned.
    fn top(&self) -> *mut c_void {
        // SAFETY: one past the end of the mapping.
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; slots are dropped only with
        // their thread, and a busy slot is leaked instead (see `Pool`).
        unsafe {
            libc::munmap(self.base, self.len);
        }
    }
}

/// One child's room between `clone` and exec: its stack, its `Launch`,
/// and every byte it reads.
struct Slot {
    stack: Stack,
    /// Nonzero while a child may use this slot; the kernel zeroes it when
    /// the child execs or exits (`CLONE_CHILD_CLEARTID`).
    busy: AtomicU32,
    launch: Launch,
    /// Program, argv, the environment, the working directory, each
    /// NUL-ended.
    strings: Vec<u8>,
    /// argv pointers and a null, then envp pointers and a null.
    pointers: Vec<*const c_char>,
    groups: Vec<libc::gid_t>,
    /// Where the child reads back its groups: one more than `groups`.
    seen_groups: Vec<libc::gid_t>,
}

/// A thread's slots. A busy slot is never freed: at thread exit it is
/// leaked rather than unmapped under a child that may still run on it.
/// Boxed, because a slot must not move while a child uses it.
#[allow(clippy::vec_box)]
struct Pool(Vec<Box<Slot>>);

impl Drop for Pool {
    fn drop(&mut self) {
        for slot in self.0.drain(..) {
            if slot.busy.load(Ordering::Acquire) != 0 {
                Box::leak(slot);
            }
        }
    }
}

thread_local! {
    static POOL: RefCell<Pool> = const { RefCell::new(Pool(Vec::new())) };
}

/// A running child: one session's program, leader of its own session and
/// process group.
#[derive(Debug)]
pub struct Child {
    record: Arc<Record>,
    pid: u32,
    stderr: Option<StderrPipe>,
    /// For the error of a failed start.
    user: Option<String>,
    working_dir: Option<std::path::PathBuf>,
}

impl Reaper {
    /// Notes which signals children must set back to their default (the
    /// daemon's own dispositions must be final by now), opens the signalfd and
    /// starts the reaping task. SIGCHLD must be blocked in every thread
    /// (`init_process` does it before any thread exists); it is blocked in
    /// this one here too, in case.
    pub fn start() -> io::Result<Self> {
        let exits = SignalStream::new(&[Signal::SIGCHLD])?;
        let (reset, handled) = dispositions();
        let shared = Arc::new(Reapers {
            running: Mutex::new(HashMap::new()),
            reset,
            block_signals: handled & !SYNCHRONOUS != 0,
            accepts: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            hurry: Notify::new(),
        });
        tokio::spawn(reap_on_sigchld(exits, Arc::clone(&shared)));
        Ok(Self { shared })
    }

    /// Reaps children that have exited, now: every one if `all`, else at
    /// most one. The accept loop calls it before it admits a connection, so
    /// that the reaping task need not wake for each exit while connections
    /// keep coming; with `all` (where a source's sessions are counted),
    /// every session that has ended gives its slots back first. One per
    /// connection keeps up with the sessions ending, one `waitid` each,
    /// which scans every running child: so it is not called again to find
    /// none left. The reaping task sweeps up the rest every [`DEFER`].
    pub fn reap_exited(&self, all: bool) {
        self.shared.accepts.fetch_add(1, Ordering::Relaxed);
        self.shared.reap_all(if all {
            Sweep::UntilNoneLeft
        } else {
            Sweep::One
        });
    }

    /// A connection waits for a session slot: until the returned guard is
    /// dropped, reap each exit as soon as it is signalled, rather than at
    /// the next accept.
    pub fn hurry(&self) -> Hurry {
        self.shared.waiting.fetch_add(1, Ordering::Relaxed);
        self.shared.hurry.notify_one();
        Hurry(Arc::clone(&self.shared))
    }
}

/// Held while a connection waits for a session slot ([`Reaper::hurry`]).
#[derive(Debug)]
#[must_use = "the reaper hurries only while this is held"]
pub struct Hurry(Arc<Reapers>);

impl Drop for Hurry {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Signals raised only by the faulting thread itself: a child before its
/// exec gets one only through a bug of its own, never from outside.
const SYNCHRONOUS: u64 = 1 << (libc::SIGSEGV - 1)
    | 1 << (libc::SIGBUS - 1)
    | 1 << (libc::SIGILL - 1)
    | 1 << (libc::SIGFPE - 1)
    | 1 << (libc::SIGTRAP - 1);

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

/// The reaping task: on each SIGCHLD, reaps every child that has exited;
/// then, while connections keep coming, leaves the reaping to the accept
/// loop ([`DEFER`]).
async fn reap_on_sigchld(exits: SignalStream, shared: Arc<Reapers>) {
    let mut seen = shared.accepts.load(Ordering::Relaxed);
    loop {
        // A child that exits after the signal was read raises it again, so
        // none is missed.
        if let Err(e) = exits.recv().await {
            tracing::error!(error = %e, "cannot wait for exited programs");
            return;
        }
        shared.reap_all(Sweep::All);
        loop {
            let accepts = shared.accepts.load(Ordering::Relaxed);
            if accepts == seen || shared.waiting.load(Ordering::Relaxed) > 0 {
                break;
            }
            seen = accepts;
            tokio::select! {
                () = tokio::time::sleep(DEFER) => shared.reap_all(Sweep::All),
                () = shared.hurry.notified() => break,
            }
        }
    }
}

/// How far [`Reapers::reap_all`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sweep {
    /// Until `waitid` finds no exited child.
    All,
    /// Also stop once every child started by [`spawn`] has been reaped:
    /// on the accept path, where most of the time that saves a `waitid`.
    UntilNoneLeft,
    /// One `waitid` at most, whatever it finds.
    One,
}

impl Reapers {
    /// Reaps every child that has exited and hands each status to its
    /// record.
    fn reap_all(&self, sweep: Sweep) {
        if sweep != Sweep::All && self.no_child_left() {
            return;
        }
        loop {
            // SAFETY: siginfo_t is plain data; waitid fills it.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: a valid siginfo_t to fill; P_ALL ignores the id.
            let rc =
                unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOHANG) };
            if rc != 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // ECHILD: no child left.
                return;
            }
            // SAFETY: waitid filled `info` for a child (SIGCHLD layout).
            let pid = unsafe { info.si_pid() };
            if pid == 0 {
                return;
            }
            let (record, none_left) = {
                let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
                let record = running.remove(&pid);
                (record, running.is_empty())
            };
            // A child not started by `spawn` has nobody waiting for it.
            if let Some(record) = record {
                let mut exit = record.exit.lock().unwrap_or_else(PoisonError::into_inner);
                exit.status = Some(status_of(&info));
                if let Some(waiter) = exit.waiter.take() {
                    waiter.wake();
                }
            }
            if sweep == Sweep::One || (sweep == Sweep::UntilNoneLeft && none_left) {
                return;
            }
        }
    }

    fn no_child_left(&self) -> bool {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }
}

/// The wait(2) status word of what `waitid` reported: exit code in the
/// second byte, or the signal in the low bits (with 0x80 for a core dump).
fn status_of(info: &libc::siginfo_t) -> ExitStatus {
    // SAFETY: `info` was filled by waitid for a child (SIGCHLD layout).
    let status = unsafe { info.si_status() };
    let raw = match info.si_code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_DUMPED => status | 0x80,
        _ => status,
    };
    ExitStatus::from_raw(raw)
}

/// Starts `spec` with `socket` as its stdin, stdout and stderr, in a new
/// session (and so process group) with no controlling terminal, with `spec.env` plus `client_env`. The caller's copy of
/// the socket is closed when this returns. A failure at exec (or at a step
/// before it) is found when the child is reaped: [`Child::start_error`].
pub fn spawn(
    spec: &ChildSpec,
    socket: Socket,
    client_env: &[(&str, &str)],
    reaper: &Reaper,
) -> io::Result<Child> {
    let image = spec
        .image
        .as_ref()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.clone()))?;
    // The child's stdin and stdout: the socket itself, or the relay's
    // pipes. The relay and the stderr pipe's read end are registered before
    // the child exists, so that nothing can fail once it runs.
    let (relay, stdin, stdout) = match spec.stdio {
        StdioMode::Socket => (None, OwnedFd::from(socket), None),
        StdioMode::Pipe => {
            let (relay, ends) = Relay::new(socket, spec.timeout)?;
            (Some(relay), ends.stdin, Some(ends.stdout))
        }
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
    if let Some(relay) = relay {
        tokio::spawn(relay.run());
    }
    Ok(Child {
        record,
        pid: u32::try_from(pid).expect("pids are positive"),
        stderr,
        user: spec.user.as_ref().map(|u| u.name.clone()),
        working_dir: spec.working_dir.clone(),
    })
}

/// A slot no child uses, made if needed.
#[allow(clippy::vec_box)]
fn free_slot(slots: &mut Vec<Box<Slot>>) -> io::Result<&mut Slot> {
    let free = slots
        .iter()
        .position(|s| s.busy.load(Ordering::Acquire) == 0);
    let index = match free {
        Some(index) => index,
        None if slots.len() < MAX_SLOTS => {
            slots.push(Box::new(Slot {
                stack: Stack::new()?,
                busy: AtomicU32::new(0),
                launch: Launch {
                    program: ptr::null(),
                    argv: ptr::null(),
                    envp: ptr::null(),
                    stdio: [-1; 3],
                    working_dir: ptr::null(),
                    switch_user: false,
                    uid: 0,
                    gid: 0,
                    groups: ptr::null(),
                    group_count: 0,
                    seen_groups: ptr::null_mut(),
                    reset: 0,
                    nofile: None,
                    failure: ptr::null(),
                },
                strings: Vec::new(),
                pointers: Vec::new(),
                groups: Vec::new(),
                seen_groups: Vec::new(),
            }));
            slots.len() - 1
        }
        None => return Err(io::Error::from_raw_os_error(libc::EAGAIN)),
    };
    Ok(&mut slots[index])
}

/// Copies what the child reads into `slot` and points its `Launch` at it.
fn fill(
    slot: &mut Slot,
    image: &Image,
    client_env: &[(&str, &str)],
    stdio: [RawFd; 3],
    reset: u64,
    failure: &Failure,
) {
    let strings = &mut slot.strings;
    strings.clear();
    strings.extend_from_slice(&image.strings);
    for (key, value) in client_env {
        strings.extend_from_slice(key.as_bytes());
        strings.push(b'=');
        strings.extend_from_slice(value.as_bytes());
        strings.push(0);
    }
    let dir_at = strings.len();
    if let Some(dir) = &image.working_dir {
        strings.extend_from_slice(dir);
    }
    // Pointers only once the buffer no longer grows.
    let base = strings.as_ptr();
    // SAFETY: every offset is within `strings`.
    let at = |offset: usize| unsafe { base.add(offset).cast::<c_char>() };
    let pointers = &mut slot.pointers;
    pointers.clear();
    pointers.reserve(image.starts.len() + client_env.len() + 2);
    let program = at(image.starts[0]);
    let (argv, env) = image.starts[1..].split_at(image.argc);
    pointers.extend(argv.iter().map(|&offset| at(offset)));
    pointers.push(ptr::null());
    let envp_at = pointers.len();
    pointers.extend(env.iter().map(|&offset| at(offset)));
    let mut offset = image.strings.len();
    for (key, value) in client_env {
        pointers.push(at(offset));
        offset += key.len() + value.len() + 2;
    }
    pointers.push(ptr::null());
    slot.groups.clear();
    let credentials = image.user.as_ref();
    if let Some(c) = credentials {
        slot.groups.extend_from_slice(&c.groups);
    }
    slot.seen_groups.clear();
    slot.seen_groups.resize(slot.groups.len() + 1, 0);
    slot.launch = Launch {
        program,
        argv: pointers.as_ptr(),
        // SAFETY: `envp_at` is within `pointers`.
        envp: unsafe { pointers.as_ptr().add(envp_at) },
        stdio,
        working_dir: if image.working_dir.is_some() {
            at(dir_at)
        } else {
            ptr::null()
        },
        switch_user: credentials.is_some(),
        uid: credentials.map_or(0, |c| c.uid),
        gid: credentials.map_or(0, |c| c.gid),
        groups: slot.groups.as_ptr(),
        group_count: slot.groups.len(),
        seen_groups: slot.seen_groups.as_mut_ptr(),
        reset,
        nofile: super::program_nofile(),
        failure,
    };
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
            ptr::null_mut::<c_int>(),
            ptr::null_mut::<c_void>(),
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

/// The kernel's `struct sigaction`, as on x86-64. Only its all-zero value
/// is set (SIG_DFL, no flags, an empty mask), which means the same whatever
/// the architecture's order of the fields, and only the handler is read,
/// which comes first everywhere.
#[repr(C)]
#[derive(Default)]
struct KernelSigaction {
    handler: usize,
    flags: std::ffi::c_ulong,
    restorer: usize,
    mask: u64,
}

/// The child, between clone and exec, on the daemon's memory: raw system
/// calls only (see the module's notes), no allocation, no locks.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the slot's `Launch`; every pointer in it is valid
    // until this child execs or exits. Each call is a system call on
    // integers or those pointers.
    unsafe {
        let l = &*arg.cast::<Launch>();
        let fail = |step: Step, result: isize| -> ! {
            let failure = &*l.failure;
            failure.errno.store(-result as i32, Ordering::Relaxed);
            failure.step.store(step as u8, Ordering::Release);
            sys::call(libc::SYS_exit_group, 127, 0, 0, 0);
            loop {
                std::hint::spin_loop();
            }
        };
        let call = |nr: c_long, a: usize, b: usize, c: usize, d: usize| sys::call(nr, a, b, c, d);
        // A session of its own, as xinetd and systemd give: the program
        // leads its process group and has no controlling terminal, so it
        // cannot reach the terminal the daemon was started from (TIOCSTI).
        let r = call(libc::SYS_setsid, 0, 0, 0, 0);
        if r < 0 {
            fail(Step::Session, r);
        }
        for (to, from) in (0..).zip(l.stdio) {
            let r = if from == to {
                call(libc::SYS_fcntl, to as usize, libc::F_SETFD as usize, 0, 0)
            } else {
                call(libc::SYS_dup3, from as usize, to as usize, 0, 0)
            };
            if r < 0 {
                fail(Step::Stdio, r);
            }
        }
        // A fresh start, as inetd gives: every signal to its default.
        // Handlers would run the daemon's code here; SIGPIPE and whatever
        // the daemon's parent ignored would stay ignored. The others are at
        // their default already.
        let default = KernelSigaction::default();
        for signal in 1..=SIGNAL_MAX {
            if l.reset & (1 << (signal - 1)) != 0 {
                call(
                    libc::SYS_rt_sigaction,
                    signal as usize,
                    (&raw const default) as usize,
                    0,
                    KERNEL_SIGSET,
                );
            }
        }
        if l.switch_user {
            let r = call(ids::SETGROUPS, l.group_count, l.groups as usize, 0, 0);
            if r < 0 {
                fail(Step::Groups, r);
            }
            let r = call(ids::SETGID, l.gid as usize, 0, 0, 0);
            if r < 0 {
                fail(Step::Gid, r);
            }
            let r = call(ids::SETUID, l.uid as usize, 0, 0, 0);
            if r < 0 {
                fail(Step::Uid, r);
            }
            let current = [
                call(ids::GETUID, 0, 0, 0, 0),
                call(ids::GETEUID, 0, 0, 0, 0),
                call(ids::GETGID, 0, 0, 0, 0),
                call(ids::GETEGID, 0, 0, 0, 0),
            ];
            let expected = [l.uid, l.uid, l.gid, l.gid].map(|id| id as isize);
            if current != expected {
                fail(Step::IdentityCheck, -(libc::EPERM as isize));
            }
            // The supplementary groups too: the kernel keeps them sorted,
            // as `Image` sorted them. One more entry of room shows a list
            // longer than ours (the call fails with EINVAL then).
            let n = call(
                ids::GETGROUPS,
                l.group_count + 1,
                l.seen_groups as usize,
                0,
                0,
            );
            if n != l.group_count as isize {
                fail(Step::IdentityCheck, -(libc::EPERM as isize));
            }
            for i in 0..l.group_count {
                if *l.seen_groups.add(i) != *l.groups.add(i) {
                    fail(Step::IdentityCheck, -(libc::EPERM as isize));
                }
            }
        }
        if !l.working_dir.is_null() {
            let r = call(libc::SYS_chdir, l.working_dir as usize, 0, 0, 0);
            if r < 0 {
                fail(Step::WorkingDir, r);
            }
        }
        if let Some(nofile) = &l.nofile {
            let r = call(
                libc::SYS_prlimit64,
                0,
                libc::RLIMIT_NOFILE as usize,
                (nofile as *const [u64; 2]) as usize,
                0,
            );
            if r < 0 {
                fail(Step::DescriptorLimit, r);
            }
        }
        let none = 0u64;
        call(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK as usize,
            (&raw const none) as usize,
            0,
            KERNEL_SIGSET,
        );
        let r = call(
            libc::SYS_execve,
            l.program as usize,
            l.argv as usize,
            l.envp as usize,
            0,
        );
        fail(Step::Exec, r)
    }
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
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// The child's stderr, when it goes to the daemon's log (once).
    pub fn take_stderr(&mut self) -> Option<StderrPipe> {
        self.stderr.take()
    }

    /// Waits until the reaper has reaped the child.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        Ok(std::future::poll_fn(|cx| self.poll_exit(cx)).await)
    }

    fn poll_exit(&self, cx: &mut Context<'_>) -> Poll<ExitStatus> {
        let mut exit = self
            .record
            .exit
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match exit.status {
            Some(status) => Poll::Ready(status),
            None => {
                if !exit
                    .waiter
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    exit.waiter = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }

    fn status(&self) -> Option<ExitStatus> {
        self.record
            .exit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .status
    }

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
    use std::ffi::CStr;

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
