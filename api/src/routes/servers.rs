//! `/v1/servers`: a tenant's servers. Every handler takes the caller's tenant
//! id and passes it to the store, so another tenant's server is simply not
//! found (404, the same answer as for an id that never existed).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::page_bounds;
use crate::AppState;
use crate::auth::Tenant;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiQuery};
use crate::runtime::{LogLine, LogQuery, Phase, RuntimeError, ServerStatus};
use crate::store::servers::{self, NewServer, ServerPatch, ServerRecord};
use crate::store::{Page, encode_cursor};

/// Log lines returned by default and at most.
pub const DEFAULT_LOG_TAIL: usize = 100;
pub const MAX_LOG_TAIL: usize = 5000;
/// Rows a filtered list reads per request at most; past this it returns a
/// short page with a cursor, so a rare phase cannot make one request scan a
/// tenant's whole table.
const MAX_SCANNED_PER_PAGE: usize = 2000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_server, list_servers))
        .routes(routes!(get_server, update_server, delete_server))
        .routes(routes!(start_server))
        .routes(routes!(stop_server))
        .routes(routes!(server_logs))
}

/// A server: its stored definition and its live status from the runtime.
#[derive(Debug, Serialize, ToSchema)]
pub struct Server {
    #[serde(flatten)]
    pub definition: ServerRecord,
    pub status: ServerStatus,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ServerListQuery {
    /// Items per page (1–500, default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only servers in this phase.
    #[param(inline)]
    pub phase: Option<Phase>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// The last N lines (1–5000, default 100).
    pub tail: Option<usize>,
    /// Only lines written at or after this time (unix milliseconds).
    pub since_ms: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteServerQuery {
    /// Leave the server's backups in the object store (default: delete them,
    /// locked ones included).
    pub keep_backups: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Logs {
    pub lines: Vec<LogLine>,
}

fn with_status(state: &AppState, definition: ServerRecord) -> Server {
    let status = state.runtime.status(&definition.id);
    Server { definition, status }
}

fn runtime_error(e: RuntimeError) -> ApiError {
    match e {
        RuntimeError::Unavailable(why) => ApiError::Unavailable(why),
    }
}

/// Tells the runtime about a stored definition. The database already holds
/// it, so a failure is logged (and healed by the re-apply on startup) rather
/// than failing a request whose change did happen.
pub(super) async fn apply(state: &AppState, record: &ServerRecord) {
    let result = match servers::spec(&state.db, record).await {
        Ok(spec) => state.runtime.apply(&spec).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(error) = result {
        tracing::warn!(server = %record.id, %error, "could not apply the server to the runtime");
    }
}

pub(super) async fn owned(state: &AppState, tenant: &str, id: &str) -> ApiResult<ServerRecord> {
    servers::get(&state.db, tenant, id).await?.ok_or(ApiError::NotFound("server"))
}

/// Create a server.
#[utoipa::path(post, path = "/v1/servers", tag = "servers", request_body = NewServer, responses(
    (status = 201, body = Server), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 409, description = "name or hostname taken; `field` names it", body = ErrorBody),
    (status = 422, body = ErrorBody),
))]
async fn create_server(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewServer>,
) -> ApiResult<(StatusCode, Json<Server>)> {
    let record = servers::create(&state.db, &tenant, body).await?;
    apply(&state, &record).await;
    Ok((StatusCode::CREATED, Json(with_status(&state, record))))
}

/// List the tenant's servers, oldest first.
#[utoipa::path(get, path = "/v1/servers", tag = "servers", params(ServerListQuery), responses(
    (status = 200, body = Page<Server>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
))]
async fn list_servers(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ServerListQuery>,
) -> ApiResult<Json<Page<Server>>> {
    let (after, limit) = page_bounds(q.limit, q.cursor.as_deref())?;
    Ok(Json(list_page(&state, &tenant, after, limit as usize, q.phase).await?))
}

