//! Unix domain stream sockets (`listen = "unix:PATH"`), driven by a real
//! client nobody in this project wrote: `socat - UNIX-CONNECT:PATH`
//! (package socat), run as root and, through `setpriv`, as a second user.
//!
//! What a program gets (the UCSPI-UNIX variables from the peer's
//! credentials, and no TCP ones), who may connect (`allow_uid`,
//! `allow_gid`, the file's mode, owner and group), and the socket file's
//! life: a stale one replaced, a live one or a file that is not a socket
//! never, the file removed at stop and when a reload removes the service,
//! kept when a reload keeps it. The tests that create a user or give the
//! file an owner need root (`#[ignore = "needs root"]`; CI runs them).

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    Daemon, Started, TestUser, WAIT, child_argv, has_field, has_token, json_object, number_after,
    parse_env, toml_service, toml_str,
};

// ===========================================================================
// Helpers
// ===========================================================================

/// One `[[service]]` listening on the Unix socket `path` (which may hold
/// `{dir}`, the daemon's temp dir).
fn unix_service(name: &str, path: &str, command: &str, extra: &[&str]) -> String {
    toml_service(name, &toml_str(&format!("unix:{path}")), command, extra)
}

/// Starts the daemon on `config` and waits for its `sockets` listening
/// lines (the harness's `start` counts port placeholders, of which a Unix
/// socket has none).
fn start(config: &str, sockets: usize) -> Daemon {
    let daemon = Daemon::builder().toml(config).spawn();
    wait_listening(&daemon, sockets);
    daemon
}

/// Waits for `sockets` listening lines of Unix sockets, text or JSON.
fn wait_listening(daemon: &Daemon, sockets: usize) {
    daemon.wait_for_count("listening on a Unix socket", sockets, WAIT, |l| {
        l.contains("listening on") && l.contains("unix:")
    });
}

/// What `socat` got from a service, and who it was.
#[derive(Debug)]
struct Reply {
    /// socat's pid: the client's, as the daemon sees it.
    pid: u32,
    status: ExitStatus,
    out: Vec<u8>,
    err: String,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }
}

/// Runs `socat - UNIX-CONNECT:PATH` with `input` on its stdin, as root or
/// (through `setpriv`, which execs it in place: same pid) as `user`, until
/// it exits. `-t` lets it wait for the service's answer after its input
/// ends, up to [`WAIT`], instead of socat's half second.
fn socat(path: &Path, input: &[u8], user: Option<&TestUser>) -> Reply {
    let timeout = WAIT.as_secs().to_string();
    let connect = format!("UNIX-CONNECT:{}", path.display());
    let socat = ["socat", "-t", &timeout, "-", &connect];
    let mut command = match user {
        Some(user) => {
            let mut command = Command::new("setpriv");
            command
                .args(["--reuid", &user.uid.to_string()])
                .args(["--regid", &user.gid.to_string()])
                .arg("--clear-groups")
                .args(socat);
            command
        }
        None => {
            let mut command = Command::new(socat[0]);
            command.args(&socat[1..]);
            command
        }
    };
    let process = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run socat (package socat): {e}"));
    let mut process = Started(process);
    let pid = process.id();
    let mut stdin = process.stdin.take().expect("stdin is piped");
    let input = input.to_vec();
    // A refused client's write may fail (the daemon closed): ignore it.
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let collect = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut data = Vec::new();
            let _ = pipe.read_to_end(&mut data);
            data
        })
    };
    let out = collect(Box::new(process.stdout.take().expect("stdout is piped")));
    let err = collect(Box::new(process.stderr.take().expect("stderr is piped")));
    let deadline = Instant::now() + WAIT + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = process.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "socat to {} did not finish",
            path.display()
        );
        thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    Reply {
        pid,
        status,
        out: out.join().expect("stdout reader"),
        err: String::from_utf8_lossy(&err.join().expect("stderr reader")).into_owned(),
    }
}

