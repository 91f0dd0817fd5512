//! Kubernetes paths against the fake API server (controller/k8s/fake): the
//! test plays the StatefulSet controller and the kubelet — when replicas
//! change it creates or deletes pods and starts or stops a real Minecraft
//! server process per pod (each listens on its own loopback port, named in
//! the pod's `minecraft` container port).

mod common;

use std::{
    collections::HashMap,
    sync::Arc,
    time::Duration,
};

use common::{OPEN_LIMITS, peers_dir, run_peer};
use k8s_openapi::api::{apps::v1::StatefulSet, coordination::v1::Lease};
use kube::{
    Api, CustomResourceExt, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use respawn_k8s::{
    controller::{self, Settings},
    crd::{MinecraftServer, ServerPhase},
    discovery::KubeDiscovery,
    leader::LeaderElector,
    signals::{PLAYERS_ANNOTATION, REPORT_LABEL, WAKE_ANNOTATION},
};
use respawn_kube_fake::FakeApiServer;
use respawn_proxy::{Config, Proxy};
use serde_json::{Value, json};
use tokio::{net::TcpListener, process::Child};
use tokio_util::sync::CancellationToken;

fn settings() -> Settings {
    Settings {
        requeue_running: Duration::from_millis(300),
        requeue_sleeping: Duration::from_millis(300),
        error_backoff: Duration::from_millis(200),
        reports_namespace: "respawn-system".into(),
    }
}

async fn with_namespaces(fake: &FakeApiServer) {
    for ns in ["acme", "respawn-system"] {
        fake.set(json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } })).unwrap();
    }
}

async fn cluster_with_crd() -> FakeApiServer {
    let fake = FakeApiServer::start().await;
    with_namespaces(&fake).await;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(fake.client());
    crds.create(&PostParams::default(), &MinecraftServer::crd()).await.expect("CRD registers");
    fake
}

