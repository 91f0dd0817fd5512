//! The pure half of a reconcile: what the policy decides for a server given
//! what was observed ([`decide`]), and the status to write after it
//! ([`next_status`]). No API server, no clock: unit tests check both.

use std::time::{Duration, SystemTime};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use respawn_contract::policy::{self, Decision, Memory, Observed, PolicySpec};

use super::ACTIVITY_RESOLUTION;
use crate::{
    crd::{MinecraftServer, MinecraftServerSpec, MinecraftServerStatus, ScaleDecision, ServerPhase},
    signals::WAKE_ANNOTATION,
};

/// Written by the management API's `stop` (an RFC 3339 time): scale to zero
/// now, even with players on or above the minimum, until a later wake request
/// (the proxy's or the API's) supersedes it. Comparing the two times keeps the
/// controller stateless about it.
pub const HIBERNATE_ANNOTATION: &str = "respawn.dev/hibernate-requested-at";

/// A hibernate request newer than the last wake request is in force.
pub(super) fn hibernate_requested(mcs: &MinecraftServer) -> bool {
    let at = |key: &str| mcs.annotations().get(key).and_then(|t| t.parse::<Timestamp>().ok());
    match (at(HIBERNATE_ANNOTATION), at(WAKE_ANNOTATION)) {
        (Some(hibernate), Some(wake)) => hibernate > wake,
        (hibernate, _) => hibernate.is_some(),
    }
}

pub fn policy_spec(spec: &MinecraftServerSpec) -> PolicySpec {
    PolicySpec {
        min_replicas: spec.replicas.min,
        max_replicas: spec.replicas.max.max(1),
        players_per_replica: spec.players_per_replica.max(1),
        buffer: spec.buffer,
        idle_timeout: Duration::from_secs(spec.idle_timeout_seconds.into()),
        min_online: Duration::from_secs(spec.min_online_seconds.into()),
        stabilization: Duration::from_secs(spec.stabilization_seconds.into()),
        drain_timeout: Duration::from_secs(spec.drain_timeout_seconds.into()),
    }
}

pub(super) fn to_epoch(t: &str) -> Option<Duration> {
    let ts: Timestamp = t.parse().ok()?;
    Some(Duration::from_nanos(u64::try_from(ts.as_nanosecond()).ok()?))
}

pub(super) fn from_epoch(d: Duration) -> String {
    Timestamp::from_nanosecond(d.as_nanos() as i128).map(|t| t.to_string()).unwrap_or_default()
}

pub(super) fn epoch_now() -> Duration {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()
}

pub(super) fn phase_of(desired: u32, ready: u32, draining: bool) -> ServerPhase {
    match (desired, ready) {
        (0, 0) => ServerPhase::Hibernated,
        (0, _) => ServerPhase::Draining,
        (_, 0) => ServerPhase::Waking,
        _ if draining => ServerPhase::Draining,
        _ => ServerPhase::Running,
    }
}

/// What one reconcile saw of a server besides the resource itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The StatefulSet's replicas and ready replicas.
    pub replicas: u32,
    pub ready: u32,
    /// Players per pod ordinal, from the proxies' reports.
    pub players_by_pod: Vec<u32>,
    /// Now, as a duration since the Unix epoch.
    pub now: Duration,
}

/// Asks the scaling policy, from the resource (spec, annotations, the
/// policy's memory in its status) and what was observed. Pure.
pub fn decide(mcs: &MinecraftServer, obs: &Observation) -> Decision {
    let status = mcs.status.clone().unwrap_or_default();
    let mut per_replica = obs.players_by_pod.clone();
    per_replica.resize(obs.replicas as usize, 0);
    let observed = Observed {
        replicas: obs.replicas,
        players: per_replica,
        wake: mcs.wake_pending(),
        pinned: mcs.spec.pinned,
        backup_running: false,
        hibernate: hibernate_requested(mcs),
        starting: obs.replicas > 0 && obs.ready == 0,
    };
    let memory = Memory {
        last_wake: status.last_wake.as_deref().and_then(to_epoch),
        // Players were on at the last look: they were active until now, so
        // the idle clock starts when they are seen gone (late, never early).
        last_active: if status.players > 0 {
            Some(obs.now)
        } else {
            status.last_activity.as_deref().and_then(to_epoch)
        },
        lower_since: status.lower_since.as_deref().and_then(to_epoch),
        draining_since: status.draining_since.as_deref().and_then(to_epoch),
    };
    policy::decide(&policy_spec(&mcs.spec), &observed, memory, obs.now)
}

