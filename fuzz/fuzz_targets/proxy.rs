//! The PROXY protocol header reader: any bytes as what a trusted proxy
//! sends first. Finding the header's length never panics and never claims
//! more than it may read; parsing what it claims never panics; what a valid
//! header gives a program's environment is printable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wininetd::config::ProxyVersions;
use wininetd::proxy::{header_length, parse};

/// The longest header the reader takes (v2's head and 2 KiB).
const MOST: usize = 16 + 2048;

fuzz_target!(|data: &[u8]| {
    for versions in [ProxyVersions::V1, ProxyVersions::V2, ProxyVersions::Any] {
        if let Ok(Some(len)) = header_length(data, versions) {
            assert!(len <= MOST, "a {len}-byte header");
            if len <= data.len() {
                check(&data[..len]);
            }
        }
    }
    check(data);
});

fn check(header: &[u8]) {
    if let Ok(proxied) = parse(header) {
        for value in [&proxied.authority, &proxied.unique_id].into_iter().flatten() {
            assert!(!value.chars().any(char::is_control), "{value:?}");
        }
    }
}
