//! Status (server list) packets: request, response, ping and pong.

use super::{
    Decoded, ProtocolError,
    cursor::Cursor,
    frame::{decode_frame, encode_packet, put_string},
};

/// Packets a client may send in the status state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusC2s {
    Request,
    Ping(i64),
}

/// Small frames only: a status request is empty, a ping is 8 bytes.
const MAX_STATUS_C2S_FRAME: usize = 16;

pub fn decode_status_c2s(buf: &[u8]) -> Decoded<StatusC2s> {
    let Some((frame, used)) = decode_frame(buf, MAX_STATUS_C2S_FRAME)? else {
        return Ok(None);
    };
    let mut cur = Cursor::new(frame.body);
    let packet = match frame.id {
        0x00 => StatusC2s::Request,
        0x01 => StatusC2s::Ping(cur.i64("ping payload")?),
        id => return Err(ProtocolError::UnexpectedPacket { id, expected: 0x00 }),
    };
    cur.finish("status packet")?;
    Ok(Some((packet, used)))
}

/// Decodes a status response (backend → proxy) into its JSON text.
pub fn decode_status_response(buf: &[u8], max_len: usize) -> Decoded<String> {
    let Some((frame, used)) = decode_frame(buf, max_len)? else {
        return Ok(None);
    };
    if frame.id != 0x00 {
        return Err(ProtocolError::UnexpectedPacket { id: frame.id, expected: 0x00 });
    }
    let mut cur = Cursor::new(frame.body);
    let json = cur.string(max_len, "status json")?;
    cur.finish("status response")?;
    Ok(Some((json.to_owned(), used)))
}

pub fn encode_status_request() -> Vec<u8> {
    encode_packet(0x00, &[])
}

pub fn encode_status_response(json: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(json.len() + 3);
    put_string(&mut body, json);
    encode_packet(0x00, &body)
}

pub fn encode_ping(payload: i64) -> Vec<u8> {
    encode_packet(0x01, &payload.to_be_bytes())
}

/// A pong carries the ping's payload back.
pub fn encode_pong(payload: i64) -> Vec<u8> {
    encode_packet(0x01, &payload.to_be_bytes())
}

/// Decodes a pong (proxy-as-client side; bench and tests use it).
pub fn decode_pong(buf: &[u8]) -> Decoded<i64> {
    let Some((frame, used)) = decode_frame(buf, MAX_STATUS_C2S_FRAME)? else {
        return Ok(None);
    };
    if frame.id != 0x01 {
        return Err(ProtocolError::UnexpectedPacket { id: frame.id, expected: 0x01 });
    }
    let mut cur = Cursor::new(frame.body);
    let v = cur.i64("pong payload")?;
    cur.finish("pong")?;
    Ok(Some((v, used)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_ping_roundtrip() {
        let mut both = encode_status_request();
        both.extend(encode_ping(-42));
        let (p, n) = decode_status_c2s(&both).unwrap().unwrap();
        assert_eq!(p, StatusC2s::Request);
        let (p, m) = decode_status_c2s(&both[n..]).unwrap().unwrap();
        assert_eq!(p, StatusC2s::Ping(-42));
        assert_eq!(n + m, both.len());
        for cut in 0..encode_ping(1).len() {
            assert_eq!(decode_status_c2s(&encode_ping(1)[..cut]), Ok(None));
        }
    }

    #[test]
    fn response_roundtrip() {
        let json = r#"{"version":{"name":"1.21.4","protocol":769},"description":"hi"}"#;
        let pkt = encode_status_response(json);
        assert_eq!(decode_status_response(&pkt, 1 << 20), Ok(Some((json.to_owned(), pkt.len()))));
        assert!(decode_status_response(&pkt, 10).is_err());
        assert_eq!(decode_pong(&encode_pong(7)), Ok(Some((7, 10))));
    }
}
