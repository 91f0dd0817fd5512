//! Zero-copy relaying on Linux: bytes go socket → pipe → socket with
//! splice(2) and never enter the proxy's memory.
//!
//! A copy relay moves every byte twice across the user/kernel boundary (read
//! into a buffer, write out of it); splice moves page references instead.
//! Used for a direction the proxy does not need to look at: client → server
//! always, server → client once the [`ClientboundTracker`] has stopped
//! following it (online mode: the stream is encrypted).
//!
//! Pipes are taken only while data flows and go back to a small per-thread
//! pool when the socket runs dry, so an idle session holds none (an idle
//! player costs two sockets, not six descriptors).
//!
//! Hand-written: the crates that splice between tokio sockets (tokio-splice
//! and the like) hold a pipe per direction for the whole session, which is
//! exactly the per-idle-session cost this avoids.
//!
//! [`ClientboundTracker`]: respawn_codec::clientbound::ClientboundTracker

use std::{cell::RefCell, io, os::fd::OwnedFd};

use rustix::{
    buffer::spare_capacity,
    net::{RecvFlags, recv},
    pipe::{PipeFlags, SpliceFlags, pipe_with, splice},
};
use tokio::{
    io::Interest,
    net::{
        TcpStream,
        tcp::{ReadHalf, WriteHalf},
    },
};

/// A pipe's default capacity (16 pages); each splice moves up to this much.
const PIPE_CHUNK: usize = 64 * 1024;
/// Empty pipes kept per thread for the next flowing session.
const POOL_PER_THREAD: usize = 64;

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

