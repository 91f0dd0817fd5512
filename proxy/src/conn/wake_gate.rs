//! The wake gate: a login for a managed server that is not running asks the
//! runtime to wake it and holds the player (bounded by `limits.wake_hold_ms`)
//! until it runs, fails, or takes too long.

use std::time::Duration;

use bytes::BytesMut;
use respawn_codec::login::LoginStart;
use respawn_contract::{Lifecycle, Phase};
use tokio::{net::TcpStream, time::Instant};
use tracing::info;

use super::{Conn, ConnError, fill};
use crate::route::Route;

pub(super) enum HoldResult {
    /// Running already (or not managed): connect.
    Up,
    /// Was asleep and is up now: connect.
    Woke,
    /// Refuse with this Disconnect text.
    Refused(String),
}

/// Holds a login while its sleeping server wakes.
pub(super) async fn hold(
    conn: &Conn<'_>,
    lc: &dyn Lifecycle,
    route: &Route,
    login: &LoginStart,
    client: &mut TcpStream,
    buf: &mut BytesMut,
    login_at: Instant,
) -> Result<HoldResult, ConnError> {
    let Conn { shared, state, .. } = *conn;
    let Some(mut rx) = lc.watch(&route.name) else { return Ok(HoldResult::Up) };
    if rx.borrow_and_update().phase == Phase::Running {
        return Ok(HoldResult::Up);
    }
    let texts = &state.config.status;
    let holds = |result: &str| shared.metrics.holds.with_label_values(&[result]).inc();
    if !lc.may_wake(&route.name, &login.name, login.uuid) {
        holds("not_allowed");
        return Ok(HoldResult::Refused(texts.not_allowed_disconnect.clone()));
    }
    let woke = Instant::now();
    lc.wake(&route.name, &login.name);
    shared.metrics.wake_signal_seconds.observe(woke.duration_since(login_at).as_secs_f64());
    shared.metrics.wakes.with_label_values(&[&*route.name]).inc();
    info!(player = %login.name, route = %route.name, "holding the player while the server wakes");
    let deadline = woke + state.config.limits.wake_hold();
    loop {
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    holds("kicked_failed");
                    return Ok(HoldResult::Refused(texts.wake_failed_disconnect.replace("{reason}", "the runtime stopped")));
                }
                let now = rx.borrow_and_update().clone();
                match now.phase {
                    Phase::Running => {
                        holds("joined");
                        shared.metrics.wake_seconds.observe(woke.elapsed().as_secs_f64());
                        info!(player = %login.name, route = %route.name, waited_ms = woke.elapsed().as_millis() as u64, "server up: letting the player in");
                        return Ok(HoldResult::Woke);
                    }
                    Phase::Failed => {
                        holds("kicked_failed");
                        let reason = now.reason.as_deref().unwrap_or("the server failed");
                        return Ok(HoldResult::Refused(texts.wake_failed_disconnect.replace("{reason}", reason)));
                    }
                    _ => {}
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                holds("kicked_starting");
                let estimate = lc.start_estimate(&route.name);
                let left = estimate.saturating_sub(woke.elapsed()).max(Duration::from_secs(5));
                return Ok(HoldResult::Refused(texts.starting_disconnect.replace("{seconds}", &left.as_secs().to_string())));
            }
            // Notice a player who gives up; keep anything they send for the backend.
            more = fill(client, buf, deadline + Duration::from_secs(1)) => {
                if let Err(e) = more {
                    holds("left");
                    return Err(e);
                }
            }
        }
    }
}
