//! The load generator's side of the Minecraft protocol: one status ping, one
//! login up to the backend's first frame. Requests are encoded once and
//! reused; each operation opens its own connection, as players do.

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use anyhow::{Result, bail};
use bytes::BytesMut;
use respawn_codec::{
    Decoded, NextState, decode_frame,
    handshake::{Handshake, encode_handshake},
    login::encode_login_start,
    status::{decode_pong, decode_status_response, encode_ping, encode_status_request},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

use crate::backend::{Session, read_until};

/// The hostname every request names; Respawn's bench config routes it.
pub const HOST: &str = "bench.localhost";
/// Minecraft 1.21.1: Login Start carries a UUID.
pub const PROTOCOL: i32 = 767;
/// Largest frame the client accepts from a target (a status JSON or a kick).
const MAX_FRAME: usize = 256 * 1024;

/// Pre-encoded bytes for each operation.
#[derive(Debug, Clone)]
pub struct Requests {
    /// Handshake (next state 1) and status request, sent in one write.
    pub status: Vec<u8>,
    pub ping: Vec<u8>,
    pub ping_payload: i64,
    login_close: Vec<u8>,
    login_idle: Vec<u8>,
    login_bulk: Vec<u8>,
    login_bulk_online: Vec<u8>,
    login_refused: Vec<u8>,
}

impl Requests {
    pub fn new(host: &str) -> Self {
        let hs = |next_state| {
            encode_handshake(&Handshake { protocol: PROTOCOL, host: host.to_owned(), port: 25565, next_state })
        };
        let mut status = hs(NextState::Status);
        status.extend(encode_status_request());
        let login = |session: Session| {
            let mut bytes = hs(NextState::Login);
            bytes.extend(encode_login_start(session.username(), Some(0x0123_4567_89ab_cdef_u128), PROTOCOL));
            bytes
        };
        let ping_payload = 0x0062_656e_6368;
        Self {
            status,
            ping: encode_ping(ping_payload),
            ping_payload,
            login_close: login(Session::Close),
            login_idle: login(Session::Idle),
            login_bulk: login(Session::Bulk),
            login_bulk_online: login(Session::BulkOnline),
            login_refused: login(Session::Refused),
        }
    }

    pub fn login(&self, session: Session) -> &[u8] {
        match session {
            Session::Close => &self.login_close,
            Session::Idle => &self.login_idle,
            Session::Bulk => &self.login_bulk,
            Session::BulkOnline => &self.login_bulk_online,
            Session::Refused => &self.login_refused,
        }
    }
}

/// Handshake, status request, response, ping, pong: a server-list refresh.
pub async fn status_ping(addr: SocketAddr, req: &Requests, buf: &mut BytesMut) -> Result<()> {
    buf.clear();
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(&req.status).await?;
    let (json, used) = read_until(&mut stream, buf, 0, |b| decode_status_response(b, MAX_FRAME)).await?;
    if !json.starts_with('{') {
        bail!("status response is not a JSON object");
    }
    stream.write_all(&req.ping).await?;
    let (payload, _) = read_until(&mut stream, buf, used, decode_pong).await?;
    if payload != req.ping_payload {
        bail!("pong payload {payload} differs from ping {}", req.ping_payload);
    }
    Ok(())
}

/// A login that reached the backend: its stream (positioned after the
/// login-success frame) and the time from connect to the first byte back.
pub struct LoggedIn {
    pub stream: TcpStream,
    pub first_byte: Duration,
}

/// Connects, sends handshake + Login Start, reads the backend's login-success frame.
pub async fn login(addr: SocketAddr, req: &Requests, session: Session, buf: &mut BytesMut) -> Result<LoggedIn> {
    buf.clear();
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(req.login(session)).await?;
    if buf.capacity() < 256 {
        buf.reserve(256);
    }
    if stream.read_buf(buf).await? == 0 {
        bail!("closed before any reply");
    }
    let first_byte = started.elapsed();
    let (mut id, used) = read_until(&mut stream, buf, 0, frame_id).await?;
    if id == 0x01 && session == Session::BulkOnline {
        // The Encryption Request; this bench client does not encrypt.
        (id, _) = read_until(&mut stream, buf, used, frame_id).await?;
    }
    if id != 0x02 {
        bail!(
            "expected login success (0x02), got packet {id:#04x}: {}",
            String::from_utf8_lossy(&buf[..buf.len().min(200)])
        );
    }
    Ok(LoggedIn { stream, first_byte })
}

/// A login the server refuses: exactly its Disconnect comes back, then the
/// end of the stream — a proxy that appended a packet of its own (taking the
/// server's close for a crash) fails here.
pub async fn refused_login(addr: SocketAddr, req: &Requests, buf: &mut BytesMut) -> Result<()> {
    buf.clear();
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(req.login(Session::Refused)).await?;
    while stream.read_buf(buf).await? > 0 {
        if buf.len() > MAX_FRAME {
            bail!("more than {MAX_FRAME} bytes in answer to a refused login");
        }
    }
    let Some((frame, used)) = decode_frame(buf, MAX_FRAME)? else { bail!("the stream ended inside the Disconnect") };
    if frame.id != 0x00 || !String::from_utf8_lossy(frame.body).contains(crate::backend::REFUSAL) {
        bail!("expected the server's login Disconnect, got packet {:#04x}", frame.id);
    }
    if used != buf.len() {
        bail!("{} bytes followed the server's Disconnect", buf.len() - used);
    }
    Ok(())
}

fn frame_id(buf: &[u8]) -> Decoded<i32> {
    Ok(decode_frame(buf, MAX_FRAME)?.map(|(frame, used)| (frame.id, used)))
}

/// Writes 64 KiB chunks and reads everything sent back until `deadline` or
/// until `received` passes `max_bytes`, adding bytes received to `received`.
pub async fn bulk(mut stream: TcpStream, deadline: Instant, received: &AtomicU64, max_bytes: u64) {
    let (mut rx, mut tx) = stream.split();
    let upload = async {
        let chunk = vec![0xa5u8; crate::backend::BULK_CHUNK];
        while tx.write_all(&chunk).await.is_ok() {}
    };
    let download = async {
        let mut scratch = vec![0u8; crate::backend::BULK_CHUNK];
        loop {
            match rx.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if received.fetch_add(n as u64, Ordering::Relaxed) > max_bytes {
                        break;
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = upload => {}
        _ = download => {}
        _ = tokio::time::sleep_until(deadline) => {}
    }
}
