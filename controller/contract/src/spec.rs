//! What a route and a plugin are, once, for every component: the proxy's
//! config file and Kubernetes discovery both produce [`RouteSpec`]s; the API,
//! the local runtime, the MinecraftServer renderer and `respawn plugin-sync`
//! all pass [`PluginSpec`]s. Also the hostname and address checks every
//! producer of routes applies.

use serde::{Deserialize, Serialize};

/// One route: the hostnames that lead to a server (or fleet) and where it
/// listens. A `[[routes]]` entry of the proxy's config has exactly this shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub name: String,
    /// Exact names and `*.suffix` wildcards, matched case-insensitively.
    pub hostnames: Vec<String>,
    /// `host:port` backends, tried round-robin with failover.
    pub backends: Vec<String>,
    /// Send a PROXY protocol v2 header to the backends.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Status JSON to answer with when the backend is down and nothing is cached.
    #[serde(default)]
    pub fallback_status: Option<String>,
}

/// One plugin a server should have, synced into its `plugins/` directory
/// before each start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginSpec {
    /// Also the jar's file name: `<name>.jar`. Letters, digits, `.`, `_`, `-`; at most 64
    /// characters; not starting with `.`.
    pub name: String,
    pub version: String,
    pub download_url: String,
    /// Lower- or upper-case hex; at least one of the two is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
}

/// Checks an exact name or a `*.suffix` wildcard and returns its lookup key
/// (lowercase, no trailing dot; wildcards keep their `*.`).
pub fn validate_hostname_pattern(pattern: &str) -> Result<String, String> {
    let lower = pattern.trim_end_matches('.').to_ascii_lowercase();
    let name = lower.strip_prefix("*.").unwrap_or(&lower);
    if name.is_empty() || name.len() > 253 {
        return Err(format!("`{pattern}` is not a hostname (1 to 253 characters)"));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!("`{pattern}` is not a hostname (label `{label}`)"));
        }
    }
    Ok(lower)
}

/// Checks a `host:port` backend address.
pub fn validate_backend(addr: &str) -> Result<(), String> {
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| format!("`{addr}` needs a port (host:port)"))?;
    port.parse::<u16>().map_err(|_| format!("`{addr}` has an invalid port"))?;
    if host.is_empty() {
        return Err(format!("`{addr}` has no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_patterns() {
        assert_eq!(validate_hostname_pattern("A.Example.").unwrap(), "a.example");
        assert_eq!(validate_hostname_pattern("*.acme.example").unwrap(), "*.acme.example");
        assert!(validate_hostname_pattern("bad host").is_err());
        assert!(validate_hostname_pattern("-a.example").is_err());
        assert!(validate_hostname_pattern("").is_err());
    }

    #[test]
    fn backends() {
        assert!(validate_backend("127.0.0.1:25565").is_ok());
        assert!(validate_backend("127.0.0.1").is_err());
        assert!(validate_backend(":1").is_err());
        assert!(validate_backend("a:99999").is_err());
    }

    #[test]
    fn plugin_spec_json_shape() {
        let spec: PluginSpec =
            serde_json::from_str(r#"{"name":"a","version":"1","download_url":"https://x/a.jar","sha256":"ab"}"#)
                .unwrap();
        assert_eq!(spec.sha512, None);
        let back = serde_json::to_value(&spec).unwrap();
        assert_eq!(back["sha256"], "ab");
        assert!(back.get("sha512").is_none(), "absent digests are left out: {back}");
    }
}
