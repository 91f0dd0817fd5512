//! The local runtime's typed configuration: one [`ServerConfig`] per server
//! (a `[[servers]]` entry of `respawn.toml`, or built by `respawn up` for a
//! server created through the API) and the [`RuntimeConfig`] (`[runtime]`).

use std::{collections::HashMap, path::PathBuf, time::Duration};

use respawn_contract::{
    PluginSpec, RouteSpec,
    policy::{self, PolicySpec},
    spec::{validate_backend, validate_hostname_pattern},
};
use serde::Deserialize;

use crate::error::ConfigError;

pub const DEFAULT_STOP_TIMEOUT_MS: u64 = 30_000;
/// Modded servers can take minutes to start; a start slower than this failed.
pub const DEFAULT_START_TIMEOUT_MS: u64 = 300_000;
pub const DEFAULT_LOG_MAX_BYTES: u64 = 10 * 1024 * 1024;
pub const DEFAULT_LOG_KEEP: u32 = 3;

/// One `[[servers]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub name: String,
    pub hostnames: Vec<String>,
    /// Where the process listens (`host:port`): the proxy's backend.
    pub address: String,
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Working (data) directory, created when missing. Relative paths are
    /// under `runtime.data_dir`.
    pub dir: Option<PathBuf>,
    #[serde(default)]
    pub env: HashMap<String, String>,
    #[serde(default = "default_stop_command")]
    pub stop_command: String,
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout_ms: u64,
    #[serde(default = "default_start_timeout")]
    pub start_timeout_ms: u64,
    #[serde(default = "default_idle")]
    pub idle_timeout_ms: u64,
    #[serde(default = "default_min_online")]
    pub min_online_ms: u64,
    /// Keep it up whatever the policy says.
    #[serde(default)]
    pub pinned: bool,
    /// Names or UUIDs allowed to wake it; empty means everyone.
    #[serde(default)]
    pub allow_wake: Vec<String>,
    #[serde(default)]
    pub proxy_protocol: bool,
    /// RCON of the server: `stop` and console commands (backups' save-off /
    /// save-all / save-on) go there instead of stdin.
    #[serde(default)]
    pub rcon: Option<RconSettings>,
    /// Plugins the platform manages in `plugins/`, synced before each start.
    #[serde(default)]
    pub plugins: Vec<PluginSpec>,
}

/// `rcon = { address = "127.0.0.1:25575", password = "…" }`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RconSettings {
    pub address: String,
    pub password: String,
}

fn default_stop_command() -> String {
    "stop".into()
}
fn default_stop_timeout() -> u64 {
    DEFAULT_STOP_TIMEOUT_MS
}
fn default_start_timeout() -> u64 {
    DEFAULT_START_TIMEOUT_MS
}
fn default_idle() -> u64 {
    policy::DEFAULT_IDLE_TIMEOUT.as_millis() as u64
}
fn default_min_online() -> u64 {
    policy::DEFAULT_MIN_ONLINE.as_millis() as u64
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { field: field.into(), message: message.into() }
}

impl ServerConfig {
    /// Checks one server on its own; the error names the field. (That names
    /// and hostnames are unique across servers and routes is the caller's
    /// check: it sees them all.)
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.name.is_empty() || self.name.len() > 63 {
            return Err(invalid("name", "must be 1 to 63 characters"));
        }
        for (j, host) in self.hostnames.iter().enumerate() {
            validate_hostname_pattern(host).map_err(|m| invalid(format!("hostnames[{j}]"), m))?;
        }
        validate_backend(&self.address).map_err(|m| invalid("address", m))?;
        if self.command.trim().is_empty() {
            return Err(invalid("command", "must not be empty"));
        }
        if self.stop_timeout_ms == 0 {
            return Err(invalid("stop_timeout_ms", "must be greater than 0"));
        }
        if self.start_timeout_ms == 0 {
            return Err(invalid("start_timeout_ms", "must be greater than 0"));
        }
        if let Some(r) = &self.rcon {
            if r.address.trim().is_empty() {
                return Err(invalid("rcon.address", "must not be empty"));
            }
            if r.password.is_empty() {
                return Err(invalid("rcon.password", "must not be empty (the server refuses RCON without one)"));
            }
        }
        for (i, entry) in self.allow_wake.iter().enumerate() {
            if entry.is_empty() {
                return Err(invalid("allow_wake", format!("entry {i} is empty")));
            }
        }
        Ok(())
    }

    /// The scaling policy's view of this server: a single replica that may
    /// sleep unless pinned.
    pub fn policy(&self) -> PolicySpec {
        PolicySpec {
            min_replicas: u32::from(self.pinned),
            max_replicas: 1,
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            min_online: Duration::from_millis(self.min_online_ms),
            ..PolicySpec::default()
        }
    }

    /// The proxy route that leads players to this server.
    pub fn route(&self) -> RouteSpec {
        RouteSpec {
            name: self.name.clone(),
            hostnames: self.hostnames.clone(),
            backends: vec![self.address.clone()],
            proxy_protocol: self.proxy_protocol,
            fallback_status: None,
        }
    }
}

/// `[runtime]`: where data and logs live.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    pub data_dir: PathBuf,
    pub log_max_bytes: u64,
    pub log_keep: u32,
    /// Plugin downloads may go to private, loopback and link-local addresses
    /// (never the cloud metadata ones). Off: public https only.
    pub plugins_allow_private: bool,
    /// Extra root CA (PEM) trusted for plugin downloads.
    pub plugins_ca_file: Option<PathBuf>,
    /// Largest plugin download, bytes.
    pub plugins_max_bytes: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            data_dir: "data".into(),
            log_max_bytes: DEFAULT_LOG_MAX_BYTES,
            log_keep: DEFAULT_LOG_KEEP,
            plugins_allow_private: false,
            plugins_ca_file: None,
            plugins_max_bytes: respawn_plugins::FetchPolicy::default().max_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(extra: &str) -> Result<ServerConfig, String> {
        toml::from_str(&format!(
            "name = \"s\"\nhostnames = [\"s.example\"]\naddress = \"127.0.0.1:1\"\ncommand = \"true\"\n{extra}"
        ))
        .map_err(|e| e.to_string())
    }

    #[test]
    fn errors_name_the_field() {
        let field = |extra: &str| server(extra).unwrap().validate().unwrap_err().field;
        assert!(server("").unwrap().validate().is_ok());
        assert_eq!(field("stop_timeout_ms = 0"), "stop_timeout_ms");
        assert_eq!(field("rcon = { address = \"127.0.0.1:2\", password = \"\" }"), "rcon.password");
        assert_eq!(field("allow_wake = [\"\"]"), "allow_wake");
        let mut bad = server("").unwrap();
        bad.address = "nowhere".into();
        assert_eq!(bad.validate().unwrap_err().field, "address");
        bad = server("").unwrap();
        bad.hostnames = vec!["bad host".into()];
        assert_eq!(bad.validate().unwrap_err().field, "hostnames[0]");
        assert!(server("comand = \"x\"").unwrap_err().contains("comand"));
    }

    #[test]
    fn a_server_is_a_route_to_its_address() {
        let r = server("proxy_protocol = true").unwrap().route();
        assert_eq!(
            (r.name.as_str(), r.backends.as_slice(), r.proxy_protocol),
            ("s", &["127.0.0.1:1".to_owned()][..], true)
        );
    }
}
