//! `/v1/plugins` (the admin catalogue, readable by all) and
//! `/v1/servers/{id}/plugins` (a tenant's installs, scoped like every server
//! route: another tenant's server is 404).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::page_bounds;
use super::servers::{apply, owned};
use crate::AppState;
use crate::auth::{Admin, Caller, Tenant};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiQuery};
use crate::store::plugins::{self, Install, NewPlugin, Plugin};
use crate::store::{Page, encode_cursor};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_plugins, create_plugin))
        .routes(routes!(get_plugin, delete_plugin))
        .routes(routes!(list_installs, install_plugin))
        .routes(routes!(uninstall_plugin))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PluginListQuery {
    /// Items per page (1–500, default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only versions of this plugin.
    pub name: Option<String>,
}

/// Body of `POST /v1/servers/{id}/plugins`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInstall {
    /// A catalogue entry; replaces another installed version of the same plugin.
    pub plugin_id: String,
}

/// List the catalogue.
#[utoipa::path(get, path = "/v1/plugins", tag = "plugins", params(PluginListQuery), responses(
    (status = 200, body = Page<Plugin>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
))]
async fn list_plugins(
    _: Caller,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<PluginListQuery>,
) -> ApiResult<Json<Page<Plugin>>> {
    let (after, limit) = page_bounds(q.limit, q.cursor.as_deref())?;
    let mut items = plugins::list(&state.db, q.name.as_deref(), &after, limit + 1).await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|p| encode_cursor(&p.id))
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}

/// Add a plugin build to the catalogue.
#[utoipa::path(post, path = "/v1/plugins", tag = "plugins", request_body = NewPlugin, responses(
    (status = 201, body = Plugin), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 409, description = "this name and version exist", body = ErrorBody), (status = 422, body = ErrorBody),
))]
async fn create_plugin(
    _: Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewPlugin>,
) -> ApiResult<(StatusCode, Json<Plugin>)> {
    Ok((StatusCode::CREATED, Json(plugins::create(&state.db, body).await?)))
}

/// Get a catalogue entry.
#[utoipa::path(get, path = "/v1/plugins/{id}", tag = "plugins", params(("id" = String, Path)), responses(
    (status = 200, body = Plugin), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
))]
async fn get_plugin(_: Caller, State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Plugin>> {
    plugins::get(&state.db, &id).await?.map(Json).ok_or(ApiError::NotFound("plugin"))
}

/// Remove a catalogue entry no server has installed.
#[utoipa::path(delete, path = "/v1/plugins/{id}", tag = "plugins", params(("id" = String, Path)), responses(
    (status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 409, description = "installed somewhere", body = ErrorBody),
))]
async fn delete_plugin(_: Admin, State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    plugins::delete(&state.db, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The plugins installed on a server.
#[utoipa::path(get, path = "/v1/servers/{id}/plugins", tag = "plugins", params(("id" = String, Path)), responses(
    (status = 200, body = Page<Install>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
))]
async fn list_installs(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Page<Install>>> {
    let server = owned(&state, &tenant, &id).await?;
    Ok(Json(Page { items: plugins::installed(&state.db, &server.id).await?, next_cursor: None }))
}

/// Install a plugin on a server (replacing another version of it). The
/// runtime downloads and verifies it before the server next starts.
#[utoipa::path(post, path = "/v1/servers/{id}/plugins", tag = "plugins", params(("id" = String, Path)),
    request_body = NewInstall, responses(
    (status = 201, body = Install), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 422, description = "no such plugin, or not built for this Minecraft version", body = ErrorBody),
))]
async fn install_plugin(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NewInstall>,
) -> ApiResult<(StatusCode, Json<Install>)> {
    let server = owned(&state, &tenant, &id).await?;
    let plugin = plugins::get(&state.db, &body.plugin_id)
        .await?
        .ok_or_else(|| ApiError::invalid("plugin_id", format!("there is no plugin `{}`", body.plugin_id)))?;
    let version = &server.minecraft.version;
    if !plugin.minecraft_versions.is_empty() && !plugin.minecraft_versions.iter().any(|v| v == version) {
        return Err(ApiError::invalid(
            "plugin_id",
            format!("{} {} is not built for Minecraft {version}", plugin.name, plugin.version),
        ));
    }
    let install = plugins::install(&state.db, &server.id, &plugin).await?;
    apply(&state, &server).await;
    Ok((StatusCode::CREATED, Json(install)))
}

/// Remove a plugin from a server (the runtime deletes the jar it placed).
#[utoipa::path(delete, path = "/v1/servers/{id}/plugins/{plugin_id}", tag = "plugins",
    params(("id" = String, Path), ("plugin_id" = String, Path)), responses(
    (status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
))]
async fn uninstall_plugin(
    Tenant(tenant): Tenant,
    State(state): State<AppState>,
    Path((id, plugin_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let server = owned(&state, &tenant, &id).await?;
    if !plugins::uninstall(&state.db, &server.id, &plugin_id).await? {
        return Err(ApiError::NotFound("plugin"));
    }
    apply(&state, &server).await;
    Ok(StatusCode::NO_CONTENT)
}
