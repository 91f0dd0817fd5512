//! `respawn up` end to end: the API, the local runtime and the proxy in one
//! process. A tenant creates a server with a hostname through the REST API;
//! a mineflayer bot connects to that hostname through the proxy, wakes the
//! server (flying-squid, run from the `[api_servers]` template) and plays;
//! the API then shows it running with its logs, backs its data directory up,
//! stops it, restores the backup over changed files, and deletes it.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod common;
use common::{OPEN_LIMITS, peers_dir, run_peer};

const ADMIN: &str = "e2e-admin-token-0123456789abcdef-0123456789";

async fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port()
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, token, Some(body)).await
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, token, None).await
    }

    async fn wait_phase(&self, id: &str, token: &str, want: &str, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (status, body) = self.get(&format!("/v1/servers/{id}"), token).await;
            assert_eq!(status, 200, "{body}");
            if body["status"]["phase"] == want {
                return body;
            }
            assert!(tokio::time::Instant::now() < deadline, "still {}, wanted {want}: {body}", body["status"]["phase"]);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_created_through_the_api_wakes_for_a_bot() {
    let (proxy_port, admin_port, api_port, server_port) =
        (free_port().await, free_port().await, free_port().await, free_port().await);
    let dir = std::env::temp_dir().join(format!("respawn-up-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let squid = peers_dir().join("squid.js").display().to_string();
    let config = format!(
        r#"{OPEN_LIMITS}
[listen]
address = "127.0.0.1:{proxy_port}"
admin_address = "127.0.0.1:{admin_port}"

[status]
cache_file = "{dir}/status-cache.json"

[runtime]
data_dir = "{dir}"

[api]
listen = "127.0.0.1:{api_port}"
database_url = "sqlite://{dir}/respawn.db?mode=rwc"
admin_token = "{ADMIN}"

[api.backups]
local_dir = "{dir}/backups"
work_dir = "{dir}/backup-work"

[api_servers]
command = "node"
args = ["{squid}", "--port", "{{port}}", "--motd", "{{name}} via the API"]
ports = [{server_port}, {server_port}]
min_online_ms = 1000
stop_timeout_ms = 5000
"#,
        dir = dir.display()
    );
    let path = dir.join("respawn.toml");
    std::fs::write(&path, config).unwrap();
    let shutdown = CancellationToken::new();
    let up = tokio::spawn(respawn::embedded::up(path, shutdown.clone()));
    let _stop = StopOnDrop(shutdown.clone());

    let api = Api { base: format!("http://127.0.0.1:{api_port}"), http: reqwest::Client::new() };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while api.http.get(format!("{}/healthz", api.base)).send().await.is_err() {
        assert!(!up.is_finished(), "respawn up exited early");
        assert!(tokio::time::Instant::now() < deadline, "the API never came up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Tenant, token, plan, server: the REST way.
    let (s, tenant) = api.post("/v1/tenants", ADMIN, json!({"name": "acme"})).await;
    assert_eq!(s, 201, "{tenant}");
    let tid = tenant["id"].as_str().unwrap();
    let (s, tok) = api.post(&format!("/v1/tenants/{tid}/tokens"), ADMIN, json!({"name": "e2e"})).await;
    assert_eq!(s, 201, "{tok}");
    let token = tok["token"].as_str().unwrap().to_owned();
    let (s, plan) = api
        .post(
            "/v1/plans",
            ADMIN,
            json!({"name": "small", "cpu_millicores": 1000, "memory_mib": 1024, "storage_gib": 5, "max_players": 10}),
        )
        .await;
    assert_eq!(s, 201, "{plan}");
    let (s, server) = api
        .post(
            "/v1/servers",
            &token,
            json!({
                "name": "survival",
                "hostnames": ["survival.acme.test"],
                "plan_id": plan["id"],
                "minecraft": {"type": "vanilla", "version": "1.21.4"},
                "policy": {"idle_timeout_s": 300, "min_replicas": 0, "max_replicas": 1}
            }),
        )
        .await;
    assert_eq!(s, 201, "{server}");
    let id = server["id"].as_str().unwrap().to_owned();
    api.wait_phase(&id, &token, "sleeping", Duration::from_secs(5)).await;

    // A bot joins by the hostname: held through the wake, then plays.
    let p = proxy_port.to_string();
    let bot = run_peer(
        "node",
        "bot.js",
        &[
            "--connect-port",
            &p,
            "--host",
            "survival.acme.test",
            "--username",
            "Founder",
            "--chat",
            "first!",
            "--version",
            "1.21.4",
        ],
    )
    .await;
    assert_eq!(bot["ok"], true, "{bot}");
    assert_eq!(bot["chatEchoed"], true, "{bot}");

    let running = api.wait_phase(&id, &token, "running", Duration::from_secs(5)).await;
    assert_eq!(running["status"]["address"], format!("127.0.0.1:{server_port}"), "{running}");
    let (s, logs) = api.get(&format!("/v1/servers/{id}/logs?tail=50"), &token).await;
    assert_eq!(s, 200, "{logs}");
    let lines = logs["lines"].as_array().unwrap_or_else(|| panic!("{logs}"));
    assert!(!lines.is_empty() && lines.iter().all(|l| l["at_ms"].as_i64().unwrap_or(0) > 0), "{logs}");

    // Backup of the running server's data directory through the local
    // runtime (flying-squid keeps its world in memory: the files are written
    // here as a world would be).
    let data = dir.join("servers").join(&id);
    let world: Vec<(&str, Vec<u8>)> = vec![
        ("world/level.dat", b"level v1".to_vec()),
        ("world/region/r.0.0.mca", (0..64 * 1024).map(|i| (i * 7 % 251) as u8).collect()),
        ("server.properties", b"motd=survival\n".to_vec()),
    ];
    for (path, bytes) in &world {
        let p = data.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    let (s, backup) = api.post(&format!("/v1/servers/{id}/backups"), &token, json!({"note": "before the flood"})).await;
    assert_eq!(s, 202, "{backup}");
    let bid = backup["id"].as_str().unwrap().to_owned();
    let done = poll_job(&api, &format!("/v1/servers/{id}/backups/{bid}"), &token).await;
    assert!(done["size_bytes"].as_u64().unwrap() > 0, "{done}");

    // Stop through the API: it goes to sleep.
    let (s, body) = api.post(&format!("/v1/servers/{id}/stop"), &token, json!({})).await;
    assert!(s == 202 || s == 200, "{s} {body}");
    api.wait_phase(&id, &token, "sleeping", Duration::from_secs(20)).await;

    // The world changes; the restore brings the exact files back.
    std::fs::write(data.join("world/level.dat"), b"level v2, griefed").unwrap();
    std::fs::remove_file(data.join("world/region/r.0.0.mca")).unwrap();
    std::fs::write(data.join("junk.txt"), b"not in the backup").unwrap();
    let (s, restore) = api.post(&format!("/v1/servers/{id}/backups/{bid}/restore"), &token, json!({})).await;
    assert_eq!(s, 202, "{restore}");
    let rid = restore["id"].as_str().unwrap().to_owned();
    let restored = poll_job(&api, &format!("/v1/servers/{id}/restores/{rid}"), &token).await;
    assert!(restored["safety_backup_id"].is_string(), "a safety backup first: {restored}");
    for (path, bytes) in &world {
        assert_eq!(&std::fs::read(data.join(path)).unwrap(), bytes, "{path} restored exactly");
    }
    assert!(!data.join("junk.txt").exists(), "files added after the backup are gone");

    // Deleted: the hostname is gone from the proxy.
    let (s, body) = api.call(reqwest::Method::DELETE, &format!("/v1/servers/{id}"), &token, None).await;
    assert!(s == 204 || s == 200, "{s} {body}");
    let gone = run_peer(
        "node",
        "client.js",
        &["login", "--connect-port", &p, "--host", "survival.acme.test", "--version", "1.21.4"],
    )
    .await;
    assert!(gone["disconnectReason"].as_str().unwrap_or_default().contains("There is no server"), "{gone}");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), up).await.expect("up stops").unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Polls a backup or restore until it succeeds (failing on `failed`).
async fn poll_job(api: &Api, path: &str, token: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (s, body) = api.get(path, token).await;
        assert_eq!(s, 200, "{body}");
        match body["status"].as_str() {
            Some("succeeded") => return body,
            Some("failed") => panic!("job failed: {body}"),
            _ => {}
        }
        assert!(tokio::time::Instant::now() < deadline, "job not done: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct StopOnDrop(CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}
