//! The config file and the command line where Linux differs from Windows
//! (config.rs tests what both share): command lines split as a shell would,
//! a service's user (which needs root), and what may not be read as a
//! config (FIFOs, devices, directories).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{
    Daemon, WAIT, assert_root, check_file, child, describe, free_port, is_root, request,
};

const PASSWORD: &str = "s3cr3t-pa55";

fn assert_no_password(daemon: &Daemon) {
    for (name, text) in [
        ("stderr", daemon.stderr_text()),
        ("stdout", daemon.stdout_text()),
    ] {
        assert!(!text.contains(PASSWORD), "the password appears on {name}");
    }
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
#[ignore = "needs root"]
fn warnings_for_passwords_and_unusable_programs() {
    assert_root("a service line with a user");
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
        let run = check_file(path);
        assert_eq!(run.code(), Some(1), "{run}");
        let expected = format!("{}: error: ", path.display());
        assert!(
            run.text()
                .lines()
                .any(|l| l.starts_with(&expected) && l.contains(words)),
            "{words:?} missing: {run}"
        );
        assert!(
            run.took < Duration::from_secs(5),
            "{run}\ntook {:?}",
            run.took
        );
    }
    // A symbolic link to a file is read.
    let file = dir.path().join("real.conf");
    fs::write(&file, format!("{} none {}\n", free_port(), child("echo"))).expect("write");
    let to_file = dir.path().join("to-file.conf");
    std::os::unix::fs::symlink(&file, &to_file).expect("symlink");
    let run = check_file(&to_file);
    assert_eq!(run.code(), Some(0), "{run}");
}
