//! Backups and restores of a server's data directory: the jobs behind
//! `/v1/servers/{id}/backups`. A job row is written first (`queued`), the
//! work runs on a background task, and the row says how it ended.
//!
//! Consistency: a running server is told `save-off` and `save-all flush`
//! before the archive and `save-on` after it, whatever happened in between;
//! a sleeping server is archived as it lies. The runtime is told a backup is
//! running so the scaling policy keeps the server up meanwhile.
//!
//! One job per server at a time (a per-server lock; later jobs wait as
//! `queued`), and at most `backups.max_concurrent` jobs overall.

pub mod archive;
pub mod storage;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};

use crate::AppState;
use crate::config::BackupConfig;
use crate::db::{new_id, now_ms};
use crate::error::ApiError;
use crate::runtime::{Phase, ServerRuntime};
use crate::store::backups::{self as rows, Backup, BackupKind, JobStatus, Restore};
pub use storage::BackupStorage;

/// How long a restore waits for a running server to stop before it gives up
/// (a world save on shutdown can take a while on a big map).
pub const STOP_WAIT: Duration = Duration::from_secs(120);
/// The longest one console command may take: `save-all flush` writes every
/// loaded chunk, which takes a while on a big world; a hung console must not
/// hold the server's backup turn for ever.
pub const CONSOLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a backup waits for a starting or stopping server to settle.
pub const SETTLE_WAIT: Duration = Duration::from_secs(120);
/// How often it looks while waiting.
const STOP_POLL: Duration = Duration::from_millis(100);

/// The backup service every handler and job shares (inside [`AppState`]).
pub struct Backups {
    pub storage: BackupStorage,
    work_dir: PathBuf,
    default_keep_last: u32,
    workers: Arc<Semaphore>,
    /// One async mutex per server with a job in flight; entries die with
    /// their last holder (weak), so the map does not grow with every server
    /// ever backed up.
    server_locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

/// Why a job failed: said in the job's `error` field, so it is written for
/// the tenant (no internal paths beyond the archive's own entries).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{0}")]
    Failed(String),
    #[error("the database failed")]
    Db(#[from] ApiError),
}

fn failed(message: impl Into<String>) -> JobError {
    JobError::Failed(message.into())
}

impl Backups {
    pub fn new(config: &BackupConfig) -> anyhow::Result<Backups> {
        std::fs::create_dir_all(&config.work_dir)
            .map_err(|e| anyhow::anyhow!("backups.work_dir {}: {e}", config.work_dir.display()))?;
        Ok(Backups {
            storage: BackupStorage::from_config(config)?,
            work_dir: config.work_dir.clone(),
            default_keep_last: config.default_keep_last,
            workers: Arc::new(Semaphore::new(config.max_concurrent)),
            server_locks: Mutex::new(HashMap::new()),
        })
    }

    /// The server's retention: its own policy or the configured default.
    pub async fn keep_last(&self, state: &AppState, server_id: &str) -> Result<u32, ApiError> {
        Ok(rows::keep_last(&state.db, server_id).await?.unwrap_or(self.default_keep_last))
    }

