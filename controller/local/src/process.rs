//! One server process: start it (plugins synced first, output captured into
//! its log), and stop it gracefully — the stop command over RCON or on
//! stdin, then SIGTERM, then SIGKILL to its whole process group.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use respawn_rcon::{RconClient, RconConfig};
use rustix::process::{Pid, Signal, kill_process_group};
use tokio::{
    io::AsyncWriteExt,
    process::{Child, Command},
};
use tracing::{info, warn};

use crate::{Managed, config::RuntimeConfig, error::StartError, logs};

/// How long a server gets after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(10);

/// A running server process (its stdin is kept in [`Managed`]: `Child::wait`
/// would close a stdin it still held).
pub(crate) struct Process {
    pub child: Child,
    pub started: Instant,
    pub ready: bool,
    /// Kills what the server left behind (a wrapper script's children).
    pub group: GroupGuard,
}

/// The server runs in its own process group; when it is gone (stopped,
/// crashed, or the runtime dropped it), the whole group is killed so no
/// grandchild keeps its port. `kill(2)` through rustix: one syscall, safe
/// code, nothing forked (this runs on async threads and in `Drop`).
pub(crate) struct GroupGuard(Option<Pid>);

impl GroupGuard {
    pub fn new(pid: Option<u32>) -> Self {
        GroupGuard(pid.and_then(|p| Pid::from_raw(i32::try_from(p).ok()?)))
    }

    pub fn signal(&self, signal: Signal) {
        if let Some(pgid) = self.0 {
            // ESRCH: the group is gone already, which is what we want.
            let _ = kill_process_group(pgid, signal);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::KILL);
    }
}

/// Starts the server's process in its directory.
pub(crate) async fn start(runtime: &RuntimeConfig, m: &Managed) -> Result<Child, StartError> {
    tokio::fs::create_dir_all(&m.dir).await?;
    if let Some(parent) = m.log.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    sync_plugins(runtime, m).await?;
    info!(command = %m.config.command, dir = %m.dir.display(), "starting server");
    // `respawn` names this very binary, so the demo server works wherever it was built.
    let program = if m.config.command == "respawn" {
        std::env::current_exe().unwrap_or_else(|_| "respawn".into())
    } else {
        m.config.command.clone().into()
    };
    let (log, sink) = {
        let (path, max, keep) = (m.log.clone(), runtime.log_max_bytes, runtime.log_keep);
        tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            let sink = logs::LogSink::open(&path, max, keep)?;
            Ok((std::io::pipe()?, sink))
        })
        .await
        .map_err(std::io::Error::other)??
    };
    let (output, output_w) = log;
    // Stdout and stderr share one pipe (whole lines stay whole: a write of
    // up to PIPE_BUF bytes is atomic), read by a thread that writes the log.
    // The command is dropped right after the spawn, closing our copies of
    // the write end, so the reader sees the end when the server exits.
    let child = {
        let mut command = Command::new(program);
        command
            .args(&m.config.args)
            .current_dir(&m.dir)
            .envs(&m.config.env)
            .stdin(Stdio::piped())
            .stdout(output_w.try_clone()?)
            .stderr(output_w)
            .kill_on_drop(true)
            // Its own process group, so stopping it reaches a wrapper's children.
            .process_group(0);
        command.spawn()?
    };
    logs::capture(&m.config.name, output, sink)?;
    Ok(child)
}

/// Downloads, verifies and places the server's managed plugins; any failure
/// fails the start with a reason the held players see.
async fn sync_plugins(runtime: &RuntimeConfig, m: &Managed) -> Result<(), StartError> {
    let manifest = m.dir.join("plugins").join(respawn_plugins::MANIFEST_FILE);
    if m.config.plugins.is_empty() && !tokio::fs::try_exists(&manifest).await.unwrap_or(false) {
        return Ok(());
    }
    let mut policy = respawn_plugins::FetchPolicy {
        allow_private: runtime.plugins_allow_private,
        max_bytes: runtime.plugins_max_bytes,
        ..Default::default()
    };
    if let Some(ca) = &runtime.plugins_ca_file {
        policy.extra_root_pem = Some(tokio::fs::read(ca).await?);
    }
    let report = respawn_plugins::sync(&m.dir.join("plugins"), &m.config.plugins, &policy)
        .await
        .map_err(|e| StartError::Plugins(e.to_string()))?;
    if report.has_failures() {
        let why: Vec<String> = report.failures().map(|f| format!("plugin {}: {:?}", f.name, f.outcome)).collect();
        return Err(StartError::Plugins(why.join("; ")));
    }
    info!(plugins = m.config.plugins.len(), "plugins in place");
    Ok(())
}

/// Graceful stop: the stop command over RCON (when configured) or on stdin,
/// then SIGTERM, then SIGKILL.
pub(crate) async fn stop(m: &Managed, p: Process) {
    let config = &m.config;
    let Process { mut child, group, .. } = p;
    let timeout = Duration::from_millis(config.stop_timeout_ms);
    let mut sent = false;
    if let Some(r) = &config.rcon {
        let rcon = RconConfig::new(r.address.clone(), r.password.clone());
        match RconClient::connect(&rcon).await {
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
    group.signal(Signal::TERM);
    if tokio::time::timeout(TERM_GRACE, child.wait()).await.is_ok() {
        return;
    }
    warn!("server ignored SIGTERM: killing it");
    let _ = child.kill().await;
    // Dropping `group` SIGKILLs whatever is left of it.
}
