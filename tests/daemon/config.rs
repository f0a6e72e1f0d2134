//! The config file and the command line, on Linux and Windows alike: every
//! error at once with its file:line, `--check`, comments and line endings,
//! passwords that never print (not even half of one), what may be read as
//! a config (at most 16 MiB, UTF-8 or UTF-16), and exit codes. What only
//! one system has is in linux.rs (shell quoting, users, FIFOs and devices)
//! and windows.rs (accounts, the default config, `/?`); reload.rs reloads.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::common::{
    CHILD, Daemon, DaemonBuilder, UTF16_ENCODINGS, WAIT, check_file, child, daemon_path, free_port,
    has_token, request, users_are_looked_up,
};

const PASSWORD: &str = "s3cr3t-pa55";

/// One line of the error config, what its error must say.
struct Expected {
    line: usize,
    words: &'static [&'static str],
}

/// Every kind of error, one per line, in one file.
fn error_config() -> (DaemonBuilder, Vec<Expected>) {
    let echo = child("echo");
    let child_path = daemon_path(Path::new(CHILD)).display().to_string();
    let builder = Daemon::builder()
        .line("# every error the flat format can have, one per line")
        .line(&format!("0 none {echo}"))
        .line(&format!("70000 none {echo}"))
        .line(&format!("80x none {echo}"))
        .line("{port0}")
        .line("{port1} none")
        .line(&format!("{{port2}} none {echo}"))
        .line(&format!("{{port2}} none {echo}"))
        .line(&format!(
            "{{port3}} no-such-user-wininetd:{PASSWORD} {echo}"
        ))
        .line(&format!("{{port4}} none \"{child_path} echo"))
        .line("{port5} none no-such-program-wininetd")
        .line("# a comment after the errors");
    let unknown_user: &[&str] = if users_are_looked_up() {
        &["unknown user", "no-such-user-wininetd"]
    } else {
        &["not running as root"]
    };
    let expected = vec![
        Expected {
            line: 2,
            words: &["port"],
        },
        Expected {
            line: 3,
            words: &["port"],
        },
        Expected {
            line: 4,
            words: &["port"],
        },
        Expected {
            line: 5,
            words: &["missing"],
        },
        Expected {
            line: 6,
            words: &["missing"],
        },
        Expected {
            line: 8,
            words: &["duplicate port"],
        },
        Expected {
            line: 9,
            words: unknown_user,
        },
        Expected {
            line: 10,
            words: &["quote"],
        },
        Expected {
            line: 11,
            words: &["not found"],
        },
    ];
    (builder, expected)
}

fn assert_errors(daemon: &Daemon, expected: &[Expected]) {
    let file = daemon.config_name();
    let lines = daemon.lines();
    for case in expected {
        let prefix = format!("{file}:{}: error: ", case.line);
        let found = lines
            .iter()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no `{prefix}...` diagnostic:\n{}", daemon.report()));
        for word in case.words {
            assert!(
                found.contains(word),
                "line {}: {word:?} missing in {found}",
                case.line
            );
        }
    }
    let duplicate = lines
        .iter()
        .find(|l| l.starts_with(&format!("{file}:8: error: ")))
        .expect("the duplicate port error");
    let message = duplicate.split(": error: ").nth(1).unwrap_or_default();
    assert!(
        has_token(message, "7"),
        "names the earlier line 7: {duplicate}"
    );
    let errors = lines.iter().filter(|l| l.contains(": error: ")).count();
    assert_eq!(errors, expected.len(), "one error per bad line, no more");
    assert_no_password(daemon);
}

fn assert_no_password(daemon: &Daemon) {
    for (name, text) in [
        ("stderr", daemon.stderr_text()),
        ("stdout", daemon.stdout_text()),
    ] {
        assert!(!text.contains(PASSWORD), "the password appears on {name}");
    }
}

/// `--check` (without `--debug`: on Windows it must not try the service
/// manager either) lists every error, then their count; nothing says ok.
#[test]
fn check_lists_every_error_with_file_and_line() {
    let (builder, expected) = error_config();
    let mut daemon = builder.arg("--check").no_debug().spawn();
    let status = daemon.wait_exit(WAIT);
    assert_eq!(status.code(), Some(1), "--check with errors ({status:?})");
    assert_errors(&daemon, &expected);
    let last = daemon.lines().last().cloned().unwrap_or_default();
    assert!(
        has_token(&last, &format!("{} error(s)", expected.len())),
        "last line counts the errors: {last:?}"
    );
    assert!(!daemon.stdout_text().contains(" ok, "), "not ok on stdout");
}

