//! The relay: bytes both ways between a player and its server until both
//! have closed, holding no buffer while idle, with splice(2) where the proxy
//! need not see the bytes and a small per-thread pool of copy buffers where
//! it must. When the server's stream ends under a player who is still here,
//! the proxy says why — unless the server said goodbye itself (a Disconnect:
//! a kick, a full server, a whitelist), which is the end of a session, not a
//! crash.

use std::{io, time::Duration};

use respawn_codec::clientbound::ClientboundTracker;
use tokio::{io::AsyncWriteExt, net::TcpStream};

use super::ConnError;
use crate::server::Shared;

/// One session's relay settings (from `limits`).
#[derive(Debug, Clone, Copy)]
pub(super) struct RelaySettings {
    /// Largest read per direction while data flows (`relay_buffer_bytes`).
    pub buffer: usize,
    /// Use splice(2) where the proxy need not see the bytes (Linux).
    pub splice: bool,
    /// After the backend ended a session, how long the client gets to read
    /// the last word and leave (`close_linger_ms`).
    pub linger: Duration,
}

/// How a relayed session ended, for the caller's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RelayEnd {
    /// The client left (or both sides closed together).
    Client,
    /// The server ended it with a Disconnect of its own (a kick, a refused
    /// login): an ordinary end, passed on as it is.
    ServerClosed,
    /// The backend's stream ended without a Disconnect under a connected
    /// player (a crash); `told` when the proxy could send one of its own.
    BackendLost { told: bool },
    /// The proxy is stopping.
    Stopped,
}

/// What the server → client direction found when it ended.
enum DownEnd {
    /// The client had left first, or the write to it failed.
    Quiet,
    /// The server's last packet was a Disconnect.
    ServerClosed,
    /// The stream ended without one; `told` as in [`RelayEnd::BackendLost`].
    Lost { told: bool },
}

