//! Integration tests of the `wininetd` daemon: each test starts the real
//! binary on its own free ports with its own config in a temp dir, talks to
//! it over loopback, and serves the helper child `wininetd-testchild`
//! (tests/child/main.rs).
//!
//! The Linux and Windows tests share the harness in tests/common/mod.rs.
//! The Linux ones are grouped by what they pin: the data path (in socket
//! and in pipe mode), the child's environment, the child's process state,
//! session logs and reaping, limits, run-as, configuration and command
//! line, start and stop. portable.rs runs on both; windows.rs,
//! windows_toml.rs and encoding.rs are Windows's own.

#[cfg(any(target_os = "linux", windows))]
#[path = "../common/mod.rs"]
mod common;

#[cfg(target_os = "linux")]
mod admission;
#[cfg(target_os = "linux")]
mod config;
#[cfg(target_os = "linux")]
mod data;
#[cfg(windows)]
mod encoding;
#[cfg(target_os = "linux")]
mod environment;
// On Windows --install registers a real service; windows.rs tests that.
#[cfg(unix)]
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
mod logging;
#[cfg(target_os = "linux")]
mod pipe;
#[cfg(any(target_os = "linux", windows))]
mod portable;
#[cfg(target_os = "linux")]
mod reliability;
#[cfg(target_os = "linux")]
mod reload;
#[cfg(target_os = "linux")]
mod run_as;
#[cfg(target_os = "linux")]
mod sessions;
#[cfg(target_os = "linux")]
mod toml_config;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
mod windows_toml;
