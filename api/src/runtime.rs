//! The API's side of the runtime seam. The contract itself ([`ServerRuntime`],
//! [`ServerSpec`], [`ServerStatus`], one [`Phase`]) lives in
//! `respawn-contract`, so the runtimes that implement it (the local runtime
//! under `respawn up`, the Kubernetes writer) never depend on the API.
//! [`InMemoryRuntime`] is for tests and for running the API alone.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;

pub use respawn_contract::{
    Phase, PluginSpec,
    runtime::{LogLine, LogQuery, RuntimeError, RuntimeFuture, ServerRuntime, ServerSpec, ServerStatus},
};

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