/// Copies both ways until both sides have closed (half-close aware), the
/// client resets, or the proxy's hard stop fires.
///
/// Hand-written rather than `copy_bidirectional`, for three reasons:
/// - memory: a session holds no buffer while it is idle. Each direction waits
///   for readiness with nothing allocated, takes a buffer of up to
///   `limits.relay_buffer_bytes` for as long as data flows and frees it when
///   the socket runs dry — an idle player costs sockets and a task, not 2×
///   the buffer size;
/// - fairness: `copy_bidirectional` polls client→backend first on every wake,
///   which under load starved backend→client (bench: 60 against 1,750 MB/s);
///   here the two directions are separate branches of a `select!`;
/// - a last word: when the backend's stream ends while the player is still
///   connected (the server crashed or was killed), the server→client
///   direction is followed by a [`ClientboundTracker`], so the proxy can send
///   a Disconnect with a reason at a packet boundary instead of a bare close.
pub(super) async fn relay(
    shared: &Shared,
    client: &mut TcpStream,
    backend: &mut TcpStream,
    settings: RelaySettings,
    tracker: ClientboundTracker,
    lost_message: impl FnOnce() -> String,
) -> Result<RelayEnd, ConnError> {
    let RelaySettings { buffer, splice: use_splice, linger } = settings;
    // The client's socket has TCP_NODELAY from its listener (server.rs).
    let _ = backend.set_nodelay(true);
    let (client_r, mut client_w) = client.split();
    let (backend_r, mut backend_w) = backend.split();
    let metrics = &shared.metrics;
    // Set when the client's direction has ended, so the backend's end of
    // stream is not taken for a crash when the player simply left.
    let client_left = std::sync::atomic::AtomicBool::new(false);
    // Set when the backend's direction has ended: its socket then needs no
    // half-close of its own (dropping it closes it), one syscall saved.
    let backend_ended = std::sync::atomic::AtomicBool::new(false);
    let up = async {
        let mut end = pump(&client_r, &mut backend_w, buffer, use_splice, &metrics.bytes_up, None).await;
        if matches!(end, PumpEnd::WriteError(_)) {
            // The backend is gone. The client stays until it leaves or the
            // linger ends, its bytes read and dropped so that closing later
            // does not reset the Disconnect it is about to get.
            end = drain(&client_r).await;
        }
        client_left.store(true, std::sync::atomic::Ordering::Relaxed);
        // The client's half-close is passed on; a backend already gone
        // cannot take it and that is fine.
        if !backend_ended.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = backend_w.shutdown().await;
        }
        end
    };
    let down = async {
        let mut tracker = tracker;
        let end = pump(&backend_r, &mut client_w, buffer, use_splice, &metrics.bytes_down, Some(&mut tracker)).await;
        let ended = matches!(end, PumpEnd::Eof | PumpEnd::ReadError);
        if ended {
            backend_ended.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let mut how = DownEnd::Quiet;
        if ended && !client_left.load(std::sync::atomic::Ordering::Relaxed) {
            how = if tracker.server_said_goodbye() {
                // The server's own Disconnect reached the player: nothing to add.
                DownEnd::ServerClosed
            } else {
                // The backend ended the session under a player who is still
                // here. Say why (when a packet boundary and the state allow
                // it); the caller gives the client a moment to read it.
                let told = match tracker.disconnect(&lost_message()) {
                    Some(packet) => client_w.write_all(&packet).await.is_ok(),
                    None => false,
                };
                DownEnd::Lost { told }
            };
            // Close our side either way: the player's client closes on the FIN.
            let _ = client_w.shutdown().await;
        }
        (end, how)
    };
    tokio::pin!(up, down);
    // Boxed and made only when needed: a timer inline would sit in every
    // idle session's memory.
    let mut linger_timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    let (mut up_done, mut down_done) = (false, false);
    let mut result = RelayEnd::Client;
    loop {
        tokio::select! {
            end = &mut up, if !up_done => {
                up_done = true;
                // The client reset: nothing more to say to it.
                if matches!(end, PumpEnd::ReadError) && !down_done {
                    return Ok(RelayEnd::Client);
                }
                if down_done {
                    break;
                }
            }
            (end, how) = &mut down, if !down_done => {
                down_done = true;
                if let PumpEnd::WriteError(e) = end {
                    // Writing to the client failed: it is gone.
                    return if is_disconnect(&e) { Ok(RelayEnd::Client) } else { Err(e.into()) };
                }
                if up_done {
                    break;
                }
                match how {
                    DownEnd::Quiet => {}
                    DownEnd::ServerClosed => result = RelayEnd::ServerClosed,
                    DownEnd::Lost { told } => {
                        metrics.backend_lost.with_label_values(&[if told { "told" } else { "untold" }]).inc();
                        result = RelayEnd::BackendLost { told };
                    }
                }
                linger_timer = Some(Box::pin(tokio::time::sleep(linger)));
            }
            _ = async { linger_timer.as_mut().expect("set when the backend ended").await }, if linger_timer.is_some() && !up_done => break,
            _ = shared.hard_stop.cancelled() => return Ok(RelayEnd::Stopped),
        }
    }
    Ok(result)
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected
            | io::ErrorKind::ConnectionAborted
    )
}

/// How one direction of a relay ended.
#[derive(Debug)]
pub(super) enum PumpEnd {
    /// The reader closed its side.
    Eof,
    ReadError,
    WriteError(io::Error),
}

/// Bytes moved per turn before a direction yields to the other and to the
/// rest of the runtime, so one busy session cannot starve anything.
const PUMP_TURN_BYTES: usize = 256 * 1024;

/// Copy buffers kept per thread between bursts. A game sends small packets
/// in bursts, each of which would otherwise allocate and free a buffer of
/// `relay_buffer_bytes` (32 KiB: a large-bin malloc, which also makes glibc
/// consolidate its fast bins); the login profile showed malloc's share of
/// that. Bounded, so an idle proxy keeps at most this many per thread.
const BUFFERS_PER_THREAD: usize = 16;

