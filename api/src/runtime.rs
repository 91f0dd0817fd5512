//! The seam between the API and whatever runs servers: the API stores server
//! definitions and asks a [`ServerRuntime`] for live state (phase, players,
//! logs) and actions (wake, hibernate). The local process runtime and the
//! Kubernetes writer implement it elsewhere; [`InMemoryRuntime`] is for tests
//! and for running the API alone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a server is in its life, as the runtime sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Not running (scaled to zero); a login or `start` wakes it.
    Sleeping,
    /// Starting, not yet answering status pings.
    Starting,
    /// Up and accepting players.
    Running,
    /// Shutting down (idle, `stop`, or draining a replica).
    Stopping,
    /// The last start or run failed; the runtime retries.
    Failed,
    /// The runtime does not know this server (yet).
    Unknown,
}

/// Live state of one server, as cheap to read as a map lookup: runtimes keep
/// it cached (the local runtime's watch channels, a Kubernetes reflector).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ServerStatus {
    pub phase: Phase,
    /// Players online now.
    pub players: u32,
    /// Where the backend listens (host:port), when running.
    pub address: Option<String>,
    /// Last player activity, unix milliseconds.
    pub last_activity_ms: Option<i64>,
}

impl ServerStatus {
    pub fn unknown() -> ServerStatus {
        ServerStatus { phase: Phase::Unknown, players: 0, address: None, last_activity_ms: None }
    }
}

/// Everything a runtime needs to run a server, resolved from the database
/// (the plan's resources are inlined so the runtime never reads the DB).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerSpec {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// Lower-case, without trailing dots; globally unique.
    pub hostnames: Vec<String>,
    pub minecraft_type: String,
    pub minecraft_version: String,
    pub properties: BTreeMap<String, String>,
    pub cpu_millicores: u32,
    pub memory_mib: u32,
    pub storage_gib: u32,
    pub max_players: u32,
    pub idle_timeout_s: u32,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// Managed plugins, by name: download, verify and place each in
    /// `plugins/` before the server starts; leave other jars alone.
    pub plugins: Vec<PluginSpec>,
}

/// One managed plugin of a [`ServerSpec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginSpec {
    pub name: String,
    pub version: String,
    pub download_url: String,
    /// Lower-case hex; at least one of the two is set.
    pub sha256: Option<String>,
    pub sha512: Option<String>,
}

/// Which log lines to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogQuery {
    /// The last `tail` lines (after `since_ms` is applied).
    pub tail: usize,
    /// Only lines written at or after this time, unix milliseconds.
    pub since_ms: Option<i64>,
}

/// Why a runtime could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime cannot act now (cluster unreachable, shutting down). The
    /// message is logged, not sent to the client.
    #[error("runtime unavailable: {0}")]
    Unavailable(String),
}

/// A boxed future, so the trait stays object-safe (`Arc<dyn ServerRuntime>`)
/// without the `async-trait` macro.
pub type RuntimeFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, RuntimeError>> + Send + 'a>>;

