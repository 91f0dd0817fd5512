//! Readiness: does the server answer a status ping? (handshake + status
//! request, then one complete status response, framed by the codec).

use std::time::Duration;

use respawn_codec::{
    handshake::{Handshake, NextState, encode_handshake},
    status::{decode_status_response, encode_status_request},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Protocol number "any" in a handshake: every server answers the status of it.
const ANY_PROTOCOL: i32 = -1;
/// A status JSON with a favicon is ~10 KiB; anything past this is not one.
const MAX_STATUS_BYTES: usize = 1 << 20;

/// The bytes of a status query to `address` (`host:port`).
pub fn status_request(address: &str) -> Vec<u8> {
    let (host, port) = address.rsplit_once(':').unwrap_or((address, "25565"));
    let port: u16 = port.parse().unwrap_or(25565);
    let mut out = encode_handshake(&Handshake {
        protocol: ANY_PROTOCOL,
        host: host.to_owned(),
        port,
        next_state: NextState::Status,
    });
    out.extend(encode_status_request());
    out
}

/// True when a complete status response arrives within `within`.
pub async fn status_ping(address: &str, within: Duration) -> bool {
    let attempt = async {
        let mut s = TcpStream::connect(address).await.ok()?;
        s.write_all(&status_request(address)).await.ok()?;
        let mut buf = Vec::with_capacity(1024);
        loop {
            match decode_status_response(&buf, MAX_STATUS_BYTES) {
                Ok(Some(_)) => return Some(()),
                Ok(None) => {}
                // It answers, whatever it is: a server, if not a tidy one.
                Err(_) => return Some(()),
            }
            if s.read_buf(&mut buf).await.ok()? == 0 {
                return None;
            }
        }
    };
    matches!(tokio::time::timeout(within, attempt).await, Ok(Some(())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use respawn_codec::{decode_handshake, status::encode_status_response};
    use tokio::net::TcpListener;

    #[test]
    fn the_request_is_a_status_handshake_for_the_address() {
        let bytes = status_request("play.example:25570");
        let (hs, _) = decode_handshake(&bytes).unwrap().unwrap();
        assert_eq!((hs.host.as_str(), hs.port, hs.next_state), ("play.example", 25570, NextState::Status));
    }

    #[tokio::test]
    async fn ready_only_after_a_whole_response() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            // First: half a response, then silence. Second: a whole one.
            let (mut a, _) = listener.accept().await.unwrap();
            let frame = encode_status_response("{\"version\":{\"name\":\"x\",\"protocol\":1}}");
            a.write_all(&frame[..frame.len() / 2]).await.unwrap();
            let (mut b, _) = listener.accept().await.unwrap();
            b.write_all(&frame).await.unwrap();
            (a, b)
        });
        assert!(!status_ping(&addr, Duration::from_millis(300)).await);
        assert!(status_ping(&addr, Duration::from_secs(5)).await);
        drop(server.await.unwrap());
    }
}
