//! Servers and their hostnames. Every query is scoped by tenant; hostnames
//! are unique across all tenants by the `server_hostnames` primary key.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use utoipa::ToSchema;

use super::{get_u32, placeholders};
use crate::db::{Db, is_unique_violation, new_id, now_ms};
use crate::error::ApiError;
use crate::runtime::{PluginSpec, ServerSpec};
use crate::validate;

/// Idle time before a server sleeps, by default (10 minutes), and the
/// longest allowed (a week). 0 means "never sleep when idle".
pub const DEFAULT_IDLE_TIMEOUT_S: u32 = 600;
pub const MAX_IDLE_TIMEOUT_S: u32 = 7 * 24 * 3600;
/// Replicas of one server (fleets): bounded so one request cannot ask for a
/// cluster's worth of pods.
pub const MAX_REPLICAS: u32 = 100;

/// The server software.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MinecraftType {
    Vanilla,
    Paper,
    Purpur,
    Spigot,
    Fabric,
    Forge,
    Neoforge,
}

impl MinecraftType {
    pub fn as_str(self) -> &'static str {
        match self {
            MinecraftType::Vanilla => "vanilla",
            MinecraftType::Paper => "paper",
            MinecraftType::Purpur => "purpur",
            MinecraftType::Spigot => "spigot",
            MinecraftType::Fabric => "fabric",
            MinecraftType::Forge => "forge",
            MinecraftType::Neoforge => "neoforge",
        }
    }

    fn parse(s: &str) -> Result<MinecraftType, ApiError> {
        serde_json::from_value(serde_json::Value::String(s.to_owned()))
            .map_err(|_| ApiError::Internal(anyhow::anyhow!("unknown minecraft_type in database: {s}")))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Minecraft {
    #[serde(rename = "type")]
    pub kind: MinecraftType,
    /// `1.21.4`, a snapshot id, or `latest`.
    pub version: String,
}

/// When the server sleeps and how far it scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Seconds without players before it sleeps; 0 = never sleep when idle.
    pub idle_timeout_s: u32,
    /// Replicas kept even without players (0 lets it sleep).
    pub min_replicas: u32,
    pub max_replicas: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { idle_timeout_s: DEFAULT_IDLE_TIMEOUT_S, min_replicas: 0, max_replicas: 1 }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyPatch {
    pub idle_timeout_s: Option<u32>,
    pub min_replicas: Option<u32>,
    pub max_replicas: Option<u32>,
}

/// Body of `POST /v1/servers`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewServer {
    /// Unique within the tenant; 1–63 of `a-z0-9-`.
    pub name: String,
    /// Names players connect to; unique across all tenants.
    pub hostnames: Vec<String>,
    pub plan_id: String,
    pub minecraft: Minecraft,
    /// `server.properties` entries.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default)]
    pub policy: Policy,
}

/// Body of `PATCH /v1/servers/{id}`: given fields replace the stored ones
/// (`hostnames` and `properties` as a whole, `policy` field by field).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerPatch {
    pub name: Option<String>,
    pub hostnames: Option<Vec<String>>,
    pub plan_id: Option<String>,
    pub minecraft: Option<Minecraft>,
    pub properties: Option<BTreeMap<String, String>>,
    pub policy: Option<PolicyPatch>,
}

/// A server definition as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ServerRecord {
    pub id: String,
    pub name: String,
    pub hostnames: Vec<String>,
    pub plan_id: String,
    pub minecraft: Minecraft,
    pub properties: BTreeMap<String, String>,
    pub policy: Policy,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    #[serde(skip)]
    pub tenant_id: String,
}

