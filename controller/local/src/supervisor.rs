//! One server's supervisor: observe (signals from the proxy and the API, the
//! process), ask the scaling policy, act (start, stop), and watch readiness
//! and crashes. Every decision to run or not is the policy's; this loop only
//! turns it into processes.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use respawn_contract::{
    Phase, PhaseState,
    policy::{self, Memory, Observed},
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    LocalRuntime, Managed, probe,
    process::{self, GroupGuard, Process},
};

/// How often the policy is re-evaluated without any signal.
const TICK: Duration = Duration::from_millis(500);
const PROBE_EVERY: Duration = Duration::from_millis(200);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(60);

pub(crate) async fn supervise(rt: Arc<LocalRuntime>, m: Arc<Managed>, shutdown: CancellationToken) {
    let epoch = Instant::now();
    let spec = m.config.policy();
    let mut memory = Memory::default();
    let mut want_up = false;
    let mut proc: Option<Process> = None;
    let mut failures: u32 = 0;
    let mut retry_at: Option<Instant> = None;
    let mut last_reason = None;
    let start_timeout = Duration::from_millis(m.config.start_timeout_ms);
    loop {
        // 1. Observe and decide.
        let (wake, players, hibernate, backup_running) = {
            let mut s = m.signals();
            (
                std::mem::take(&mut s.wake),
                s.sessions.values().sum::<u32>(),
                std::mem::take(&mut s.hibernate),
                s.backup_running,
            )
        };
        let observed = Observed {
            replicas: u32::from(want_up),
            players: if want_up { vec![players] } else { vec![] },
            wake,
            pinned: m.config.pinned,
            backup_running,
            // A wake that arrives with the stop request wins (a player is waiting).
            hibernate: hibernate && !wake,
            starting: proc.as_ref().is_some_and(|p| !p.ready),
        };
        let d = policy::decide(&spec, &observed, memory, epoch.elapsed());
        memory = d.memory;
        let quiet = matches!(d.reason, policy::Reason::IdleWaiting { .. });
        if last_reason.as_ref() != Some(&d.reason) && !quiet {
            info!(replicas = d.replicas, reason = %d.reason, "scale decision");
        }
        last_reason = Some(d.reason);
        if wake && proc.is_none() {
            // A wake cancels any crash backoff: a player is waiting now.
            retry_at = None;
        }
        want_up = d.replicas > 0;

        // 2. Act.
        if want_up && proc.is_none() && retry_at.is_none_or(|t| Instant::now() >= t) {
            match process::start(&rt.runtime, &m).await {
                Ok(mut child) => {
                    rt.metrics.starts.with_label_values(&[&m.config.name]).inc();
                    m.phase.send_replace(Phase::Starting.into());
                    *m.stdin.lock().await = child.stdin.take();
                    let group = GroupGuard::new(child.id());
                    proc = Some(Process { child, started: Instant::now(), ready: false, group });
                }
                Err(e) => {
                    warn!(error = %e, "server failed to start");
                    failures += 1;
                    retry_at = Some(Instant::now() + backoff(failures));
                    m.phase.send_replace(PhaseState::failed(format!("could not start: {e}")));
                }
            }
        }
        if !want_up {
            if let Some(p) = proc.take() {
                m.phase.send_replace(Phase::Stopping.into());
                rt.metrics.hibernations.with_label_values(&[&m.config.name]).inc();
                process::stop(&m, p).await;
                info!("server stopped (hibernated)");
            }
            if m.phase.borrow().phase != Phase::Sleeping {
                m.phase.send_replace(Phase::Sleeping.into());
            }
            retry_at = None;
        }

        // 3. Wait for something to happen.
        let probe_due = proc.as_ref().is_some_and(|p| !p.ready);
        tokio::select! {
            _ = shutdown.cancelled() => return stop_for_good(&m, proc).await,
            // Removed or replaced: stop it, leave its data.
            _ = m.cancel.cancelled() => return stop_for_good(&m, proc).await,
            _ = m.notify.notified() => {}
            _ = tokio::time::sleep(if probe_due { PROBE_EVERY } else { TICK }) => {}
            status = async { proc.as_mut().expect("guarded").child.wait().await }, if proc.is_some() => {
                let p = proc.take().expect("guarded");
                let why = match status {
                    Ok(s) => format!("the server process exited ({s})"),
                    Err(e) => format!("the server process was lost ({e})"),
                };
                warn!(reason = %why, ready = p.ready, "server crashed");
                rt.metrics.crashes.with_label_values(&[&m.config.name]).inc();
                failures += 1;
                retry_at = Some(Instant::now() + backoff(failures));
                m.signals().sessions.clear();
                m.phase.send_replace(PhaseState::failed(why));
                continue;
            }
        }

        // 4. Readiness and start timeout.
        if let Some(p) = proc.as_mut() {
            if !p.ready {
                if probe::status_ping(&m.config.address, PROBE_EVERY).await {
                    p.ready = true;
                    let took = p.started.elapsed();
                    info!(took_ms = took.as_millis() as u64, "server ready");
                    rt.metrics.start_seconds.with_label_values(&[&m.config.name]).observe(took.as_secs_f64());
                    m.signals().record_start(took);
                    m.phase.send_replace(Phase::Running.into());
                } else if p.started.elapsed() > start_timeout {
                    let p = proc.take().expect("present");
                    warn!("server not ready within the start timeout");
                    rt.metrics.crashes.with_label_values(&[&m.config.name]).inc();
                    process::stop(&m, p).await;
                    failures += 1;
                    retry_at = Some(Instant::now() + backoff(failures));
                    m.phase.send_replace(PhaseState::failed(format!("not ready within {}s", start_timeout.as_secs())));
                }
            } else if p.started.elapsed() > BACKOFF_MAX {
                failures = 0; // healthy for a while: the next crash starts the backoff over
            }
        }
    }
}

async fn stop_for_good(m: &Managed, proc: Option<Process>) {
    if let Some(p) = proc {
        m.phase.send_replace(Phase::Stopping.into());
        process::stop(m, p).await;
    }
    m.phase.send_replace(Phase::Sleeping.into());
}

pub(crate) fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(30), BACKOFF_MAX);
    }
}
