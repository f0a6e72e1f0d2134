//! TLS termination (issue 19) against real clients nobody in this project
//! wrote: `openssl s_client` (TLS 1.2 and 1.3, SNI, ALPN, client
//! certificates), `curl`, `gnutls-cli` and `socat` (a 100 MiB transfer).
//! Debian packages openssl, curl, gnutls-bin and socat; .ci/run installs
//! them.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Daemon, WAIT, child_argv, connect, env_value, run_command, toml_service};
use crate::tls::{Pki, client_config, tls_line, tls_session, toml_path};

/// The test child's mode that prints every `SSL_*` variable.
fn env_mode() -> Vec<&'static str> {
    let mut mode = vec!["env"];
    mode.extend(wininetd::tls::VARIABLES);
    mode
}

/// A daemon with one TLS service running `argv`, with `more` fields in
/// its `tls` table and `extra` lines.
fn tls_daemon(pki: &Pki, argv: &[&str], more: &str, extra: &[&str]) -> Daemon {
    let (cert, key) = pki.issue("server", "localhost", &["localhost", "127.0.0.1"], false);
    let mut lines = vec![tls_line(&cert, &key, more)];
    lines.extend(extra.iter().map(|l| (*l).to_owned()));
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    Daemon::builder()
        .toml(&toml_service("tls", "{port0}", &child_argv(argv), &lines))
        .start()
}

/// Runs `openssl s_client` against `port` with `args`, its stdin empty;
/// returns what it printed (the session's output among its own lines).
fn s_client(port: u16, args: &[&str]) -> String {
    let mut command = Command::new("openssl");
    command
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-ign_eof",
        ])
        .args(args)
        .stdin(Stdio::null());
    let run = run_command(&mut command, WAIT);
    run.text()
}

#[test]
fn openssl_s_client_tls13_and_tls12_with_sni_and_alpn() {
    let pki = Pki::new();
    let daemon = tls_daemon(&pki, &env_mode(), ", alpn = [\"h2\", \"http/1.1\"]", &[]);
    let ca = pki.ca();
    let ca = ca.to_str().expect("UTF-8");
    for (version, expected) in [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")] {
        let out = s_client(
            daemon.port(0),
            &[
                version,
                "-servername",
                "app.example",
                "-alpn",
                "http/1.1",
                "-CAfile",
                ca,
            ],
        );
        assert_eq!(env_value(&out, "SSL_PROTOCOL"), Some(expected), "{out}");
        assert_eq!(env_value(&out, "SSL_TLS_SNI"), Some("app.example"), "{out}");
        assert_eq!(env_value(&out, "SSL_ALPN"), Some("http/1.1"), "{out}");
        let cipher = env_value(&out, "SSL_CIPHER").unwrap_or_default();
        assert!(cipher.starts_with("TLS_"), "{out}");
        assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
        assert!(out.contains("SSL_CLIENT_S_DN unset"), "{out}");
    }
    // No SNI, no ALPN: the variables are not set.
    let out = s_client(daemon.port(0), &["-noservername"]);
    assert!(
        out.contains("SSL_TLS_SNI unset") && out.contains("SSL_ALPN unset"),
        "{out}"
    );
}

/// A client certificate signed by `client_ca` is required, and named in
/// the variables; one from another CA, an expired one, or none, fails the
/// handshake, which is logged with the reason, and no program runs.
#[test]
fn client_certificates_are_required_and_checked() {
    let pki = Pki::new();
    let daemon = tls_daemon(
        &pki,
        &env_mode(),
        &format!(", client_ca = {}", toml_path(&pki.ca())),
        &[],
    );
    let (cert, key) = pki.issue("client", "alice", &[], false);
    let (expired_cert, expired_key) = pki.issue("expired", "old", &[], true);
    let other = Pki::new();
    let (stranger_cert, stranger_key) = other.issue("stranger", "mallory", &[], false);
    let arg = |p: &Path| p.to_str().expect("UTF-8").to_owned();

    let out = s_client(daemon.port(0), &["-cert", &arg(&cert), "-key", &arg(&key)]);
    // RFC 2253, as mod_ssl writes it (the last RDN first): what openssl
    // prints with that option.
    let subject = run_command(
        Command::new("openssl").args([
            "x509",
            "-noout",
            "-subject",
            "-nameopt",
            "RFC2253",
            "-in",
            &arg(&cert),
        ]),
        WAIT,
    );
    let subject = subject
        .stdout()
        .trim()
        .strip_prefix("subject=")
        .unwrap_or_default()
        .to_owned();
    assert_eq!(subject, "O=wininetd test,CN=alice");
    assert_eq!(
        env_value(&out, "SSL_CLIENT_S_DN"),
        Some(subject.as_str()),
        "{out}"
    );
    let der = run_command(
        Command::new("openssl").args([
            "x509",
            "-in",
            &arg(&cert),
            "-outform",
            "DER",
            "-out",
            &arg(&pki.path("client.der")),
        ]),
        WAIT,
    );
    assert!(der.success(), "{der}");
    let digest = run_command(Command::new("sha256sum").arg(pki.path("client.der")), WAIT);
    let expected = digest
        .stdout()
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        env_value(&out, "SSL_CLIENT_CERT_SHA256"),
        Some(expected.as_str()),
        "{out}"
    );
    assert_eq!(daemon.count(|l| l.contains("session start")), 1);

    for (args, why) in [
        (vec![], "no certificate"),
        (
            vec![
                "-cert".to_owned(),
                arg(&expired_cert),
                "-key".to_owned(),
                arg(&expired_key),
            ],
            "expired",
        ),
        (
            vec![
                "-cert".to_owned(),
                arg(&stranger_cert),
                "-key".to_owned(),
                arg(&stranger_key),
            ],
            "another CA",
        ),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let before = daemon.count(|l| l.contains("TLS handshake failed"));
        let out = s_client(daemon.port(0), &args);
        assert!(
            !out.contains("SSL_PROTOCOL="),
            "{why}: the program ran: {out}"
        );
        daemon.wait_for_count("a failed handshake", before + 1, WAIT, |l| {
            l.contains("TLS handshake failed") && l.contains("peer=127.0.0.1:")
        });
    }
    assert_eq!(daemon.count(|l| l.contains("session start")), 1);
}

