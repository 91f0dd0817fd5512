//! The database handle: one `AnyPool` over SQLite or PostgreSQL, the embedded
//! migrations, and the small helpers every store module shares (ids, clocks,
//! constraint detection).

use std::borrow::Cow;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// The migrations, compiled into the binary so `respawn api` needs no files
/// beside it. Built by hand rather than with `sqlx::migrate!` so the crate
/// does not need sqlx's macro feature (which compiles every driver a second
/// time). Append new files here; never edit an applied one (sqlx checks the
/// checksum and refuses to start).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("../migrations/0001_initial.sql")),
    (2, "plugins", include_str!("../migrations/0002_plugins.sql")),
    (3, "backups", include_str!("../migrations/0003_backups.sql")),
];

fn migrator(locking: bool) -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(*version, Cow::Borrowed(*description), MigrationType::Simple, Cow::Borrowed(*sql), false)
        })
        .collect::<Vec<_>>();
    Migrator { migrations: Cow::Owned(migrations), locking, ..Migrator::DEFAULT }
}

/// Which SQL dialect is behind the pool (only for the rare statement that
/// differs; everything else is written once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }
}

/// The shared pool. Cloning is cheap (an `Arc` inside).
#[derive(Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
}

impl Db {
    /// Connects (creating the SQLite file's directory when needed) without
    /// migrating.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)
            .ok_or_else(|| anyhow::anyhow!("database_url must start with sqlite: or postgres://"))?;
        if backend == Backend::Sqlite {
            ensure_sqlite_dir(url)?;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            // A request waits at most this long for a connection before it
            // fails with 500 instead of hanging.
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        Ok(Db { pool, backend })
    }

    /// Applies every migration not yet applied.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        // sqlx serialises concurrent migrators with pg_advisory_lock, which
        // CockroachDB lacks (older releases) or only stubs. There, run the API
        // migration from one replica at a time (e.g. a single release job).
        let locking = !(self.backend == Backend::Postgres && self.is_cockroach().await?);
        migrator(locking).run(&self.pool).await?;
        Ok(())
    }

    async fn is_cockroach(&self) -> anyhow::Result<bool> {
        let version: String =
            sqlx::Row::try_get(&sqlx::query("SELECT version() AS v").fetch_one(&self.pool).await?, "v")?;
        Ok(version.contains("CockroachDB"))
    }
}

/// `sqlite://data/respawn.db?mode=rwc` creates the file but not `data/`.
fn ensure_sqlite_dir(url: &str) -> anyhow::Result<()> {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path.starts_with(':') {
        return Ok(()); // in-memory
    }
    if let Some(dir) = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    Ok(())
}

/// Milliseconds since the Unix epoch: the one time format in the schema.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A new id: `prefix_` + 16 hex digits of a clock-based sequence + 16 random
/// hex digits. The sequence is the time in milliseconds shifted left by 16
/// bits, bumped by one whenever that would not exceed the last id this process
/// made; so ids sort in creation order (exactly within a process, to the
/// millisecond across processes) and the list cursor is just the last id.
/// 64 random bits keep ids from two processes apart. Same length and
/// alphabet for all ids, so every collation orders them alike.
pub fn new_id(prefix: &str) -> String {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let from_clock = (now_ms() as u64 & 0xffff_ffff_ffff) << 16;
    let previous = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| Some(from_clock.max(last + 1)))
        .unwrap_or_else(|last| last);
    let sequence = from_clock.max(previous + 1);
    let mut random = [0u8; 8];
    fill_random(&mut random);
    format!("{prefix}_{sequence:016x}{:016x}", u64::from_be_bytes(random))
}

/// Fills `buf` from the OS CSPRNG. Failing to read it is not recoverable
/// (tokens and ids would be guessable), so this panics rather than degrade.
pub fn fill_random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the OS random number generator failed");
}

/// True when `err` is a unique-constraint violation (a duplicate name or
/// hostname), on any backend.
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(e) if e.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

/// True when `err` is a foreign-key violation (e.g. a plan still in use).
pub fn is_foreign_key_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(e) if e.kind() == sqlx::error::ErrorKind::ForeignKeyViolation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_increase_and_have_one_shape() {
        let ids: Vec<String> = (0..1000).map(|_| new_id("srv")).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids sort in creation order");
        assert!(ids.iter().all(|id| id.len() == 4 + 32 && id[4..].bytes().all(|b| b.is_ascii_hexdigit())));
    }

    #[test]
    fn sqlite_dir_from_url() {
        let dir = std::env::temp_dir().join(format!("respawn-api-dir-{}", new_id("t")));
        let url = format!("sqlite://{}/sub/x.db?mode=rwc", dir.display());
        assert!(ensure_sqlite_dir(&url).is_ok());
        assert!(dir.join("sub").is_dir());
        let _ = std::fs::remove_dir_all(dir);
        assert!(ensure_sqlite_dir("sqlite::memory:").is_ok());
    }
}
