//! A child's room between `clone` and exec: its stack, and a copy of every
//! byte it reads (program, argv, environment, groups), in a [`Slot`] from a
//! per-thread pool. A slot is reused only once the kernel has zeroed its
//! `busy` word, at the child's exec or exit.

use std::cell::RefCell;
use std::ffi::{c_char, c_void};
use std::io;
use std::os::fd::RawFd;
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};

use super::child::Failure;
use super::{Image, MAX_SLOTS, PAGE, STACK_SIZE};

/// What the child runs with; inside its [`Slot`], so it stays put.
#[repr(C)]
pub(super) struct Launch {
    pub(super) program: *const c_char,
    pub(super) argv: *const *const c_char,
    pub(super) envp: *const *const c_char,
    /// What becomes fds 0, 1 and 2.
    pub(super) stdio: [RawFd; 3],
    pub(super) working_dir: *const c_char,
    pub(super) switch_user: bool,
    pub(super) uid: libc::uid_t,
    pub(super) gid: libc::gid_t,
    pub(super) groups: *const libc::gid_t,
    pub(super) group_count: usize,
    /// Room for `group_count + 1` groups, where the child reads back the
    /// groups it has.
    pub(super) seen_groups: *mut libc::gid_t,
    /// The signals to set back to their default, as in [`Reapers::reset`].
    pub(super) reset: u64,
    /// The descriptor limit to give back (soft, hard), when the daemon
    /// raised its own (see `raise_descriptor_limit`).
    pub(super) nofile: Option<[u64; 2]>,
    pub(super) failure: *const Failure,
    /// A wait service's: the socket (fd 0) goes to fd 3 too, and the child
    /// writes its pid here, the digits of the `LISTEN_PID=` variable
    /// (room for [`PID_DIGITS`] and a NUL); null otherwise.
    pub(super) listen_pid: *mut c_char,
}

/// The most digits a pid has (`pid_t` is 32 bits wide).
pub(super) const PID_DIGITS: usize = 10;

/// A stack mapping with a guard page below it.
pub(super) struct Stack {
    pub(super) base: *mut c_void,
    pub(super) len: usize,
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
    pub(super) fn top(&self) -> *mut c_void {
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
pub(super) struct Slot {
    pub(super) stack: Stack,
    /// Nonzero while a child may use this slot; the kernel zeroes it when
    /// the child execs or exits (`CLONE_CHILD_CLEARTID`).
    pub(super) busy: AtomicU32,
    pub(super) launch: Launch,
    /// Program, argv, the environment, the working directory, each
    /// NUL-ended.
    pub(super) strings: Vec<u8>,
    /// argv pointers and a null, then envp pointers and a null.
    pub(super) pointers: Vec<*const c_char>,
    pub(super) groups: Vec<libc::gid_t>,
    /// Where the child reads back its groups: one more than `groups`.
    pub(super) seen_groups: Vec<libc::gid_t>,
}

/// A thread's slots. A busy slot is never freed: at thread exit it is
/// leaked rather than unmapped under a child that may still run on it.
/// Boxed, because a slot must not move while a child uses it.
#[allow(clippy::vec_box)]
pub(super) struct Pool(pub(super) Vec<Box<Slot>>);

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
    pub(super) static POOL: RefCell<Pool> = const { RefCell::new(Pool(Vec::new())) };
}

/// A slot no child uses, made if needed.
#[allow(clippy::vec_box)]
pub(super) fn free_slot(slots: &mut Vec<Box<Slot>>) -> io::Result<&mut Slot> {
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
                    listen_pid: ptr::null_mut(),
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
pub(super) fn fill(
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
    // `LISTEN_PID=` and room for the digits the child writes.
    let listen_pid_at = strings.len();
    if image.listen_fd {
        strings.extend_from_slice(b"LISTEN_PID=");
        strings.extend_from_slice(&[0; PID_DIGITS + 1]);
    }
    let dir_at = strings.len();
    if let Some(dir) = &image.working_dir {
        strings.extend_from_slice(dir);
    }
    // Pointers only once the buffer no longer grows; the one the child
    // writes through first (taking `as_ptr` after it does not invalidate it).
    let listen_pid = if image.listen_fd {
        // SAFETY: the digits' room is within `strings`.
        unsafe {
            strings
                .as_mut_ptr()
                .add(listen_pid_at + b"LISTEN_PID=".len())
                .cast::<c_char>()
        }
    } else {
        ptr::null_mut()
    };
    let base = strings.as_ptr();
    // SAFETY: every offset is within `strings`.
    let at = |offset: usize| unsafe { base.add(offset).cast::<c_char>() };
    let pointers = &mut slot.pointers;
    pointers.clear();
    pointers.reserve(image.starts.len() + client_env.len() + 3);
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
    if image.listen_fd {
        pointers.push(at(listen_pid_at));
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
        nofile: super::super::program_nofile(),
        failure,
        listen_pid,
    };
}