/// curl, against a tiny program answering HTTP.
#[test]
fn curl_gets_a_page_over_tls() {
    let pki = Pki::new();
    let script = "read request; printf 'HTTP/1.0 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\nhello over %s\\n' \"$SSL_PROTOCOL\"";
    let (cert, key) = pki.issue("server", "localhost", &["localhost"], false);
    let daemon = Daemon::builder()
        .toml(&toml_service(
            "https",
            "{port0}",
            &format!("[\"/bin/sh\", \"-c\", {script:?}]"),
            &[&tls_line(&cert, &key, ", alpn = [\"http/1.1\"]")],
        ))
        .start();
    let run = run_command(
        Command::new("curl")
            .args(["--silent", "--show-error", "--http1.1", "--cacert"])
            .arg(pki.ca())
            .args([
                "--resolve",
                &format!("localhost:{}:127.0.0.1", daemon.port(0)),
            ])
            .arg(format!("https://localhost:{}/", daemon.port(0))),
        WAIT,
    );
    assert!(run.success(), "{run}");
    assert_eq!(run.stdout(), "hello over TLSv1.3\n");
}

/// gnutls-cli (another TLS library than the daemon's and openssl's): an
/// echo, byte for byte.
#[test]
fn gnutls_cli_echo() {
    let pki = Pki::new();
    let daemon = tls_daemon(&pki, &["echo"], "", &[]);
    let mut child = Command::new("gnutls-cli")
        .args(["--x509cafile"])
        .arg(pki.ca())
        .args([
            "--port",
            &daemon.port(0).to_string(),
            "--logfile=/dev/null",
            "localhost",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("gnutls-cli (Debian package gnutls-bin)");
    let line = b"the quick brown fox\n";
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(line)
        .expect("write");
    let mut out = Vec::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut out)
        .expect("read");
    let _ = child.wait();
    assert!(out.ends_with(line), "{:?}", String::from_utf8_lossy(&out));
}

/// 100 MiB through one TLS session and back, every byte checked (socat as
/// the client: it half-closes at the end of its input and reads on).
#[test]
fn a_100_mib_transfer_is_byte_exact() {
    let pki = Pki::new();
    let daemon = tls_daemon(&pki, &["echo"], "", &[]);
    let input = pki.path("input.bin");
    let output = pki.path("output.bin");
    let mut data = Vec::with_capacity(100 << 20);
    let mut x: u32 = 12345;
    while data.len() < 100 << 20 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        data.extend_from_slice(&x.to_le_bytes());
    }
    fs::write(&input, &data).expect("write the input");
    let run = run_command(
        Command::new("sh").arg("-c").arg(format!(
            "socat -t 30 -T 60 -b 65536 - OPENSSL:127.0.0.1:{},cafile={},commonname=localhost < {} > {}",
            daemon.port(0),
            pki.ca().display(),
            input.display(),
            output.display()
        )),
        Duration::from_secs(120),
    );
    assert!(run.success(), "{run}");
    let back = fs::read(&output).expect("read the output");
    assert_eq!(back.len(), data.len(), "bytes back");
    assert!(back == data, "the echo differs");
}

