//! The accept loop, the shared state every connection reads, and shutdown.
//!
//! `Proxy::serve(listener, shutdown)` takes its listener and a cancellation
//! token, so tests bind port 0 and stop it without signals or sleeps.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, debug, debug_span, error, info, warn};

use respawn_contract::{Lifecycle, Phase, RouteSink, RouteSpec};

use crate::{
    config::{Config, ConfigError},
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
    pub discovered: Arc<Vec<RouteSpec>>,
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
    /// Held while the status cache file is written: a save in the background
    /// and the one at shutdown never interleave, and the last one written is
    /// the newest snapshot.
    cache_save: std::sync::Mutex<()>,
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
        self.lifecycle.as_ref()?.watch(route).map(|rx| rx.borrow().phase)
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
            cache_save: std::sync::Mutex::new(()),
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
    pub fn set_discovered_routes(&self, discovered: Vec<RouteSpec>) {
        let config = self.shared.state.load().config.clone();
        self.install(config, Arc::new(discovered));
    }

    fn install(&self, config: Config, discovered: Arc<Vec<RouteSpec>>) {
        let routes = RouteTable::with_discovered(&config, &discovered);
        self.shared.metrics.routes.set(routes.len() as i64);
        let names: std::collections::HashSet<&str> =
            config.routes.iter().map(|r| r.name.as_str()).chain(discovered.iter().map(|r| r.name.as_str())).collect();
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
    /// drain for the grace period and closes what is left. Runs on the
    /// caller's runtime (tests bind port 0 and serve it here).
    pub async fn serve(&self, listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
        let result = self.accept_loop(listener, shutdown, true).await;
        self.save_cache().await;
        info!("proxy stopped");
        result
    }

    /// Serves `address` on `threads` threads, each with its own listener
    /// (SO_REUSEPORT: the kernel spreads new connections across them) and its
    /// own single-threaded tokio runtime, until `shutdown` fires.
    ///
    /// Why not the multi-threaded runtime: there, every accepted connection is
    /// a task handed to another thread, and every readiness event may wake a
    /// parked worker — futex wakeups that were the largest single cost of a
    /// login in the bench's profile (`_raw_spin_unlock_irqrestore`, 12 %). A
    /// connection here lives and dies on the thread that accepted it, which
    /// is how HAProxy and nginx run. State shared by all threads (routes,
    /// metrics, status cache, rate limits) is behind `Arc`s as before.
    /// Hand-written on tokio rather than a thread-per-core runtime crate
    /// (glommio, monoio): those bring their own I/O types, and everything
    /// else in Respawn is tokio.
    pub async fn serve_sharded(
        &self,
        address: SocketAddr,
        threads: usize,
        backlog: u32,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let threads = threads.max(1);
        // SO_REUSEPORT would let this bind succeed next to another proxy of
        // the same user already on the address, silently taking a share of
        // its players. A plain bind first keeps "address in use" an error.
        if address.port() != 0 {
            drop(std::net::TcpListener::bind(address)?);
        }
        // Bind every listener before starting any thread, so a taken port
        // is one clear error; with port 0 they all take the first one's.
        let first = reuseport_listener(address, backlog)?;
        let bound = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..threads {
            listeners.push(reuseport_listener(bound, backlog)?);
        }
        info!(%address, threads, "proxy threads starting");
        let mut done = Vec::with_capacity(threads);
        for (i, listener) in listeners.into_iter().enumerate() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let (proxy, shutdown) = (self.clone(), shutdown.clone());
            std::thread::Builder::new().name(format!("respawn-proxy-{i}")).spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread().enable_all().build().and_then(|rt| {
                    rt.block_on(async {
                        let listener = TcpListener::from_std(listener)?;
                        // Housekeeping (rate-limit sweep, cache file) once, on the first.
                        proxy.accept_loop(listener, shutdown, i == 0).await
                    })
                });
                let _ = tx.send(result);
            })?;
            done.push(rx);
        }
        let mut result = Ok(());
        for rx in done {
            match rx.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    // One thread failing stops the others: a proxy on half
                    // its threads would look up but serve a share of players badly.
                    error!(error = %e, "a proxy thread failed");
                    shutdown.cancel();
                    result = Err(e);
                }
                Err(_) => {
                    shutdown.cancel();
                    result = Err(std::io::Error::other("a proxy thread panicked"));
                }
            }
        }
        self.save_cache().await;
        info!("proxy stopped");
        result
    }

    async fn accept_loop(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
        housekeeping: bool,
    ) -> std::io::Result<()> {
        let shared = self.shared.clone();
        let local = listener.local_addr()?;
        // Linux gives an accepted socket its listener's TCP_NODELAY: set it
        // once here rather than once per connection (a syscall per login).
        #[cfg(target_os = "linux")]
        let nodelay_inherited = socket2::SockRef::from(&listener).set_tcp_nodelay(true).is_ok();
        #[cfg(not(target_os = "linux"))]
        let nodelay_inherited = false;
        let tracker = TaskTracker::new();
        let grace = shared.state.load().config.limits.shutdown_grace();
        shared.ready.store(true, Ordering::Relaxed);
        debug!(%local, "accepting connections");
        let mut idle_sweep = tokio::time::interval(Duration::from_secs(5));
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = idle_sweep.tick(), if housekeeping => {
                    shared.rate.forget_idle();
                    // In the background: accepting never waits for a disk.
                    let proxy = self.clone();
                    tokio::spawn(async move { proxy.save_cache().await });
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
            if !nodelay_inherited {
                let _ = stream.set_nodelay(true);
            }
            // Not `stream.local_addr()`: a syscall per connection for an
            // address needed only by PROXY headers (conn::local_for).
            // Debug level: a span kept for the whole session costs an idle
            // player ~0.3 KiB (its fields formatted and stored) and each
            // connection a few allocations. The few info and warn lines a
            // connection logs carry its host and route themselves.
            let span = debug_span!(
                "conn",
                %peer,
                client = tracing::field::Empty,
                host = tracing::field::Empty,
                route = tracing::field::Empty,
                protocol = tracing::field::Empty,
                next = tracing::field::Empty,
            );
            let shared = shared.clone();
            let session = async move {
                shared.metrics.connections_open.inc();
                conn::handle(shared.clone(), stream, peer, local).await;
                shared.metrics.connections_open.dec();
                drop(permit);
            };
            // Unwrapped when the span is off (the default): the wrapper would
            // be polled around every wakeup of the session for nothing.
            if span.is_disabled() {
                tracker.spawn(session);
            } else {
                tracker.spawn(session.instrument(span));
            }
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
        Ok(())
    }

    /// Persists the status cache when a file is configured and it changed,
    /// on the blocking pool: the snapshot and the write happen there, one
    /// save at a time.
    async fn save_cache(&self) {
        let Some(path) = self.shared.state.load().config.status.cache_file.clone() else { return };
        let shared = self.shared.clone();
        let written = tokio::task::spawn_blocking(move || {
            let _one_at_a_time = shared.cache_save.lock().unwrap_or_else(|e| e.into_inner());
            match shared.cache.snapshot() {
                Some(bytes) => crate::status_cache::write_file(&path, &bytes).map_err(|e| (path, e)),
                None => Ok(()),
            }
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err((path, e))) => warn!(error = %e, path = %path.display(), "cannot save the status cache"),
            Err(e) => warn!(error = %e, "the status cache save task failed"),
        }
    }
}

