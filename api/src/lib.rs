//! Respawn's management API: tenants, API tokens, plans, servers, plugins
//! and backups over REST/JSON under `/v1`, stored with sqlx on SQLite or PostgreSQL, with an
//! OpenAPI document generated from the handlers.
//!
//! The binary calls [`run`] (or [`run_with_runtime`] to plug in the server
//! runtime); tests build the [`router`] from an [`AppState`] and call it
//! without a socket.
//!
//! Owns: HTTP handlers (`routes`), SQL (`store`, tenant-scoped), auth,
//! validation, backups (`backup`: jobs, restore, retention, archives, object
//! storage). May depend on: the contract (`ServerRuntime`, `Phase`,
//! `PluginSpec`) — never on the proxy, the local runtime or Kubernetes; the
//! runtimes implement the contract's `ServerRuntime` and are handed in.
#![forbid(unsafe_code)]

pub mod auth;
pub mod backup;
pub mod config;
pub mod db;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod routes;
pub mod runtime;
pub mod store;
pub mod validate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{ApiConfig, BackupConfig, BackupStoreKind, ConfigError};
pub use db::Db;
pub use runtime::{
    InMemoryRuntime, LogLine, LogQuery, Phase, PluginSpec, RuntimeError, RuntimeFuture, ServerRuntime, ServerSpec,
    ServerStatus,
};

use auth::AuthGuard;
use metrics::ApiMetrics;

/// How often the failed-token limiter forgets idle client IPs.
const AUTH_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub runtime: Arc<dyn ServerRuntime>,
    pub(crate) auth: Arc<AuthGuard>,
    pub(crate) metrics: Arc<ApiMetrics>,
    pub backups: Arc<backup::Backups>,
    max_body_bytes: usize,
}

impl AppState {
    /// State over a connected (and migrated) database. Fails on an invalid
    /// config, naming the field, or when the backup store cannot be set up.
    pub fn new(db: Db, runtime: Arc<dyn ServerRuntime>, config: &ApiConfig) -> anyhow::Result<AppState> {
        config.validate()?;
        Ok(AppState {
            db,
            runtime,
            auth: Arc::new(AuthGuard::new(
                config.admin_token.as_deref(),
                config.auth_failures_per_minute,
                config.auth_failure_burst,
            )),
            metrics: Arc::new(ApiMetrics::new()?),
            backups: Arc::new(backup::Backups::new(&config.backups)?),
            max_body_bytes: config.max_body_bytes,
        })
    }
}

/// The OpenAPI document of every `/v1` route, generated from the handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes::api_router().into_openapi()
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let (v1, _) = routes::api_router().split_for_parts();
    v1.route("/v1/openapi.json", get(routes::system::openapi_json))
        .route("/healthz", get(routes::system::healthz))
        .route("/metrics", get(routes::system::metrics))
        .fallback(routes::system::not_found)
        .method_not_allowed_fallback(routes::system::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        .with_state(state)
}

/// Connects to the database, migrates it and serves the API until
/// `shutdown`, with a runtime that runs nothing (the API on its own).
pub async fn run(config: ApiConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_with_runtime(config, Arc::new(InMemoryRuntime::new()), shutdown).await
}

/// [`run`] with the runtime that starts and stops servers.
pub async fn run_with_runtime(
    config: ApiConfig,
    runtime: Arc<dyn ServerRuntime>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Bad configuration is refused before anything is opened or bound.
    config.validate()?;
    if config.admin_token.is_none() {
        tracing::warn!("no admin_token configured (RESPAWN_ADMIN_TOKEN): admin routes will refuse every request");
    }
    let db = Db::connect(&config.database_url, config.max_connections).await?;
    db.migrate().await?;
    let state = AppState::new(db.clone(), runtime, &config)?;
    let interrupted = store::backups::fail_interrupted(&db).await.map_err(|e| anyhow::anyhow!("backup jobs: {e:?}"))?;
    if interrupted > 0 {
        tracing::warn!(jobs = interrupted, "backup or restore jobs of the previous run marked failed");
    }
    let stale = state.backups.clean_scratch();
    if stale > 0 {
        tracing::info!(files = stale, "scratch archives of the previous run removed");
    }
    tracing::info!(store = %state.backups.storage.describe, "backups stored");
    reapply_all(&state).await?;
    let listener = TcpListener::bind(config.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, "api listening");
    let result = serve(listener, state, shutdown, Duration::from_secs(config.shutdown_grace_s)).await;
    db.pool.close().await;
    result
}

/// The database is the source of truth: on startup every stored server is
/// handed to the runtime again, healing any `apply` that failed earlier.
async fn reapply_all(state: &AppState) -> anyhow::Result<()> {
    let records = store::servers::all(&state.db).await.map_err(|e| anyhow::anyhow!("loading servers: {e:?}"))?;
    for record in &records {
        let spec = store::servers::spec(&state.db, record).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        if let Err(error) = state.runtime.apply(&spec).await {
            tracing::warn!(server = %record.id, %error, "could not apply the server to the runtime");
        }
    }
    tracing::info!(servers = records.len(), "server definitions applied to the runtime");
    Ok(())
}

/// Serves on `listener` until `shutdown`, then waits up to `grace` for
/// in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
    grace: Duration,
) -> anyhow::Result<()> {
    let auth = state.auth.clone();
    let pruner = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(AUTH_PRUNE_INTERVAL);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => auth.prune(),
                }
            }
        })
    };
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let server = axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let grace_over = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    let result = tokio::select! {
        result = std::future::IntoFuture::into_future(server) => result.map_err(anyhow::Error::from),
        _ = grace_over => {
            tracing::warn!("shutdown grace period over; dropping open requests");
            Ok(())
        }
    };
    pruner.abort();
    result
}
