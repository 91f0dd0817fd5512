//! The local runtime (embedded default): runs each managed server as a
//! process, drives it with the scaling policy, and publishes its phase.
//!
//! Start: spawn `command args…` in `dir`, logs captured and rotated; ready when
//! it answers a status ping on `address`. Stop: `stop_command` on stdin, then
//! SIGTERM, then SIGKILL, each after a timeout (the stop command goes over
//! RCON instead when `rcon` is configured). A crash restarts it with
//! exponential backoff while the policy still wants it up. Managed plugins
//! are downloaded and verified into `plugins/` before each start.
//!
//! Servers come from the config file and, under `respawn up`, from the API:
//! [`LocalRuntime::upsert`] and [`LocalRuntime::remove`] change the set while
//! it runs.

use std::{
    collections::HashMap,
    io::Write,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use serde::Deserialize;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin, Command},
    sync::{Notify, watch},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, info, info_span, warn};

pub use respawn_plugins::PluginSpec;

use crate::{
    lifecycle::{Lifecycle, Phase},
    policy::{self, Memory, Observed, PolicySpec},
    probe,
};

pub const DEFAULT_STOP_TIMEOUT_MS: u64 = 30_000;
/// Modded servers can take minutes to start; a start slower than this failed.
pub const DEFAULT_START_TIMEOUT_MS: u64 = 300_000;
pub const DEFAULT_LOG_MAX_BYTES: u64 = 10 * 1024 * 1024;
pub const DEFAULT_LOG_KEEP: u32 = 3;
/// How often the policy is re-evaluated without any signal.
const TICK: Duration = Duration::from_millis(500);
const PROBE_EVERY: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Estimate before any start was measured.
const DEFAULT_ESTIMATE: Duration = Duration::from_secs(30);

/// One `[[servers]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub name: String,
    pub hostnames: Vec<String>,
    /// Where the process listens (`host:port`): the proxy's backend.
    pub address: String,
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Working (data) directory, created when missing. Relative paths are
    /// under `runtime.data_dir`.
    pub dir: Option<PathBuf>,
    #[serde(default)]
    pub env: HashMap<String, String>,
    #[serde(default = "default_stop_command")]
    pub stop_command: String,
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout_ms: u64,
    #[serde(default = "default_start_timeout")]
    pub start_timeout_ms: u64,
    #[serde(default = "default_idle")]
    pub idle_timeout_ms: u64,
    #[serde(default = "default_min_online")]
    pub min_online_ms: u64,
    /// Keep it up whatever the policy says.
    #[serde(default)]
    pub pinned: bool,
    /// Names or UUIDs allowed to wake it; empty means everyone.
    #[serde(default)]
    pub allow_wake: Vec<String>,
    #[serde(default)]
    pub proxy_protocol: bool,
    /// RCON of the server: `stop` and console commands (backups' save-off /
    /// save-all / save-on) go there instead of stdin.
    #[serde(default)]
    pub rcon: Option<RconSettings>,
    /// Plugins the platform manages in `plugins/`, synced before each start.
    #[serde(default)]
    pub plugins: Vec<PluginSpec>,
}

/// `rcon = { address = "127.0.0.1:25575", password = "…" }`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RconSettings {
    pub address: String,
    pub password: String,
}

fn default_stop_command() -> String {
    "stop".into()
}
fn default_stop_timeout() -> u64 {
    DEFAULT_STOP_TIMEOUT_MS
}
fn default_start_timeout() -> u64 {
    DEFAULT_START_TIMEOUT_MS
}
fn default_idle() -> u64 {
    policy::DEFAULT_IDLE_TIMEOUT.as_millis() as u64
}
fn default_min_online() -> u64 {
    policy::DEFAULT_MIN_ONLINE.as_millis() as u64
}

