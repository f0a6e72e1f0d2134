//! The PROXY protocol (HAProxy's, versions 1 and 2): a connection that
//! comes through a load balancer starts with a header naming the client it
//! carries. This stage, between accept and admission, reads exactly that
//! header off the connection, so that the program never sees it and loses
//! no byte after it, and tells the later stages who the client is.
//!
//! The header is peeked at first, to learn its length without taking a byte
//! of what follows: version 1 is one line of at most 107 bytes ending in CR
//! LF; version 2 has a 16-byte head that gives the length of the rest. Only
//! then are exactly its bytes read. Parsing is the `ppp` crate's. The whole
//! read is bounded by the service's `proxy_timeout`, and runs on the
//! connection's own task: a proxy that stalls holds up no one else.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use ppp::v2;
use socket2::Socket;
use tokio::io::AsyncReadExt;

use crate::config::ProxyVersions;

/// The signature that starts a version 2 header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// What starts a version 1 header.
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// The longest version 1 header, CR LF included (the spec's 107 bytes).
const V1_MAX: usize = 107;
/// The longest version 2 header taken: its 16-byte head and 2 KiB of
/// addresses and TLVs. The spec allows 64 KiB; proxies send a few hundred
/// bytes at most, and every byte is held on this connection's task.
const V2_MAX: usize = 16 + 2048;
/// How long to wait before peeking again at a header that has not all
/// arrived (rare: a proxy sends it in one segment).
const PARTIAL_PAUSE: Duration = Duration::from_millis(5);

/// What a valid header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxied {
    /// The client and the address it connected to, or `None` for a
    /// header that carries none (v2 `LOCAL`, a health check; v1 `UNKNOWN`;
    /// addresses of another family): the connection's own are used then,
    /// as the spec says.
    pub addresses: Option<(SocketAddr, SocketAddr)>,
    /// v2 `PP2_TYPE_AUTHORITY`: the host name the client asked for (SNI).
    pub authority: Option<String>,
    /// v2 `PP2_TYPE_UNIQUE_ID`: the proxy's ID of the connection.
    pub unique_id: Option<String>,
}

/// Why a connection's header was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no PROXY header within {0:?}")]
    Timeout(Duration),
    #[error("the connection closed before its PROXY header ended")]
    Closed,
    #[error("the connection does not start with a PROXY header")]
    Missing,
    #[error("a PROXY protocol {found} header, but the service takes {wanted}")]
    Version {
        found: &'static str,
        wanted: &'static str,
    },
    #[error("the PROXY header is longer than {0} bytes")]
    Oversized(usize),
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
    #[error("reading the PROXY header: {0}")]
    Io(#[from] io::Error),
}

/// Reads the PROXY header `versions` allows off `socket`, within
/// `timeout`; gives the socket back as it was found (blocking), at the
/// first byte after the header. A connection whose header is not taken is
/// closed: it is dropped with the error.
pub async fn read_header(
    socket: Socket,
    versions: ProxyVersions,
    timeout: Duration,
) -> Result<(Socket, Proxied), ProxyError> {
    let socket = std::net::TcpStream::from(socket);
    socket.set_nonblocking(true)?;
    // Most often the whole header is there already (a proxy sends it with
    // its connect): read it at once, without registering the connection
    // with the runtime.
    if let Some(proxied) = at_once(&socket, versions)? {
        socket.set_nonblocking(false)?;
        return Ok((Socket::from(socket), proxied));
    }
    let mut stream = tokio::net::TcpStream::from_std(socket)?;
    let proxied = match tokio::time::timeout(timeout, read(&mut stream, versions)).await {
        Ok(result) => result?,
        Err(_) => return Err(ProxyError::Timeout(timeout)),
    };
    let socket = Socket::from(stream.into_std()?);
    socket.set_nonblocking(false)?;
    Ok((socket, proxied))
}

