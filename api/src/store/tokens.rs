//! API tokens: only their SHA-256 is stored (see `auth::hash_token`).

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use utoipa::ToSchema;

use crate::auth::{generate_token, hash_token};
use crate::db::{Db, new_id, now_ms};
use crate::error::ApiError;

/// A token as listed: never the secret itself.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub created_at_ms: i64,
}

/// The answer to creating a token: the only time `token` is ever shown.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The bearer token. Store it now: it cannot be shown again.
    pub token: String,
}

fn from_row(row: &AnyRow) -> Result<TokenInfo, ApiError> {
    Ok(TokenInfo {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

/// A new token for an existing tenant (the caller checked it exists).
pub async fn create(db: &Db, tenant_id: &str, name: &str) -> Result<CreatedToken, ApiError> {
    let token = generate_token();
    let info = TokenInfo {
        id: new_id("tok"),
        tenant_id: tenant_id.to_owned(),
        name: name.to_owned(),
        created_at_ms: now_ms(),
    };
    sqlx::query("INSERT INTO api_tokens (id, tenant_id, name, token_hash, created_at_ms) VALUES ($1, $2, $3, $4, $5)")
        .bind(&info.id)
        .bind(&info.tenant_id)
        .bind(&info.name)
        .bind(hash_token(&token))
        .bind(info.created_at_ms)
        .execute(&db.pool)
        .await?;
    Ok(CreatedToken { info, token })
}

/// The tenant a live (not revoked) token belongs to.
pub async fn tenant_of(db: &Db, token_hash: &str) -> Result<Option<String>, ApiError> {
    let row = sqlx::query("SELECT tenant_id FROM api_tokens WHERE token_hash = $1 AND revoked_at_ms IS NULL")
        .bind(token_hash)
        .fetch_optional(&db.pool)
        .await?;
    Ok(row.map(|r| r.try_get("tenant_id")).transpose()?)
}

/// A tenant's live tokens.
pub async fn list(db: &Db, tenant_id: &str) -> Result<Vec<TokenInfo>, ApiError> {
    let rows = sqlx::query(
        "SELECT id, tenant_id, name, created_at_ms FROM api_tokens \
         WHERE tenant_id = $1 AND revoked_at_ms IS NULL ORDER BY id",
    )
    .bind(tenant_id)
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Revokes a token; false when the tenant has no such live token. Kept as a
/// row (not deleted) so audits can still name it.
pub async fn revoke(db: &Db, tenant_id: &str, token_id: &str) -> Result<bool, ApiError> {
    let done = sqlx::query(
        "UPDATE api_tokens SET revoked_at_ms = $1 WHERE id = $2 AND tenant_id = $3 AND revoked_at_ms IS NULL",
    )
    .bind(now_ms())
    .bind(token_id)
    .bind(tenant_id)
    .execute(&db.pool)
    .await?;
    Ok(done.rows_affected() > 0)
}
