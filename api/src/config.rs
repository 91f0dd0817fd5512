//! The API's configuration: where to listen, which database, the admin token
//! and the bounds. Unknown keys are refused and every check names its field.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// Default listen address: loopback, so a fresh install is not reachable from
/// the network until an operator says so.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default database: a SQLite file under the working directory's `data/`.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/respawn.db?mode=rwc";
/// The admin token is compared, not generated: demand enough length that it
/// cannot be guessed within the rate limit.
pub const MIN_ADMIN_TOKEN_LEN: usize = 32;
/// Bodies are small JSON documents; 64 KiB leaves room for large property maps.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Failed token attempts per client IP per minute, and the burst allowed
/// before that rate applies. Generous for a mistyped token, useless for
/// guessing.
pub const DEFAULT_AUTH_FAILURES_PER_MINUTE: u32 = 30;
pub const DEFAULT_AUTH_FAILURE_BURST: u32 = 10;
/// Database connections: a small API on a small machine.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 8;
/// List pages.
pub const DEFAULT_PAGE_LIMIT: u32 = 50;
pub const MAX_PAGE_LIMIT: u32 = 500;
/// How long `run` waits for in-flight requests after shutdown is requested.
pub const DEFAULT_SHUTDOWN_GRACE_S: u64 = 10;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// `sqlite://path?mode=rwc` or `postgres://…` (also CockroachDB).
    /// The `DATABASE_URL` environment variable overrides it.
    pub database_url: String,
    /// Grants the admin routes (tenants, tokens, plan writes). The
    /// `RESPAWN_ADMIN_TOKEN` environment variable overrides it. Without one,
    /// admin routes answer 401.
    pub admin_token: Option<String>,
    pub max_connections: u32,
    pub max_body_bytes: usize,
    pub auth_failures_per_minute: u32,
    pub auth_failure_burst: u32,
    pub shutdown_grace_s: u64,
    /// Where backups are kept and how many (`[backups]` in TOML).
    pub backups: BackupConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: DEFAULT_LISTEN.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080))),
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            admin_token: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            auth_failures_per_minute: DEFAULT_AUTH_FAILURES_PER_MINUTE,
            auth_failure_burst: DEFAULT_AUTH_FAILURE_BURST,
            shutdown_grace_s: DEFAULT_SHUTDOWN_GRACE_S,
            backups: BackupConfig::default(),
        }
    }
}

/// Default local backup store: beside the default SQLite file.
pub const DEFAULT_BACKUP_DIR: &str = "data/backups";
/// Where archives are written before upload and downloaded before a restore.
pub const DEFAULT_BACKUP_WORK_DIR: &str = "data/backup-work";
/// Backups kept per server when it has no policy of its own: a week of dailies.
pub const DEFAULT_BACKUP_KEEP_LAST: u32 = 7;
/// The most a server may ask to keep (one backup is a whole world).
pub const MAX_BACKUP_KEEP_LAST: u32 = 1000;
/// Backup and restore jobs running at once across all servers: each reads a
/// whole world from disk and compresses it on a core.
pub const DEFAULT_BACKUP_CONCURRENCY: usize = 2;
/// Region for S3 when none is given (S3 look-alikes mostly ignore it).
pub const DEFAULT_S3_REGION: &str = "us-east-1";

/// Which object store holds the archives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupStoreKind {
    /// Files under `local_dir` (the embedded default).
    Local,
    /// An S3 bucket, or anything that speaks S3 (MinIO, Ceph, R2, moto).
    S3,
}

/// `[backups]`: the store and the defaults. S3 credentials may be left out
/// here and come from the usual `AWS_*` environment variables instead.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    pub store: BackupStoreKind,
    /// Root of the local store (`store = "local"`).
    pub local_dir: PathBuf,
    /// Scratch space for archives in flight; needs room for the largest one.
    pub work_dir: PathBuf,
    /// Retention for servers without a policy of their own; 0 keeps all.
    pub default_keep_last: u32,
    /// Backup and restore jobs at once (others wait their turn, `queued`).
    pub max_concurrent: usize,
    /// `http(s)://host:port` of an S3-compatible service; empty for AWS itself.
    pub s3_endpoint: Option<String>,
    pub s3_bucket: Option<String>,
    pub s3_region: String,
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<String>,
    /// Keys under this prefix (`respawn/`), so one bucket can serve several uses.
    pub s3_prefix: Option<String>,
    /// Allow a plain `http://` endpoint (emulators, a MinIO on loopback).
    pub s3_allow_http: bool,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            store: BackupStoreKind::Local,
            local_dir: PathBuf::from(DEFAULT_BACKUP_DIR),
            work_dir: PathBuf::from(DEFAULT_BACKUP_WORK_DIR),
            default_keep_last: DEFAULT_BACKUP_KEEP_LAST,
            max_concurrent: DEFAULT_BACKUP_CONCURRENCY,
            s3_endpoint: None,
            s3_bucket: None,
            s3_region: DEFAULT_S3_REGION.to_owned(),
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_prefix: None,
            s3_allow_http: false,
        }
    }
}

