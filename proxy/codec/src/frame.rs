//! Uncompressed packet framing: `VarInt length ‖ VarInt packet id ‖ body`.

use valence_protocol::{Encode, VarInt};

use super::{Decoded, ProtocolError, cursor::Cursor};

/// The protocol's own ceiling: a frame length is at most a 3-byte VarInt.
pub const MAX_FRAME_LEN: usize = 2_097_151;
/// Bytes a frame length may occupy (3 × 7 bits = 2,097,151).
const MAX_LEN_BYTES: usize = 3;

/// One complete frame borrowed from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub id: i32,
    /// The packet body after the id.
    pub body: &'a [u8],
}

/// Decodes the frame at the start of `buf`, refusing lengths above `max_len`
/// (itself capped at [`MAX_FRAME_LEN`]) before any body byte is awaited, so a
/// huge declared length costs nothing.
pub fn decode_frame(buf: &[u8], max_len: usize) -> Decoded<Frame<'_>> {
    let max_len = max_len.min(MAX_FRAME_LEN);
    let mut len: usize = 0;
    let mut header = 0;
    loop {
        let Some(&byte) = buf.get(header) else {
            return Ok(None);
        };
        len |= usize::from(byte & 0x7f) << (7 * header);
        header += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if header == MAX_LEN_BYTES {
            return Err(ProtocolError::VarIntTooLong { max: MAX_LEN_BYTES });
        }
    }
    if len > max_len {
        return Err(ProtocolError::FrameTooLarge { len, max: max_len });
    }
    if len == 0 {
        return Err(ProtocolError::EmptyFrame);
    }
    let total = header + len;
    let Some(packet) = buf.get(header..total) else {
        return Ok(None);
    };
    let mut cur = Cursor::new(packet);
    let id = cur.varint("packet id")?;
    let body = &packet[packet.len() - cur.remaining()..];
    Ok(Some((Frame { id, body }, total)))
}

/// Encodes `VarInt(len) ‖ VarInt(id) ‖ body` into a fresh buffer.
pub fn encode_packet(id: i32, body: &[u8]) -> Vec<u8> {
    let id = VarInt(id);
    let len = id.written_size() + body.len();
    let len_i32 = i32::try_from(len).expect("packet length fits i32");
    let mut out = Vec::with_capacity(VarInt(len_i32).written_size() + len);
    // Writing into a Vec cannot fail.
    VarInt(len_i32).encode(&mut out).expect("vec write");
    id.encode(&mut out).expect("vec write");
    out.extend_from_slice(body);
    out
}

/// Appends a VarInt-prefixed string to `out`.
pub fn put_string(out: &mut Vec<u8>, s: &str) {
    s.encode(&mut *out).expect("vec write");
}

/// Appends a VarInt to `out`.
pub fn put_varint(out: &mut Vec<u8>, v: i32) {
    VarInt(v).encode(&mut *out).expect("vec write");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_every_prefix_needs_more() {
        let pkt = encode_packet(0x05, b"hello");
        for cut in 0..pkt.len() {
            assert_eq!(decode_frame(&pkt[..cut], MAX_FRAME_LEN), Ok(None), "prefix {cut}");
        }
        let (frame, used) = decode_frame(&pkt, MAX_FRAME_LEN).unwrap().unwrap();
        assert_eq!(used, pkt.len());
        assert_eq!(frame, Frame { id: 5, body: b"hello" });
    }

    #[test]
    fn huge_declared_length_is_refused_at_once() {
        // 3 GB as a 5-byte VarInt: refused after the third length byte.
        let buf = [0x80, 0x80, 0x80, 0x80, 0x0b];
        assert_eq!(decode_frame(&buf, MAX_FRAME_LEN), Err(ProtocolError::VarIntTooLong { max: 3 }));
        // 2,097,151 declared but the limit is 1 KiB: refused before the body.
        let buf = [0xff, 0xff, 0x7f];
        assert!(matches!(decode_frame(&buf, 1024), Err(ProtocolError::FrameTooLarge { len: 2_097_151, .. })));
    }

    #[test]
    fn empty_frame_is_invalid() {
        assert_eq!(decode_frame(&[0x00], 100), Err(ProtocolError::EmptyFrame));
    }
}
