//! What the child runs between `clone` and exec, on the daemon's memory:
//! raw system calls only, no allocation, no locks, nothing that writes
//! `errno` (see the parent module's notes); and how it reports the step
//! that failed.

use std::ffi::{c_char, c_int, c_long, c_void};
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};

use super::slot::{Launch, PID_DIGITS};
use super::{KERNEL_SIGSET, SIGNAL_MAX, ids, sys};

/// The child's steps before exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Step {
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
    pub(super) fn from_u8(value: u8) -> Self {
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
pub(crate) struct Failure {
    pub(crate) step: AtomicU8,
    pub(crate) errno: AtomicI32,
}

/// The kernel's `struct sigaction`, as on x86-64. Only its all-zero value
/// is set (SIG_DFL, no flags, an empty mask), which means the same whatever
/// the architecture's order of the fields, and only the handler is read,
/// which comes first everywhere.
#[repr(C)]
#[derive(Default)]
pub(super) struct KernelSigaction {
    pub(super) handler: usize,
    flags: std::ffi::c_ulong,
    restorer: usize,
    mask: u64,
}

/// Where a socket-activated program finds its socket
/// (`SD_LISTEN_FDS_START`).
const LISTEN_FD: c_int = 3;

/// Writes `n` in decimal and a NUL at `to`, which has room for
/// [`PID_DIGITS`] digits and the NUL; no allocation, no call.
///
/// # Safety
/// `to` must be valid for writes of `PID_DIGITS + 1` bytes.
pub(super) unsafe fn write_decimal(to: *mut c_char, mut n: usize) {
    let mut digits = [0u8; PID_DIGITS];
    let mut len = 0;
    loop {
        digits[PID_DIGITS - 1 - len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 || len == PID_DIGITS {
            break;
        }
    }
    for (i, &digit) in digits[PID_DIGITS - len..].iter().enumerate() {
        // SAFETY: `i < len <= PID_DIGITS`: within the room the caller vouches for.
        unsafe { *to.add(i) = digit as c_char };
    }
    // SAFETY: `len <= PID_DIGITS`, and the room holds one byte more.
    unsafe { *to.add(len) = 0 };
}

/// The child, between clone and exec, on the daemon's memory: raw system
/// calls only (see the module's notes), no allocation, no locks.
pub(super) extern "C" fn child_main(arg: *mut c_void) -> c_int {
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
        if !l.listen_pid.is_null() {
            // A wait service's socket, now fd 0, as socket activation
            // passes it: fd 3, and `LISTEN_PID` this process's own pid.
            let r = call(libc::SYS_dup3, 0, LISTEN_FD as usize, 0, 0);
            if r < 0 {
                fail(Step::Stdio, r);
            }
            let pid = call(libc::SYS_getpid, 0, 0, 0, 0);
            write_decimal(l.listen_pid, pid.unsigned_abs());
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