impl BackupConfig {
    /// Checks the section; the field is named as in the TOML (`backups.s3_bucket`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, message: &str| Err(ConfigError { field, message: message.to_owned() });
        if self.work_dir.as_os_str().is_empty() {
            return bad("backups.work_dir", "must not be empty");
        }
        if self.default_keep_last > MAX_BACKUP_KEEP_LAST {
            return bad("backups.default_keep_last", "must be at most 1000");
        }
        if self.max_concurrent == 0 || self.max_concurrent > 64 {
            return bad("backups.max_concurrent", "must be between 1 and 64");
        }
        match self.store {
            BackupStoreKind::Local => {
                if self.local_dir.as_os_str().is_empty() {
                    return bad("backups.local_dir", "must not be empty");
                }
            }
            BackupStoreKind::S3 => {
                let bucket = self.s3_bucket.as_deref().unwrap_or_default();
                // S3's bucket naming rules, which the emulators enforce too.
                let bucket_ok = (3..=63).contains(&bucket.len())
                    && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
                    && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
                if !bucket_ok {
                    return bad("backups.s3_bucket", "must be a bucket name: 3-63 of a-z, 0-9, '-', '.'");
                }
                if self.s3_region.is_empty() {
                    return bad("backups.s3_region", "must not be empty");
                }
                if let Some(endpoint) = &self.s3_endpoint {
                    let Ok(url) = url::Url::parse(endpoint) else {
                        return bad("backups.s3_endpoint", "must be an http(s):// URL");
                    };
                    match url.scheme() {
                        "https" => {}
                        "http" if self.s3_allow_http => {}
                        "http" => {
                            return bad("backups.s3_endpoint", "is http://; set backups.s3_allow_http to allow it");
                        }
                        _ => return bad("backups.s3_endpoint", "must be an http(s):// URL"),
                    }
                    if url.host_str().is_none_or(str::is_empty) {
                        return bad("backups.s3_endpoint", "must name a host");
                    }
                }
                if self.s3_access_key_id.is_some() != self.s3_secret_access_key.is_some() {
                    let field = if self.s3_access_key_id.is_none() {
                        "backups.s3_access_key_id"
                    } else {
                        "backups.s3_secret_access_key"
                    };
                    return bad(field, "give both the access key id and the secret, or neither");
                }
                if let Some(prefix) = &self.s3_prefix
                    && (prefix.contains("..") || prefix.starts_with('/'))
                {
                    return bad("backups.s3_prefix", "must be a relative key prefix without '..'");
                }
            }
        }
        Ok(())
    }
}

/// A configuration value that cannot be used, and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid api config `{field}`: {message}")]
pub struct ConfigError {
    pub field: &'static str,
    pub message: String,
}

