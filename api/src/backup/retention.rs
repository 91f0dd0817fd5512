//! Which backups are kept: each server's `keep_last`, applying it after a
//! backup, and deleting a backup (row, then archive).

use super::{BackupError, Backups};
use crate::AppState;
use crate::store::backups::{self as rows, Backup};

impl Backups {
    /// The server's retention: its own policy or the configured default.
    pub async fn keep_last(&self, state: &AppState, server_id: &str) -> Result<u32, BackupError> {
        Ok(rows::keep_last(&state.db, server_id).await?.unwrap_or(self.default_keep_last))
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
) -> Result<u32, BackupError> {
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
pub async fn remove_backup(state: &AppState, backup: &Backup, force: bool) -> Result<bool, BackupError> {
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
