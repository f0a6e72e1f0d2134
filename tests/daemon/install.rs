//! `wininetd --install` / `--remove` on Linux: the real binary writes, updates,
//! enables and deletes the systemd unit under `--root`, and the unit's
//! `ExecStart=` carries exactly the daemon parameters given (the original's
//! service parameters that persist), with a relative `--cfgfile` made absolute.
//!
//! Every run passes `--root` to a temporary directory: the tests never touch
//! the real /etc, even when run as root. When `systemctl` is on PATH it is the
//! real one, working offline on that directory (`systemctl --root`).

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::{CHILD, DAEMON, Run, WAIT, run_command};

const UNIT: &str = "etc/systemd/system/wininetd.service";
const WANTS_LINK: &str = "etc/systemd/system/multi-user.target.wants/wininetd.service";

/// Runs wininetd in `cwd` with `args`, which must include `--root`.
fn wininetd<S: AsRef<OsStr>>(cwd: &Path, args: &[S]) -> Run {
    assert!(
        args.iter().any(|a| a.as_ref() == "--root"),
        "an install test without --root would write to the real /etc"
    );
    run_command(
        Command::new(DAEMON)
            .args(args)
            .current_dir(cwd)
            .env_remove("NOTIFY_SOCKET"),
        WAIT,
    )
}

/// Whether a real `systemctl` is on PATH (then --install must enable).
fn have_systemctl() -> bool {
    Command::new("systemctl")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A config file in `dir` at `rel`, so the tests hold even if --install
/// starts checking the config first.
fn write_config(dir: &Path, rel: &str) {
    let path = dir.join(rel);
    fs::create_dir_all(path.parent().expect("has a parent")).expect("create config dir");
    fs::write(&path, format!("7777 none {CHILD}\n")).expect("write config");
}

/// The argv systemd will run from the unit's `ExecStart=` line: `%%` and `$$`
/// undone, words split at blanks outside double quotes, `\\` and `\"`
/// unescaped inside them (systemd.service(5) "COMMAND LINES"). Enough for
/// what --install writes; anything else fails the test.
fn exec_start(unit: &str) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap_or_else(|| panic!("no ExecStart= in:\n{unit}"));
    let line = line.replace("%%", "%");
    let mut words = Vec::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' => continue,
            '"' => {
                let mut word = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => word.push(chars.next().expect("escape in ExecStart")),
                        Some(c) => word.push(c),
                        None => panic!("unterminated quote in ExecStart={line}"),
                    }
                }
                words.push(word);
            }
            c => {
                assert!(!"\\'".contains(c), "unexpected {c:?} in ExecStart={line}");
                let mut word = String::from(c);
                for c in chars.by_ref() {
                    if c == ' ' {
                        break;
                    }
                    assert!(!"\\'\"".contains(c), "unexpected {c:?} in ExecStart={line}");
                    word.push(c);
                }
                words.push(word);
            }
        }
    }
    words.iter().map(|w| w.replace("$$", "$")).collect()
}

/// The value after `flag` in `words` (`--flag VALUE` or `--flag=VALUE`).
fn value_of<'a>(words: &'a [String], flag: &str) -> Option<&'a str> {
    words.iter().enumerate().find_map(|(i, w)| {
        if w == flag {
            words.get(i + 1).map(String::as_str)
        } else {
            w.strip_prefix(flag)?.strip_prefix('=')
        }
    })
}

fn read_unit(root: &Path) -> String {
    let path = root.join(UNIT);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn exists(path: &Path) -> bool {
    // symlink_metadata: the enable link points at /etc/..., outside the root.
    fs::symlink_metadata(path).is_ok()
}

/// `dir/rel`, or the same under `dir`'s real path (the daemon makes paths
/// absolute against its working directory, which has symlinks resolved).
fn same_path(actual: &str, dir: &Path, rel: &str) -> bool {
    let canonical = dir.canonicalize().expect("temp dir exists");
    Path::new(actual) == dir.join(rel) || Path::new(actual) == canonical.join(rel)
}

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temp dir")
}

