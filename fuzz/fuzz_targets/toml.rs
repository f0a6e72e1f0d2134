//! The TOML config parser: any bytes, under a `.toml` name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wininetd_fuzz::{Format, check_parse};

fuzz_target!(|data: &[u8]| {
    check_parse(Format::Toml, data);
});