impl ServerConfig {
    /// Checks the fields the proxy does not; returns (field, message).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.command.trim().is_empty() {
            return Err(("command", "must not be empty".into()));
        }
        if self.stop_timeout_ms == 0 {
            return Err(("stop_timeout_ms", "must be greater than 0".into()));
        }
        if self.start_timeout_ms == 0 {
            return Err(("start_timeout_ms", "must be greater than 0".into()));
        }
        if let Some(r) = &self.rcon {
            if r.address.trim().is_empty() {
                return Err(("rcon.address", "must not be empty".into()));
            }
            if r.password.is_empty() {
                return Err(("rcon.password", "must not be empty (the server refuses RCON without one)".into()));
            }
        }
        for (i, entry) in self.allow_wake.iter().enumerate() {
            if entry.is_empty() {
                return Err(("allow_wake", format!("entry {i} is empty")));
            }
        }
        Ok(())
    }

    pub fn policy(&self) -> PolicySpec {
        PolicySpec {
            min_replicas: u32::from(self.pinned),
            max_replicas: 1,
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            min_online: Duration::from_millis(self.min_online_ms),
            ..PolicySpec::default()
        }
    }
}

/// `[runtime]`: where data and logs live.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    pub data_dir: PathBuf,
    pub log_max_bytes: u64,
    pub log_keep: u32,
    /// Plugin downloads may go to private, loopback and link-local addresses
    /// (never the cloud metadata ones). Off: public https only.
    pub plugins_allow_private: bool,
    /// Extra root CA (PEM) trusted for plugin downloads.
    pub plugins_ca_file: Option<PathBuf>,
    /// Largest plugin download, bytes.
    pub plugins_max_bytes: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            data_dir: "data".into(),
            log_max_bytes: DEFAULT_LOG_MAX_BYTES,
            log_keep: DEFAULT_LOG_KEEP,
            plugins_allow_private: false,
            plugins_ca_file: None,
            plugins_max_bytes: respawn_plugins::FetchPolicy::default().max_bytes,
        }
    }
}

struct RuntimeMetrics {
    starts: IntCounterVec,
    crashes: IntCounterVec,
    hibernations: IntCounterVec,
    wakes: IntCounterVec,
    start_seconds: HistogramVec,
}

impl RuntimeMetrics {
    fn new(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &["server"]).expect("metric");
            registry.register(Box::new(c.clone())).expect("register");
            c
        };
        let start_seconds = HistogramVec::new(
            HistogramOpts::new("respawn_runtime_start_seconds", "From process start to the first status answer")
                .buckets(vec![0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0]),
            &["server"],
        )
        .expect("metric");
        registry.register(Box::new(start_seconds.clone())).expect("register");
        Self {
            starts: counter("respawn_runtime_starts_total", "Server processes started"),
            crashes: counter("respawn_runtime_crashes_total", "Server processes that exited or failed to start unasked"),
            hibernations: counter("respawn_runtime_hibernations_total", "Idle servers stopped"),
            wakes: counter("respawn_runtime_wake_requests_total", "Wake requests received from the proxy"),
            start_seconds,
        }
    }
}

#[derive(Default)]
struct Signals {
    wake: bool,
    /// Asked to stop now (the API's `stop`), players or not.
    hibernate: bool,
    /// A backup runs: keep it up.
    backup_running: bool,
    sessions: HashMap<String, u32>,
    start_times: Vec<Duration>,
}

struct Managed {
    config: ServerConfig,
    dir: PathBuf,
    log: PathBuf,
    phase: watch::Sender<Phase>,
    signals: Mutex<Signals>,
    notify: Notify,
    /// Ends this server's supervisor (removed or replaced).
    cancel: CancellationToken,
    /// The running process's stdin, for console commands without RCON.
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
}