    fn server_lock(&self, server_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.server_locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.retain(|_, weak| weak.strong_count() > 0);
        if let Some(lock) = locks.get(server_id).and_then(Weak::upgrade) {
            return lock;
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(server_id.to_owned(), Arc::downgrade(&lock));
        lock
    }

    /// Waits for the server's turn, then for a worker.
    async fn turn(&self, server_id: &str) -> Result<(OwnedMutexGuard<()>, OwnedSemaphorePermit), JobError> {
        let guard = self.server_lock(server_id).lock_owned().await;
        let permit = self.workers.clone().acquire_owned().await.map_err(|_| failed("the API is shutting down"))?;
        Ok((guard, permit))
    }

    fn scratch(&self, tag: &str) -> PathBuf {
        self.work_dir.join(format!("{tag}.tar.zst"))
    }

    /// Removes scratch archives a previous process left behind when it was
    /// killed mid-job (their jobs are marked failed on startup too). Only
    /// names this service makes are touched. Returns how many went.
    pub fn clean_scratch(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.work_dir) else { return 0 };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = (name.starts_with("bkp_") || name.starts_with("rst_")) && name.ends_with(".tar.zst");
            if ours && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

/// Records a queued backup of `server_id` and starts its job.
pub async fn start_backup(
    state: &AppState,
    tenant_id: &str,
    server_id: &str,
    note: Option<String>,
) -> Result<Backup, ApiError> {
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

fn queued_backup(tenant_id: &str, server_id: &str, kind: BackupKind, note: Option<String>) -> Backup {
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

async fn record_failure(state: &AppState, backup_id: &str, e: &JobError) {
    tracing::warn!(backup = %backup_id, error = %e, "backup failed");
    if let Err(db) = rows::mark_failed(&state.db, backup_id, &e.to_string()).await {
        tracing::error!(backup = %backup_id, error = ?db, "could not record a failed backup");
    }
}

/// Runs one backup whose row exists, holding the server's turn: archive,
/// upload, apply retention (never touching `protect`), mark succeeded.
/// On failure the caller records the error.
async fn take(state: &AppState, backup_id: &str, protect: Option<&str>) -> Result<Backup, JobError> {
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
    if let Err(e) = enforce_retention(state, &server_id, backup_id, protect).await {
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

async fn remove_quietly(path: &std::path::Path) {
    if let Err(e) = tokio::fs::remove_file(path).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "could not remove a scratch archive");
    }
}

/// Deletes the succeeded, unlocked backups beyond the server's `keep_last`,
/// newest kept, counting `just_made` as succeeded. Locked ones and ones a
/// restore is reading are never counted out; neither is `protect`.
pub async fn enforce_retention(
    state: &AppState,
    server_id: &str,
    just_made: &str,
    protect: Option<&str>,
) -> Result<u32, ApiError> {
    let keep = state.backups.keep_last(state, server_id).await?;
    let mut removed = 0;
    for victim in rows::beyond_retention(&state.db, server_id, keep, just_made).await? {
        if Some(victim.id.as_str()) == protect || victim.id == just_made {
            continue;
        }
        match remove_backup(state, &victim, false).await {
            Ok(true) => removed += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(backup = %victim.id, error = ?e, "retention could not delete a backup")
            }
        }
    }
    if removed > 0 {
        tracing::info!(server = %server_id, removed, keep, "old backups removed by retention");
    }
    Ok(removed)
}

/// Deletes a backup: the row first (so a concurrent lock wins and nobody is
/// handed a row whose archive is gone), then its archive. `force` also
/// removes locked ones (the server itself is being deleted). False when a
/// lock got there first.
pub async fn remove_backup(state: &AppState, backup: &Backup, force: bool) -> Result<bool, ApiError> {
    if force {
        rows::delete_any(&state.db, &backup.id).await?;
    } else if !rows::delete_unlocked(&state.db, &backup.id).await? {
        return Ok(false);
    }
    if let Some(key) = &backup.object_key
        && let Err(e) = state.backups.storage.delete(key).await
    {
        tracing::warn!(backup = %backup.id, key, error = %e, "backup row deleted but its archive could not be");
    }
    Ok(true)
}

/// Records a queued restore of `backup` and starts its job. The caller
/// checked ownership, that the backup succeeded and that nobody plays.
pub async fn start_restore(state: &AppState, backup: &Backup) -> Result<Restore, ApiError> {
    let restore = Restore {
        id: new_id("rst"),
        tenant_id: backup.tenant_id.clone(),
        server_id: backup.server_id.clone(),
        backup_id: backup.id.clone(),
        status: JobStatus::Queued,
        safety_backup_id: None,
        error: None,
        created_at_ms: now_ms(),
        finished_at_ms: None,
    };
    rows::insert_restore(&state.db, &restore).await?;
    let (state, job) = (state.clone(), restore.clone());
    tokio::spawn(async move {
        let outcome = match state.backups.turn(&job.server_id).await {
            Ok(_turn) => run_restore(&state, &job).await,
            Err(e) => Err(e),
        };
        let (status, error) = match &outcome {
            Ok(()) => (JobStatus::Succeeded, None),
            Err(e) => {
                tracing::warn!(restore = %job.id, server = %job.server_id, error = %e, "restore failed");
                (JobStatus::Failed, Some(e.to_string()))
            }
        };
        state.metrics.restore_finished(if outcome.is_ok() { "succeeded" } else { "failed" });
        if let Err(e) = rows::update_restore(&state.db, &job.id, status, None, error.as_deref()).await {
            tracing::error!(restore = %job.id, error = ?e, "could not record the end of a restore");
        }
    });
    Ok(restore)
}

/// The restore itself, holding the server's turn:
/// 1. refuse if players came on meanwhile;
/// 2. take a safety backup of the data as it is (kept like any backup);
/// 3. fetch the archive, check its SHA-256, extract it into a sibling of the
///    data directory (refusing hostile entries; the data is untouched so far);
/// 4. stop the server if it runs, then swap the directories.
///
/// The server is left hibernated: the next login or `start` wakes it on the
/// restored data.
async fn run_restore(state: &AppState, job: &Restore) -> Result<(), JobError> {
    rows::update_restore(&state.db, &job.id, JobStatus::Running, None, None).await?;
    let players = state.runtime.status(&job.server_id).players;
    if players > 0 {
        return Err(failed(format!("{players} players are online; restore refused")));
    }
    let source = rows::by_id(&state.db, &job.backup_id).await?.ok_or_else(|| failed("the backup was deleted"))?;
    let (Some(key), Some(expected)) = (source.object_key.clone(), source.sha256.clone()) else {
        return Err(failed("the backup has no archive"));
    };
    let data_dir = state
        .runtime
        .data_dir(&job.server_id)
        .ok_or_else(|| failed("the server runtime keeps no data directory for this server"))?;

    let safety = queued_backup(&job.tenant_id, &job.server_id, BackupKind::Safety, Some(format!("before {}", job.id)));
    rows::insert(&state.db, &safety).await?;
    rows::update_restore(&state.db, &job.id, JobStatus::Running, Some(&safety.id), None).await?;
    if let Err(e) = take(state, &safety.id, Some(&source.id)).await {
        record_failure(state, &safety.id, &e).await;
        return Err(failed(format!("the safety backup failed, nothing was changed: {e}")));
    }

    let max_bytes = storage_limit(state, job).await?;
    let download = state.backups.scratch(&job.id);
    let fetched = fetch_verified(state, &key, &expected, &download).await;
    let staged = archive::sibling(&data_dir, "restore", &job.id).map_err(|e| failed(e.to_string()))?;
    let extracted = match fetched {
        Ok(()) => extract_blocking(download.clone(), staged.clone(), max_bytes).await,
        Err(e) => Err(e),
    };
    remove_quietly(&download).await;
    if let Err(e) = extracted {
        remove_dir_quietly(&staged).await;
        return Err(e);
    }

    if let Err(e) = stop_and_wait(state.runtime.as_ref(), &job.server_id).await {
        remove_dir_quietly(&staged).await;
        return Err(e);
    }
    let swap = {
        let (data_dir, staged, tag) = (data_dir.clone(), staged.clone(), job.id.clone());
        tokio::task::spawn_blocking(move || archive::swap_in(&data_dir, &staged, &tag))
            .await
            .map_err(|e| failed(format!("the swap task failed: {e}")))?
    };
    if let Err(e) = swap {
        remove_dir_quietly(&staged).await;
        return Err(failed(format!("replacing the data directory failed: {e}")));
    }
    tracing::info!(restore = %job.id, server = %job.server_id, backup = %job.backup_id, "restore succeeded");
    Ok(())
}

/// Downloads an archive to `to`, hashing as it goes; refuses it when the
/// hash is not the one recorded when it was made.
async fn fetch_verified(state: &AppState, key: &str, expected: &str, to: &std::path::Path) -> Result<(), JobError> {
    use futures_util::StreamExt;
    let mut stream = state.backups.storage.get(key).await.map_err(|e| failed(format!("fetching the archive: {e}")))?;
    let mut file = tokio::fs::File::create(to).await.map_err(|e| failed(format!("scratch file: {e}")))?;
    let mut hasher = Sha256::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| failed(format!("fetching the archive: {e}")))?;
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(|e| failed(format!("scratch file: {e}")))?;
    }
    file.flush().await.map_err(|e| failed(format!("scratch file: {e}")))?;
    let actual = archive::hex(&hasher.finalize());
    if actual != expected {
        return Err(failed("the archive does not match its recorded SHA-256; it was changed or damaged"));
    }
    Ok(())
}

/// What the restored files may add up to: the storage of the server's plan.
async fn storage_limit(state: &AppState, job: &Restore) -> Result<u64, JobError> {
    let server = crate::store::servers::get(&state.db, &job.tenant_id, &job.server_id)
        .await?
        .ok_or_else(|| failed("the server was deleted"))?;
    let plan = crate::store::plans::get(&state.db, &server.plan_id)
        .await?
        .ok_or_else(|| failed("the server's plan was deleted"))?;
    Ok(u64::from(plan.storage_gib) << 30)
}

async fn extract_blocking(archive_file: PathBuf, staged: PathBuf, max_bytes: u64) -> Result<(), JobError> {
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir(&staged).map_err(|e| archive::ArchiveError::Io { path: staged.clone(), source: e })?;
        archive::extract(&archive_file, &staged, max_bytes)
    })
    .await
    .map_err(|e| failed(format!("the extract task failed: {e}")))?
    .map(|_| ())
    .map_err(|e| match e {
        archive::ArchiveError::Io { source, .. } => failed(format!("extracting the archive failed: {source}")),
        other => failed(format!("{other}; nothing was changed")),
    })
}

