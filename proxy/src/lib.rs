//! Respawn's proxy: reads the first Minecraft packets of a connection, routes
//! it by hostname, answers the server list, holds logins while their server
//! wakes, and relays everything else.
//!
//! Owns: listeners and their threads ([`server`]), connections ([`conn`]:
//! status, login, wake gate, backend, relay), the route table ([`route`]),
//! the status cache, per-IP limits, metrics, the admin endpoint and config
//! reloads. May depend on: the codec (`respawn-codec`) and the contracts
//! (`respawn-contract`): it learns phases and asks for wakes through the
//! `Lifecycle` trait and receives platform routes through `RouteSink`. It
//! never links a runtime, RCON or an HTTP client (a test reading `cargo
//! metadata` enforces it).
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
mod conn;
pub mod limits;
pub mod metrics;
pub mod reload;
pub mod route;
pub mod server;
pub mod status_cache;

pub use config::Config;
pub use conn::Outcome;
pub use reload::ConfigSource;
pub use server::Proxy;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves `proxy` on the addresses of its config until `shutdown` fires: the
/// game port (one thread per `listen.threads`), the admin endpoint, and, with
/// a `source`, reloads of the config on file change and SIGHUP.
pub async fn run(proxy: Proxy, source: Option<ConfigSource>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config = proxy.config();
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
    if let Some(source) = source {
        tokio::spawn(reload::watch(proxy.clone(), source, shutdown.clone()));
    }
    let listen = &config.listen;
    proxy
        .serve_sharded(listen.address, listen.thread_count(), listen.backlog, shutdown)
        .await
        .map_err(|e| anyhow::anyhow!("cannot serve {} (listen.address): {e}", listen.address))?;
    let _ = admin_task.await;
    Ok(())
}