/// The header, if all of it has arrived; `None` if not yet (the caller
/// waits for it).
fn at_once(
    socket: &std::net::TcpStream,
    versions: ProxyVersions,
) -> Result<Option<Proxied>, ProxyError> {
    let mut buf = [0; V2_MAX];
    let peeked = match socket.peek(&mut buf) {
        Ok(0) => return Err(ProxyError::Closed),
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    match header_length(&buf[..peeked.min(V1_MAX)], versions)? {
        Some(len) if len <= peeked => {
            // Peeked whole: the read takes it at once.
            std::io::Read::read_exact(&mut &*socket, &mut buf[..len])?;
            parse(&buf[..len]).map(Some)
        }
        _ => Ok(None),
    }
}

/// Peeks until the header's length is known, then reads exactly it.
async fn read(
    stream: &mut tokio::net::TcpStream,
    versions: ProxyVersions,
) -> Result<Proxied, ProxyError> {
    let mut buf = vec![0; V2_MAX];
    loop {
        let peeked = match stream.peek(&mut buf[..V1_MAX]).await? {
            0 => return Err(ProxyError::Closed),
            n => n,
        };
        match header_length(&buf[..peeked], versions)? {
            Some(len) => {
                stream
                    .read_exact(&mut buf[..len])
                    .await
                    .map_err(|e| match e.kind() {
                        io::ErrorKind::UnexpectedEof => ProxyError::Closed,
                        _ => e.into(),
                    })?;
                return parse(&buf[..len]);
            }
            None => tokio::time::sleep(PARTIAL_PAUSE).await,
        }
    }
}

/// The whole header's length, from its first bytes; `None` while they do
/// not tell it yet.
pub fn header_length(start: &[u8], versions: ProxyVersions) -> Result<Option<usize>, ProxyError> {
    let begins = |of: &[u8]| {
        let n = start.len().min(of.len());
        start[..n] == of[..n]
    };
    let wanted = match versions {
        ProxyVersions::V1 => "v1",
        ProxyVersions::V2 => "v2",
        ProxyVersions::Any => "v1 or v2",
    };
    if begins(V2_SIGNATURE) {
        if versions == ProxyVersions::V1 && start.len() >= V2_SIGNATURE.len() {
            return Err(ProxyError::Version {
                found: "v2",
                wanted,
            });
        }
        if start.len() < 16 {
            return Ok(None);
        }
        let len = 16 + usize::from(u16::from_be_bytes([start[14], start[15]]));
        if len > V2_MAX {
            return Err(ProxyError::Oversized(V2_MAX));
        }
        return Ok(Some(len));
    }
    if begins(V1_PREFIX) {
        if versions == ProxyVersions::V2 && start.len() >= V1_PREFIX.len() {
            return Err(ProxyError::Version {
                found: "v1",
                wanted,
            });
        }
        return match start.windows(2).position(|w| w == b"\r\n") {
            Some(end) => Ok(Some(end + 2)),
            None if start.len() >= V1_MAX => Err(ProxyError::Oversized(V1_MAX)),
            None => Ok(None),
        };
    }
    Err(ProxyError::Missing)
}

/// Parses a whole header, of either version.
pub fn parse(header: &[u8]) -> Result<Proxied, ProxyError> {
    let malformed = |e: &dyn std::fmt::Display| ProxyError::Malformed(e.to_string());
    if header.starts_with(V2_SIGNATURE) {
        let parsed = v2::Header::try_from(header).map_err(|e| malformed(&e))?;
        let addresses = match (parsed.command, parsed.addresses) {
            (v2::Command::Local, _) => None,
            (v2::Command::Proxy, v2::Addresses::IPv4(a)) => Some((
                SocketAddr::from((a.source_address, a.source_port)),
                SocketAddr::from((a.destination_address, a.destination_port)),
            )),
            (v2::Command::Proxy, v2::Addresses::IPv6(a)) => Some((
                SocketAddr::from((a.source_address, a.source_port)),
                SocketAddr::from((a.destination_address, a.destination_port)),
            )),
            (v2::Command::Proxy, v2::Addresses::Unspecified | v2::Addresses::Unix(_)) => None,
        };
        let mut proxied = Proxied {
            addresses,
            authority: None,
            unique_id: None,
        };
        for tlv in parsed.tlvs() {
            let tlv = tlv.map_err(|e| malformed(&e))?;
            if tlv.kind == v2::Type::Authority as u8 {
                proxied.authority = Some(printable(&tlv.value));
            } else if tlv.kind == v2::Type::UniqueId as u8 {
                proxied.unique_id = Some(printable(&tlv.value));
            }
        }
        return Ok(proxied);
    }
    let parsed = ppp::v1::Header::try_from(header).map_err(|e| malformed(&e))?;
    let addresses = match parsed.addresses {
        ppp::v1::Addresses::Tcp4(a) => Some((
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        )),
        ppp::v1::Addresses::Tcp6(a) => Some((
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        )),
        ppp::v1::Addresses::Unknown => None,
    };
    Ok(Proxied {
        addresses,
        authority: None,
        unique_id: None,
    })
}

/// A TLV's value for an environment variable: as it is when it is
/// printable UTF-8 (a host name, HAProxy's unique IDs), else in hex; never
/// a NUL or a control character.
fn printable(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(text) if !text.chars().any(char::is_control) => text.to_owned(),
        _ => value.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_header(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        let len = u16::try_from(addresses.len() + tlvs.len()).expect("short");
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(addresses);
        h.extend_from_slice(tlvs);
        h
    }

    fn ipv4_addresses() -> Vec<u8> {
        let mut a = vec![192, 0, 2, 7, 10, 0, 0, 1];
        a.extend_from_slice(&40000u16.to_be_bytes());
        a.extend_from_slice(&443u16.to_be_bytes());
        a
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        let p = parse(b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 443\r\n").expect("valid");
        assert_eq!(
            p.addresses,
            Some((
                "192.0.2.7:40000".parse().expect("addr"),
                "10.0.0.1:443".parse().expect("addr")
            ))
        );
        let p = parse(b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\n").expect("valid");
        assert_eq!(
            p.addresses.map(|(c, _)| c),
            Some("[2001:db8::7]:40000".parse().expect("addr"))
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").expect("valid").addresses, None);
        assert!(matches!(
            parse(b"PROXY TCP4 192.0.2.7 10.0.0.1 99999 443\r\n"),
            Err(ProxyError::Malformed(_))
        ));
    }

    #[test]
    fn v2_proxy_local_and_tlvs() {
        let mut tlvs = vec![0x02, 0, 11];
        tlvs.extend_from_slice(b"example.org");
        tlvs.extend_from_slice(&[0x05, 0, 3, b'a', 0, b'b']);
        let header = v2_header(1, 0x11, &ipv4_addresses(), &tlvs);
        let p = parse(&header).expect("valid");
        assert_eq!(
            p.addresses.map(|(c, d)| (c.to_string(), d.to_string())),
            Some(("192.0.2.7:40000".into(), "10.0.0.1:443".into()))
        );
        assert_eq!(p.authority.as_deref(), Some("example.org"));
        // A NUL is not printable: the ID goes in hex.
        assert_eq!(p.unique_id.as_deref(), Some("610062"));
        let local = v2_header(0, 0x00, &[], &[]);
        assert_eq!(parse(&local).expect("valid").addresses, None);
        // A TLV that runs past the end.
        let bad = v2_header(1, 0x11, &ipv4_addresses(), &[0x02, 0, 9, b'x']);
        assert!(matches!(parse(&bad), Err(ProxyError::Malformed(_))));
    }

    #[test]
    fn the_length_is_known_from_the_first_bytes() {
        let any = ProxyVersions::Any;
        assert_eq!(header_length(b"PROX", any).ok(), Some(None));
        assert_eq!(header_length(b"PROXY TCP4 1.2.3.4", any).ok(), Some(None));
        assert_eq!(
            header_length(b"PROXY UNKNOWN\r\nGET /", any).ok(),
            Some(Some(15))
        );
        let header = v2_header(1, 0x11, &ipv4_addresses(), &[]);
        assert_eq!(header_length(&header[..10], any).ok(), Some(None));
        assert_eq!(header_length(&header, any).ok(), Some(Some(header.len())));
        assert!(matches!(
            header_length(b"GET / HTTP/1.1\r\n", any),
            Err(ProxyError::Missing)
        ));
        assert!(matches!(
            header_length(&[b'P'; 107], any),
            Err(ProxyError::Missing)
        ));
        let long = [V1_PREFIX.as_slice(), &[b'1'; 120]].concat();
        assert!(matches!(
            header_length(&long, any),
            Err(ProxyError::Oversized(107))
        ));
        let mut huge = v2_header(1, 0x11, &ipv4_addresses(), &[]);
        huge[14..16].copy_from_slice(&4000u16.to_be_bytes());
        assert!(matches!(
            header_length(&huge, any),
            Err(ProxyError::Oversized(_))
        ));
        assert!(matches!(
            header_length(&header, ProxyVersions::V1),
            Err(ProxyError::Version { found: "v2", .. })
        ));
        assert!(matches!(
            header_length(b"PROXY UNKNOWN\r\n", ProxyVersions::V2),
            Err(ProxyError::Version { found: "v1", .. })
        ));
    }
}