impl Managed {
    fn signals(&self) -> std::sync::MutexGuard<'_, Signals> {
        self.signals.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The runtime's handle; share it in an `Arc`.
pub struct LocalRuntime {
    servers: RwLock<HashMap<String, Arc<Managed>>>,
    runtime: RuntimeConfig,
    metrics: RuntimeMetrics,
    pub registry: Registry,
    /// Set by [`run`](LocalRuntime::run): servers added later get their
    /// supervisor from here.
    running: Mutex<Option<(CancellationToken, TaskTracker)>>,
}

impl LocalRuntime {
    pub fn new(servers: &[ServerConfig], runtime: RuntimeConfig) -> Self {
        let registry = Registry::new();
        let metrics = RuntimeMetrics::new(&registry);
        let rt = Self { servers: RwLock::default(), runtime, metrics, registry, running: Mutex::default() };
        for c in servers {
            rt.insert(c.clone());
        }
        rt
    }

    fn insert(&self, c: ServerConfig) -> Arc<Managed> {
        let dir = match &c.dir {
            Some(d) if d.is_absolute() => d.clone(),
            Some(d) => self.runtime.data_dir.join(d),
            None => self.runtime.data_dir.join("servers").join(&c.name),
        };
        let log = self.runtime.data_dir.join("logs").join(format!("{}.log", c.name));
        let (phase, _) = watch::channel(Phase::Sleeping);
        let name = c.name.clone();
        let m = Arc::new(Managed {
            config: c,
            dir,
            log,
            phase,
            signals: Mutex::default(),
            notify: Notify::new(),
            cancel: CancellationToken::new(),
            stdin: tokio::sync::Mutex::new(None),
        });
        if let Some(old) = self.write_servers().insert(name, m.clone()) {
            old.cancel.cancel();
        }
        m
    }

