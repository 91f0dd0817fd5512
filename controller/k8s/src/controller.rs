//! The MinecraftServer controller: `reconcile` observes (StatefulSet, wake
//! and hibernate annotations, proxies' player reports), asks the scaling
//! policy ([`decide`]), computes the next status with a pure function
//! ([`next_status`]), applies the StatefulSet and Service with server-side
//! apply (one field manager), writes status, and records an Event when it
//! scales. It assumes nothing about why it was called; everything it
//! remembers lives in the resource's status. Failed reconciles are counted
//! (`respawn_controller_reconcile_errors_total`) and retried.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
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
        reflector::ObjectRef,
        watcher,
    },
};
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use respawn_contract::policy::{self, Decision, Memory, Observed, PolicySpec};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    crd::{MinecraftServer, MinecraftServerSpec, MinecraftServerStatus, ScaleDecision, ServerPhase},
    hostnames::HostnameIndex,
    render,
    signals::{REPORT_LABEL, ReportIndex, WAKE_ANNOTATION},
};

pub const FIELD_MANAGER: &str = "respawn-controller";

/// Reconciles running at once. kube-runtime's default is unbounded: a cold
/// start with thousands of servers would open a connection per reconcile and
/// flood the API server, where a small pool keeps it busy without queueing.
pub const RECONCILE_CONCURRENCY: u16 = 32;

/// While players are on, `lastActivity` is rewritten at most this often. A
/// status that changed on every reconcile (it used to carry "now") came back
/// through the watch and reconciled again at once: a hot loop per busy
/// server, which starved a cold start with thousands of servers.
pub const ACTIVITY_RESOLUTION: Duration = Duration::from_secs(60);

/// Wakes reconciled at once on the fast path (see [`run`]); more wait for a
/// slot (a controller that restarts may find many pending at once).
pub const WAKE_CONCURRENCY: usize = 8;

/// Written by the management API's `stop` (an RFC 3339 time): scale to zero
/// now, even with players on or above the minimum, until a later wake request
/// (the proxy's or the API's) supersedes it. Comparing the two times keeps the
/// controller stateless about it.
pub const HIBERNATE_ANNOTATION: &str = "respawn.dev/hibernate-requested-at";

/// A hibernate request newer than the last wake request is in force.
fn hibernate_requested(mcs: &MinecraftServer) -> bool {
    let at = |key: &str| mcs.annotations().get(key).and_then(|t| t.parse::<Timestamp>().ok());
    match (at(HIBERNATE_ANNOTATION), at(WAKE_ANNOTATION)) {
        (Some(hibernate), Some(wake)) => hibernate > wake,
        (hibernate, _) => hibernate.is_some(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0} has no namespace")]
    NoNamespace(String),
}

impl Error {
    /// The `reason` label of the reconcile error metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "transport",
            Error::NoNamespace(_) => "invalid",
        }
    }
}

/// The controller's metrics (served by `respawn controller` on its metrics
/// address).
#[derive(Clone)]
pub struct Metrics {
    pub reconciles: IntCounter,
    pub reconcile_errors: IntCounterVec,
}

impl Metrics {
    pub fn new(registry: &Registry) -> Self {
        let reconciles =
            IntCounter::new("respawn_controller_reconciles_total", "MinecraftServer reconciles run").expect("metric");
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "respawn_controller_reconcile_errors_total",
                "Reconciles that failed and were requeued, by reason",
            ),
            &["reason"],
        )
        .expect("metric");
        registry.register(Box::new(reconciles.clone())).expect("register");
        registry.register(Box::new(reconcile_errors.clone())).expect("register");
        Metrics { reconciles, reconcile_errors }
    }
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
    /// Proxies' player reports, parsed as their Leases change.
    pub reports: Arc<ReportIndex>,
    /// Who claims each hostname, for conflicts.
    pub hostnames: Arc<HostnameIndex>,
    /// One reconcile at a time per server, across the controller's queue and
    /// the wake fast path: each reads the server fresh under its lock, so the
    /// two never act on views that contradict each other.
    pub serial: ServerLocks,
    pub settings: Settings,
    /// The plugin-sync init container's image (`RESPAWN_IMAGE`).
    pub render: render::RenderOptions,
    pub metrics: Metrics,
}

