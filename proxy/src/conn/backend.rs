//! Reaching a route's backends: connect (least players first, failing over
//! in round-robin order) and ask one for its status.

use std::time::Duration;

use bytes::BytesMut;
use respawn_codec::{proxy_protocol, status::decode_status_response};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::{Instant, timeout},
};
use tracing::warn;

use super::Conn;
use crate::{route::Route, server::Shared};

/// Opens a connection to one of the route's backends, trying each in turn.
/// `None` when none answers (each failure is logged; the caller counts it).
pub(super) async fn connect(shared: &Shared, route: &Route, per_try: Duration) -> Option<(TcpStream, String)> {
    let mut order: Vec<&str> = route.backend_order().collect();
    if order.len() > 1 {
        // Least players first; the sort is stable, so ties keep round-robin order.
        order.sort_by_key(|b| shared.load_of(b));
    }
    for addr in order {
        let started = Instant::now();
        match timeout(per_try, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                route.metrics(&shared.metrics).backend_connect_seconds.observe(started.elapsed().as_secs_f64());
                return Some((stream, addr.to_owned()));
            }
            Ok(Err(e)) => warn!(route = %route.name, backend = addr, error = %e, "backend connect failed"),
            Err(_) => warn!(route = %route.name, backend = addr, "backend connect timed out"),
        }
    }
    None
}

/// Asks the backend for its status with `request` (a handshake and a status
/// request, the client's own bytes when there are some).
pub(super) async fn fetch_status(conn: &Conn<'_>, route: &Route, request: &[u8]) -> Option<String> {
    let limits = &conn.state.config.limits;
    let fetch = async {
        let (mut backend, _) = connect(conn.shared, route, limits.backend_connect_timeout()).await?;
        if route.proxy_protocol {
            backend.write_all(&proxy_protocol::encode_header(conn.client_addr, conn.local)).await.ok()?;
        }
        backend.write_all(request).await.ok()?;
        let mut buf = BytesMut::with_capacity(4096);
        loop {
            match decode_status_response(&buf, limits.max_status_bytes) {
                Ok(Some((json, _))) => return Some(json),
                Ok(None) => {}
                Err(e) => {
                    warn!(route = %route.name, error = %e, "backend sent a bad status response");
                    return None;
                }
            }
            buf.reserve(4096);
            if backend.read_buf(&mut buf).await.ok()? == 0 {
                return None;
            }
        }
    };
    match timeout(limits.status_timeout(), fetch).await {
        Ok(found) => found,
        Err(_) => {
            warn!(route = %route.name, "backend status timed out");
            None
        }
    }
}