impl NewServer {
    /// Checks every field and normalises hostnames in place.
    fn validate(&mut self) -> Result<(), ApiError> {
        validate::name("name", &self.name)?;
        self.hostnames = validate::hostnames("hostnames", &self.hostnames)?;
        validate::version("minecraft.version", &self.minecraft.version)?;
        validate::properties("properties", &self.properties)?;
        let p = &self.policy;
        validate::range("policy.idle_timeout_s", p.idle_timeout_s, 0, MAX_IDLE_TIMEOUT_S)?;
        validate::range("policy.max_replicas", p.max_replicas, 1, MAX_REPLICAS)?;
        validate::range("policy.min_replicas", p.min_replicas, 0, p.max_replicas)
    }
}

const COLUMNS: &str = "id, tenant_id, name, plan_id, minecraft_type, minecraft_version, properties_json, \
                       idle_timeout_s, min_replicas, max_replicas, created_at_ms, updated_at_ms";

fn from_row(row: &AnyRow) -> Result<ServerRecord, ApiError> {
    let properties_json: String = row.try_get("properties_json")?;
    let properties = serde_json::from_str(&properties_json)
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("properties_json in database")))?;
    let kind: String = row.try_get("minecraft_type")?;
    Ok(ServerRecord {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        hostnames: Vec::new(),
        plan_id: row.try_get("plan_id")?,
        minecraft: Minecraft { kind: MinecraftType::parse(&kind)?, version: row.try_get("minecraft_version")? },
        properties,
        policy: Policy {
            idle_timeout_s: get_u32(row, "idle_timeout_s")?,
            min_replicas: get_u32(row, "min_replicas")?,
            max_replicas: get_u32(row, "max_replicas")?,
        },
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

async fn ensure_plan(db: &Db, plan_id: &str) -> Result<(), ApiError> {
    if super::plans::get(db, plan_id).await?.is_none() {
        return Err(ApiError::invalid("plan_id", format!("there is no plan `{plan_id}`")));
    }
    Ok(())
}

fn name_taken(e: sqlx::Error, name: &str) -> ApiError {
    if is_unique_violation(&e) {
        ApiError::conflict("name_taken", "name", format!("you already have a server named `{name}`"))
    } else {
        e.into()
    }
}

/// Inserts the hostnames one by one so a conflict names the exact one.
async fn insert_hostnames(
    tx: &mut Transaction<'_, Any>,
    server_id: &str,
    hostnames: &[String],
) -> Result<(), ApiError> {
    for (i, hostname) in hostnames.iter().enumerate() {
        sqlx::query("INSERT INTO server_hostnames (hostname, server_id, position) VALUES ($1, $2, $3)")
            .bind(hostname)
            .bind(server_id)
            .bind(i as i64)
            .execute(&mut **tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    // Says only that the name is taken, never by whom.
                    ApiError::conflict(
                        "hostname_taken",
                        format!("hostnames[{i}]"),
                        format!("hostname `{hostname}` is already in use"),
                    )
                } else {
                    e.into()
                }
            })?;
    }
    Ok(())
}

pub async fn create(db: &Db, tenant_id: &str, mut new: NewServer) -> Result<ServerRecord, ApiError> {
    new.validate()?;
    ensure_plan(db, &new.plan_id).await?;
    let now = now_ms();
    let record = ServerRecord {
        id: new_id("srv"),
        tenant_id: tenant_id.to_owned(),
        name: new.name,
        hostnames: new.hostnames,
        plan_id: new.plan_id,
        minecraft: new.minecraft,
        properties: new.properties,
        policy: new.policy,
        created_at_ms: now,
        updated_at_ms: now,
    };
    let properties_json = serde_json::to_string(&record.properties).map_err(anyhow::Error::new)?;
    let mut tx = db.pool.begin().await?;
    sqlx::query(&format!("INSERT INTO servers ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"))
        .bind(&record.id)
        .bind(&record.tenant_id)
        .bind(&record.name)
        .bind(&record.plan_id)
        .bind(record.minecraft.kind.as_str())
        .bind(&record.minecraft.version)
        .bind(properties_json)
        .bind(i64::from(record.policy.idle_timeout_s))
        .bind(i64::from(record.policy.min_replicas))
        .bind(i64::from(record.policy.max_replicas))
        .bind(record.created_at_ms)
        .bind(record.updated_at_ms)
        .execute(&mut *tx)
        .await
        .map_err(|e| name_taken(e, &record.name))?;
    insert_hostnames(&mut tx, &record.id, &record.hostnames).await?;
    tx.commit().await?;
    Ok(record)
}

