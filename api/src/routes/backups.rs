//! `/v1/servers/{id}/backups`, `/restores` and `/backup-policy`: a tenant's
//! backups of one server. Each handler first proves the caller owns the
//! server (404 otherwise, as for every server route), then finds the backup
//! by tenant, server and id, so ids of other tenants' backups are not found.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::servers::owned;
use super::{PageQuery, page_bounds};
use crate::AppState;
use crate::auth::Tenant;
use crate::backup;
use crate::config::MAX_BACKUP_KEEP_LAST;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, OptionalJson};
use crate::store::backups::{self as rows, Backup, JobStatus, Restore};
use crate::store::{Page, encode_cursor};

/// Longest note on a backup.
pub const MAX_NOTE_CHARS: usize = 200;
/// Backups of one server queued or running at once: one running and one
/// waiting is all a tenant needs; more would only pile up background work.
pub const MAX_PENDING_BACKUPS: u32 = 2;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_backup, list_backups))
        .routes(routes!(get_backup, delete_backup))
        .routes(routes!(download_backup))
        .routes(routes!(lock_backup))
        .routes(routes!(unlock_backup))
        .routes(routes!(restore_backup))
        .routes(routes!(get_restore))
        .routes(routes!(get_backup_policy, put_backup_policy))
}

/// Body of `POST /v1/servers/{id}/backups`; may be left out.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBackup {
    /// Up to 200 characters, for people (`before the 1.21 upgrade`).
    pub note: Option<String>,
}

/// A server's retention.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupPolicy {
    /// Keep the newest N succeeded backups (0–1000; 0 keeps all). Locked
    /// backups are kept on top and never count out. Applied after each
    /// successful backup.
    pub keep_last: u32,
}

fn not_ready(backup: &Backup) -> ApiError {
    ApiError::Conflict {
        code: "backup_not_ready",
        message: format!("the backup is {}, not succeeded", backup.status.as_str()),
        field: None,
    }
}

async fn owned_backup(state: &AppState, tenant: &str, server_id: &str, backup_id: &str) -> ApiResult<Backup> {
    owned(state, tenant, server_id).await?;
    rows::get(&state.db, tenant, server_id, backup_id).await?.ok_or(ApiError::NotFound("backup"))
}

/// Start a backup. Returns at once with the queued backup: poll
/// `GET …/backups/{backup_id}` until `status` is `succeeded` or `failed`.
#[utoipa::path(post, path = "/v1/servers/{id}/backups", tag = "backups", params(("id" = String, Path)),
    request_body(content = NewBackup, description = "optional"), responses(
    (status = 202, body = Backup), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, description = "`backup_pending`: two backups of it are already queued or running", body = ErrorBody),
    (status = 422, body = ErrorBody),
))]
async fn create_backup(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<NewBackup>,
) -> ApiResult<(StatusCode, Json<Backup>)> {
    if let Some(note) = &body.note
        && (note.chars().count() > MAX_NOTE_CHARS || note.chars().any(char::is_control))
    {
        return Err(ApiError::invalid("note", "at most 200 characters, without control characters"));
    }
    let server = owned(&state, &tenant, &id).await?;
    if rows::pending(&state.db, &server.id).await?.0 >= MAX_PENDING_BACKUPS {
        return Err(ApiError::Conflict {
            code: "backup_pending",
            message: "a backup of this server is already running and another is queued; wait for them".into(),
            field: None,
        });
    }
    let backup = backup::start_backup(&state, &tenant, &server.id, body.note).await?;
    Ok((StatusCode::ACCEPTED, Json(backup)))
}

/// List the server's backups, oldest first.
#[utoipa::path(get, path = "/v1/servers/{id}/backups", tag = "backups", params(("id" = String, Path), PageQuery),
    responses(
    (status = 200, body = Page<Backup>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody),
))]
async fn list_backups(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<Backup>>> {
    let (after, limit) = page_bounds(q.limit, q.cursor.as_deref())?;
    let server = owned(&state, &tenant, &id).await?;
    let mut items = rows::list(&state.db, &tenant, &server.id, &after, limit + 1).await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|b| encode_cursor(&b.id))
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}

