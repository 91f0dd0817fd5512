//! End-to-end sleep and wake on the embedded default: the local runtime runs
//! real servers (flying-squid, minecraft-protocol) as processes, the proxy
//! holds players through wakes, and real clients (mineflayer,
//! minecraft-protocol) connect by hostname.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use respawn::config::RespawnConfig;
use respawn_contract::Phase;
use respawn_local::LocalRuntime;
use respawn_proxy::Proxy;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod common;
use common::{OPEN_LIMITS, peers_dir, run_peer};

async fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port()
}

struct Stack {
    addr: SocketAddr,
    proxy: Proxy,
    runtime: Arc<LocalRuntime>,
    shutdown: CancellationToken,
    data: PathBuf,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
        // A passing test leaves nothing in /tmp; a failing one keeps its
        // servers' logs for whoever reads the failure.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.data);
        }
    }
}

impl Stack {
    fn metrics(&self) -> String {
        self.proxy.metrics().render()
    }

    fn metric(&self, needle: &str) -> f64 {
        self.metrics()
            .lines()
            .find(|l| l.starts_with(needle))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    }

    async fn wait_phase(&self, server: &str, want: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let phase = self.runtime.phase(server).unwrap();
            if phase.as_str() == want {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{server} still {phase:?}, wanted {want}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn port(&self) -> String {
        self.addr.port().to_string()
    }
}

async fn start_stack(name: &str, servers_toml: &str, extra: &str) -> Stack {
    let data = std::env::temp_dir().join(format!("respawn-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let toml = format!(
        "{OPEN_LIMITS}{extra}\n\
         [status]\ncache_file = \"{}\"\n[runtime]\ndata_dir = \"{}\"\n{servers_toml}",
        data.join("status-cache.json").display(),
        data.display()
    );
    let config = RespawnConfig::parse(&toml).unwrap();
    let runtime = Arc::new(LocalRuntime::new(&config.servers, config.runtime.clone()));
    let shutdown = CancellationToken::new();
    tokio::spawn(runtime.clone().run(shutdown.clone()));
    let proxy = Proxy::with_lifecycle(config.proxy(), runtime.clone()).unwrap();
    proxy.metrics().add_registry(runtime.registry.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (p, sd) = (proxy.clone(), shutdown.clone());
    tokio::spawn(async move { p.serve(listener, sd).await.unwrap() });
    Stack { addr, proxy, runtime, shutdown, data }
}

fn server_toml(name: &str, host: &str, port: u16, command: &str, args: &[String], extra: &str) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "[[servers]]\nname = \"{name}\"\nhostnames = [\"{host}\"]\naddress = \"127.0.0.1:{port}\"\ncommand = \"{command}\"\nargs = [{}]\nstop_timeout_ms = 5000\n{extra}\n",
        args.join(", ")
    )
}

/// The full story on flying-squid: sleeping status never wakes; a bot is held
/// through the wake, spawns, chats and leaves without reconnecting; the idle
/// server is stopped; its status shows the cached real version while asleep;
/// the next login wakes it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flying_squid_sleeps_and_wakes_for_a_bot() {
    let port = free_port().await;
    let squid = peers_dir().join("squid.js").display().to_string();
    let servers = server_toml(
        "squid",
        "squid.acme.test",
        port,
        "node",
        &[squid, "--port".into(), port.to_string(), "--motd".into(), "Squid world".into()],
        "idle_timeout_ms = 3000\nmin_online_ms = 1000",
    );
    let stack = start_stack("squid", &servers, "").await;
    let p = stack.port();

    // Asleep: a status ping is answered by the proxy and wakes nothing (a
    // wake is asked for before any answer goes out, so none counted means none).
    let wakes = "respawn_runtime_wake_requests_total{server=\"squid\"}";
    let st = run_peer(
        "node",
        "client.js",
        &["status", "--connect-port", &p, "--host", "squid.acme.test", "--version", "1.21.4"],
    )
    .await;
    assert!(st["motd"].as_str().unwrap().contains("Sleeping"), "{st}");
    assert_eq!(stack.metric(wakes), 0.0, "a status ping asked for a wake");
    assert_eq!(stack.runtime.phase("squid"), Some(Phase::Sleeping));
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(), "no process while asleep");

