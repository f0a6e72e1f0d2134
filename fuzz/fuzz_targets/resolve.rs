//! Decode, parse, then resolve: the same bytes as a flat file and as a TOML
//! file, on a system with nothing on PATH that cannot switch users.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wininetd_fuzz::{Format, check_decode, check_resolve};

fuzz_target!(|data: &[u8]| {
    check_decode(data);
    check_resolve(Format::Flat, data);
    check_resolve(Format::Toml, data);
});
