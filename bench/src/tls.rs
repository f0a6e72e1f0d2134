//! The client side of the TLS figures, and the PROXY protocol v2 header
//! the PROXY figures send.
//!
//! Every session is a full TLS 1.3 handshake: resumption is off (no
//! session is ever stored, no ticket is ever offered), so each one costs
//! the server a key exchange (X25519, the client's first key share) and a
//! signature with the certificate's key. The client trusts exactly one
//! certificate, the one `run.sh` made and every server is given: the
//! server's must be that one, byte for byte (a pin; no chain is built),
//! and its handshake signature is checked with that certificate's key, as
//! any client checks it. The client offers X25519 first (its key share),
//! as OpenSSL, curl and browsers do.

use std::error::Error;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// What `--tls-cert` and `--tls-name` give a generator.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// Speak TLS 1.3 to the service, trusting exactly this certificate
    /// (PEM; the first one in the file): full handshakes, no resumption.
    #[arg(long)]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The server name sent (SNI).
    #[arg(long, default_value = "localhost", requires = "tls_cert")]
    pub tls_name: String,
}

/// A TLS client: its config and the name it asks for.
#[derive(Clone)]
pub struct Client {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// The client `args` ask for, or `None` without `--tls-cert`.
    pub fn from_args(args: &TlsArgs) -> Result<Option<Self>, Box<dyn Error>> {
        let Some(path) = &args.tls_cert else {
            return Ok(None);
        };
        let name = ServerName::try_from(args.tls_name.clone())
            .map_err(|e| format!("--tls-name {:?}: {e}", args.tls_name))?;
        Ok(Some(Self {
            connector: TlsConnector::from(Arc::new(config(path)?)),
            name,
        }))
    }

    /// The handshake on a connected stream. TCP_NODELAY first, as curl and
    /// browsers set it: a handshake's flights are small writes.
    pub async fn connect(&self, stream: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        stream.set_nodelay(true)?;
        self.connector.connect(self.name.clone(), stream).await
    }
}

/// What a session's handshake agreed on, for the output line.
pub fn agreed(stream: &TlsStream<TcpStream>) -> Agreed {
    let conn = stream.get_ref().1;
    Agreed {
        version: conn
            .protocol_version()
            .map_or_else(|| "none".to_owned(), |v| format!("{v:?}")),
        cipher: conn
            .negotiated_cipher_suite()
            .map_or_else(|| "none".to_owned(), |s| format!("{:?}", s.suite())),
        kx: conn
            .negotiated_key_exchange_group()
            .map_or_else(|| "none".to_owned(), |g| format!("{:?}", g.name())),
        full: matches!(
            conn.handshake_kind(),
            Some(rustls::HandshakeKind::Full | rustls::HandshakeKind::FullWithHelloRetryRequest)
        ),
        retried: conn.handshake_kind() == Some(rustls::HandshakeKind::FullWithHelloRetryRequest),
    }
}

/// A handshake's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreed {
    pub version: String,
    pub cipher: String,
    pub kx: String,
    /// A full handshake (not resumed).
    pub full: bool,
    /// The server asked for another key share (a HelloRetryRequest: one
    /// more round trip), not taking the client's first.
    pub retried: bool,
}

/// The key exchange groups offered, in order: the client sends a key share
/// for the first.
const KX_GROUPS: [&dyn rustls::crypto::SupportedKxGroup; 3] = [
    rustls::crypto::ring::kx_group::X25519,
    rustls::crypto::ring::kx_group::SECP256R1,
    rustls::crypto::ring::kx_group::SECP384R1,
];

/// The client config: TLS 1.3 only, ring, no resumption, the pinned
/// certificate.
fn config(cert_path: &Path) -> Result<ClientConfig, Box<dyn Error>> {
    let pem = std::fs::read(cert_path).map_err(|e| format!("{}: {e}", cert_path.display()))?;
    let pinned = CertificateDer::pem_slice_iter(&pem)
        .next()
        .ok_or_else(|| format!("{}: no certificate", cert_path.display()))?
        .map_err(|e| format!("{}: {e}", cert_path.display()))?
        .into_owned();
    // ring, as the daemon has it; it has no post-quantum key exchange,
    // hence the deprecation.
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    // X25519 first, as OpenSSL, curl and browsers offer it (their key
    // share): this ring provider lists secp384r1 first, whose share costs
    // both sides far more.
    provider.kx_groups = KX_GROUPS.to_vec();
    let provider = Arc::new(provider);
    let verifier = Arc::new(Pinned {
        cert: pinned,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    Ok(config)
}

/// Trusts one certificate: the server's must be it, and sign the handshake
/// with its key.
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The signature that starts a PROXY protocol v2 header.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// A PROXY protocol v2 header for a TCP connection over IPv4 from `source`
/// to `destination` (28 bytes: the signature; version 2, command PROXY;
/// TCP over IPv4; 12 bytes of addresses: source and destination address,
/// source and destination port, in network byte order). `None` for an
/// IPv6 address.
pub fn proxy_v2_header(source: SocketAddr, destination: SocketAddr) -> Option<[u8; 28]> {
    let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (source, destination) else {
        return None;
    };
    let mut header = [0u8; 28];
    header[..12].copy_from_slice(&V2_SIGNATURE);
    header[12] = 0x21; // version 2, PROXY
    header[13] = 0x11; // AF_INET, STREAM
    header[14..16].copy_from_slice(&12u16.to_be_bytes());
    header[16..20].copy_from_slice(&src.ip().octets());
    header[20..24].copy_from_slice(&dst.ip().octets());
    header[24..26].copy_from_slice(&src.port().to_be_bytes());
    header[26..28].copy_from_slice(&dst.port().to_be_bytes());
    Some(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_v2_header_is_haproxys_layout() {
        let header = proxy_v2_header(
            "127.0.0.1:40000".parse().unwrap(),
            "127.0.0.2:21500".parse().unwrap(),
        )
        .unwrap();
        let mut want = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        want.extend([0x21, 0x11, 0x00, 0x0c]);
        want.extend([127, 0, 0, 1, 127, 0, 0, 2]);
        want.extend([0x9c, 0x40, 0x53, 0xfc]);
        assert_eq!(header[..], want[..]);
        assert_eq!(
            proxy_v2_header("[::1]:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap()),
            None
        );
    }

    #[test]
    fn the_pin_takes_its_certificate_only() {
        #[allow(deprecated)]
        let provider = rustls::crypto::ring::default_provider();
        let pinned = Pinned {
            cert: CertificateDer::from(vec![1, 2, 3]),
            algorithms: provider.signature_verification_algorithms,
        };
        let name = ServerName::try_from("localhost").unwrap();
        let check = |der: Vec<u8>| {
            pinned.verify_server_cert(&CertificateDer::from(der), &[], &name, &[], UnixTime::now())
        };
        assert!(check(vec![1, 2, 3]).is_ok());
        assert!(check(vec![1, 2, 4]).is_err());
        assert!(check(vec![]).is_err());
    }
}
