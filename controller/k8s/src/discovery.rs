//! The proxy's side of Kubernetes: routes from MinecraftServers (watched, no
//! polling), backends from their pods' readiness, server phases for the
//! proxy's sleep/wake logic, wakes as an annotation, and this replica's
//! player counts as a Lease (see `signals`).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::{
    api::{coordination::v1::Lease, core::v1::Pod},
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, reflector, watcher},
};
use respawn_contract::{Lifecycle, Phase, PhaseState, RouteSink, RouteSpec};
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    crd::MinecraftServer,
    render::{GAME_PORT, SERVER_LABEL},
    signals::{PLAYERS_ANNOTATION, REPORT_LABEL, Report, WAKE_ANNOTATION},
};

/// Reports are renewed this often and count for `REPORT_TTL` after.
pub const REPORT_EVERY: Duration = Duration::from_secs(5);
pub const REPORT_TTL: Duration = Duration::from_secs(15);
/// Pods take a while to schedule and pull; the first estimate says so.
const DEFAULT_ESTIMATE: Duration = Duration::from_secs(60);

pub struct KubeDiscovery {
    client: Client,
    /// Where this proxy writes its report Lease.
    namespace: String,
    identity: String,
    phases: Mutex<HashMap<String, watch::Sender<PhaseState>>>,
    /// "ns/name" → backend address → players on it through this proxy.
    /// Keyed by address (known at open and close alike); pod names are
    /// looked up when reporting, so a pod that turns unready in between
    /// cannot strand a count.
    sessions: Mutex<BTreeMap<String, BTreeMap<String, u32>>>,
    /// backend address → pod name.
    pods_by_addr: Mutex<HashMap<String, String>>,
    changed: Notify,
    /// The runtime `new` ran on: wake requests are spawned there, not on
    /// the proxy thread (a single-threaded runtime per listener) that asked.
    runtime: Option<tokio::runtime::Handle>,
}

impl KubeDiscovery {
    pub fn new(client: Client, namespace: &str, identity: &str) -> Arc<Self> {
        Arc::new(Self {
            client,
            namespace: namespace.into(),
            identity: identity.into(),
            phases: Mutex::default(),
            sessions: Mutex::default(),
            pods_by_addr: Mutex::default(),
            changed: Notify::new(),
            runtime: tokio::runtime::Handle::try_current().ok(),
        })
    }

    fn phase_sender(&self, server: &str) -> watch::Sender<PhaseState> {
        let mut phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        phases.entry(server.to_owned()).or_insert_with(|| watch::channel(Phase::Sleeping.into()).0).clone()
    }

