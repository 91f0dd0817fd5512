//! The API's configuration: where to listen, which database, the admin token
//! and the bounds. Unknown keys are refused and every check names its field.

use std::net::SocketAddr;

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
        }
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
    /// Applies `DATABASE_URL` and `RESPAWN_ADMIN_TOKEN` when they are set.
    pub fn with_env(mut self) -> Self {
        if let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
            self.database_url = url;
        }
        if let Some(token) = std::env::var("RESPAWN_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()) {
            self.admin_token = Some(token);
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
                toml::from_str::<ApiConfig>(&text)
                    .map_err(|e| anyhow::anyhow!("api config {}: {e}", path.display()))?
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
        Ok(())
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
