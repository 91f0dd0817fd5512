//! The accept loop, the shared state every connection reads, and shutdown.
//!
//! `Proxy::serve(listener, shutdown)` takes its listener and a cancellation
//! token, so tests bind port 0 and stop it without signals or sleeps.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, error, info, info_span, warn};

use respawn_controller::{Lifecycle, Phase};

use crate::{
    config::{Config, ConfigError, RouteConfig},
    conn,
    limits::{ConnectionRateLimiter, RateVerdict},
    metrics::Metrics,
    route::RouteTable,
    status_cache::StatusCache,
};

/// One configuration and the route table built from it; swapped as a whole.
pub struct State {
    pub config: Config,
    pub routes: RouteTable,
    /// Routes found on the platform (Kubernetes), kept across config reloads.
    pub discovered: Arc<Vec<RouteConfig>>,
}

pub struct Shared {
    pub state: ArcSwap<State>,
    pub metrics: Metrics,
    pub cache: StatusCache,
    pub rate: ConnectionRateLimiter,
    pub slots: Arc<Semaphore>,
    /// Fired after the shutdown grace period: relays still open are closed.
    pub hard_stop: CancellationToken,
    pub ready: AtomicBool,
    /// Runs managed servers (wakes, sessions, phases); None: every route is
    /// treated as always up.
    pub lifecycle: Option<Arc<dyn Lifecycle>>,
    /// Open sessions per backend address, for least-players choice.
    pub backend_load: std::sync::Mutex<HashMap<String, u32>>,
}

impl Shared {
    pub fn load_of(&self, backend: &str) -> u32 {
        self.backend_load.lock().unwrap_or_else(|e| e.into_inner()).get(backend).copied().unwrap_or(0)
    }

    pub fn add_load(&self, backend: &str, delta: i32) {
        let mut map = self.backend_load.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(backend.to_owned()).or_default();
        *n = n.saturating_add_signed(delta);
        if *n == 0 {
            map.remove(backend);
        }
    }

    /// The phase of a managed route, None when nothing manages it.
    pub fn phase(&self, route: &str) -> Option<Phase> {
        self.lifecycle.as_ref()?.watch(route).map(|rx| rx.borrow().clone())
    }
}

/// A running proxy's handle: reload it, read its metrics, serve a listener.
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

