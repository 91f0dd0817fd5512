//! A bounds-checked reader over one complete packet body.
//!
//! Inside a complete frame a missing byte is an error, never "need more", so
//! this reader reports `Truncated` with the name of the field it was reading.

use valence_protocol::var_int::{VarInt, VarIntDecodeError};

use super::ProtocolError;

pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn varint(&mut self, field: &'static str) -> Result<i32, ProtocolError> {
        let mut r = self.buf;
        match VarInt::decode_partial(&mut r) {
            Ok(v) => {
                self.buf = r;
                Ok(v)
            }
            Err(VarIntDecodeError::Incomplete) => Err(ProtocolError::Truncated(field)),
            Err(VarIntDecodeError::TooLarge) => Err(ProtocolError::VarIntTooLong { max: VarInt::MAX_SIZE }),
        }
    }

    pub(crate) fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ProtocolError> {
        if self.buf.len() < n {
            return Err(ProtocolError::Truncated(field));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, ProtocolError> {
        Ok(self.bytes(1, field)?[0])
    }

    pub(crate) fn bool(&mut self, field: &'static str) -> Result<bool, ProtocolError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(ProtocolError::Invalid(field)),
        }
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, ProtocolError> {
        let b = self.bytes(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn i64(&mut self, field: &'static str) -> Result<i64, ProtocolError> {
        let b = self.bytes(8, field)?;
        Ok(i64::from_be_bytes(b.try_into().expect("8 bytes")))
    }

    pub(crate) fn u128(&mut self, field: &'static str) -> Result<u128, ProtocolError> {
        let b = self.bytes(16, field)?;
        Ok(u128::from_be_bytes(b.try_into().expect("16 bytes")))
    }

    /// A VarInt-prefixed byte array of at most `max` bytes.
    pub(crate) fn byte_array(&mut self, max: usize, field: &'static str) -> Result<&'a [u8], ProtocolError> {
        let len = self.varint(field)?;
        let len = usize::try_from(len).map_err(|_| ProtocolError::NegativeLength(len))?;
        if len > max {
            return Err(ProtocolError::TooLong { field, len, max });
        }
        self.bytes(len, field)
    }

    /// A VarInt-prefixed UTF-8 string of at most `max` bytes.
    pub(crate) fn string(&mut self, max: usize, field: &'static str) -> Result<&'a str, ProtocolError> {
        let raw = self.byte_array(max, field)?;
        std::str::from_utf8(raw).map_err(|_| ProtocolError::InvalidUtf8(field))
    }

    pub(crate) fn finish(self, packet: &'static str) -> Result<(), ProtocolError> {
        if self.buf.is_empty() { Ok(()) } else { Err(ProtocolError::TrailingBytes { packet, count: self.buf.len() }) }
    }
}
