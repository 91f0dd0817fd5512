//! The proxy's typed configuration: listeners, limits, status texts and
//! routes. (`respawn.toml` as a whole — servers, runtime, API — is the
//! `respawn` binary's schema; it hands the proxy this part.)
//!
//! Every limit has a named default. `Config::parse` rejects unknown fields and
//! validates names, hostnames and addresses, naming the offending field, so a
//! bad file never replaces a good one.

use std::{net::SocketAddr, time::Duration};

use ipnet::IpNet;
pub use respawn_contract::RouteSpec;
use respawn_contract::spec::{validate_backend, validate_hostname_pattern};
use serde::Deserialize;

/// Auto-version clients idle ~1 s before their handshake; 3 s leaves room
/// and still frees a silent socket quickly.
pub const DEFAULT_FIRST_PACKET_TIMEOUT_MS: u64 = 3_000;
/// Beta and 1.4 legacy pings have no terminator: wait this long for more.
pub const DEFAULT_LEGACY_WAIT_MS: u64 = 150;
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
/// A player reconnecting a few times in a row is fine; a flood is not.
pub const DEFAULT_PER_IP_PER_SECOND: u32 = 10;
pub const DEFAULT_PER_IP_BURST: u32 = 30;
/// A /24 (or /64) may hold a LAN party or a carrier NAT.
pub const DEFAULT_PER_PREFIX_PER_SECOND: u32 = 50;
pub const DEFAULT_PER_PREFIX_BURST: u32 = 150;
pub const DEFAULT_BACKEND_CONNECT_TIMEOUT_MS: u64 = 3_000;
/// Backend answer to a status request, connect included.
pub const DEFAULT_STATUS_TIMEOUT_MS: u64 = 2_000;
/// Each direction of a relayed session gets one buffer of this size.
pub const DEFAULT_RELAY_BUFFER_BYTES: usize = 32_768;
pub const DEFAULT_CLOSE_LINGER_MS: u64 = 2_000;
/// A status JSON with a 64×64 favicon is ~10 KiB; leave generous room.
pub const DEFAULT_MAX_STATUS_BYTES: usize = 256 * 1024;
pub const DEFAULT_STATUS_CACHE_TTL_MS: u64 = 2_000;
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;
/// Mojang's client gives up on a silent login after ~30 s: hold below that.
pub const DEFAULT_WAKE_HOLD_MS: u64 = 25_000;
pub const MAX_WAKE_HOLD_MS: u64 = 29_000;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config: {0}")]
    Parse(String),
    #[error("config field `{field}`: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), message: message.into() }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listen: Listen,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub status: StatusTexts,
    #[serde(default)]
    pub proxy_protocol: ProxyProtocolIn,
    /// Name of the route used when no hostname matches.
    pub default_route: Option<String>,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// Where players connect.
    pub address: SocketAddr,
    /// Metrics and health; keep it off the public interface.
    pub admin_address: SocketAddr,
    /// Threads that accept and serve players, each with its own listener on
    /// `address` (SO_REUSEPORT) and its own single-threaded runtime; 0 means
    /// one per CPU.
    pub threads: usize,
    /// Pending-connection queue of each listener (the kernel caps it at
    /// net.core.somaxconn).
    pub backlog: u32,
}

/// Matches what tokio's `TcpListener::bind` asks for.
pub const DEFAULT_LISTEN_BACKLOG: u32 = 1024;
/// More accept threads than this is a typo, not a machine.
pub const MAX_LISTEN_THREADS: usize = 1024;

impl Listen {
    /// The number of proxy threads to run (`threads`, or one per CPU).
    pub fn thread_count(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        }
    }
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            address: ([0, 0, 0, 0], 25565).into(),
            admin_address: ([127, 0, 0, 1], 9100).into(),
            threads: 0,
            backlog: DEFAULT_LISTEN_BACKLOG,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub first_packet_timeout_ms: u64,
    pub legacy_ping_wait_ms: u64,
    pub max_connections: usize,
    pub per_ip_per_second: u32,
    pub per_ip_burst: u32,
    pub per_prefix_per_second: u32,
    pub per_prefix_burst: u32,
    pub backend_connect_timeout_ms: u64,
    pub status_timeout_ms: u64,
    pub relay_buffer_bytes: usize,
    /// Relay with splice(2) where the proxy need not see the bytes (Linux;
    /// ignored elsewhere): client → server always, server → client once the
    /// stream is encrypted. Off: every byte is copied through a buffer.
    pub splice: bool,
    pub max_status_bytes: usize,
    pub shutdown_grace_ms: u64,
    /// How long a login waits for a sleeping server to come up.
    pub wake_hold_ms: u64,
    /// After the backend ended a session, how long the proxy waits for the
    /// client to read its Disconnect and close before it drops the socket.
    pub close_linger_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            first_packet_timeout_ms: DEFAULT_FIRST_PACKET_TIMEOUT_MS,
            legacy_ping_wait_ms: DEFAULT_LEGACY_WAIT_MS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            per_ip_per_second: DEFAULT_PER_IP_PER_SECOND,
            per_ip_burst: DEFAULT_PER_IP_BURST,
            per_prefix_per_second: DEFAULT_PER_PREFIX_PER_SECOND,
            per_prefix_burst: DEFAULT_PER_PREFIX_BURST,
            backend_connect_timeout_ms: DEFAULT_BACKEND_CONNECT_TIMEOUT_MS,
            status_timeout_ms: DEFAULT_STATUS_TIMEOUT_MS,
            relay_buffer_bytes: DEFAULT_RELAY_BUFFER_BYTES,
            splice: true,
            max_status_bytes: DEFAULT_MAX_STATUS_BYTES,
            shutdown_grace_ms: DEFAULT_SHUTDOWN_GRACE_MS,
            wake_hold_ms: DEFAULT_WAKE_HOLD_MS,
            close_linger_ms: DEFAULT_CLOSE_LINGER_MS,
        }
    }
}