    // Two bots log in together: both held through one wake, then they spawn and chat.
    let first = [
        "--connect-port",
        &p,
        "--host",
        "squid.acme.test",
        "--username",
        "Sleepy",
        "--chat",
        "good morning",
        "--version",
        "1.21.4",
    ];
    let second = [
        "--connect-port",
        &p,
        "--host",
        "squid.acme.test",
        "--username",
        "Dozy",
        "--chat",
        "me too",
        "--version",
        "1.21.4",
    ];
    let (bot, other) = tokio::join!(run_peer("node", "bot.js", &first), run_peer("node", "bot.js", &second));
    for b in [&bot, &other] {
        assert_eq!(b["ok"], true, "{b}");
        assert_eq!(b["spawned"], true, "{b}");
        assert_eq!(b["chatEchoed"], true, "{b}");
    }
    assert_eq!(stack.metric("respawn_runtime_starts_total{server=\"squid\"}"), 1.0, "one wake shared");
    assert_eq!(stack.metric("respawn_proxy_holds_total{result=\"joined\"}"), 2.0);
    assert_eq!(stack.metric("respawn_proxy_wake_signal_seconds_count"), 2.0);
    // Login Start → wake signal well under 5 ms.
    assert_eq!(stack.metric("respawn_proxy_wake_signal_seconds_bucket{le=\"0.005\"}"), 2.0, "{}", stack.metrics());

    // Running: live status.
    let st = run_peer(
        "node",
        "client.js",
        &["status", "--connect-port", &p, "--host", "squid.acme.test", "--version", "1.21.4"],
    )
    .await;
    assert_eq!(st["motd"], "Squid world", "{st}");
    let real_version = st["version"].clone();

    // Idle: stopped after the (short) idle timeout.
    stack.wait_phase("squid", "sleeping", Duration::from_secs(30)).await;
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(), "process stopped");
    assert_eq!(stack.metric("respawn_runtime_hibernations_total{server=\"squid\"}"), 1.0);

    // Asleep again: the cached real version with the sleeping MOTD; no wake.
    let woken = stack.metric(wakes);
    let st = run_peer(
        "node",
        "client.js",
        &["status", "--connect-port", &p, "--host", "squid.acme.test", "--version", "1.21.4"],
    )
    .await;
    assert!(st["motd"].as_str().unwrap().contains("Sleeping"), "{st}");
    assert_eq!(st["version"], real_version, "{st}");
    assert_eq!(stack.metric(wakes), woken, "a status ping asked for a wake");
    assert_eq!(stack.runtime.phase("squid"), Some(Phase::Sleeping));
    // The cache is on disk for the next proxy start.
    let saved = std::fs::read_to_string(stack.data.join("status-cache.json")).unwrap_or_default();
    assert!(saved.contains("Squid world"), "{saved}");

    // The next login wakes it again.
    let bot = run_peer(
        "node",
        "bot.js",
        &[
            "--connect-port",
            &p,
            "--host",
            "squid.acme.test",
            "--username",
            "Again",
            "--chat",
            "back again",
            "--version",
            "1.21.4",
        ],
    )
    .await;
    assert_eq!(bot["ok"], true, "{bot}");
    assert_eq!(bot["chatEchoed"], true, "{bot}");
    assert_eq!(stack.metric("respawn_runtime_starts_total{server=\"squid\"}"), 2.0);
    assert_eq!(stack.metric("respawn_proxy_holds_total{result=\"joined\"}"), 3.0);
}