/// Get a backup (poll this for its status).
#[utoipa::path(get, path = "/v1/servers/{id}/backups/{backup_id}", tag = "backups",
    params(("id" = String, Path), ("backup_id" = String, Path)), responses(
    (status = 200, body = Backup), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
))]
async fn get_backup(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path((id, backup_id)): Path<(String, String)>,
) -> ApiResult<Json<Backup>> {
    Ok(Json(owned_backup(&state, &tenant, &id, &backup_id).await?))
}

/// Delete a backup and its archive. Locked backups, backups still being
/// made and backups a restore is reading are refused with 409.
#[utoipa::path(delete, path = "/v1/servers/{id}/backups/{backup_id}", tag = "backups",
    params(("id" = String, Path), ("backup_id" = String, Path)), responses(
    (status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, description = "`backup_locked`, `backup_in_progress` or `backup_in_use`", body = ErrorBody),
))]
async fn delete_backup(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path((id, backup_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let found = owned_backup(&state, &tenant, &id, &backup_id).await?;
    let locked = || ApiError::Conflict {
        code: "backup_locked",
        message: "the backup is locked; unlock it first".into(),
        field: None,
    };
    if found.locked {
        return Err(locked());
    }
    if !found.status.is_done() {
        return Err(ApiError::Conflict {
            code: "backup_in_progress",
            message: "the backup is still being made; delete it once it has finished".into(),
            field: None,
        });
    }
    if rows::in_use_by_restore(&state.db, &found.id).await? {
        return Err(ApiError::Conflict {
            code: "backup_in_use",
            message: "a restore is reading this backup".into(),
            field: None,
        });
    }
    if !backup::remove_backup(&state, &found, false).await? {
        return Err(locked());
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Download the archive: a zstd-compressed tar of the data directory
/// (`tar --zstd -xf`), streamed. `x-checksum-sha256` is its SHA-256.
#[utoipa::path(get, path = "/v1/servers/{id}/backups/{backup_id}/download", tag = "backups",
    params(("id" = String, Path), ("backup_id" = String, Path)), responses(
    (status = 200, description = "The archive", content_type = "application/zstd"),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, description = "`backup_not_ready`", body = ErrorBody),
))]
async fn download_backup(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path((id, backup_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let found = owned_backup(&state, &tenant, &id, &backup_id).await?;
    let (Some(key), JobStatus::Succeeded) = (found.object_key.as_deref(), found.status) else {
        return Err(not_ready(&found));
    };
    let (size, stream) = state.backups.storage.get_sized(key).await.map_err(|e| {
        ApiError::Internal(anyhow::Error::new(e).context(format!("reading the archive of backup {}", found.id)))
    })?;
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/zstd"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    // Ids are `bkp_` + hex: safe inside the quoted filename.
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}.tar.zst\"", found.id)) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Some(Ok(v)) = found.sha256.as_deref().map(HeaderValue::from_str) {
        headers.insert("x-checksum-sha256", v);
    }
    Ok(response)
}

async fn set_lock(state: &AppState, tenant: &str, id: &str, backup_id: &str, locked: bool) -> ApiResult<Json<Backup>> {
    owned(state, tenant, id).await?;
    let backup = rows::set_locked(&state.db, tenant, id, backup_id, locked).await?;
    Ok(Json(backup.ok_or(ApiError::NotFound("backup"))?))
}

/// Lock a backup: retention and `DELETE` leave it alone until it is unlocked.
#[utoipa::path(post, path = "/v1/servers/{id}/backups/{backup_id}/lock", tag = "backups",
    params(("id" = String, Path), ("backup_id" = String, Path)), responses(
    (status = 200, body = Backup), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
))]
async fn lock_backup(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path((id, backup_id)): Path<(String, String)>,
) -> ApiResult<Json<Backup>> {
    set_lock(&state, &tenant, &id, &backup_id, true).await
}

