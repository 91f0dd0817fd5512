//! `RouteTable`: hostname → route, built once per configuration and swapped
//! atomically on reload, so lookups take no lock.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use respawn_codec::normalize_host;

use crate::config::{Config, RouteSpec};

/// One tenant server (or fleet) reachable through the proxy.
#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub backends: Vec<String>,
    pub proxy_protocol: bool,
    pub fallback_status: Option<String>,
    next: AtomicUsize,
    /// This route's metric series, resolved on first use.
    metrics: std::sync::OnceLock<crate::metrics::RouteMetrics>,
}

impl Route {
    /// The route's series in `metrics` (logins, players online, connect time).
    pub fn metrics(&self, metrics: &crate::metrics::Metrics) -> &crate::metrics::RouteMetrics {
        self.metrics.get_or_init(|| metrics.for_route(&self.name))
    }

    pub fn from_spec(c: &RouteSpec) -> Self {
        Self {
            name: c.name.as_str().into(),
            backends: c.backends.clone(),
            proxy_protocol: c.proxy_protocol,
            fallback_status: c.fallback_status.clone(),
            next: AtomicUsize::new(0),
            metrics: std::sync::OnceLock::new(),
        }
    }

    /// Backends in the order to try them: round-robin start, then the rest.
    pub fn backend_order(&self) -> impl Iterator<Item = &str> {
        let n = self.backends.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n.max(1);
        (0..n).map(move |i| self.backends[(start + i) % n].as_str())
    }
}

#[derive(Debug, Default)]
pub struct RouteTable {
    exact: HashMap<Box<str>, Arc<Route>>,
    /// Keyed by the suffix after `*.`.
    wildcard: HashMap<Box<str>, Arc<Route>>,
    default: Option<Arc<Route>>,
}

impl RouteTable {
    /// Builds the table from a validated config.
    pub fn from_config(config: &Config) -> Self {
        Self::with_discovered(config, &[])
    }

    /// The config's routes, then routes from the platform (Kubernetes, the
    /// embedded API); a hostname the config already routes keeps its config
    /// route.
    pub fn with_discovered(config: &Config, discovered: &[RouteSpec]) -> Self {
        let mut table = RouteTable::default();
        let routes = config.routes.iter().map(|rc| (Route::from_spec(rc), &rc.hostnames, false));
        let found = discovered.iter().map(|rc| (Route::from_spec(rc), &rc.hostnames, true));
        for (route, hostnames, weak) in routes.chain(found) {
            let route = Arc::new(route);
            for pattern in hostnames {
                let key = pattern.trim_end_matches('.').to_ascii_lowercase();
                let (map, key) = match key.strip_prefix("*.") {
                    Some(suffix) => (&mut table.wildcard, suffix.to_owned()),
                    None => (&mut table.exact, key),
                };
                if weak && map.contains_key(key.as_str()) {
                    continue;
                }
                map.insert(key.into(), route.clone());
            }
            if config.default_route.as_deref() == Some(&*route.name) {
                table.default = Some(route);
            }
        }
        table
    }

    /// Finds the route for a handshake host: exact name, then the most
    /// specific wildcard, then the default route.
    pub fn lookup(&self, raw_host: &str) -> Option<&Arc<Route>> {
        let host = normalize_host(raw_host);
        let host = host.as_ref();
        if let Some(r) = self.exact.get(host) {
            return Some(r);
        }
        if !self.wildcard.is_empty() {
            let mut rest = host;
            while let Some((_, suffix)) = rest.split_once('.') {
                if let Some(r) = self.wildcard.get(suffix) {
                    return Some(r);
                }
                rest = suffix;
            }
        }
        self.default.as_ref()
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.default.is_none()
    }

    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.exact.values().chain(self.wildcard.values()).chain(self.default.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        let c = Config::parse(
            r#"
            default_route = "fallback"
            [[routes]]
            name = "survival"
            hostnames = ["survival.acme.example"]
            backends = ["127.0.0.1:1"]
            [[routes]]
            name = "acme"
            hostnames = ["*.acme.example"]
            backends = ["127.0.0.1:2"]
            [[routes]]
            name = "deep"
            hostnames = ["*.eu.acme.example"]
            backends = ["127.0.0.1:3"]
            [[routes]]
            name = "fallback"
            hostnames = []
            backends = ["127.0.0.1:4", "127.0.0.1:5"]
            "#,
        )
        .unwrap();
        RouteTable::from_config(&c)
    }

    fn name(t: &RouteTable, host: &str) -> String {
        t.lookup(host).map(|r| r.name.to_string()).unwrap_or_default()
    }

    #[test]
    fn exact_wildcard_default() {
        let t = table();
        assert_eq!(name(&t, "survival.acme.example"), "survival");
        assert_eq!(name(&t, "creative.acme.example"), "acme");
        assert_eq!(name(&t, "x.eu.acme.example"), "deep");
        assert_eq!(name(&t, "acme.example"), "fallback");
        assert_eq!(name(&t, "other.example"), "fallback");
    }

    #[test]
    fn normalisation() {
        let t = table();
        for host in [
            "Survival.Acme.Example",
            "survival.acme.example.",
            "SURVIVAL.acme.example.\0FML3\0",
            "survival.acme.example\0FML\0",
            "survival.acme.example\0FML2\0",
            "survival.acme.example\0FORGE",
            "survival.acme.example///10.0.0.1:1234///1700000000///sig",
        ] {
            assert_eq!(name(&t, host), "survival", "{host:?}");
        }
    }

    #[test]
    fn discovered_routes_never_override_config() {
        let c =
            Config::parse("[[routes]]\nname = \"cfg\"\nhostnames = [\"a.example\"]\nbackends = [\"127.0.0.1:1\"]\n")
                .unwrap();
        let found = vec![RouteSpec {
            name: "ns/mcs".into(),
            hostnames: vec!["a.example".into(), "b.example".into()],
            backends: vec![],
            proxy_protocol: false,
            fallback_status: None,
        }];
        let t = RouteTable::with_discovered(&c, &found);
        assert_eq!(name(&t, "a.example"), "cfg");
        assert_eq!(name(&t, "b.example"), "ns/mcs");
    }

    #[test]
    fn round_robin() {
        let t = table();
        let r = t.lookup("nowhere").unwrap();
        let a: Vec<_> = r.backend_order().collect();
        let b: Vec<_> = r.backend_order().collect();
        assert_eq!(a.len(), 2);
        assert_ne!(a[0], b[0]);
    }
}
