//! Respawn's proxy: reads the first Minecraft packets of a connection, routes
//! it by hostname, answers the server list, and relays everything else.
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
mod conn;
pub mod limits;
pub mod metrics;
pub mod protocol;
pub mod proxy_protocol;
pub mod reload;
pub mod route;
pub mod server;
#[cfg(target_os = "linux")]
mod splice;
pub mod status_cache;

use std::path::PathBuf;

pub use config::Config;
pub use conn::Outcome;
pub use server::Proxy;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Runs the proxy from a config file: binds the game and admin ports, watches
/// the file for changes, and serves until `shutdown` fires.
pub async fn run(config_path: PathBuf, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config = Config::load(&config_path)?;
    serve(config_path, config, Proxy::new, shutdown).await
}

/// Runs the proxy with the local runtime (the embedded default): the
/// `[[servers]]` of the config sleep and wake as local processes.
pub async fn run_with_local_runtime(config_path: PathBuf, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config = Config::load(&config_path)?;
    let runtime = std::sync::Arc::new(respawn_controller::local::LocalRuntime::new(&config.servers, config.runtime.clone()));
    let runtime_task = tokio::spawn(runtime.clone().run(shutdown.clone()));
    let lifecycle: std::sync::Arc<dyn respawn_controller::Lifecycle> = runtime.clone();
    let registry = runtime.registry.clone();
    let result = serve(
        config_path,
        config,
        move |c| {
            let p = Proxy::with_lifecycle(c, lifecycle)?;
            p.metrics().add_registry(registry);
            Ok(p)
        },
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    let _ = runtime_task.await;
    result
}

/// Runs the proxy with any `Lifecycle` (e.g. Kubernetes discovery); `started`
/// gets the proxy handle before it serves (to feed it discovered routes).
pub async fn run_with_lifecycle(
    config_path: PathBuf,
    lifecycle: std::sync::Arc<dyn respawn_controller::Lifecycle>,
    started: impl FnOnce(Proxy),
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let config = Config::load(&config_path)?;
    serve(
        config_path,
        config,
        move |c| {
            let p = Proxy::with_lifecycle(c, lifecycle)?;
            started(p.clone());
            Ok(p)
        },
        shutdown,
    )
    .await
}

async fn serve(
    config_path: PathBuf,
    config: Config,
    make: impl FnOnce(Config) -> Result<Proxy, config::ConfigError>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let proxy = make(config.clone())?;
    let admin = TcpListener::bind(config.listen.admin_address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (listen.admin_address): {e}", config.listen.admin_address))?;
    tracing::info!(admin = %config.listen.admin_address, "admin endpoint listening");
    let admin_shutdown = shutdown.clone();
    let admin_task = tokio::spawn(
        axum::serve(admin, admin::router(proxy.clone()))
            .with_graceful_shutdown(async move { admin_shutdown.cancelled().await })
            .into_future(),
    );
    tokio::spawn(reload::watch(proxy.clone(), config_path, shutdown.clone()));
    let listen = &config.listen;
    proxy
        .serve_sharded(listen.address, listen.thread_count(), listen.backlog, shutdown)
        .await
        .map_err(|e| anyhow::anyhow!("cannot serve {} (listen.address): {e}", listen.address))?;
    let _ = admin_task.await;
    Ok(())
}
