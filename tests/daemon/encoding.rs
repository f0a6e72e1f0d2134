//! The encodings of the config files WinInetd read, on Windows (here under
//! Wine): its own files were written in the ANSI code page (it was an ANSI
//! program), and Notepad's "Unicode" and Windows PowerShell 5.1's `>`
//! write UTF-16LE with a byte-order mark. Issue 16, item 20: the first got
//! "not valid UTF-8", the second "no services".
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
use crate::windows::{describe_run, run_daemon};

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

/// `text` as UTF-16LE with its byte-order mark.
fn utf16le(text: &str) -> Vec<u8> {
    let mut bytes = vec![0xFF, 0xFE];
    bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    bytes
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
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && stdout.contains(&format!(": ok, 1 service(s), 0 warning(s), {encoding}")),
        "{}",
        describe_run(DAEMON, &args, &out)
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

/// Notepad's "Unicode" (UTF-16LE with a byte-order mark): read, and a
/// character outside cp1252 reaches the program too.
#[test]
fn a_utf16_config_is_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let text = format!(
        "# caf\u{e9} \u{3b1}\r\n{port} none {}\r\n",
        child("args caf\u{e9} \u{3b1}\u{3b2}")
    );
    let answer = serve(
        dir.path(),
        "unicode.conf",
        &utf16le(&text),
        "UTF-16LE",
        port,
    );
    assert_eq!(answer, "arg[0]=caf\u{e9}\narg[1]=\u{3b1}\u{3b2}\nargc=2\n");
}
