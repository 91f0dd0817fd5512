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
//!
//! This module owns the shared [`Backups`] service (storage, scratch
//! directory, workers, per-server turns) and the errors; taking a backup is
//! in `job`, restoring one in `restore`, and what is kept in `retention`.

pub mod archive;
mod job;
mod restore;
mod retention;
pub mod storage;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};

use crate::config::BackupConfig;
use crate::store::StoreError;
pub use job::start_backup;
pub use restore::start_restore;
pub use retention::{enforce_retention, remove_backup};
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

/// The backup service every handler and job shares (inside [`crate::AppState`]).
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

/// Why a call into the backup service failed (the handlers turn it into a
/// response; see `impl From<BackupError> for ApiError`). What goes wrong
/// inside a job is a [`JobError`], recorded on the job instead.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a job failed: said in the job's `error` field, so it is written for
/// the tenant (no internal paths beyond the archive's own entries).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{0}")]
    Failed(String),
    #[error("the database failed")]
    Store(#[from] StoreError),
    /// Reading the server or its plan failed. Those store modules still
    /// answer with the HTTP error type, so the cause is logged where it is
    /// caught and the tenant is told the same as for [`JobError::Store`].
    #[error("the database failed")]
    Lookup,
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

/// Removes a scratch archive once a job is done with it.
async fn remove_quietly(path: &std::path::Path) {
    if let Err(e) = tokio::fs::remove_file(path).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "could not remove a scratch archive");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::new_id;

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
