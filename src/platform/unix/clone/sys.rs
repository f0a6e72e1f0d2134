//! Raw system calls that return `-errno` and never touch `errno`.

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