impl Limits {
    pub fn first_packet_timeout(&self) -> Duration {
        Duration::from_millis(self.first_packet_timeout_ms)
    }
    pub fn legacy_ping_wait(&self) -> Duration {
        Duration::from_millis(self.legacy_ping_wait_ms)
    }
    pub fn backend_connect_timeout(&self) -> Duration {
        Duration::from_millis(self.backend_connect_timeout_ms)
    }
    pub fn status_timeout(&self) -> Duration {
        Duration::from_millis(self.status_timeout_ms)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
    pub fn wake_hold(&self) -> Duration {
        Duration::from_millis(self.wake_hold_ms)
    }
    pub fn close_linger(&self) -> Duration {
        Duration::from_millis(self.close_linger_ms)
    }
}

/// Texts the proxy shows when it answers for a server. `{host}` is replaced
/// by the requested hostname, `{route}` by the route's name.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StatusTexts {
    pub cache_ttl_ms: u64,
    pub unknown_motd: String,
    pub unknown_disconnect: String,
    pub stale_motd: String,
    pub unreachable_motd: String,
    pub unreachable_disconnect: String,
    /// Version name shown in answers the proxy makes up.
    pub version_name: String,
    /// Status of a sleeping server (the last real status, this MOTD).
    pub sleeping_motd: String,
    pub starting_motd: String,
    /// Login refused by a server's wake allow-list.
    pub not_allowed_disconnect: String,
    /// Past the hold: `{seconds}` is the remaining start estimate.
    pub starting_disconnect: String,
    /// The start failed: `{reason}` says why.
    pub wake_failed_disconnect: String,
    /// The backend ended a session the player had not left (it crashed,
    /// was killed or restarted without kicking anyone).
    pub backend_lost_disconnect: String,
    /// Where the status cache is kept across restarts (none: memory only).
    pub cache_file: Option<std::path::PathBuf>,
}

impl Default for StatusTexts {
    fn default() -> Self {
        Self {
            cache_ttl_ms: DEFAULT_STATUS_CACHE_TTL_MS,
            unknown_motd: "§cUnknown server §7{host}".into(),
            unknown_disconnect: "There is no server at {host}. Check the address and try again.".into(),
            stale_motd: "§6Server unreachable §7— last known status".into(),
            unreachable_motd: "§cServer unreachable".into(),
            unreachable_disconnect: "The server {host} is not reachable right now. Try again in a moment.".into(),
            version_name: "Respawn".into(),
            sleeping_motd: "§7Sleeping §8— §ajoin to wake it up".into(),
            starting_motd: "§eStarting… §7join in a moment".into(),
            not_allowed_disconnect: "{route} is asleep and you are not on the list of players who may wake it.".into(),
            starting_disconnect: "{route} is starting. Join again in ~{seconds} s.".into(),
            wake_failed_disconnect: "{route} failed to start: {reason}. Try again in a moment.".into(),
            backend_lost_disconnect: "{route} stopped unexpectedly (it may have crashed). Join again in a moment."
                .into(),
            cache_file: None,
        }
    }
}

impl StatusTexts {
    pub fn cache_ttl(&self) -> Duration {
        Duration::from_millis(self.cache_ttl_ms)
    }
}

/// Who may put a PROXY protocol v2 header in front of their connection.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyProtocolIn {
    pub trusted_cidrs: Vec<IpNet>,
}