/// One page of servers. The phase lives in the runtime, not the database, so
/// a filtered page reads rows in id order and keeps the matching ones until
/// the page is full (one extra match proves there is a next page), the table
/// ends, or [`MAX_SCANNED_PER_PAGE`] rows were read.
async fn list_page(
    state: &AppState,
    tenant: &str,
    mut after: String,
    limit: usize,
    phase: Option<Phase>,
) -> ApiResult<Page<Server>> {
    let batch = if phase.is_some() { 200 } else { limit + 1 };
    let mut items: Vec<Server> = Vec::with_capacity(limit);
    let mut scanned = 0;
    loop {
        let rows = servers::list(&state.db, tenant, &after, batch as u32).await?;
        let end_of_table = rows.len() < batch;
        for record in rows {
            let server = with_status(state, record);
            if phase.is_some_and(|p| p != server.status.phase) {
                after = server.definition.id;
                scanned += 1;
                continue;
            }
            if items.len() == limit {
                let next_cursor = items.last().map(|s| encode_cursor(&s.definition.id));
                return Ok(Page { items, next_cursor });
            }
            after = server.definition.id.clone();
            scanned += 1;
            items.push(server);
        }
        if end_of_table {
            return Ok(Page { items, next_cursor: None });
        }
        if scanned >= MAX_SCANNED_PER_PAGE {
            return Ok(Page { items, next_cursor: Some(encode_cursor(&after)) });
        }
    }
}

/// Get a server with its live status.
#[utoipa::path(get, path = "/v1/servers/{id}", tag = "servers", params(("id" = String, Path)), responses(
    (status = 200, body = Server), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
))]
async fn get_server(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Server>> {
    Ok(Json(with_status(&state, owned(&state, &tenant, &id).await?)))
}

/// Change a server.
#[utoipa::path(patch, path = "/v1/servers/{id}", tag = "servers", params(("id" = String, Path)),
    request_body = ServerPatch, responses(
    (status = 200, body = Server), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
))]
async fn update_server(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ServerPatch>,
) -> ApiResult<Json<Server>> {
    let record = servers::update(&state.db, &tenant, &id, body).await?;
    apply(&state, &record).await;
    Ok(Json(with_status(&state, record)))
}

/// Delete a server with its backups (unless `keep_backups=true`); its world
/// data is left to the runtime's retention.
#[utoipa::path(delete, path = "/v1/servers/{id}", tag = "servers", params(("id" = String, Path), DeleteServerQuery),
    responses(
    (status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
))]
async fn delete_server(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DeleteServerQuery>,
) -> ApiResult<StatusCode> {
    if !servers::delete(&state.db, &tenant, &id).await? {
        return Err(ApiError::NotFound("server"));
    }
    if !q.keep_backups.unwrap_or(false) {
        for backup in crate::store::backups::all_of_server(&state.db, &tenant, &id).await? {
            crate::backup::remove_backup(&state, &backup, true).await?;
        }
        crate::store::backups::forget_server(&state.db, &id).await?;
    }
    if let Err(error) = state.runtime.remove(&id).await {
        tracing::warn!(server = %id, %error, "could not remove the server from the runtime");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Wake a server. Returns once the start is requested, not when it runs:
/// poll `GET /v1/servers/{id}` for the phase.
#[utoipa::path(post, path = "/v1/servers/{id}/start", tag = "servers", params(("id" = String, Path)), responses(
    (status = 202, body = Server), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 503, body = ErrorBody),
))]
async fn start_server(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Server>)> {
    let record = owned(&state, &tenant, &id).await?;
    state.runtime.wake(&record.id).await.map_err(runtime_error)?;
    Ok((StatusCode::ACCEPTED, Json(with_status(&state, record))))
}

/// Hibernate a server (graceful stop, even with players on).
#[utoipa::path(post, path = "/v1/servers/{id}/stop", tag = "servers", params(("id" = String, Path)), responses(
    (status = 202, body = Server), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 503, body = ErrorBody),
))]
async fn stop_server(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Server>)> {
    let record = owned(&state, &tenant, &id).await?;
    state.runtime.hibernate(&record.id).await.map_err(runtime_error)?;
    Ok((StatusCode::ACCEPTED, Json(with_status(&state, record))))
}

/// Recent console lines, oldest first.
#[utoipa::path(get, path = "/v1/servers/{id}/logs", tag = "servers", params(("id" = String, Path), LogsQuery),
    responses(
    (status = 200, body = Logs), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
))]
async fn server_logs(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> ApiResult<Json<Logs>> {
    let tail = q.tail.unwrap_or(DEFAULT_LOG_TAIL);
    if !(1..=MAX_LOG_TAIL).contains(&tail) {
        return Err(ApiError::BadRequest {
            code: "invalid_query",
            message: format!("tail must be between 1 and {MAX_LOG_TAIL}"),
            field: Some("tail".into()),
        });
    }
    let record = owned(&state, &tenant, &id).await?;
    let lines = state.runtime.logs(&record.id, LogQuery { tail, since_ms: q.since_ms }).await.map_err(runtime_error)?;
    Ok(Json(Logs { lines }))
}
