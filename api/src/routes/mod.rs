//! The HTTP surface: every `/v1` route with its OpenAPI description, plus
//! health, metrics and the OpenAPI document itself.

pub mod backups;
pub mod plans;
pub mod plugins;
pub mod servers;
pub mod system;
pub mod tenants;

use serde::Deserialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;
use crate::config::{DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT};
use crate::error::ApiError;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Respawn API",
        description = "Manage tenants, plans and Minecraft servers. Authenticate with `Authorization: Bearer <token>`: \
                       the admin token from the configuration, or a tenant token (`rsp_…`). Errors are \
                       `{\"error\": {\"code\", \"message\", \"field\"?}}`. Objects of other tenants answer 404."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "tenants", description = "Tenants and their API tokens (admin)"),
        (name = "plans", description = "Server sizes (admin writes, everyone reads)"),
        (name = "servers", description = "A tenant's Minecraft servers"),
        (name = "plugins", description = "The plugin catalogue (admin writes) and each server's plugins"),
        (name = "backups", description = "Backups of a server's data, their retention, and restores"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// Every documented route, with its OpenAPI description.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(tenants::router())
        .merge(plans::router())
        .merge(servers::router())
        .merge(plugins::router())
        .merge(backups::router())
}

/// `?limit=&cursor=` on list routes.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page (1–500, default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The validated `(after_id, limit)` of a page request.
pub fn page_bounds(limit: Option<u32>, cursor: Option<&str>) -> Result<(String, u32), ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE_LIMIT);
    if !(1..=MAX_PAGE_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest {
            code: "invalid_query",
            message: format!("limit must be between 1 and {MAX_PAGE_LIMIT}"),
            field: Some("limit".into()),
        });
    }
    let after = match cursor {
        Some(c) => crate::store::decode_cursor(c)?,
        None => String::new(),
    };
    Ok((after, limit))
}
