//! The MinecraftServer controller: `reconcile` observes (StatefulSet, wake
//! annotation, proxies' player reports), asks the scaling policy, applies the
//! StatefulSet and Service with server-side apply (one field manager), writes
//! status, and records an Event when it scales. It assumes nothing about why
//! it was called; everything it remembers lives in the resource's status.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures::StreamExt;
use k8s_openapi::{
    api::{apps::v1::StatefulSet, coordination::v1::Lease, core::v1::Service},
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use respawn_controller::policy::{self, Memory, Observed, PolicySpec, Reason};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    crd::{MinecraftServer, MinecraftServerSpec, MinecraftServerStatus, ScaleDecision, ServerPhase},
    render,
    signals::{self, REPORT_LABEL, WAKE_ANNOTATION},
};

pub const FIELD_MANAGER: &str = "respawn-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0} has no namespace")]
    NoNamespace(String),
}

/// Knobs tests shorten.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Re-evaluate a running server this often (idle timeouts, report expiry).
    pub requeue_running: Duration,
    pub requeue_sleeping: Duration,
    pub error_backoff: Duration,
    /// Where proxies write their report Leases.
    pub reports_namespace: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            reports_namespace: "respawn-system".into(),
            requeue_running: Duration::from_secs(10),
            requeue_sleeping: Duration::from_secs(300),
            error_backoff: Duration::from_secs(5),
        }
    }
}

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    /// Proxies' player reports.
    pub reports: Store<Lease>,
    /// Every MinecraftServer, for hostname conflicts.
    pub servers: Store<MinecraftServer>,
    pub settings: Settings,
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
    }
}

fn to_epoch(t: &str) -> Option<Duration> {
    let ts: Timestamp = t.parse().ok()?;
    Some(Duration::from_nanos(u64::try_from(ts.as_nanosecond()).ok()?))
}

fn from_epoch(d: Duration) -> String {
    Timestamp::from_nanosecond(d.as_nanos() as i128).map(|t| t.to_string()).unwrap_or_default()
}

fn epoch_now() -> Duration {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()
}

/// Hostnames of `mcs` that an older MinecraftServer already claims.
pub fn hostname_conflicts(mcs: &MinecraftServer, all: &[Arc<MinecraftServer>]) -> Vec<String> {
    let key = |m: &MinecraftServer| {
        (m.metadata.creation_timestamp.clone().map(|t| t.0), m.namespace().unwrap_or_default(), m.name_any())
    };
    let me = key(mcs);
    let mut conflicts: Vec<String> = mcs
        .spec
        .hostnames
        .iter()
        .filter(|h| {
            all.iter().any(|other| {
                let k = key(other);
                k != me && k < me && other.spec.hostnames.iter().any(|o| o.eq_ignore_ascii_case(h))
            })
        })
        .cloned()
        .collect();
    conflicts.sort();
    conflicts
}

fn phase_of(desired: u32, ready: u32, draining: bool) -> ServerPhase {
    match (desired, ready) {
        (0, 0) => ServerPhase::Hibernated,
        (0, _) => ServerPhase::Draining,
        (_, 0) => ServerPhase::Waking,
        _ if draining => ServerPhase::Draining,
        _ => ServerPhase::Running,
    }
}