#[test]
fn install_writes_the_unit_with_the_given_parameters() {
    let (root, work) = (temp(), temp());
    write_config(work.path(), "relative/x.conf");
    let run = wininetd(
        work.path(),
        &[
            OsStr::new("--install"),
            OsStr::new("--root"),
            root.path().as_os_str(),
            OsStr::new("--cfgfile"),
            OsStr::new("relative/x.conf"),
            OsStr::new("--timeout"),
            OsStr::new("30"),
            OsStr::new("--linger-timeout"),
            OsStr::new("5"),
        ],
    );
    assert!(run.output.status.success(), "{run}");
    assert!(run.stdout().contains("wininetd.service"), "{run}");

    let unit = read_unit(root.path());
    let words = exec_start(&unit);
    let exe = PathBuf::from(DAEMON);
    assert_eq!(
        Path::new(&words[0]).canonicalize().ok(),
        exe.canonicalize().ok(),
        "ExecStart runs this wininetd: {words:?}\n{run}"
    );
    let cfgfile = value_of(&words, "--cfgfile").unwrap_or_else(|| panic!("{words:?}"));
    assert!(
        same_path(cfgfile, work.path(), "relative/x.conf"),
        "--cfgfile made absolute: {words:?}"
    );
    assert_eq!(value_of(&words, "--timeout"), Some("30"), "{words:?}");
    assert_eq!(value_of(&words, "--linger-timeout"), Some("5"), "{words:?}");
    let root_str = root.path().to_str().expect("temp paths are UTF-8");
    for word in &words {
        assert!(
            !["--install", "--remove"].contains(&word.as_str())
                && !word.starts_with("--root")
                && !word.contains(root_str),
            "{word:?} must not persist: {words:?}"
        );
    }
    assert!(
        unit.lines().any(|l| l == "Type=notify"),
        "the daemon reports readiness:\n{unit}"
    );
    if have_systemctl() {
        let link = root.path().join(WANTS_LINK);
        assert!(exists(&link), "enabled: no {}\n{run}", link.display());
    }
}

#[test]
fn install_again_replaces_the_parameters() {
    let (root, work) = (temp(), temp());
    write_config(work.path(), "relative/x.conf");
    write_config(work.path(), "other.conf");
    let root_arg = root.path().as_os_str();
    let first = wininetd(
        work.path(),
        &[
            OsStr::new("--install"),
            OsStr::new("--root"),
            root_arg,
            OsStr::new("--cfgfile"),
            OsStr::new("relative/x.conf"),
            OsStr::new("--timeout"),
            OsStr::new("30"),
            OsStr::new("--linger-timeout"),
            OsStr::new("5"),
        ],
    );
    assert!(first.output.status.success(), "{first}");
    let second = wininetd(
        work.path(),
        &[
            OsStr::new("--install"),
            OsStr::new("--root"),
            root_arg,
            OsStr::new("--cfgfile"),
            OsStr::new("other.conf"),
            OsStr::new("--timeout"),
            OsStr::new("10"),
        ],
    );
    assert!(second.output.status.success(), "{second}");

    let words = exec_start(&read_unit(root.path()));
    let cfgfile = value_of(&words, "--cfgfile").unwrap_or_else(|| panic!("{words:?}"));
    assert!(same_path(cfgfile, work.path(), "other.conf"), "{words:?}");
    assert_eq!(value_of(&words, "--timeout"), Some("10"), "{words:?}");
    // Parameters not given again are gone, as with a reinstalled service.
    assert_eq!(value_of(&words, "--linger-timeout"), None, "{words:?}");
    if have_systemctl() {
        assert!(
            exists(&root.path().join(WANTS_LINK)),
            "still enabled\n{second}"
        );
    }
}

#[test]
fn remove_disables_and_deletes_the_unit_then_says_not_installed() {
    let (root, work) = (temp(), temp());
    write_config(work.path(), "x.conf");
    let root_arg = root.path().as_os_str();
    let install = wininetd(
        work.path(),
        &[
            OsStr::new("--install"),
            OsStr::new("--root"),
            root_arg,
            OsStr::new("--cfgfile"),
            OsStr::new("x.conf"),
        ],
    );
    assert!(install.output.status.success(), "{install}");
    let link = root.path().join(WANTS_LINK);
    if have_systemctl() {
        assert!(exists(&link), "enabled\n{install}");
    }

    let remove = wininetd(
        work.path(),
        &[OsStr::new("--remove"), OsStr::new("--root"), root_arg],
    );
    assert!(remove.output.status.success(), "{remove}");
    assert!(!exists(&root.path().join(UNIT)), "unit deleted\n{remove}");
    assert!(!exists(&link), "link deleted\n{remove}");

    let again = wininetd(
        work.path(),
        &[OsStr::new("--remove"), OsStr::new("--root"), root_arg],
    );
    assert_eq!(again.output.status.code(), Some(1), "{again}");
    assert!(again.stderr().contains("not installed"), "{again}");
}

