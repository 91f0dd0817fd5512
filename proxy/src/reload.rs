//! Reloads the config file on change (file watch) and on SIGHUP. A file that
//! fails to parse or validate is logged with the field it names; the running
//! table stays.

use std::{path::PathBuf, time::Duration};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::{config::Config, server::Proxy};

/// Editors write in bursts (truncate, write, rename): settle before reading.
const DEBOUNCE: Duration = Duration::from_millis(150);

pub async fn watch(proxy: Proxy, path: PathBuf, shutdown: CancellationToken) {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    // Watch the directory: editors and ConfigMaps replace the file itself.
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).map(PathBuf::from).unwrap_or_else(|| ".".into());
    let file_name = path.file_name().map(|n| n.to_owned());
    let watch_tx = tx.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && event.paths.iter().any(|p| p.file_name() == file_name.as_deref()) {
                let _ = watch_tx.try_send(());
            }
    })
    .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|_| w));
    let _watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            warn!(error = %e, "cannot watch the config file; SIGHUP still reloads it");
            None
        }
    };
    #[cfg(unix)]
    {
        let hup_tx = tx.clone();
        let hup_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
                return;
            };
            loop {
                tokio::select! {
                    _ = hup_shutdown.cancelled() => return,
                    got = hup.recv() => if got.is_none() { return },
                }
                let _ = hup_tx.try_send(());
            }
        });
    }
    drop(tx);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            got = rx.recv() => if got.is_none() { return },
        }
        tokio::time::sleep(DEBOUNCE).await;
        while rx.try_recv().is_ok() {}
        match Config::load(&path) {
            Ok(config) => {
                if let Err(e) = proxy.reload(config) {
                    error!(error = %e, "config rejected; keeping the running one");
                }
            }
            Err(e) => {
                proxy.metrics().config_reloads.with_label_values(&["error"]).inc();
                error!(error = %e, "config rejected; keeping the running one");
            }
        }
    }
}
