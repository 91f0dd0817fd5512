//! `respawn`: one thin command for every component. It parses arguments, sets
//! up tracing and a shutdown signal, and calls the component's `run`.

use std::{path::PathBuf, sync::Arc};

use anyhow::Result;
use clap::{Parser, Subcommand};
use respawn::config::RespawnConfig;
use respawn_proxy::Proxy;
use tokio_util::sync::CancellationToken;

mod demo;

#[derive(Parser)]
#[command(name = "respawn", version, about = "The edge of a Minecraft hosting platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Minecraft proxy.
    Proxy {
        /// TOML config file (reloaded on change and on SIGHUP).
        #[arg(long, short, env = "RESPAWN_PROXY_CONFIG", default_value = "respawn.toml")]
        config: PathBuf,
        /// Discover routes from MinecraftServers and wake them through the
        /// cluster (on by default inside a cluster).
        #[arg(long, env = "RESPAWN_KUBERNETES", default_value_t = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some())]
        kubernetes: bool,
    },
    /// Run the Kubernetes controller (MinecraftServers → StatefulSets), using
    /// the in-cluster service account or ~/.kube/config.
    Controller {
        /// Where `/metrics` is served (reconciles and reconcile errors).
        #[arg(long, env = "RESPAWN_CONTROLLER_METRICS", default_value = "0.0.0.0:9102")]
        metrics_address: std::net::SocketAddr,
    },
    /// Print the MinecraftServer CRD (YAML) generated from the Rust types.
    Crdgen,
    /// Run the management API (REST under /v1; SQLite by default,
    /// DATABASE_URL for PostgreSQL).
    Api {
        /// TOML file with the API settings; defaults apply without one.
        #[arg(long, short, env = "RESPAWN_API_CONFIG")]
        config: Option<PathBuf>,
        /// Run servers as MinecraftServer resources in the cluster (on by
        /// default inside a cluster); otherwise the API runs nothing.
        #[arg(long, env = "RESPAWN_KUBERNETES", default_value_t = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some())]
        kubernetes: bool,
        /// Where the API writes MinecraftServers (default: its own namespace,
        /// POD_NAMESPACE, else `respawn-system`).
        #[arg(long, env = "RESPAWN_SERVERS_NAMESPACE")]
        servers_namespace: Option<String>,
    },
    /// Run every component in one process on the embedded default.
    Up {
        #[arg(long, short, env = "RESPAWN_CONFIG", default_value = "examples/respawn.toml")]
        config: PathBuf,
    },
    /// A tiny Minecraft server for trying Respawn without a server jar: it
    /// answers the server list and greets players with a Disconnect message.
    DemoServer {
        #[arg(long, default_value = "127.0.0.1:25566")]
        listen: std::net::SocketAddr,
        #[arg(long, default_value = "A Respawn demo server")]
        motd: String,
    },
    /// Download, verify and place a server's plugins (the init container's
    /// command on Kubernetes; the local runtime does the same before a start).
    PluginSync(respawn_plugins::PluginSyncArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(signal_shutdown(shutdown.clone()));
        match cli.command {
            Command::Proxy { config: path, kubernetes } => {
                let config = {
                    let path = path.clone();
                    tokio::task::spawn_blocking(move || RespawnConfig::load(&path)).await??
                };
                let source = Some(RespawnConfig::source(&path));
                if !kubernetes {
                    // `[[servers]]` are plain routes here: nothing runs them.
                    let proxy = off_thread(move || Proxy::new(config.proxy())).await??;
                    return respawn_proxy::run(proxy, source, shutdown).await;
                }
                let client = kube::Client::try_default().await?;
                let namespace = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "respawn-system".into());
                let identity = std::env::var("POD_NAME").unwrap_or_else(|_| format!("proxy-{}", std::process::id()));
                let discovery = respawn_k8s::discovery::KubeDiscovery::new(client, &namespace, &identity);
                let lifecycle = discovery.clone();
                let proxy = off_thread(move || Proxy::with_lifecycle(config.proxy(), lifecycle)).await??;
                tokio::spawn(discovery.run(Arc::new(proxy.clone()), shutdown.clone()));
                respawn_proxy::run(proxy, source, shutdown).await
            }
            Command::Up { config } => respawn::embedded::up(config, shutdown).await,
            Command::DemoServer { listen, motd } => demo::run(listen, motd, shutdown).await,
            Command::PluginSync(args) => respawn_plugins::run_cli(args).await,
            Command::Controller { metrics_address } => {
                let client = kube::Client::try_default().await?;
                let namespace = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "respawn-system".into());
                let identity = std::env::var("POD_NAME").unwrap_or_else(|_| format!("respawn-{}", std::process::id()));
                let settings =
                    respawn_k8s::controller::Settings { reports_namespace: namespace.clone(), ..Default::default() };
                let registry = prometheus::Registry::new();
                let metrics = respawn_k8s::controller::Metrics::new(&registry);
                let listener = tokio::net::TcpListener::bind(metrics_address)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {metrics_address} (--metrics-address): {e}"))?;
                tokio::spawn(serve_metrics(listener, registry, shutdown.clone()));
                respawn_k8s::controller::run_leader_elected(client, settings, metrics, &namespace, &identity, shutdown)
                    .await;
                Ok(())
            }
            Command::Crdgen => {
                print!("{}", respawn_k8s::crd::crd_yaml());
                Ok(())
            }
            Command::Api { config, kubernetes: false, .. } => {
                let config = respawn_api::ApiConfig::load(config.as_deref())?;
                respawn_api::run(config, shutdown).await
            }
            Command::Api { config, kubernetes: true, servers_namespace } => {
                let config = respawn_api::ApiConfig::load(config.as_deref())?;
                let client = kube::Client::try_default().await?;
                let namespace = servers_namespace
                    .or_else(|| std::env::var("POD_NAMESPACE").ok())
                    .unwrap_or_else(|| "respawn-system".into());
                let (runtime, status) = respawn_k8s::api_runtime::KubeRuntime::new(client, &namespace);
                tokio::spawn(status.run(shutdown.clone()));
                tracing::info!(%namespace, "servers run as MinecraftServers");
                respawn_api::run_with_runtime(config, std::sync::Arc::new(runtime), shutdown).await
            }
        }
    })
}

/// Runs blocking start-up work (a proxy reads its status cache file) on the
/// blocking pool, not on an async thread.
async fn off_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    Ok(tokio::task::spawn_blocking(work).await?)
}

/// `GET /metrics` in the Prometheus text format, until `shutdown`.
async fn serve_metrics(listener: tokio::net::TcpListener, registry: prometheus::Registry, shutdown: CancellationToken) {
    let metrics = move || {
        let registry = registry.clone();
        async move {
            let mut body = Vec::new();
            let _ = prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &registry.gather(), &mut body);
            ([("content-type", "text/plain; version=0.0.4")], body)
        }
    };
    let app = axum::Router::new().route("/metrics", axum::routing::get(metrics));
    let _ = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
}

/// SIGINT or SIGTERM starts a graceful shutdown; a second one exits at once.
async fn signal_shutdown(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            return;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("shutting down (signal again to exit now)");
        token.cancel();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        std::process::exit(130);
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        token.cancel();
    }
}