/// A client that stops in the middle of its handshake is dropped at
/// `tls_timeout`, and a plaintext client on the TLS port at once, each
/// logged with the reason; neither starts a program nor slows another
/// session.
#[test]
fn stalled_and_plaintext_clients_are_dropped_alone() {
    let pki = Pki::new();
    let daemon = tls_daemon(&pki, &["echo"], "", &["tls_timeout = 2"]);
    let port = daemon.port(0);
    // A ClientHello's first bytes, and then nothing.
    let mut stalled = connect(port);
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .expect("send");
    let mut plain = connect(port);
    plain.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("send");
    let mut buf = [0; 64];
    let n = plain.read(&mut buf).unwrap_or(0);
    assert!(
        !String::from_utf8_lossy(&buf[..n]).contains("HTTP"),
        "a plaintext answer"
    );
    daemon.wait_for("the plaintext client's failure", WAIT, |l| {
        l.contains("TLS handshake failed") && !l.contains("within")
    });
    // Meanwhile a real client is served at once.
    let began = Instant::now();
    let echoed = tls_session(connect(port), client_config(&pki.ca(), &[]), b"ping\n");
    assert_eq!(echoed, b"ping\n");
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "{:?}",
        began.elapsed()
    );
    let line = daemon.wait_for("the stalled client's failure", WAIT, |l| {
        l.contains("TLS handshake failed") && l.contains("no TLS handshake within 2s")
    });
    assert!(line.contains("peer=127.0.0.1:"), "{line}");
    let n = stalled.read(&mut buf).unwrap_or(0);
    assert!(n == 0 || buf[0] == 0x15, "the stalled client got data");
    assert_eq!(daemon.count(|l| l.contains("session start")), 1);
}

/// The subject CN of the certificate the daemon presents now.
fn served_cn(port: u16) -> String {
    // Without -ign_eof: at the end of its input s_client closes, and the
    // echo program with it.
    let run = run_command(
        Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null()),
        WAIT,
    );
    let out = run.text();
    out.lines()
        .find_map(|l| l.strip_prefix("subject=CN = "))
        .map(|rest| rest.split(',').next().unwrap_or_default().to_owned())
        .unwrap_or_else(|| panic!("no subject in {out}"))
}

/// Issue 19, item 5: a reload reads the files again: new connections get
/// the new certificate, a session already running keeps its own; a reload
/// whose key is missing fails and the old certificate keeps serving.
#[test]
fn a_reload_takes_a_new_certificate_for_new_connections() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", "one", &["localhost"], false);
    let template = toml_service(
        "tls",
        "{port0}",
        &child_argv(&["echo"]),
        &[&tls_line(&cert, &key, "")],
    );
    let mut daemon = Daemon::builder().toml(&template).start();
    let port = daemon.port(0);
    assert_eq!(served_cn(port), "one");

    // A session open across the reload.
    let tcp = connect(port);
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(client_config(&pki.ca(), &[]), name).expect("client");
    let mut open = rustls::StreamOwned::new(conn, tcp);
    open.write_all(b"before\n").expect("write");
    let mut buf = [0; 7];
    open.read_exact(&mut buf).expect("echo before");

    pki.issue("server", "two", &["localhost"], false);
    let reload = daemon.reload(&template);
    assert!(reload.contains("changed=tls"), "{reload}");
    assert_eq!(served_cn(port), "two");
    open.write_all(b"during\n")
        .expect("the open session goes on");
    open.read_exact(&mut buf).expect("echo after the reload");
    assert_eq!(&buf, b"during\n");

    fs::remove_file(&key).expect("remove the key");
    let failed = daemon.reload(&template);
    assert!(failed.contains("reload failed"), "{failed}");
    assert!(
        daemon
            .stderr_text()
            .contains(&format!("cannot read key {}", key.display()))
    );
    assert_eq!(served_cn(port), "two");
}

/// Issue 19, item 5: a missing file, a key that is not the certificate's,
/// and a key others can read, each at the `tls` value's line.
#[test]
fn check_reports_bad_tls_files_at_their_line() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", "localhost", &["localhost"], false);
    let (_, other_key) = pki.issue("other", "other", &["other"], false);
    let argv = child_argv(&["echo"]);
    let check = |line: &str| {
        let text = toml_service("tls", "7443", &argv, &["# a comment", line]);
        crate::toml_config::check_diagnostics(&text)
    };
    let (d, code) = check(&tls_line(&cert, &pki.path("none.key"), ""));
    assert_eq!(code, Some(1));
    assert!(d[0].starts_with("6:7: error: cannot read key "), "{d:?}");
    let (d, code) = check(&tls_line(&cert, &other_key, ""));
    assert_eq!(code, Some(1));
    assert!(
        d[0].starts_with("6:7: error: the key ")
            && d[0].contains("does not go with the certificate"),
        "{d:?}"
    );
    let (d, code) = check(&tls_line(&key, &key, ""));
    assert_eq!(code, Some(1));
    assert!(d[0].contains("holds no certificate"), "{d:?}");
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let (d, code) = check(&tls_line(&cert, &key, ""));
    assert_eq!(code, Some(0), "{d:?}");
    assert!(
        d[0].starts_with("6:7: warning: the key ") && d[0].contains("mode 0644"),
        "{d:?}"
    );
}
