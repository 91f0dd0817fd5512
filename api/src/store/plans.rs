//! Plans: the SKUs servers are sized by (admin-managed, readable by all).

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;
use utoipa::ToSchema;

use super::get_u32;
use crate::db::{Db, is_foreign_key_violation, is_unique_violation, new_id, now_ms};
use crate::error::ApiError;
use crate::validate;

/// Bounds on a plan's resources: from "a tiny lobby" to "a big machine".
pub const CPU_MILLICORES: (u32, u32) = (100, 64_000);
pub const MEMORY_MIB: (u32, u32) = (256, 256 * 1024);
pub const STORAGE_GIB: (u32, u32) = (1, 16 * 1024);
pub const MAX_PLAYERS: (u32, u32) = (1, 10_000);

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Plan {
    pub id: String,
    pub name: String,
    pub cpu_millicores: u32,
    pub memory_mib: u32,
    pub storage_gib: u32,
    pub max_players: u32,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// Body of `POST /v1/plans`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPlan {
    /// Unique; 1–63 of `a-z0-9-`.
    pub name: String,
    /// CPU in thousandths of a core (1000 = one core).
    pub cpu_millicores: u32,
    pub memory_mib: u32,
    pub storage_gib: u32,
    pub max_players: u32,
}

/// Body of `PATCH /v1/plans/{id}`: only the fields given change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanPatch {
    pub name: Option<String>,
    pub cpu_millicores: Option<u32>,
    pub memory_mib: Option<u32>,
    pub storage_gib: Option<u32>,
    pub max_players: Option<u32>,
}

impl NewPlan {
    fn validate(&self) -> Result<(), ApiError> {
        validate::name("name", &self.name)?;
        validate::range("cpu_millicores", self.cpu_millicores, CPU_MILLICORES.0, CPU_MILLICORES.1)?;
        validate::range("memory_mib", self.memory_mib, MEMORY_MIB.0, MEMORY_MIB.1)?;
        validate::range("storage_gib", self.storage_gib, STORAGE_GIB.0, STORAGE_GIB.1)?;
        validate::range("max_players", self.max_players, MAX_PLAYERS.0, MAX_PLAYERS.1)
    }
}

const COLUMNS: &str = "id, name, cpu_millicores, memory_mib, storage_gib, max_players, created_at_ms, updated_at_ms";

fn from_row(row: &AnyRow) -> Result<Plan, ApiError> {
    Ok(Plan {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        cpu_millicores: get_u32(row, "cpu_millicores")?,
        memory_mib: get_u32(row, "memory_mib")?,
        storage_gib: get_u32(row, "storage_gib")?,
        max_players: get_u32(row, "max_players")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

fn name_taken(e: sqlx::Error, name: &str) -> ApiError {
    if is_unique_violation(&e) {
        ApiError::conflict("name_taken", "name", format!("a plan named `{name}` exists"))
    } else {
        e.into()
    }
}

pub async fn create(db: &Db, new: NewPlan) -> Result<Plan, ApiError> {
    new.validate()?;
    let now = now_ms();
    let plan = Plan {
        id: new_id("plan"),
        name: new.name,
        cpu_millicores: new.cpu_millicores,
        memory_mib: new.memory_mib,
        storage_gib: new.storage_gib,
        max_players: new.max_players,
        created_at_ms: now,
        updated_at_ms: now,
    };
    sqlx::query(&format!("INSERT INTO plans ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"))
        .bind(&plan.id)
        .bind(&plan.name)
        .bind(i64::from(plan.cpu_millicores))
        .bind(i64::from(plan.memory_mib))
        .bind(i64::from(plan.storage_gib))
        .bind(i64::from(plan.max_players))
        .bind(plan.created_at_ms)
        .bind(plan.updated_at_ms)
        .execute(&db.pool)
        .await
        .map_err(|e| name_taken(e, &plan.name))?;
    Ok(plan)
}

pub async fn get(db: &Db, id: &str) -> Result<Option<Plan>, ApiError> {
    let row =
        sqlx::query(&format!("SELECT {COLUMNS} FROM plans WHERE id = $1")).bind(id).fetch_optional(&db.pool).await?;
    row.as_ref().map(from_row).transpose()
}

/// Every plan, by name: a catalogue of a few SKUs, not worth paginating.
pub async fn list(db: &Db) -> Result<Vec<Plan>, ApiError> {
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM plans ORDER BY name")).fetch_all(&db.pool).await?;
    rows.iter().map(from_row).collect()
}

pub async fn update(db: &Db, id: &str, patch: PlanPatch) -> Result<Plan, ApiError> {
    let current = get(db, id).await?.ok_or(ApiError::NotFound("plan"))?;
    let merged = NewPlan {
        name: patch.name.unwrap_or(current.name),
        cpu_millicores: patch.cpu_millicores.unwrap_or(current.cpu_millicores),
        memory_mib: patch.memory_mib.unwrap_or(current.memory_mib),
        storage_gib: patch.storage_gib.unwrap_or(current.storage_gib),
        max_players: patch.max_players.unwrap_or(current.max_players),
    };
    merged.validate()?;
    let now = now_ms();
    sqlx::query(
        "UPDATE plans SET name = $1, cpu_millicores = $2, memory_mib = $3, storage_gib = $4, \
         max_players = $5, updated_at_ms = $6 WHERE id = $7",
    )
    .bind(&merged.name)
    .bind(i64::from(merged.cpu_millicores))
    .bind(i64::from(merged.memory_mib))
    .bind(i64::from(merged.storage_gib))
    .bind(i64::from(merged.max_players))
    .bind(now)
    .bind(id)
    .execute(&db.pool)
    .await
    .map_err(|e| name_taken(e, &merged.name))?;
    Ok(Plan {
        id: current.id,
        name: merged.name,
        cpu_millicores: merged.cpu_millicores,
        memory_mib: merged.memory_mib,
        storage_gib: merged.storage_gib,
        max_players: merged.max_players,
        created_at_ms: current.created_at_ms,
        updated_at_ms: now,
    })
}

/// Deletes an unused plan; 409 `plan_in_use` while any server uses it.
pub async fn delete(db: &Db, id: &str) -> Result<(), ApiError> {
    let in_use = || ApiError::Conflict {
        code: "plan_in_use",
        message: "servers still use this plan; move them to another plan first".into(),
        field: None,
    };
    // Checked first for a clear answer; the foreign key still catches a
    // server created between this check and the delete.
    let users: i64 = sqlx::query("SELECT COUNT(*) AS n FROM servers WHERE plan_id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await?
        .try_get("n")?;
    if users > 0 {
        return Err(in_use());
    }
    let done = sqlx::query("DELETE FROM plans WHERE id = $1")
        .bind(id)
        .execute(&db.pool)
        .await
        .map_err(|e| if is_foreign_key_violation(&e) { in_use() } else { e.into() })?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound("plan"));
    }
    Ok(())
}
