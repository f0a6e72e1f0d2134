//! On Linux, links the daemon with `link/hot-text.ld`, which puts the
//! functions it runs side by side at the head of its text, so that the
//! kernel maps fewer of the binary's pages (bench/PROFILE.md, "Memory").
//! `WININETD_HOT_TEXT=0` links without it (for a linker that takes no
//! linker script, such as mold).

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=link/hot-text.ld");
    println!("cargo:rerun-if-env-changed=WININETD_HOT_TEXT");
    let linux = env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let off = env::var("WININETD_HOT_TEXT").is_ok_and(|v| v == "0");
    if linux && !off {
        let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        // -Xlinker, not -Wl,: a path may hold a comma.
        for arg in [
            "-Xlinker",
            "-T",
            "-Xlinker",
            &format!("{dir}/link/hot-text.ld"),
        ] {
            println!("cargo:rustc-link-arg-bins={arg}");
        }
    }
}
