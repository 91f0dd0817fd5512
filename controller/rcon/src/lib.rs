//! A small RCON client, the Source RCON protocol as Minecraft speaks it: how
//! the local runtime sends console commands (`save-off`, `save-all flush`,
//! `save-on`, `stop`) to a server it runs.
//!
//! Owns: the RCON codec (sans-IO) and a tokio client. May depend on: tokio,
//! thiserror; nothing of Respawn's. The proxy must never link it.
//!
//! Hand-written rather than taken from a crate: the `rcon` crate (0.6) pulls
//! in the unmaintained `err-derive` proc-macro and paces its writes with
//! sleeps; the other tokio clients are small one-person crates. The protocol
//! is three packet types and one length-prefixed frame, and the codec below
//! is sans-IO and tested on every prefix.
//!
//! Frame (little-endian): `length: i32` (of the rest), `id: i32`,
//! `type: i32`, body bytes, two NUL bytes. Types: 3 = login (password in the
//! body), 2 = command (and, server to client, the login answer, whose id is
//! -1 when the password was wrong), 0 = command output.
//!
//! Minecraft's quirks, handled here:
//! - it reads a request with one 1460-byte `read`: a longer command is cut,
//!   and two packets arriving together lose the second; so commands are
//!   capped at [`MAX_COMMAND_BYTES`] and requests are never pipelined;
//! - it splits output longer than 4096 bytes into several packets with the
//!   same id and no end marker. When a packet carries exactly 4096 bytes we
//!   send a second, unknown-type request after it; Minecraft answers that
//!   with "Unknown request 0" under the new id, which marks the end.

#![forbid(unsafe_code)]

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Each connect, login and command must finish within this by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Minecraft reads a request into a 1460-byte buffer; minus the 12-byte
/// header and 2 NUL bytes, 1446 bytes of command fit.
pub const MAX_COMMAND_BYTES: usize = 1446;
/// The body size at which Minecraft splits output into another packet.
pub const FRAGMENT_BYTES: usize = 4096;
/// Largest packet we accept. Minecraft sends at most 4096 + 10; other
/// servers a little more. Bounds memory against a broken peer.
pub const MAX_PACKET_BYTES: usize = 64 * 1024;
/// Largest command output we collect (a `help` on a modded server is large,
/// but not this large).
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;

const TYPE_RESPONSE: i32 = 0;
const TYPE_COMMAND: i32 = 2;
const TYPE_AUTH_RESPONSE: i32 = 2;
const TYPE_AUTH: i32 = 3;
/// Packets a login may be answered with before the verdict (Source servers
/// send an empty output packet first; Minecraft does not).
const MAX_AUTH_PACKETS: usize = 4;

/// Where and how to reach a server's RCON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RconConfig {
    /// `host:port` (Minecraft's `rcon.port`, 25575 by default).
    pub address: String,
    /// Minecraft's `rcon.password`.
    pub password: String,
    pub timeout: Duration,
}

/// Minecraft's RCON port when `rcon.port` is not set.
pub const DEFAULT_PORT: u16 = 25575;

impl RconConfig {
    pub fn new(address: impl Into<String>, password: impl Into<String>) -> RconConfig {
        RconConfig { address: address.into(), password: password.into(), timeout: DEFAULT_TIMEOUT }
    }