thread_local! {
    static BUFFERS: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An empty buffer with room for at least `size` bytes.
fn take_buffer(size: usize) -> Vec<u8> {
    BUFFERS
        .with(|pool| pool.borrow_mut().pop())
        .filter(|b| b.capacity() >= size)
        .unwrap_or_else(|| Vec::with_capacity(size))
}

fn give_buffer(mut buf: Vec<u8>) {
    buf.clear();
    BUFFERS.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < BUFFERS_PER_THREAD {
            pool.push(buf);
        }
    });
}

/// One direction: wait for data with no buffer held, then move it while it
/// flows, until the reader runs dry. Bytes are counted as they go, so a
/// session that ends in an error still shows in the metrics. After the
/// reader's end of stream the writer is left open: the caller decides what
/// comes last.
///
/// How bytes move: with splice(2) (Linux, `limits.splice`) whenever nothing
/// needs to see them — `tracker` is None or has stopped following the
/// stream — else through a buffer of up to `buffer` bytes, freed when the
/// reader runs dry, that the tracker reads before each write.
async fn pump(
    reader: &tokio::net::tcp::ReadHalf<'_>,
    writer: &mut tokio::net::tcp::WriteHalf<'_>,
    buffer: usize,
    use_splice: bool,
    counter: &prometheus::IntCounter,
    mut tracker: Option<&mut ClientboundTracker>,
) -> PumpEnd {
    loop {
        if reader.readable().await.is_err() {
            return PumpEnd::ReadError;
        }
        #[cfg(target_os = "linux")]
        if use_splice && tracker.as_ref().is_none_or(|t| !t.following()) {
            match super::splice::turn(reader, writer, PUMP_TURN_BYTES, counter).await {
                super::splice::Turn::Dry => continue,
                super::splice::Turn::Yield => {
                    tokio::task::yield_now().await;
                    continue;
                }
                super::splice::Turn::Eof => return PumpEnd::Eof,
                super::splice::Turn::ReadError => return PumpEnd::ReadError,
                super::splice::Turn::WriteError(e) => return PumpEnd::WriteError(e),
                super::splice::Turn::Unavailable => {}
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = use_splice;
        let mut buf = take_buffer(buffer);
        let mut turn = 0usize;
        loop {
            buf.clear();
            match read_chunk(reader, &mut buf) {
                Ok((0, _)) => return PumpEnd::Eof,
                Ok((n, drained)) => {
                    if let Some(t) = tracker.as_deref_mut() {
                        t.feed(&buf[..n]);
                    }
                    if let Err(e) = writer.write_all(&buf[..n]).await {
                        return PumpEnd::WriteError(e);
                    }
                    counter.inc_by(n as u64);
                    if drained {
                        give_buffer(buf);
                        break;
                    }
                    turn += n;
                    if turn >= PUMP_TURN_BYTES {
                        turn = 0;
                        tokio::task::yield_now().await;
                    }
                }
                // Dry: give the buffer back and wait for more with nothing held.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    give_buffer(buf);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return PumpEnd::ReadError,
            }
        }
    }
}

/// One read into `buf`'s spare capacity: the bytes read, and whether the
/// socket is known to be drained (then the caller waits for readiness
/// without trying another read).
fn read_chunk(reader: &tokio::net::tcp::ReadHalf<'_>, buf: &mut Vec<u8>) -> io::Result<(usize, bool)> {
    #[cfg(target_os = "linux")]
    return super::splice::recv_draining(reader.as_ref(), buf);
    #[cfg(not(target_os = "linux"))]
    return reader.try_read_buf(buf).map(|n| (n, false));
}

/// Reads and drops until end of stream or an error.
pub(super) async fn drain(reader: &tokio::net::tcp::ReadHalf<'_>) -> PumpEnd {
    // On the heap: an array here would sit in every session's future.
    let mut scratch = vec![0u8; 1024];
    loop {
        if reader.readable().await.is_err() {
            return PumpEnd::ReadError;
        }
        match reader.try_read(&mut scratch) {
            Ok(0) => return PumpEnd::Eof,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(_) => return PumpEnd::ReadError,
        }
    }
}
