//! The management API on Kubernetes: the API serves on a real loopback port
//! with `KubeRuntime` over the fake API server (tests/kube-fake). The test
//! plays the controller (it writes the MinecraftServer's status) and the
//! kubelet (it creates the pod and writes its log).

use std::{sync::Arc, time::Duration};

use k8s_openapi::{apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition, jiff::Timestamp};
use kube::{Api, CustomResourceExt, api::PostParams};
use respawn_api::{ApiConfig, AppState, Db};
use respawn_k8s::api_runtime::{KubeRuntime, SERVER_ID_LABEL, TENANT_LABEL, resource_name};
use respawn_k8s::{
    controller::HIBERNATE_ANNOTATION, crd::MinecraftServer, render::SERVER_LABEL, signals::WAKE_ANNOTATION,
};
use respawn_kube_fake::FakeApiServer;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const ADMIN: &str = "api-kubernetes-admin-token-0123456789abcdef";
const NS: &str = "acme";
const MCS: &str = "respawn.dev/v1alpha1";

/// The fake cluster, the API in front of it and a scratch directory.
struct Harness {
    fake: FakeApiServer,
    base: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    dir: std::path::PathBuf,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Harness {
    async fn start() -> Harness {
        let fake = FakeApiServer::start().await;
        fake.set(json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": NS } })).unwrap();
        let crds: Api<CustomResourceDefinition> = Api::all(fake.client());
        crds.create(&PostParams::default(), &MinecraftServer::crd()).await.expect("CRD registers");

        let shutdown = CancellationToken::new();
        let (runtime, status) = KubeRuntime::new(fake.client(), NS);
        tokio::spawn(status.run(shutdown.clone()));

        let dir = std::env::temp_dir().join(format!("respawn-api-k8s-{}-{}", std::process::id(), fake.addr().port()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("api.db").display());
        let mut config =
            ApiConfig { database_url: url.clone(), admin_token: Some(ADMIN.into()), ..ApiConfig::default() };
        config.backups.local_dir = dir.join("backups");
        config.backups.work_dir = dir.join("work");
        let db = Db::connect(&url, 4).await.expect("database");
        db.migrate().await.expect("migrations");
        let state = AppState::new(db, Arc::new(runtime), &config).expect("state");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(respawn_api::serve(listener, state, shutdown.clone(), Duration::from_secs(1)));
        Harness { fake, base, http: reqwest::Client::new(), shutdown, dir }
    }

    async fn call(&self, method: reqwest::Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().await.expect("the API answers");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("body");
        (status, if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("JSON") })
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Value {
        let (status, body) = self.call(reqwest::Method::POST, path, token, Some(body)).await;
        assert!((200..300).contains(&status), "POST {path}: {status} {body}");
        body
    }

    async fn get(&self, path: &str, token: &str) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, path, token, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    fn server(&self, name: &str) -> Option<Value> {
        self.fake.object(MCS, "MinecraftServer", NS, name)
    }

    /// A tenant with a token, a plan and one server; returns (token, server id).
    async fn tenant_with_server(&self) -> (String, String) {
        let tenant = self.post("/v1/tenants", ADMIN, json!({ "name": "acme" })).await;
        let tenant_id = tenant["id"].as_str().unwrap().to_owned();
        let token = self.post(&format!("/v1/tenants/{tenant_id}/tokens"), ADMIN, json!({ "name": "ci" })).await;
        let token = token["token"].as_str().unwrap().to_owned();
        let plan = self
            .post(
                "/v1/plans",
                ADMIN,
                json!({ "name": "small", "cpu_millicores": 1000, "memory_mib": 2048, "storage_gib": 10, "max_players": 20 }),
            )
            .await;
        let server = self
            .post(
                "/v1/servers",
                &token,
                json!({
                    "name": "survival",
                    "hostnames": ["survival.acme.example"],
                    "plan_id": plan["id"],
                    "minecraft": { "type": "paper", "version": "1.21.4" },
                    "properties": { "motd": "hello", "difficulty": "hard" },
                    "policy": { "idle_timeout_s": 300, "min_replicas": 0, "max_replicas": 2 },
                }),
            )
            .await;
        (token, server["id"].as_str().unwrap().to_owned())
    }
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Create → the resource with its labels and spec; update → changed; delete → gone.
#[tokio::test]
async fn servers_are_written_as_minecraft_servers() {
    let h = Harness::start().await;
    let (token, id) = h.tenant_with_server().await;
    let name = resource_name(&id);

    let mcs = h.server(&name).expect("the MinecraftServer exists right after the create");
    assert_eq!(mcs["metadata"]["labels"][SERVER_ID_LABEL], id.as_str());
    assert!(mcs["metadata"]["labels"][TENANT_LABEL].as_str().is_some_and(|t| !t.is_empty()), "{mcs}");
    let spec = &mcs["spec"];
    assert_eq!(spec["hostnames"], json!(["survival.acme.example"]));
    assert_eq!((spec["type"].as_str(), spec["version"].as_str()), (Some("PAPER"), Some("1.21.4")));
    assert_eq!(spec["properties"]["motd"], "hello");
    assert_eq!(spec["properties"]["max-players"], "20");
    assert_eq!(spec["resources"]["limits"]["memory"], "2048Mi");
    assert_eq!(spec["resources"]["requests"]["cpu"], "1000m");
    assert_eq!(spec["storage"]["size"], "10Gi");
    assert_eq!(spec["replicas"], json!({ "min": 0, "max": 2 }));
    assert_eq!(spec["idleTimeoutSeconds"], 300);
    // It is what the controller reads: it parses as the typed resource.
    serde_json::from_value::<MinecraftServer>(mcs.clone()).expect("a valid MinecraftServer");

    let (status, body) = h
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/servers/{id}"),
            &token,
            Some(json!({ "hostnames": ["survival.acme.example", "play.acme.example"], "policy": { "idle_timeout_s": 900 } })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let spec = h.server(&name).unwrap()["spec"].clone();
    assert_eq!(spec["hostnames"], json!(["survival.acme.example", "play.acme.example"]));
    assert_eq!(spec["idleTimeoutSeconds"], 900);

    // A plugin from the catalogue lands in the spec (the controller renders
    // the plugin-sync init container from it).
    let plugin = h
        .post(
            "/v1/plugins",
            ADMIN,
            json!({ "name": "worldedit", "version": "7.3.0", "download_url": "https://plugins.example/we.jar", "sha256": "ab".repeat(32) }),
        )
        .await;
    h.post(&format!("/v1/servers/{id}/plugins"), &token, json!({ "plugin_id": plugin["id"] })).await;
    let plugins = h.server(&name).unwrap()["spec"]["plugins"].clone();
    assert_eq!(plugins[0]["name"], "worldedit");
    assert_eq!(plugins[0]["url"], "https://plugins.example/we.jar");
    assert_eq!(plugins[0]["sha256"], "ab".repeat(32));

    let (status, body) = h.call(reqwest::Method::DELETE, &format!("/v1/servers/{id}"), &token, None).await;
    assert_eq!(status, 204, "{body}");
    assert!(h.server(&name).is_none(), "the MinecraftServer is deleted with the server");
}

/// Start and stop write the controller's signals; the status the controller
/// writes shows through the API.
#[tokio::test]
async fn start_stop_and_status_go_through_the_resource() {
    let h = Harness::start().await;
    let (token, id) = h.tenant_with_server().await;
    let name = resource_name(&id);
    let server_path = format!("/v1/servers/{id}");

    eventually("the new server shows as sleeping", || async {
        h.get(&server_path, &token).await["status"]["phase"] == "sleeping"
    })
    .await;

    let started = h.post(&format!("{server_path}/start"), &token, json!({})).await;
    assert_eq!(started["id"], id.as_str());
    let wake = h.server(&name).unwrap()["metadata"]["annotations"][WAKE_ANNOTATION].as_str().map(str::to_owned);
    let wake = wake.expect("start writes the wake annotation the proxy writes");
    wake.parse::<Timestamp>().expect("an RFC 3339 time");
    eventually("a wake not yet handled shows as starting", || async {
        h.get(&server_path, &token).await["status"]["phase"] == "starting"
    })
    .await;

    // Play the controller: the wake was handled and the pod is ready.
    let mut mcs = h.server(&name).unwrap();
    mcs["status"] = json!({
        "phase": "Running", "players": 2, "replicas": 1, "readyReplicas": 1,
        "lastActivity": "2026-01-01T00:00:00Z", "handledWake": wake,
    });
    h.fake.set(mcs).unwrap();
    eventually("the controller's status shows through the API", || async {
        let status = &h.get(&server_path, &token).await["status"];
        status["phase"] == "running" && status["players"] == 2
    })
    .await;
    let status = h.get(&server_path, &token).await["status"].clone();
    assert_eq!(status["address"], format!("{name}.{NS}.svc:25565"));
    assert_eq!(status["last_activity_ms"], 1_767_225_600_000_i64);
    let running = h.get("/v1/servers?phase=running", &token).await;
    assert_eq!(running["items"][0]["id"], id.as_str(), "{running}");

    h.post(&format!("{server_path}/stop"), &token, json!({})).await;
    let annotations = h.server(&name).unwrap()["metadata"]["annotations"].clone();
    let hibernate: Timestamp =
        annotations[HIBERNATE_ANNOTATION].as_str().expect("stop writes the hibernate annotation").parse().unwrap();
    assert!(hibernate > wake.parse::<Timestamp>().unwrap(), "newer than the wake, so the controller honours it");
}

/// Logs come from the server's pods, with their times.
#[tokio::test]
async fn logs_come_from_the_pods() {
    let h = Harness::start().await;
    let (token, id) = h.tenant_with_server().await;
    let name = resource_name(&id);
    let logs_path = format!("/v1/servers/{id}/logs");

    assert_eq!(h.get(&logs_path, &token).await["lines"], json!([]), "no pods, no lines");

    let pod = format!("{name}-0");
    h.fake
        .set(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": pod, "namespace": NS, "labels": { SERVER_LABEL: name } },
            "spec": { "containers": [{ "name": "server", "image": "itzg/minecraft-server" }] },
        }))
        .unwrap();
    // Another server's pod: its lines must not show.
    h.fake
        .set(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "other-0", "namespace": NS, "labels": { SERVER_LABEL: "other" } },
            "spec": { "containers": [{ "name": "server", "image": "itzg/minecraft-server" }] },
        }))
        .unwrap();
    let at = |ms: i64| Timestamp::from_millisecond(ms).unwrap();
    let base = 1_767_225_600_000_i64;
    h.fake.cluster().append_pod_log(NS, "other-0", at(base), "not mine");
    for (i, line) in ["Starting minecraft server", "Preparing level \"world\"", "Done (3.2s)!"].iter().enumerate() {
        h.fake.cluster().append_pod_log(NS, &pod, at(base + 1000 * i as i64 + 250), line);
    }

