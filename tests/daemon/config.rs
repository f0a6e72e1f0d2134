//! The config file and the command line: every error at once with its
//! file:line, `--check`, warnings, comments and line endings, quoting,
//! passwords that never print, and exit codes.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::common::{Daemon, DaemonBuilder, WAIT, child, describe, has_token, is_root, request};

const PASSWORD: &str = "s3cr3t-pa55";

/// One line of the error config, what its error must say.
struct Expected {
    line: usize,
    words: &'static [&'static str],
}

/// Every kind of error, one per line, in one file.
fn error_config() -> (DaemonBuilder, Vec<Expected>) {
    let ok = child("echo");
    let builder = Daemon::builder()
        .line("# every error the flat format can have, one per line")
        .line("0 none /bin/true")
        .line("70000 none /bin/true")
        .line("80x none /bin/true")
        .line("{port0}")
        .line("{port1} none")
        .line(&format!("{{port2}} none {ok}"))
        .line(&format!("{{port2}} none {ok}"))
        .line(&format!("{{port3}} no-such-user-wininetd:{PASSWORD} {ok}"))
        .line("{port4} none /bin/echo \"unterminated")
        .line("{port5} none no-such-program-wininetd")
        .line("# a comment after the errors");
    let unknown_user: &[&str] = if is_root() {
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
            .find(|l| l.contains(&prefix))
            .unwrap_or_else(|| panic!("no `{prefix}...` diagnostic"));
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
        .find(|l| l.contains(&format!("{file}:8: error: ")))
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

#[test]
fn check_lists_every_error_with_file_and_line() {
    let (builder, expected) = error_config();
    let mut daemon = builder.arg("--check").spawn();
    let status = daemon.wait_exit(WAIT);
    assert_eq!(
        status.code(),
        Some(1),
        "--check with errors ({})",
        describe(status)
    );
    assert_errors(&daemon, &expected);
    let last = daemon.lines().last().cloned().unwrap_or_default();
    assert!(
        has_token(&last, &format!("{} error(s)", expected.len())),
        "last line counts the errors: {last:?}"
    );
    assert!(!daemon.stdout_text().contains(" ok, "), "not ok on stdout");
}

#[test]
fn startup_with_errors_lists_them_all_and_exits_1() {
    let (builder, expected) = error_config();
    let mut daemon = builder.spawn();
    let status = daemon.wait_exit(WAIT);
    assert_eq!(
        status.code(),
        Some(1),
        "startup with errors ({})",
        describe(status)
    );
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
        assert_eq!(
            status.code(),
            Some(1),
            "{args:?}: exit code ({})",
            describe(status)
        );
        let file = daemon.config_name();
        daemon.wait_for_line(&format!("{file}: error: no services"), WAIT);
    }
}

#[test]
fn missing_config_file_exits_1_naming_it() {
    let mut daemon = Daemon::builder().missing_config().spawn();
    let status = daemon.wait_exit(WAIT);
    assert_eq!(status.code(), Some(1), "exit code ({})", describe(status));
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
    let mut daemon = Daemon::builder().raw_config(&config).arg("--check").spawn();
    let status = daemon.wait_exit(WAIT);
    assert_eq!(
        status.code(),
        Some(0),
        "clean config ({})",
        describe(status)
    );
    let ok = format!("{}: ok, 2 service(s)", daemon.config_name());
    assert!(daemon.stdout_text().contains(&ok), "stdout says {ok:?}");
    assert_eq!(daemon.count(|l| l.contains("error")), 0);
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

/// The command line is split like a shell would (quotes, backslash) without
/// running one; the listening line shows it as written.
#[test]
fn command_line_quoting() {
    let cmdline = child(r#"args 'a b' "c  d" e\ f "it's" '' $HOME"#);
    let daemon = Daemon::builder().service("none", &cmdline).start();
    daemon.wait_for_line(
        &format!("listening on [::]:{} ({cmdline})", daemon.port(0)),
        WAIT,
    );
    assert_eq!(
        request(daemon.port(0), b""),
        "arg[0]=a b\narg[1]=c  d\narg[2]=e f\narg[3]=it's\narg[4]=\narg[5]=$HOME\nargc=6\n"
    );
}

/// Warnings do not stop the daemon: one for passwords (however many lines
/// have one), one per absolute program that is missing or not executable.
#[test]
fn warnings_for_passwords_and_unusable_programs() {
    if !is_root() {
        eprintln!("SKIPPED: user lines need root");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let not_executable = dir.path().join("not-executable");
    fs::write(&not_executable, "").expect("write");
    fs::set_permissions(&not_executable, fs::Permissions::from_mode(0o644)).expect("chmod");
    let missing = "/nonexistent/wininetd-test-missing";
    let builder = Daemon::builder()
        .line("# warnings only")
        .line(&format!("{{port0}} nobody:{PASSWORD} {}", child("echo")))
        .line(&format!("{{port1}} nobody:{PASSWORD}-2 {}", child("echo")))
        .line(&format!("{{port2}} none {missing}"))
        .line(&format!("{{port3}} none {}", not_executable.display()));

    let mut check = builder.clone().arg("--check").spawn();
    let status = check.wait_exit(WAIT);
    assert_eq!(
        status.code(),
        Some(0),
        "warnings only ({})",
        describe(status)
    );
    let file = check.config_name();
    assert!(
        check
            .stdout_text()
            .contains(&format!("{file}: ok, 4 service(s)")),
        "ok on stdout"
    );
    assert_warnings(&check, missing, &not_executable.display().to_string());

    let daemon = builder.start();
    assert_warnings(&daemon, missing, &not_executable.display().to_string());
}

fn assert_warnings(daemon: &Daemon, missing: &str, not_executable: &str) {
    let file = daemon.config_name();
    let passwords = daemon.count(|l| l.contains(": warning: ") && l.contains("password"));
    assert_eq!(passwords, 1, "one password warning per load");
    let line4 = daemon.wait_for_line(&format!("{file}:4: warning: "), WAIT);
    assert!(
        line4.contains(missing),
        "names the missing program: {line4}"
    );
    let line5 = daemon.wait_for_line(&format!("{file}:5: warning: "), WAIT);
    assert!(line5.contains(not_executable), "names the file: {line5}");
    assert_eq!(daemon.count(|l| l.contains(": error: ")), 0);
    assert_no_password(daemon);
}

/// A user line needs root: a daemon that is not root reports it (run here
/// as `nobody` when the tests run as root).
#[test]
fn user_line_without_root_is_an_error() {
    let prefix: &[&str] = if is_root() {
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ]
    } else {
        &[]
    };
    for args in [&["--check"][..], &[]] {
        let mut daemon = Daemon::builder()
            .line(&format!("{{port0}} root:{PASSWORD} {}", child("echo")))
            .prefix(prefix)
            .args(args)
            .spawn();
        let status = daemon.wait_exit(WAIT);
        assert_eq!(
            status.code(),
            Some(1),
            "{args:?}: exit code ({})",
            describe(status)
        );
        let error = daemon.wait_for_line(&format!("{}:1: error: ", daemon.config_name()), WAIT);
        assert!(error.contains("not running as root"), "{error}");
        assert_no_password(&daemon);
    }
}

#[test]
fn bad_command_lines_exit_2() {
    let cases: &[&[&str]] = &[
        &["--bogus"],
        &["--timeout"],
        &["--timeout", "abc"],
        &["--timeout", "-1"],
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
        assert_eq!(
            status.code(),
            Some(2),
            "{args:?}: exit code ({})",
            describe(status)
        );
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
        assert_eq!(
            status.code(),
            Some(0),
            "{flag}: exit code ({})",
            describe(status)
        );
        assert!(
            daemon.stdout_text().contains(expected),
            "{flag} prints {expected:?}"
        );
    }
}