impl Proxy {
    /// Validates `config` and prepares the proxy; nothing is bound yet.
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        Self::build(config, None)
    }

    /// A proxy whose managed routes sleep and wake through `lifecycle`.
    pub fn with_lifecycle(config: Config, lifecycle: Arc<dyn Lifecycle>) -> Result<Self, ConfigError> {
        Self::build(config, Some(lifecycle))
    }

    fn build(config: Config, lifecycle: Option<Arc<dyn Lifecycle>>) -> Result<Self, ConfigError> {
        config.validate()?;
        let cache = match &config.status.cache_file {
            Some(path) => StatusCache::load(path),
            None => StatusCache::new(),
        };
        let routes = RouteTable::from_config(&config);
        let metrics = Metrics::new();
        metrics.routes.set(routes.len() as i64);
        let shared = Shared {
            rate: ConnectionRateLimiter::new(&config.limits),
            slots: Arc::new(Semaphore::new(config.limits.max_connections)),
            state: ArcSwap::from_pointee(State { config, routes, discovered: Arc::default() }),
            metrics,
            cache,
            hard_stop: CancellationToken::new(),
            ready: AtomicBool::new(false),
            lifecycle,
            backend_load: Default::default(),
        };
        Ok(Self { shared: Arc::new(shared) })
    }

    /// Replaces routes and texts for new connections; open ones keep theirs.
    /// Listener addresses and limits need a restart (a warning says so).
    pub fn reload(&self, config: Config) -> Result<(), ConfigError> {
        if let Err(e) = config.validate() {
            self.shared.metrics.config_reloads.with_label_values(&["error"]).inc();
            return Err(e);
        }
        let old = self.shared.state.load();
        if old.config.listen != config.listen || old.config.limits != config.limits {
            warn!("listen addresses and limits changed: they take effect after a restart");
        }
        let discovered = old.discovered.clone();
        self.install(config, discovered);
        self.shared.metrics.config_reloads.with_label_values(&["ok"]).inc();
        info!("configuration reloaded");
        Ok(())
    }

    /// Replaces the routes discovered on the platform; config routes stay.
    pub fn set_discovered_routes(&self, discovered: Vec<RouteConfig>) {
        let config = self.shared.state.load().config.clone();
        self.install(config, Arc::new(discovered));
    }

    fn install(&self, config: Config, discovered: Arc<Vec<RouteConfig>>) {
        let routes = RouteTable::with_discovered(&config, &discovered);
        self.shared.metrics.routes.set(routes.len() as i64);
        let names: std::collections::HashSet<&str> = config
            .routes
            .iter()
            .map(|r| r.name.as_str())
            .chain(config.servers.iter().map(|s| s.name.as_str()))
            .chain(discovered.iter().map(|r| r.name.as_str()))
            .collect();
        self.shared.cache.retain_routes(|r| names.contains(r));
        self.shared.state.store(Arc::new(State { config, routes, discovered }));
    }

    pub fn config(&self) -> Config {
        self.shared.state.load().config.clone()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::Relaxed)
    }

    /// Accepts connections until `shutdown` fires, then lets open connections
    /// drain for the grace period and closes what is left.
    pub async fn serve(&self, listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
        let shared = self.shared.clone();
        let local = listener.local_addr()?;
        let tracker = TaskTracker::new();
        let grace = shared.state.load().config.limits.shutdown_grace();
        shared.ready.store(true, Ordering::Relaxed);
        info!(%local, "proxy listening");
        let mut idle_sweep = tokio::time::interval(Duration::from_secs(5));
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = idle_sweep.tick() => {
                    shared.rate.forget_idle();
                    self.save_cache();
                    continue;
                }
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, don't die.
                        shared.metrics.accept_errors.inc();
                        error!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let reject = |reason: &str| {
                shared.metrics.rejects.with_label_values(&[reason]).inc();
                shared.metrics.connections.with_label_values(&["rejected"]).inc();
            };
            match shared.rate.check(peer.ip()) {
                RateVerdict::Allow => {}
                RateVerdict::IpLimited => {
                    reject("rate_limit_ip");
                    continue;
                }
                RateVerdict::PrefixLimited => {
                    reject("rate_limit_prefix");
                    continue;
                }
            }
            let Ok(permit) = shared.slots.clone().try_acquire_owned() else {
                reject("max_connections");
                continue;
            };
            let local = stream.local_addr().unwrap_or(local);
            let span = info_span!(
                "conn",
                %peer,
                client = tracing::field::Empty,
                host = tracing::field::Empty,
                route = tracing::field::Empty,
                protocol = tracing::field::Empty,
                next = tracing::field::Empty,
            );
            let shared = shared.clone();
            tracker.spawn(
                async move {
                    shared.metrics.connections_open.inc();
                    conn::handle(shared.clone(), stream, peer, local).await;
                    shared.metrics.connections_open.dec();
                    drop(permit);
                }
                .instrument(span),
            );
        }
        shared.ready.store(false, Ordering::Relaxed);
        drop(listener);
        tracker.close();
        info!(open = tracker.len(), ?grace, "draining connections");
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            warn!(open = tracker.len(), "grace period over: closing open connections");
            shared.hard_stop.cancel();
            tracker.wait().await;
        }
        self.save_cache();
        info!("proxy stopped");
        Ok(())
    }

    /// Persists the status cache when a file is configured and it changed.
    fn save_cache(&self) {
        if let Some(path) = &self.shared.state.load().config.status.cache_file
            && let Err(e) = self.shared.cache.save(path) {
                warn!(error = %e, path = %path.display(), "cannot save the status cache");
            }
    }
}

