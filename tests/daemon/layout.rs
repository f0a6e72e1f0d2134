//! The binary's layout in a packager's build linked with
//! `link/hot-text.ld` (`WININETD_HOT_TEXT=1`, build.rs): the functions the
//! daemon runs at start and per session lie in `.text.hot`, at the head of
//! its text, and those it does not run outside it. Read with binutils'
//! `readelf` and `nm`, as an operator would. The default build takes no
//! linker script, and there the test is ignored; CI's `hot text` step runs
//! it on such a build, and warns when it fails (the script is stale:
//! bench/hot-text.sh writes it anew).

use std::ops::Range;
use std::process::Command;

use crate::common::DAEMON;

fn tool(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .arg(DAEMON)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        output.status
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// The addresses of `.text.hot`, from the section table.
fn hot_text() -> Range<u64> {
    let table = tool("readelf", &["--section-headers", "--wide"]);
    let line = table
        .lines()
        .find(|line| line.contains(" .text.hot "))
        .unwrap_or_else(|| panic!("no .text.hot section in {DAEMON}:\n{table}"));
    // [Nr] Name Type Address Off Size ...
    let fields: Vec<&str> = line.split(']').nth(1).unwrap().split_whitespace().collect();
    let address = u64::from_str_radix(fields[2], 16).unwrap();
    let size = u64::from_str_radix(fields[4], 16).unwrap();
    assert!(size > 0, "empty .text.hot: {line}");
    address..address + size
}

#[test]
#[cfg_attr(
    not(wininetd_hot_text),
    ignore = "needs a build linked with link/hot-text.ld (WININETD_HOT_TEXT=1)"
)]
fn the_functions_run_at_start_and_per_session_lie_at_the_head_of_the_text() {
    let hot = hot_text();
    let symbols = tool("nm", &["--demangle", "--defined-only"]);
    let address_of = |name: &str| {
        symbols
            .lines()
            .find_map(|line| {
                let (address, rest) = line.split_once(' ')?;
                (rest.get(2..)? == name).then(|| u64::from_str_radix(address, 16).unwrap())
            })
            .unwrap_or_else(|| panic!("no symbol {name} in {DAEMON}"))
    };
    // Names that exist in a debug and in a release build (which inlines
    // most functions): the C entry, the config's parser (run at start) and
    // what shows a connection's addresses (run per connection).
    for name in [
        "main",
        "wininetd::config::parse",
        "wininetd::listen::canonical",
    ] {
        let address = address_of(name);
        assert!(
            hot.contains(&address),
            "{name} at {address:#x}, outside .text.hot {hot:x?}"
        );
    }
    // --install's code never runs in the daemon.
    let install = address_of("wininetd::platform::unix::install::quote_word");
    assert!(
        !hot.contains(&install),
        "install's quote_word at {install:#x}, inside .text.hot {hot:x?}"
    );
}
