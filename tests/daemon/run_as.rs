//! Run-as: a service line with a user runs the child with that user's uid,
//! gid, supplementary groups and HOME/USER/LOGNAME, and logs the user. The
//! password of a `USER:PASS` line is ignored on Unix and never printed.
//! These tests create system users, so they need root: they are ignored
//! unless asked for (`cargo test -- --include-ignored`, as root; CI runs
//! them).

use std::collections::{BTreeSet, HashMap};
use std::net::Shutdown;

use crate::common::{
    Daemon, TestUser, WAIT, child, connect, field, has_token, parse_env, read_line, read_to_eof,
};

const PASSWORD: &str = "s3cr3t-pa55";

#[test]
#[ignore = "needs root"]
fn child_runs_with_the_users_ids_and_groups() {
    let user = TestUser::create("ids");
    let daemon = Daemon::builder().service(&user.name, &child("ids")).start();
    let mut stream = connect(daemon.port(0));
    let client = stream.local_addr().expect("local_addr");
    let ids = read_line(&mut stream, WAIT);

    let pair = format!("{},{}", user.uid, user.uid);
    assert_eq!(
        field(&ids, "uid"),
        Some(pair.as_str()),
        "real and effective uid: {ids}"
    );
    let pair = format!("{},{}", user.gid, user.gid);
    assert_eq!(
        field(&ids, "gid"),
        Some(pair.as_str()),
        "real and effective gid: {ids}"
    );
    let groups: BTreeSet<u32> = field(&ids, "groups")
        .expect("groups=")
        .split(',')
        .filter(|g| !g.is_empty())
        .map(|g| g.parse().expect("a gid"))
        .collect();
    assert!(
        groups.contains(&user.extra_gid),
        "the supplementary group: {ids}"
    );
    let allowed = BTreeSet::from([user.gid, user.extra_gid]);
    assert!(
        groups.is_subset(&allowed),
        "only the user's groups (none of the daemon's): {groups:?} vs {allowed:?}"
    );
    assert_eq!(
        field(&ids, "pgid"),
        field(&ids, "pid"),
        "own process group: {ids}"
    );

    let (start, _) = daemon.session_start(client);
    assert!(
        has_token(&start, &format!("user={}", user.name)),
        "start line names the user: {start}"
    );
}

#[test]
#[ignore = "needs root"]
fn child_gets_the_users_environment_and_never_the_password() {
    let user = TestUser::create("env");
    let daemon = Daemon::builder()
        .service(&format!("{}:{PASSWORD}", user.name), &child("env"))
        .env("HOME", "/root/daemon-home")
        .env("USER", "daemon-user")
        .start();
    let mut stream = connect(daemon.port(0));
    let client = stream.local_addr().expect("local_addr");
    stream.shutdown(Shutdown::Write).expect("half-close");
    let output = read_to_eof(&mut stream, WAIT).expect("the whole environment");
    let output = String::from_utf8_lossy(&output);
    let env: HashMap<String, String> = parse_env(&output).into_iter().collect();
    for (name, expected) in [
        ("HOME", &user.home),
        ("USER", &user.name),
        ("LOGNAME", &user.name),
    ] {
        assert_eq!(env.get(name), Some(expected), "{name} of the user");
    }
    assert_eq!(env.get("CLIENT_PORT"), Some(&client.port().to_string()));
    assert!(
        !output.contains(PASSWORD),
        "the password is in the child's environment"
    );

    let (start, pid) = daemon.session_start(client);
    assert!(has_token(&start, &format!("user={}", user.name)), "{start}");
    daemon.session_end(pid);
    let passwords = daemon.count(|l| l.contains(": warning: ") && l.contains("password"));
    assert_eq!(passwords, 1, "the password is ignored, with a warning");
    for text in [daemon.stderr_text(), daemon.stdout_text()] {
        assert!(
            !text.contains(PASSWORD),
            "the password is in the daemon's output"
        );
    }
}

/// No session forks (copies) the multi-threaded daemon, run-as sessions
/// included: strace sees every process the daemon starts made with
/// `CLONE_VM` (the child shares the daemon's memory until its exec), and
/// nothing made by fork.
#[test]
#[ignore = "needs root"]
fn sessions_start_without_forking_the_daemon() {
    let user = TestUser::create("clone");
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = dir.path().join("trace");
    let daemon = Daemon::builder()
        .strace("clone,clone3,fork,vfork", &trace)
        .service(&user.name, &child("ids"))
        .service("none", &child("ids"))
        .start();
    for port in [daemon.port(0), daemon.port(1)] {
        let mut stream = connect(port);
        let ids = read_line(&mut stream, WAIT);
        assert!(ids.starts_with("uid="), "served on {port}: {ids}");
    }
    drop(daemon);
    let trace = std::fs::read_to_string(&trace).expect("strace's output");
    let calls: Vec<&str> = trace
        .lines()
        // A call strace splits shows its flags on the `unfinished` half.
        .filter(|l| ["clone(", "clone3(", "fork("].iter().any(|c| l.contains(c)))
        .collect();
    // Threads are made with CLONE_THREAD; processes without it.
    let spawns = calls
        .iter()
        .filter(|l| l.contains("CLONE_VM") && !l.contains("CLONE_THREAD"))
        .count();
    assert!(
        spawns >= 2,
        "both sessions started as processes with CLONE_VM:\n{trace}"
    );
    for call in &calls {
        assert!(
            call.contains("CLONE_VM"),
            "a process made without CLONE_VM (a fork):\n{call}\n\n{trace}"
        );
    }
}
