//! PROXY protocol v2 (via the `ppp` crate): detect and parse a header in front
//! of a client connection, and build one for backends that want it.

use std::net::{IpAddr, SocketAddr};

use ppp::v2::{self, Addresses, Builder, Command, Protocol, Version};

use crate::ProtocolError;

/// Bytes of the PROXY v2 signature: a connection whose first this many bytes
/// are not it carries no header.
pub const PROTOCOL_PREFIX_LEN: usize = v2::PROTOCOL_PREFIX.len();

/// What the first bytes of a connection say about a PROXY v2 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// The connection starts with something else (a Minecraft packet).
    Absent,
    /// A header of `len` bytes; `source` is the original client, if it named one
    /// (a LOCAL command, e.g. a health check, names none).
    Present { source: Option<SocketAddr>, len: usize },
}

/// Sans-IO: `Ok(None)` while the bytes could still become a header.
pub fn decode_inbound(buf: &[u8]) -> Result<Option<Inbound>, ProtocolError> {
    let prefix = v2::PROTOCOL_PREFIX;
    let n = buf.len().min(prefix.len());
    if buf[..n] != prefix[..n] {
        return Ok(Some(Inbound::Absent));
    }
    match v2::Header::try_from(buf) {
        Ok(h) => {
            let source = match (h.command, h.addresses) {
                (Command::Proxy, Addresses::IPv4(a)) => Some(SocketAddr::from((a.source_address, a.source_port))),
                (Command::Proxy, Addresses::IPv6(a)) => Some(SocketAddr::from((a.source_address, a.source_port))),
                _ => None,
            };
            Ok(Some(Inbound::Present { source, len: h.len() }))
        }
        Err(v2::ParseError::Incomplete(_)) | Err(v2::ParseError::Partial(..)) => Ok(None),
        Err(_) => Err(ProtocolError::Invalid("PROXY protocol v2 header")),
    }
}

fn to_v6(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
        v6 => v6,
    }
}

/// The header to send a backend: the player's address and the proxy's local one.
pub fn encode_header(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (src, dst) = if client.is_ipv4() == local.is_ipv4() {
        (client, local)
    } else {
        (SocketAddr::new(to_v6(client.ip()), client.port()), SocketAddr::new(to_v6(local.ip()), local.port()))
    };
    Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, (src, dst))
        .build()
        .expect("writing a PROXY header into a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_prefixes() {
        let client: SocketAddr = "203.0.113.7:51000".parse().unwrap();
        let header = encode_header(client, "127.0.0.1:25565".parse().unwrap());
        for cut in 0..header.len() {
            assert_eq!(decode_inbound(&header[..cut]), Ok(None), "cut {cut}");
        }
        let mut with_payload = header.clone();
        with_payload.extend_from_slice(&[0x10, 0x00]);
        assert_eq!(
            decode_inbound(&with_payload),
            Ok(Some(Inbound::Present { source: Some(client), len: header.len() }))
        );
        let v6 = encode_header("[2001:db8::1]:5".parse().unwrap(), "127.0.0.1:1".parse().unwrap());
        assert!(matches!(decode_inbound(&v6), Ok(Some(Inbound::Present { source: Some(_), .. }))));
    }

    #[test]
    fn minecraft_bytes_are_not_a_header() {
        // A handshake of length 13 starts with 0x0d like the PROXY prefix.
        assert_eq!(decode_inbound(&[0x0d, 0x00, 0x2f]), Ok(Some(Inbound::Absent)));
        assert_eq!(decode_inbound(&[0xfe, 0x01]), Ok(Some(Inbound::Absent)));
    }
}
