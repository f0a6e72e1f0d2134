//! The one place where operating systems differ.
//!
//! Everything outside this module is portable: it uses no `cfg(unix)` or
//! `cfg(windows)`, no OS crate and no `unsafe`. Each OS module provides the
//! same items:
//!
//! - users: [`Identity`], [`lookup_user`], [`can_switch_users`],
//!   [`USES_PASSWORDS`];
//! - programs: [`split_command_line`], [`executable_candidates`],
//!   [`is_executable`], [`DEFAULT_CONFIG`];
//! - sockets: [`Listener`] (an accept loop's socket), [`LISTENER_OPTIONS_INHERITED`];
//! - children: [`spawn`] a program on an accepted socket ([`SPAWN_BLOCKS`]:
//!   whether it blocks, so the server runs it on the blocking pool),
//!   [`Child`] (wait, signal its whole tree, and `start_error`: a start
//!   that failed after `spawn` returned), the [`Reaper`] that sees every
//!   child's exit, [`ExitStatus`] formatting; in `stdio = "pipe"` mode
//!   the relay between the connection and the child's pipes;
//! - the process: [`init_process`], [`descriptor_limit`], [`shutdown_signal`], [`notify_ready`],
//!   the system log ([`SystemLog`]) and service installation.

mod relay;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;
