//! The platform's command-line splitter, which splits a service's command
//! as the config wrote it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wininetd_fuzz::check_split;

fuzz_target!(|data: &[u8]| {
    // Config text reaches the splitter only as UTF-8.
    if let Ok(line) = std::str::from_utf8(data) {
        check_split(line);
    }
});
