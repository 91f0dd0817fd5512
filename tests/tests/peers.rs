//! End-to-end: Respawn's proxy between real Minecraft peers nobody on this team
//! wrote (tests/peers: minecraft-protocol, mineflayer, flying-squid, mcstatus).
//!
//! The proxy runs in-process on port 0; the peers are child processes that
//! print JSON lines (see tests/peers/README.md).

use std::{
    net::SocketAddr,
    process::Stdio,
    time::{Duration, Instant},
};

use respawn_proxy::{Config, Proxy};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    process::{Child, Command},
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;

mod common;
use common::{OPEN_LIMITS as LIMITS, peers_dir, run_peer};

/// A long-running peer (a server): its stdout JSON lines arrive on a channel,
/// drained continuously so the child never blocks on a full pipe.
struct Server {
    _child: Child,
    events: mpsc::UnboundedReceiver<Value>,
    port: u16,
}

async fn start_server(script: &str, args: &[&str]) -> Server {
    let mut child = Command::new("node")
        .arg(peers_dir().join(script))
        .args(["--port", "0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("node is installed (run the README's test command)");
    let stdout = child.stdout.take().unwrap();
    let (tx, mut events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let ready = wait_event(&mut events, "ready", Duration::from_secs(30)).await;
    let port = ready["port"].as_u64().expect("ready line has a port") as u16;
    Server { _child: child, events, port }
}

async fn wait_event(events: &mut mpsc::UnboundedReceiver<Value>, name: &str, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no `{name}` event within {within:?}"))
            .unwrap_or_else(|| panic!("peer exited before `{name}`"));
        if ev["event"] == name {
            return ev;
        }
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

async fn client(kind: &str, proxy: SocketAddr, host: &str, version: &str) -> Value {
    let port = proxy.port().to_string();
    run_peer(
        "node",
        "client.js",
        &s(&[kind, "--connect-port", &port, "--host", host, "--version", version, "--username", "Steve"]),
    )
    .await
}

struct RunningProxy {
    addr: SocketAddr,
    proxy: Proxy,
    shutdown: CancellationToken,
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start_proxy(config: &str) -> RunningProxy {
    let proxy = Proxy::new(Config::parse(config).unwrap()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let (p, sd) = (proxy.clone(), shutdown.clone());
    tokio::spawn(async move { p.serve(listener, sd).await.unwrap() });
    RunningProxy { addr, proxy, shutdown }
}

fn route(name: &str, hosts: &[&str], port: u16) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
    format!("[[routes]]\nname = \"{name}\"\nhostnames = [{}]\nbackends = [\"127.0.0.1:{port}\"]\n", hosts.join(", "))
}

/// minecraft-protocol clients of every version reach the backend their
/// hostname names, for status and for an offline login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_version_is_routed_by_hostname() {
    let mut alpha = start_server("backend.js", &["--motd", "alpha"]).await;
    let mut bravo = start_server("backend.js", &["--motd", "bravo"]).await;
    let cfg = format!(
        "{LIMITS}{}{}",
        route("alpha", &["alpha.acme.test"], alpha.port),
        route("bravo", &["*.bravo.test"], bravo.port)
    );
    let p = start_proxy(&cfg).await;
    for version in ["1.7", "1.8.8", "1.12.2", "1.16.5", "1.20.4", "1.21.4", "26.1"] {
        for (host, motd) in [("alpha.acme.test", "alpha"), ("survival.bravo.test", "bravo")] {
            let st = client("status", p.addr, host, version).await;
            assert_eq!(st["ok"], true, "{version} status via {host}: {st}");
            assert_eq!(st["motd"], motd, "{version} status via {host}: {st}");
            let lg = client("login", p.addr, host, version).await;
            assert_eq!(lg["ok"], true, "{version} login via {host}: {lg}");
            assert_eq!(lg["disconnectReason"], format!("welcome to {motd} as Steve"), "{version} via {host}: {lg}");
        }
    }
    // Each backend saw its own logins with the hostname the client sent.
    let ev = wait_event(&mut alpha.events, "login", Duration::from_secs(5)).await;
    assert_eq!(ev["serverHost"], "alpha.acme.test");
    let ev = wait_event(&mut bravo.events, "login", Duration::from_secs(5)).await;
    assert_eq!(ev["serverHost"], "survival.bravo.test");
    let metrics = p.proxy.metrics().render();
    assert!(metrics.contains("respawn_proxy_logins_total{route=\"alpha\"} 7"), "{metrics}");
}

/// Mixed case, a trailing dot and a Forge marker route like the plain name,
/// and the backend receives the host exactly as the client wrote it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostname_normalisation_keeps_original_bytes() {
    let mut alpha = start_server("backend.js", &["--motd", "alpha"]).await;
    let cfg = format!("{LIMITS}{}", route("alpha", &["survival.acme.test"], alpha.port));
    let p = start_proxy(&cfg).await;
    for (cli_host, raw) in [
        ("Survival.Acme.TEST", "Survival.Acme.TEST"),
        ("survival.acme.test.", "survival.acme.test."),
        ("Survival.Acme.Test.\\0FML3\\0", "Survival.Acme.Test.\0FML3\0"),
    ] {
        let lg = client("login", p.addr, cli_host, "1.20.4").await;
        assert_eq!(lg["disconnectReason"], "welcome to alpha as Steve", "{cli_host}: {lg}");
        let ev = wait_event(&mut alpha.events, "login", Duration::from_secs(5)).await;
        assert_eq!(ev["serverHost"], raw, "backend saw the client's bytes");
        let st = client("status", p.addr, cli_host, "1.20.4").await;
        assert_eq!(st["motd"], "alpha", "{cli_host}: {st}");
    }
    // Unknown host: status says so, login gets a Disconnect with a reason.
    let st = client("status", p.addr, "nobody.acme.test", "1.21.4").await;
    assert!(st["motd"].as_str().unwrap().contains("Unknown server"), "{st}");
    let lg = client("login", p.addr, "nobody.acme.test", "1.21.4").await;
    assert_eq!(lg["ok"], false);
    assert!(lg["disconnectReason"].as_str().unwrap().contains("no server at nobody.acme.test"), "{lg}");
}

/// A mineflayer bot spawns on a real server (flying-squid) through the proxy
/// and its chat comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mineflayer_spawns_on_flying_squid_and_chats() {
    let mut squid = start_server("squid.js", &[]).await;
    let cfg = format!("{LIMITS}{}", route("squid", &["squid.acme.test"], squid.port));
    let p = start_proxy(&cfg).await;
    let port = p.addr.port().to_string();
    let bot = run_peer(
        "node",
        "bot.js",
        &s(&[
            "--connect-port",
            &port,
            "--host",
            "squid.acme.test",
            "--username",
            "Alex",
            "--chat",
            "hello through respawn",
        ]),
    )
    .await;
    assert_eq!(bot["ok"], true, "{bot}");
    assert_eq!(bot["spawned"], true, "{bot}");
    assert_eq!(bot["chatEchoed"], true, "{bot}");
    let chat = wait_event(&mut squid.events, "chat", Duration::from_secs(5)).await;
    assert_eq!(chat["message"], "hello through respawn");
    let metrics = p.proxy.metrics().render();
    assert!(metrics.contains("respawn_proxy_connections_total{outcome=\"relayed\"}"), "{metrics}");
}

/// mcstatus (a Python client) gets answers, modern and legacy (`fe 01 fa`, no
/// hostname: the default route answers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcstatus_modern_and_legacy() {
    let alpha = start_server("backend.js", &["--motd", "alpha"]).await;
    let bravo = start_server("backend.js", &["--motd", "bravo"]).await;
    let cfg = format!(
        "default_route = \"bravo\"\n{LIMITS}{}{}",
        route("alpha", &["alpha.acme.test"], alpha.port),
        route("bravo", &["bravo.acme.test"], bravo.port)
    );
    let p = start_proxy(&cfg).await;
    let port = p.addr.port().to_string();
    let modern =
        run_peer("python3", "mcstatus_probe.py", &s(&["--connect-port", &port, "--host", "alpha.acme.test"])).await;
    assert_eq!(modern["ok"], true, "{modern}");
    assert_eq!(modern["motd"], "alpha", "{modern}");
    let legacy = run_peer("python3", "mcstatus_probe.py", &s(&["--connect-port", &port, "--legacy"])).await;
    assert_eq!(legacy["ok"], true, "{legacy}");
    assert_eq!(legacy["motd"], "bravo", "{legacy}");
    assert!(legacy["max"].as_i64().unwrap() > 0, "{legacy}");
}

/// Hostile connections (garbage, a 3 GB length, a trickled handshake, 1,000
/// silent sockets) are closed within the limits while a real client plays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_does_not_disturb_a_real_player() {
    let squid = start_server("squid.js", &[]).await;
    let cfg = format!("{LIMITS}first_packet_timeout_ms = 2000\n{}", route("squid", &["squid.acme.test"], squid.port));
    let p = start_proxy(&cfg).await;
    let rss_before = rss_kib();
    let addr = p.addr;
    let attack = tokio::spawn(async move {
        let mut silent = Vec::new();
        for _ in 0..1000 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        for bytes in [vec![0x80, 0x80, 0x80, 0x80, 0x0b], (0..=255u8).rev().collect::<Vec<_>>()] {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let _ = c.write_all(&bytes).await;
            let mut sink = Vec::new();
            tokio::time::timeout(Duration::from_secs(1), c.read_to_end(&mut sink))
                .await
                .expect("garbage not closed")
                .ok();
        }
        let started = Instant::now();
        let mut trickle = TcpStream::connect(addr).await.unwrap();
        for b in [0x10u8, 0x00, 0xf7, 0x05, 0x0e, b's', b'q', b'u', b'i', b'd'] {
            if trickle.write_all(&[b]).await.is_err() {
                break;
            }
            // Wait a second for the next byte, but notice the close at once.
            let mut probe = [0u8; 1];
            if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_secs(1), trickle.read(&mut probe)).await {
                break;
            }
        }
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), trickle.read_to_end(&mut sink))
            .await
            .expect("trickle not closed");
        let trickle_closed = started.elapsed();
        for mut c in silent {
            let mut b = [0u8; 1];
            let n =
                tokio::time::timeout(Duration::from_secs(3), c.read(&mut b)).await.expect("silent socket not closed");
            assert!(matches!(n, Ok(0) | Err(_)));
        }
        trickle_closed
    });
    let port = p.addr.port().to_string();
    let bot = run_peer(
        "node",
        "bot.js",
        &s(&["--connect-port", &port, "--host", "squid.acme.test", "--username", "Calm", "--chat", "unbothered"]),
    )
    .await;
    assert_eq!(bot["ok"], true, "a real player is unaffected: {bot}");
    assert_eq!(bot["chatEchoed"], true, "{bot}");
    let trickle = attack.await.unwrap();
    assert!(trickle < Duration::from_secs(3), "trickled handshake held {trickle:?} (first-packet timeout 2 s)");
    let grown = rss_kib().saturating_sub(rss_before);
    assert!(grown < 64 * 1024, "memory grew by {grown} KiB under 1,000 silent connections");
    let m = p.proxy.metrics().render();
    assert!(m.contains("respawn_proxy_rejects_total{reason=\"timeout\"}"), "{m}");
    assert!(m.contains("respawn_proxy_rejects_total{reason=\"protocol_error\"}"), "{m}");
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
