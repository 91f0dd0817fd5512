//! What the load goes through: the backend itself, Respawn and HAProxy (each
//! spawned as its own process from a generated config, so its memory can be
//! read from /proc), or a proxy the user already runs.

use std::{
    fmt::Write as _,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use bytes::BytesMut;
use tokio::time::{Instant, timeout};

use crate::client::{self, HOST, Requests};

/// How long a spawned proxy gets to answer its first status ping. Respawn
/// with 100,000 routes parses a ~10 MB config first.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Direct,
    Respawn,
    Haproxy,
    /// A proxy the user runs; its PID (optional) gives its RSS.
    Other {
        addr: SocketAddr,
        pid: Option<u32>,
    },
}

#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub kind: Kind,
}

/// Per-scenario settings for a spawned Respawn (default: cache bypassed, one route).
#[derive(Debug, Clone, Copy, Default)]
pub struct RespawnOptions {
    pub status_cache_ttl_ms: u64,
    /// Routes in the config besides the bench's own (`s{i}.bench.localhost`).
    pub extra_routes: usize,
    /// Run `respawn up` with one sleeping server, [`WAKE_HOST`], that the local
    /// runtime starts as `respawn-bench --serve-backend PORT`.
    pub wake_server: bool,
}

/// The hostname of the sleeping server in the wake scenario.
pub const WAKE_HOST: &str = "wake.bench.localhost";

/// Paths and settings shared by every spawn.
#[derive(Debug, Clone)]
pub struct Env {
    pub backend: SocketAddr,
    pub workdir: PathBuf,
    pub respawn_bin: PathBuf,
    pub haproxy_bin: PathBuf,
    pub respawn_log: String,
    /// Connections a spawned proxy is configured to hold (from the fd limit).
    pub max_connections: usize,
    /// Respawn's `listen.threads` (0 = one per CPU).
    pub respawn_threads: usize,
}

/// A target ready for load. Dropping it kills the process it spawned.
pub struct Running {
    pub name: String,
    pub addr: SocketAddr,
    /// Respawn's admin endpoint (/metrics), when the bench spawned it.
    pub admin: Option<SocketAddr>,
    pid: Option<u32>,
    child: Option<Child>,
    log: Option<PathBuf>,
}

impl Running {
    /// Resident set size in KiB (VmRSS), if the target is a known process.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Fails if a spawned process has exited (a crash mid-scenario).
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(child) = &mut self.child
            && let Some(status) = child.try_wait()?
        {
            bail!("{} exited ({status}); log tail:\n{}", self.name, log_tail(self.log.as_deref()));
        }
        Ok(())
    }

    pub fn log_tail(&self) -> String {
        log_tail(self.log.as_deref())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn log_tail(log: Option<&Path>) -> String {
    let Some(text) = log.and_then(|p| std::fs::read(p).ok()) else {
        return String::new();
    };
    let tail = &text[text.len().saturating_sub(1500)..];
    String::from_utf8_lossy(tail).into_owned()
}

/// A port that was free a moment ago (the spawned proxy binds it).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub async fn start(target: &Target, env: &Env, opts: RespawnOptions, tag: &str) -> Result<Running> {
    let mut running = match &target.kind {
        Kind::Direct => {
            Running { name: target.name.clone(), addr: env.backend, admin: None, pid: None, child: None, log: None }
        }
        Kind::Other { addr, pid } => {
            Running { name: target.name.clone(), addr: *addr, admin: None, pid: *pid, child: None, log: None }
        }
        Kind::Respawn => spawn_respawn(target, env, opts, tag)?,
        Kind::Haproxy => spawn_haproxy(target, env, tag)?,
    };
    wait_ready(&mut running).await?;
    Ok(running)
}

