//! `respawn-kube-fake`: serves the fake Kubernetes API server on an address, for manual
//! use (`kubectl --server http://ADDR`) and for tests in other languages.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use respawn_kube_fake::{FakeOptions, serve};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A fake Kubernetes API server (in memory, plain HTTP, no authentication).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on; port 0 picks a free one (the chosen URL is printed).
    #[arg(long, default_value = "127.0.0.1:8001", env = "RESPAWN_KUBE_FAKE_ADDR")]
    addr: SocketAddr,
    /// Watch events kept for watches that resume from a resourceVersion.
    #[arg(long, default_value_t = FakeOptions::default().history_limit)]
    history_limit: usize,
    /// Seconds between bookmarks on an idle watch.
    #[arg(long, default_value_t = FakeOptions::default().bookmark_interval.as_secs())]
    bookmark_interval_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let options = FakeOptions {
        history_limit: args.history_limit,
        bookmark_interval: Duration::from_secs(args.bookmark_interval_secs.max(1)),
        ..FakeOptions::default()
    };
    let listener = TcpListener::bind(args.addr).await?;
    // The one line on stdout, so a script can read the URL when it asked for port 0.
    println!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let _ = tokio::signal::ctrl_c().await;
            shutdown.cancel();
        }
    });
    serve(listener, respawn_kube_fake::Cluster::new(options), shutdown).await?;
    Ok(())
}
