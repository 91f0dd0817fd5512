//! A Minecraft backend fast enough that it is never what a benchmark measures:
//! status answers a fixed JSON and a pong; login reads Login Start, sends a
//! login-success frame, then does what the username asks (see [`Session`]).
//!
//! It runs as tasks on the bench's own runtime, so its counters are plain
//! atomics the scenarios read directly.

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, bail};
use bytes::BytesMut;
use respawn_codec::{
    Decoded, NextState, decode_handshake, decode_login_start, encode_login_disconnect,
    frame::{encode_packet, put_string},
    status::{StatusC2s, decode_status_c2s, encode_pong, encode_status_response},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

/// A status answer the size of a typical server's without a favicon.
pub const STATUS_JSON: &str = r#"{"version":{"name":"1.21.1","protocol":767},"players":{"max":100,"online":3,"sample":[{"name":"Alex","id":"ec561538-f3fd-461d-aff5-086b22154bce"}]},"description":{"text":"respawn-bench backend"},"enforcesSecureChat":false}"#;

/// Size of each write (and read buffer) in bulk sessions: large enough that
/// the per-syscall cost is small next to the copy itself.
pub const BULK_CHUNK: usize = 64 * 1024;

/// Listen backlog: connection-rate scenarios open hundreds of sockets per
/// millisecond; a short queue would turn bursts into SYN retries.
const LISTEN_BACKLOG: u32 = 4096;

/// What a login session does after the login-success frame. The client picks
/// it with its username, so one backend serves every scenario and the bytes
/// a proxy forwards are all the backend needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// Send the login-success frame and close once the client has left, as
    /// a server does when a player quits (login connects/s, latency). The
    /// client leaves first: a backend that closed first would be a crash
    /// under the player, which Respawn answers with a Disconnect of its own
    /// (one more packet per login that a plain TCP proxy does not send).
    Close,
    /// Hold the connection open, reading until the client leaves (idle sessions).
    Idle,
    /// Sink everything received and send 64 KiB chunks back until the client leaves.
    Bulk,
    /// Bulk as an online-mode server: an Encryption Request comes before the
    /// login success. Real clients then encrypt everything; here the bytes
    /// stay as they are, but a proxy that follows the protocol can no
    /// longer read them from that packet on (Respawn stops following).
    BulkOnline,
    /// Refuse the login with a Disconnect of the server's own (as a full or
    /// whitelisted server does) and close at once: the server ends it.
    Refused,
}

/// What a refusing backend tells the player.
pub const REFUSAL: &str = "bench: this server is full";

impl Session {
    pub fn username(self) -> &'static str {
        match self {
            Session::Close => "bench_close",
            Session::Idle => "bench_idle",
            Session::Bulk => "bench_bulk",
            Session::BulkOnline => "bench_bulk_enc",
            Session::Refused => "bench_refused",
        }
    }

    fn from_username(name: &str) -> Self {
        match name {
            "bench_idle" => Session::Idle,
            "bench_bulk" => Session::Bulk,
            "bench_bulk_enc" => Session::BulkOnline,
            "bench_refused" => Session::Refused,
            _ => Session::Close,
        }
    }
}

/// What the backend saw, for scenarios to read.
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes received from clients in bulk sessions (the upload direction).
    pub bulk_received: AtomicU64,
    /// Connections that ended in a protocol or IO error before their session.
    pub errors: AtomicU64,
}

pub struct Backend {
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
}

/// Binds 127.0.0.1:`port` (0: any free port) and serves until the process exits.
pub fn start(port: u16) -> Result<Backend> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(([127, 0, 0, 1], port).into()).with_context(|| format!("binding the backend to 127.0.0.1:{port}"))?;
    let listener = socket.listen(LISTEN_BACKLOG)?;
    let addr = listener.local_addr()?;
    let counters = Arc::new(Counters::default());
    let task_counters = counters.clone();
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let counters = task_counters.clone();
                    tokio::spawn(async move {
                        if serve(stream, &counters).await.is_err() {
                            counters.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
                // Out of descriptors under the idle scenario: wait for some to close.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    });
    Ok(Backend { addr, counters })
}

fn status_response() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| encode_status_response(STATUS_JSON))
}

