//! The config file and the command line: every error at once with its
//! file:line, `--check`, warnings, comments and line endings, quoting,
//! passwords that never print (not even half of one), what may be read as
//! a config (regular files of at most 16 MiB, UTF-8 or UTF-16), a reload
//! that only moves services, and exit codes.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    DAEMON, Daemon, DaemonBuilder, Started, WAIT, child, describe, field, free_port, has_token,
    is_root, request,
};

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

/// Warnings do not stop the daemon: one per password (at its line), one
/// per absolute program that is missing or not executable.
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
    assert_eq!(passwords, 2, "one password warning per password");
    for line in [2, 3] {
        let warning = daemon.wait_for_line(&format!("{file}:{line}: warning: "), WAIT);
        assert!(warning.contains("password is ignored"), "{warning}");
    }
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

/// Issue 16, item 6: a password with a space in it made its second half the
/// program, and `--check` printed it (`program "Word42" not found on
/// PATH`); a line that forgot its user field took the program for the user
/// and reported its first argument. Both are named for what they are, and
/// no message holds any text of the `USER:PASS` field.
#[test]
fn a_shifted_user_field_is_named_without_its_text() {
    let echo = child("echo");
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

/// Runs `wininetd --check --cfgfile PATH`; returns its exit code, what it
/// printed, and how long it took. Killed (and the test failed) if it does
/// not finish within [`WAIT`].
pub(crate) fn check_file(path: &Path) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let mut process = Started(
        Command::new(DAEMON)
            .args(["--check", "--cfgfile"])
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run wininetd --check"),
    );
    let status = loop {
        if let Some(status) = process.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            started.elapsed() < WAIT,
            "--check --cfgfile {} did not finish within {WAIT:?}",
            path.display()
        );
        thread::sleep(Duration::from_millis(10));
    };
    let mut output = String::new();
    for pipe in [
        process.stdout.take().map(|p| Box::new(p) as Box<dyn Read>),
        process.stderr.take().map(|p| Box::new(p) as Box<dyn Read>),
    ]
    .into_iter()
    .flatten()
    {
        let mut pipe = pipe;
        pipe.read_to_string(&mut output).expect("read the output");
    }
    (status.code(), output, started.elapsed())
}

/// Issue 16, item 9: `--check --cfgfile /dev/zero` grew to 858 MB, and a
/// FIFO blocked its reader until someone wrote to it. Anything but a
/// regular file is refused at once, naming the file.
#[test]
fn only_a_regular_file_is_read_as_a_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fifo = dir.path().join("fifo.conf");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo {}", fifo.display());
    let link = dir.path().join("link.conf");
    std::os::unix::fs::symlink(&fifo, &link).expect("symlink");
    for (path, words) in [
        (fifo.as_path(), "not a regular file"),
        (link.as_path(), "not a regular file"),
        (Path::new("/dev/zero"), "not a regular file"),
        (Path::new("/dev/null"), "not a regular file"),
        (dir.path(), "is a directory"),
    ] {
        let (code, output, took) = check_file(path);
        assert_eq!(code, Some(1), "{}: {output}", path.display());
        let expected = format!("{}: error: ", path.display());
        assert!(
            output
                .lines()
                .any(|l| l.starts_with(&expected) && l.contains(words)),
            "{}: {words:?} missing: {output}",
            path.display()
        );
        assert!(
            took < Duration::from_secs(5),
            "{}: took {took:?}",
            path.display()
        );
    }
    // A symbolic link to a file is read.
    let file = dir.path().join("real.conf");
    fs::write(&file, format!("{} none {}\n", free_port(), child("echo"))).expect("write");
    let to_file = dir.path().join("to-file.conf");
    std::os::unix::fs::symlink(&file, &to_file).expect("symlink");
    let (code, output, _) = check_file(&to_file);
    assert_eq!(code, Some(0), "{output}");
}

/// Issue 16, item 9: the size is capped at 16 MiB, without reading more.
#[test]
fn a_config_past_16_mib_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let big = dir.path().join("big.conf");
    let file = fs::File::create(&big).expect("create");
    // Sparse: a comment line of zero bytes, 16 MiB and one byte long.
    file.set_len(16 * 1024 * 1024 + 1).expect("set_len");
    let (code, output, _) = check_file(&big);
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains(&format!("{}: error: ", big.display())) && output.contains("16 MiB"),
        "{output}"
    );
}