/// Hibernates the server if it is up and waits (bounded) until it sleeps.
async fn stop_and_wait(runtime: &dyn ServerRuntime, server_id: &str) -> Result<(), JobError> {
    let phase = runtime.status(server_id).phase;
    if matches!(phase, Phase::Sleeping | Phase::Unknown | Phase::Failed) {
        return Ok(());
    }
    runtime.hibernate(server_id).await.map_err(|e| failed(format!("stopping the server failed: {e}")))?;
    let deadline = Instant::now() + STOP_WAIT;
    loop {
        let status = runtime.status(server_id);
        if status.players > 0 {
            return Err(failed("players joined while the server was stopping; restore refused"));
        }
        if matches!(status.phase, Phase::Sleeping | Phase::Unknown | Phase::Failed) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(failed("the server did not stop in time; nothing was changed"));
        }
        tokio::time::sleep(STOP_POLL).await;
    }
}

async fn remove_dir_quietly(path: &std::path::Path) {
    if let Err(e) = tokio::fs::remove_dir_all(path).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "could not remove a staging directory");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_cleans_only_our_scratch_files() {
        let root = std::env::temp_dir().join(format!("respawn-backup-scratch-{}", new_id("t")));
        let config =
            BackupConfig { local_dir: root.join("store"), work_dir: root.join("work"), ..BackupConfig::default() };
        let backups = Backups::new(&config).expect("service");
        for name in ["bkp_1.tar.zst", "rst_2.tar.zst", "notes.txt", "bkp_3.tar"] {
            std::fs::write(config.work_dir.join(name), b"x").expect("write");
        }
        assert_eq!(backups.clean_scratch(), 2);
        let mut left: Vec<String> = std::fs::read_dir(&config.work_dir)
            .expect("ls")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        left.sort();
        assert_eq!(left, ["bkp_3.tar", "notes.txt"]);
        assert!(config.local_dir.is_dir(), "the local store is created");
        let _ = std::fs::remove_dir_all(root);
    }
}