/// Unlock a backup (retention may then remove it after the next backup).
#[utoipa::path(post, path = "/v1/servers/{id}/backups/{backup_id}/unlock", tag = "backups",
    params(("id" = String, Path), ("backup_id" = String, Path)), responses(
    (status = 200, body = Backup), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
))]
async fn unlock_backup(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path((id, backup_id)): Path<(String, String)>,
) -> ApiResult<Json<Backup>> {
    set_lock(&state, &tenant, &id, &backup_id, false).await
}

/// Restore a backup onto its server. Refused (409 `players_online`) while
/// players are on. The job first takes a safety backup of the current data,
/// then extracts the archive beside the data directory (refusing absolute
/// paths, `..` and links out of it), stops the server if it runs and swaps
/// the directories. The server is left hibernated. Poll
/// `GET /v1/servers/{id}/restores/{restore_id}`.
#[utoipa::path(post, path = "/v1/servers/{id}/backups/{backup_id}/restore", tag = "backups",
    params(("id" = String, Path), ("backup_id" = String, Path)), responses(
    (status = 202, body = Restore), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, description = "`players_online`, `backup_not_ready` or `restore_pending`", body = ErrorBody),
))]
async fn restore_backup(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path((id, backup_id)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<Restore>)> {
    let found = owned_backup(&state, &tenant, &id, &backup_id).await?;
    if found.status != JobStatus::Succeeded {
        return Err(not_ready(&found));
    }
    let players = state.runtime.status(&id).players;
    if players > 0 {
        return Err(ApiError::Conflict {
            code: "players_online",
            message: format!("{players} players are online; restore when the server is empty"),
            field: None,
        });
    }
    if rows::pending(&state.db, &found.server_id).await?.1 > 0 {
        return Err(ApiError::Conflict {
            code: "restore_pending",
            message: "a restore of this server is already queued or running".into(),
            field: None,
        });
    }
    let restore = backup::start_restore(&state, &found).await?;
    Ok((StatusCode::ACCEPTED, Json(restore)))
}

/// Get a restore (poll this for its status).
#[utoipa::path(get, path = "/v1/servers/{id}/restores/{restore_id}", tag = "backups",
    params(("id" = String, Path), ("restore_id" = String, Path)), responses(
    (status = 200, body = Restore), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
))]
async fn get_restore(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path((id, restore_id)): Path<(String, String)>,
) -> ApiResult<Json<Restore>> {
    owned(&state, &tenant, &id).await?;
    let restore = rows::get_restore(&state.db, &tenant, &id, &restore_id).await?;
    Ok(Json(restore.ok_or(ApiError::NotFound("restore"))?))
}

/// The server's retention (the configured default until it sets one).
#[utoipa::path(get, path = "/v1/servers/{id}/backup-policy", tag = "backups", params(("id" = String, Path)),
    responses(
    (status = 200, body = BackupPolicy), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
))]
async fn get_backup_policy(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<BackupPolicy>> {
    let server = owned(&state, &tenant, &id).await?;
    Ok(Json(BackupPolicy { keep_last: state.backups.keep_last(&state, &server.id).await? }))
}

/// Set the server's retention. It applies from the next successful backup.
#[utoipa::path(put, path = "/v1/servers/{id}/backup-policy", tag = "backups", params(("id" = String, Path)),
    request_body = BackupPolicy, responses(
    (status = 200, body = BackupPolicy), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 422, body = ErrorBody),
))]
async fn put_backup_policy(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<BackupPolicy>,
) -> ApiResult<Json<BackupPolicy>> {
    let server = owned(&state, &tenant, &id).await?;
    if body.keep_last > MAX_BACKUP_KEEP_LAST {
        return Err(ApiError::invalid("keep_last", format!("must be between 0 and {MAX_BACKUP_KEEP_LAST}")));
    }
    rows::set_keep_last(&state.db, &server.id, body.keep_last).await?;
    Ok(Json(body))
}
