//! The range of every numeric setting: one definition for the TOML keys,
//! the flat format and the command line's flags.
//!
//! Each bound is what the code and every supported OS accept, so that a
//! value `--check` passes never fails (or panics) later: at start, on each
//! connection, or at stop. Where the OSes differ, the smallest maximum wins.
//! The reason for each is on the constant; a test starts the daemon with
//! every extreme at once (tests/daemon/toml_config.rs).

use std::ops::RangeInclusive;

/// A listen port.
pub const PORT: RangeInclusive<u64> = 1..=65_535;

/// Concurrent sessions: the global `max_sessions` (and `--max-sessions`),
/// a service's `max_sessions`, and `max_per_source`. The global cap is a
/// semaphore whose permits are all taken back, at once, at stop (a count
/// that must fit a `u32`); a million sessions is a million processes,
/// beyond the pid space of most hosts (Linux's `pid_max` is at most
/// 4,194,304).
pub const SESSIONS: RangeInclusive<u64> = 1..=1_000_000;

/// `timeout` and `--timeout`, in seconds; 0 is none. Windows holds
/// SO_RCVTIMEO and SO_SNDTIMEO as a DWORD of milliseconds: 4,294,967
/// seconds (49 days) is the longest it keeps.
pub const TIMEOUT_SECS: RangeInclusive<u64> = 0..=4_294_967;

/// `linger_timeout` and `--linger-timeout`, in seconds; 0 does not linger.
/// Windows holds SO_LINGER's seconds in a `u_short`.
pub const LINGER_SECS: RangeInclusive<u64> = 0..=65_535;

/// `keepalive`, the idle seconds before the first probe; 0 is off. Linux
/// refuses a TCP_KEEPIDLE above 32,767 (`MAX_TCP_KEEPIDLE`), on every
/// connection; Windows (milliseconds in a `u_long`), FreeBSD and macOS
/// take more.
pub const KEEPALIVE_SECS: RangeInclusive<u64> = 0..=32_767;

/// `max_lifetime`, in seconds: a timer of the runtime, which cuts every
/// timer at 30 years (a clock 100 years ahead overflows on some systems).
pub const LIFETIME_SECS: RangeInclusive<u64> = 1..=30 * 365 * 86_400;

/// `backlog`, the listen queue's length. `listen()` takes an `int`; Linux
/// cuts it to `net.core.somaxconn`, Windows to what its provider allows.
pub const BACKLOG: RangeInclusive<u64> = 1..=65_535;

/// `burst` of `rate` and `rate_per_source`: a token bucket's size, held in
/// an `f64`, which holds every `u32` exactly.
pub const BURST: RangeInclusive<u64> = 1..=u32::MAX as u64;

/// The slowest `per_second` of a rate: one session a day. Bounded so that
/// the time between two tokens is a sane duration (a rate of 1e-300 would
/// overflow one). There is no upper bound: a rate faster than the host can
/// start programs admits everyone, and a finite one never overflows the
/// bucket's arithmetic (it saturates at the burst).
pub const MIN_PER_SECOND: f64 = 1.0 / 86_400.0;

/// `source_prefix_v6`: an IPv6 prefix length.
pub const SOURCE_PREFIX_V6: RangeInclusive<u64> = 0..=128;

/// `socket_mode`: a Unix socket file's permission bits (no set-id or
/// sticky bit: they mean nothing on a socket).
pub const SOCKET_MODE: RangeInclusive<u64> = 0..=0o777;

/// A user or group ID written as a number: `uid_t` and `gid_t` are 32 bits,
/// and the all-ones value is `(uid_t)-1`, "no change" to `chown`.
pub const ACCOUNT_ID: RangeInclusive<u64> = 0..=u32::MAX as u64 - 1;

/// `proxy_timeout`, in seconds: a proxy sends its header at once, so
/// this bounds what a client that connected to the proxy and sent nothing
/// can hold.
pub const PROXY_TIMEOUT_SECS: RangeInclusive<u64> = 1..=3_600;

/// `tls_timeout`, in seconds: how long a client may take over its
/// handshake, holding a session slot meanwhile.
pub const TLS_TIMEOUT_SECS: RangeInclusive<u64> = 1..=3_600;

/// `--shutdown-grace`, in seconds: how long sessions get after SIGTERM at
/// stop, before SIGKILL.
pub const SHUTDOWN_GRACE_SECS: RangeInclusive<u64> = 0..=3_600;

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn every_duration_fits_a_clock() {
        // Adding the longest of each to now must not overflow an Instant.
        for range in [TIMEOUT_SECS, LINGER_SECS, KEEPALIVE_SECS, LIFETIME_SECS] {
            let longest = Duration::from_secs(*range.end());
            assert!(Instant::now().checked_add(longest).is_some(), "{range:?}");
        }
    }

    #[test]
    fn the_os_limits_hold() {
        // The Windows socket options the ranges are cut for.
        assert!(TIMEOUT_SECS.end() * 1000 <= u64::from(u32::MAX));
        assert!(*LINGER_SECS.end() <= u64::from(u16::MAX));
        // Linux's MAX_TCP_KEEPIDLE.
        assert_eq!(*KEEPALIVE_SECS.end(), 32_767);
        // The global cap's permits are taken back as one u32 at stop.
        assert!(u32::try_from(*SESSIONS.end()).is_ok());
        assert!(i32::try_from(*BACKLOG.end()).is_ok());
        // An f64 holds every burst exactly.
        assert_eq!(*BURST.end() as f64 as u64, *BURST.end());
    }
}