    let lines = h.get(&logs_path, &token).await["lines"].clone();
    assert_eq!(
        lines,
        json!([
            { "at_ms": base + 250, "line": "Starting minecraft server" },
            { "at_ms": base + 1250, "line": "Preparing level \"world\"" },
            { "at_ms": base + 2250, "line": "Done (3.2s)!" },
        ])
    );
    let tail = h.get(&format!("{logs_path}?tail=1"), &token).await["lines"].clone();
    assert_eq!(tail, json!([{ "at_ms": base + 2250, "line": "Done (3.2s)!" }]));
    let since = h.get(&format!("{logs_path}?since_ms={}", base + 1250), &token).await["lines"].clone();
    assert_eq!(since.as_array().map(Vec::len), Some(2), "{since}");
    assert_eq!(since[0]["line"], "Preparing level \"world\"");
}

/// With the controller running: a plugin installed through the API reaches
/// the StatefulSet as the plugin-sync init container, `start` scales it to
/// one replica and `stop` back to zero.
#[tokio::test]
async fn the_controller_acts_on_what_the_api_writes() {
    let h = Harness::start().await;
    let settings = respawn_k8s::controller::Settings {
        requeue_running: Duration::from_millis(300),
        requeue_sleeping: Duration::from_millis(300),
        error_backoff: Duration::from_millis(200),
        reports_namespace: NS.into(),
    };
    tokio::spawn(respawn_k8s::controller::run(
        h.fake.client(),
        settings,
        respawn_k8s::controller::Metrics::new(&prometheus::Registry::new()),
        h.shutdown.clone(),
    ));
    let (token, id) = h.tenant_with_server().await;
    let name = resource_name(&id);
    let server_path = format!("/v1/servers/{id}");
    let plugin = h
        .post(
            "/v1/plugins",
            ADMIN,
            json!({ "name": "worldedit", "version": "7.3.0", "download_url": "https://plugins.example/we.jar", "sha512": "cd".repeat(64) }),
        )
        .await;
    h.post(&format!("{server_path}/plugins"), &token, json!({ "plugin_id": plugin["id"] })).await;

    let sts = |h: &Harness| h.fake.object("apps/v1", "StatefulSet", NS, &name);
    let replicas = |sts: &Value| sts["spec"]["replicas"].as_i64();
    eventually("the StatefulSet carries the plugin-sync init container", || async {
        sts(&h).is_some_and(|s| s["spec"]["template"]["spec"]["initContainers"][0]["name"] == "plugin-sync")
    })
    .await;
    let init = sts(&h).unwrap()["spec"]["template"]["spec"]["initContainers"][0].clone();
    assert_eq!(init["args"], json!(["plugin-sync", "--dir", "/data/plugins"]));
    let specs: Value = serde_json::from_str(init["env"][0]["value"].as_str().unwrap()).unwrap();
    assert_eq!(specs[0]["download_url"], "https://plugins.example/we.jar");
    assert_eq!(specs[0]["sha512"], "cd".repeat(64));
    assert_eq!(replicas(&sts(&h).unwrap()), Some(0), "asleep until woken");

    h.post(&format!("{server_path}/start"), &token, json!({})).await;
    eventually("start scales to one replica", || async { sts(&h).and_then(|s| replicas(&s)) == Some(1) }).await;
    h.post(&format!("{server_path}/stop"), &token, json!({})).await;
    eventually("stop scales to zero", || async { sts(&h).and_then(|s| replicas(&s)) == Some(0) }).await;
    let reason = h.server(&name).unwrap()["status"]["lastDecision"]["reason"].clone();
    assert_eq!(reason, "hibernate requested");
    // A later wake (a player logging in through a proxy) supersedes the stop.
    h.post(&format!("{server_path}/start"), &token, json!({})).await;
    eventually("a later start wakes it again", || async { sts(&h).and_then(|s| replicas(&s)) == Some(1) }).await;
}
