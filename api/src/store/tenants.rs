//! Tenants: the owners of servers and tokens.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use utoipa::ToSchema;

use crate::db::{Db, is_unique_violation, new_id, now_ms};
use crate::error::ApiError;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created_at_ms: i64,
}

fn from_row(row: &AnyRow) -> Result<Tenant, ApiError> {
    Ok(Tenant { id: row.try_get("id")?, name: row.try_get("name")?, created_at_ms: row.try_get("created_at_ms")? })
}

pub async fn create(db: &Db, name: &str) -> Result<Tenant, ApiError> {
    let tenant = Tenant { id: new_id("ten"), name: name.to_owned(), created_at_ms: now_ms() };
    sqlx::query("INSERT INTO tenants (id, name, created_at_ms) VALUES ($1, $2, $3)")
        .bind(&tenant.id)
        .bind(&tenant.name)
        .bind(tenant.created_at_ms)
        .execute(&db.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                ApiError::conflict("name_taken", "name", format!("a tenant named `{name}` exists"))
            } else {
                e.into()
            }
        })?;
    Ok(tenant)
}

pub async fn get(db: &Db, id: &str) -> Result<Option<Tenant>, ApiError> {
    let row = sqlx::query("SELECT id, name, created_at_ms FROM tenants WHERE id = $1")
        .bind(id)
        .fetch_optional(&db.pool)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Tenants with ids after `after`, in id order, at most `limit`.
pub async fn list(db: &Db, after: &str, limit: u32) -> Result<Vec<Tenant>, ApiError> {
    let rows = sqlx::query("SELECT id, name, created_at_ms FROM tenants WHERE id > $1 ORDER BY id LIMIT $2")
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&db.pool)
        .await?;
    rows.iter().map(from_row).collect()
}