/// Implemented by each way of running servers.
///
/// The database is the source of truth for definitions: the API calls
/// [`apply`](ServerRuntime::apply) after each create/update and on startup for
/// every stored server, and [`remove`](ServerRuntime::remove) after a delete.
/// Both are idempotent. Failures there are logged, not returned to the client
/// (the definition is already stored and is re-applied on restart).
pub trait ServerRuntime: Send + Sync + 'static {
    /// Cached live state; [`ServerStatus::unknown`] for servers it does not run.
    fn status(&self, server_id: &str) -> ServerStatus;
    /// A server was created or changed.
    fn apply<'a>(&'a self, spec: &'a ServerSpec) -> RuntimeFuture<'a, ()>;
    /// A server was deleted: stop it and forget it (its data stays for backups).
    fn remove<'a>(&'a self, server_id: &'a str) -> RuntimeFuture<'a, ()>;
    /// Start it (scale 0 → 1) if it sleeps; returns once requested, not running.
    fn wake<'a>(&'a self, server_id: &'a str) -> RuntimeFuture<'a, ()>;
    /// Stop it gracefully (scale to 0), even with players on.
    fn hibernate<'a>(&'a self, server_id: &'a str) -> RuntimeFuture<'a, ()>;
    /// Recent console lines, oldest first.
    fn logs<'a>(&'a self, server_id: &'a str, query: LogQuery) -> RuntimeFuture<'a, Vec<LogLine>>;

    /// The server's data directory (world, configs, plugins), where backups
    /// read from and restores write to; `None` when this runtime keeps no
    /// local data for it (backups then fail with a clear error).
    fn data_dir(&self, server_id: &str) -> Option<PathBuf> {
        let _ = server_id;
        None
    }

    /// Runs one console command on a running server (RCON on the local
    /// runtime) and returns its output. Backups use it for `save-off`,
    /// `save-all flush` and `save-on`.
    fn console<'a>(&'a self, server_id: &'a str, command: &'a str) -> RuntimeFuture<'a, String> {
        let _ = (server_id, command);
        Box::pin(async { Err(RuntimeError::Unavailable("this runtime has no console".into())) })
    }

    /// A backup of the server starts (`true`) or ends (`false`): keep it up
    /// meanwhile (the scaling policy's "backup running" pin), so it is not
    /// stopped half-way through an archive with saving turned off.
    fn set_backup_running(&self, server_id: &str, running: bool) {
        let _ = (server_id, running);
    }
}

/// One console line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct LogLine {
    /// When it was written, unix milliseconds.
    pub at_ms: i64,
    pub line: String,
}

/// A runtime that runs nothing: it records what it was asked and lets tests
/// set phases, players and log lines. With a data root it also hands out a
/// data directory per server (`<root>/<server id>`, created on apply) and
/// records console commands, so backups can be tested end to end.
#[derive(Default)]
pub struct InMemoryRuntime {
    servers: Mutex<HashMap<String, Simulated>>,
    data_root: Option<PathBuf>,
    console: Mutex<ConsoleSim>,
}

/// What the simulated console saw and which commands it is told to fail.
#[derive(Default)]
struct ConsoleSim {
    /// `(server id, command)` in the order they arrived.
    commands: Vec<(String, String)>,
    failing: HashSet<String>,
    /// `(server id, running)` for each `set_backup_running` call.
    backup_flags: Vec<(String, bool)>,
}

#[derive(Debug, Clone)]
struct Simulated {
    spec: ServerSpec,
    status: ServerStatus,
    logs: Vec<LogLine>,
}

impl InMemoryRuntime {
    pub fn new() -> InMemoryRuntime {
        InMemoryRuntime::default()
    }

    /// A runtime whose servers keep their data under `root/<server id>`.
    pub fn with_data_root(root: impl Into<PathBuf>) -> InMemoryRuntime {
        InMemoryRuntime { data_root: Some(root.into()), ..InMemoryRuntime::default() }
    }