/// Fills in `hostnames` for each record (one query for the whole page).
async fn attach_hostnames(db: &Db, records: &mut [ServerRecord]) -> Result<(), ApiError> {
    if records.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "SELECT server_id, hostname FROM server_hostnames WHERE server_id IN ({}) ORDER BY server_id, position",
        placeholders(1, records.len())
    );
    let mut query = sqlx::query(&sql);
    for r in records.iter() {
        query = query.bind(r.id.as_str());
    }
    let mut by_server: HashMap<String, Vec<String>> = HashMap::new();
    for row in query.fetch_all(&db.pool).await? {
        by_server.entry(row.try_get("server_id")?).or_default().push(row.try_get("hostname")?);
    }
    for r in records.iter_mut() {
        r.hostnames = by_server.remove(&r.id).unwrap_or_default();
    }
    Ok(())
}

/// The tenant's server with this id; `None` also when another tenant owns it.
pub async fn get(db: &Db, tenant_id: &str, id: &str) -> Result<Option<ServerRecord>, ApiError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM servers WHERE id = $1 AND tenant_id = $2"))
        .bind(id)
        .bind(tenant_id)
        .fetch_optional(&db.pool)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let mut records = [from_row(&row)?];
    attach_hostnames(db, &mut records).await?;
    let [record] = records;
    Ok(Some(record))
}

/// The tenant's servers with ids after `after`, in id order, at most `limit`.
pub async fn list(db: &Db, tenant_id: &str, after: &str, limit: u32) -> Result<Vec<ServerRecord>, ApiError> {
    let rows =
        sqlx::query(&format!("SELECT {COLUMNS} FROM servers WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3"))
            .bind(tenant_id)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&db.pool)
            .await?;
    let mut records = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    attach_hostnames(db, &mut records).await?;
    Ok(records)
}

/// Every server of every tenant, for re-applying definitions to the runtime
/// on startup.
pub async fn all(db: &Db) -> Result<Vec<ServerRecord>, ApiError> {
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM servers ORDER BY id")).fetch_all(&db.pool).await?;
    let mut records = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    // Bounded IN lists: SQLite allows 32766 parameters, PostgreSQL 65535.
    for chunk in records.chunks_mut(500) {
        attach_hostnames(db, chunk).await?;
    }
    Ok(records)
}

/// Every server on a plan, of any tenant (to re-apply them after the plan
/// changes size).
pub async fn on_plan(db: &Db, plan_id: &str) -> Result<Vec<ServerRecord>, ApiError> {
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM servers WHERE plan_id = $1 ORDER BY id"))
        .bind(plan_id)
        .fetch_all(&db.pool)
        .await?;
    let mut records = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    for chunk in records.chunks_mut(500) {
        attach_hostnames(db, chunk).await?;
    }
    Ok(records)
}