impl ApiConfig {
    /// Applies `DATABASE_URL`, `RESPAWN_ADMIN_TOKEN` and `RESPAWN_API_LISTEN`
    /// (an address) when they are set.
    pub fn with_env(mut self) -> Self {
        if let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
            self.database_url = url;
        }
        if let Some(token) = std::env::var("RESPAWN_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()) {
            self.admin_token = Some(token);
        }
        if let Some(listen) = std::env::var("RESPAWN_API_LISTEN").ok().and_then(|l| l.parse().ok()) {
            self.listen = listen;
        }
        self
    }

    /// The configuration for `respawn api`: the TOML file when given
    /// (defaults otherwise), then the environment overrides, then checked.
    /// Errors name the file and the bad key.
    pub fn load(path: Option<&std::path::Path>) -> anyhow::Result<ApiConfig> {
        let config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("reading api config {}: {e}", path.display()))?;
                toml::from_str::<ApiConfig>(&text).map_err(|e| anyhow::anyhow!("api config {}: {e}", path.display()))?
            }
            None => ApiConfig::default(),
        }
        .with_env();
        config.validate()?;
        Ok(config)
    }

    /// Checks every value; the error names the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, message: &str| Err(ConfigError { field, message: message.to_owned() });
        if crate::db::Backend::of_url(&self.database_url).is_none() {
            return bad("database_url", "must start with sqlite: or postgres://");
        }
        if let Some(token) = &self.admin_token {
            if token.len() < MIN_ADMIN_TOKEN_LEN {
                return bad("admin_token", "must be at least 32 characters");
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return bad("admin_token", "must be printable ASCII without spaces");
            }
        }
        if self.max_connections == 0 {
            return bad("max_connections", "must be at least 1");
        }
        if self.max_body_bytes < 1024 {
            return bad("max_body_bytes", "must be at least 1024");
        }
        if self.auth_failures_per_minute == 0 {
            return bad("auth_failures_per_minute", "must be at least 1");
        }
        if self.auth_failure_burst == 0 {
            return bad("auth_failure_burst", "must be at least 1");
        }
        self.backups.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = ApiConfig::default();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn names_the_bad_field() {
        let c = ApiConfig { admin_token: Some("short".into()), ..ApiConfig::default() };
        assert_eq!(c.validate().map_err(|e| e.field), Err("admin_token"));
        let c = ApiConfig { database_url: "mysql://x".into(), ..ApiConfig::default() };
        assert_eq!(c.validate().map_err(|e| e.field), Err("database_url"));
        let c = ApiConfig { auth_failure_burst: 0, ..ApiConfig::default() };
        assert_eq!(c.validate().map_err(|e| e.field), Err("auth_failure_burst"));
    }

    #[test]
    fn backup_settings_name_the_bad_field() {
        let s3 = |tweak: fn(&mut BackupConfig)| {
            let mut b = BackupConfig {
                store: BackupStoreKind::S3,
                s3_bucket: Some("respawn-backups".into()),
                s3_endpoint: Some("https://s3.example.com".into()),
                ..BackupConfig::default()
            };
            tweak(&mut b);
            ApiConfig { backups: b, ..ApiConfig::default() }.validate().map_err(|e| e.field)
        };
        assert_eq!(s3(|_| {}), Ok(()));
        assert_eq!(s3(|b| b.s3_bucket = None), Err("backups.s3_bucket"));
        assert_eq!(s3(|b| b.s3_bucket = Some("Bad_Bucket".into())), Err("backups.s3_bucket"));
        assert_eq!(s3(|b| b.s3_endpoint = Some("http://127.0.0.1:9000".into())), Err("backups.s3_endpoint"));
        assert_eq!(
            s3(|b| {
                b.s3_endpoint = Some("http://127.0.0.1:9000".into());
                b.s3_allow_http = true;
            }),
            Ok(())
        );
        assert_eq!(s3(|b| b.s3_endpoint = Some("ftp://x".into())), Err("backups.s3_endpoint"));
        assert_eq!(s3(|b| b.s3_region = String::new()), Err("backups.s3_region"));
        assert_eq!(s3(|b| b.s3_access_key_id = Some("AKIA".into())), Err("backups.s3_secret_access_key"));
        assert_eq!(s3(|b| b.s3_secret_access_key = Some("s".into())), Err("backups.s3_access_key_id"));
        assert_eq!(s3(|b| b.s3_prefix = Some("../x".into())), Err("backups.s3_prefix"));
        assert_eq!(s3(|b| b.max_concurrent = 0), Err("backups.max_concurrent"));
        let toml = "[backups]\nstore = \"s3\"\ns3_bucket = \"b-1\"\ns3_allow_http = true\n";
        let parsed: ApiConfig = toml::from_str(toml).expect("parses");
        assert_eq!(parsed.backups.store, BackupStoreKind::S3);
        assert!(toml::from_str::<ApiConfig>("[backups]\ns3_bukket = \"x\"\n").is_err());
    }

    #[test]
    fn loads_toml_and_names_bad_keys() {
        let dir = std::env::temp_dir().join(format!("respawn-api-config-{}", crate::db::new_id("t")));
        let _ = std::fs::create_dir_all(&dir);
        let good = dir.join("good.toml");
        let _ = std::fs::write(&good, "listen = \"0.0.0.0:9000\"\nauth_failure_burst = 3\n");
        let loaded = ApiConfig::load(Some(&good)).map_err(|e| e.to_string());
        assert_eq!(loaded.as_ref().map(|c| c.listen.port()), Ok(9000));
        assert_eq!(loaded.map(|c| c.auth_failure_burst), Ok(3));
        let bad = dir.join("bad.toml");
        let _ = std::fs::write(&bad, "max_conections = 3\n");
        let err = ApiConfig::load(Some(&bad)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("max_conections"), "{err}");
        let _ = std::fs::write(&bad, "max_connections = 0\n");
        let err = ApiConfig::load(Some(&bad)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("max_connections"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn refuses_unknown_keys() {
        let err = serde_json::from_str::<ApiConfig>(r#"{"listen":"0.0.0.0:80","admin_tokn":"x"}"#)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("admin_tokn"), "{err}");
    }
}
