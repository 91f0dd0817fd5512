//! Health, metrics, and serving over a real socket with graceful shutdown.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use respawn_api::AppState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::both;
use crate::common::{ADMIN, Backend, TestApp};

both!(health_and_metrics, serves_over_a_socket_and_shuts_down);

async fn health_and_metrics(b: Backend) {
    let app = TestApp::new(b).await;
    let h = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(h.body["status"], "ok");
    app.get("/v1/servers/srv_x", ADMIN).await;
    let (_, token) = app.tenant("acme").await;
    app.get("/v1/servers/srv_nope", &token).await;
    let m = app.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(m.status, StatusCode::OK);
    let text = m.body.as_str().expect("text");
    assert!(
        text.contains(r#"respawn_api_requests_total{method="GET",route="/v1/servers/{id}",status="404"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"respawn_api_requests_total{method="GET",route="/v1/servers/{id}",status="403"} 1"#));
    assert!(text.contains(r#"respawn_api_request_duration_seconds_bucket{method="POST",route="/v1/tenants""#));
    assert!(!text.contains("srv_nope"), "ids never become labels");
}

async fn serves_over_a_socket_and_shuts_down(b: Backend) {
    let app = TestApp::new(b).await;
    let state: AppState = app.state.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(respawn_api::serve(listener, state, shutdown.clone(), Duration::from_secs(5)));

    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.expect("write");
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_string(&mut response))
        .await
        .expect("in time")
        .expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"ok\""));

    shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(5), server).await.expect("stops in time").expect("join");
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn run_refuses_bad_config_before_binding() {
    let config = respawn_api::ApiConfig { admin_token: Some("short".into()), ..Default::default() };
    let err = respawn_api::run(config, CancellationToken::new()).await.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("admin_token"), "{err}");
}

#[tokio::test]
async fn run_migrates_serves_and_stops() {
    let dir = std::env::temp_dir().join(format!("respawn-api-run-{}", respawn_api::db::new_id("t")));
    let db_path = dir.join("data").join("respawn.db");
    let config = respawn_api::ApiConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        database_url: format!("sqlite://{}?mode=rwc", db_path.display()),
        admin_token: Some(ADMIN.to_owned()),
        backups: respawn_api::BackupConfig {
            local_dir: dir.join("data").join("backups"),
            work_dir: dir.join("data").join("backup-work"),
            ..Default::default()
        },
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(respawn_api::run(config, shutdown.clone()));
    // The database file (and its directory) appear once run has migrated.
    for _ in 0..100 {
        if db_path.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(db_path.exists(), "run creates the SQLite file and its directory");
    shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(10), task).await.expect("stops").expect("join");
    assert!(result.is_ok(), "{result:?}");
    assert!(dir.join("data/backups").is_dir(), "run creates the local backup store where configured");
    let _ = std::fs::remove_dir_all(dir);
}
