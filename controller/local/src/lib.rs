//! Respawn's local runtime (the embedded default): runs each managed server
//! as a process on this machine, drives it with the scaling policy, and
//! publishes its phase to the proxy through the `Lifecycle` contract.
//!
//! Owns: server processes and their logs, readiness probes, console commands
//! (RCON or stdin), plugin sync before a start. Decides nothing about
//! scaling: `respawn_contract::policy` does. May depend on: the contract, the
//! codec (its readiness probe speaks Minecraft), RCON, plugins — never on the
//! proxy, the API or Kubernetes.
//!
//! Modules: [`config`] (typed `[[servers]]` / `[runtime]`), [`supervisor`]
//! (one loop per server: observe → decide → act), `process` (start, graceful
//! stop, process groups), [`logs`] (capture, rotation, reading back),
//! [`probe`] (readiness), [`error`].
//!
//! Servers come from the config file and, under `respawn up`, from the API:
//! [`LocalRuntime::upsert`] and [`LocalRuntime::remove`] change the set while
//! it runs.
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod logs;
pub mod probe;
mod process;
pub mod supervisor;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use respawn_contract::{Lifecycle, Phase, PhaseState};
use respawn_rcon::{RconClient, RconConfig};
use tokio::{
    io::AsyncWriteExt,
    process::ChildStdin,
    sync::{Notify, watch},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, info, info_span};

pub use config::{RconSettings, RuntimeConfig, ServerConfig};
pub use error::{ConfigError, ConsoleError};

/// Estimate before any start was measured.
const DEFAULT_ESTIMATE: Duration = Duration::from_secs(30);
/// Start durations kept for the estimate.
const START_TIMES_KEPT: usize = 5;

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
            crashes: counter(
                "respawn_runtime_crashes_total",
                "Server processes that exited or failed to start unasked",
            ),
            hibernations: counter("respawn_runtime_hibernations_total", "Idle servers stopped"),
            wakes: counter("respawn_runtime_wake_requests_total", "Wake requests received from the proxy"),
            start_seconds,
        }
    }
}

/// What the proxy and the API told a server's supervisor since it last looked.
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

impl Signals {
    fn record_start(&mut self, took: Duration) {
        self.start_times.push(took);
        if self.start_times.len() > START_TIMES_KEPT {
            self.start_times.remove(0);
        }
    }
}

/// One server the runtime manages.
struct Managed {
    config: ServerConfig,
    dir: PathBuf,
    log: PathBuf,
    phase: watch::Sender<PhaseState>,
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
        let (phase, _) = watch::channel(Phase::Sleeping.into());
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
    pub fn upsert(self: &Arc<Self>, config: ServerConfig) -> Result<(), ConfigError> {
        config.validate()?;
        if self.get(&config.name).is_some_and(|m| m.config == config) {
            return Ok(());
        }
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let m = self.insert(config);
        if let Some((root, tracker)) = running {
            let span = info_span!("server", name = %m.config.name);
            tracker.spawn(supervisor::supervise(self.clone(), m, root).instrument(span));
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
    pub async fn console(&self, server: &str, command: &str) -> Result<String, ConsoleError> {
        let m = self.get(server).ok_or_else(|| ConsoleError::UnknownServer(server.to_owned()))?;
        if let Some(r) = &m.config.rcon {
            let config = RconConfig::new(r.address.clone(), r.password.clone());
            let mut client = RconClient::connect(&config).await?;
            return Ok(client.command(command).await?);
        }
        let mut stdin = m.stdin.lock().await;
        let Some(stdin) = stdin.as_mut() else { return Err(ConsoleError::NotRunning(server.to_owned())) };
        stdin.write_all(format!("{command}\n").as_bytes()).await.map_err(ConsoleError::Stdin)?;
        stdin.flush().await.map_err(ConsoleError::Stdin)?;
        Ok(String::new())
    }

    /// The last `tail` log lines written at or after `since_ms` (unix ms),
    /// oldest first, from the current log and its rotated copies. The files
    /// are read on the blocking pool, never on the caller's thread.
    pub async fn logs(&self, server: &str, tail: usize, since_ms: Option<i64>) -> Vec<(i64, String)> {
        let Some(path) = self.log_path(server) else { return Vec::new() };
        let keep = self.runtime.log_keep;
        tokio::task::spawn_blocking(move || logs::read_logs(&path, keep, tail, since_ms)).await.unwrap_or_default()
    }

    /// This runtime's metrics in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let mut out = Vec::new();
        prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("encode metrics");
        String::from_utf8(out).expect("metrics are UTF-8")
    }

    pub fn phase(&self, server: &str) -> Option<Phase> {
        self.get(server).map(|m| m.phase.borrow().phase)
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
                tracker.spawn(supervisor::supervise(self.clone(), m.clone(), shutdown.clone()).instrument(span));
            }
        }
        shutdown.cancelled().await;
        tracker.close();
        tracker.wait().await;
    }
}

impl Lifecycle for LocalRuntime {
    fn watch(&self, server: &str) -> Option<watch::Receiver<PhaseState>> {
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
            a.eq_ignore_ascii_case(player)
                || uuid.as_deref().is_some_and(|u| a.replace('-', "").eq_ignore_ascii_case(&u.replace('-', "")))
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

#[cfg(test)]
mod tests {
    use super::*;

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