#[test]
fn remove_on_a_fresh_root_says_not_installed() {
    let (root, work) = (temp(), temp());
    let run = wininetd(
        work.path(),
        &[
            OsStr::new("--remove"),
            OsStr::new("--root"),
            root.path().as_os_str(),
        ],
    );
    assert_eq!(run.output.status.code(), Some(1), "{run}");
    assert!(run.stderr().contains("not installed"), "{run}");
}

#[test]
fn relative_root_is_under_the_working_directory() {
    let work = temp();
    write_config(work.path(), "x.conf");
    let run = wininetd(
        work.path(),
        &["--install", "--root", "pkg", "--cfgfile", "x.conf"],
    );
    assert!(run.output.status.success(), "{run}");
    assert!(exists(&work.path().join("pkg").join(UNIT)), "{run}");
}

#[test]
fn newline_in_the_config_path_is_refused_and_nothing_written() {
    let (root, work) = (temp(), temp());
    // A legal file name on Unix, but it would end the ExecStart= line.
    write_config(work.path(), "bad\nname.conf");
    let run = wininetd(
        work.path(),
        &[
            OsStr::new("--install"),
            OsStr::new("--root"),
            root.path().as_os_str(),
            OsStr::new("--cfgfile"),
            OsStr::new("bad\nname.conf"),
        ],
    );
    assert_eq!(run.output.status.code(), Some(1), "{run}");
    assert!(run.stderr().contains("control character"), "{run}");
    assert!(!exists(&root.path().join(UNIT)), "{run}");
}

#[test]
fn unquoting_helper_undoes_systemd_quoting() {
    // The helper the tests above rely on must itself be right.
    let words = exec_start(r#"ExecStart="/opt/a b/w" --cfgfile "/x \"y\" \\z" 100%% $$HOME """#);
    assert_eq!(
        words,
        [
            "/opt/a b/w",
            "--cfgfile",
            r#"/x "y" \z"#,
            "100%",
            "$HOME",
            ""
        ]
    );
}

/// Regression test: `--install` accepted a config that was missing or
/// broken, and the service then failed at its first start. It now runs the
/// checks of `--check` first: errors are printed with their line, the exit
/// code is 1 and nothing is written; `--force` installs anyway.
#[test]
fn install_checks_the_config_first_and_force_installs_anyway() {
    let (root, work) = (temp(), temp());
    fs::write(work.path().join("bad.conf"), "# a comment\n0 none x\n").expect("write");
    let args = |extra: &[&str]| -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec![
            "--install".into(),
            "--root".into(),
            root.path().as_os_str().to_owned(),
            "--cfgfile".into(),
        ];
        args.extend(extra.iter().map(Into::into));
        args
    };

    let run = wininetd(work.path(), &args(&["bad.conf"]));
    assert_eq!(run.output.status.code(), Some(1), "{run}");
    assert!(run.stderr().contains("bad.conf:2: error:"), "{run}");
    assert!(
        run.stderr()
            .contains("not installed (--force installs anyway)"),
        "{run}"
    );
    assert!(!exists(&root.path().join(UNIT)), "nothing written\n{run}");

    let run = wininetd(work.path(), &args(&["missing.conf"]));
    assert_eq!(run.output.status.code(), Some(1), "{run}");
    assert!(
        run.stderr().contains("missing.conf: error: cannot read"),
        "{run}"
    );
    assert!(!exists(&root.path().join(UNIT)), "nothing written\n{run}");

    let run = wininetd(work.path(), &args(&["bad.conf", "--force"]));
    assert!(run.output.status.success(), "{run}");
    assert!(
        run.stderr().contains("installing anyway (--force)"),
        "{run}"
    );
    let words = exec_start(&read_unit(root.path()));
    assert!(
        !words.iter().any(|w| w == "--force"),
        "--force does not persist: {words:?}"
    );
}

/// A clean config is checked, said so, then installed; its warnings do not
/// stop the install.
#[test]
fn install_says_the_config_passed_its_check() {
    let (root, work) = (temp(), temp());
    write_config(work.path(), "x.conf");
    let run = wininetd(
        work.path(),
        &[
            OsStr::new("--install"),
            OsStr::new("--root"),
            root.path().as_os_str(),
            OsStr::new("--cfgfile"),
            OsStr::new("x.conf"),
        ],
    );
    assert!(run.output.status.success(), "{run}");
    assert!(
        run.stdout()
            .lines()
            .next()
            .is_some_and(|l| l.ends_with("x.conf: ok, 1 service(s), 0 warning(s), UTF-8")),
        "{run}"
    );
}
