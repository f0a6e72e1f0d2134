//! For packagers, on Linux: `WININETD_HOT_TEXT=1` links the daemon with
//! `link/hot-text.ld`, which puts the functions it runs side by side at the
//! head of its text, so that the kernel maps fewer of the binary's pages
//! (bench/PROFILE.md, "Memory"). Off by default: the default build takes
//! no linker script, and works with any linker (mold takes none).
//!
//! Such a build also sets the cfg `wininetd_hot_text`, under which the
//! test `layout` runs (it is ignored in the default build).

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=link/hot-text.ld");
    println!("cargo:rerun-if-env-changed=WININETD_HOT_TEXT");
    println!("cargo:rustc-check-cfg=cfg(wininetd_hot_text)");
    let linux = env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let on = env::var("WININETD_HOT_TEXT").is_ok_and(|v| v == "1");
    if linux && on {
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
        println!("cargo:rustc-cfg=wininetd_hot_text");
    }
}
