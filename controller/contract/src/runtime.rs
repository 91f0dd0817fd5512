//! The seam between the management API and whatever runs servers: the API
//! stores server definitions and asks a [`ServerRuntime`] for live state
//! (phase, players, logs) and actions (wake, hibernate). The local runtime
//! (under `respawn up`) and the Kubernetes writer implement it; the API's
//! `InMemoryRuntime` is for tests and for running the API alone.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use serde::Serialize;

use crate::{phase::Phase, spec::PluginSpec};

/// Live state of one server, as cheap to read as a map lookup: runtimes keep
/// it cached (the local runtime's watch channels, a Kubernetes reflector).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogLine {
    /// When it was written, unix milliseconds.
    pub at_ms: i64,
    pub line: String,
}