    /// Watches MinecraftServers and pods and keeps the proxy's platform
    /// routes (through `routes`) and the phases current; renews the report
    /// Lease. Until `shutdown`.
    pub async fn run(self: Arc<Self>, routes: Arc<dyn RouteSink>, shutdown: CancellationToken) {
        let mcs_api: Api<MinecraftServer> = Api::all(self.client.clone());
        let pod_api: Api<Pod> = Api::all(self.client.clone());
        let (servers, servers_w) = reflector::store();
        let (pods, pods_w) = reflector::store();
        let servers_stream =
            watcher(mcs_api, watcher::Config::default()).default_backoff().reflect(servers_w).touched_objects();
        let pods_stream = watcher(pod_api, watcher::Config::default().labels(SERVER_LABEL))
            .default_backoff()
            .reflect(pods_w)
            .touched_objects();
        let mut changes = futures::stream::select(servers_stream.map(|_| ()), pods_stream.map(|_| ())).boxed();
        let reporter = tokio::spawn(self.clone().report_loop(shutdown.clone()));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                next = changes.next() => if next.is_none() { break },
            }
            // Let a burst of events settle into one rebuild.
            tokio::time::sleep(Duration::from_millis(20)).await;
            while let Some(Some(())) = futures::FutureExt::now_or_never(changes.next()) {}
            routes.set_routes(self.rebuild(&servers.state(), &pods.state()));
        }
        reporter.abort();
    }

    /// Routes and phases from the current objects.
    pub fn rebuild(&self, servers: &[Arc<MinecraftServer>], pods: &[Arc<Pod>]) -> Vec<RouteSpec> {
        let mut addrs = HashMap::new();
        let mut routes = Vec::with_capacity(servers.len());
        for mcs in servers {
            let ns = mcs.namespace().unwrap_or_default();
            let name = mcs.name_any();
            let key = format!("{ns}/{name}");
            let status = mcs.status.clone().unwrap_or_default();
            let mut backends = Vec::new();
            for pod in pods.iter().filter(|p| {
                p.namespace().as_deref() == Some(ns.as_str()) && p.labels().get(SERVER_LABEL) == Some(&name)
            }) {
                let Some((addr, ready)) = pod_address(pod) else { continue };
                // Known before the draining check: the players still on a
                // draining pod must be reported under its name, or the
                // controller would see it empty and remove it under them.
                addrs.insert(addr.clone(), pod.name_any());
                let ordinal = pod.name_any().rsplit('-').next().and_then(|o| o.parse::<u32>().ok());
                if ordinal.is_some() && ordinal == status.draining_ordinal {
                    continue; // draining: no new players
                }
                if ready {
                    backends.push(addr);
                }
            }
            backends.sort();
            // A ready backend is running to this proxy; otherwise the
            // resource's phase says (asked for but not ready yet: starting).
            let phase = match (backends.is_empty(), mcs.phase()) {
                (false, _) => PhaseState::new(Phase::Running),
                (true, Phase::Running) => PhaseState::new(Phase::Starting),
                (true, Phase::Failed) => PhaseState::failed(
                    status
                        .last_decision
                        .as_ref()
                        .map(|d| d.reason.clone())
                        .unwrap_or_else(|| "the server failed".into()),
                ),
                (true, phase) => PhaseState::new(phase),
            };
            self.phase_sender(&key).send_if_modified(|p| {
                let changed = *p != phase;
                if changed {
                    *p = phase;
                }
                changed
            });
            let hostnames = mcs.spec.hostnames.iter().filter(|h| !status.conflicts.contains(h)).cloned().collect();
            routes.push(RouteSpec { name: key, hostnames, backends, proxy_protocol: false, fallback_status: None });
        }
        *self.pods_by_addr.lock().unwrap_or_else(|e| e.into_inner()) = addrs;
        routes
    }

    async fn report_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        let name = format!("respawn-proxy-{}", self.identity);
        let params = PatchParams::apply(&format!("respawn-proxy-{}", self.identity)).force();
        loop {
            let report = self.report();
            let lease = json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": name,
                    "labels": { REPORT_LABEL: "true" },
                    "annotations": { PLAYERS_ANNOTATION: serde_json::to_string(&report).unwrap_or_default() },
                },
                "spec": {
                    "holderIdentity": self.identity,
                    "leaseDurationSeconds": REPORT_TTL.as_secs(),
                    // MicroTime serialises as the API server expects (microseconds).
                    "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(Timestamp::now()),
                },
            });
            if let Err(e) = api.patch(&name, &params, &Patch::Apply(&lease)).await {
                warn!(error = %e, "cannot renew the player report");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(REPORT_EVERY) => {}
                // Joins and leaves are reported promptly (at most a few a second).
                _ = self.changed.notified() => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// This proxy's players per server and pod, as the Lease carries them.
    pub fn report(&self) -> Report {
        let pods = self.pods_by_addr.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .iter()
            .map(|(server, per)| {
                let mut by_pod: BTreeMap<String, u32> = BTreeMap::new();
                for (addr, n) in per {
                    *by_pod.entry(pods.get(addr).cloned().unwrap_or_else(|| addr.clone())).or_default() += n;
                }
                (server.clone(), by_pod)
            })
            .collect()
    }

    fn count(&self, server: &str, backend: &str, delta: i32) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let per = sessions.entry(server.to_owned()).or_default();
        let n = per.entry(backend.to_owned()).or_default();
        *n = n.saturating_add_signed(delta);
        if *n == 0 {
            per.remove(backend);
        }
        if per.is_empty() {
            sessions.remove(server);
        }
        drop(sessions);
        self.changed.notify_one();
    }
}

