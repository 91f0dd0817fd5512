//! Backup and restore job rows and each server's retention. Handler-facing
//! reads take the tenant and the server id, so another tenant's backup is not
//! found; the background jobs address rows by id (they were created scoped).

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;
use utoipa::ToSchema;

use super::{StoreError, read_u32};
use crate::db::{Db, now_ms};

/// Where a backup or restore job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for the server's previous job or a free worker.
    Queued,
    Running,
    Succeeded,
    /// See `error`.
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<JobStatus, StoreError> {
        match s {
            "queued" => Ok(JobStatus::Queued),
            "running" => Ok(JobStatus::Running),
            "succeeded" => Ok(JobStatus::Succeeded),
            "failed" => Ok(JobStatus::Failed),
            other => Err(StoreError::Corrupt(format!("unknown job status in database: {other}"))),
        }
    }

    pub fn is_done(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed)
    }
}

/// Why a backup was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    /// Asked for through the API.
    Manual,
    /// Taken by a restore just before it replaced the data.
    Safety,
}

impl BackupKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Manual => "manual",
            BackupKind::Safety => "safety",
        }
    }

    fn parse(s: &str) -> Result<BackupKind, StoreError> {
        match s {
            "manual" => Ok(BackupKind::Manual),
            "safety" => Ok(BackupKind::Safety),
            other => Err(StoreError::Corrupt(format!("unknown backup kind in database: {other}"))),
        }
    }
}

/// A backup of one server's data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Backup {
    pub id: String,
    pub server_id: String,
    pub kind: BackupKind,
    pub status: JobStatus,
    /// Locked backups are never removed by retention or `DELETE`.
    pub locked: bool,
    pub note: Option<String>,
    /// Size of the compressed archive, once it succeeded.
    pub size_bytes: Option<u64>,
    /// Lower-case hex SHA-256 of the archive, once it succeeded.
    pub sha256: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    #[serde(skip)]
    pub tenant_id: String,
    #[serde(skip)]
    pub object_key: Option<String>,
}

/// A restore of a backup onto its server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Restore {
    pub id: String,
    pub server_id: String,
    pub backup_id: String,
    pub status: JobStatus,
    /// The backup of the data as it was just before the restore replaced it.
    pub safety_backup_id: Option<String>,
    pub error: Option<String>,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    #[serde(skip)]
    pub tenant_id: String,
}

const COLUMNS: &str = "id, tenant_id, server_id, kind, status, locked, note, object_key, size_bytes, sha256, error, \
                       created_at_ms, started_at_ms, finished_at_ms";

fn from_row(row: &AnyRow) -> Result<Backup, StoreError> {
    let kind: String = row.try_get("kind")?;
    let status: String = row.try_get("status")?;
    let locked: i64 = row.try_get("locked")?;
    let size: Option<i64> = row.try_get("size_bytes")?;
    Ok(Backup {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        server_id: row.try_get("server_id")?,
        kind: BackupKind::parse(&kind)?,
        status: JobStatus::parse(&status)?,
        locked: locked != 0,
        note: row.try_get("note")?,
        object_key: row.try_get("object_key")?,
        size_bytes: size.map(|s| s.max(0) as u64),
        sha256: row.try_get("sha256")?,
        error: row.try_get("error")?,
        created_at_ms: row.try_get("created_at_ms")?,
        started_at_ms: row.try_get("started_at_ms")?,
        finished_at_ms: row.try_get("finished_at_ms")?,
    })
}

pub async fn insert(db: &Db, b: &Backup) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO backups ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    ))
    .bind(&b.id)
    .bind(&b.tenant_id)
    .bind(&b.server_id)
    .bind(b.kind.as_str())
    .bind(b.status.as_str())
    .bind(i64::from(b.locked))
    .bind(b.note.clone())
    .bind(b.object_key.clone())
    .bind(b.size_bytes.map(|s| s as i64))
    .bind(b.sha256.clone())
    .bind(b.error.clone())
    .bind(b.created_at_ms)
    .bind(b.started_at_ms)
    .bind(b.finished_at_ms)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// The tenant's backup `id` of server `server_id`; `None` for anyone else's.
pub async fn get(db: &Db, tenant_id: &str, server_id: &str, id: &str) -> Result<Option<Backup>, StoreError> {
    let row =
        sqlx::query(&format!("SELECT {COLUMNS} FROM backups WHERE id = $1 AND tenant_id = $2 AND server_id = $3"))
            .bind(id)
            .bind(tenant_id)
            .bind(server_id)
            .fetch_optional(&db.pool)
            .await?;
    row.as_ref().map(from_row).transpose()
}