pub async fn update(db: &Db, tenant_id: &str, id: &str, patch: ServerPatch) -> Result<ServerRecord, ApiError> {
    let current = get(db, tenant_id, id).await?.ok_or(ApiError::NotFound("server"))?;
    let hostnames_changed = patch.hostnames.is_some();
    let policy = patch.policy.unwrap_or_default();
    let mut merged = NewServer {
        name: patch.name.unwrap_or(current.name),
        hostnames: patch.hostnames.unwrap_or(current.hostnames),
        plan_id: patch.plan_id.unwrap_or(current.plan_id),
        minecraft: patch.minecraft.unwrap_or(current.minecraft),
        properties: patch.properties.unwrap_or(current.properties),
        policy: Policy {
            idle_timeout_s: policy.idle_timeout_s.unwrap_or(current.policy.idle_timeout_s),
            min_replicas: policy.min_replicas.unwrap_or(current.policy.min_replicas),
            max_replicas: policy.max_replicas.unwrap_or(current.policy.max_replicas),
        },
    };
    merged.validate()?;
    ensure_plan(db, &merged.plan_id).await?;
    let properties_json = serde_json::to_string(&merged.properties).map_err(anyhow::Error::new)?;
    let now = now_ms();
    let mut tx = db.pool.begin().await?;
    sqlx::query(
        "UPDATE servers SET name = $1, plan_id = $2, minecraft_type = $3, minecraft_version = $4, \
         properties_json = $5, idle_timeout_s = $6, min_replicas = $7, max_replicas = $8, updated_at_ms = $9 \
         WHERE id = $10 AND tenant_id = $11",
    )
    .bind(&merged.name)
    .bind(&merged.plan_id)
    .bind(merged.minecraft.kind.as_str())
    .bind(&merged.minecraft.version)
    .bind(properties_json)
    .bind(i64::from(merged.policy.idle_timeout_s))
    .bind(i64::from(merged.policy.min_replicas))
    .bind(i64::from(merged.policy.max_replicas))
    .bind(now)
    .bind(id)
    .bind(tenant_id)
    .execute(&mut *tx)
    .await
    .map_err(|e| name_taken(e, &merged.name))?;
    if hostnames_changed {
        sqlx::query("DELETE FROM server_hostnames WHERE server_id = $1").bind(id).execute(&mut *tx).await?;
        insert_hostnames(&mut tx, id, &merged.hostnames).await?;
    }
    tx.commit().await?;
    Ok(ServerRecord {
        id: current.id,
        tenant_id: current.tenant_id,
        name: merged.name,
        hostnames: merged.hostnames,
        plan_id: merged.plan_id,
        minecraft: merged.minecraft,
        properties: merged.properties,
        policy: merged.policy,
        created_at_ms: current.created_at_ms,
        updated_at_ms: now,
    })
}

/// Deletes the tenant's server; false when there is none (or not theirs).
pub async fn delete(db: &Db, tenant_id: &str, id: &str) -> Result<bool, ApiError> {
    let mut tx = db.pool.begin().await?;
    // Dependent rows first (not relying on ON DELETE CASCADE, which SQLite
    // only honours with foreign keys on), and only of a server this tenant owns.
    for table in ["server_hostnames", "server_plugins"] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE server_id IN (SELECT id FROM servers WHERE id = $1 AND tenant_id = $2)"
        ))
        .bind(id)
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?;
    }
    let done = sqlx::query("DELETE FROM servers WHERE id = $1 AND tenant_id = $2")
        .bind(id)
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done.rows_affected() > 0)
}

/// The runtime's view of a record, with its plan's resources inlined.
pub async fn spec(db: &Db, record: &ServerRecord) -> Result<ServerSpec, ApiError> {
    let plan = super::plans::get(db, &record.plan_id)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("server {} has a missing plan", record.id)))?;
    let plugins = super::plugins::installed_on(db, &[record.id.as_str()])
        .await?
        .into_iter()
        .map(|(_, p)| PluginSpec {
            name: p.name,
            version: p.version,
            download_url: p.download_url,
            sha256: p.sha256,
            sha512: p.sha512,
        })
        .collect();
    Ok(ServerSpec {
        id: record.id.clone(),
        tenant_id: record.tenant_id.clone(),
        name: record.name.clone(),
        hostnames: record.hostnames.clone(),
        minecraft_type: record.minecraft.kind.as_str().to_owned(),
        minecraft_version: record.minecraft.version.clone(),
        properties: record.properties.clone(),
        cpu_millicores: plan.cpu_millicores,
        memory_mib: plan.memory_mib,
        storage_gib: plan.storage_gib,
        max_players: plan.max_players,
        idle_timeout_s: record.policy.idle_timeout_s,
        min_replicas: record.policy.min_replicas,
        max_replicas: record.policy.max_replicas,
        plugins,
    })
}