/// A lock per server (`namespace/name`).
#[derive(Debug, Default)]
pub struct ServerLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl ServerLocks {
    pub fn of(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).entry(key.to_owned()).or_default().clone()
    }

    pub fn forget(&self, key: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
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

fn phase_of(desired: u32, ready: u32, draining: bool) -> ServerPhase {
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

pub async fn reconcile(mcs: Arc<MinecraftServer>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciles.inc();
    let name = mcs.name_any();
    let ns = mcs.namespace().ok_or_else(|| Error::NoNamespace(name.clone()))?;
    let sts_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    let svc_api: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let mcs_api: Api<MinecraftServer> = Api::namespaced(ctx.client.clone(), &ns);
    let lock = ctx.serial.of(&format!("{ns}/{name}"));
    let _serial = lock.lock().await;

    // Observe. The object handed in may predate our own last status write
    // (the watch cache lags): read it fresh, since the policy's memory lives
    // in that status.
    let Some(mcs) = mcs_api.get_opt(&name).await?.map(Arc::new) else {
        return Ok(Action::await_change()); // deleted meanwhile
    };
    let current = sts_api.get_opt(&name).await?;
    let obs = Observation {
        replicas: current.as_ref().and_then(|s| s.spec.as_ref()?.replicas).unwrap_or(0).max(0) as u32,
        ready: current.as_ref().and_then(|s| s.status.as_ref()?.ready_replicas).unwrap_or(0).max(0) as u32,
        players_by_pod: ctx.reports.players(&format!("{ns}/{name}"), SystemTime::now()),
        now: epoch_now(),
    };

    // Decide.
    let decision = decide(&mcs, &obs);
    let replicas = obs.replicas;

    // Act.
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    // The StatefulSet first: on a wake, its replicas are the request that counts.
    sts_api
        .patch(&name, &apply, &Patch::Apply(render::stateful_set_with(&mcs, decision.replicas, &ctx.render)))
        .await?;
    svc_api.patch(&name, &apply, &Patch::Apply(render::service(&mcs))).await?;
    if decision.replicas != replicas {
        let reason = &decision.reason;
        info!(server = %name, namespace = %ns, from = replicas, to = decision.replicas, %reason, "scaling");
        let event = Event {
            type_: EventType::Normal,
            reason: if decision.replicas > replicas { "ScaledUp".into() } else { "ScaledDown".into() },
            note: Some(format!("{replicas} → {} replicas: {}", decision.replicas, reason)),
            action: "Scale".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &mcs.object_ref(&())).await {
            warn!(error = %e, "cannot record the scale event");
        }
    }

    let new_status = next_status(&mcs, &obs, &decision, ctx.hostnames.conflicts(&mcs));
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
    ctx.metrics.reconcile_errors.with_label_values(&[error.reason()]).inc();
    warn!(server = %mcs.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(ctx.settings.error_backoff)
}

/// Runs the controller until `shutdown` fires.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mcs_api: Api<MinecraftServer> = Api::all(client.clone());
    let sts_api: Api<StatefulSet> = Api::all(client.clone());
    let lease_api: Api<Lease> = Api::namespaced(client.clone(), &settings.reports_namespace);
    let reports_cfg = watcher::Config::default().labels(&format!("{REPORT_LABEL}=true"));

    // The reports are indexed by the controller's own Lease watch, before the
    // servers whose counts changed are reconciled, so a reconcile never reads
    // counts older than the event that triggered it.
    let reports = Arc::new(ReportIndex::default());
    let index = reports.clone();
    let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        reports,
        hostnames: Arc::default(),
        serial: ServerLocks::default(),
        settings,
        render: render::RenderOptions::from_env(),
        metrics,
    });

    // A second watch on the servers keeps the hostname index, and is the
    // wake fast path: a pending wake is reconciled at once, not behind the
    // controller's queue (after a burst of report changes that queue holds
    // thousands of routine reconciles, and a wake waited up to a second).
    let fast = WakeFastPath {
        ctx: ctx.clone(),
        slots: Arc::new(tokio::sync::Semaphore::new(WAKE_CONCURRENCY)),
        in_flight: Arc::default(),
    };
    let servers_stream =
        watcher(Api::<MinecraftServer>::all(ctx.client.clone()), watcher::Config::default()).default_backoff();
    let reflectors = tokio::spawn(servers_stream.for_each(move |event| {
        if let Ok(event) = event {
            fast.ctx.hostnames.apply(&event);
            match &event {
                watcher::Event::Apply(mcs) | watcher::Event::InitApply(mcs) => fast.wake_if_pending(mcs),
                watcher::Event::Delete(mcs) => {
                    fast.ctx.serial.forget(&format!("{}/{}", mcs.namespace().unwrap_or_default(), mcs.name_any()))
                }
                watcher::Event::Init | watcher::Event::InitDone => {}
            }
        }
        futures::future::ready(())
    }));
    let stop = shutdown.clone();
    Controller::new(mcs_api, watcher::Config::default())
        .with_config(kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY))
        .owns(sts_api, watcher::Config::default())
        .watches(lease_api, reports_cfg, move |lease: Lease| servers_changed_by(&index, &lease))
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

