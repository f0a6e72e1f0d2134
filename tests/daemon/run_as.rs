//! Run-as: a service line with a user runs the child with that user's uid,
//! gid, supplementary groups and HOME/USER/LOGNAME, and logs the user. The
//! password of a `USER:PASS` line is ignored on Unix and never printed.
//! These tests create system users, so they need root; they say so and
//! return otherwise.

use std::collections::{BTreeSet, HashMap};
use std::net::Shutdown;

use crate::common::{
    Daemon, TestUser, WAIT, child, connect, field, has_token, parse_env, read_line, read_to_eof,
};

const PASSWORD: &str = "s3cr3t-pa55";

#[test]
fn child_runs_with_the_users_ids_and_groups() {
    let Some(user) = TestUser::create("ids") else {
        return;
    };
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
fn child_gets_the_users_environment_and_never_the_password() {
    let Some(user) = TestUser::create("env") else {
        return;
    };
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