/// The status to write after `decision`. Pure: unit tests check it without
/// an API server.
pub fn next_status(
    mcs: &MinecraftServer,
    obs: &Observation,
    decision: &Decision,
    conflicts: Vec<String>,
) -> MinecraftServerStatus {
    let status = mcs.status.clone().unwrap_or_default();
    let now = obs.now;
    let players: u32 = obs.players_by_pod.iter().sum();
    let stored_activity = status.last_activity.as_deref().and_then(to_epoch);
    let last_activity = match (decision.memory.last_active, stored_activity) {
        (Some(active), Some(stored)) if players > 0 && active.saturating_sub(stored) < ACTIVITY_RESOLUTION => {
            status.last_activity.clone()
        }
        (active, _) => active.map(from_epoch),
    };
    let wake_request = mcs.annotations().get(WAKE_ANNOTATION).cloned();
    let scaled = decision.replicas != obs.replicas;
    MinecraftServerStatus {
        phase: Some(phase_of(decision.replicas, obs.ready, decision.draining.is_some())),
        players,
        replicas: decision.replicas,
        ready_replicas: obs.ready,
        last_activity,
        last_wake: decision.memory.last_wake.map(from_epoch),
        lower_since: decision.memory.lower_since.map(from_epoch),
        handled_wake: wake_request.or(status.handled_wake.clone()),
        last_decision: match status.last_decision {
            Some(last) if !scaled => Some(last),
            _ => Some(ScaleDecision {
                replicas: decision.replicas,
                reason: decision.reason.to_string(),
                at: from_epoch(now),
            }),
        },
        conflicts,
        draining_ordinal: decision.draining,
        draining_since: decision.memory.draining_since.map(from_epoch),
        observed_generation: mcs.metadata.generation,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_hibernate_request_holds_until_a_later_wake() {
        let with = |annotations: &[(&str, &str)]| {
            let spec = serde_json::from_value(json!({"hostnames": ["a.example"]})).unwrap();
            let mut mcs = MinecraftServer::new("a", spec);
            mcs.metadata.annotations =
                Some(annotations.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect());
            hibernate_requested(&mcs)
        };
        assert!(!with(&[]));
        assert!(!with(&[(WAKE_ANNOTATION, "2026-01-01T00:00:00Z")]));
        assert!(with(&[(HIBERNATE_ANNOTATION, "2026-01-01T00:00:00Z")]));
        assert!(with(&[(HIBERNATE_ANNOTATION, "2026-01-01T00:00:01Z"), (WAKE_ANNOTATION, "2026-01-01T00:00:00.5Z")]));
        assert!(!with(&[(HIBERNATE_ANNOTATION, "2026-01-01T00:00:01Z"), (WAKE_ANNOTATION, "2026-01-01T00:00:02Z")]));
        assert!(!with(&[(HIBERNATE_ANNOTATION, "not a time")]));
    }

    fn server(annotations: &[(&str, &str)], status: MinecraftServerStatus) -> MinecraftServer {
        let spec = serde_json::from_value(
            json!({"hostnames": ["a.example"], "idleTimeoutSeconds": 60, "minOnlineSeconds": 0}),
        )
        .unwrap();
        let mut mcs = MinecraftServer::new("a", spec);
        mcs.metadata.annotations = Some(annotations.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect());
        mcs.status = Some(status);
        mcs
    }

    const T0: &str = "2026-01-01T00:00:00Z";

    #[test]
    fn a_wake_is_decided_and_recorded_as_handled() {
        let mcs = server(&[(WAKE_ANNOTATION, T0)], MinecraftServerStatus::default());
        let obs = Observation {
            replicas: 0,
            ready: 0,
            players_by_pod: vec![],
            now: to_epoch(T0).unwrap() + Duration::from_secs(1),
        };
        let d = decide(&mcs, &obs);
        assert_eq!((d.replicas, d.reason.clone()), (1, policy::Reason::Wake));
        let status = next_status(&mcs, &obs, &d, vec![]);
        assert_eq!(status.phase, Some(ServerPhase::Waking));
        assert_eq!(status.handled_wake.as_deref(), Some(T0));
        assert_eq!(status.last_decision.as_ref().map(|l| l.replicas), Some(1));
        // Reconciled again with the new status: the wake is not acted on twice.
        let mcs = server(&[(WAKE_ANNOTATION, T0)], status);
        assert!(!mcs.wake_pending());
    }

    #[test]
    fn a_start_slower_than_the_idle_timeout_is_not_stopped() {
        let woke = to_epoch(T0).unwrap();
        let status = MinecraftServerStatus {
            phase: Some(ServerPhase::Waking),
            replicas: 1,
            last_wake: Some(T0.into()),
            last_activity: Some(T0.into()),
            handled_wake: Some(T0.into()),
            ..Default::default()
        };
        let mcs = server(&[(WAKE_ANNOTATION, T0)], status);
        // Ten minutes of start against a 60 s idle timeout: still up.
        let obs = Observation { replicas: 1, ready: 0, players_by_pod: vec![], now: woke + Duration::from_secs(600) };
        let d = decide(&mcs, &obs);
        assert_eq!((d.replicas, d.reason.clone()), (1, policy::Reason::Starting));
        let status = next_status(&mcs, &obs, &d, vec![]);
        // Ready now and idle: the clock starts from the last starting look.
        let mcs = server(&[(WAKE_ANNOTATION, T0)], status);
        let ready = Observation { ready: 1, now: woke + Duration::from_secs(630), ..obs.clone() };
        assert_eq!(decide(&mcs, &ready).replicas, 1, "idle 30 s of 60");
        let later = Observation { ready: 1, now: woke + Duration::from_secs(661), ..obs };
        assert_eq!(decide(&mcs, &later).replicas, 0, "idle 61 s of 60");
    }

    #[test]
    fn a_hibernate_request_scales_down_and_keeps_the_decision_until_it_changes() {
        let status = MinecraftServerStatus {
            phase: Some(ServerPhase::Running),
            replicas: 1,
            ready_replicas: 1,
            players: 2,
            ..Default::default()
        };
        let mcs = server(&[(HIBERNATE_ANNOTATION, T0)], status);
        let obs = Observation { replicas: 1, ready: 1, players_by_pod: vec![2], now: to_epoch(T0).unwrap() };
        let d = decide(&mcs, &obs);
        assert_eq!((d.replicas, d.reason.to_string()), (0, "hibernate requested".to_owned()));
        let status = next_status(&mcs, &obs, &d, vec!["b.example".into()]);
        assert_eq!(status.phase, Some(ServerPhase::Draining), "pods still ready while going to zero");
        assert_eq!(status.conflicts, ["b.example"]);
        let decided = status.last_decision.clone().unwrap();
        assert_eq!((decided.replicas, decided.reason.as_str()), (0, "hibernate requested"));
        // Once at zero, the same request changes nothing: the decision stays.
        let mcs = server(&[(HIBERNATE_ANNOTATION, T0)], status);
        let zero = Observation { replicas: 0, ready: 0, players_by_pod: vec![], now: obs.now + Duration::from_secs(5) };
        let d = decide(&mcs, &zero);
        let again = next_status(&mcs, &zero, &d, vec![]);
        assert_eq!(again.last_decision, Some(decided));
        assert_eq!(again.phase, Some(ServerPhase::Hibernated));
    }

    #[test]
    fn phases() {
        assert_eq!(phase_of(0, 0, false), ServerPhase::Hibernated);
        assert_eq!(phase_of(1, 0, false), ServerPhase::Waking);
        assert_eq!(phase_of(1, 1, false), ServerPhase::Running);
        assert_eq!(phase_of(2, 2, true), ServerPhase::Draining);
        assert_eq!(phase_of(0, 1, false), ServerPhase::Draining);
    }

    #[test]
    fn times_roundtrip() {
        let now = epoch_now();
        let back = to_epoch(&from_epoch(now)).unwrap();
        assert!(now.abs_diff(back) < Duration::from_micros(1));
    }
}