    /// The RCON settings in a `server.properties` text, reached at `host`:
    /// `None` unless `enable-rcon=true` and `rcon.password` is set (Minecraft
    /// does not start RCON without a password). `rcon.port` defaults to
    /// 25575; an unparsable port is `None` rather than a guess.
    pub fn from_server_properties(text: &str, host: &str) -> Option<RconConfig> {
        let mut enabled = false;
        let mut port = DEFAULT_PORT;
        let mut password = None;
        for line in text.lines() {
            let line = line.trim_start();
            if line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else { continue };
            match key.trim() {
                "enable-rcon" => enabled = value.trim() == "true",
                "rcon.port" => port = value.trim().parse().ok()?,
                // Kept as written (a password may end in spaces).
                "rcon.password" => password = Some(value.to_owned()),
                _ => {}
            }
        }
        let password = password.filter(|p| !p.is_empty())?;
        enabled.then(|| RconConfig::new(format!("{host}:{port}"), password))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RconError {
    #[error("cannot connect to RCON at {address}: {source}")]
    Connect { address: String, source: io::Error },
    #[error("RCON login refused: wrong password")]
    AuthFailed,
    #[error("RCON did not answer within {0:?}")]
    Timeout(Duration),
    #[error("RCON connection failed: {0}")]
    Io(#[from] io::Error),
    #[error("the RCON server closed the connection")]
    Closed,
    #[error("RCON protocol error: {0}")]
    Protocol(String),
    #[error("the command is {0} bytes; Minecraft's RCON takes at most {MAX_COMMAND_BYTES}")]
    CommandTooLong(usize),
}

/// One decoded packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub id: i32,
    pub kind: i32,
    pub body: Vec<u8>,
}

/// The bytes of one packet.
pub fn encode(id: i32, kind: i32, body: &[u8]) -> Vec<u8> {
    let length = (4 + 4 + body.len() + 2) as i32;
    let mut out = Vec::with_capacity(4 + length as usize);
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&[0, 0]);
    out
}

/// The first packet in `buf` and how many bytes it used; `Ok(None)` when
/// more bytes are needed; an error when the length is impossible.
pub fn decode(buf: &[u8]) -> Result<Option<(Packet, usize)>, RconError> {
    let Some(head) = buf.get(..4) else { return Ok(None) };
    let length = i32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    if length < 10 || length as usize > MAX_PACKET_BYTES {
        return Err(RconError::Protocol(format!("packet length {length} is out of range")));
    }
    let total = 4 + length as usize;
    let Some(frame) = buf.get(..total) else { return Ok(None) };
    let id = i32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let kind = i32::from_le_bytes([frame[8], frame[9], frame[10], frame[11]]);
    // The two trailing bytes are NUL padding; servers differ in how strictly
    // they write them, so they are not checked.
    let body = frame[12..total - 2].to_vec();
    Ok(Some((Packet { id, kind, body }, total)))
}

/// A logged-in RCON connection. Commands run one at a time.
pub struct RconClient {
    stream: TcpStream,
    buf: Vec<u8>,
    next_id: i32,
    timeout: Duration,
}

impl std::fmt::Debug for RconClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RconClient").field("peer", &self.stream.peer_addr().ok()).finish_non_exhaustive()
    }
}

impl RconClient {
    /// Connects and logs in; each step bounded by `config.timeout`.
    pub async fn connect(config: &RconConfig) -> Result<RconClient, RconError> {
        let stream = tokio::time::timeout(config.timeout, TcpStream::connect(&config.address))
            .await
            .map_err(|_| RconError::Timeout(config.timeout))?
            .map_err(|source| RconError::Connect { address: config.address.clone(), source })?;
        let _ = stream.set_nodelay(true);
        let mut client = RconClient { stream, buf: Vec::with_capacity(4096), next_id: 1, timeout: config.timeout };
        let timeout = client.timeout;
        tokio::time::timeout(timeout, client.login(&config.password))
            .await
            .map_err(|_| RconError::Timeout(timeout))??;
        Ok(client)
    }

    async fn login(&mut self, password: &str) -> Result<(), RconError> {
        let id = self.take_id();
        self.stream.write_all(&encode(id, TYPE_AUTH, password.as_bytes())).await?;
        for _ in 0..MAX_AUTH_PACKETS {
            let packet = self.read_packet().await?;
            match (packet.kind, packet.id) {
                (TYPE_AUTH_RESPONSE, -1) => return Err(RconError::AuthFailed),
                (TYPE_AUTH_RESPONSE, got) if got == id => return Ok(()),
                (TYPE_RESPONSE, _) => continue,
                (kind, got) => {
                    return Err(RconError::Protocol(format!("unexpected login answer (type {kind}, id {got})")));
                }
            }
        }
        Err(RconError::Protocol("no login answer".into()))
    }

