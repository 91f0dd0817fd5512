//! A login: read Login Start, refuse unknown hosts, pass the wake gate,
//! connect the backend and forward the buffered bytes unchanged ([`admit`]);
//! then relay and count the player in and out ([`serve`]).

use std::sync::Arc;

use bytes::BytesMut;
use respawn_codec::{
    clientbound::ClientboundTracker,
    handshake::{Handshake, NextState, encode_handshake},
    login::{decode_login_start, encode_login_disconnect},
    proxy_protocol,
    status::encode_status_request,
};
use tokio::{io::AsyncWriteExt, net::TcpStream, time::Instant};
use tracing::{debug, info};

use super::{
    Conn, ConnError, Outcome, Request, backend, fill_in, local_for, read_until,
    relay::{self, RelayEnd, RelaySettings},
    wake_gate::{self, HoldResult},
    write_and_close,
};
use crate::route::Route;

/// A player let in: its backend connection, with the prelude already sent.
struct Admitted {
    route: Arc<Route>,
    server: TcpStream,
    backend_addr: String,
    player: String,
}

/// `buf` holds the handshake and what followed; it is emptied (and its
/// memory freed) once its bytes went to the backend. Borrowed rather than
/// moved, like `request`: every idle session keeps this future, and a moved
/// value would sit in both this frame and the caller's.
pub(super) async fn serve(
    conn: &Conn<'_>,
    client: &mut TcpStream,
    buf: &mut BytesMut,
    request: &Request,
    started: Instant,
) -> Result<Outcome, ConnError> {
    let Admitted { route, mut server, backend_addr, player } = match admit(conn, client, buf, request, started).await? {
        Ok(admitted) => admitted,
        Err(outcome) => return Ok(outcome),
    };
    *buf = BytesMut::new();
    let Conn { shared, state, .. } = *conn;
    let limits = &state.config.limits;
    let route_metrics = route.metrics(&shared.metrics);
    route_metrics.logins.inc();
    route_metrics.players_online.inc();
    // Per-login lines at info cost ~11 % of the proxy's CPU under load
    // (bench/README.md): joins and leaves are metrics, details are debug.
    debug!(%player, "player relayed");
    shared.add_load(&backend_addr, 1);
    if let Some(lc) = &shared.lifecycle {
        lc.session_opened(&route.name, &backend_addr);
    }
    let result = relay::relay(
        shared,
        client,
        &mut server,
        RelaySettings { buffer: limits.relay_buffer_bytes, splice: limits.splice, linger: limits.close_linger() },
        ClientboundTracker::new(request.hs.protocol),
        // The text is filled in only if it is ever needed (not per login).
        || fill_in(&state.config.status.backend_lost_disconnect, &request.host, Some(&route)),
    )
    .await;
    shared.add_load(&backend_addr, -1);
    if let Some(lc) = &shared.lifecycle {
        lc.session_closed(&route.name, &backend_addr);
    }
    route_metrics.players_online.dec();
    match result {
        // Per player at debug (a crash ends many sessions at once; the
        // runtime logs the crash, respawn_proxy_backend_lost_total counts these).
        Ok(RelayEnd::BackendLost { told }) => {
            debug!(%player, told, "backend ended the session while the player was connected")
        }
        Ok(RelayEnd::ServerClosed) => debug!(%player, "the server ended the session (Disconnect)"),
        _ => debug!(%player, "player left"),
    }
    result?;
    Ok(Outcome::Relayed)
}

/// Everything before the relay. `Ok(Err(outcome))`: the player was turned
/// away with a Disconnect.
async fn admit(
    conn: &Conn<'_>,
    client: &mut TcpStream,
    buf: &mut BytesMut,
    request: &Request,
    started: Instant,
) -> Result<Result<Admitted, Outcome>, ConnError> {
    let Conn { shared, state, client_addr, .. } = *conn;
    let Request { hs, hs_len, host, route } = request;
    let limits = &state.config.limits;
    let texts = &state.config.status;
    let deadline = started + limits.first_packet_timeout();
    let (login, ls_len) = read_until(client, buf, *hs_len, deadline, |b| decode_login_start(b, hs.protocol)).await?;
    let login_at = Instant::now();
    shared.metrics.first_packet_seconds.observe(login_at.duration_since(started).as_secs_f64());
    let refuse = |text: &str, route: Option<&Route>| encode_login_disconnect(&fill_in(text, host, route));
    let Some(mut route) = route.clone() else {
        info!(player = %login.name, %host, client = %client_addr, "login for an unknown host");
        write_and_close(
            client,
            &refuse(&texts.unknown_disconnect, None),
            Instant::now() + limits.first_packet_timeout(),
        )
        .await?;
        return Ok(Err(Outcome::UnknownHost));
    };
    debug!(player = %login.name, uuid = ?login.uuid, prelude = hs_len + ls_len, "login start");
    if let Some(lc) = &shared.lifecycle {
        match wake_gate::hold(conn, &**lc, &route, &login, client, buf, login_at).await? {
            HoldResult::Up => {}
            HoldResult::Woke => {
                // Backends may have appeared during the wake (pods on
                // Kubernetes): route with the table as it is now.
                if let Some(now) = shared.state.load().routes.lookup(&hs.host) {
                    route = now.clone();
                }
                // Keep the real status for when it sleeps again: one status
                // round trip before the player goes in.
                let mut probe = encode_handshake(&Handshake { next_state: NextState::Status, ..hs.clone() });
                probe.extend(encode_status_request());
                if let Some(json) = backend::fetch_status(conn, &route, &probe).await {
                    shared.cache.put(&route.name, hs.protocol, json.into());
                }
            }
            HoldResult::Refused(text) => {
                write_and_close(client, &refuse(&text, Some(&route)), Instant::now() + limits.first_packet_timeout())
                    .await?;
                return Ok(Err(Outcome::WakeRefused));
            }
        }
    }
    let Some((mut server, backend_addr)) = backend::connect(shared, &route, limits.backend_connect_timeout()).await
    else {
        // Counted here, not in `backend::connect`: a failed status probe is
        // no rejected connection.
        shared.metrics.rejects.with_label_values(&[Outcome::BackendUnreachable.as_str()]).inc();
        let msg = refuse(&texts.unreachable_disconnect, Some(&route));
        write_and_close(client, &msg, Instant::now() + limits.first_packet_timeout()).await?;
        return Ok(Err(Outcome::BackendUnreachable));
    };
    if route.proxy_protocol {
        let local = local_for(client, conn.local, Some(&route));
        server.write_all(&proxy_protocol::encode_header(client_addr, local)).await?;
    }
    server.write_all(buf).await?;
    Ok(Ok(Admitted { route, server, backend_addr, player: login.name }))
}