thread_local! {
    static POOL: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

fn take() -> io::Result<Pipe> {
    if let Some(pipe) = POOL.with(|p| p.borrow_mut().pop()) {
        return Ok(pipe);
    }
    let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
    Ok(Pipe { read, write })
}

/// Returns an empty pipe to this thread's pool (or closes it).
fn give(pipe: Pipe) {
    POOL.with(|p| {
        let mut pool = p.borrow_mut();
        if pool.len() < POOL_PER_THREAD {
            pool.push(pipe);
        }
    });
}

/// How a splice turn ended.
pub(crate) enum Turn {
    /// The reader has nothing more for now: wait for readiness again.
    Dry,
    /// `turn_bytes` moved: yield, then go on.
    Yield,
    Eof,
    ReadError,
    WriteError(io::Error),
    /// No pipe could be made (descriptors exhausted): copy instead.
    Unavailable,
}

/// Moves bytes from `reader` to `writer` until the reader runs dry, ends,
/// fails, or `turn_bytes` have moved. Every byte read is written before this
/// returns (or the writer failed), so nothing is left in the pipe.
pub(crate) async fn turn(
    reader: &ReadHalf<'_>,
    writer: &mut WriteHalf<'_>,
    turn_bytes: usize,
    counter: &prometheus::IntCounter,
) -> Turn {
    let Ok(pipe) = take() else { return Turn::Unavailable };
    let (from, to) = (reader.as_ref(), writer.as_ref());
    let mut moved = 0usize;
    loop {
        let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
        let n = match from.try_io(Interest::READABLE, || Ok(splice(from, None, &pipe.write, None, PIPE_CHUNK, flags)?))
        {
            Ok(0) => {
                give(pipe);
                return Turn::Eof;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                give(pipe);
                return Turn::Dry;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Turn::ReadError,
        };
        let mut left = n;
        while left > 0 {
            match to.try_io(Interest::WRITABLE, || Ok(splice(&pipe.read, None, to, None, left, flags)?)) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = to.writable().await {
                        return Turn::WriteError(e);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The pipe still holds bytes: it is closed, not pooled.
                Err(e) => return Turn::WriteError(e),
            }
        }
        counter.inc_by(n as u64);
        moved += n;
        if moved >= turn_bytes {
            give(pipe);
            return Turn::Yield;
        }
    }
}

/// Reads into `buf`'s spare capacity (which must not be empty); returns the
/// bytes read and whether the socket is now known to be drained.
///
/// A TCP read shorter than the room offered means the receive queue was
/// emptied. tokio only forgets a socket's readiness when an operation
/// reports WouldBlock, so a plain read loop pays one more `recv` that fails
/// with EAGAIN per burst — for a game's small packets, one wasted syscall per
/// packet. Here the short read itself is reported as WouldBlock to
/// `try_io` (the bytes are kept), which clears the readiness the same way
/// (and, as for a real EAGAIN, not if an event arrived meanwhile).
pub(crate) fn recv_draining(stream: &TcpStream, buf: &mut Vec<u8>) -> io::Result<(usize, bool)> {
    let mut short = None;
    let result = stream.try_io(Interest::READABLE, || {
        let room = buf.capacity() - buf.len();
        let (n, _) = recv(stream, spare_capacity(buf), RecvFlags::empty())?;
        if n > 0 && n < room {
            short = Some(n);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match (result, short) {
        (Ok(n), _) => Ok((n, false)),
        (Err(_), Some(n)) => Ok((n, true)),
        (Err(e), None) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    /// Two connected loopback pairs: (a writer's peer, the relay's reader)
    /// and (the relay's writer, the final reader).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let connect = TcpStream::connect(listener.local_addr().unwrap());
        let (accepted, connected) = tokio::join!(listener.accept(), connect);
        (connected.unwrap(), accepted.unwrap().0)
    }

    fn counter() -> prometheus::IntCounter {
        prometheus::IntCounter::new("t", "t").unwrap()
    }

    #[tokio::test]
    async fn turns_move_every_byte_in_order_and_report_the_end() {
        let (mut source, mut from) = pair().await;
        let (mut to, mut sink) = pair().await;
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            source.write_all(&sent).await.unwrap();
            // The end of stream must come through as Eof.
            drop(source);
        });
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            sink.read_to_end(&mut got).await.unwrap();
            got
        });
        let count = counter();
        let (mut yields, mut dries) = (0, 0);
        {
            let (r, _) = from.split();
            let (_, mut w) = to.split();
            loop {
                r.readable().await.unwrap();
                match turn(&r, &mut w, 256 * 1024, &count).await {
                    Turn::Dry => dries += 1,
                    Turn::Yield => yields += 1,
                    Turn::Eof => break,
                    Turn::ReadError => panic!("read error"),
                    Turn::WriteError(e) => panic!("write error: {e}"),
                    Turn::Unavailable => panic!("no pipe"),
                }
            }
        }
        drop(to);
        writer.await.unwrap();
        let got = reader.await.unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got == data, "bytes arrive unchanged and in order");
        assert_eq!(count.get(), data.len() as u64);
        // 3 MB in 256 KiB turns: it yielded along the way.
        assert!(yields >= 5, "yields {yields}, dries {dries}");
        // The pipes went back to the pool, empty.
        assert!(POOL.with(|p| !p.borrow().is_empty()));
    }

    #[tokio::test]
    async fn a_vanished_writer_is_a_write_error() {
        let (mut source, mut from) = pair().await;
        let (mut to, sink) = pair().await;
        #[allow(deprecated)] // a reset, so the next write fails at once
        sink.set_linger(Some(std::time::Duration::ZERO)).unwrap();
        drop(sink);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        source.write_all(&[1u8; 100_000]).await.unwrap();
        let (r, _) = from.split();
        let (_, mut w) = to.split();
        let mut ended = None;
        for _ in 0..100 {
            r.readable().await.unwrap();
            match turn(&r, &mut w, 256 * 1024, &counter()).await {
                Turn::Dry | Turn::Yield => continue,
                Turn::WriteError(_) => {
                    ended = Some("write error");
                    break;
                }
                Turn::Eof => ended = Some("eof"),
                Turn::ReadError => ended = Some("read error"),
                Turn::Unavailable => ended = Some("unavailable"),
            }
            break;
        }
        assert_eq!(ended, Some("write error"));
    }

    #[tokio::test]
    async fn a_short_read_says_the_socket_is_drained() {
        let (mut source, from) = pair().await;
        source.write_all(b"hello").await.unwrap();
        from.readable().await.unwrap();
        let mut buf = Vec::with_capacity(64);
        let (n, drained) = recv_draining(&from, &mut buf).unwrap();
        assert_eq!((n, drained), (5, true));
        // The bytes are kept (rustix grew the Vec) although try_io was told
        // WouldBlock.
        assert_eq!(buf, b"hello");
        // A read that fills the room says nothing about what is left.
        source.write_all(&[7u8; 100]).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        from.readable().await.unwrap();
        let mut small = Vec::with_capacity(10);
        let (n, drained) = recv_draining(&from, &mut small).unwrap();
        assert_eq!((n, drained), (10, false));
    }
}
