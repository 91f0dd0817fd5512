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
use k8s_openapi::api::{apps::v1::StatefulSet, coordination::v1::Lease, core::v1::Service};
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
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    crd::MinecraftServer,
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

mod decide;
use decide::epoch_now;
pub use decide::{HIBERNATE_ANNOTATION, Observation, decide, next_status, policy_spec};

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
