//! `/v1/tenants`: tenants and their tokens. Admin only.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{PageQuery, page_bounds};
use crate::AppState;
use crate::auth::Admin;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiQuery};
use crate::store::tenants::Tenant;
use crate::store::tokens::{CreatedToken, TokenInfo};
use crate::store::{Page, encode_cursor, tenants, tokens};
use crate::validate;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_tenant, list_tenants))
        .routes(routes!(get_tenant))
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// Unique; 1–63 of `a-z0-9-`.
    pub name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// What the token is for (`ci`, `dashboard`); 1–100 characters.
    pub name: String,
}

/// Create a tenant.
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = NewTenant, responses(
    (status = 201, body = Tenant),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 409, description = "name taken", body = ErrorBody), (status = 422, body = ErrorBody),
))]
async fn create_tenant(
    _: Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewTenant>,
) -> ApiResult<(StatusCode, Json<Tenant>)> {
    validate::name("name", &body.name)?;
    Ok((StatusCode::CREATED, Json(tenants::create(&state.db, &body.name).await?)))
}

/// List tenants.
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", params(PageQuery), responses(
    (status = 200, body = Page<Tenant>), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
))]
async fn list_tenants(
    _: Admin,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<Tenant>>> {
    let (after, limit) = page_bounds(q.limit, q.cursor.as_deref())?;
    // One extra row tells whether another page exists.
    let mut items = tenants::list(&state.db, &after, limit + 1).await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|t| encode_cursor(&t.id))
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}

/// Get a tenant.
#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "tenants", params(("id" = String, Path)), responses(
    (status = 200, body = Tenant), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
))]
async fn get_tenant(_: Admin, State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Tenant>> {
    tenants::get(&state.db, &id).await?.map(Json).ok_or(ApiError::NotFound("tenant"))
}

/// Create an API token for a tenant. The token is in this answer only.
#[utoipa::path(post, path = "/v1/tenants/{id}/tokens", tag = "tenants", params(("id" = String, Path)),
    request_body = NewToken, responses(
    (status = 201, body = CreatedToken), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
))]
async fn create_token(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NewToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid("name", "must be 1 to 100 characters on one line"));
    }
    tenants::get(&state.db, &id).await?.ok_or(ApiError::NotFound("tenant"))?;
    Ok((StatusCode::CREATED, Json(tokens::create(&state.db, &id, name).await?)))
}

/// List a tenant's live tokens (never the secrets).
#[utoipa::path(get, path = "/v1/tenants/{id}/tokens", tag = "tenants", params(("id" = String, Path)), responses(
    (status = 200, body = Page<TokenInfo>), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
))]
async fn list_tokens(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Page<TokenInfo>>> {
    tenants::get(&state.db, &id).await?.ok_or(ApiError::NotFound("tenant"))?;
    Ok(Json(Page { items: tokens::list(&state.db, &id).await?, next_cursor: None }))
}

/// Revoke a token: it stops working at once.
#[utoipa::path(delete, path = "/v1/tenants/{id}/tokens/{token_id}", tag = "tenants",
    params(("id" = String, Path), ("token_id" = String, Path)), responses(
    (status = 204), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
))]
async fn revoke_token(
    _: Admin,
    State(state): State<AppState>,
    Path((id, token_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    if tokens::revoke(&state.db, &id, &token_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("token"))
    }
}
