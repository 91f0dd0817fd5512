//! Stopping a server stops everything it started: a wrapper script's
//! children do not outlive it (they would keep its port).

use std::{sync::Arc, time::Duration};

use respawn_contract::Lifecycle;
use respawn_local::{LocalRuntime, RuntimeConfig, ServerConfig};
use tokio_util::sync::CancellationToken;

/// Running, not a zombie waiting for a reaper that may never come (PID 1
/// here need not reap orphans).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

#[tokio::test]
async fn a_stopped_server_leaves_no_children_behind() {
    let data = std::env::temp_dir().join(format!("respawn-pgroup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let server: ServerConfig = toml_server(
        "name = \"s\"\nhostnames = [\"s.test\"]\naddress = \"127.0.0.1:1\"\ncommand = \"sh\"\n\
         args = [\"-c\", \"sleep 60 & echo $! > child.pid; wait\"]\nstop_timeout_ms = 300\n",
    );
    let runtime =
        Arc::new(LocalRuntime::new(&[server], RuntimeConfig { data_dir: data.clone(), ..RuntimeConfig::default() }));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runtime.clone().run(shutdown.clone()));
    runtime.wake("s", "tester");
    let pidfile = data.join("servers/s/child.pid");
    let mut pid = String::new();
    for _ in 0..50 {
        pid = std::fs::read_to_string(&pidfile).unwrap_or_default().trim().to_owned();
        if !pid.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!pid.is_empty(), "the server did not start");
    assert!(alive(&pid), "the wrapper's child runs");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), task).await.expect("runtime stops").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!alive(&pid), "the wrapper's child {pid} outlived the server");
    let _ = std::fs::remove_dir_all(&data);
}

fn toml_server(text: &str) -> ServerConfig {
    #[derive(serde::Deserialize)]
    struct One {
        server: ServerConfig,
    }
    toml::from_str::<One>(&format!("[server]\n{text}")).unwrap().server
}
