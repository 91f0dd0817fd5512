//! The plugin catalogue (admin-managed, exact builds with checksums) and the
//! plugins installed on each server.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;
use utoipa::ToSchema;

use super::placeholders;
use crate::db::{Db, is_foreign_key_violation, is_unique_violation, new_id, now_ms};
use crate::error::ApiError;
use crate::validate;

/// Catalogue entries are immutable: a name+version always means the same
/// bytes (a changed jar is a new version), so there is no PATCH.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Plugin {
    pub id: String,
    pub name: String,
    pub version: String,
    /// Where the runtime downloads the jar (https only).
    pub download_url: String,
    /// Lower-case hex SHA-256 of the jar.
    pub sha256: Option<String>,
    /// Lower-case hex SHA-512 of the jar.
    pub sha512: Option<String>,
    /// Minecraft versions it is built for; empty means any.
    pub minecraft_versions: Vec<String>,
    pub created_at_ms: i64,
}

/// Body of `POST /v1/plugins`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPlugin {
    /// 1–64 of letters, digits, `.`, `_`, `-` (`EssentialsX`).
    pub name: String,
    pub version: String,
    pub download_url: String,
    /// At least one of `sha256` / `sha512`, as hex.
    pub sha256: Option<String>,
    pub sha512: Option<String>,
    #[serde(default)]
    pub minecraft_versions: Vec<String>,
}

/// A plugin installed on a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Install {
    pub plugin: Plugin,
    pub installed_at_ms: i64,
}

/// Checksums as lower-case hex of the right length.
fn checksum(field: &str, raw: Option<&str>, hex_len: usize) -> Result<Option<String>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let hex = raw.trim().to_ascii_lowercase();
    if hex.len() != hex_len || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::invalid(field, format!("must be {hex_len} hexadecimal digits")));
    }
    Ok(Some(hex))
}

impl NewPlugin {
    fn validate(&mut self) -> Result<(), ApiError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self.name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !name_ok {
            return Err(ApiError::invalid("name", "must be 1 to 64 letters, digits, '.', '_' or '-'"));
        }
        validate::version("version", &self.version)?;
        validate::download_url("download_url", &self.download_url)?;
        self.sha256 = checksum("sha256", self.sha256.as_deref(), 64)?;
        self.sha512 = checksum("sha512", self.sha512.as_deref(), 128)?;
        if self.sha256.is_none() && self.sha512.is_none() {
            return Err(ApiError::invalid("sha256", "give sha256 or sha512: jars are verified before use"));
        }
        if self.minecraft_versions.len() > 64 {
            return Err(ApiError::invalid("minecraft_versions", "at most 64 versions"));
        }
        for (i, v) in self.minecraft_versions.iter().enumerate() {
            validate::version(&format!("minecraft_versions[{i}]"), v)?;
        }
        Ok(())
    }
}

const COLUMNS: &str = "id, name, version, download_url, sha256, sha512, minecraft_versions_json, created_at_ms";

fn from_row(row: &AnyRow) -> Result<Plugin, ApiError> {
    let versions: String = row.try_get("minecraft_versions_json")?;
    Ok(Plugin {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        download_url: row.try_get("download_url")?,
        sha256: row.try_get("sha256")?,
        sha512: row.try_get("sha512")?,
        minecraft_versions: serde_json::from_str(&versions)
            .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("minecraft_versions_json in database")))?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

pub async fn create(db: &Db, mut new: NewPlugin) -> Result<Plugin, ApiError> {
    new.validate()?;
    let plugin = Plugin {
        id: new_id("plg"),
        name: new.name,
        version: new.version,
        download_url: new.download_url,
        sha256: new.sha256,
        sha512: new.sha512,
        minecraft_versions: new.minecraft_versions,
        created_at_ms: now_ms(),
    };
    let versions = serde_json::to_string(&plugin.minecraft_versions).map_err(anyhow::Error::new)?;
    sqlx::query(&format!("INSERT INTO plugins ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"))
        .bind(&plugin.id)
        .bind(&plugin.name)
        .bind(&plugin.version)
        .bind(&plugin.download_url)
        .bind(plugin.sha256.clone())
        .bind(plugin.sha512.clone())
        .bind(versions)
        .bind(plugin.created_at_ms)
        .execute(&db.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                ApiError::conflict(
                    "plugin_exists",
                    "version",
                    format!("{} {} is already in the catalogue", plugin.name, plugin.version),
                )
            } else {
                e.into()
            }
        })?;
    Ok(plugin)
}