/// A start with a bad config lists the same errors and exits 1 before it
/// listens anywhere.
#[test]
fn startup_with_errors_lists_them_all_and_exits_1() {
    let (builder, expected) = error_config();
    let mut daemon = builder.spawn();
    let status = daemon.wait_exit(WAIT);
    assert_eq!(status.code(), Some(1), "startup with errors ({status:?})");
    assert_errors(&daemon, &expected);
    assert_eq!(daemon.count(|l| l.contains("listening on")), 0);
}

#[test]
fn empty_config_is_an_error() {
    for args in [&["--check"][..], &[]] {
        let mut daemon = Daemon::builder()
            .raw_config("# nothing but comments\n\n   8080 none /bin/true\n")
            .args(args)
            .spawn();
        let status = daemon.wait_exit(WAIT);
        assert_eq!(status.code(), Some(1), "{args:?}: exit code ({status:?})");
        let expected = format!("{}: error: no services", daemon.config_name());
        daemon.wait_for(&format!("starting with {expected:?}"), WAIT, |l| {
            l.starts_with(&expected)
        });
    }
}

#[test]
fn missing_config_file_exits_1_naming_it() {
    let mut daemon = Daemon::builder().missing_config().spawn();
    let status = daemon.wait_exit(WAIT);
    assert_eq!(status.code(), Some(1), "exit code ({status:?})");
    daemon.wait_for_line(&daemon.config_name(), WAIT);
}

/// Comments (any line not starting with a digit, even ` 80 ...`), CRLF,
/// and a last line without newline (the original dropped its last
/// character): `--check` says ok and counts the services.
#[test]
fn check_accepts_a_clean_config() {
    let config = format!(
        "# comment\r\n  80 none /bin/false\r\n;8080\r\n\r\n{{port0}} none {}\r\n\t{{port1}} none\r\n{{port1}} none {}",
        child("echo"),
        child("env ABC"),
    );
    let mut daemon = Daemon::builder()
        .raw_config(&config)
        .arg("--check")
        .no_debug()
        .spawn();
    let status = daemon.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "clean config ({status:?})");
    let ok = format!("{}: ok, 2 service(s)", daemon.config_name());
    assert!(daemon.stdout_text().contains(&ok), "stdout says {ok:?}");
    assert_eq!(daemon.count(|l| l.contains("error")), 0);
    assert_eq!(
        daemon.count(|l| l.contains("listening on")),
        0,
        "--check does not serve"
    );
}

/// The same line endings at run time: the last argument is read whole and
/// without a trailing CR.
#[test]
fn crlf_and_missing_final_newline_keep_arguments_whole() {
    let config = format!(
        "# CRLF file\r\n  {{port1}} none /bin/false\r\n{{port0}} none {}\r\n{{port1}} none {}",
        child("env ABC"),
        child("env ABC"),
    );
    let daemon = Daemon::builder()
        .raw_config(&config)
        .env("ABC", "whole")
        .start();
    assert_eq!(request(daemon.port(0), b""), "ABC=whole\n", "CRLF line");
    assert_eq!(
        request(daemon.port(1), b""),
        "ABC=whole\n",
        "last line, no newline"
    );
}

#[test]
fn bad_command_lines_exit_2() {
    let cases: &[&[&str]] = &[
        &["--bogus"],
        &["--timeout"],
        &["--timeout", "abc"],
        &["--timeout", "-1"],
        &["--timeout", "soon"],
        &["--linger-timeout", "x"],
        &["--max-sessions", "0"],
        &["--max-sessions", "many"],
        &["--shutdown-grace", "soon"],
    ];
    for args in cases {
        let mut daemon = Daemon::builder()
            .service("none", &child("echo"))
            .args(args)
            .spawn();
        let status = daemon.wait_exit(WAIT);
        assert_eq!(status.code(), Some(2), "{args:?}: exit code ({status:?})");
        assert!(
            !daemon.stderr_text().trim().is_empty(),
            "{args:?}: says why"
        );
        assert_eq!(daemon.count(|l| l.contains("listening on")), 0);
    }
}

#[test]
fn version_and_help_exit_0() {
    for (flag, expected) in [
        ("--version", env!("CARGO_PKG_VERSION")),
        ("--help", "--cfgfile"),
    ] {
        let mut daemon = Daemon::builder()
            .service("none", &child("echo"))
            .arg(flag)
            .spawn();
        let status = daemon.wait_exit(WAIT);
        assert_eq!(status.code(), Some(0), "{flag}: exit code ({status:?})");
        assert!(
            daemon.stdout_text().contains(expected),
            "{flag} prints {expected:?}"
        );
    }
}

