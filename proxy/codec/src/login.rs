//! Login Start (id 0x00 in the login state) for every version from 1.7 on,
//! and the login-state Disconnect the proxy sends when it turns a player away.

use valence_protocol::text::Text;

use super::{Decoded, ProtocolError, cursor::Cursor, frame::decode_frame};

/// Usernames are at most 16 characters; a string field may use 4 bytes each.
const MAX_NAME_CHARS: usize = 16;
/// 1.19 signature data: an X.509 RSA key (~294 bytes) and its Mojang
/// signature (512 bytes); the bounds leave room and still stay small.
const MAX_PUBLIC_KEY: usize = 512;
const MAX_KEY_SIGNATURE: usize = 4096;
/// Bound for the whole Login Start frame (name, UUID, signature data).
pub const MAX_LOGIN_START_FRAME: usize = 8192;

/// Protocol numbers where Login Start changed shape.
pub mod versions {
    /// 1.19: signature data (timestamp, public key, signature) follows the name.
    pub const V1_19: i32 = 759;
    /// 1.19.1/1.19.2: signature data, then an optional UUID.
    pub const V1_19_1: i32 = 760;
    /// 1.19.3–1.20.1: the signature data is gone, the UUID is optional.
    pub const V1_19_3: i32 = 761;
    /// 1.20.2+: the UUID is always present.
    pub const V1_20_2: i32 = 764;
    /// Snapshot protocol numbers have bit 30 set; they follow the newest layout.
    pub const SNAPSHOT_BIT: i32 = 0x4000_0000;
}

/// 1.19 / 1.19.1 player key data, kept for completeness (the proxy never
/// verifies it: the backend does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureData {
    pub expires_at: i64,
    pub public_key_len: usize,
    pub signature_len: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginStart {
    pub name: String,
    pub uuid: Option<u128>,
    pub signature: Option<SignatureData>,
}

/// Decodes Login Start at the start of `buf` for a client speaking `protocol`.
pub fn decode_login_start(buf: &[u8], protocol: i32) -> Decoded<LoginStart> {
    use versions::*;
    let Some((frame, used)) = decode_frame(buf, MAX_LOGIN_START_FRAME)? else {
        return Ok(None);
    };
    if frame.id != 0x00 {
        return Err(ProtocolError::UnexpectedPacket { id: frame.id, expected: 0x00 });
    }
    let mut cur = Cursor::new(frame.body);
    let name = cur.string(MAX_NAME_CHARS * 4, "username")?;
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(ProtocolError::Invalid("username length"));
    }
    let newest = protocol >= V1_20_2 || protocol & SNAPSHOT_BIT != 0;
    let mut signature = None;
    if (protocol == V1_19 || protocol == V1_19_1) && cur.bool("has signature data")? {
        let expires_at = cur.i64("key expiry")?;
        let key = cur.byte_array(MAX_PUBLIC_KEY, "public key")?;
        let sig = cur.byte_array(MAX_KEY_SIGNATURE, "key signature")?;
        signature = Some(SignatureData { expires_at, public_key_len: key.len(), signature_len: sig.len() });
    }
    // 1.20.2+: always there; 1.19.1–1.20.1: behind a presence flag.
    let has_uuid = newest || ((V1_19_1..V1_20_2).contains(&protocol) && cur.bool("has player uuid")?);
    let uuid = if has_uuid { Some(cur.u128("player uuid")?) } else { None };
    cur.finish("login start")?;
    Ok(Some((LoginStart { name: name.to_owned(), uuid, signature }, used)))
}

/// Encodes Login Start in the layout `protocol` expects (tests and bench).
pub fn encode_login_start(name: &str, uuid: Option<u128>, protocol: i32) -> Vec<u8> {
    use versions::*;
    let mut body = Vec::with_capacity(40);
    super::frame::put_string(&mut body, name);
    let newest = protocol >= V1_20_2 || protocol & SNAPSHOT_BIT != 0;
    if protocol == V1_19 || protocol == V1_19_1 {
        body.push(0); // no signature data
    }
    if newest {
        body.extend_from_slice(&uuid.unwrap_or_default().to_be_bytes());
    } else if (V1_19_1..V1_20_2).contains(&protocol) {
        match uuid {
            Some(u) => {
                body.push(1);
                body.extend_from_slice(&u.to_be_bytes());
            }
            None => body.push(0),
        }
    }
    super::frame::encode_packet(0x00, &body)
}

/// A login-state Disconnect (id 0x00, a JSON text component in every version).
pub fn encode_login_disconnect(message: &str) -> Vec<u8> {
    let json = serde_json::to_string(&Text::text(message.to_owned())).expect("text serialises");
    let mut body = Vec::with_capacity(json.len() + 3);
    super::frame::put_string(&mut body, &json);
    super::frame::encode_packet(0x00, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_layout_roundtrips_on_every_prefix() {
        let uuid = 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef_u128;
        for (protocol, want_uuid) in [
            (5, None),
            (47, None),
            (758, None),
            (759, None),
            (760, Some(uuid)),
            (762, Some(uuid)),
            (763, None),
            (765, Some(uuid)),
            (774, Some(uuid)),
            (0x4000_0100, Some(uuid)),
        ] {
            let bytes = encode_login_start("Steve", want_uuid, protocol);
            for cut in 0..bytes.len() {
                assert_eq!(decode_login_start(&bytes[..cut], protocol), Ok(None));
            }
            let (ls, used) = decode_login_start(&bytes, protocol).unwrap().unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!(ls.name, "Steve");
            assert_eq!(ls.uuid, want_uuid, "protocol {protocol}");
        }
    }

    #[test]
    fn v1_19_signature_data_is_skipped() {
        let mut body = Vec::new();
        super::super::frame::put_string(&mut body, "Alex");
        body.push(1);
        body.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
        super::super::frame::put_varint(&mut body, 294);
        body.extend(std::iter::repeat_n(7u8, 294));
        super::super::frame::put_varint(&mut body, 512);
        body.extend(std::iter::repeat_n(9u8, 512));
        let pkt = super::super::frame::encode_packet(0, &body);
        let (ls, _) = decode_login_start(&pkt, versions::V1_19).unwrap().unwrap();
        assert_eq!(ls.signature.unwrap().public_key_len, 294);
        // The same bytes are not a valid 1.18 Login Start.
        assert!(decode_login_start(&pkt, 758).is_err());
    }

    #[test]
    fn rejects_bad_names() {
        let pkt = encode_login_start("ThisNameIsWayTooLong", None, 47);
        assert!(decode_login_start(&pkt, 47).is_err());
        let pkt = encode_login_start("", None, 47);
        assert!(decode_login_start(&pkt, 47).is_err());
    }

    #[test]
    fn disconnect_is_json_text() {
        let pkt = encode_login_disconnect("Unknown server");
        let (frame, _) = decode_frame(&pkt, 1 << 16).unwrap().unwrap();
        assert_eq!(frame.id, 0);
        let mut cur = Cursor::new(frame.body);
        let json: serde_json::Value = serde_json::from_str(cur.string(1 << 16, "reason").unwrap()).unwrap();
        assert_eq!(json["text"], "Unknown server");
    }
}
