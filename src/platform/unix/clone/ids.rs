//! The system calls that set and read the user and group IDs, in their
//! 32-bit-ID form. On 32-bit x86 and Arm the plain numbers are the old
//! 16-bit calls: `setgroups` would read the list as 16-bit entries (a user
//! with two groups got group 0) and IDs above 65535 would be cut. Other
//! architectures have only 32-bit calls under the plain names; one not
//! listed here is not built until its numbers are checked.

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