pub async fn get(db: &Db, id: &str) -> Result<Option<Plugin>, ApiError> {
    let row =
        sqlx::query(&format!("SELECT {COLUMNS} FROM plugins WHERE id = $1")).bind(id).fetch_optional(&db.pool).await?;
    row.as_ref().map(from_row).transpose()
}

/// Catalogue entries after `after` (id order), optionally of one name.
pub async fn list(db: &Db, name: Option<&str>, after: &str, limit: u32) -> Result<Vec<Plugin>, ApiError> {
    let rows = match name {
        Some(name) => {
            sqlx::query(&format!("SELECT {COLUMNS} FROM plugins WHERE name = $1 AND id > $2 ORDER BY id LIMIT $3"))
                .bind(name)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&db.pool)
                .await?
        }
        None => {
            sqlx::query(&format!("SELECT {COLUMNS} FROM plugins WHERE id > $1 ORDER BY id LIMIT $2"))
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&db.pool)
                .await?
        }
    };
    rows.iter().map(from_row).collect()
}

/// Removes an entry no server has installed; 409 `plugin_in_use` otherwise.
pub async fn delete(db: &Db, id: &str) -> Result<(), ApiError> {
    let in_use = || ApiError::Conflict {
        code: "plugin_in_use",
        message: "servers still have this plugin installed".into(),
        field: None,
    };
    let users: i64 = sqlx::query("SELECT COUNT(*) AS n FROM server_plugins WHERE plugin_id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await?
        .try_get("n")?;
    if users > 0 {
        return Err(in_use());
    }
    let done = sqlx::query("DELETE FROM plugins WHERE id = $1")
        .bind(id)
        .execute(&db.pool)
        .await
        .map_err(|e| if is_foreign_key_violation(&e) { in_use() } else { e.into() })?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound("plugin"));
    }
    Ok(())
}

/// The plugins installed on a server (the caller proved it owns the server).
pub async fn installed(db: &Db, server_id: &str) -> Result<Vec<Install>, ApiError> {
    let rows = sqlx::query(
        "SELECT p.id, p.name, p.version, p.download_url, p.sha256, p.sha512, p.minecraft_versions_json, \
         p.created_at_ms, sp.installed_at_ms FROM server_plugins sp JOIN plugins p ON p.id = sp.plugin_id \
         WHERE sp.server_id = $1 ORDER BY p.name",
    )
    .bind(server_id)
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(|r| Ok(Install { plugin: from_row(r)?, installed_at_ms: r.try_get("installed_at_ms")? })).collect()
}

/// Installs `plugin` on a server, replacing another version of the same
/// plugin (an upgrade or downgrade in one step, never a moment without it).
/// The caller proved it owns the server and checked compatibility.
pub async fn install(db: &Db, server_id: &str, plugin: &Plugin) -> Result<Install, ApiError> {
    let installed_at_ms = now_ms();
    let mut tx = db.pool.begin().await?;
    sqlx::query("DELETE FROM server_plugins WHERE server_id = $1 AND plugin_name = $2")
        .bind(server_id)
        .bind(&plugin.name)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO server_plugins (server_id, plugin_name, plugin_id, installed_at_ms) VALUES ($1, $2, $3, $4)",
    )
    .bind(server_id)
    .bind(&plugin.name)
    .bind(&plugin.id)
    .bind(installed_at_ms)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Install { plugin: plugin.clone(), installed_at_ms })
}

/// Removes a plugin from a server; false when it was not installed there.
pub async fn uninstall(db: &Db, server_id: &str, plugin_id: &str) -> Result<bool, ApiError> {
    let done = sqlx::query("DELETE FROM server_plugins WHERE server_id = $1 AND plugin_id = $2")
        .bind(server_id)
        .bind(plugin_id)
        .execute(&db.pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Plugins installed on any of `server_ids`, by server (for the runtime spec).
pub async fn installed_on(db: &Db, server_ids: &[&str]) -> Result<Vec<(String, Plugin)>, ApiError> {
    if server_ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT sp.server_id, p.id, p.name, p.version, p.download_url, p.sha256, p.sha512, \
         p.minecraft_versions_json, p.created_at_ms FROM server_plugins sp JOIN plugins p ON p.id = sp.plugin_id \
         WHERE sp.server_id IN ({}) ORDER BY sp.server_id, p.name",
        placeholders(1, server_ids.len())
    );
    let mut query = sqlx::query(&sql);
    for id in server_ids {
        query = query.bind(*id);
    }
    let rows = query.fetch_all(&db.pool).await?;
    rows.iter().map(|r| Ok((r.try_get("server_id")?, from_row(r)?))).collect()
}