async fn create_server(fake: &FakeApiServer, ns: &str, name: &str, spec: Value) -> Api<MinecraftServer> {
    let api: Api<MinecraftServer> = Api::namespaced(fake.client(), ns);
    let obj: MinecraftServer = serde_json::from_value(json!({
        "apiVersion": "respawn.dev/v1alpha1",
        "kind": "MinecraftServer",
        "metadata": { "name": name, "namespace": ns },
        "spec": spec,
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
    api
}

fn start_controller(fake: &FakeApiServer) -> CancellationToken {
    let stop = CancellationToken::new();
    tokio::spawn(controller::run(fake.client(), settings(), stop.clone()));
    stop
}

async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sts_replicas(fake: &FakeApiServer, ns: &str, name: &str) -> Option<i32> {
    let api: Api<StatefulSet> = Api::namespaced(fake.client(), ns);
    api.get_opt(name).await.ok().flatten().and_then(|s| s.spec?.replicas)
}

async fn phase(api: &Api<MinecraftServer>, name: &str) -> Option<ServerPhase> {
    api.get_opt(name).await.ok().flatten().and_then(|m| m.status?.phase)
}

/// Writes a proxy's player report the way KubeDiscovery does.
async fn report(fake: &FakeApiServer, proxy: &str, players: Value, ttl_secs: i64) {
    let api: Api<Lease> = Api::namespaced(fake.client(), "respawn-system");
    let name = format!("respawn-proxy-{proxy}");
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": { "name": name, "labels": { REPORT_LABEL: "true" }, "annotations": { PLAYERS_ANNOTATION: players.to_string() } },
        "spec": { "holderIdentity": proxy, "leaseDurationSeconds": ttl_secs,
                  "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(k8s_openapi::jiff::Timestamp::now()) },
    });
    api.patch(&name, &PatchParams::apply("test").force(), &Patch::Apply(&lease)).await.unwrap();
}

/// The StatefulSet controller and kubelet, played by the test: pods follow
/// the StatefulSet's replicas; each pod is a real server process.
struct Kubelet {
    stop: CancellationToken,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn kubelet(fake: &FakeApiServer, ns: &'static str, name: &'static str, start: Arc<dyn Fn(u16) -> Child + Send + Sync>) -> Kubelet {
    let stop = CancellationToken::new();
    let (client, cluster, token) = (fake.client(), fake.cluster().clone(), stop.clone());
    tokio::spawn(async move {
        let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
        let mut pods: HashMap<u32, (Child, u16)> = HashMap::new();
        loop {
            if token.is_cancelled() {
                return;
            }
            let want = sts_api.get_opt(name).await.ok().flatten().and_then(|s| s.spec?.replicas).unwrap_or(0).max(0) as u32;
            for ordinal in 0..want {
                if pods.contains_key(&ordinal) {
                    continue;
                }
                let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
                let child = start(port);
                let pod = json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": { "name": format!("{name}-{ordinal}"), "namespace": ns, "labels": { "respawn.dev/server": name } },
                    "spec": { "containers": [{ "name": "server", "image": "x", "ports": [{ "name": "minecraft", "containerPort": port }] }] },
                    "status": { "phase": "Pending" },
                });
                cluster.set(pod).unwrap();
                pods.insert(ordinal, (child, port));
            }
            for ordinal in pods.keys().copied().filter(|o| *o >= want).collect::<Vec<_>>() {
                let (mut child, _) = pods.remove(&ordinal).unwrap();
                let _ = child.kill().await;
                let _ = cluster.remove("v1", "Pod", ns, &format!("{name}-{ordinal}"));
            }
            // Ready when the server answers a status ping.
            let mut ready = 0;
            for (ordinal, (_, port)) in &pods {
                let pod_name = format!("{name}-{ordinal}");
                // Once ready, a pod stays ready while its process lives (a
                // slow answer on a loaded machine is not a crash).
                let was_ready = cluster
                    .object("v1", "Pod", ns, &pod_name)
                    .is_some_and(|p| p["status"]["conditions"][0]["status"] == "True");
                let up = was_ready
                    || respawn_controller::probe::status_ping(&format!("127.0.0.1:{port}"), Duration::from_secs(1)).await;
                if up {
                    ready += 1;
                }
                if let Some(mut pod) = cluster.object("v1", "Pod", ns, &pod_name) {
                    let was = pod["status"]["conditions"][0]["status"] == "True";
                    if was != up {
                        pod["status"] = json!({ "phase": "Running", "podIP": "127.0.0.1",
                            "conditions": [{ "type": "Ready", "status": if up { "True" } else { "False" } }] });
                        cluster.set(pod).unwrap();
                    }
                }
            }
            if let Some(mut sts) = cluster.object("apps/v1", "StatefulSet", ns, name)
                && (sts["status"]["readyReplicas"] != json!(ready) || sts["status"]["replicas"] != json!(pods.len())) {
                    sts["status"] = json!({ "replicas": pods.len(), "readyReplicas": ready });
                    cluster.set(sts).unwrap();
                }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    });
    Kubelet { stop }
}

fn squid(port: u16) -> Child {
    tokio::process::Command::new("node")
        .arg(peers_dir().join("squid.js"))
        .args(["--port", &port.to_string(), "--motd", "kube squid"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// A bot logs in to a hibernated server by hostname, is held until the pod is
/// ready, spawns and chats; idle, the server goes back to zero replicas and
/// Hibernated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_wakes_a_hibernated_server_then_it_sleeps_again() {
    let fake = cluster_with_crd().await;
    let servers = create_server(
        &fake,
        "acme",
        "squid",
        json!({ "hostnames": ["squid.acme.test"], "idleTimeoutSeconds": 3, "minOnlineSeconds": 0 }),
    )
    .await;
    let stop_controller = start_controller(&fake);
    eventually("hibernated", Duration::from_secs(10), || async { phase(&servers, "squid").await == Some(ServerPhase::Hibernated) }).await;
    assert_eq!(sts_replicas(&fake, "acme", "squid").await, Some(0));
    let _kubelet = kubelet(&fake, "acme", "squid", Arc::new(squid));

    // The proxy: routes come from the cluster.
    let discovery = KubeDiscovery::new(fake.client(), "respawn-system", "proxy-a");
    let proxy = Proxy::with_lifecycle(Config::parse(OPEN_LIMITS).unwrap(), discovery.clone()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let stop_proxy = CancellationToken::new();
    tokio::spawn(discovery.clone().run(proxy.clone(), stop_proxy.clone()));
    let (p, s) = (proxy.clone(), stop_proxy.clone());
    tokio::spawn(async move { p.serve(listener, s).await });
    eventually("route discovered", Duration::from_secs(5), || async {
        use respawn_controller::Lifecycle;
        discovery.watch("acme/squid").is_some()
    })
    .await;

    // Asleep: status from the proxy, no wake.
    let st = run_peer("node", "client.js", &["status", "--connect-port", &port, "--host", "squid.acme.test", "--version", "1.21.4"]).await;
    assert!(st["motd"].as_str().unwrap_or_default().contains("Sleeping"), "{st}");
    assert_eq!(sts_replicas(&fake, "acme", "squid").await, Some(0), "a status ping never wakes");

    let bot = run_peer(
        "node",
        "bot.js",
        &["--connect-port", &port, "--host", "squid.acme.test", "--username", "Kube", "--chat", "hello pods", "--version", "1.21.4"],
    )
    .await;
    assert_eq!(bot["ok"], true, "{bot}");
    assert_eq!(bot["spawned"], true, "{bot}");
    assert_eq!(bot["chatEchoed"], true, "{bot}");
    let mcs = servers.get("squid").await.unwrap();
    assert!(mcs.annotations().contains_key(WAKE_ANNOTATION), "the proxy asked for the wake");
    let metrics = proxy.metrics().render();
    assert!(metrics.contains("respawn_proxy_holds_total{result=\"joined\"} 1"), "{metrics}");

    // Nobody on: back to zero and Hibernated.
    let zero = tokio::time::timeout(Duration::from_secs(30), async {
        while sts_replicas(&fake, "acme", "squid").await != Some(0) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        zero.is_ok(),
        "not scaled to zero; status {:?}; leases {:?}; proxy: {}",
        servers.get("squid").await.unwrap().status,
        fake.objects("coordination.k8s.io/v1", "Lease").iter().map(|l| l["metadata"]["annotations"].clone()).collect::<Vec<_>>(),
        proxy.metrics().render().lines().filter(|l| l.contains("players_online") || l.contains("connections_open")).collect::<Vec<_>>().join(" | ")
    );
    eventually("hibernated again", Duration::from_secs(10), || async { phase(&servers, "squid").await == Some(ServerPhase::Hibernated) }).await;
    let status = servers.get("squid").await.unwrap().status.unwrap();
    assert!(status.last_decision.unwrap().reason.contains("nobody played"), "the reason is recorded");
    // Both scale decisions were recorded as Events on the resource.
    let events = fake.objects("events.k8s.io/v1", "Event");
    let reasons: Vec<&str> = events.iter().filter_map(|e| e["reason"].as_str()).collect();
    assert!(reasons.contains(&"ScaledUp") && reasons.contains(&"ScaledDown"), "{events:?}");
    stop_proxy.cancel();
    stop_controller.cancel();
}

/// A 409 from the API server is retried; a wake issued while the controller
/// is down is acted on when it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_are_retried_and_a_wake_survives_a_controller_restart() {
    let fake = cluster_with_crd().await;
    let servers = create_server(&fake, "acme", "lobby", json!({ "hostnames": ["lobby.acme.test"] })).await;
    fake.fail_next("PATCH", "/apis/apps/v1/namespaces/acme/statefulsets", 409);
    let stop = start_controller(&fake);
    eventually("applied despite the 409", Duration::from_secs(10), || async { sts_replicas(&fake, "acme", "lobby").await == Some(0) }).await;
    let patches = fake.request_log().iter().filter(|(m, p)| m == "PATCH" && p.contains("/statefulsets/lobby")).count();
    assert!(patches >= 2, "the failed apply was retried ({patches} PATCHes)");
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Controller down: a proxy asks for a wake.
    let patch = json!({ "metadata": { "annotations": { WAKE_ANNOTATION: "2026-11-22T00:00:00Z" } } });
    servers.patch("lobby", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sts_replicas(&fake, "acme", "lobby").await, Some(0), "nobody acts while the controller is down");

    let stop = start_controller(&fake);
    eventually("woken after the restart", Duration::from_secs(10), || async { sts_replicas(&fake, "acme", "lobby").await == Some(1) }).await;
    eventually("phase Waking", Duration::from_secs(5), || async { phase(&servers, "lobby").await == Some(ServerPhase::Waking) }).await;
    let status = servers.get("lobby").await.unwrap().status.unwrap();
    assert_eq!(status.handled_wake.as_deref(), Some("2026-11-22T00:00:00Z"));
    // The policy's memory survives the reconciles that follow (no stale overwrite).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = servers.get("lobby").await.unwrap().status.unwrap();
    assert!(status.last_wake.is_some(), "{status:?}");
    assert!(status.last_decision.is_some_and(|d| d.reason.contains("waking")), "the wake's reason is kept");
    stop.cancel();
}

/// A fleet grows with its players at once and shrinks after the window by
/// draining the highest replica; a proxy that disappears stops counting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleets_follow_players_and_vanished_proxies_stop_counting() {
    let fake = cluster_with_crd().await;
    let servers = create_server(
        &fake,
        "acme",
        "games",
        json!({ "hostnames": ["games.acme.test"], "replicas": { "min": 1, "max": 4 }, "playersPerReplica": 2,
                "stabilizationSeconds": 2, "idleTimeoutSeconds": 600 }),
    )
    .await;
    let stop = start_controller(&fake);
    eventually("min replicas", Duration::from_secs(10), || async { sts_replicas(&fake, "acme", "games").await == Some(1) }).await;

    // 5 players on pod 0 through proxy a: ceil(5/2) = 3 replicas at once.
    report(&fake, "a", json!({ "acme/games": { "games-0": 5 } }), 60).await;
    eventually("scaled up to 3", Duration::from_secs(5), || async { sts_replicas(&fake, "acme", "games").await == Some(3) }).await;
    eventually("players in status", Duration::from_secs(5), || async {
        servers.get("games").await.ok().and_then(|m| m.status).is_some_and(|s| s.players == 5)
    })
    .await;

    // Players move: 1 left on pod 0, 1 on pod 2 (the highest). The target is 1,
    // but pod 2 holds a player: it is drained (no new players), not removed.
    report(&fake, "a", json!({ "acme/games": { "games-0": 1, "games-2": 1 } }), 60).await;
    eventually("draining ordinal 2", Duration::from_secs(5), || async {
        servers.get("games").await.ok().and_then(|m| m.status).is_some_and(|s| s.draining_ordinal == Some(2))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sts_replicas(&fake, "acme", "games").await, Some(3), "never removes a pod that has players");

    // The player on pod 2 leaves; after the window the fleet shrinks.
    report(&fake, "a", json!({ "acme/games": { "games-0": 1 } }), 60).await;
    eventually("scaled down to 1", Duration::from_secs(10), || async { sts_replicas(&fake, "acme", "games").await == Some(1) }).await;

    // A drain timeout: with 3 replicas and a player stuck on pod 2, the
    // drained pod goes after drainTimeoutSeconds even with a player on it.
    let patch = json!({ "spec": { "drainTimeoutSeconds": 2 } });
    servers.patch("games", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    report(&fake, "a", json!({ "acme/games": { "games-0": 5 } }), 60).await;
    eventually("back up to 3", Duration::from_secs(5), || async { sts_replicas(&fake, "acme", "games").await == Some(3) }).await;
    report(&fake, "a", json!({ "acme/games": { "games-0": 1, "games-2": 1 } }), 60).await;
    eventually("pod 2 removed after the drain timeout", Duration::from_secs(15), || async {
        sts_replicas(&fake, "acme", "games").await == Some(2)
    })
    .await;
    let reason = servers.get("games").await.unwrap().status.unwrap().last_decision.unwrap().reason;
    assert!(reason.contains("drain timeout"), "{reason}");
    report(&fake, "a", json!({ "acme/games": { "games-0": 1 } }), 60).await;
    eventually("down to 1 again", Duration::from_secs(10), || async { sts_replicas(&fake, "acme", "games").await == Some(1) }).await;

    // Proxy b reports 4 players with a 1 s lease and then vanishes.
    report(&fake, "b", json!({ "acme/games": { "games-0": 4 } }), 1).await;
    eventually("counted", Duration::from_secs(5), || async {
        servers.get("games").await.ok().and_then(|m| m.status).is_some_and(|s| s.players == 5)
    })
    .await;
    eventually("stops counting after the TTL", Duration::from_secs(10), || async {
        servers.get("games").await.ok().and_then(|m| m.status).is_some_and(|s| s.players == 1)
    })
    .await;
    stop.cancel();
}

/// Two controller replicas: only one leads; the other takes over when the
/// leader stops renewing; a stale write loses with 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_election_lets_one_replica_act() {
    let fake = FakeApiServer::start().await;
    with_namespaces(&fake).await;
    let a = LeaderElector::new(fake.client(), "respawn-system", "respawn-controller", "a", Duration::from_secs(2));
    let b = LeaderElector::new(fake.client(), "respawn-system", "respawn-controller", "b", Duration::from_secs(2));
    assert!(a.try_acquire_or_renew().await.unwrap());
    assert!(!b.try_acquire_or_renew().await.unwrap(), "b must not lead while a's lease is live");
    assert!(a.try_acquire_or_renew().await.unwrap(), "a renews");
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert!(b.try_acquire_or_renew().await.unwrap(), "b takes over an expired lease");
    assert!(!a.try_acquire_or_renew().await.unwrap(), "a lost it");

    // A write carrying a stale resourceVersion is refused (what the election relies on).
    let leases: Api<Lease> = Api::namespaced(fake.client(), "respawn-system");
    let mut stale = leases.get("respawn-controller").await.unwrap();
    assert!(b.try_acquire_or_renew().await.unwrap());
    stale.spec.as_mut().unwrap().holder_identity = Some("a".into());
    let err = leases.replace("respawn-controller", &PostParams::default(), &stale).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 409), "{err:?}");
}
