//! Prometheus metrics of the proxy, registered on a registry of its own so
//! several proxies (tests) can live in one process.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    /// Finished connections by how they ended.
    pub connections: IntCounterVec,
    pub connections_open: IntGauge,
    pub bytes: IntCounterVec,
    pub status_requests: IntCounterVec,
    pub logins: IntCounterVec,
    pub players_online: IntGaugeVec,
    pub backend_connect_seconds: HistogramVec,
    pub rejects: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub first_packet_seconds: Histogram,
    pub routes: IntGauge,
    pub accept_errors: IntCounter,
    pub wakes: IntCounterVec,
    /// Sessions whose backend went away first, by whether the player got a
    /// Disconnect with a reason (`told`) or could not (`untold`).
    pub backend_lost: IntCounterVec,
    /// `bytes` for each direction, resolved once.
    pub bytes_up: IntCounter,
    pub bytes_down: IntCounter,
    pub holds: IntCounterVec,
    /// Login Start decoded → wake asked of the runtime.
    pub wake_signal_seconds: Histogram,
    /// Wake asked → server running (for held players).
    pub wake_seconds: Histogram,
    extra: std::sync::Mutex<Vec<Registry>>,
    /// `connections` per outcome and `status_requests` per result, resolved
    /// on first use: `with_label_values` hashes its labels and takes a lock
    /// on every call, which every connection would pay.
    outcome_counters: [std::sync::OnceLock<IntCounter>; crate::conn::Outcome::ALL.len()],
    status_counters: [std::sync::OnceLock<IntCounter>; STATUS_RESULTS.len()],
}

/// The `result` labels of `respawn_proxy_status_requests_total`.
pub const STATUS_RESULTS: [&str; 6] = ["hit", "miss", "stale", "fallback", "unknown", "sleeping"];

/// One route's series, resolved once per route (see `Route::metrics`).
pub struct RouteMetrics {
    pub logins: IntCounter,
    pub players_online: IntGauge,
    pub backend_connect_seconds: Histogram,
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouteMetrics")
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric");
            registry.register(Box::new(c.clone())).expect("register");
            c
        };
        let connections = counter_vec(
            "respawn_proxy_connections_total",
            "Client connections by outcome (status, login, legacy_status, unknown_host, rejected, error, ...)",
            &["outcome"],
        );
        let bytes = counter_vec("respawn_proxy_bytes_total", "Bytes relayed, by direction", &["direction"]);
        let status_requests = counter_vec(
            "respawn_proxy_status_requests_total",
            "Status requests by how they were answered (hit, miss, stale, fallback, unknown)",
            &["result"],
        );
        let logins = counter_vec("respawn_proxy_logins_total", "Login Starts routed, per route", &["route"]);
        let rejects = counter_vec(
            "respawn_proxy_rejects_total",
            "Connections refused or closed by a limit or bad input, by reason",
            &["reason"],
        );
        let config_reloads =
            counter_vec("respawn_proxy_config_reloads_total", "Config reloads by result (ok, error)", &["result"]);
        let players_online = IntGaugeVec::new(
            Opts::new("respawn_proxy_players_online", "Players online (login seen, connection open), per route"),
            &["route"],
        )
        .expect("metric");
        registry.register(Box::new(players_online.clone())).expect("register");
        let backend_connect_seconds = HistogramVec::new(
            HistogramOpts::new("respawn_proxy_backend_connect_seconds", "Time to open a backend connection")
                .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0, 3.0]),
            &["route"],
        )
        .expect("metric");
        registry.register(Box::new(backend_connect_seconds.clone())).expect("register");
        let first_packet_seconds = Histogram::with_opts(
            HistogramOpts::new("respawn_proxy_first_packets_seconds", "Time from accept to a routable first packet")
                .buckets(vec![0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0]),
        )
        .expect("metric");
        registry.register(Box::new(first_packet_seconds.clone())).expect("register");
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("metric");
            registry.register(Box::new(g.clone())).expect("register");
            g
        };
        let connections_open = gauge("respawn_proxy_connections_open", "Client connections open now");
        let routes = gauge("respawn_proxy_routes", "Hostname patterns in the route table");
        let accept_errors =
            IntCounter::new("respawn_proxy_accept_errors_total", "Errors from accept()").expect("metric");
        registry.register(Box::new(accept_errors.clone())).expect("register");
        let wakes =
            counter_vec("respawn_proxy_wakes_total", "Wake requests sent for sleeping servers, per route", &["route"]);
        let holds = counter_vec(
            "respawn_proxy_holds_total",
            "Logins held during a wake, by result (joined, kicked_starting, kicked_failed, not_allowed, left)",
            &["result"],
        );
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("metric");
            registry.register(Box::new(h.clone())).expect("register");
            h
        };
        let wake_signal_seconds = histogram(
            "respawn_proxy_wake_signal_seconds",
            "From Login Start to the wake request",
            vec![0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.1],
        );
        let wake_seconds = histogram(
            "respawn_proxy_wake_seconds",
            "From the wake request to the server answering (held logins)",
            vec![0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 60.0],
        );
        let backend_lost = counter_vec(
            "respawn_proxy_backend_lost_total",
            "Relayed sessions the backend ended while the player was still connected, by whether the proxy could tell the player why (told, untold)",
            &["result"],
        );
        Self {
            extra: std::sync::Mutex::default(),
            outcome_counters: Default::default(),
            status_counters: Default::default(),
            bytes_up: bytes.with_label_values(&["client_to_backend"]),
            bytes_down: bytes.with_label_values(&["backend_to_client"]),
            backend_lost,
            wakes,
            holds,
            wake_signal_seconds,
            wake_seconds,
            registry,
            connections,
            connections_open,
            bytes,
            status_requests,
            logins,
            players_online,
            backend_connect_seconds,
            rejects,
            config_reloads,
            first_packet_seconds,
            routes,
            accept_errors,
        }
    }

    /// `respawn_proxy_connections_total{outcome}`.
    pub fn connection(&self, outcome: crate::conn::Outcome) -> &IntCounter {
        self.outcome_counters[outcome as usize].get_or_init(|| self.connections.with_label_values(&[outcome.as_str()]))
    }

    /// `respawn_proxy_status_requests_total{result}`; `result` is one of
    /// [`STATUS_RESULTS`] (others are counted uncached).
    pub fn status_request(&self, result: &str) {
        match STATUS_RESULTS.iter().position(|r| *r == result) {
            Some(i) => self.status_counters[i].get_or_init(|| self.status_requests.with_label_values(&[result])).inc(),
            None => self.status_requests.with_label_values(&[result]).inc(),
        }
    }

    /// The series of route `name`.
    pub fn for_route(&self, name: &str) -> RouteMetrics {
        RouteMetrics {
            logins: self.logins.with_label_values(&[name]),
            players_online: self.players_online.with_label_values(&[name]),
            backend_connect_seconds: self.backend_connect_seconds.with_label_values(&[name]),
        }
    }

    /// Registries of other components served on the same endpoint.
    pub fn add_registry(&self, registry: Registry) {
        self.extra.lock().unwrap_or_else(|e| e.into_inner()).push(registry);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut families = self.registry.gather();
        for r in self.extra.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            families.extend(r.gather());
        }
        let mut out = Vec::new();
        TextEncoder::new().encode(&families, &mut out).expect("encode metrics");
        String::from_utf8(out).expect("metrics are UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
