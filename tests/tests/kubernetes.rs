//! Kubernetes paths against the fake API server (tests/kube-fake): the
//! test plays the StatefulSet controller and the kubelet — when replicas
//! change it creates or deletes pods and starts or stops a real Minecraft
//! server process per pod (each listens on its own loopback port, named in
//! the pod's `minecraft` container port).
//!
//! Past 500 lines: every scenario shares the simulated kubelet and the fake;
//! splitting them would copy that harness.

mod common;

use std::{collections::HashMap, sync::Arc, time::Duration};

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

/// A controller running against the fake: stop it with `stop`, wait for it
/// with `task`, and read how many reconciles it ran from `metrics`.
struct RunningController {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    metrics: controller::Metrics,
}

impl RunningController {
    fn cancel(&self) {
        self.stop.cancel();
    }

    /// Stops it and waits until it has stopped.
    async fn stopped(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task).await.expect("the controller stops").unwrap().unwrap();
    }
}

fn start_controller(fake: &FakeApiServer) -> RunningController {
    let stop = CancellationToken::new();
    let metrics = controller::Metrics::new(&prometheus::Registry::new());
    let task = tokio::spawn(controller::run(fake.client(), settings(), metrics.clone(), stop.clone()));
    RunningController { stop, task, metrics }
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

fn kubelet(
    fake: &FakeApiServer,
    ns: &'static str,
    name: &'static str,
    start: Arc<dyn Fn(u16) -> Child + Send + Sync>,
) -> Kubelet {
    let stop = CancellationToken::new();
    let (client, cluster, token) = (fake.client(), fake.cluster().clone(), stop.clone());
    tokio::spawn(async move {
        let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
        let mut pods: HashMap<u32, (Child, u16)> = HashMap::new();
        loop {
            if token.is_cancelled() {
                return;
            }
            let want =
                sts_api.get_opt(name).await.ok().flatten().and_then(|s| s.spec?.replicas).unwrap_or(0).max(0) as u32;
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
                    || respawn_local::probe::status_ping(&format!("127.0.0.1:{port}"), Duration::from_secs(1)).await;
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
                && (sts["status"]["readyReplicas"] != json!(ready) || sts["status"]["replicas"] != json!(pods.len()))
            {
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
    eventually("hibernated", Duration::from_secs(10), || async {
        phase(&servers, "squid").await == Some(ServerPhase::Hibernated)
    })
    .await;
    assert_eq!(sts_replicas(&fake, "acme", "squid").await, Some(0));
    let _kubelet = kubelet(&fake, "acme", "squid", Arc::new(squid));

    // The proxy: routes come from the cluster.
    let discovery = KubeDiscovery::new(fake.client(), "respawn-system", "proxy-a");
    let proxy = Proxy::with_lifecycle(Config::parse(OPEN_LIMITS).unwrap(), discovery.clone()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let stop_proxy = CancellationToken::new();
    tokio::spawn(discovery.clone().run(Arc::new(proxy.clone()), stop_proxy.clone()));
    let (p, s) = (proxy.clone(), stop_proxy.clone());
    tokio::spawn(async move { p.serve(listener, s).await });
    eventually("route discovered", Duration::from_secs(5), || async {
        use respawn_contract::Lifecycle;
        discovery.watch("acme/squid").is_some()
    })
    .await;

    // Asleep: status from the proxy, no wake.
    let st = run_peer(
        "node",
        "client.js",
        &["status", "--connect-port", &port, "--host", "squid.acme.test", "--version", "1.21.4"],
    )
    .await;
    assert!(st["motd"].as_str().unwrap_or_default().contains("Sleeping"), "{st}");
    assert_eq!(sts_replicas(&fake, "acme", "squid").await, Some(0), "a status ping never wakes");

    let bot = run_peer(
        "node",
        "bot.js",
        &[
            "--connect-port",
            &port,
            "--host",
            "squid.acme.test",
            "--username",
            "Kube",
            "--chat",
            "hello pods",
            "--version",
            "1.21.4",
        ],
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
        fake.objects("coordination.k8s.io/v1", "Lease")
            .iter()
            .map(|l| l["metadata"]["annotations"].clone())
            .collect::<Vec<_>>(),
        proxy
            .metrics()
            .render()
            .lines()
            .filter(|l| l.contains("players_online") || l.contains("connections_open"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    eventually("hibernated again", Duration::from_secs(10), || async {
        phase(&servers, "squid").await == Some(ServerPhase::Hibernated)
    })
    .await;
    let status = servers.get("squid").await.unwrap().status.unwrap();
    assert!(status.last_decision.unwrap().reason.contains("nobody played"), "the reason is recorded");
    // Both scale decisions were recorded as Events on the resource (an
    // event may trail the change it reports).
    let both = || {
        let events = fake.objects("events.k8s.io/v1", "Event");
        let reasons: Vec<&str> = events.iter().filter_map(|e| e["reason"].as_str()).collect();
        reasons.contains(&"ScaledUp") && reasons.contains(&"ScaledDown")
    };
    eventually("ScaledUp and ScaledDown events", Duration::from_secs(10), || async { both() }).await;
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
    eventually("applied despite the 409", Duration::from_secs(10), || async {
        sts_replicas(&fake, "acme", "lobby").await == Some(0)
    })
    .await;
    let patches = fake.request_log().iter().filter(|(m, p)| m == "PATCH" && p.contains("/statefulsets/lobby")).count();
    assert!(patches >= 2, "the failed apply was retried ({patches} PATCHes)");
    let conflicts = stop.metrics.reconcile_errors.with_label_values(&["conflict"]).get();
    assert!(conflicts >= 1, "the failed reconcile was counted (respawn_controller_reconcile_errors_total)");
    stop.stopped().await;

    // Controller down (its task has ended): a proxy asks for a wake.
    let patch = json!({ "metadata": { "annotations": { WAKE_ANNOTATION: "2026-11-22T00:00:00Z" } } });
    servers.patch("lobby", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    assert_eq!(sts_replicas(&fake, "acme", "lobby").await, Some(0), "nobody acts while the controller is down");

    let stop = start_controller(&fake);
    eventually("woken after the restart", Duration::from_secs(10), || async {
        sts_replicas(&fake, "acme", "lobby").await == Some(1)
    })
    .await;
    eventually("phase Waking", Duration::from_secs(5), || async {
        phase(&servers, "lobby").await == Some(ServerPhase::Waking)
    })
    .await;
    let status = servers.get("lobby").await.unwrap().status.unwrap();
    assert_eq!(status.handled_wake.as_deref(), Some("2026-11-22T00:00:00Z"));
    // The policy's memory survives the reconciles that follow (no stale
    // overwrite): wait for two more of them.
    let seen = stop.metrics.reconciles.get();
    eventually("two more reconciles", Duration::from_secs(10), || async { stop.metrics.reconciles.get() >= seen + 2 })
        .await;
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
    eventually("min replicas", Duration::from_secs(10), || async {
        sts_replicas(&fake, "acme", "games").await == Some(1)
    })
    .await;

    // 5 players on pod 0 through proxy a: ceil(5/2) = 3 replicas at once.
    report(&fake, "a", json!({ "acme/games": { "games-0": 5 } }), 60).await;
    eventually("scaled up to 3", Duration::from_secs(5), || async {
        sts_replicas(&fake, "acme", "games").await == Some(3)
    })
    .await;
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
    eventually("scaled down to 1", Duration::from_secs(10), || async {
        sts_replicas(&fake, "acme", "games").await == Some(1)
    })
    .await;

    // A drain timeout: with 3 replicas and a player stuck on pod 2, the
    // drained pod goes after drainTimeoutSeconds even with a player on it.
    let patch = json!({ "spec": { "drainTimeoutSeconds": 2 } });
    servers.patch("games", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    report(&fake, "a", json!({ "acme/games": { "games-0": 5 } }), 60).await;
    eventually("back up to 3", Duration::from_secs(5), || async {
        sts_replicas(&fake, "acme", "games").await == Some(3)
    })
    .await;
    report(&fake, "a", json!({ "acme/games": { "games-0": 1, "games-2": 1 } }), 60).await;
    eventually("pod 2 removed after the drain timeout", Duration::from_secs(15), || async {
        sts_replicas(&fake, "acme", "games").await == Some(2)
    })
    .await;
    // The status is written after the StatefulSet: wait for it, not read it once.
    eventually("the drain timeout recorded as the reason", Duration::from_secs(5), || async {
        let decided = servers.get("games").await.ok().and_then(|m| m.status?.last_decision);
        decided.is_some_and(|d| d.reason.contains("drain timeout"))
    })
    .await;
    report(&fake, "a", json!({ "acme/games": { "games-0": 1 } }), 60).await;
    eventually("down to 1 again", Duration::from_secs(10), || async {
        sts_replicas(&fake, "acme", "games").await == Some(1)
    })
    .await;

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

/// A live mineflayer bot that stays in the world until told to leave
/// (`bot.js --stay`): it chats on command, and any end of its session while
/// playing shows as an `end` event.
struct Bot {
    name: String,
    child: Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::sync::mpsc::UnboundedReceiver<Value>,
    /// Every line seen so far, for assertions and failure messages.
    seen: Vec<Value>,
}

impl Bot {
    /// Joins through the proxy by hostname and waits until it plays.
    async fn join(proxy_port: &str, host: &str, name: &str) -> Bot {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new("node")
            .arg(peers_dir().join("bot.js"))
            .args(["--connect-port", proxy_port, "--host", host, "--username", name])
            .args(["--chat", &format!("{name} joined"), "--version", "1.21.4", "--stay", "--timeout-ms", "40000"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs bot.js");
        let stdin = child.stdin.take().unwrap();
        let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        let mut bot = Bot { name: name.into(), child, stdin, lines, seen: Vec::new() };
        let playing =
            bot.next_where(Duration::from_secs(45), |v| v["event"] == "playing" || v.get("ok").is_some()).await;
        assert!(playing.as_ref().is_some_and(|v| v["event"] == "playing"), "{name} did not get in: {:?}", bot.seen);
        bot
    }

    /// The next line matching `want`, within `within`.
    async fn next_where(&mut self, within: Duration, want: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv()).await.ok().flatten()?;
            self.seen.push(line.clone());
            if want(&line) {
                return Some(line);
            }
        }
    }

    /// Takes the lines printed so far without waiting.
    fn drain_lines(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    /// Still in the world: no `end` so far, and a chat line comes back.
    async fn assert_alive(&mut self, when: &str) {
        use tokio::io::AsyncWriteExt;
        self.drain_lines();
        assert!(
            !self.seen.iter().any(|v| v["event"] == "end"),
            "{} was disconnected {when}: {:?}",
            self.name,
            self.seen
        );
        let text = format!("{} still here {when}", self.name).replace(' ', "_");
        self.stdin.write_all(format!("chat {text}\n").as_bytes()).await.unwrap();
        let echo = self.next_where(Duration::from_secs(10), |v| v["event"] == "chat" || v["event"] == "end").await;
        assert!(
            echo.as_ref().is_some_and(|v| v["event"] == "chat" && v["echoed"] == true),
            "{} cannot chat {when}: {:?}",
            self.name,
            self.seen
        );
    }

    /// Leaves the world; it must have played to the end without a disconnect.
    async fn leave(mut self) {
        use tokio::io::AsyncWriteExt;
        self.stdin.write_all(b"leave\n").await.unwrap();
        let last = self.next_where(Duration::from_secs(10), |v| v.get("ok").is_some()).await;
        assert!(
            last.as_ref().is_some_and(|v| v["ok"] == true && v["disconnected"] == false),
            "{} did not leave cleanly: {:?}",
            self.name,
            self.seen
        );
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

/// Ready pods of a server in the fake, by name.
fn ready_pods(fake: &FakeApiServer, ns: &str, server: &str) -> Vec<String> {
    let mut pods: Vec<String> = fake
        .objects("v1", "Pod")
        .iter()
        .filter(|p| p["metadata"]["namespace"] == ns && p["metadata"]["labels"]["respawn.dev/server"] == server)
        .filter(|p| p["status"]["conditions"][0]["status"] == "True")
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    pods.sort();
    pods
}

/// Players per pod as this proxy reports them to the controller.
fn players_by_pod(discovery: &KubeDiscovery, server: &str) -> Value {
    json!(discovery.report().get(server).cloned().unwrap_or_default())
}

/// Live bots through the proxy's Kubernetes discovery: the fleet grows by
/// players per replica as they join (each new player goes to the pod with the
/// fewest), and as they leave it drains the highest pod — which keeps its
/// player until that player leaves — and shrinks; no bot still playing is
/// ever disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_live_bots_grows_and_shrinks_by_draining_without_disconnecting_anyone() {
    let fake = cluster_with_crd().await;
    let servers = create_server(
        &fake,
        "acme",
        "arena",
        json!({ "hostnames": ["arena.acme.test"], "replicas": { "min": 1, "max": 3 }, "playersPerReplica": 2,
                "stabilizationSeconds": 2, "idleTimeoutSeconds": 600 }),
    )
    .await;
    let stop_controller = start_controller(&fake);
    let _kubelet = kubelet(&fake, "acme", "arena", Arc::new(squid));
    let discovery = KubeDiscovery::new(fake.client(), "respawn-system", "proxy-a");
    let proxy = Proxy::with_lifecycle(Config::parse(OPEN_LIMITS).unwrap(), discovery.clone()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let stop_proxy = CancellationToken::new();
    tokio::spawn(discovery.clone().run(Arc::new(proxy.clone()), stop_proxy.clone()));
    let (p, s) = (proxy.clone(), stop_proxy.clone());
    tokio::spawn(async move { p.serve(listener, s).await });

    let replicas = || sts_replicas(&fake, "acme", "arena");
    // The proxy picks up a newly ready pod within its watch's debounce; give
    // it a moment beyond the fake's own view.
    let pods_ready = |n: usize| {
        let fake = &fake;
        async move {
            eventually(&format!("{n} pods ready"), Duration::from_secs(30), || async {
                ready_pods(fake, "acme", "arena").len() == n
            })
            .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    eventually("min replicas", Duration::from_secs(10), || async { replicas().await == Some(1) }).await;
    pods_ready(1).await;

    // Two players fill pod 0; a third makes it ceil(3/2) = 2 replicas.
    let mut a = Bot::join(&port, "arena.acme.test", "Ann").await;
    let b = Bot::join(&port, "arena.acme.test", "Ben").await;
    let c = Bot::join(&port, "arena.acme.test", "Cal").await;
    assert_eq!(players_by_pod(&discovery, "acme/arena"), json!({ "arena-0": 3 }));
    eventually("2 replicas for 3 players", Duration::from_secs(10), || async { replicas().await == Some(2) }).await;
    pods_ready(2).await;
    // The next players go to the emptier pod 1; at 5 players, 3 replicas.
    let d = Bot::join(&port, "arena.acme.test", "Dan").await;
    let mut e = Bot::join(&port, "arena.acme.test", "Eve").await;
    assert_eq!(players_by_pod(&discovery, "acme/arena"), json!({ "arena-0": 3, "arena-1": 2 }));
    eventually("3 replicas for 5 players", Duration::from_secs(10), || async { replicas().await == Some(3) }).await;
    pods_ready(3).await;
    let mut f = Bot::join(&port, "arena.acme.test", "Fay").await;
    assert_eq!(players_by_pod(&discovery, "acme/arena"), json!({ "arena-0": 3, "arena-1": 2, "arena-2": 1 }));
    eventually("6 players in status", Duration::from_secs(10), || async {
        servers.get("arena").await.ok().and_then(|m| m.status).is_some_and(|s| s.players == 6)
    })
    .await;

    // Four leave; Eve (pod 1) and Fay (pod 2) play on. The target is 1, but
    // pods 1 and 2 hold players: pod 2 is drained, nothing is removed.
    a.assert_alive("before the others leave").await;
    for bot in [a, b, c, d] {
        bot.leave().await;
    }
    eventually("draining pod 2", Duration::from_secs(10), || async {
        servers
            .get("arena")
            .await
            .ok()
            .and_then(|m| m.status)
            .is_some_and(|s| s.draining_ordinal == Some(2) && s.players == 2)
    })
    .await;
    // Past the stabilisation window, still 3: pod 2 has Fay on it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(replicas().await, Some(3), "a pod with a player on it was removed");
    f.assert_alive("on the draining pod").await;
    e.assert_alive("while pod 2 drains").await;
    // A new player is not sent to the draining pod.
    let g = Bot::join(&port, "arena.acme.test", "Gus").await;
    let by_pod = players_by_pod(&discovery, "acme/arena");
    assert_eq!(by_pod["arena-2"], json!(1), "only Fay on the draining pod: {by_pod}");
    g.leave().await;

    // Fay leaves: pod 2 goes; Eve holds pod 1, so the fleet keeps 2 replicas.
    f.leave().await;
    eventually("scaled down to 2", Duration::from_secs(20), || async { replicas().await == Some(2) }).await;
    eventually("pod 2 gone", Duration::from_secs(10), || async { ready_pods(&fake, "acme", "arena").len() == 2 }).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(replicas().await, Some(2), "pod 1 has Eve on it");
    e.assert_alive("after pod 2 was removed").await;

    // Eve leaves last: down to the minimum.
    e.leave().await;
    eventually("scaled down to 1", Duration::from_secs(20), || async { replicas().await == Some(1) }).await;
    // The recorder folds repeats of one reason into a series. The event is
    // written after the scale it reports, so it may trail the replicas.
    let downs = || {
        let events = fake.objects("events.k8s.io/v1", "Event");
        events
            .iter()
            .filter(|e| e["reason"] == "ScaledDown")
            .map(|e| e["series"]["count"].as_u64().unwrap_or(1))
            .sum::<u64>()
    };
    eventually("3 → 2 → 1 recorded as ScaledDown events", Duration::from_secs(10), || async { downs() >= 2 }).await;
    stop_proxy.cancel();
    stop_controller.cancel();
}
