//! Reloads the config file on change (file watch) and on SIGHUP. A file that
//! fails to parse or validate is logged with the field it names; the running
//! table stays. The file's schema is the caller's (`respawn.toml` belongs to
//! the `respawn` binary): a [`ConfigSource`] says where it is and how to get
//! the proxy's part out of it.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::{config::Config, server::Proxy};

/// Editors write in bursts (truncate, write, rename): settle before reading.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Reads the proxy's config out of a file; the error names the field.
pub type Loader = Arc<dyn Fn(&Path) -> Result<Config, String> + Send + Sync>;

/// Where the proxy's config comes from, for reloads.
#[derive(Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    pub load: Loader,
}

impl ConfigSource {
    /// A file holding only the proxy's config (`Config::load`).
    pub fn proxy_file(path: PathBuf) -> Self {
        ConfigSource { path, load: Arc::new(|p: &Path| Config::load(p).map_err(|e| e.to_string())) }
    }
}

pub async fn watch(proxy: Proxy, source: ConfigSource, shutdown: CancellationToken) {
    let ConfigSource { path, load } = source;
    let (tx, mut rx) = mpsc::channel::<()>(1);
    // Watch the directory: editors and ConfigMaps replace the file itself.
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).map(PathBuf::from).unwrap_or_else(|| ".".into());
    let file_name = path.file_name().map(|n| n.to_owned());
    let watch_tx = tx.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && event.paths.iter().any(|p| p.file_name() == file_name.as_deref())
        {
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
        // The file is read on the blocking pool, not on this thread.
        let loaded = {
            let (load, path) = (load.clone(), path.clone());
            tokio::task::spawn_blocking(move || load(&path)).await.unwrap_or_else(|e| Err(e.to_string()))
        };
        match loaded {
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