impl Config {
    /// Parses and validates a TOML document.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        for (field, value) in [
            ("limits.first_packet_timeout_ms", l.first_packet_timeout_ms),
            ("limits.backend_connect_timeout_ms", l.backend_connect_timeout_ms),
            ("limits.status_timeout_ms", l.status_timeout_ms),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be greater than 0"));
            }
        }
        if l.max_connections == 0 {
            return Err(invalid("limits.max_connections", "must be greater than 0"));
        }
        if self.listen.threads > MAX_LISTEN_THREADS {
            return Err(invalid("listen.threads", format!("must be at most {MAX_LISTEN_THREADS} (0: one per CPU)")));
        }
        if self.listen.backlog == 0 {
            return Err(invalid("listen.backlog", "must be greater than 0"));
        }
        for (field, rate, burst) in [
            ("limits.per_ip", l.per_ip_per_second, l.per_ip_burst),
            ("limits.per_prefix", l.per_prefix_per_second, l.per_prefix_burst),
        ] {
            if rate == 0 || burst == 0 {
                return Err(invalid(format!("{field}_per_second/{field}_burst"), "must be greater than 0"));
            }
        }
        if !(512..=1 << 20).contains(&l.relay_buffer_bytes) {
            return Err(invalid("limits.relay_buffer_bytes", "must be between 512 and 1048576"));
        }
        if !(1..=MAX_WAKE_HOLD_MS).contains(&l.wake_hold_ms) {
            return Err(invalid(
                "limits.wake_hold_ms",
                format!("must be between 1 and {MAX_WAKE_HOLD_MS} (clients give up at ~30 s)"),
            ));
        }
        if !(1024..=respawn_codec::frame::MAX_FRAME_LEN).contains(&l.max_status_bytes) {
            return Err(invalid("limits.max_status_bytes", "must be between 1024 and 2097151"));
        }
        // Every route has its own name and its own hostnames.
        let mut names = std::collections::HashSet::new();
        let mut hosts = std::collections::HashMap::new();
        let mut claim = |at: &dyn Fn(&str) -> String, name: &str, hostnames: &[String]| -> Result<(), ConfigError> {
            if name.is_empty() || name.len() > 63 {
                return Err(invalid(at("name"), "must be 1 to 63 characters"));
            }
            if !names.insert(name.to_owned()) {
                return Err(invalid(at("name"), format!("`{name}` is already a route")));
            }
            for (j, host) in hostnames.iter().enumerate() {
                let key = validate_hostname_pattern(host).map_err(|m| invalid(at(&format!("hostnames[{j}]")), m))?;
                if let Some(other) = hosts.insert(key, name.to_owned()) {
                    return Err(invalid(
                        at(&format!("hostnames[{j}]")),
                        format!("`{host}` is already routed to `{other}`"),
                    ));
                }
            }
            Ok(())
        };
        for (i, route) in self.routes.iter().enumerate() {
            let at = |f: &str| format!("routes[{i}].{f}");
            claim(&at, &route.name, &route.hostnames)?;
            if route.backends.is_empty() {
                return Err(invalid(at("backends"), "needs at least one backend address"));
            }
            for (j, backend) in route.backends.iter().enumerate() {
                validate_backend(backend).map_err(|m| invalid(at(&format!("backends[{j}]")), m))?;
            }
            if let Some(json) = &route.fallback_status {
                serde_json::from_str::<serde_json::Value>(json)
                    .map_err(|e| invalid(at("fallback_status"), format!("is not JSON: {e}")))?;
            }
        }
        if let Some(default) = &self.default_route
            && !names.contains(default.as_str())
        {
            return Err(invalid("default_route", format!("no route is named `{default}`")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        default_route = "lobby"
        [limits]
        first_packet_timeout_ms = 2500
        [[routes]]
        name = "survival"
        hostnames = ["survival.acme.example", "*.acme.example"]
        backends = ["127.0.0.1:25566"]
        [[routes]]
        name = "lobby"
        hostnames = ["lobby.example"]
        backends = ["localhost:25567", "127.0.0.1:25568"]
        proxy_protocol = true
    "#;

    #[test]
    fn parses_with_defaults() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.limits.first_packet_timeout_ms, 2500);
        assert_eq!(c.limits.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(c.routes[1].backends.len(), 2);
        assert!(c.routes[1].proxy_protocol);
    }

    fn err(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err("[limits]\nmax_conections = 5").contains("max_conections"));
        assert!(err("[limits]\nfirst_packet_timeout_ms = 0").contains("limits.first_packet_timeout_ms"));
        let bad_host = r#"[[routes]]
            name = "a"
            hostnames = ["bad host"]
            backends = ["127.0.0.1:1"]"#;
        assert!(err(bad_host).contains("routes[0].hostnames[0]"));
        let bad_backend = r#"[[routes]]
            name = "a"
            hostnames = ["a.example"]
            backends = ["127.0.0.1"]"#;
        assert!(err(bad_backend).contains("routes[0].backends[0]"));
        let dup = r#"[[routes]]
            name = "a"
            hostnames = ["a.example"]
            backends = ["127.0.0.1:1"]
            [[routes]]
            name = "b"
            hostnames = ["A.Example."]
            backends = ["127.0.0.1:2"]"#;
        assert!(err(dup).contains("routes[1].hostnames[0]"));
        assert!(err("default_route = \"nope\"").contains("default_route"));
        assert!(err("[listen]\naddress = \"nowhere\"").contains("address"));
        assert!(err("[listen]\nthreads = 5000").contains("listen.threads"));
        assert!(err("[listen]\nbacklog = 0").contains("listen.backlog"));
    }

    #[test]
    fn zero_threads_means_one_per_cpu() {
        let auto = Config::parse("").unwrap().listen;
        assert_eq!(auto.threads, 0);
        assert_eq!(auto.thread_count(), std::thread::available_parallelism().unwrap().get());
        assert_eq!(Config::parse("[listen]\nthreads = 3").unwrap().listen.thread_count(), 3);
    }
}