/// A login-success-like frame (packet 0x02: UUID, name, no properties).
fn login_success(name: &str, uuid: Option<u128>) -> Vec<u8> {
    let mut body = Vec::with_capacity(16 + name.len() + 2);
    body.extend_from_slice(&uuid.unwrap_or(0x00be_ec4e_u128).to_be_bytes());
    put_string(&mut body, name);
    body.push(0); // no properties
    encode_packet(0x02, &body)
}

/// Login-state Encryption Request (0x01) as an online-mode server sends it:
/// empty server id, a 162-byte public key, a 4-byte verify token and (since
/// 1.20.5) "should authenticate".
fn encryption_request() -> Vec<u8> {
    let mut body = Vec::with_capacity(180);
    put_string(&mut body, "");
    body.extend_from_slice(&[0xa2, 0x01]); // VarInt 162
    body.extend_from_slice(&[0x30; 162]);
    body.push(4);
    body.extend_from_slice(&[1, 2, 3, 4]);
    body.push(1);
    encode_packet(0x01, &body)
}

/// Reads until `decode` completes over `buf[from..]`.
pub async fn read_until<T>(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    from: usize,
    decode: impl Fn(&[u8]) -> Decoded<T>,
) -> Result<(T, usize)> {
    loop {
        if let Some(done) = decode(&buf[from..]).context("decode")? {
            return Ok(done);
        }
        if buf.capacity() - buf.len() < 256 {
            buf.reserve(4096);
        }
        if stream.read_buf(buf).await? == 0 {
            bail!("peer closed after {} bytes", buf.len());
        }
    }
}

async fn serve(mut stream: TcpStream, counters: &Counters) -> Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = BytesMut::with_capacity(512);
    let (hs, mut at) = read_until(&mut stream, &mut buf, 0, decode_handshake).await?;
    match hs.next_state {
        NextState::Status => {
            let (request, used) = read_until(&mut stream, &mut buf, at, decode_status_c2s).await?;
            if request != StatusC2s::Request {
                bail!("expected a status request");
            }
            at += used;
            stream.write_all(status_response()).await?;
            let (ping, _) = read_until(&mut stream, &mut buf, at, decode_status_c2s).await?;
            let StatusC2s::Ping(payload) = ping else { bail!("expected a ping") };
            stream.write_all(&encode_pong(payload)).await?;
            Ok(())
        }
        NextState::Login | NextState::Transfer => {
            let protocol = hs.protocol;
            let (login, used) = read_until(&mut stream, &mut buf, at, |b| decode_login_start(b, protocol)).await?;
            at += used;
            let session = Session::from_username(&login.name);
            if session == Session::Refused {
                // Dropping the stream closes it right after the Disconnect.
                stream.write_all(&encode_login_disconnect(REFUSAL)).await?;
                return Ok(());
            }
            if session == Session::BulkOnline {
                stream.write_all(&encryption_request()).await?;
            }
            stream.write_all(&login_success(&login.name, login.uuid)).await?;
            match session {
                Session::Close => {
                    hold(&mut stream).await;
                    Ok(())
                }
                Session::Idle => {
                    hold(&mut stream).await;
                    Ok(())
                }
                Session::Refused => unreachable!("answered before the login success"),
                Session::Bulk | Session::BulkOnline => {
                    let early = (buf.len() - at) as u64;
                    counters.bulk_received.fetch_add(early, Ordering::Relaxed);
                    drop(buf);
                    bulk(&mut stream, counters).await;
                    Ok(())
                }
            }
        }
    }
}

/// Keeps the connection until the client closes it.
async fn hold(stream: &mut TcpStream) {
    let mut scratch = [0u8; 64];
    while let Ok(n) = stream.read(&mut scratch).await {
        if n == 0 {
            break;
        }
    }
}

/// Sinks and sources at once until either direction ends.
async fn bulk(stream: &mut TcpStream, counters: &Counters) {
    let (mut rx, mut tx) = stream.split();
    let sink = async {
        let mut scratch = vec![0u8; BULK_CHUNK];
        loop {
            match rx.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => counters.bulk_received.fetch_add(n as u64, Ordering::Relaxed),
            };
        }
    };
    let source = async {
        let chunk = vec![0x5au8; BULK_CHUNK];
        let _: io::Result<()> = async {
            loop {
                tx.write_all(&chunk).await?;
            }
        }
        .await;
    };
    tokio::select! {
        _ = sink => {}
        _ = source => {}
    }
}
