//! The `respawn.toml` schema: the `respawn` binary owns it and hands each
//! component its own typed part — the proxy its listeners, limits, texts and
//! routes (the `[[servers]]` included, as routes to their addresses), the
//! local runtime its `[[servers]]` and `[runtime]`, the API its `[api]`, and
//! the embedded wiring its `[api_servers]` template.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::Arc,
};

use respawn_contract::{RouteSpec, spec::validate_hostname_pattern};
use respawn_local::{RuntimeConfig, ServerConfig};
use respawn_proxy::{
    ConfigSource,
    config::{Config as ProxyConfig, ConfigError, Limits, Listen, ProxyProtocolIn, StatusTexts},
};
use serde::Deserialize;

use crate::embedded::ServerTemplate;

/// All of `respawn.toml`. Unknown fields are errors; errors name the field.
///
/// The proxy's fields are listed here again rather than `#[serde(flatten)]`ed
/// from its `Config`: serde cannot deny unknown fields through a flatten, and
/// a typo in `respawn.toml` must stay an error.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RespawnConfig {
    #[serde(default)]
    pub listen: Listen,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub status: StatusTexts,
    #[serde(default)]
    pub proxy_protocol: ProxyProtocolIn,
    /// Name of the route (or server) used when no hostname matches.
    pub default_route: Option<String>,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// Servers the local runtime runs (embedded default); each is also a route.
    #[serde(default)]
    pub servers: Vec<ServerConfig>,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// `[api]`: with it, `respawn up` serves the management API.
    #[serde(default)]
    pub api: Option<respawn_api::ApiConfig>,
    /// `[api_servers]`: how `respawn up` runs the servers created through the API.
    #[serde(default)]
    pub api_servers: Option<ServerTemplate>,
}

fn invalid(field: String, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field, message: message.into() }
}

impl RespawnConfig {
    /// Parses and validates a TOML document.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: RespawnConfig = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text)
    }

    /// Each server on its own and against the routes (names and hostnames
    /// are one namespace), then the proxy's part as a whole.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut names: HashSet<&str> = self.routes.iter().map(|r| r.name.as_str()).collect();
        let mut hosts: HashMap<String, &str> = HashMap::new();
        for r in &self.routes {
            for h in &r.hostnames {
                if let Ok(key) = validate_hostname_pattern(h) {
                    hosts.insert(key, &r.name);
                }
            }
        }
        for (i, server) in self.servers.iter().enumerate() {
            let at = |f: &str| format!("servers[{i}].{f}");
            server.validate().map_err(|e| invalid(at(&e.field), e.message))?;
            if !names.insert(&server.name) {
                return Err(invalid(at("name"), format!("`{}` is already a route or server", server.name)));
            }
            for (j, host) in server.hostnames.iter().enumerate() {
                let key = validate_hostname_pattern(host).map_err(|m| invalid(at(&format!("hostnames[{j}]")), m))?;
                if let Some(other) = hosts.insert(key, &server.name) {
                    return Err(invalid(
                        at(&format!("hostnames[{j}]")),
                        format!("`{host}` is already routed to `{other}`"),
                    ));
                }
            }
        }
        self.proxy().validate()?;
        if let Some(api) = &self.api {
            api.validate().map_err(|e| invalid(format!("api.{}", e.field), e.message))?;
        }
        if let Some(template) = &self.api_servers {
            template.validate().map_err(|e| ConfigError::Parse(e.to_string()))?;
        }
        Ok(())
    }

    /// The proxy's part: its own settings and routes, then a route to each
    /// server's address.
    pub fn proxy(&self) -> ProxyConfig {
        ProxyConfig {
            listen: self.listen.clone(),
            limits: self.limits.clone(),
            status: self.status.clone(),
            proxy_protocol: self.proxy_protocol.clone(),
            default_route: self.default_route.clone(),
            routes: self.routes.iter().cloned().chain(self.servers.iter().map(ServerConfig::route)).collect(),
        }
    }

    /// Where the proxy reloads its part from: this file, read whole.
    pub fn source(path: &Path) -> ConfigSource {
        ConfigSource {
            path: path.to_owned(),
            load: Arc::new(|p: &Path| RespawnConfig::load(p).map(|c| c.proxy()).map_err(|e| e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        RespawnConfig::parse(text).unwrap_err().to_string()
    }

    const SERVER: &str =
        "[[servers]]\nname = \"s\"\nhostnames = [\"s.example\"]\naddress = \"127.0.0.1:30000\"\ncommand = \"true\"\n";

    #[test]
    fn servers_become_routes_and_errors_name_the_field() {
        let c = RespawnConfig::parse(&format!("default_route = \"s\"\n{SERVER}")).unwrap();
        let proxy = c.proxy();
        assert_eq!(proxy.routes.len(), 1);
        assert_eq!(proxy.routes[0].backends, ["127.0.0.1:30000"]);
        assert_eq!(proxy.default_route.as_deref(), Some("s"));

        let route = "[[routes]]\nname = \"r\"\nhostnames = [\"S.Example.\"]\nbackends = [\"127.0.0.1:1\"]\n";
        assert!(err(&format!("{route}{SERVER}")).contains("servers[0].hostnames[0]"));
        assert!(err(&format!("{SERVER}{}", SERVER.replace("s.example", "t.example"))).contains("servers[1].name"));
        assert!(err(&SERVER.replace("127.0.0.1:30000", "nowhere")).contains("servers[0].address"));
        assert!(err(&format!("{SERVER}stop_timeout_ms = 0\n")).contains("servers[0].stop_timeout_ms"));
        assert!(err("[limits]\nfirst_packet_timeout_ms = 0").contains("limits.first_packet_timeout_ms"));
        assert!(err("[runtime]\ndata_dri = \"x\"").contains("data_dri"));
        assert!(err("[api_servers]\nports = [40, 30]").contains("api_servers.ports"));
        assert!(err("[api]\nadmin_token = \"short\"").contains("admin_token"));
        assert!(err("default_route = \"nope\"").contains("default_route"));
    }

    /// The example `respawn up` reads out of the box is valid in every part.
    #[test]
    fn the_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/respawn.toml");
        let config = RespawnConfig::load(&path).unwrap();
        assert!(config.api.is_some());
        assert_eq!(config.api_servers.unwrap().command, "respawn");
        assert!(config.servers.iter().any(|s| s.name == "demo"));
    }
}