/// Issue 16, item 6: a password with a space in it made its second half the
/// program, and `--check` printed it (`program "Word42" not found on
/// PATH`); a line that forgot its user field took the program for the user
/// and reported its first argument. Both are named for what they are, and
/// no message holds any text of the `USER:PASS` field. (The program's path
/// is written without quotes: on Windows a quoted one in the user's place
/// is not recognised as a program yet.)
#[test]
fn a_shifted_user_field_is_named_without_its_text() {
    let echo = format!("{} echo", daemon_path(Path::new(CHILD)).display());
    let mut daemon = Daemon::builder()
        .line(&format!("{{port0}} svcacct:Pass Word42 {echo}"))
        .line(r"{port1} svcacct:Pass Word42 C:\windows\system32\whoami.exe")
        .line(r"{port2} C:\windows\system32\cmd.exe /q /c echo x")
        .line(&format!("{{port3}} {echo}"))
        .line("{port4} svcacct:Pass Word42")
        .arg("--check")
        .spawn();
    let status = daemon.wait_exit(WAIT);
    assert_eq!(status.code(), Some(1), "{}", daemon.report());
    let file = daemon.config_name();
    let at = |line: usize, words: &str| {
        let prefix = format!("{file}:{line}: error: ");
        let found = daemon
            .lines()
            .into_iter()
            .any(|l| l.starts_with(&prefix) && l.contains(words));
        assert!(found, "no `{prefix}...{words}...`:\n{}", daemon.report());
    };
    at(1, "the USER:PASS field seems to contain a space");
    at(2, "the USER:PASS field seems to contain a space");
    at(3, "missing `none` or USER:PASS before the command?");
    at(4, "missing `none` or USER:PASS before the command?");
    at(5, "not shown");
    for text in ["Word42", "Pass", "/q", "windows", &echo] {
        assert!(
            !daemon.stderr_text().contains(text) && !daemon.stdout_text().contains(text),
            "{text:?} is printed:\n{}",
            daemon.report()
        );
    }
    // The forgotten user field draws that one error, nothing about the
    // user or the program.
    for line in [3, 4] {
        let count = daemon.count(|l| l.starts_with(&format!("{file}:{line}: ")));
        assert_eq!(count, 1, "line {line}:\n{}", daemon.report());
    }
}

/// Issue 16, item 9: the size is capped at 16 MiB, without reading more.
#[test]
fn a_config_past_16_mib_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let big = dir.path().join("big.conf");
    let file = fs::File::create(&big).expect("create");
    // Sparse where the file system can: a comment line of zero bytes,
    // 16 MiB and one byte long.
    file.set_len(16 * 1024 * 1024 + 1).expect("set_len");
    let run = check_file(&big);
    assert_eq!(run.code(), Some(1), "{run}");
    let name = daemon_path(&big).display().to_string();
    assert!(
        run.text().contains(&format!("{name}: error: ")) && run.text().contains("16 MiB"),
        "{run}"
    );
    assert!(
        run.took < Duration::from_secs(5),
        "{run}\ntook {:?}",
        run.took
    );
}

/// Issue 16, item 20: a UTF-16 file with a byte-order mark (Notepad's
/// "Unicode", PowerShell 5.1's `>`) got "no services". It is read, in
/// either byte order: `--check` says in which encoding, and a character
/// outside Latin-1 reaches the program too.
#[test]
fn a_utf16_flat_config_is_read() {
    for (encode, name) in UTF16_ENCODINGS {
        let template = format!(
            "# caf\u{e9} \u{3b1}\r\n{{port0}} none {}\r\n{{port1}} none {}\r\n",
            child("args caf\u{e9} \u{3b1}\u{3b2}"),
            child("echo"),
        );
        let builder = Daemon::builder().raw_config(&template).encoded(encode);
        let mut check = builder.clone().arg("--check").no_debug().spawn();
        assert_eq!(check.wait_exit(WAIT).code(), Some(0), "{name}");
        let summary = format!(
            "{}: ok, 2 service(s), 0 warning(s), {name}",
            check.config_name()
        );
        assert!(
            check.stdout_text().contains(&summary),
            "{summary:?} missing:\n{}",
            check.report()
        );

        let daemon = builder.start();
        assert_eq!(
            request(daemon.port(0), b""),
            "arg[0]=caf\u{e9}\narg[1]=\u{3b1}\u{3b2}\nargc=2\n",
            "{name}"
        );
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("utf8.conf");
    fs::write(&path, format!("{} none {}\n", free_port(), child("echo"))).expect("write");
    let run = check_file(&path);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(
        run.stdout()
            .contains(": ok, 1 service(s), 0 warning(s), UTF-8"),
        "{run}"
    );
}