/// `podIP:port` of a pod that has an IP (port: its `minecraft` container
/// port), and whether it is ready.
fn pod_address(pod: &Pod) -> Option<(String, bool)> {
    let status = pod.status.as_ref()?;
    let ready = status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
    let ip = status.pod_ip.as_ref()?;
    let port = pod
        .spec
        .as_ref()
        .and_then(|s| {
            s.containers.iter().flat_map(|c| c.ports.iter().flatten()).find(|p| p.name.as_deref() == Some("minecraft"))
        })
        .map(|p| p.container_port)
        .unwrap_or(GAME_PORT);
    Some((if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") }, ready))
}

impl Lifecycle for KubeDiscovery {
    fn watch(&self, server: &str) -> Option<watch::Receiver<PhaseState>> {
        self.phases.lock().unwrap_or_else(|e| e.into_inner()).get(server).map(|tx| tx.subscribe())
    }

    fn wake(&self, server: &str, player: &str) {
        let Some((ns, name)) = server.split_once('/') else { return };
        self.phase_sender(server).send_if_modified(|p| {
            let sleeping = p.phase == Phase::Sleeping;
            if sleeping {
                *p = Phase::Starting.into();
            }
            sleeping
        });
        let api: Api<MinecraftServer> = Api::namespaced(self.client.clone(), ns);
        let (name, player) = (name.to_owned(), player.to_owned());
        let patch = json!({ "metadata": { "annotations": { WAKE_ANNOTATION: Timestamp::now().to_string() } } });
        let request = async move {
            match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => info!(server = %name, %player, "wake requested"),
                Err(e) => warn!(server = %name, error = %e, "cannot request the wake"),
            }
        };
        match &self.runtime {
            Some(runtime) => drop(runtime.spawn(request)),
            None => drop(tokio::spawn(request)),
        }
    }

    fn may_wake(&self, _server: &str, _player: &str, _uuid: Option<u128>) -> bool {
        true
    }

    fn start_estimate(&self, _server: &str) -> Duration {
        DEFAULT_ESTIMATE
    }

    fn session_opened(&self, server: &str, backend: &str) {
        self.count(server, backend, 1);
    }

    fn session_closed(&self, server: &str, backend: &str) {
        self.count(server, backend, -1);
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    use super::*;

    fn client() -> Client {
        let url = "http://127.0.0.1:9".parse().expect("a valid URL");
        Client::try_from(kube::Config::new(url)).expect("a client needs no connection")
    }

    fn pod(name: &str, port: u16, ready: bool) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": { "name": name, "namespace": "acme", "labels": { SERVER_LABEL: "arena" } },
                "spec": { "containers": [{ "name": "server", "ports": [{ "name": "minecraft", "containerPort": port }] }] },
                "status": { "podIP": "127.0.0.1", "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }] },
            }))
            .expect("a pod"),
        )
    }

    fn arena(draining: Option<u32>) -> Arc<MinecraftServer> {
        let mut mcs: MinecraftServer = serde_json::from_value(json!({
            "apiVersion": "respawn.dev/v1alpha1", "kind": "MinecraftServer",
            "metadata": { "name": "arena", "namespace": "acme" },
            "spec": { "hostnames": ["arena.acme.example"] },
        }))
        .expect("a server");
        mcs.status = Some(crate::crd::MinecraftServerStatus { draining_ordinal: draining, ..Default::default() });
        Arc::new(mcs)
    }

    #[tokio::test]
    async fn the_draining_pod_gets_no_new_players_but_its_players_still_count() {
        let discovery = KubeDiscovery::new(client(), "respawn-system", "proxy-a");
        let pods = [pod("arena-0", 30000, true), pod("arena-1", 30001, true), pod("arena-2", 30002, true)];
        discovery.rebuild(&[arena(None)], &pods);
        discovery.session_opened("acme/arena", "127.0.0.1:30000");
        discovery.session_opened("acme/arena", "127.0.0.1:30002");

        // Pod 2 drains: no new players there, but its player is still its.
        let routes = discovery.rebuild(&[arena(Some(2))], &pods);
        assert_eq!(routes[0].backends, ["127.0.0.1:30000", "127.0.0.1:30001"]);
        let report = discovery.report();
        assert_eq!(report["acme/arena"], BTreeMap::from([("arena-0".to_owned(), 1), ("arena-2".to_owned(), 1)]));

        discovery.session_closed("acme/arena", "127.0.0.1:30002");
        assert_eq!(discovery.report()["acme/arena"], BTreeMap::from([("arena-0".to_owned(), 1)]));
    }

    #[tokio::test]
    async fn an_unready_pod_is_no_backend_and_its_players_still_count() {
        let discovery = KubeDiscovery::new(client(), "respawn-system", "proxy-a");
        discovery.session_opened("acme/arena", "127.0.0.1:30001");
        let routes = discovery.rebuild(&[arena(None)], &[pod("arena-0", 30000, true), pod("arena-1", 30001, false)]);
        assert_eq!(routes[0].backends, ["127.0.0.1:30000"]);
        assert_eq!(discovery.report()["acme/arena"], BTreeMap::from([("arena-1".to_owned(), 1)]));
    }
}