pub async fn reconcile(mcs: Arc<MinecraftServer>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = mcs.name_any();
    let ns = mcs.namespace().ok_or_else(|| Error::NoNamespace(name.clone()))?;
    let now = epoch_now();
    let sts_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    let svc_api: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let mcs_api: Api<MinecraftServer> = Api::namespaced(ctx.client.clone(), &ns);

    // Observe. The object handed in may predate our own last status write
    // (the watch cache lags): read it fresh, since the policy's memory lives
    // in that status.
    let Some(mcs) = mcs_api.get_opt(&name).await?.map(Arc::new) else {
        return Ok(Action::await_change()); // deleted meanwhile
    };
    let current = sts_api.get_opt(&name).await?;
    let replicas = current.as_ref().and_then(|s| s.spec.as_ref()?.replicas).unwrap_or(0).max(0) as u32;
    let ready = current.as_ref().and_then(|s| s.status.as_ref()?.ready_replicas).unwrap_or(0).max(0) as u32;
    let status = mcs.status.clone().unwrap_or_default();
    let wake_request = mcs.annotations().get(WAKE_ANNOTATION).cloned();
    let wake = wake_request.is_some() && wake_request != status.handled_wake;
    let players_by_pod = signals::merge_reports(ctx.reports.state().iter().map(|l| &**l), SystemTime::now())
        .remove(&format!("{ns}/{name}"))
        .unwrap_or_default();
    let mut per_replica = players_by_pod.clone();
    per_replica.resize(replicas as usize, 0);
    let observed = Observed { replicas, players: per_replica, wake, pinned: mcs.spec.pinned, backup_running: false };
    let memory = Memory {
        last_wake: status.last_wake.as_deref().and_then(to_epoch),
        last_active: status.last_activity.as_deref().and_then(to_epoch),
        lower_since: status.lower_since.as_deref().and_then(to_epoch),
    };

    // Decide.
    let mut decision = policy::decide(&policy_spec(&mcs.spec), &observed, memory, now);
    let draining = matches!(decision.reason, Reason::Stabilizing { .. } | Reason::HoldingPlayers { .. })
        && decision.replicas > 0;
    let draining_since = draining.then(|| status.draining_since.as_deref().and_then(to_epoch).unwrap_or(now));
    // Past the drain timeout, the drained replica goes even with players on it.
    let drain_timeout = Duration::from_secs(mcs.spec.drain_timeout_seconds.into());
    if let (Reason::HoldingPlayers { .. }, Some(since)) = (&decision.reason, draining_since)
        && now.saturating_sub(since) >= drain_timeout && replicas > 0 {
            decision.replicas = replicas - 1;
            decision.reason = Reason::DrainTimeout { ordinal: replicas - 1 };
        }

    // Act.
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    svc_api.patch(&name, &apply, &Patch::Apply(render::service(&mcs))).await?;
    sts_api.patch(&name, &apply, &Patch::Apply(render::stateful_set(&mcs, decision.replicas))).await?;
    if decision.replicas != replicas {
        info!(server = %name, namespace = %ns, from = replicas, to = decision.replicas, reason = %decision.reason, "scaling");
        let event = Event {
            type_: EventType::Normal,
            reason: if decision.replicas > replicas { "ScaledUp".into() } else { "ScaledDown".into() },
            note: Some(format!("{replicas} → {} replicas: {}", decision.replicas, decision.reason)),
            action: "Scale".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &mcs.object_ref(&())).await {
            warn!(error = %e, "cannot record the scale event");
        }
    }

    let players: u32 = players_by_pod.iter().sum();
    let servers = ctx.servers.state();
    let new_status = MinecraftServerStatus {
        phase: Some(phase_of(decision.replicas, ready, draining)),
        players,
        replicas: decision.replicas,
        ready_replicas: ready,
        last_activity: decision.memory.last_active.map(from_epoch),
        last_wake: decision.memory.last_wake.map(from_epoch),
        lower_since: decision.memory.lower_since.map(from_epoch),
        handled_wake: wake_request.or(status.handled_wake.clone()),
        last_decision: Some(if decision.replicas != replicas || status.last_decision.is_none() {
            ScaleDecision { replicas: decision.replicas, reason: decision.reason.to_string(), at: from_epoch(now) }
        } else {
            status.last_decision.clone().expect("checked")
        }),
        conflicts: hostname_conflicts(&mcs, &servers),
        draining_ordinal: draining.then(|| decision.replicas.max(replicas).saturating_sub(1)),
        draining_since: draining_since.filter(|_| draining && decision.replicas >= replicas).map(from_epoch),
        observed_generation: mcs.metadata.generation,
    };
    if mcs.status.as_ref() != Some(&new_status) {
        let patch = json!({
            "apiVersion": MinecraftServer::api_version(&()),
            "kind": MinecraftServer::kind(&()),
            "status": new_status,
        });
        mcs_api.patch_status(&name, &apply, &Patch::Apply(&patch)).await?;
    }
    Ok(Action::requeue(if decision.replicas > 0 || replicas > 0 {
        ctx.settings.requeue_running
    } else {
        ctx.settings.requeue_sleeping
    }))
}

