//! TLS termination: a service's certificate and key, loaded when the config
//! is (and at every reload), and the handshake of each connection, done by
//! the daemon with rustls (the `ring` provider, which builds for every
//! target CI builds) on the connection's own task, under `tls_timeout`.
//!
//! A handshake gives the connection as a TLS stream, which the session's
//! relay stage then carries to the program's pipes in plaintext
//! ([`crate::relay`]), and the variables mod_ssl gives a CGI program
//! (`SSL_PROTOCOL`, `SSL_CIPHER`, …). Kernel TLS offload would let the
//! relay splice, but the kernels CI runs on have no `tls` ULP to test it
//! with: the bytes are moved in user space.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use socket2::Socket;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::platform;

/// The oldest protocol a service takes (`min_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinVersion {
    /// TLS 1.2 and 1.3 (the default).
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// A service's TLS as the config file says it: `tls = { … }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    /// PEM: the certificate, then its chain.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM: the CAs a client certificate must be signed by; with it, every
    /// client must present one.
    pub client_ca: Option<PathBuf>,
    pub min_version: MinVersion,
    /// The protocols offered by ALPN, in order of preference.
    pub alpn: Vec<String>,
}

/// A service's TLS, loaded: what new connections are served with. A reload
/// loads the files again; a session keeps the one it started with.
#[derive(Clone)]
pub struct Server {
    pub files: Files,
    /// How long a client has to finish its handshake.
    pub timeout: Duration,
    acceptor: TlsAcceptor,
    /// A digest of the files' contents: a reload that finds other bytes in
    /// them makes the service a changed one.
    digest: Vec<u8>,
}

impl PartialEq for Server {
    fn eq(&self, other: &Self) -> bool {
        self.files == other.files && self.timeout == other.timeout && self.digest == other.digest
    }
}