/// Issue 16, item 9: a reload that found a FIFO as its config stopped all
/// accepting, and delayed SIGTERM, until someone wrote to the FIFO. It now
/// fails at once, and the old config goes on serving.
#[test]
fn a_reload_that_finds_a_fifo_fails_and_keeps_serving() {
    let mut daemon = Daemon::builder().service("none", &child("echo")).start();
    let port = daemon.port(0);
    fs::remove_file(daemon.config_path()).expect("remove the config");
    let made = Command::new("mkfifo")
        .arg(daemon.config_path())
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    daemon.send_signal(libc::SIGHUP);
    let failed = daemon.wait_for_line("reload failed", WAIT);
    let file = daemon.config_name();
    daemon.wait_for("the reason, naming the file", WAIT, |l| {
        l.contains(&file) && l.contains("not a regular file")
    });
    assert_eq!(request(port, b"served\n"), "served\n", "{failed}");
    daemon.send_signal(libc::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{}", daemon.report());
}

/// Issue 16, item 10: a reload that only added a comment line said every
/// service "changed" (their line numbers were compared).
#[test]
fn a_reload_that_adds_a_comment_changes_nothing() {
    let echo = child("echo");
    let template = format!("{{port0}} none {echo}\n{{port1}} none {echo}\n");
    let mut daemon = Daemon::builder().raw_config(&template).start();
    let outcome = daemon.reload(&format!("# a comment\n\n{template}"));
    assert!(outcome.contains("reload done"), "{outcome}");
    assert_eq!(field(&outcome, "changed"), Some(""), "{outcome}");
    let unchanged = field(&outcome, "unchanged").unwrap_or_default();
    for port in [daemon.port(0), daemon.port(1)] {
        assert!(
            unchanged.split(',').any(|n| n == port.to_string()),
            "{port} unchanged: {outcome}"
        );
    }
    // A real change is one.
    let outcome = daemon.reload(&format!(
        "# a comment\n\n{{port0}} none {}\n{{port1}} none {echo}\n",
        child("args x")
    ));
    assert_eq!(
        field(&outcome, "changed"),
        Some(daemon.port(0).to_string().as_str()),
        "{outcome}"
    );
}

/// Text as UTF-16 with its byte-order mark, little- or big-endian.
pub(crate) fn utf16(text: &str, little: bool) -> Vec<u8> {
    let mut bytes = if little {
        vec![0xFF, 0xFE]
    } else {
        vec![0xFE, 0xFF]
    };
    for unit in text.encode_utf16() {
        bytes.extend(if little {
            unit.to_le_bytes()
        } else {
            unit.to_be_bytes()
        });
    }
    bytes
}

/// Issue 16, item 20: a UTF-16 file with a byte-order mark (Notepad's
/// "Unicode", PowerShell 5.1's `>`) got "no services". It is read, and
/// `--check` says in which encoding.
#[test]
fn a_utf16_flat_config_is_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (little, name) in [(true, "UTF-16LE"), (false, "UTF-16BE")] {
        let path = dir.path().join(format!("{name}.conf"));
        let text = format!(
            "# caf\u{e9}\r\n{} none {}\r\n{} none {}\r\n",
            free_port(),
            child("echo"),
            free_port(),
            child("args caf\u{e9}")
        );
        fs::write(&path, utf16(&text, little)).expect("write");
        let (code, output, _) = check_file(&path);
        assert_eq!(code, Some(0), "{name}: {output}");
        let summary = format!("{}: ok, 2 service(s), 0 warning(s), {name}", path.display());
        assert!(output.contains(&summary), "{summary:?} missing: {output}");
    }
    let path = dir.path().join("utf8.conf");
    fs::write(&path, format!("{} none {}\n", free_port(), child("echo"))).expect("write");
    let (code, output, _) = check_file(&path);
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.contains(": ok, 1 service(s), 0 warning(s), UTF-8"),
        "{output}"
    );
}

/// The program of a UTF-16 config gets its arguments decoded.
#[test]
fn a_utf16_config_serves_after_a_reload() {
    let echo = child("echo");
    let daemon = Daemon::builder()
        .raw_config(&format!("{{port0}} none {echo}\n"))
        .start();
    let port1 = free_port();
    let text = format!(
        "# caf\u{e9}\r\n{} none {echo}\r\n{port1} none {}\r\n",
        daemon.port(0),
        child("args caf\u{e9}")
    );
    let path = daemon.config_path().to_owned();
    let staging = path.with_extension("new");
    fs::write(&staging, utf16(&text, true)).expect("write");
    fs::rename(&staging, &path).expect("replace the config");
    daemon.send_signal(libc::SIGHUP);
    let outcome = daemon.wait_for_line("reload done", WAIT);
    assert!(has_token(&outcome, &format!("added={port1}")), "{outcome}");
    assert_eq!(request(port1, b""), "arg[0]=caf\u{e9}\nargc=1\n");
}
