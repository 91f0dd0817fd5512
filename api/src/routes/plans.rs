//! `/v1/plans`: server sizes. The admin writes; any valid token reads.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Admin, Caller};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::ApiJson;
use crate::store::plans::{self, NewPlan, Plan, PlanPatch};
use crate::store::{Page, servers};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_plans, create_plan)).routes(routes!(get_plan, update_plan, delete_plan))
}

/// List every plan, by name.
#[utoipa::path(get, path = "/v1/plans", tag = "plans", responses(
    (status = 200, body = Page<Plan>), (status = 401, body = ErrorBody),
))]
async fn list_plans(_: Caller, State(state): State<AppState>) -> ApiResult<Json<Page<Plan>>> {
    Ok(Json(Page { items: plans::list(&state.db).await?, next_cursor: None }))
}

/// Create a plan.
#[utoipa::path(post, path = "/v1/plans", tag = "plans", request_body = NewPlan, responses(
    (status = 201, body = Plan), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
))]
async fn create_plan(
    _: Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewPlan>,
) -> ApiResult<(StatusCode, Json<Plan>)> {
    Ok((StatusCode::CREATED, Json(plans::create(&state.db, body).await?)))
}

/// Get a plan.
#[utoipa::path(get, path = "/v1/plans/{id}", tag = "plans", params(("id" = String, Path)), responses(
    (status = 200, body = Plan), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
))]
async fn get_plan(_: Caller, State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Plan>> {
    plans::get(&state.db, &id).await?.map(Json).ok_or(ApiError::NotFound("plan"))
}

/// Change a plan. Servers on it are re-applied to the runtime with the new size.
#[utoipa::path(patch, path = "/v1/plans/{id}", tag = "plans", params(("id" = String, Path)),
    request_body = PlanPatch, responses(
    (status = 200, body = Plan), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
))]
async fn update_plan(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PlanPatch>,
) -> ApiResult<Json<Plan>> {
    let plan = plans::update(&state.db, &id, body).await?;
    for record in servers::on_plan(&state.db, &id).await? {
        super::servers::apply(&state, &record).await;
    }
    Ok(Json(plan))
}

/// Delete a plan no server uses.
#[utoipa::path(delete, path = "/v1/plans/{id}", tag = "plans", params(("id" = String, Path)), responses(
    (status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 409, description = "plan in use", body = ErrorBody),
))]
async fn delete_plan(_: Admin, State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    plans::delete(&state.db, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