    /// Runs a console command and returns its output (lossy UTF-8).
    pub async fn command(&mut self, command: &str) -> Result<String, RconError> {
        if command.len() > MAX_COMMAND_BYTES {
            return Err(RconError::CommandTooLong(command.len()));
        }
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.exchange(command)).await.map_err(|_| RconError::Timeout(timeout))?
    }

    async fn exchange(&mut self, command: &str) -> Result<String, RconError> {
        let id = self.take_id();
        self.stream.write_all(&encode(id, TYPE_COMMAND, command.as_bytes())).await?;
        let first = self.read_packet().await?;
        if first.id == -1 {
            return Err(RconError::AuthFailed);
        }
        if first.id != id {
            return Err(RconError::Protocol(format!("answer for request {} while waiting for {id}", first.id)));
        }
        let mut output = first.body;
        if output.len() >= FRAGMENT_BYTES {
            // Maybe more fragments follow: mark the end with a request the
            // server must answer after them (see the module docs).
            let end = self.take_id();
            self.stream.write_all(&encode(end, TYPE_RESPONSE, b"")).await?;
            loop {
                let packet = self.read_packet().await?;
                if packet.id == end {
                    break;
                }
                if packet.id != id {
                    return Err(RconError::Protocol(format!(
                        "answer for request {} while waiting for {id}",
                        packet.id
                    )));
                }
                if output.len() + packet.body.len() > MAX_RESPONSE_BYTES {
                    return Err(RconError::Protocol(format!("output longer than {MAX_RESPONSE_BYTES} bytes")));
                }
                output.extend_from_slice(&packet.body);
            }
        }
        Ok(String::from_utf8_lossy(&output).into_owned())
    }

    fn take_id(&mut self) -> i32 {
        let id = self.next_id;
        // Positive and never -1 (the "wrong password" id).
        self.next_id = if self.next_id >= i32::MAX - 1 { 1 } else { self.next_id + 1 };
        id
    }

    async fn read_packet(&mut self) -> Result<Packet, RconError> {
        loop {
            if let Some((packet, used)) = decode(&self.buf)? {
                self.buf.drain(..used);
                return Ok(packet);
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(RconError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Connects, logs in, runs one command and disconnects.
pub async fn run_command(config: &RconConfig, command: &str) -> Result<String, RconError> {
    RconClient::connect(config).await?.command(command).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A small RCON server that behaves like Minecraft's: login, `echo X`,
    /// `long N` (N bytes of output, split at 4096), "Unknown request" for
    /// other packet types. Serves connections until the test ends.
    async fn minecraft_like(password: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, password));
            }
        });
        address
    }

    async fn serve(mut stream: TcpStream, password: &'static str) {
        let mut buf = Vec::new();
        let mut authed = false;
        for _ in 0..1000 {
            let packet = loop {
                match decode(&buf) {
                    Ok(Some((p, used))) => {
                        buf.drain(..used);
                        break p;
                    }
                    Ok(None) => {}
                    Err(_) => return,
                }
                let mut chunk = [0u8; 1460];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let replies: Vec<Vec<u8>> = match packet.kind {
                TYPE_AUTH if packet.body == password.as_bytes() => {
                    authed = true;
                    vec![encode(packet.id, TYPE_AUTH_RESPONSE, b"")]
                }
                TYPE_AUTH => vec![encode(-1, TYPE_AUTH_RESPONSE, b"")],
                TYPE_COMMAND if !authed => vec![encode(-1, TYPE_AUTH_RESPONSE, b"")],
                TYPE_COMMAND => {
                    let text = String::from_utf8_lossy(&packet.body).into_owned();
                    let output = if let Some(rest) = text.strip_prefix("echo ") {
                        rest.as_bytes().to_vec()
                    } else if let Some(n) = text.strip_prefix("long ") {
                        let n: usize = n.parse().unwrap_or(0);
                        (0..n).map(|i| b'a' + (i % 26) as u8).collect()
                    } else {
                        format!("Unknown command: {text}").into_bytes()
                    };
                    // Minecraft's split: 4096-byte pieces, at least one packet.
                    let mut out = Vec::new();
                    let mut rest = &output[..];
                    loop {
                        let (piece, tail) = rest.split_at(rest.len().min(FRAGMENT_BYTES));
                        out.push(encode(packet.id, TYPE_RESPONSE, piece));
                        rest = tail;
                        if rest.is_empty() {
                            break;
                        }
                    }
                    out
                }
                other => vec![encode(packet.id, TYPE_RESPONSE, format!("Unknown request {other:x}").as_bytes())],
            };
            for reply in replies {
                if stream.write_all(&reply).await.is_err() {
                    return;
                }
            }
        }
    }

    fn config(address: &str, password: &str) -> RconConfig {
        RconConfig { timeout: Duration::from_secs(5), ..RconConfig::new(address, password) }
    }

    #[test]
    fn codec_round_trips_and_waits_for_whole_frames() {
        let bytes = encode(7, TYPE_COMMAND, b"save-all flush");
        assert_eq!(bytes.len(), 4 + 4 + 4 + 14 + 2);
        for cut in 0..bytes.len() {
            assert!(matches!(decode(&bytes[..cut]), Ok(None)), "prefix of {cut} bytes");
        }
        let mut two = bytes.clone();
        two.extend_from_slice(&encode(8, TYPE_RESPONSE, b""));
        let (packet, used) = decode(&two).expect("valid").expect("whole");
        assert_eq!((packet.id, packet.kind, packet.body.as_slice(), used), (7, 2, &b"save-all flush"[..], bytes.len()));
        let (second, _) = decode(&two[used..]).expect("valid").expect("whole");
        assert_eq!((second.id, second.body.len()), (8, 0));
        // Lengths that cannot be: shorter than the header, or huge.
        assert!(decode(&5i32.to_le_bytes()).is_err());
        assert!(decode(&(-3i32).to_le_bytes()).is_err());
        assert!(decode(&((MAX_PACKET_BYTES + 1) as i32).to_le_bytes()).is_err());
    }

    #[test]
    fn reads_server_properties() {
        let text = "#Minecraft server properties\nmotd=hi\nenable-rcon=true\nrcon.port=25601\nrcon.password=s3cret\n";
        let config = RconConfig::from_server_properties(text, "127.0.0.1").expect("enabled");
        assert_eq!((config.address.as_str(), config.password.as_str()), ("127.0.0.1:25601", "s3cret"));
        let default_port = RconConfig::from_server_properties("enable-rcon=true\nrcon.password=p\n", "h");
        assert_eq!(default_port.map(|c| c.address), Some("h:25575".to_owned()));
        for off in [
            "enable-rcon=false\nrcon.password=p\n",
            "rcon.password=p\n",
            "enable-rcon=true\nrcon.password=\n",
            "enable-rcon=true\n",
            "enable-rcon=true\nrcon.password=p\nrcon.port=lots\n",
            "#enable-rcon=true\nrcon.password=p\n",
        ] {
            assert_eq!(RconConfig::from_server_properties(off, "h"), None, "{off:?}");
        }
    }

    #[tokio::test]
    async fn logs_in_and_runs_commands() {
        let address = minecraft_like("hunter2").await;
        let mut client = RconClient::connect(&config(&address, "hunter2")).await.expect("login");
        assert_eq!(client.command("echo save-off done").await.expect("echo"), "save-off done");
        assert_eq!(client.command("frobnicate").await.expect("unknown"), "Unknown command: frobnicate");
        assert_eq!(client.command("echo ").await.expect("empty"), "");
        // Commands run in order on one connection.
        for i in 0..5 {
            assert_eq!(client.command(&format!("echo {i}")).await.expect("echo"), i.to_string());
        }
    }

    #[tokio::test]
    async fn joins_fragmented_output() {
        let address = minecraft_like("pw").await;
        let mut client = RconClient::connect(&config(&address, "pw")).await.expect("login");
        for n in [4095, FRAGMENT_BYTES, 4097, 2 * FRAGMENT_BYTES, 10_000] {
            let out = client.command(&format!("long {n}")).await.expect("long");
            let want: String = (0..n).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            assert_eq!(out.len(), n, "long {n}");
            assert_eq!(out, want, "long {n}");
        }
        // The end marker's answer was consumed: the next command is in step.
        assert_eq!(client.command("echo next").await.expect("echo"), "next");
    }

    #[tokio::test]
    async fn wrong_password_is_a_clear_error() {
        let address = minecraft_like("right").await;
        let err = RconClient::connect(&config(&address, "wrong")).await.expect_err("refused");
        assert!(matches!(err, RconError::AuthFailed), "{err:?}");
        assert_eq!(err.to_string(), "RCON login refused: wrong password");
        let err = run_command(&config(&address, "wrong"), "echo x").await.expect_err("refused");
        assert!(matches!(err, RconError::AuthFailed), "{err:?}");
        assert_eq!(run_command(&config(&address, "right"), "echo x").await.expect("ok"), "x");
    }

    #[tokio::test]
    async fn silence_and_closed_ports_are_bounded() {
        // A server that accepts and never answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr").to_string();
        let holder = tokio::spawn(async move {
            let held = listener.accept().await;
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(held);
        });
        let quick = RconConfig { timeout: Duration::from_millis(200), ..RconConfig::new(&address, "x") };
        let started = std::time::Instant::now();
        let err = RconClient::connect(&quick).await.expect_err("times out");
        assert!(matches!(err, RconError::Timeout(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        holder.abort();

        // Nothing listening: a connect error naming the address.
        let free = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let closed = free.local_addr().expect("addr").to_string();
        drop(free);
        let err = RconClient::connect(&config(&closed, "x")).await.expect_err("refused");
        assert!(matches!(err, RconError::Connect { .. }), "{err:?}");
        assert!(err.to_string().contains(&closed), "{err}");
    }

    #[tokio::test]
    async fn long_commands_are_refused_before_sending() {
        let address = minecraft_like("pw").await;
        let mut client = RconClient::connect(&config(&address, "pw")).await.expect("login");
        let long = "x".repeat(MAX_COMMAND_BYTES + 1);
        assert!(matches!(client.command(&long).await, Err(RconError::CommandTooLong(n)) if n == MAX_COMMAND_BYTES + 1));
        assert_eq!(client.command("echo still fine").await.expect("echo"), "still fine");
    }
}
