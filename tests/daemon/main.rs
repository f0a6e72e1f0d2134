//! Integration tests of the `wininetd` daemon: each test starts the real
//! binary on its own free ports with its own config in a temp dir, talks to
//! it over loopback, and serves the helper child `wininetd-testchild`
//! (tests/child/main.rs).
//!
//! One harness for both systems (tests/common/mod.rs, with what differs
//! between them as named constants), and each scenario once: the modules
//! under "both" run on Linux and on Windows (under Wine here). What only
//! one system has is in a module of that system's: linux.rs and
//! linux_toml.rs beside config.rs and toml_config.rs, and the Linux topics
//! (the child's process state, sessions and reaping, limits, logging,
//! reload, run-as, Unix sockets...); windows.rs, windows_toml.rs and
//! encoding.rs on Windows.
//!
//! Tests that need root are `#[ignore = "needs root"]`: run them as root
//! with `cargo test -- --include-ignored` (CI does). So is the 30 s soak
//! (reliability.rs), which CI runs as a step of its own, and the layout
//! test outside a `WININETD_HOT_TEXT=1` build (layout.rs).

#[cfg(any(target_os = "linux", windows))]
#[path = "../common/mod.rs"]
mod common;

// Both systems.
#[cfg(any(target_os = "linux", windows))]
mod builtin;
#[cfg(any(target_os = "linux", windows))]
mod config;
#[cfg(any(target_os = "linux", windows))]
mod data;
#[cfg(any(target_os = "linux", windows))]
mod environment;
#[cfg(any(target_os = "linux", windows))]
mod portable;
#[cfg(any(target_os = "linux", windows))]
mod proxy;
#[cfg(any(target_os = "linux", windows))]
mod startup;
#[cfg(any(target_os = "linux", windows))]
mod tls;
#[cfg(any(target_os = "linux", windows))]
mod toml_config;
#[cfg(any(target_os = "linux", windows))]
mod udp;
#[cfg(any(target_os = "linux", windows))]
mod wait;

// Linux.
#[cfg(target_os = "linux")]
mod admission;
// On Windows --install registers a real service; windows.rs tests that.
#[cfg(target_os = "linux")]
mod install;
#[cfg(target_os = "linux")]
mod isolation;
#[cfg(target_os = "linux")]
mod layout;
#[cfg(target_os = "linux")]
mod lifecycle;
#[cfg(target_os = "linux")]
mod limits;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
mod linux_toml;
#[cfg(target_os = "linux")]
mod logging;
#[cfg(target_os = "linux")]
mod pipe;
#[cfg(target_os = "linux")]
mod proxy_haproxy;
#[cfg(target_os = "linux")]
mod reliability;
#[cfg(target_os = "linux")]
mod reload;
#[cfg(target_os = "linux")]
mod run_as;
#[cfg(target_os = "linux")]
mod sessions;
#[cfg(target_os = "linux")]
mod tls_linux;
#[cfg(target_os = "linux")]
mod unix_socket;

// Windows.
#[cfg(windows)]
mod encoding;
#[cfg(target_os = "linux")]
mod structure;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
mod windows_toml;