/// A start longer than the hold: the player gets "starting, join again in N s",
/// the server keeps starting, and the next join goes straight in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_start_kicks_with_an_estimate_then_lets_the_next_join_in() {
    let port = free_port().await;
    let backend = peers_dir().join("backend.js").display().to_string();
    let script = format!("sleep 4; exec node {backend} --port {port} --motd slowpoke --quiet");
    let servers = server_toml("slow", "slow.acme.test", port, "sh", &["-c".into(), script], "idle_timeout_ms = 60000");
    let stack = start_stack("slow", &servers, "wake_hold_ms = 1500").await;
    let p = stack.port();
    let first = run_peer(
        "node",
        "client.js",
        &["login", "--connect-port", &p, "--host", "slow.acme.test", "--version", "1.20.4"],
    )
    .await;
    let reason = first["disconnectReason"].as_str().unwrap_or_default();
    assert!(reason.contains("slow is starting. Join again in ~"), "{first}");
    assert_eq!(stack.metric("respawn_proxy_holds_total{result=\"kicked_starting\"}"), 1.0);
    // Still starting (not cancelled by the kick), then up.
    assert_eq!(stack.runtime.phase("slow"), Some(Phase::Starting));
    stack.wait_phase("slow", "running", Duration::from_secs(20)).await;
    let second = run_peer(
        "node",
        "client.js",
        &["login", "--connect-port", &p, "--host", "slow.acme.test", "--version", "1.20.4"],
    )
    .await;
    assert_eq!(second["disconnectReason"], "welcome to slowpoke as Steve", "{second}");
    assert_eq!(stack.metric("respawn_proxy_holds_total{result=\"joined\"}"), 0.0, "went straight in");
    assert_eq!(stack.metric("respawn_runtime_starts_total{server=\"slow\"}"), 1.0);
}

/// A server that fails: held players get a Disconnect that says why; a
/// crash mid-session is restarted with backoff and counted; the allow-list
/// keeps strangers from waking it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_are_reported_restarted_and_counted() {
    let broken_port = free_port().await;
    let crashy_port = free_port().await;
    let backend = peers_dir().join("backend.js").display().to_string();
    // Comes up, serves for 6 s, then dies hard.
    let crashy =
        format!("node {backend} --port {crashy_port} --motd crashy --quiet & pid=$!; sleep 6; kill -9 $pid; exit 1");
    let servers = format!(
        "{}{}",
        server_toml(
            "broken",
            "broken.acme.test",
            broken_port,
            "sh",
            &["-c".into(), "echo boom >&2; exit 3".into()],
            "allow_wake = [\"Steve\"]"
        ),
        server_toml("crashy", "crashy.acme.test", crashy_port, "sh", &["-c".into(), crashy], "idle_timeout_ms = 60000"),
    );
    let stack = start_stack("crash", &servers, "").await;
    let p = stack.port();

    let denied = run_peer(
        "node",
        "client.js",
        &["login", "--connect-port", &p, "--host", "broken.acme.test", "--version", "1.21.4", "--username", "Stranger"],
    )
    .await;
    assert!(denied["disconnectReason"].as_str().unwrap_or_default().contains("not on the list"), "{denied}");
    assert_eq!(stack.runtime.phase("broken"), Some(Phase::Sleeping), "a stranger does not wake it");

    let failed = run_peer(
        "node",
        "client.js",
        &["login", "--connect-port", &p, "--host", "broken.acme.test", "--version", "1.21.4"],
    )
    .await;
    let reason = failed["disconnectReason"].as_str().unwrap_or_default();
    assert!(reason.contains("broken failed to start") && reason.contains("exit status: 3"), "{failed}");
    assert_eq!(stack.metric("respawn_proxy_holds_total{result=\"kicked_failed\"}"), 1.0);
    let log = std::fs::read_to_string(stack.runtime.log_path("broken").unwrap()).unwrap();
    assert!(log.contains("boom"), "server output is captured: {log:?}");

    // crashy: woken by a login, then it crashes; the runtime restarts it.
    let ok = run_peer(
        "node",
        "client.js",
        &["login", "--connect-port", &p, "--host", "crashy.acme.test", "--version", "1.21.4"],
    )
    .await;
    assert_eq!(ok["disconnectReason"], "welcome to crashy as Steve", "{ok}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while stack.metric("respawn_runtime_starts_total{server=\"crashy\"}") < 2.0 {
        assert!(tokio::time::Instant::now() < deadline, "not restarted: {}", stack.metrics());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(stack.metric("respawn_runtime_crashes_total{server=\"crashy\"}") >= 1.0);
    stack.wait_phase("crashy", "running", Duration::from_secs(10)).await;
    let again = run_peer(
        "node",
        "client.js",
        &["login", "--connect-port", &p, "--host", "crashy.acme.test", "--version", "1.21.4"],
    )
    .await;
    assert_eq!(again["disconnectReason"], "welcome to crashy as Steve", "{again}");
}

/// A bot that stays in the game until told to leave (`bot.js --stay`),
/// reporting its events as JSON lines.
struct StayingBot {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl StayingBot {
    async fn join(args: &[&str]) -> StayingBot {
        let mut child = tokio::process::Command::new("node")
            .arg(peers_dir().join("bot.js"))
            .args(args)
            .arg("--stay")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let stdout = child.stdout.take().unwrap();
        let mut bot = StayingBot { child, lines: tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout)) };
        let first = bot.next(Duration::from_secs(40)).await;
        assert_eq!(first["event"], "playing", "{first}");
        bot
    }

    /// The next JSON line, within `within`.
    async fn next(&mut self, within: Duration) -> serde_json::Value {
        loop {
            let line = tokio::time::timeout(within, self.lines.next_line())
                .await
                .expect("bot said nothing in time")
                .unwrap()
                .expect("bot exited without a word");
            if line.starts_with('{') {
                return serde_json::from_str(&line).unwrap();
            }
        }
    }
}