    fn read_servers(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Managed>>> {
        self.servers.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_servers(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Managed>>> {
        self.servers.write().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, server: &str) -> Option<Arc<Managed>> {
        self.read_servers().get(server).cloned()
    }

    /// Adds a server or replaces its definition (an unchanged one is left
    /// alone). A replaced server is stopped gracefully and comes back asleep
    /// with the new definition. Errors name the invalid field.
    pub fn upsert(self: &Arc<Self>, config: ServerConfig) -> Result<(), String> {
        config.validate().map_err(|(field, msg)| format!("{field}: {msg}"))?;
        if self.get(&config.name).is_some_and(|m| m.config == config) {
            return Ok(());
        }
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match running {
            Some((root, tracker)) => {
                let m = self.insert(config);
                let span = info_span!("server", name = %m.config.name);
                tracker.spawn(supervise(self.clone(), m.clone(), root).instrument(span));
            }
            None => {
                self.insert(config);
            }
        }
        Ok(())
    }

    /// Stops a server (gracefully) and forgets it; its data directory stays.
    pub fn remove(&self, server: &str) -> bool {
        match self.write_servers().remove(server) {
            Some(m) => {
                m.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Names of the servers it manages.
    pub fn server_names(&self) -> Vec<String> {
        self.read_servers().keys().cloned().collect()
    }

    /// The log file of a server (rotated copies are `.1`, `.2`, …).
    pub fn log_path(&self, server: &str) -> Option<PathBuf> {
        self.get(server).map(|m| m.log.clone())
    }

    /// The server's working (data) directory.
    pub fn data_dir(&self, server: &str) -> Option<PathBuf> {
        self.get(server).map(|m| m.dir.clone())
    }

    /// Players the proxy has in sessions on it now.
    pub fn players(&self, server: &str) -> u32 {
        self.get(server).map(|m| m.signals().sessions.values().sum()).unwrap_or(0)
    }

    /// Asks for a stop now, whatever the players (the API's `stop`).
    pub fn hibernate(&self, server: &str) -> bool {
        let Some(m) = self.get(server) else { return false };
        m.signals().hibernate = true;
        m.notify.notify_one();
        true
    }

    /// A backup starts or ends: keep the server up meanwhile.
    pub fn set_backup_running(&self, server: &str, running: bool) {
        if let Some(m) = self.get(server) {
            m.signals().backup_running = running;
            m.notify.notify_one();
        }
    }

    /// Runs a console command: over RCON when configured (returns its
    /// output), else written to the server's stdin (returns nothing).
    pub async fn console(&self, server: &str, command: &str) -> Result<String, String> {
        let m = self.get(server).ok_or_else(|| format!("no server {server}"))?;
        if let Some(r) = &m.config.rcon {
            let config = crate::rcon::RconConfig::new(r.address.clone(), r.password.clone());
            let mut client = crate::rcon::RconClient::connect(&config).await.map_err(|e| format!("rcon: {e}"))?;
            return client.command(command).await.map_err(|e| format!("rcon: {e}"));
        }
        let mut stdin = m.stdin.lock().await;
        let Some(stdin) = stdin.as_mut() else { return Err(format!("{server} is not running")) };
        stdin.write_all(format!("{command}\n").as_bytes()).await.map_err(|e| format!("stdin: {e}"))?;
        stdin.flush().await.map_err(|e| format!("stdin: {e}"))?;
        Ok(String::new())
    }

    /// The last `tail` log lines written at or after `since_ms` (unix ms),
    /// oldest first, from the current log and its rotated copies.
    pub fn logs(&self, server: &str, tail: usize, since_ms: Option<i64>) -> Vec<(i64, String)> {
        let Some(path) = self.log_path(server) else { return Vec::new() };
        let mut files = vec![path.clone()];
        for i in 1..=self.runtime.log_keep {
            files.push(PathBuf::from(format!("{}.{i}", path.display())));
        }
        // Newest file first; collect from the end until `tail` lines.
        let mut out: Vec<(i64, String)> = Vec::new();
        for f in files {
            let Ok(text) = std::fs::read_to_string(&f) else { continue };
            let mut lines: Vec<(i64, String)> = text.lines().filter_map(parse_log_line).collect();
            if let Some(since) = since_ms {
                lines.retain(|(at, _)| *at >= since);
            }
            lines.append(&mut out);
            out = lines;
            if out.len() >= tail {
                break;
            }
        }
        let skip = out.len().saturating_sub(tail);
        out.drain(..skip);
        out
    }

    /// This runtime's metrics in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let mut out = Vec::new();
        prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("encode metrics");
        String::from_utf8(out).expect("metrics are UTF-8")
    }

    pub fn phase(&self, server: &str) -> Option<Phase> {
        self.get(server).map(|m| m.phase.borrow().clone())
    }

    /// Runs every server's supervisor until `shutdown`, then stops them all
    /// (servers added meanwhile included).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            *running = Some((shutdown.clone(), tracker.clone()));
            for m in self.read_servers().values() {
                let span = info_span!("server", name = %m.config.name);
                tracker.spawn(supervise(self.clone(), m.clone(), shutdown.clone()).instrument(span));
            }
        }
        shutdown.cancelled().await;
        tracker.close();
        tracker.wait().await;
    }
}

/// A log line as the runtime writes it: RFC 3339 time, a space, the line.
fn parse_log_line(line: &str) -> Option<(i64, String)> {
    let (at, rest) = line.split_once(' ')?;
    let at = humantime::parse_rfc3339(at).ok()?;
    let ms = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64;
    Some((ms, rest.to_owned()))
}

impl Lifecycle for LocalRuntime {
    fn watch(&self, server: &str) -> Option<watch::Receiver<Phase>> {
        self.get(server).map(|m| m.phase.subscribe())
    }

    fn wake(&self, server: &str, player: &str) {
        if let Some(m) = self.get(server) {
            info!(server, player, "wake requested");
            self.metrics.wakes.with_label_values(&[server]).inc();
            m.signals().wake = true;
            m.notify.notify_one();
        }
    }

    fn may_wake(&self, server: &str, player: &str, uuid: Option<u128>) -> bool {
        let Some(m) = self.get(server) else { return true };
        let allow = &m.config.allow_wake;
        if allow.is_empty() {
            return true;
        }
        let uuid = uuid.map(format_uuid);
        allow.iter().any(|a| {
            a.eq_ignore_ascii_case(player) || uuid.as_deref().is_some_and(|u| a.replace('-', "").eq_ignore_ascii_case(&u.replace('-', "")))
        })
    }

    fn start_estimate(&self, server: &str) -> Duration {
        let Some(m) = self.get(server) else { return DEFAULT_ESTIMATE };
        let s = m.signals();
        if s.start_times.is_empty() {
            DEFAULT_ESTIMATE
        } else {
            s.start_times.iter().sum::<Duration>() / s.start_times.len() as u32
        }
    }

    fn session_opened(&self, server: &str, backend: &str) {
        if let Some(m) = self.get(server) {
            *m.signals().sessions.entry(backend.to_owned()).or_default() += 1;
            m.notify.notify_one();
        }
    }

    fn session_closed(&self, server: &str, backend: &str) {
        if let Some(m) = self.get(server) {
            let mut s = m.signals();
            if let Some(n) = s.sessions.get_mut(backend) {
                *n = n.saturating_sub(1);
            }
            drop(s);
            m.notify.notify_one();
        }
    }
}

pub fn format_uuid(u: u128) -> String {
    let h = format!("{u:032x}");
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// A running server process (its stdin is kept in [`Managed`]: `Child::wait`
/// would close a stdin it still held).
struct Process {
    child: Child,
    started: Instant,
    ready: bool,
    /// Kills what the server left behind (a wrapper script's children).
    group: GroupGuard,
}

/// The server runs in its own process group; when it is gone (stopped,
/// crashed, or the runtime dropped it), the whole group is killed so no
/// grandchild keeps its port. `kill` instead of a libc call keeps this crate
/// free of unsafe code.
struct GroupGuard(Option<u32>);

impl GroupGuard {
    fn signal(&self, signal: &str) {
        if let Some(pgid) = self.0 {
            let _ = std::process::Command::new("kill")
                .args([signal, "--", &format!("-{pgid}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal("-KILL");
    }
}

async fn supervise(rt: Arc<LocalRuntime>, m: Arc<Managed>, shutdown: CancellationToken) {
    let epoch = Instant::now();
    let spec = m.config.policy();
    let mut memory = Memory::default();
    let mut want_up = false;
    let mut proc: Option<Process> = None;
    let mut failures: u32 = 0;
    let mut retry_at: Option<Instant> = None;
    let mut last_reason = String::new();
    let start_timeout = Duration::from_millis(m.config.start_timeout_ms);
    loop {
        // 1. Decide.
        let (wake, players, hibernate, backup_running) = {
            let mut s = m.signals();
            (std::mem::take(&mut s.wake), s.sessions.values().sum::<u32>(), std::mem::take(&mut s.hibernate), s.backup_running)
        };
        let observed = Observed {
            replicas: u32::from(want_up),
            players: if want_up { vec![players] } else { vec![] },
            wake,
            pinned: m.config.pinned,
            backup_running,
        };
        let mut d = policy::decide(&spec, &observed, memory, epoch.elapsed());
        if hibernate && !backup_running && !wake {
            // Asked to stop (the API's `stop`): the policy starts from zero.
            info!("stop requested");
            d.replicas = 0;
            d.memory = Memory::default();
        }
        memory = d.memory;
        let reason = if hibernate && d.replicas == 0 { "stop requested".to_string() } else { d.reason.to_string() };
        if reason != last_reason && !matches!(d.reason, policy::Reason::IdleWaiting { .. }) {
            info!(replicas = d.replicas, reason = %reason, "scale decision");
        }
        last_reason = reason;
        if wake && proc.is_none() {
            // A wake cancels any crash backoff: a player is waiting now.
            retry_at = None;
        }
        want_up = d.replicas > 0;

        // 2. Act.
        if want_up && proc.is_none() && retry_at.is_none_or(|t| Instant::now() >= t) {
            match start(&rt, &m).await {
                Ok(mut child) => {
                    rt.metrics.starts.with_label_values(&[&m.config.name]).inc();
                    m.phase.send_replace(Phase::Starting);
                    *m.stdin.lock().await = child.stdin.take();
                    let group = GroupGuard(child.id());
                    proc = Some(Process { child, started: Instant::now(), ready: false, group });
                }
                Err(e) => {
                    warn!(error = %e, "server failed to start");
                    failures += 1;
                    retry_at = Some(Instant::now() + backoff(failures));
                    m.phase.send_replace(Phase::Failed(format!("could not start: {e}")));
                }
            }
        }
        if !want_up {
            if let Some(p) = proc.take() {
                m.phase.send_replace(Phase::Stopping);
                rt.metrics.hibernations.with_label_values(&[&m.config.name]).inc();
                stop(&m, p).await;
                info!("server stopped (hibernated)");
            }
            if !matches!(*m.phase.borrow(), Phase::Sleeping) {
                m.phase.send_replace(Phase::Sleeping);
            }
            retry_at = None;
        }

        // 3. Wait for something to happen.
        let probe_due = proc.as_ref().is_some_and(|p| !p.ready);
        tokio::select! {
            _ = shutdown.cancelled() => {
                if let Some(p) = proc.take() {
                    m.phase.send_replace(Phase::Stopping);
                    stop(&m, p).await;
                }
                m.phase.send_replace(Phase::Sleeping);
                return;
            }
            _ = m.cancel.cancelled() => {
                // Removed or replaced: stop it, leave its data.
                if let Some(p) = proc.take() {
                    m.phase.send_replace(Phase::Stopping);
                    stop(&m, p).await;
                }
                m.phase.send_replace(Phase::Sleeping);
                return;
            }
            _ = m.notify.notified() => {}
            _ = tokio::time::sleep(if probe_due { PROBE_EVERY } else { TICK }) => {}
            status = async { proc.as_mut().expect("guarded").child.wait().await }, if proc.is_some() => {
                let p = proc.take().expect("guarded");
                let why = match status {
                    Ok(s) => format!("the server process exited ({s})"),
                    Err(e) => format!("the server process was lost ({e})"),
                };
                warn!(reason = %why, ready = p.ready, "server crashed");
                rt.metrics.crashes.with_label_values(&[&m.config.name]).inc();
                failures += 1;
                retry_at = Some(Instant::now() + backoff(failures));
                m.signals().sessions.clear();
                m.phase.send_replace(Phase::Failed(why));
                continue;
            }
        }

        // 4. Readiness and start timeout.
        if let Some(p) = proc.as_mut() {
            if !p.ready {
                if probe::status_ping(&m.config.address, PROBE_EVERY).await {
                    p.ready = true;
                    let took = p.started.elapsed();
                    info!(took_ms = took.as_millis() as u64, "server ready");
                    rt.metrics.start_seconds.with_label_values(&[&m.config.name]).observe(took.as_secs_f64());
                    let mut s = m.signals();
                    s.start_times.push(took);
                    if s.start_times.len() > 5 {
                        s.start_times.remove(0);
                    }
                    drop(s);
                    m.phase.send_replace(Phase::Running);
                } else if p.started.elapsed() > start_timeout {
                    let p = proc.take().expect("present");
                    warn!("server not ready within the start timeout");
                    rt.metrics.crashes.with_label_values(&[&m.config.name]).inc();
                    stop(&m, p).await;
                    failures += 1;
                    retry_at = Some(Instant::now() + backoff(failures));
                    m.phase.send_replace(Phase::Failed(format!(
                        "not ready within {}s",
                        start_timeout.as_secs()
                    )));
                }
            } else if p.started.elapsed() > BACKOFF_MAX {
                failures = 0; // healthy for a while: the next crash starts the backoff over
            }
        }
    }
}

fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(BACKOFF_MAX)
}

async fn start(rt: &LocalRuntime, m: &Managed) -> std::io::Result<Child> {
    std::fs::create_dir_all(&m.dir)?;
    if let Some(parent) = m.log.parent() {
        std::fs::create_dir_all(parent)?;
    }
    sync_plugins(rt, m).await?;
    info!(command = %m.config.command, dir = %m.dir.display(), "starting server");
    // `respawn` names this very binary, so the demo server works wherever it was built.
    let program = if m.config.command == "respawn" {
        std::env::current_exe().unwrap_or_else(|_| "respawn".into())
    } else {
        m.config.command.clone().into()
    };
    let mut child = Command::new(program)
        .args(&m.config.args)
        .current_dir(&m.dir)
        .envs(&m.config.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group, so stopping it reaches a wrapper's children.
        .process_group(0)
        .spawn()?;
    let sink = Arc::new(Mutex::new(LogSink::open(&m.log, rt.runtime.log_max_bytes, rt.runtime.log_keep)?));
    if let Some(out) = child.stdout.take() {
        tokio::spawn(pump(BufReader::new(out), sink.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(pump(BufReader::new(err), sink));
    }
    Ok(child)
}

/// Downloads, verifies and places the server's managed plugins; any failure
/// fails the start with a reason the held players see.
async fn sync_plugins(rt: &LocalRuntime, m: &Managed) -> std::io::Result<()> {
    if m.config.plugins.is_empty() && !m.dir.join("plugins").join(".respawn-plugins.json").exists() {
        return Ok(());
    }
    let mut policy = respawn_plugins::FetchPolicy {
        allow_private: rt.runtime.plugins_allow_private,
        max_bytes: rt.runtime.plugins_max_bytes,
        ..Default::default()
    };
    if let Some(ca) = &rt.runtime.plugins_ca_file {
        policy.extra_root_pem = Some(std::fs::read(ca)?);
    }
    let report = respawn_plugins::sync(&m.dir.join("plugins"), &m.config.plugins, &policy)
        .await
        .map_err(|e| std::io::Error::other(format!("plugins: {e}")))?;
    if report.has_failures() {
        let why: Vec<String> = report.failures().map(|f| format!("plugin {}: {:?}", f.name, f.outcome)).collect();
        return Err(std::io::Error::other(why.join("; ")));
    }
    info!(plugins = m.config.plugins.len(), "plugins in place");
    Ok(())
}

async fn pump<R: tokio::io::AsyncRead + Unpin>(reader: BufReader<R>, sink: Arc<Mutex<LogSink>>) {
    let mut lines = reader.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = s.write_line(&line) {
            warn!(error = %e, "cannot write the server log");
            return;
        }
    }
}

/// Graceful stop: the stop command over RCON (when configured) or on stdin,
/// then SIGTERM, then SIGKILL.
async fn stop(m: &Managed, p: Process) {
    let config = &m.config;
    let Process { mut child, group, .. } = p;
    let timeout = Duration::from_millis(config.stop_timeout_ms);
    let mut sent = false;
    if let Some(r) = &config.rcon {
        let rcon = crate::rcon::RconConfig::new(r.address.clone(), r.password.clone());
        match crate::rcon::RconClient::connect(&rcon).await {
            Ok(mut client) => match client.command(&config.stop_command).await {
                Ok(_) => sent = true,
                // The server may close RCON as it stops: the command went out.
                Err(e) => {
                    info!(error = %e, "rcon stop: no reply");
                    sent = true;
                }
            },
            Err(e) => warn!(error = %e, "rcon unreachable: stop via stdin"),
        }
    }
    let stdin = m.stdin.lock().await.take();
    if let Some(mut stdin) = stdin {
        if !sent {
            let _ = stdin.write_all(format!("{}\n", config.stop_command).as_bytes()).await;
            let _ = stdin.flush().await;
        }
        drop(stdin);
    }
    if tokio::time::timeout(timeout, child.wait()).await.is_ok() {
        return;
    }
    warn!("server ignored the stop command: SIGTERM");
    group.signal("-TERM");
    if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_ok() {
        return;
    }
    warn!("server ignored SIGTERM: killing it");
    let _ = child.kill().await;
    // Dropping `group` SIGKILLs whatever is left of it.
}

/// Appends lines to a file, rotating it to `.1`, `.2`, … past `max_bytes`.
pub struct LogSink {
    path: PathBuf,
    file: std::fs::File,
    size: u64,
    max_bytes: u64,
    keep: u32,
}

impl LogSink {
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self { path: path.to_owned(), file, size, max_bytes, keep })
    }

    /// Appends `line`, prefixed with the time (RFC 3339, UTC, milliseconds).
    pub fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        let stamped = format!("{} {line}\n", humantime::format_rfc3339_millis(std::time::SystemTime::now()));
        if self.size + stamped.len() as u64 > self.max_bytes && self.size > 0 {
            self.rotate()?;
        }
        self.file.write_all(stamped.as_bytes())?;
        self.size += stamped.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let numbered = |i: u32| PathBuf::from(format!("{}.{i}", self.path.display()));
        if self.keep == 0 {
            self.file.set_len(0)?;
        } else {
            let _ = std::fs::remove_file(numbered(self.keep));
            for i in (1..self.keep).rev() {
                let _ = std::fs::rename(numbered(i), numbered(i + 1));
            }
            std::fs::rename(&self.path, numbered(1))?;
            self.file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_rotation_keeps_n_files() {
        let dir = std::env::temp_dir().join(format!("respawn-logs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.log");
        let mut sink = LogSink::open(&path, 200, 2).unwrap();
        for i in 0..50 {
            sink.write_line(&format!("line {i:04} padding")).unwrap();
        }
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(current.len() <= 200 && current.ends_with("line 0049 padding\n"), "{current}");
        let (at, text) = parse_log_line(current.lines().last().unwrap()).unwrap();
        assert_eq!(text, "line 0049 padding");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        assert!((now - at).abs() < 60_000, "stamped now: {at} vs {now}");
        assert!(dir.join("s.log.1").exists() && dir.join("s.log.2").exists());
        assert!(!dir.join("s.log.3").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(30), BACKOFF_MAX);
    }

    #[test]
    fn allow_list_by_name_or_uuid() {
        let cfg = ServerConfig {
            name: "s".into(),
            hostnames: vec![],
            address: "127.0.0.1:1".into(),
            command: "true".into(),
            args: vec![],
            dir: None,
            env: HashMap::new(),
            stop_command: "stop".into(),
            stop_timeout_ms: 1,
            start_timeout_ms: 1,
            idle_timeout_ms: 1,
            min_online_ms: 1,
            pinned: false,
            allow_wake: vec!["Notch".into(), "069a79f444e94726a5befca90e38aaf5".into()],
            proxy_protocol: false,
            rcon: None,
            plugins: vec![],
        };
        let rt = LocalRuntime::new(&[cfg], RuntimeConfig::default());
        assert!(rt.may_wake("s", "notch", None));
        assert!(!rt.may_wake("s", "Steve", None));
        assert!(rt.may_wake("s", "Other", Some(0x069a79f444e94726a5befca90e38aaf5)));
        assert!(rt.may_wake("unmanaged", "Steve", None));
        assert_eq!(format_uuid(0x069a79f444e94726a5befca90e38aaf5), "069a79f4-44e9-4726-a5be-fca90e38aaf5");
    }
}