pub fn error_policy(mcs: Arc<MinecraftServer>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(server = %mcs.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(ctx.settings.error_backoff)
}

/// Runs the controller until `shutdown` fires.
pub async fn run(client: Client, settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mcs_api: Api<MinecraftServer> = Api::all(client.clone());
    let sts_api: Api<StatefulSet> = Api::all(client.clone());
    let lease_api: Api<Lease> = Api::namespaced(client.clone(), &settings.reports_namespace);
    let reports_cfg = watcher::Config::default().labels(&format!("{REPORT_LABEL}=true"));

    let (reports, reports_writer) = reflector::store();
    let reports_stream = watcher(lease_api.clone(), reports_cfg.clone())
        .default_backoff()
        .reflect(reports_writer)
        .applied_objects();
    let (servers, servers_writer) = reflector::store();
    let servers_stream = watcher(mcs_api.clone(), watcher::Config::default()).default_backoff().reflect(servers_writer).applied_objects();
    let reflectors = tokio::spawn(async move {
        tokio::join!(
            reports_stream.for_each(|_| futures::future::ready(())),
            servers_stream.for_each(|_| futures::future::ready(()))
        );
    });

    let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
    let ctx = Arc::new(Context { recorder: Recorder::new(client.clone(), reporter), client, reports, servers, settings });
    let stop = shutdown.clone();
    Controller::new(mcs_api, watcher::Config::default())
        .owns(sts_api, watcher::Config::default())
        .watches(lease_api, reports_cfg, |lease: Lease| servers_in_report(&lease))
        .graceful_shutdown_on(async move { stop.cancelled().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            if let Err(e) = result {
                warn!(error = %e, "controller event");
            }
            futures::future::ready(())
        })
        .await;
    reflectors.abort();
    Ok(())
}

/// Runs the controller on the replica that holds the leader Lease in
/// `namespace` (from `POD_NAMESPACE` in the cluster).
pub async fn run_leader_elected(client: Client, settings: Settings, namespace: &str, identity: &str, shutdown: CancellationToken) {
    let elector = crate::leader::LeaderElector::new(client.clone(), namespace, "respawn-controller", identity, Duration::from_secs(15));
    elector
        .run(shutdown, move |token| {
            let (client, settings) = (client.clone(), settings.clone());
            async move {
                if let Err(e) = run(client, settings, token).await {
                    warn!(error = %e, "controller stopped");
                }
            }
        })
        .await;
}

/// Servers named in a proxy report: a changed report reconciles them.
fn servers_in_report(lease: &Lease) -> Vec<ObjectRef<MinecraftServer>> {
    let Some(raw) = lease.annotations().get(signals::PLAYERS_ANNOTATION) else { return vec![] };
    let Ok(report) = serde_json::from_str::<HashMap<String, serde_json::Value>>(raw) else { return vec![] };
    report
        .keys()
        .filter_map(|k| k.split_once('/'))
        .map(|(ns, name)| ObjectRef::new(name).within(ns))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str, created: &str, hosts: &[&str]) -> Arc<MinecraftServer> {
        let spec: MinecraftServerSpec = serde_json::from_value(json!({ "hostnames": hosts })).unwrap();
        let mut m = MinecraftServer::new(name, spec);
        m.metadata.namespace = Some("acme".into());
        m.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(created.parse().unwrap()));
        Arc::new(m)
    }

    #[test]
    fn the_older_resource_keeps_a_hostname() {
        let old = server("old", "2026-01-01T00:00:00Z", &["play.acme.example", "a.acme.example"]);
        let new = server("new", "2026-02-01T00:00:00Z", &["PLAY.acme.example", "b.acme.example"]);
        let all = vec![old.clone(), new.clone()];
        assert!(hostname_conflicts(&old, &all).is_empty());
        assert_eq!(hostname_conflicts(&new, &all), vec!["PLAY.acme.example".to_owned()]);
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