impl Drop for StayingBot {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A server killed under a playing bot: the bot gets a Disconnect with a
/// reason (not a bare "connection lost"), the runtime restarts the server
/// with backoff and counts the crash, and the bot can join again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_under_a_player_tells_them_why() {
    let port = free_port().await;
    let squid = peers_dir().join("squid.js").display().to_string();
    let pid_file = std::env::temp_dir().join(format!("respawn-crash-squid-{}.pid", std::process::id()));
    let _ = std::fs::remove_file(&pid_file);
    // The shell records the server's pid, so the test can kill it like a crash would.
    let script = format!("node {squid} --port {port} --motd 'Crash world' & echo $! > {}; wait $!", pid_file.display());
    let servers =
        server_toml("crash", "crash.acme.test", port, "sh", &["-c".into(), script], "idle_timeout_ms = 60000");
    let stack = start_stack("crash-mid", &servers, "").await;
    let p = stack.port();

    let args = [
        "--connect-port",
        &p,
        "--host",
        "crash.acme.test",
        "--username",
        "Unlucky",
        "--chat",
        "still here?",
        "--version",
        "1.21.4",
    ];
    let mut bot = StayingBot::join(&args).await;
    stack.wait_phase("crash", "running", Duration::from_secs(5)).await;

    let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_string();
    let killed = std::process::Command::new("kill").args(["-9", &pid]).status().unwrap();
    assert!(killed.success());

    let end = bot.next(Duration::from_secs(10)).await;
    assert_eq!(end["event"], "end", "{end}");
    let reason = end["kickReason"].as_str().unwrap_or_default();
    assert!(reason.contains("crash stopped unexpectedly"), "the player is told why: {end}");
    assert_eq!(stack.metric("respawn_proxy_backend_lost_total{result=\"told\"}"), 1.0);

    // The runtime restarts it (backoff) and counts the crash; the player can come back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while stack.metric("respawn_runtime_starts_total{server=\"crash\"}") < 2.0 {
        assert!(tokio::time::Instant::now() < deadline, "not restarted: {}", stack.metrics());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(stack.metric("respawn_runtime_crashes_total{server=\"crash\"}") >= 1.0);
    stack.wait_phase("crash", "running", Duration::from_secs(30)).await;
    let back = run_peer("node", "bot.js", &args).await;
    assert_eq!(back["ok"], true, "{back}");
    let _ = std::fs::remove_file(&pid_file);
}
