//! SQL for each resource, written once for SQLite and PostgreSQL (`$n`
//! placeholders, which both accept). Every tenant-owned query takes the
//! tenant id and filters on it: scoping lives here, not in handlers.

pub mod backups;
pub mod plans;
pub mod plugins;
pub mod servers;
pub mod tenants;
pub mod tokens;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use utoipa::ToSchema;

use crate::error::ApiError;

/// Why a store function failed, said in storage terms. Only the backup rows
/// answer with it so far (the other modules still return [`ApiError`]); the
/// handlers turn it into a response through `impl From<StoreError> for ApiError`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed the query.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A row holds what no version of the API writes (an unknown status, a
    /// count out of range).
    #[error("{0}")]
    Corrupt(String),
}

/// One page of a list. Follow `next_cursor` until it is null; a page may hold
/// fewer than `limit` items even when more follow (filtered lists stop after
/// scanning a bounded number of rows).
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Cursors are the last id seen, wrapped so clients treat them as opaque (we
/// may change what is inside without breaking them).
pub fn encode_cursor(last_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1:{last_id}"))
}

/// The id inside a cursor; 400 naming `cursor` for anything we did not make.
pub fn decode_cursor(cursor: &str) -> Result<String, ApiError> {
    let bad = || ApiError::BadRequest {
        code: "invalid_query",
        message: "cursor is not one this API returned".into(),
        field: Some("cursor".into()),
    };
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let id = text.strip_prefix("v1:").ok_or_else(bad)?;
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(bad());
    }
    Ok(id.to_owned())
}

/// Reads a non-negative BIGINT column that the API exposes as `u32`.
pub(crate) fn get_u32(row: &AnyRow, column: &str) -> Result<u32, ApiError> {
    Ok(read_u32(row, column)?)
}

/// [`get_u32`] for the store modules that answer with [`StoreError`].
pub(crate) fn read_u32(row: &AnyRow, column: &str) -> Result<u32, StoreError> {
    let value: i64 = row.try_get(column)?;
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("column {column} out of range: {value}")))
}

/// `$first, $first+1, …` for an `IN (…)` list of `n` values.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = encode_cursor("srv_0193a0b1c2d3e4f5a6b7c8d9");
        assert_eq!(decode_cursor(&c).ok().as_deref(), Some("srv_0193a0b1c2d3e4f5a6b7c8d9"));
        assert!(decode_cursor("!!").is_err());
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode("v1:x' OR 1=1")).is_err());
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode("srv_1")).is_err());
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
    }
}
