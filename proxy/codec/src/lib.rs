//! Respawn's codec: the sans-IO Minecraft protocol pieces the proxy reads
//! and writes, and PROXY protocol v2.
//!
//! Owns: framing (VarInt lengths), the handshake (any version), Login Start
//! (1.7 → 26.1), the status exchange, the three legacy 0xFE pings, the
//! server → client stream follower ([`clientbound`]) and PROXY v2 headers.
//! May depend on: valence_protocol (primitives), ppp, thiserror — no tokio,
//! no sockets, no other Respawn crate. The proxy and the local runtime's
//! readiness probe both speak Minecraft through this crate.
//!
//! Every parser takes bytes and answers one of three things: a complete value
//! (and how many bytes it used), `Ok(None)` for "need more bytes", or a
//! [`ProtocolError`] saying why the input can never become valid. Nothing here
//! does IO; the connection code owns buffers and timeouts.
//!
//! valence_protocol supplies the primitives (VarInt, strings, text). Its packet
//! types are pinned to 1.20.1, so the handshake, Login Start and legacy ping are
//! decoded here, version-agnostically.

#![forbid(unsafe_code)]

pub mod clientbound;
mod cursor;
pub mod frame;
pub mod handshake;
pub mod legacy;
pub mod login;
pub mod proxy_protocol;
pub mod status;

pub use frame::{Frame, decode_frame, encode_packet};
pub use handshake::{Handshake, NextState, decode_handshake, normalize_host};
pub use legacy::{LegacyPing, decode_legacy};
pub use login::{LoginStart, decode_login_start, encode_login_disconnect};

/// Why bytes can never decode into what the proxy expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("VarInt is longer than {max} bytes")]
    VarIntTooLong { max: usize },
    #[error("negative length {0}")]
    NegativeLength(i32),
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge { len: usize, max: usize },
    #[error("empty frame (no packet id)")]
    EmptyFrame,
    #[error("unexpected packet id {id:#04x}, expected {expected:#04x}")]
    UnexpectedPacket { id: i32, expected: i32 },
    #[error("unknown next state {0} (expected 1 status, 2 login or 3 transfer)")]
    InvalidNextState(i32),
    #[error("{field} is {len} bytes, limit {max}")]
    TooLong { field: &'static str, len: usize, max: usize },
    #[error("{0} is not valid UTF-8")]
    InvalidUtf8(&'static str),
    #[error("packet ended inside {0}")]
    Truncated(&'static str),
    #[error("{count} unexpected bytes after {packet}")]
    TrailingBytes { packet: &'static str, count: usize },
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// Result of a sans-IO decode: `Ok(Some((value, bytes_used)))`, `Ok(None)` when
/// more input is needed, or an error when the input can never be valid.
pub type Decoded<T> = Result<Option<(T, usize)>, ProtocolError>;
