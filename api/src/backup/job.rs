//! Taking a backup: the queued row, the job that archives the data directory
//! (pausing saving on a running server) and uploads it, and recording how it
//! ended.

use std::path::PathBuf;
use std::time::Instant;

use super::{BackupError, CONSOLE_TIMEOUT, JobError, SETTLE_WAIT, STOP_POLL, archive, failed, remove_quietly};
use crate::AppState;
use crate::db::{new_id, now_ms};
use crate::runtime::{Phase, ServerRuntime};
use crate::store::backups::{self as rows, Backup, BackupKind, JobStatus};

/// Records a queued backup of `server_id` and starts its job.
pub async fn start_backup(
    state: &AppState,
    tenant_id: &str,
    server_id: &str,
    note: Option<String>,
) -> Result<Backup, BackupError> {
    let backup = queued_backup(tenant_id, server_id, BackupKind::Manual, note);
    rows::insert(&state.db, &backup).await?;
    let (state, id, server) = (state.clone(), backup.id.clone(), server_id.to_owned());
    tokio::spawn(async move {
        let turn = state.backups.turn(&server).await;
        let result = match turn {
            Ok(_turn) => take(&state, &id, None).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            record_failure(&state, &id, &e).await;
        }
    });
    Ok(backup)
}

pub(super) fn queued_backup(tenant_id: &str, server_id: &str, kind: BackupKind, note: Option<String>) -> Backup {
    Backup {
        id: new_id("bkp"),
        tenant_id: tenant_id.to_owned(),
        server_id: server_id.to_owned(),
        kind,
        status: JobStatus::Queued,
        locked: false,
        note,
        object_key: None,
        size_bytes: None,
        sha256: None,
        error: None,
        created_at_ms: now_ms(),
        started_at_ms: None,
        finished_at_ms: None,
    }
}

pub(super) async fn record_failure(state: &AppState, backup_id: &str, e: &JobError) {
    tracing::warn!(backup = %backup_id, error = %e, "backup failed");
    if let Err(db) = rows::mark_failed(&state.db, backup_id, &e.to_string()).await {
        tracing::error!(backup = %backup_id, error = ?db, "could not record a failed backup");
    }
}

/// Runs one backup whose row exists, holding the server's turn: archive,
/// upload, apply retention (never touching `protect`), mark succeeded.
/// On failure the caller records the error.
pub(super) async fn take(state: &AppState, backup_id: &str, protect: Option<&str>) -> Result<Backup, JobError> {
    let started = Instant::now();
    let backup = rows::by_id(&state.db, backup_id).await?.ok_or_else(|| failed("the backup was deleted"))?;
    rows::mark_running(&state.db, backup_id).await?;
    let server_id = backup.server_id.clone();
    state.runtime.set_backup_running(&server_id, true);
    let result = archive_and_upload(state, &backup).await;
    state.runtime.set_backup_running(&server_id, false);
    let elapsed = started.elapsed().as_secs_f64();
    let (key, written) = match result {
        Ok(done) => done,
        Err(e) => {
            state.metrics.backup_finished("failed", elapsed, 0);
            return Err(e);
        }
    };
    rows::mark_uploaded(&state.db, backup_id, &key, written.bytes, &written.sha256).await?;
    // Retention before the status says `succeeded`: whoever polls sees the
    // old backups already gone when it sees the new one done.
    if let Err(e) = super::enforce_retention(state, &server_id, backup_id, protect).await {
        tracing::warn!(server = %server_id, error = ?e, "retention could not be applied");
    }
    // Counted before the status flips, so a poller that sees it done sees it counted.
    state.metrics.backup_finished("succeeded", elapsed, written.bytes);
    rows::mark_succeeded(&state.db, backup_id).await?;
    tracing::info!(backup = %backup_id, server = %server_id, bytes = written.bytes, entries = written.entries,
        seconds = elapsed, "backup succeeded");
    rows::by_id(&state.db, backup_id).await?.ok_or_else(|| failed("the backup was deleted"))
}

