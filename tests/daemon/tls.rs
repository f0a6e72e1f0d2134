//! TLS termination (issue 19), on Linux and Windows alike: certificates
//! the test makes itself, a TLS client in the test (rustls), the program's
//! plaintext and its `SSL_*` variables. The real clients (openssl
//! s_client, curl, gnutls-cli, socat) are in tls_linux.rs.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

use crate::common::{Daemon, WAIT, child_argv, connect, daemon_path, env_value, toml_service};

/// A CA and the certificates it signs, as PEM files in a directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "wininetd test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("a key");
        let ca = CertifiedIssuer::self_signed(params, key).expect("the CA");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write ca.pem");
        Self { dir, ca }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CA's certificate file.
    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// Writes `NAME.pem` and `NAME.key`: a certificate for `names` (DNS
    /// names or IP addresses) with common name `cn`, signed by the CA;
    /// expired when `expired`.
    pub fn issue(&self, name: &str, cn: &str, names: &[&str], expired: bool) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "wininetd test");
        if expired {
            params.not_before = rcgen::date_time_ymd(2001, 1, 1);
            params.not_after = rcgen::date_time_ymd(2002, 1, 1);
        }
        let key = KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        let (cert_path, key_path) = (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).expect("write the certificate");
        std::fs::write(&key_path, key.serialize_pem()).expect("write the key");
        private(&key_path);
        (cert_path, key_path)
    }
}

/// Makes a key file its owner's alone, as a key must be (else `--check`
/// warns).
fn private(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// A path for a TOML string.
pub fn toml_path(path: &Path) -> String {
    format!(
        "{:?}",
        daemon_path(path).display().to_string().replace('\\', "/")
    )
}

/// The `tls = { ... }` line for `cert` and `key`, with `more` fields.
pub fn tls_line(cert: &Path, key: &Path, more: &str) -> String {
    format!(
        "tls = {{ cert = {}, key = {}{more} }}",
        toml_path(cert),
        toml_path(key)
    )
}

/// A rustls client that trusts `ca`.
pub fn client_config(ca: &Path, alpn: &[&str]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).expect("read the CA");
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots.add(cert.expect("a certificate")).expect("add the CA");
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// Runs a TLS session over `tcp` (after whatever was sent on it already):
/// sends `input`, then close_notify, and returns all the program said.
pub fn tls_session(tcp: TcpStream, config: Arc<rustls::ClientConfig>, input: &[u8]) -> Vec<u8> {
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("a name");
    let connection = rustls::ClientConnection::new(config, name).expect("a client");
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).expect("the handshake");
    }
    tls.write_all(input).expect("send over TLS");
    tls.conn.send_close_notify();
    tls.flush().expect("flush");
    let _ = tls.sock.shutdown(Shutdown::Write);
    let mut output = Vec::new();
    match tls.read_to_end(&mut output) {
        Ok(_) => {}
        // A peer that closes without close_notify: what came is what counts.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => panic!(
            "TLS read: {e}; so far {:?}",
            String::from_utf8_lossy(&output)
        ),
    }
    output
}

const ENV: &[&str] = &[
    "env",
    "CLIENT_IP",
    "SSL_PROTOCOL",
    "SSL_CIPHER",
    "SSL_TLS_SNI",
    "SSL_ALPN",
    "SSL_CLIENT_S_DN",
];

#[test]
fn a_tls_session_reaches_the_program_in_plaintext() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", "localhost", &["localhost", "127.0.0.1"], false);
    let daemon = Daemon::builder()
        .toml(&toml_service(
            "tls",
            "{port0}",
            &child_argv(ENV),
            &[&tls_line(
                &cert,
                &key,
                ", alpn = [\"x-test\", \"http/1.1\"]",
            )],
        ))
        .start();
    let output = tls_session(
        connect(daemon.port(0)),
        client_config(&pki.ca(), &["http/1.1"]),
        b"",
    );
    let output = String::from_utf8_lossy(&output);
    assert_eq!(
        env_value(&output, "CLIENT_IP"),
        Some("127.0.0.1"),
        "{output}"
    );
    assert_eq!(
        env_value(&output, "SSL_PROTOCOL"),
        Some("TLSv1.3"),
        "{output}"
    );
    assert!(
        env_value(&output, "SSL_CIPHER").is_some_and(|c| c.starts_with("TLS_")),
        "{output}"
    );
    assert_eq!(
        env_value(&output, "SSL_TLS_SNI"),
        Some("localhost"),
        "{output}"
    );
    assert_eq!(env_value(&output, "SSL_ALPN"), Some("http/1.1"), "{output}");
    assert!(output.contains("SSL_CLIENT_S_DN unset"), "{output}");
}

/// Issue 19, item 6: a PROXY header first, then the handshake; and the
/// bytes of a session both ways, whole, through the TLS relay.
#[test]
fn proxy_header_then_tls() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", "localhost", &["localhost"], false);
    let daemon = Daemon::builder()
        .toml(&toml_service(
            "tls",
            "{port0}",
            &child_argv(&["echo"]),
            &[
                &tls_line(&cert, &key, ""),
                "proxy_protocol = \"v1\"",
                "trusted_proxies = [\"127.0.0.1\"]",
            ],
        ))
        .start();
    let mut tcp = connect(daemon.port(0));
    tcp.write_all(b"PROXY TCP4 192.0.2.44 198.51.100.1 5555 443\r\n")
        .expect("send the header");
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 241) as u8).collect();
    let echoed = tls_session(tcp, client_config(&pki.ca(), &[]), &data);
    assert_eq!(echoed.len(), data.len());
    assert!(echoed == data, "the echo differs");
    let start = daemon.wait_for_line("session start", WAIT);
    assert!(start.contains("peer=192.0.2.44:5555"), "{start}");
}