/// Polls with full status pings until one succeeds: the proxy listens, routes
/// and reaches the backend (and Respawn's cache, if on, is filled).
async fn wait_ready(running: &mut Running) -> Result<()> {
    let req = Requests::new(HOST);
    let mut buf = BytesMut::new();
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last_error = None;
    while Instant::now() < deadline {
        running.check_alive()?;
        match timeout(Duration::from_secs(2), client::status_ping(running.addr, &req, &mut buf)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last_error = Some(e.to_string()),
            Err(_) => last_error = Some("status ping timed out".into()),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!(
        "{} at {} did not answer a status ping within {:?} (last error: {}); log tail:\n{}",
        running.name,
        running.addr,
        READY_TIMEOUT,
        last_error.unwrap_or_default(),
        running.log_tail()
    )
}

/// Respawn's config for the bench: one route to the backend, limits opened
/// up so a single 127.0.0.1 client is never throttled.
/// `threads` is Respawn's `listen.threads` (0 = one per CPU, its default).
pub fn respawn_config(
    listen: u16,
    admin: u16,
    backend: SocketAddr,
    max_connections: usize,
    threads: usize,
    opts: RespawnOptions,
) -> String {
    let mut toml = format!(
        r#"# Generated by respawn-bench.
default_route = "bench"

[listen]
address = "127.0.0.1:{listen}"
admin_address = "127.0.0.1:{admin}"
threads = {threads}

[limits]
max_connections = {max_connections}
per_ip_per_second = 1000000000
per_ip_burst = 1000000000
per_prefix_per_second = 1000000000
per_prefix_burst = 1000000000
first_packet_timeout_ms = 10000
shutdown_grace_ms = 1000

[status]
cache_ttl_ms = {ttl}

[[routes]]
name = "bench"
hostnames = ["{HOST}"]
backends = ["{backend}"]
"#,
        ttl = opts.status_cache_ttl_ms,
    );
    if opts.wake_server {
        let port = free_port().unwrap_or(0);
        let bench = std::env::current_exe().unwrap_or_else(|_| "respawn-bench".into());
        let data =
            std::env::temp_dir().join(format!("respawn-bench-{}", std::process::id())).join(format!("data-{listen}"));
        let _ = write!(
            toml,
            r#"
[runtime]
data_dir = "{data}"

[[servers]]
name = "sleepy"
hostnames = ["{WAKE_HOST}"]
address = "127.0.0.1:{port}"
command = "{bench}"
args = ["--serve-backend", "{port}"]
stop_timeout_ms = 2000
"#,
            data = data.display(),
            bench = bench.display(),
        );
    }
    toml.reserve(opts.extra_routes * 96);
    for i in 0..opts.extra_routes {
        let _ =
            write!(toml, "\n[[routes]]\nname = \"s{i}\"\nhostnames = [\"s{i}.{HOST}\"]\nbackends = [\"{backend}\"]\n");
    }
    toml
}

fn spawn_respawn(target: &Target, env: &Env, opts: RespawnOptions, tag: &str) -> Result<Running> {
    if !env.respawn_bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p respawn) or pass --respawn-bin",
            env.respawn_bin.display()
        );
    }
    let port = free_port()?;
    let admin = free_port()?;
    let config = env.workdir.join(format!("{}-{tag}.toml", target.name));
    std::fs::write(&config, respawn_config(port, admin, env.backend, env.max_connections, env.respawn_threads, opts))?;
    let log = env.workdir.join(format!("{}-{tag}.log", target.name));
    let log_file = std::fs::File::create(&log)?;
    // `up` is the proxy with the local runtime that sleeps and wakes `[[servers]]`.
    let child = Command::new(&env.respawn_bin)
        .arg(if opts.wake_server { "up" } else { "proxy" })
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", &env.respawn_log)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("spawning {}", env.respawn_bin.display()))?;
    Ok(Running {
        name: target.name.clone(),
        addr: ([127, 0, 0, 1], port).into(),
        admin: Some(([127, 0, 0, 1], admin).into()),
        pid: Some(child.id()),
        child: Some(child),
        log: Some(log),
    })
}

/// HAProxy in plain TCP mode: what a user could run instead of Respawn when
/// routing by hostname is not needed. Defaults otherwise (no splice).
pub fn haproxy_config(listen: u16, backend: SocketAddr, max_connections: usize) -> String {
    format!(
        r#"# Generated by respawn-bench.
global
    maxconn {max_connections}

defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s

listen minecraft
    bind 127.0.0.1:{listen}
    maxconn {max_connections}
    server backend {backend}
"#
    )
}

fn spawn_haproxy(target: &Target, env: &Env, tag: &str) -> Result<Running> {
    let port = free_port()?;
    let config = env.workdir.join(format!("{}-{tag}.cfg", target.name));
    std::fs::write(&config, haproxy_config(port, env.backend, env.max_connections))?;
    let log = env.workdir.join(format!("{}-{tag}.log", target.name));
    let log_file = std::fs::File::create(&log)?;
    let child = Command::new(&env.haproxy_bin)
        .arg("-db")
        .arg("-f")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .with_context(|| {
            format!("spawning {} (apt-get install -y haproxy, or --targets without haproxy)", env.haproxy_bin.display())
        })?;
    Ok(Running {
        name: target.name.clone(),
        addr: ([127, 0, 0, 1], port).into(),
        admin: None,
        pid: Some(child.id()),
        child: Some(child),
        log: Some(log),
    })
}

/// Fetches `path` from an HTTP/1.1 endpoint on loopback (Respawn's admin
/// port) and returns the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
            .await?;
        let mut response = Vec::new();
        stream.take(8 << 20).read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = timeout(Duration::from_secs(5), fetch).await.context("admin endpoint timed out")??;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
    }
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        bail!("GET {path}: chunked responses are not supported");
    }
    Ok(body.to_owned())
}

/// `haproxy -v`'s first line, for the report.
pub fn haproxy_version(bin: &Path) -> Option<String> {
    let out = Command::new(bin).arg("-v").output().ok()?;
    String::from_utf8_lossy(&out.stdout).lines().next().map(str::to_owned)
}