impl Eq for Server {}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("files", &self.files)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What loading a service's TLS files found wrong.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {what} {}: {source}", .path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{what} {} holds no {expected} in PEM form", .path.display())]
    Empty {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("{what} {}: {message}", .path.display())]
    Invalid {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("the key {} does not go with the certificate {}: {message}", .key.display(), .cert.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
}

impl Server {
    /// Reads and checks `files`; warnings (a key others can read) go to
    /// `warn`.
    pub fn load(
        files: &Files,
        timeout: Duration,
        warn: &mut dyn FnMut(String),
    ) -> Result<Self, LoadError> {
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        let cert_pem = read("certificate", &files.cert)?;
        let key_pem = read("key", &files.key)?;
        digest.update(&cert_pem);
        digest.update(&key_pem);
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| invalid("certificate", &files.cert, &e))?;
        if chain.is_empty() {
            return Err(LoadError::Empty {
                what: "the certificate",
                path: files.cert.clone(),
                expected: "certificate",
            });
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => LoadError::Empty {
                what: "the key",
                path: files.key.clone(),
                expected: "private key",
            },
            e => invalid("key", &files.key, &e),
        })?;
        if let Some(mode) = platform::readable_by_others(&files.key) {
            warn(format!(
                "the key {} can be read by others than its owner (mode {mode:04o}): make it 0600",
                files.key.display()
            ));
        }
        // ring: the provider that builds for x86_64-pc-windows-gnu with
        // mingw alone (aws-lc-rs needs CMake and NASM there). It has no
        // post-quantum key exchange, hence the deprecation.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = match files.min_version {
            MinVersion::Tls12 => rustls::ALL_VERSIONS,
            MinVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)
            .map_err(|e| invalid("certificate", &files.cert, &e))?;
        let builder = match &files.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let pem = read("client CA file", path)?;
                digest.update(&pem);
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| invalid("client CA file", path, &e))?;
                    roots
                        .add(cert)
                        .map_err(|e| invalid("client CA file", path, &e))?;
                }
                if roots.is_empty() {
                    return Err(LoadError::Empty {
                        what: "the client CA file",
                        path: path.clone(),
                        expected: "certificate",
                    });
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| invalid("client CA file", path, &e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| LoadError::Mismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
                message: e.to_string(),
            })?;
        config.alpn_protocols = files.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        for protocol in &files.alpn {
            digest.update(protocol.as_bytes());
        }
        Ok(Self {
            files: files.clone(),
            timeout,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            digest: digest.finish().as_ref().to_vec(),
        })
    }

    /// Does the handshake on `socket`, within the service's `tls_timeout`.
    pub async fn accept(&self, socket: Socket) -> Result<Accepted, HandshakeError> {
        socket.set_nonblocking(true)?;
        let stream = TcpStream::from_std(socket.into())?;
        let stream = match tokio::time::timeout(self.timeout, self.acceptor.accept(stream)).await {
            Ok(stream) => stream?,
            Err(_) => return Err(HandshakeError::Timeout(self.timeout)),
        };
        let vars = variables(stream.get_ref().1);
        Ok(Accepted { stream, vars })
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, LoadError> {
    fs::read(path).map_err(|source| LoadError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn invalid(what: &'static str, path: &Path, e: &dyn fmt::Display) -> LoadError {
    LoadError::Invalid {
        what,
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// A connection whose handshake is done.
#[derive(Debug)]
pub struct Accepted {
    pub stream: TlsStream<TcpStream>,
    /// The `SSL_*` variables of its program.
    pub vars: Vec<(&'static str, String)>,
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("no TLS handshake within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Failed(#[from] io::Error),
}

/// The variables a TLS session's program gets, with mod_ssl's names; never
/// taken from the daemon's environment.
pub const VARIABLES: [&str; 6] = [
    "SSL_PROTOCOL",
    "SSL_CIPHER",
    "SSL_TLS_SNI",
    "SSL_ALPN",
    "SSL_CLIENT_S_DN",
    "SSL_CLIENT_CERT_SHA256",
];

/// The `SSL_*` variables of a finished handshake.
fn variables(connection: &rustls::ServerConnection) -> Vec<(&'static str, String)> {
    let mut vars = Vec::with_capacity(VARIABLES.len());
    if let Some(version) = connection.protocol_version() {
        let name = match version {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_owned(),
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_owned(),
            other => format!("{other:?}"),
        };
        vars.push((VARIABLES[0], name));
    }
    if let Some(suite) = connection.negotiated_cipher_suite() {
        vars.push((VARIABLES[1], cipher_name(suite.suite())));
    }
    if let Some(sni) = connection.server_name() {
        vars.push((VARIABLES[2], printable(sni.as_bytes())));
    }
    if let Some(alpn) = connection.alpn_protocol() {
        vars.push((VARIABLES[3], printable(alpn)));
    }
    if let Some(cert) = connection.peer_certificates().and_then(|c| c.first()) {
        if let Some(dn) = subject_dn(cert) {
            vars.push((VARIABLES[4], dn));
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
        vars.push((VARIABLES[5], hex(digest.as_ref())));
    }
    vars
}

/// A cipher suite's IANA name (`TLS_AES_128_GCM_SHA256`,
/// `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`).
fn cipher_name(suite: rustls::CipherSuite) -> String {
    let name = suite
        .as_str()
        .map_or_else(|| format!("{suite:?}"), str::to_owned);
    match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name,
    }
}

/// The subject of a certificate as RFC 2253 writes a DN
/// (`CN=client,O=Example`), each value made printable.
fn subject_dn(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let mut parts = Vec::new();
    let rdns: Vec<_> = subject.iter().collect();
    for rdn in rdns.into_iter().rev() {
        for attribute in rdn.iter() {
            let oid = attribute.attr_type();
            let name = x509_parser::objects::oid2abbrev(oid, x509_parser::objects::oid_registry())
                .map_or_else(|_| oid.to_id_string(), str::to_owned);
            let value = attribute
                .as_str()
                .map_or_else(|_| hex(attribute.as_slice()), |v| printable(v.as_bytes()));
            parts.push(format!("{name}={}", escape_dn(&value)));
        }
    }
    Some(parts.join(","))
}

/// RFC 4514's escapes of a DN value.
fn escape_dn(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && matches!(c, '#' | ' '))
            || (i + 1 == value.chars().count() && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Text from a peer for an environment variable: as it is when printable
/// UTF-8, else in hex; never a NUL or a control character.
fn printable(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(text) if !text.chars().any(char::is_control) => text.to_owned(),
        _ => hex(value),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_names_are_ianas() {
        assert_eq!(
            cipher_name(rustls::CipherSuite::TLS13_AES_256_GCM_SHA384),
            "TLS_AES_256_GCM_SHA384"
        );
        assert_eq!(
            cipher_name(rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
        );
    }

    #[test]
    fn dn_values_are_escaped_and_printable() {
        assert_eq!(escape_dn("a,b"), "a\\,b");
        assert_eq!(escape_dn(" x "), "\\ x\\ ");
        assert_eq!(printable(b"ok"), "ok");
        assert_eq!(printable(b"a\nb"), "610a62");
    }
}