/// Reconciles servers with a pending wake as soon as the watch shows them.
struct WakeFastPath {
    ctx: Arc<Context>,
    slots: Arc<tokio::sync::Semaphore>,
    /// (server, wake) pairs being handled, so a burst of events for one wake
    /// reconciles it once.
    in_flight: Arc<Mutex<HashSet<(String, String)>>>,
}

impl WakeFastPath {
    fn wake_if_pending(&self, mcs: &MinecraftServer) {
        let Some(wake) = mcs.annotations().get(WAKE_ANNOTATION) else { return };
        if mcs.status.as_ref().and_then(|s| s.handled_wake.as_ref()) == Some(wake) {
            return;
        }
        let key = (format!("{}/{}", mcs.namespace().unwrap_or_default(), mcs.name_any()), wake.clone());
        if !self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone()) {
            return;
        }
        let (ctx, slots, in_flight, mcs) =
            (self.ctx.clone(), self.slots.clone(), self.in_flight.clone(), Arc::new(mcs.clone()));
        tokio::spawn(async move {
            let _slot = slots.acquire().await;
            // The controller's queue has the same event and retries failures;
            // this path only makes the common case fast.
            if let Err(error) = reconcile(mcs, ctx).await {
                warn!(server = %key.0, %error, "wake fast path failed; the controller retries");
            }
            in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
        });
    }
}

/// Runs the controller on the replica that holds the leader Lease in
/// `namespace` (from `POD_NAMESPACE` in the cluster).
pub async fn run_leader_elected(
    client: Client,
    settings: Settings,
    metrics: Metrics,
    namespace: &str,
    identity: &str,
    shutdown: CancellationToken,
) {
    let elector = crate::leader::LeaderElector::new(
        client.clone(),
        namespace,
        "respawn-controller",
        identity,
        Duration::from_secs(15),
    );
    elector
        .run(shutdown, move |token| {
            let (client, settings, metrics) = (client.clone(), settings.clone(), metrics.clone());
            async move {
                if let Err(e) = run(client, settings, metrics, token).await {
                    warn!(error = %e, "controller stopped");
                }
            }
        })
        .await;
}

/// Servers whose counts a report changed: only those are reconciled (a
/// renewal every few seconds with the same counts reconciles nothing, where
/// reconciling every server in it would grow with the platform).
fn servers_changed_by(index: &ReportIndex, lease: &Lease) -> Vec<ObjectRef<MinecraftServer>> {
    index
        .update(lease, SystemTime::now())
        .iter()
        .filter_map(|k| k.split_once('/'))
        .map(|(ns, name)| ObjectRef::new(name).within(ns))
        .collect()
}

#[cfg(test)]
mod tests {
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
