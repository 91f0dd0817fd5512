//! The server list: the modern status exchange and the legacy 0xFE pings,
//! answered from the cache, the live backend, the last known status or a
//! made-up one. A status ping never wakes a server.

use std::{borrow::Cow, time::Duration};

use bytes::BytesMut;
use respawn_codec::{
    ProtocolError,
    handshake::{Handshake, NextState, encode_handshake},
    legacy::{LegacyStatus, decode_legacy, encode_legacy_response},
    normalize_host,
    status::{StatusC2s, decode_status_c2s, encode_pong, encode_status_request, encode_status_response},
};
use respawn_contract::Phase;
use tokio::{
    io::AsyncWriteExt,
    net::TcpStream,
    time::{Instant, timeout_at},
};

use super::{Conn, ConnError, Outcome, Request, backend, fill, fill_in, local_for, read_until, write_and_close};
use crate::{route::Route, status_cache};

/// A legacy client gives no protocol number; the backend is asked with this one
/// (1.8, which every modern server answers).
const LEGACY_FETCH_PROTOCOL: i32 = 47;

/// The status JSON to show for `route` (cache, live, stale, fallback or unknown).
async fn status_json(
    conn: &Conn<'_>,
    route: Option<&Route>,
    host: &str,
    protocol: i32,
    request: Cow<'_, [u8]>,
) -> String {
    let Conn { shared, state, .. } = *conn;
    let texts = &state.config.status;
    let count = |result: &str| shared.metrics.status_request(result);
    let Some(route) = route else {
        count("unknown");
        return status_cache::synthesize(&texts.version_name, protocol, &fill_in(&texts.unknown_motd, host, None), 0);
    };
    // A managed server that is not up: answer for it, never wake it.
    if let Some(phase) = shared.phase(&route.name)
        && phase != Phase::Running
    {
        count("sleeping");
        let motd = match phase {
            Phase::Sleeping | Phase::Stopping | Phase::Unknown => &texts.sleeping_motd,
            Phase::Starting | Phase::Failed | Phase::Running => &texts.starting_motd,
        };
        let motd = fill_in(motd, host, Some(route));
        return match shared.cache.last_known(&route.name, protocol) {
            Some(json) => status_cache::with_motd(&json, &motd),
            None => status_cache::synthesize(&texts.version_name, protocol, &motd, 0),
        };
    }
    if let Some(json) = shared.cache.fresh(&route.name, protocol, texts.cache_ttl()) {
        count("hit");
        return json.to_string();
    }
    if let Some(json) = backend::fetch_status(conn, route, &request).await {
        count("miss");
        shared.cache.put(&route.name, protocol, json.as_str().into());
        return json;
    }
    if let Some(json) = shared.cache.last_known(&route.name, protocol) {
        count("stale");
        return status_cache::with_motd(&json, &fill_in(&texts.stale_motd, host, Some(route)));
    }
    count("fallback");
    match &route.fallback_status {
        Some(json) => json.clone(),
        None => status_cache::synthesize(
            &texts.version_name,
            protocol,
            &fill_in(&texts.unreachable_motd, host, Some(route)),
            0,
        ),
    }
}

/// The modern exchange: status request → response, ping → pong.
pub(super) async fn exchange(
    conn: &Conn<'_>,
    client: &mut TcpStream,
    buf: &mut BytesMut,
    request: &Request,
    deadline: Instant,
) -> Result<Outcome, ConnError> {
    let Conn { shared, state, .. } = *conn;
    let Request { hs, hs_len, host, route } = request;
    let route = route.as_deref();
    let mut at = *hs_len;
    let mut answered = false;
    let mut deadline = deadline;
    loop {
        let (packet, used) = match read_until(client, buf, at, deadline, decode_status_c2s).await {
            Ok(p) => p,
            // Clients may close right after the response without pinging.
            Err(ConnError::Eof) if answered => return Ok(Outcome::Status),
            Err(e) => return Err(e),
        };
        at += used;
        match packet {
            StatusC2s::Request if !answered => {
                // Fast path: a fresh cached frame for a server that is up.
                let cached = route
                    .filter(|r| shared.phase(&r.name).is_none_or(|p| p == Phase::Running))
                    .and_then(|r| shared.cache.fresh_frame(&r.name, hs.protocol, state.config.status.cache_ttl()));
                let out = match cached {
                    Some(frame) => {
                        shared.metrics.status_request("hit");
                        frame
                    }
                    None => {
                        let request = Cow::Borrowed(&buf[..at]);
                        let json = status_json(conn, route, host, hs.protocol, request).await;
                        encode_status_response(&json).into()
                    }
                };
                timeout_at(deadline.max(Instant::now() + Duration::from_secs(1)), client.write_all(&out))
                    .await
                    .map_err(|_| ConnError::Timeout)??;
                answered = true;
                // The ping follows the response; give it a fresh window.
                deadline = Instant::now() + state.config.limits.first_packet_timeout();
            }
            StatusC2s::Request => return Err(ProtocolError::Invalid("second status request").into()),
            StatusC2s::Ping(payload) => {
                // No shutdown(2) before the close: the exchange is complete
                // and nothing is left unread, so dropping the socket sends
                // the same FIN for one syscall less per server-list ping.
                timeout_at(deadline, client.write_all(&encode_pong(payload)))
                    .await
                    .map_err(|_| ConnError::Timeout)??;
                return Ok(Outcome::Status);
            }
        }
    }
}

/// A legacy 0xFE ping (beta to 1.6), answered in the legacy format from the
/// same status a modern client would see.
pub(super) async fn legacy(
    conn: &Conn<'_>,
    client: &mut TcpStream,
    buf: &mut BytesMut,
    deadline: Instant,
) -> Result<Outcome, ConnError> {
    let wait = conn.state.config.limits.legacy_ping_wait();
    let ping = loop {
        if let Some((ping, _)) = decode_legacy(buf, true)? {
            break ping;
        }
        // The short forms have no end marker: after a quiet `wait`, take what is here.
        match fill(client, buf, deadline.min(Instant::now() + wait)).await {
            Ok(()) => {}
            Err(ConnError::Timeout) if Instant::now() < deadline => {
                break decode_legacy(buf, false)?.expect("a legacy prefix always decodes when no more may come").0;
            }
            Err(e) => return Err(e),
        }
    };
    let raw_host = ping.host.clone().unwrap_or_default();
    let host = normalize_host(&raw_host).into_owned();
    let span = tracing::Span::current();
    span.record("host", host.as_str());
    span.record("next", "legacy_status");
    let route = conn.state.routes.lookup(&raw_host).cloned();
    let conn = Conn { local: local_for(client, conn.local, route.as_deref()), ..*conn };
    // Ask the backend in the modern protocol; it never sees the legacy bytes.
    let mut request = encode_handshake(&Handshake {
        protocol: LEGACY_FETCH_PROTOCOL,
        host: raw_host,
        port: ping.port.unwrap_or(25565),
        next_state: NextState::Status,
    });
    request.extend(encode_status_request());
    let json = status_json(&conn, route.as_deref(), &host, LEGACY_FETCH_PROTOCOL, request.into()).await;
    let s = status_cache::summarize(&json);
    let reply = encode_legacy_response(
        ping.form,
        &LegacyStatus { protocol: s.protocol, version: &s.version, motd: &s.motd, online: s.online, max: s.max },
    );
    write_and_close(client, &reply, deadline.max(Instant::now() + Duration::from_secs(1))).await?;
    Ok(Outcome::LegacyStatus)
}