impl RouteSink for Proxy {
    fn set_routes(&self, routes: Vec<RouteSpec>) {
        self.set_discovered_routes(routes);
    }
}

/// A non-blocking listener on `address` that other listeners of this process
/// may share (SO_REUSEPORT), for one proxy thread.
fn reuseport_listener(address: SocketAddr, backlog: u32) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))))]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;
    use respawn_codec::{
        handshake::{Handshake, NextState, encode_handshake},
        status::{decode_status_response, encode_status_request},
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn proxy() -> Proxy {
        let config = Config::parse("[limits]\nper_ip_per_second = 100000\nper_ip_burst = 100000\nper_prefix_per_second = 100000\nper_prefix_burst = 100000\n").unwrap();
        Proxy::new(config).unwrap()
    }

    fn free_address() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
    }

    async fn status_motd(address: SocketAddr) -> String {
        let mut s = tokio::net::TcpStream::connect(address).await.unwrap();
        let mut out = encode_handshake(&Handshake {
            protocol: 769,
            host: "nobody.test".into(),
            port: 25565,
            next_state: NextState::Status,
        });
        out.extend(encode_status_request());
        s.write_all(&out).await.unwrap();
        let mut buf = Vec::new();
        loop {
            if let Some((json, _)) = decode_status_response(&buf, 1 << 20).unwrap() {
                return json;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
                .await
                .expect("answer in time")
                .unwrap();
            assert!(n > 0, "closed without an answer");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    #[tokio::test]
    async fn sharded_threads_share_one_address_and_a_taken_one_is_an_error() {
        let address = free_address();
        let shutdown = CancellationToken::new();
        let p = proxy();
        let (p2, sd) = (p.clone(), shutdown.clone());
        let serving = tokio::spawn(async move { p2.serve_sharded(address, 3, 128, sd).await });
        // Every connection is answered, whichever thread the kernel picks.
        let mut answered = 0;
        for attempt in 0..100 {
            match tokio::net::TcpStream::connect(address).await {
                Ok(_) => break,
                Err(_) if attempt < 99 => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => panic!("the proxy never listened: {e}"),
            }
        }
        for _ in 0..30 {
            assert!(status_motd(address).await.contains("Unknown server"));
            answered += 1;
        }
        assert_eq!(answered, 30);
        // A second proxy on the same address fails instead of sharing it.
        let err =
            proxy().serve_sharded(address, 2, 128, CancellationToken::new()).await.expect_err("the address is taken");
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        // And the first still answers.
        assert!(status_motd(address).await.contains("Unknown server"));
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), serving).await.expect("threads stop").unwrap().unwrap();
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn players_get_tcp_nodelay_from_the_listener() {
        use socket2::SockRef;
        // What the proxy relies on: an accepted socket inherits the flag.
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        SockRef::from(&plain).set_tcp_nodelay(true).unwrap();
        let _c = std::net::TcpStream::connect(plain.local_addr().unwrap()).unwrap();
        let (accepted, _) = plain.accept().unwrap();
        assert!(SockRef::from(&accepted).tcp_nodelay().unwrap());
        // And the accept loop sets it on its listener (seen through a
        // duplicate of the listener's descriptor).
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let dup = std_listener.try_clone().unwrap();
        assert!(!SockRef::from(&dup).tcp_nodelay().unwrap());
        let shutdown = CancellationToken::new();
        let p = proxy();
        let listener = TcpListener::from_std(std_listener).unwrap();
        let sd = shutdown.clone();
        let serving = tokio::spawn(async move { p.serve(listener, sd).await });
        let address = dup.local_addr().unwrap();
        assert!(status_motd(address).await.contains("Unknown server"));
        assert!(SockRef::from(&dup).tcp_nodelay().unwrap());
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), serving).await.unwrap().unwrap().unwrap();
    }

    #[tokio::test]
    async fn an_address_held_by_another_program_is_an_error() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = held.local_addr().unwrap();
        let err =
            proxy().serve_sharded(address, 2, 128, CancellationToken::new()).await.expect_err("the address is taken");
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    }
}