/// The archive, made consistent: on a running server saving is paused
/// around it, and `save-on` is sent whatever the archive did.
async fn archive_and_upload(state: &AppState, backup: &Backup) -> Result<(String, archive::Written), JobError> {
    let server_id = backup.server_id.as_str();
    let data_dir = state
        .runtime
        .data_dir(server_id)
        .ok_or_else(|| failed("the server runtime keeps no data directory for this server"))?;
    let scratch = state.backups.scratch(&backup.id);
    let running = settled_phase(state.runtime.as_ref(), server_id).await? == Phase::Running;
    let archived = if running {
        let paused = pause_saving(state.runtime.as_ref(), server_id).await;
        let archived = match paused {
            Ok(()) => archive_blocking(data_dir, scratch.clone()).await,
            Err(e) => Err(e),
        };
        // Always, even when save-off or the flush failed half-way: a server
        // left with saving off loses everything since on its next crash.
        if let Err(e) = console(state.runtime.as_ref(), server_id, "save-on").await {
            tracing::error!(server = %server_id, error = %e, "could not turn saving back on after a backup");
            if archived.is_ok() {
                remove_quietly(&scratch).await;
                return Err(failed(format!("the archive was made but `save-on` failed: {e}")));
            }
        }
        archived
    } else {
        archive_blocking(data_dir, scratch.clone()).await
    };
    let written = match archived {
        Ok(w) => w,
        Err(e) => {
            remove_quietly(&scratch).await;
            return Err(e);
        }
    };
    let key = state.backups.storage.key(&backup.tenant_id, server_id, &backup.id);
    let uploaded = state.backups.storage.upload(&key, &scratch).await;
    remove_quietly(&scratch).await;
    uploaded.map_err(|e| failed(format!("storing the archive failed: {e}")))?;
    Ok((key, written))
}

/// A server that is starting or stopping writes its world without heeding
/// `save-off` yet (or any more): wait, bounded, until it is up or down
/// before choosing how to archive it. (The runtime was already told a
/// backup runs, so a running server stays up from here on.)
async fn settled_phase(runtime: &dyn ServerRuntime, server_id: &str) -> Result<Phase, JobError> {
    let deadline = Instant::now() + SETTLE_WAIT;
    loop {
        let phase = runtime.status(server_id).phase;
        if !matches!(phase, Phase::Starting | Phase::Stopping) {
            return Ok(phase);
        }
        if Instant::now() >= deadline {
            return Err(failed(format!("the server stayed {phase:?} for {SETTLE_WAIT:?}; no backup was taken")));
        }
        tokio::time::sleep(STOP_POLL).await;
    }
}

async fn pause_saving(runtime: &dyn ServerRuntime, server_id: &str) -> Result<(), JobError> {
    for command in ["save-off", "save-all flush"] {
        console(runtime, server_id, command).await.map_err(|e| failed(format!("console `{command}` failed: {e}")))?;
    }
    Ok(())
}

/// One console command, bounded by [`CONSOLE_TIMEOUT`].
async fn console(runtime: &dyn ServerRuntime, server_id: &str, command: &str) -> Result<String, String> {
    match tokio::time::timeout(CONSOLE_TIMEOUT, runtime.console(server_id, command)).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {CONSOLE_TIMEOUT:?}")),
    }
}

async fn archive_blocking(data_dir: PathBuf, out: PathBuf) -> Result<archive::Written, JobError> {
    tokio::task::spawn_blocking(move || archive::create(&data_dir, &out))
        .await
        .map_err(|e| failed(format!("the archive task failed: {e}")))?
        .map_err(|e| match e {
            archive::ArchiveError::Io { source, .. } => {
                failed(format!("archiving the data directory failed: {source}"))
            }
            other => failed(format!("archiving the data directory failed: {other}")),
        })
}
