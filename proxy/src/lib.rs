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
    let proxy = Proxy::new(config.clone())?;
    let listener = TcpListener::bind(config.listen.address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (listen.address): {e}", config.listen.address))?;
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
    proxy.serve(listener, shutdown).await?;
    let _ = admin_task.await;
    Ok(())
}
