//! Restoring a backup: the queued row, and the job that takes a safety
//! backup, fetches and checks the archive, extracts it beside the data
//! directory, stops the server and swaps the directories.

use std::path::PathBuf;
use std::time::Instant;

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::job::{queued_backup, record_failure, take};
use super::{BackupError, JobError, STOP_POLL, STOP_WAIT, archive, failed, remove_quietly};
use crate::AppState;
use crate::db::{new_id, now_ms};
use crate::runtime::{Phase, ServerRuntime};
use crate::store::backups::{self as rows, Backup, BackupKind, JobStatus, Restore};

/// Records a queued restore of `backup` and starts its job. The caller
/// checked ownership, that the backup succeeded and that nobody plays.
pub async fn start_restore(state: &AppState, backup: &Backup) -> Result<Restore, BackupError> {
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
    // The server and plan store modules still answer with the HTTP error
    // type: log its cause here, the job only says the database failed.
    let lookup_failed = |what: &str, e: crate::error::ApiError| {
        tracing::warn!(restore = %job.id, server = %job.server_id, error = ?e, "reading the {what} failed");
        JobError::Lookup
    };
    let server = crate::store::servers::get(&state.db, &job.tenant_id, &job.server_id)
        .await
        .map_err(|e| lookup_failed("server", e))?
        .ok_or_else(|| failed("the server was deleted"))?;
    let plan = crate::store::plans::get(&state.db, &server.plan_id)
        .await
        .map_err(|e| lookup_failed("plan", e))?
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
