//! The first modern packet of every connection (id 0x00 in the handshaking state).

use super::{Decoded, ProtocolError, cursor::Cursor, frame::decode_frame};

/// A DNS name is at most 255 bytes; this bounds the part before any suffix.
pub const MAX_HOSTNAME_BYTES: usize = 255;
/// Room for the suffixes clients and TCPShield append (`\0FML3\0`,
/// `///1.2.3.4:5///timestamp///signature`): a base64 RSA-2048 signature alone
/// is 344 bytes.
pub const MAX_HOST_SUFFIX_BYTES: usize = 512;
/// A handshake is tiny; anything longer is not a Minecraft client.
pub const MAX_HANDSHAKE_FRAME: usize = 1 + 5 + 3 + MAX_HOSTNAME_BYTES + MAX_HOST_SUFFIX_BYTES + 2 + 5;

/// What the client wants after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NextState {
    Status,
    Login,
    /// 1.20.5+: a login that arrives through a server-issued transfer.
    Transfer,
}

impl NextState {
    pub fn as_str(self) -> &'static str {
        match self {
            NextState::Status => "status",
            NextState::Login => "login",
            NextState::Transfer => "transfer",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    pub protocol: i32,
    /// The host exactly as the client sent it (suffixes included).
    pub host: String,
    pub port: u16,
    pub next_state: NextState,
}

/// The hostname part of a handshake host: everything before a Forge marker
/// (`\0FML…`, `\0FORGE`: they all start with NUL) or a TCPShield `///` suffix.
pub fn hostname_part(host: &str) -> &str {
    let end = host.find('\0').unwrap_or(host.len());
    let host = &host[..end];
    let end = host.find("///").unwrap_or(host.len());
    &host[..end]
}

/// The hostname to route on: Forge markers and TCPShield suffixes cut off,
/// no trailing dot, lowercase. Borrows when nothing needs to change.
pub fn normalize_host(raw: &str) -> std::borrow::Cow<'_, str> {
    let host = hostname_part(raw).trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

/// Decodes a handshake frame at the start of `buf`.
pub fn decode_handshake(buf: &[u8]) -> Decoded<Handshake> {
    let Some((frame, used)) = decode_frame(buf, MAX_HANDSHAKE_FRAME)? else {
        return Ok(None);
    };
    if frame.id != 0x00 {
        return Err(ProtocolError::UnexpectedPacket { id: frame.id, expected: 0x00 });
    }
    let mut cur = Cursor::new(frame.body);
    let protocol = cur.varint("protocol version")?;
    let host = cur.string(MAX_HOSTNAME_BYTES + MAX_HOST_SUFFIX_BYTES, "server address")?;
    let name_len = hostname_part(host).len();
    if name_len > MAX_HOSTNAME_BYTES {
        return Err(ProtocolError::TooLong { field: "hostname", len: name_len, max: MAX_HOSTNAME_BYTES });
    }
    let port = cur.u16("server port")?;
    let next_state = match cur.varint("next state")? {
        1 => NextState::Status,
        2 => NextState::Login,
        3 => NextState::Transfer,
        other => return Err(ProtocolError::InvalidNextState(other)),
    };
    cur.finish("handshake")?;
    Ok(Some((Handshake { protocol, host: host.to_owned(), port, next_state }, used)))
}

/// Encodes a handshake (tests, bench and the status prober use it).
pub fn encode_handshake(hs: &Handshake) -> Vec<u8> {
    let mut body = Vec::with_capacity(hs.host.len() + 10);
    super::frame::put_varint(&mut body, hs.protocol);
    super::frame::put_string(&mut body, &hs.host);
    body.extend_from_slice(&hs.port.to_be_bytes());
    let state = match hs.next_state {
        NextState::Status => 1,
        NextState::Login => 2,
        NextState::Transfer => 3,
    };
    super::frame::put_varint(&mut body, state);
    super::frame::encode_packet(0x00, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs(host: &str, state: NextState) -> Handshake {
        Handshake { protocol: 767, host: host.into(), port: 25565, next_state: state }
    }

    #[test]
    fn roundtrip_each_prefix() {
        for state in [NextState::Status, NextState::Login, NextState::Transfer] {
            let h = hs("Survival.Acme.Example.\0FML3\0", state);
            let bytes = encode_handshake(&h);
            for cut in 0..bytes.len() {
                assert_eq!(decode_handshake(&bytes[..cut]), Ok(None));
            }
            assert_eq!(decode_handshake(&bytes), Ok(Some((h, bytes.len()))));
        }
    }

    #[test]
    fn rejects_unknown_next_state() {
        let mut bytes = encode_handshake(&hs("a.example", NextState::Status));
        let last = bytes.len() - 1;
        bytes[last] = 4;
        assert_eq!(decode_handshake(&bytes), Err(ProtocolError::InvalidNextState(4)));
    }

    #[test]
    fn rejects_long_hostname_but_tolerates_suffix() {
        let long = "a".repeat(256);
        let bytes = encode_handshake(&hs(&long, NextState::Login));
        assert!(matches!(decode_handshake(&bytes), Err(ProtocolError::TooLong { field: "hostname", .. })));
        let shield = format!("{}///127.0.0.1:1234///1700000000///{}", "a".repeat(255), "s".repeat(344));
        let bytes = encode_handshake(&hs(&shield, NextState::Login));
        assert!(decode_handshake(&bytes).unwrap().is_some());
    }

    #[test]
    fn hostname_part_strips_markers() {
        assert_eq!(hostname_part("a.b\0FML\0"), "a.b");
        assert_eq!(hostname_part("a.b\0FORGE"), "a.b");
        assert_eq!(hostname_part("a.b///1.2.3.4:5///9///sig"), "a.b");
        assert_eq!(hostname_part("a.b."), "a.b.");
    }
}