/// A backup by id alone, for the background jobs.
pub async fn by_id(db: &Db, id: &str) -> Result<Option<Backup>, StoreError> {
    let row =
        sqlx::query(&format!("SELECT {COLUMNS} FROM backups WHERE id = $1")).bind(id).fetch_optional(&db.pool).await?;
    row.as_ref().map(from_row).transpose()
}

/// The server's backups after `after`, oldest first.
pub async fn list(
    db: &Db,
    tenant_id: &str,
    server_id: &str,
    after: &str,
    limit: u32,
) -> Result<Vec<Backup>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM backups WHERE tenant_id = $1 AND server_id = $2 AND id > $3 ORDER BY id LIMIT $4"
    ))
    .bind(tenant_id)
    .bind(server_id)
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Every backup of a server, any status (to delete them with the server).
pub async fn all_of_server(db: &Db, tenant_id: &str, server_id: &str) -> Result<Vec<Backup>, StoreError> {
    let rows =
        sqlx::query(&format!("SELECT {COLUMNS} FROM backups WHERE tenant_id = $1 AND server_id = $2 ORDER BY id"))
            .bind(tenant_id)
            .bind(server_id)
            .fetch_all(&db.pool)
            .await?;
    rows.iter().map(from_row).collect()
}

pub async fn mark_running(db: &Db, id: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE backups SET status = 'running', started_at_ms = $1 WHERE id = $2")
        .bind(now_ms())
        .bind(id)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// Records where the archive went; the status stays `running` until
/// retention has been applied, so a client that sees `succeeded` also sees
/// the backups retention removed gone.
pub async fn mark_uploaded(
    db: &Db,
    id: &str,
    object_key: &str,
    size_bytes: u64,
    sha256: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE backups SET object_key = $1, size_bytes = $2, sha256 = $3 WHERE id = $4")
        .bind(object_key)
        .bind(size_bytes as i64)
        .bind(sha256)
        .bind(id)
        .execute(&db.pool)
        .await?;
    Ok(())
}

pub async fn mark_succeeded(db: &Db, id: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE backups SET status = 'succeeded', error = NULL, finished_at_ms = $1 WHERE id = $2")
        .bind(now_ms())
        .bind(id)
        .execute(&db.pool)
        .await?;
    Ok(())
}

pub async fn mark_failed(db: &Db, id: &str, error: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE backups SET status = 'failed', error = $1, finished_at_ms = $2 WHERE id = $3")
        .bind(error)
        .bind(now_ms())
        .bind(id)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// Locks or unlocks the tenant's backup; `None` when there is no such backup.
pub async fn set_locked(
    db: &Db,
    tenant_id: &str,
    server_id: &str,
    id: &str,
    locked: bool,
) -> Result<Option<Backup>, StoreError> {
    sqlx::query("UPDATE backups SET locked = $1 WHERE id = $2 AND tenant_id = $3 AND server_id = $4")
        .bind(i64::from(locked))
        .bind(id)
        .bind(tenant_id)
        .bind(server_id)
        .execute(&db.pool)
        .await?;
    get(db, tenant_id, server_id, id).await
}

/// Deletes the row unless it is locked (checked in the same statement, so a
/// concurrent lock wins); true when it was deleted.
pub async fn delete_unlocked(db: &Db, id: &str) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM backups WHERE id = $1 AND locked = 0").bind(id).execute(&db.pool).await?;
    Ok(done.rows_affected() > 0)
}

/// Deletes the row whatever its lock (the server itself is being deleted).
pub async fn delete_any(db: &Db, id: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM backups WHERE id = $1").bind(id).execute(&db.pool).await?;
    Ok(())
}

/// Queued or running jobs of a server: `(backups, restores)`.
pub async fn pending(db: &Db, server_id: &str) -> Result<(u32, u32), StoreError> {
    let mut counts = [0u32; 2];
    for (i, table) in ["backups", "restores"].iter().enumerate() {
        let row = sqlx::query(&format!(
            "SELECT COUNT(*) AS n FROM {table} WHERE server_id = $1 AND status IN ('queued', 'running')"
        ))
        .bind(server_id)
        .fetch_one(&db.pool)
        .await?;
        counts[i] = read_u32(&row, "n")?;
    }
    Ok((counts[0], counts[1]))
}

/// True while a queued or running restore reads this backup.
pub async fn in_use_by_restore(db: &Db, backup_id: &str) -> Result<bool, StoreError> {
    let n: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM restores WHERE backup_id = $1 AND status IN ('queued', 'running')")
            .bind(backup_id)
            .fetch_one(&db.pool)
            .await?
            .try_get("n")?;
    Ok(n > 0)
}

/// The succeeded, unlocked backups of a server beyond the newest `keep`
/// (newest first by id, which is creation order), leaving out any a pending
/// restore reads; `just_made` (uploaded, about to be marked succeeded)
/// counts as succeeded. `keep == 0` keeps everything.
pub async fn beyond_retention(db: &Db, server_id: &str, keep: u32, just_made: &str) -> Result<Vec<Backup>, StoreError> {
    if keep == 0 {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM backups WHERE server_id = $1 AND (status = 'succeeded' OR id = $2) AND locked = 0 \
         AND id NOT IN (SELECT backup_id FROM restores WHERE status IN ('queued', 'running')) \
         ORDER BY id DESC"
    ))
    .bind(server_id)
    .bind(just_made)
    .fetch_all(&db.pool)
    .await?;
    rows.iter().skip(keep as usize).map(from_row).collect()
}