/// The value of `name` in the test child's `env` output.
fn var(reply: &Reply, name: &str) -> Option<String> {
    parse_env(&reply.text())
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// The test child printing the UCSPI-UNIX variables and the TCP ones.
fn env_child() -> String {
    child_argv(&[
        "env",
        "PROTO",
        "UNIXREMOTEEUID",
        "UNIXREMOTEEGID",
        "UNIXREMOTEPID",
        "UNIXLOCALPATH",
        "CLIENT_IP",
        "CLIENT_PORT",
        "TCPREMOTEIP",
        "TCPLOCALPORT",
    ])
}

/// The `session start` line of the client whose pid is `pid`.
fn session_start(daemon: &Daemon, pid: u32) -> String {
    let peer = format!(",pid:{pid}");
    daemon.wait_for(&format!("`session start` of client pid {pid}"), WAIT, |l| {
        l.contains("session start") && l.contains(&peer)
    })
}

/// The effective user and group IDs of this test process.
fn own_ids() -> (u32, u32) {
    #[allow(unsafe_code)]
    // SAFETY: geteuid and getegid cannot fail and touch no memory.
    unsafe {
        (libc::geteuid(), libc::getegid())
    }
}

/// Waits until `path` no longer exists.
fn wait_removed(path: &Path) {
    let deadline = Instant::now() + WAIT;
    while path.symlink_metadata().is_ok() {
        assert!(
            Instant::now() < deadline,
            "{} still exists after {WAIT:?}",
            path.display()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

fn is_socket(path: &Path) -> bool {
    path.symlink_metadata()
        .is_ok_and(|m| m.file_type().is_socket())
}

/// Stops `daemon` with SIGTERM and waits for its exit.
fn stop(daemon: &mut Daemon) {
    daemon.send_signal(libc::SIGTERM);
    daemon.wait_exit(WAIT);
}

// ===========================================================================
// What a program gets
// ===========================================================================

/// The program gets PROTO=UNIX and the client's credentials as the
/// kernel recorded them (SO_PEERCRED): root's, then a second user's, each
/// with socat's own pid; the socket's path as UNIXLOCALPATH; and none of
/// the TCP variables (no empty CLIENT_IP). The program runs as a third
/// identity, the service's `user`, which does not change what it is told
/// of its client. The session lines show the peer as one token.
#[test]
#[ignore = "needs root"]
fn a_program_gets_its_clients_credentials() {
    let client = TestUser::create("ucli");
    let runner = TestUser::create("urun");
    let config = unix_service(
        "creds",
        "{dir}/creds.sock",
        &env_child(),
        &[&format!("user = {}", toml_str(&runner.name))],
    );
    let daemon = start(&config, 1);
    let path = daemon.dir().join("creds.sock");

    let root = socat(&path, b"", None);
    assert!(root.status.success(), "{root:?}");
    assert_eq!(var(&root, "PROTO").as_deref(), Some("UNIX"), "{root:?}");
    assert_eq!(var(&root, "UNIXREMOTEEUID").as_deref(), Some("0"));
    assert_eq!(var(&root, "UNIXREMOTEEGID").as_deref(), Some("0"));
    assert_eq!(var(&root, "UNIXREMOTEPID"), Some(root.pid.to_string()));
    assert_eq!(
        var(&root, "UNIXLOCALPATH"),
        Some(path.display().to_string())
    );
    for tcp in ["CLIENT_IP", "CLIENT_PORT", "TCPREMOTEIP", "TCPLOCALPORT"] {
        assert!(
            root.text().contains(&format!("{tcp} unset")),
            "{tcp} must not be set for a Unix client:\n{}",
            root.text()
        );
    }

    let other = socat(&path, b"", Some(&client));
    assert!(other.status.success(), "{other:?}");
    assert_eq!(
        var(&other, "UNIXREMOTEEUID"),
        Some(client.uid.to_string()),
        "{other:?}"
    );
    assert_eq!(var(&other, "UNIXREMOTEEGID"), Some(client.gid.to_string()));
    assert_eq!(var(&other, "UNIXREMOTEPID"), Some(other.pid.to_string()));

    let line = session_start(&daemon, other.pid);
    let peer = format!("uid:{},gid:{},pid:{}", client.uid, client.gid, other.pid);
    assert!(has_field(&line, "peer", &peer), "{line}");
    assert!(
        has_field(&line, "local", &format!("unix:{}", path.display())),
        "{line}"
    );
    assert!(has_field(&line, "user", &runner.name), "{line}");
    assert!(
        !line.contains("port="),
        "a Unix session has no port: {line}"
    );
    let pid = number_after(&line, "pid").expect("the program's pid");
    daemon.session_end(pid);
}

/// With `log_format = "json"`, a Unix client's peer is one string and the
/// local end the socket's `unix:PATH`; there is no `port` member.
#[test]
fn json_logs_show_a_unix_peer_as_one_string() {
    let config = format!(
        "log_format = \"json\"\n\n{}",
        unix_service("json", "{dir}/json.sock", &env_child(), &[])
    );
    let daemon = start(&config, 1);
    let path = daemon.dir().join("json.sock");
    let reply = socat(&path, b"", None);
    assert!(reply.status.success(), "{reply:?}");

    let (uid, gid) = own_ids();
    let peer = format!("uid:{uid},gid:{gid},pid:{}", reply.pid);
    let line = daemon.wait_for("the JSON session end", WAIT, |l| {
        json_object(l).is_ok_and(|e| e["message"] == "session end" && e["peer"] == peer.as_str())
    });
    let event = json_object(&line).expect("JSON");
    assert_eq!(event["local"], format!("unix:{}", path.display()), "{line}");
    assert!(event.get("port").is_none(), "no port: {line}");
    let announce = daemon.wait_for_line("listening on", WAIT);
    let announce = json_object(&announce).expect("JSON");
    assert_eq!(announce["address"], format!("unix:{}", path.display()));
}

/// `stdio = "pipe"` over a Unix socket: the program is on pipes (its
/// `piped` guard refuses anything else) and the relay carries the bytes
/// both ways, EOF included.
#[test]
fn stdio_pipe_relays_a_unix_connection() {
    let config = unix_service(
        "piped",
        "{dir}/piped.sock",
        &child_argv(&["piped", "echo"]),
        &[r#"stdio = "pipe""#],
    );
    let daemon = start(&config, 1);
    let input: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let reply = socat(&daemon.dir().join("piped.sock"), &input, None);
    assert!(reply.status.success(), "{}", reply.err);
    assert_eq!(reply.out.len(), input.len(), "{}", reply.err);
    assert!(reply.out == input, "the bytes come back as they were sent");
}

// ===========================================================================
// Who may connect
// ===========================================================================

/// `allow_uid` admits the users it lists and refuses the others, and
/// `allow_gid` the groups, each refusal logged with its rule and the
/// peer's credentials; a refused client gets the `reject_message` and
/// nothing from the program.
#[test]
#[ignore = "needs root"]
fn allow_uid_and_allow_gid_choose_the_clients() {
    let user = TestUser::create("uallow");
    let config = [
        unix_service(
            "root-only",
            "{dir}/root.sock",
            &env_child(),
            &["allow_uid = [0]", r#"reject_message = "not for you\n""#],
        ),
        unix_service(
            "group-only",
            "{dir}/group.sock",
            &env_child(),
            &[&format!("allow_gid = [{}]", toml_str(&user.name))],
        ),
    ]
    .concat();
    let daemon = start(&config, 2);
    let root_sock = daemon.dir().join("root.sock");
    let group_sock = daemon.dir().join("group.sock");

    let root = socat(&root_sock, b"", None);
    assert_eq!(
        var(&root, "UNIXREMOTEEUID").as_deref(),
        Some("0"),
        "{root:?}"
    );
    let refused = socat(&root_sock, b"", Some(&user));
    assert_eq!(
        refused.text(),
        "not for you\n",
        "a user not in allow_uid gets the reject_message only: {refused:?}"
    );
    let peer = format!("uid:{},gid:{},pid:{}", user.uid, user.gid, refused.pid);
    let line = daemon.wait_for("the allow_uid refusal", WAIT, |l| {
        l.contains("connection refused") && has_field(l, "peer", &peer)
    });
    assert!(has_field(&line, "rule", "allow_uid"), "{line}");
    assert!(has_field(&line, "service", "root-only"), "{line}");

    let member = socat(&group_sock, b"", Some(&user));
    assert_eq!(
        var(&member, "UNIXREMOTEEGID"),
        Some(user.gid.to_string()),
        "{member:?}"
    );
    let root_refused = socat(&group_sock, b"", None);
    assert!(!root_refused.text().contains("PROTO"), "{root_refused:?}");
    let peer = format!("uid:0,gid:0,pid:{}", root_refused.pid);
    let line = daemon.wait_for("the allow_gid refusal", WAIT, |l| {
        l.contains("connection refused") && has_field(l, "peer", &peer)
    });
    assert!(has_field(&line, "rule", "allow_gid"), "{line}");
}

/// `rate` applies to a Unix socket's clients as to any: past the burst,
/// a client is refused with `rule=rate`.
#[test]
fn rate_limits_a_unix_socket() {
    let config = unix_service(
        "rated",
        "{dir}/rated.sock",
        &env_child(),
        &["rate = { per_second = 0.01, burst = 1 }"],
    );
    let daemon = start(&config, 1);
    let path = daemon.dir().join("rated.sock");
    let first = socat(&path, b"", None);
    assert_eq!(var(&first, "PROTO").as_deref(), Some("UNIX"), "{first:?}");
    let second = socat(&path, b"", None);
    assert!(!second.text().contains("PROTO"), "{second:?}");
    let line = daemon.wait_for_line("connection refused", WAIT);
    assert!(has_field(&line, "rule", "rate"), "{line}");
    assert!(
        has_token(&line, &format!("pid:{}", second.pid)),
        "the refused client's credentials: {line}"
    );
}

/// The file gets `socket_mode` exactly, whatever the daemon's umask (the
/// default, 0666, too), and `socket_owner` and `socket_group`; the mode
/// is what the kernel checks: with 0660 and the file's group, the second
/// user gets in as a member of that group and is kept out otherwise.
#[test]
#[ignore = "needs root"]
fn the_socket_file_gets_its_mode_owner_and_group() {
    let user = TestUser::create("umode");
    let config = [
        unix_service(
            "owned",
            "{dir}/owned.sock",
            &env_child(),
            &[
                r#"socket_mode = "0640""#,
                &format!("socket_owner = {}", toml_str(&user.name)),
                &format!("socket_group = {}", user.extra_gid),
            ],
        ),
        unix_service("default", "{dir}/default.sock", &env_child(), &[]),
        unix_service(
            "group",
            "{dir}/group.sock",
            &env_child(),
            &[
                r#"socket_mode = "0660""#,
                &format!("socket_group = {}", user.gid),
            ],
        ),
        unix_service(
            "private",
            "{dir}/private.sock",
            &env_child(),
            &[r#"socket_mode = "0600""#],
        ),
    ]
    .concat();
    let daemon = Daemon::builder()
        .toml(&config)
        // A umask that would take bits away from the default mode.
        .prefix(&["sh", "-c", "umask 077 && exec \"$0\" \"$@\""])
        .spawn();
    wait_listening(&daemon, 4);
    let meta = |name: &str| {
        fs::symlink_metadata(daemon.dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };

    let owned = meta("owned.sock");
    assert!(owned.file_type().is_socket());
    assert_eq!(owned.permissions().mode() & 0o7777, 0o640);
    assert_eq!(owned.uid(), user.uid);
    assert_eq!(owned.gid(), user.extra_gid);

    let default = meta("default.sock");
    assert_eq!(
        default.permissions().mode() & 0o7777,
        0o666,
        "the default mode, despite umask 077"
    );
    assert_eq!((default.uid(), default.gid()), (0, 0), "the daemon's own");

    assert_eq!(meta("group.sock").permissions().mode() & 0o7777, 0o660);
    let member = socat(&daemon.dir().join("group.sock"), b"", Some(&user));
    assert_eq!(
        var(&member, "UNIXREMOTEEUID"),
        Some(user.uid.to_string()),
        "a member of the file's group connects: {member:?}"
    );
    let outsider = socat(&daemon.dir().join("private.sock"), b"", Some(&user));
    assert!(!outsider.status.success(), "{outsider:?}");
    assert!(
        outsider.err.contains("Permission denied"),
        "mode 0600 keeps others out: {outsider:?}"
    );
}

// ===========================================================================
// The socket file's life
// ===========================================================================

/// A socket file nothing listens on (what a daemon that was killed leaves)
/// is replaced, and said so.
#[test]
fn a_stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("stale.sock");
    drop(UnixListener::bind(&path).expect("bind"));
    assert!(is_socket(&path), "the stale file is there");

    let config = unix_service("stale", &path.display().to_string(), &env_child(), &[]);
    let daemon = start(&config, 1);
    daemon.wait_for_line("removed a stale socket file", WAIT);
    let reply = socat(&path, b"", None);
    assert_eq!(var(&reply, "PROTO").as_deref(), Some("UNIX"), "{reply:?}");
}

/// A socket somebody listens on is never taken over: a second daemon on
/// the same path fails to start, saying the path is in use, and removes
/// nothing; the first keeps serving. The same for a socket of another
/// program.
#[test]
fn a_live_socket_is_not_taken_over() {
    let config = unix_service("first", "{dir}/live.sock", &env_child(), &[]);
    let first = start(&config, 1);
    let path = first.dir().join("live.sock");
    let inode = fs::metadata(&path).expect("the socket file").ino();

    let config = unix_service("second", &path.display().to_string(), &env_child(), &[]);
    let mut second = Daemon::builder().toml(&config).spawn();
    let status = second.wait_exit(WAIT);
    assert!(!status.success(), "the second daemon must fail");
    let error = second.wait_for_line("in use", WAIT);
    assert!(
        error.contains(&path.display().to_string()),
        "names the path: {error}"
    );
    assert_eq!(second.count(|l| l.contains("listening on")), 0);
    assert_eq!(
        fs::metadata(&path).expect("still there").ino(),
        inode,
        "the first daemon's file is untouched"
    );
    let reply = socat(&path, b"", None);
    assert_eq!(var(&reply, "PROTO").as_deref(), Some("UNIX"), "{reply:?}");

    // Another program's socket.
    let dir = tempfile::tempdir().expect("temp dir");
    let theirs = dir.path().join("theirs.sock");
    let listener = UnixListener::bind(&theirs).expect("bind");
    let config = unix_service("thief", &theirs.display().to_string(), &env_child(), &[]);
    let mut thief = Daemon::builder().toml(&config).spawn();
    assert!(!thief.wait_exit(WAIT).success());
    thief.wait_for_line("in use", WAIT);
    assert!(is_socket(&theirs), "their socket file is still there");
    let mut client =
        std::os::unix::net::UnixStream::connect(&theirs).expect("theirs still listens");
    client.write_all(b"x").expect("write");
    // The daemon's probe (a connection closed at once) comes first.
    let (mut probe, _) = listener.accept().expect("the probe");
    assert_eq!(
        probe.read(&mut [0u8]).expect("read"),
        0,
        "the probe sends nothing"
    );
    let (mut accepted, _) = listener.accept().expect("accept");
    let mut byte = [0u8];
    accepted.read_exact(&mut byte).expect("read");
}

/// A file at the path that is not a socket (a regular file, a symbolic
/// link, even to a stale socket) is an error, and never removed.
#[test]
fn a_file_that_is_not_a_socket_is_never_removed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let regular = dir.path().join("regular.sock");
    fs::write(&regular, "precious\n").expect("write");
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).expect("bind"));
    let link = dir.path().join("link.sock");
    std::os::unix::fs::symlink(&stale, &link).expect("symlink");

    for path in [&regular, &link] {
        let config = unix_service(
            "not-a-socket",
            &path.display().to_string(),
            &env_child(),
            &[],
        );
        let mut daemon = Daemon::builder().toml(&config).spawn();
        assert!(!daemon.wait_exit(WAIT).success(), "{}", path.display());
        let error = daemon.wait_for_line("is not a socket", WAIT);
        assert!(error.contains(&path.display().to_string()), "{error}");
    }
    assert_eq!(fs::read_to_string(&regular).expect("kept"), "precious\n");
    assert!(
        link.symlink_metadata()
            .expect("kept")
            .file_type()
            .is_symlink(),
        "the link is kept"
    );
    assert!(is_socket(&stale), "the link's target is not followed");
}

/// The daemon removes its socket file when it stops; a file that took the
/// path's place meanwhile is not its own, and is left alone.
#[test]
fn the_socket_file_is_removed_at_stop_if_it_is_still_ours() {
    let config = [
        unix_service("mine", "{dir}/mine.sock", &env_child(), &[]),
        unix_service("moved", "{dir}/moved.sock", &env_child(), &[]),
    ]
    .concat();
    let mut daemon = start(&config, 2);
    let mine = daemon.dir().join("mine.sock");
    let moved = daemon.dir().join("moved.sock");
    assert!(is_socket(&mine) && is_socket(&moved));
    // An operator puts another file where `moved` listened.
    fs::remove_file(&moved).expect("remove");
    fs::write(&moved, "someone else's\n").expect("write");

    stop(&mut daemon);
    assert!(!mine.exists(), "the daemon's own socket file is removed");
    assert_eq!(
        fs::read_to_string(&moved).expect("the other file is kept"),
        "someone else's\n"
    );
}

/// A reload that removes a Unix socket service removes its file (once its
/// listener is closed); one that keeps a service keeps its socket (the same
/// file, serving all along) and gives it the new `socket_mode`; one that
/// adds it back makes the file again.
#[test]
fn a_reload_removes_the_file_of_a_removed_service_only() {
    let kept_config = |mode: &str| {
        unix_service(
            "kept",
            "{dir}/kept.sock",
            &env_child(),
            &[&format!("socket_mode = {}", toml_str(mode))],
        )
    };
    let removed_config = unix_service("removed", "{dir}/removed.sock", &env_child(), &[]);
    let mut daemon = start(&[kept_config("0666"), removed_config.clone()].concat(), 2);
    let dir = daemon.dir().display().to_string();
    let absolute = |text: String| text.replace("{dir}", &dir);
    let kept = daemon.dir().join("kept.sock");
    let removed = daemon.dir().join("removed.sock");
    let inode = fs::metadata(&kept).expect("kept").ino();
    assert!(is_socket(&removed));

    let outcome = daemon.reload(&absolute(kept_config("0600")));
    assert!(outcome.contains("reload done"), "{outcome}");
    assert!(has_field(&outcome, "removed", "removed"), "{outcome}");
    wait_removed(&removed);
    let meta = fs::metadata(&kept).expect("kept after the reload");
    assert_eq!(meta.ino(), inode, "the same socket file");
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o600,
        "the new socket_mode"
    );
    let reply = socat(&kept, b"", None);
    assert_eq!(var(&reply, "PROTO").as_deref(), Some("UNIX"), "{reply:?}");

    let outcome = daemon.reload(&absolute([kept_config("0600"), removed_config].concat()));
    assert!(has_field(&outcome, "added", "removed"), "{outcome}");
    assert!(is_socket(&removed), "bound again");
    let reply = socat(&removed, b"", None);
    assert_eq!(var(&reply, "PROTO").as_deref(), Some("UNIX"), "{reply:?}");
}

/// A socket file's directory path is shown as the config writes it, and
/// the address in errors too (`unix:PATH`).
#[test]
fn a_missing_directory_is_an_error_naming_the_address() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path: PathBuf = dir.path().join("no-such-dir").join("x.sock");
    let config = unix_service("nowhere", &path.display().to_string(), &env_child(), &[]);
    let mut daemon = Daemon::builder().toml(&config).spawn();
    assert!(!daemon.wait_exit(WAIT).success());
    let line = daemon.wait_for_line("cannot listen", WAIT);
    assert!(line.contains(&format!("unix:{}", path.display())), "{line}");
}

/// A client of the socket at `path`, with read and write timeouts of
/// [`WAIT`].
fn connect_unix(path: &Path) -> std::os::unix::net::UnixStream {
    let stream = std::os::unix::net::UnixStream::connect(path)
        .unwrap_or_else(|e| panic!("connect to {}: {e}", path.display()));
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    stream.set_write_timeout(Some(WAIT)).expect("write timeout");
    stream
}

/// One line from `stream`, without its newline.
fn read_unix_line(stream: &mut std::os::unix::net::UnixStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8];
    while stream.read(&mut byte).expect("read a line") == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

/// `timeout` bounds the program's reads on a Unix connection too: an
/// accepted Unix socket inherits no option from its listener (unlike a
/// TCP one on Linux), so the daemon sets it on each connection.
#[test]
fn timeout_applies_to_a_unix_connection() {
    let config = unix_service(
        "slow",
        "{dir}/slow.sock",
        &child_argv(&["read-timeout"]),
        &["timeout = 1"],
    );
    let daemon = start(&config, 1);
    let mut stream = connect_unix(&daemon.dir().join("slow.sock"));
    assert_eq!(read_unix_line(&mut stream), "reading");
    let line = read_unix_line(&mut stream);
    assert!(
        line.starts_with("read error WouldBlock after="),
        "the read timed out: {line:?}"
    );
}

/// `max_sessions`, `max_lifetime` and `stderr = "log"` on a Unix socket:
/// at the cap the next client waits in the backlog until a session ends
/// (here at its `max_lifetime`), and a program's stderr is logged with its
/// service.
#[test]
fn limits_and_the_stderr_log_apply_to_a_unix_socket() {
    let config = [
        unix_service(
            "capped",
            "{dir}/capped.sock",
            &child_argv(&["sleep", "30"]),
            &["max_sessions = 1", "max_lifetime = 1"],
        ),
        unix_service(
            "talker",
            "{dir}/talker.sock",
            &child_argv(&["stderr", "said-over-unix"]),
            &[r#"stderr = "log""#],
        ),
    ]
    .concat();
    let daemon = start(&config, 2);

    let capped = daemon.dir().join("capped.sock");
    let mut first = connect_unix(&capped);
    assert!(read_unix_line(&mut first).starts_with("sleeping pid="));
    let mut second = connect_unix(&capped);
    // Served only once the first session has ended, at its max_lifetime.
    assert!(read_unix_line(&mut second).starts_with("sleeping pid="));
    let lines = daemon.lines();
    let reached = lines
        .iter()
        .position(|l| l.contains("reached max_lifetime"))
        .expect("the first session reached max_lifetime");
    let starts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("session start") && l.contains("service=capped"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(starts.len(), 2, "{lines:#?}");
    assert!(
        starts[1] > reached,
        "the second session waited for the first: {lines:#?}"
    );

    let reply = socat(&daemon.dir().join("talker.sock"), b"", None);
    assert!(reply.status.success(), "{reply:?}");
    let line = daemon.wait_for("the program's stderr", WAIT, |l| {
        l.contains("program output") && l.contains("said-over-unix")
    });
    assert!(has_field(&line, "service", "talker"), "{line}");
}

/// A built-in over a Unix socket: echo sends back what it gets, with no
/// program started.
#[test]
fn a_builtin_serves_a_unix_socket() {
    let config = toml_service("echo", &toml_str("unix:{dir}/echo.sock"), "[]", &[])
        .replace("command = []\n", "builtin = \"echo\"\n");
    let daemon = start(&config, 1);
    let reply = socat(&daemon.dir().join("echo.sock"), b"one\ntwo\n", None);
    assert_eq!(reply.text(), "one\ntwo\n", "{reply:?}");
    let line = daemon.wait_for_line("session end", WAIT);
    assert!(has_field(&line, "pid", "0"), "{line}");
    assert!(has_token(&line, "status=closed by the client"), "{line}");
}

/// Issue 18, item 3: a Unix socket in wait mode. The program gets the
/// listening socket itself (fd 0, and fd 3 with `LISTEN_FDS`), accepts
/// both clients, driven by socat, in one run; its session is logged with
/// no peer (the program accepts) and the socket's path.
#[test]
fn a_unix_socket_in_wait_mode() {
    let config = unix_service(
        "uwait",
        "{dir}/uwait.sock",
        &child_argv(&["serve-socket", "2"]),
        &["wait = true"],
    );
    let daemon = start(&config, 1);
    let path = daemon.dir().join("uwait.sock");
    let first = socat(&path, b"one\n", None);
    let second = socat(&path, b"two\n", None);
    let (first, second) = (first.text(), second.text());
    assert!(first.starts_with("served 1 pid="), "{first}");
    assert!(second.starts_with("served 2 pid="), "{second}");
    let pid = |text: &str| text.split_whitespace().nth(2).map(str::to_owned);
    assert_eq!(pid(&first), pid(&second), "one program serves both");
    for text in [&first, &second] {
        assert!(text.contains(" PROTO=UNIX"), "{text}");
        assert!(text.contains(" LISTEN_FDS=1"), "{text}");
        assert!(text.contains(" LISTEN_FDNAMES=uwait"), "{text}");
    }
    assert!(first.contains("got=one") && second.contains("got=two"));
    let start = daemon.wait_for_line("session start", WAIT);
    assert!(start.contains("peer=- "), "{start}");
    assert!(
        start.contains(&format!("local=unix:{}", path.display())),
        "{start}"
    );
    assert!(!start.contains("port="), "{start}");
}
