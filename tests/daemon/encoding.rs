//! The ANSI code page, the encoding of the config files WinInetd read on
//! Windows (here under Wine): its own files were written in it (it was an
//! ANSI program). Issue 16, item 20: such a file got "not valid UTF-8".
//! UTF-16 (Notepad's "Unicode", Windows PowerShell 5.1's `>`), which both
//! systems read, is config.rs's.
//!
//! Each test writes its config's bytes itself, starts the real daemon on
//! it, and checks what the program receives. Wine's ANSI code page is 1252
//! in the locale the tests run in (C or en_US); a test that finds another
//! says so and fails rather than pass on text it cannot check.
#![cfg(windows)]

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::{DAEMON, Started, child, daemon_path, free_port, request, wait_connectable};
use crate::windows::run_daemon;

/// `text` in Windows-1252: ASCII, and `é` as 0xE9.
fn cp1252(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c {
            'é' => 0xE9,
            c if c.is_ascii() => c as u8,
            c => panic!("{c:?} is not in this test's part of cp1252"),
        })
        .collect()
}

/// Writes `bytes` as the config `name` in `dir`, checks that `--check`
/// passes and names `encoding`, then starts the daemon on it and returns
/// what a session on `port` reads.
fn serve(dir: &Path, name: &str, bytes: &[u8], encoding: &str, port: u16) -> String {
    let path = daemon_path(&dir.join(name));
    fs::write(&path, bytes).expect("write the config");
    let path = path.display().to_string();
    let args = ["--check", "--cfgfile", &path];
    let out = run_daemon(&args);
    assert!(
        out.success()
            && out
                .stdout()
                .contains(&format!(": ok, 1 service(s), 0 warning(s), {encoding}")),
        "{out}"
    );
    let _daemon = Started(
        Command::new(DAEMON)
            .args(["--debug", "--cfgfile", &path])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the daemon"),
    );
    wait_connectable(port);
    request(port, b"")
}

/// A WinInetd config in cp1252 with `é` in a comment and in an argument:
/// read in the ANSI code page, and the program gets `é`.
#[test]
fn an_ansi_config_is_read_in_the_ansi_code_page() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let text = format!(
        "# Configuration de l'\u{e9}t\u{e9}\r\n{port} none {}\r\n",
        child("args caf\u{e9}")
    );
    let encoding = "ANSI code page 1252";
    let answer = serve(dir.path(), "ansi.conf", &cp1252(&text), encoding, port);
    assert_eq!(answer, "arg[0]=caf\u{e9}\nargc=1\n");
}