    fn console_sim<R>(&self, f: impl FnOnce(&mut ConsoleSim) -> R) -> R {
        f(&mut self.console.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Test hook: the console commands a server received, in order.
    pub fn console_commands(&self, server_id: &str) -> Vec<String> {
        self.console_sim(|c| c.commands.iter().filter(|(s, _)| s == server_id).map(|(_, cmd)| cmd.clone()).collect())
    }

    /// Test hook: make `command` fail (on every server) from now on, or
    /// succeed again.
    pub fn fail_command(&self, command: &str, fail: bool) {
        self.console_sim(|c| {
            if fail {
                c.failing.insert(command.to_owned());
            } else {
                c.failing.remove(command);
            }
        });
    }

    /// Test hook: every `set_backup_running` value a server was given, in order.
    pub fn backup_flags(&self, server_id: &str) -> Vec<bool> {
        self.console_sim(|c| c.backup_flags.iter().filter(|(s, _)| s == server_id).map(|(_, on)| *on).collect())
    }

    fn with<R>(&self, server_id: &str, f: impl FnOnce(&mut Simulated) -> R) -> Option<R> {
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        servers.get_mut(server_id).map(f)
    }

    /// Test hook: set a server's phase and player count.
    pub fn set_status(&self, server_id: &str, phase: Phase, players: u32) {
        self.with(server_id, |s| {
            s.status.phase = phase;
            s.status.players = players;
        });
    }

    /// Test hook: append a console line.
    pub fn push_log(&self, server_id: &str, at_ms: i64, line: &str) {
        self.with(server_id, |s| s.logs.push(LogLine { at_ms, line: line.to_owned() }));
    }

    /// The last spec applied for a server, if it is known.
    pub fn spec(&self, server_id: &str) -> Option<ServerSpec> {
        self.with(server_id, |s| s.spec.clone())
    }

    fn set_phase(&self, server_id: &str, phase: Phase, note: &str) {
        self.with(server_id, |s| {
            s.status.phase = phase;
            s.logs.push(LogLine { at_ms: crate::db::now_ms(), line: note.to_owned() });
        });
    }
}

impl ServerRuntime for InMemoryRuntime {
    fn status(&self, server_id: &str) -> ServerStatus {
        self.with(server_id, |s| s.status.clone()).unwrap_or_else(ServerStatus::unknown)
    }

    fn apply<'a>(&'a self, spec: &'a ServerSpec) -> RuntimeFuture<'a, ()> {
        if let Some(dir) = self.data_dir(&spec.id)
            && let Err(e) = std::fs::create_dir_all(&dir)
        {
            return Box::pin(async move { Err(RuntimeError::Unavailable(format!("creating {}: {e}", dir.display()))) });
        }
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        servers.entry(spec.id.clone()).and_modify(|s| s.spec = spec.clone()).or_insert_with(|| Simulated {
            spec: spec.clone(),
            status: ServerStatus { phase: Phase::Sleeping, ..ServerStatus::unknown() },
            logs: Vec::new(),
        });
        Box::pin(async { Ok(()) })
    }

    fn remove<'a>(&'a self, server_id: &'a str) -> RuntimeFuture<'a, ()> {
        self.servers.lock().unwrap_or_else(|e| e.into_inner()).remove(server_id);
        Box::pin(async { Ok(()) })
    }

    fn wake<'a>(&'a self, server_id: &'a str) -> RuntimeFuture<'a, ()> {
        self.set_phase(server_id, Phase::Running, "wake requested");
        Box::pin(async { Ok(()) })
    }

    fn hibernate<'a>(&'a self, server_id: &'a str) -> RuntimeFuture<'a, ()> {
        self.set_phase(server_id, Phase::Sleeping, "hibernate requested");
        Box::pin(async { Ok(()) })
    }

    fn logs<'a>(&'a self, server_id: &'a str, query: LogQuery) -> RuntimeFuture<'a, Vec<LogLine>> {
        let lines = self
            .with(server_id, |s| {
                let matching: Vec<LogLine> =
                    s.logs.iter().filter(|l| query.since_ms.is_none_or(|since| l.at_ms >= since)).cloned().collect();
                let skip = matching.len().saturating_sub(query.tail);
                matching.into_iter().skip(skip).collect()
            })
            .unwrap_or_default();
        Box::pin(async move { Ok(lines) })
    }

    fn data_dir(&self, server_id: &str) -> Option<PathBuf> {
        // Ids are checked by the API (`srv_` + hex) before they get here;
        // refuse anything else rather than join it onto a path.
        let safe = !server_id.is_empty() && server_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        self.data_root.as_ref().filter(|_| safe).map(|root| root.join(server_id))
    }

    fn console<'a>(&'a self, server_id: &'a str, command: &'a str) -> RuntimeFuture<'a, String> {
        let running = self.status(server_id).phase == Phase::Running;
        let failing = self.console_sim(|c| {
            c.commands.push((server_id.to_owned(), command.to_owned()));
            c.failing.contains(command)
        });
        Box::pin(async move {
            if !running {
                Err(RuntimeError::Unavailable(format!("server {server_id} is not running")))
            } else if failing {
                Err(RuntimeError::Unavailable(format!("console command `{command}` failed (simulated)")))
            } else {
                Ok(String::new())
            }
        })
    }

    fn set_backup_running(&self, server_id: &str, running: bool) {
        self.console_sim(|c| c.backup_flags.push((server_id.to_owned(), running)));
    }
}
