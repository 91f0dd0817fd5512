//! Readiness: does the server answer a status ping? (handshake + status
//! request, then one complete response frame). Hand-written framing: the
//! proxy's codec depends on this crate, not the other way round.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use valence_protocol::{Encode, VarInt};

fn packet(id: i32, body: &[u8]) -> Vec<u8> {
    let mut inner = Vec::with_capacity(body.len() + 5);
    VarInt(id).encode(&mut inner).expect("vec write");
    inner.extend_from_slice(body);
    let mut out = Vec::with_capacity(inner.len() + 5);
    VarInt(inner.len() as i32).encode(&mut out).expect("vec write");
    out.extend_from_slice(&inner);
    out
}

/// The bytes of a status query to `address` (`host:port`).
pub fn status_request(address: &str) -> Vec<u8> {
    let (host, port) = address.rsplit_once(':').unwrap_or((address, "25565"));
    let port: u16 = port.parse().unwrap_or(25565);
    let mut body = Vec::new();
    VarInt(-1).encode(&mut body).expect("vec write"); // protocol: "any"
    host.encode(&mut body).expect("vec write");
    body.extend_from_slice(&port.to_be_bytes());
    VarInt(1).encode(&mut body).expect("vec write");
    let mut out = packet(0x00, &body);
    out.extend(packet(0x00, &[]));
    out
}

/// True when a complete status response frame arrives within `within`.
pub async fn status_ping(address: &str, within: Duration) -> bool {
    let attempt = async {
        let mut s = TcpStream::connect(address).await.ok()?;
        s.write_all(&status_request(address)).await.ok()?;
        let mut buf = Vec::with_capacity(1024);
        loop {
            let mut r = &buf[..];
            if let Ok(len) = VarInt::decode_partial(&mut r) {
                let header = buf.len() - r.len();
                if len > 0 && buf.len() >= header + len as usize {
                    return Some(());
                }
            }
            if buf.len() > 1 << 20 {
                return Some(()); // it answers, whatever it is
            }
            let n = s.read_buf(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
        }
    };
    matches!(tokio::time::timeout(within, attempt).await, Ok(Some(())))
}