/// Jobs a previous process left queued or running can never finish: mark
/// them failed on startup. Returns how many there were.
pub async fn fail_interrupted(db: &Db) -> Result<u64, StoreError> {
    let now = now_ms();
    let mut n = 0;
    for table in ["backups", "restores"] {
        let done = sqlx::query(&format!(
            "UPDATE {table} SET status = 'failed', error = 'interrupted: the API restarted while it ran', \
             finished_at_ms = $1 WHERE status IN ('queued', 'running')"
        ))
        .bind(now)
        .execute(&db.pool)
        .await?;
        n += done.rows_affected();
    }
    Ok(n)
}

const RESTORE_COLUMNS: &str =
    "id, tenant_id, server_id, backup_id, status, safety_backup_id, error, created_at_ms, finished_at_ms";

fn restore_from_row(row: &AnyRow) -> Result<Restore, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(Restore {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        server_id: row.try_get("server_id")?,
        backup_id: row.try_get("backup_id")?,
        status: JobStatus::parse(&status)?,
        safety_backup_id: row.try_get("safety_backup_id")?,
        error: row.try_get("error")?,
        created_at_ms: row.try_get("created_at_ms")?,
        finished_at_ms: row.try_get("finished_at_ms")?,
    })
}

pub async fn insert_restore(db: &Db, r: &Restore) -> Result<(), StoreError> {
    sqlx::query(&format!("INSERT INTO restores ({RESTORE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"))
        .bind(&r.id)
        .bind(&r.tenant_id)
        .bind(&r.server_id)
        .bind(&r.backup_id)
        .bind(r.status.as_str())
        .bind(r.safety_backup_id.clone())
        .bind(r.error.clone())
        .bind(r.created_at_ms)
        .bind(r.finished_at_ms)
        .execute(&db.pool)
        .await?;
    Ok(())
}

pub async fn get_restore(db: &Db, tenant_id: &str, server_id: &str, id: &str) -> Result<Option<Restore>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {RESTORE_COLUMNS} FROM restores WHERE id = $1 AND tenant_id = $2 AND server_id = $3"
    ))
    .bind(id)
    .bind(tenant_id)
    .bind(server_id)
    .fetch_optional(&db.pool)
    .await?;
    row.as_ref().map(restore_from_row).transpose()
}

pub async fn update_restore(
    db: &Db,
    id: &str,
    status: JobStatus,
    safety_backup_id: Option<&str>,
    error: Option<&str>,
) -> Result<(), StoreError> {
    let finished = status.is_done().then(now_ms);
    sqlx::query(
        "UPDATE restores SET status = $1, safety_backup_id = COALESCE($2, safety_backup_id), error = $3, \
         finished_at_ms = $4 WHERE id = $5",
    )
    .bind(status.as_str())
    .bind(safety_backup_id)
    .bind(error)
    .bind(finished)
    .bind(id)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// The server's own retention, if it set one.
pub async fn keep_last(db: &Db, server_id: &str) -> Result<Option<u32>, StoreError> {
    let row = sqlx::query("SELECT keep_last FROM backup_policies WHERE server_id = $1")
        .bind(server_id)
        .fetch_optional(&db.pool)
        .await?;
    row.map(|r| read_u32(&r, "keep_last")).transpose()
}

pub async fn set_keep_last(db: &Db, server_id: &str, keep_last: u32) -> Result<(), StoreError> {
    // ON CONFLICT … DO UPDATE: SQLite (3.24+) and PostgreSQL spell it alike.
    sqlx::query(
        "INSERT INTO backup_policies (server_id, keep_last, updated_at_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (server_id) DO UPDATE SET keep_last = excluded.keep_last, updated_at_ms = excluded.updated_at_ms",
    )
    .bind(server_id)
    .bind(i64::from(keep_last))
    .bind(now_ms())
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// Forgets a deleted server's restores and policy (its backups go through
/// the object store first, see the backup service).
pub async fn forget_server(db: &Db, server_id: &str) -> Result<(), StoreError> {
    for table in ["restores", "backup_policies"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE server_id = $1")).bind(server_id).execute(&db.pool).await?;
    }
    Ok(())
}
