//! Bringing a plugins directory to the wanted set of managed jars.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::digest::{Algorithm, DigestSpecError, Expected};
use crate::fetch::{FetchError, FetchPolicy, Fetcher, SetupError};
use crate::manifest::{self, ManagedPlugin, Manifest, ManifestError};
use crate::place::{self, OnDisk};

/// One plugin a server should have (the contract's type: the API, the local
/// runtime and the Kubernetes renderer pass the same one).
pub use respawn_contract::PluginSpec;

/// The longest plugin name; file systems allow 255 bytes, and no real plugin comes close.
const MAX_NAME_LEN: usize = 64;

/// Whether `name` is safe to use as `<name>.jar` in the plugins directory: no separators,
/// no `..`, no hidden files (our own temporaries and manifest start with `.`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The file a managed plugin lives in. One file per plugin name, whatever the version, so
/// an upgrade replaces the old jar in one rename instead of leaving two versions for the
/// server to load.
pub fn jar_file_name(name: &str) -> String {
    format!("{name}.jar")
}

/// What happened to one plugin.
#[derive(Debug)]
pub enum Outcome {
    /// Downloaded, verified and placed.
    Installed { version: String, sha256: String },
    /// The jar on disk already has the wanted digest; nothing was downloaded.
    Unchanged,
    /// No longer wanted: the managed jar was deleted.
    Removed,
    /// No longer wanted, but the jar was changed by hand since it was installed: it is left
    /// in place and no longer managed.
    Released,
    /// Nothing changed for this plugin; a previously installed jar is kept.
    Failed(PluginError),
}

impl Outcome {
    pub fn is_failure(&self) -> bool {
        matches!(self, Outcome::Failed(_))
    }
}

/// Why one plugin could not be installed or removed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("invalid plugin name {0:?} (letters, digits, '.', '_', '-'; at most 64; not starting with '.')")]
    InvalidName(String),
    #[error("invalid checksum: {0}")]
    InvalidDigest(#[from] DigestSpecError),
    #[error("listed more than once")]
    Duplicate,
    #[error("{} exists and was not installed by the platform; it is left alone", path.display())]
    Unmanaged { path: PathBuf },
    #[error(
        "{algorithm} mismatch for plugin {plugin} from {url}: expected {expected}, got {actual}; the previous jar (if any) is kept"
    )]
    Checksum { plugin: String, url: String, algorithm: Algorithm, expected: String, actual: String },
    #[error("download: {0}")]
    Fetch(#[from] FetchError),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// The result for one plugin.
#[derive(Debug)]
pub struct PluginReport {
    pub name: String,
    pub outcome: Outcome,
}

impl fmt::Display for PluginReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Installed { version, sha256 } => {
                write!(f, "installed {} {version} (sha256 {sha256})", self.name)
            }
            Outcome::Unchanged => write!(f, "unchanged {}", self.name),
            Outcome::Removed => write!(f, "removed   {}", self.name),
            Outcome::Released => {
                write!(f, "released  {} (changed by hand since installed; left in place, no longer managed)", self.name)
            }
            Outcome::Failed(e) => write!(f, "FAILED    {}: {e}", self.name),
        }
    }
}

/// What a sync did, one entry per wanted plugin (in order) then one per removal.
#[derive(Debug, Default)]
pub struct SyncReport {
    pub plugins: Vec<PluginReport>,
}

impl SyncReport {
    pub fn failures(&self) -> impl Iterator<Item = &PluginReport> {
        self.plugins.iter().filter(|p| p.outcome.is_failure())
    }

    pub fn has_failures(&self) -> bool {
        self.failures().next().is_some()
    }

    /// The outcome for `name`, if the sync touched it.
    pub fn outcome(&self, name: &str) -> Option<&Outcome> {
        self.plugins.iter().find(|p| p.name == name).map(|p| &p.outcome)
    }
}

/// A failure of the whole sync, before or outside any one plugin.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("plugins directory {}: {source}", path.display())]
    Dir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Setup(#[from] SetupError),
}

/// Makes `plugins_dir` hold exactly the `wanted` managed plugins, leaving every jar the
/// platform did not install alone.
///
/// Each wanted plugin whose jar already has the wanted digest is left as is; any other is
/// downloaded under `policy`, verified while it streams, and renamed into place. A plugin
/// that fails keeps its previous jar and does not stop the others. Managed plugins that are
/// no longer wanted are deleted. The manifest is rewritten after every change, so a crash
/// loses at most the plugin in flight. One sync per directory at a time.
pub async fn sync(plugins_dir: &Path, wanted: &[PluginSpec], policy: &FetchPolicy) -> Result<SyncReport, SyncError> {
    let dir_error = |source| SyncError::Dir { path: plugins_dir.to_owned(), source };
    tokio::fs::create_dir_all(plugins_dir).await.map_err(dir_error)?;
    let fetcher = Fetcher::new(policy)?;
    place::remove_stale_temps(plugins_dir).await.map_err(dir_error)?;
    let mut manifest = manifest::load(plugins_dir).await?;
    let mut report = SyncReport::default();

    let mut seen = HashSet::new();
    for spec in wanted {
        let outcome = if !seen.insert(spec.name.as_str()) {
            Outcome::Failed(PluginError::Duplicate)
        } else {
            install(&fetcher, plugins_dir, spec, &mut manifest).await.unwrap_or_else(Outcome::Failed)
        };
        log_outcome(&spec.name, &outcome);
        report.plugins.push(PluginReport { name: spec.name.clone(), outcome });
    }

    let unwanted: Vec<String> = manifest.plugins.keys().filter(|name| !seen.contains(name.as_str())).cloned().collect();
    for name in unwanted {
        let outcome = remove(plugins_dir, &name, &mut manifest).await.unwrap_or_else(Outcome::Failed);
        log_outcome(&name, &outcome);
        report.plugins.push(PluginReport { name, outcome });
    }
    Ok(report)
}

fn log_outcome(name: &str, outcome: &Outcome) {
    match outcome {
        Outcome::Failed(error) => tracing::warn!(plugin = name, %error, "plugin sync failed"),
        other => tracing::info!(plugin = name, outcome = ?other, "plugin synced"),
    }
}

async fn install(
    fetcher: &Fetcher,
    dir: &Path,
    spec: &PluginSpec,
    manifest: &mut Manifest,
) -> Result<Outcome, PluginError> {
    if !valid_name(&spec.name) {
        return Err(PluginError::InvalidName(spec.name.clone()));
    }
    let expected = Expected::new(spec.sha256.as_deref(), spec.sha512.as_deref())?;
    let file_name = jar_file_name(&spec.name);
    let path = dir.join(&file_name);
    let io = |context: &str| {
        let context = format!("{context} {}", path.display());
        move |source| PluginError::Io { context, source }
    };
    let managed = manifest.plugins.contains_key(&spec.name);

    match place::inspect(&path).await.map_err(io("reading"))? {
        // Already the wanted bytes: nothing to download. An unmanaged jar with exactly
        // these bytes (say, a crash between placing it and saving the manifest) is adopted.
        OnDisk::File(actual) if expected.mismatch(&actual).is_none() => {
            let entry = ManagedPlugin {
                version: spec.version.clone(),
                download_url: spec.download_url.clone(),
                sha256: actual.sha256,
                sha512: actual.sha512,
            };
            if manifest.plugins.get(&spec.name) != Some(&entry) {
                manifest.plugins.insert(spec.name.clone(), entry);
                manifest::save(dir, manifest).await?;
            }
            return Ok(Outcome::Unchanged);
        }
        OnDisk::File(_) | OnDisk::Other if !managed => {
            return Err(PluginError::Unmanaged { path });
        }
        _ => {}
    }

    let (temp, mut file) = place::create_temp(dir, &file_name).await.map_err(io("creating a temporary file for"))?;
    let downloaded = fetcher.download(&spec.download_url, &mut file).await;
    let (actual, _len) = match downloaded {
        Ok(done) => done,
        Err(e) => {
            drop(file);
            place::discard(&temp).await;
            return Err(e.into());
        }
    };
    if let Some(m) = expected.mismatch(&actual) {
        drop(file);
        place::discard(&temp).await;
        return Err(PluginError::Checksum {
            plugin: spec.name.clone(),
            url: spec.download_url.clone(),
            algorithm: m.algorithm,
            expected: m.expected,
            actual: m.actual,
        });
    }
    if let Err(e) = place::commit(file, &temp, dir, &file_name).await {
        place::discard(&temp).await;
        return Err(io("placing")(e));
    }
    let sha256 = actual.sha256.clone();
    manifest.plugins.insert(
        spec.name.clone(),
        ManagedPlugin {
            version: spec.version.clone(),
            download_url: spec.download_url.clone(),
            sha256: actual.sha256,
            sha512: actual.sha512,
        },
    );
    manifest::save(dir, manifest).await?;
    Ok(Outcome::Installed { version: spec.version.clone(), sha256 })
}

async fn remove(dir: &Path, name: &str, manifest: &mut Manifest) -> Result<Outcome, PluginError> {
    let Some(recorded) = manifest.plugins.get(name).cloned() else {
        return Ok(Outcome::Removed);
    };
    // A name that could not have been installed came from an edited manifest: forget it
    // without touching the disk.
    if !valid_name(name) {
        manifest.plugins.remove(name);
        manifest::save(dir, manifest).await?;
        return Err(PluginError::InvalidName(name.to_owned()));
    }
    let path = dir.join(jar_file_name(name));
    let io = |context: &'static str| {
        let context = format!("{context} {}", path.display());
        move |source| PluginError::Io { context, source }
    };
    let outcome = match place::inspect(&path).await.map_err(io("reading"))? {
        OnDisk::Missing => Outcome::Removed,
        OnDisk::File(actual) if actual.sha256 == recorded.sha256 => {
            tokio::fs::remove_file(&path).await.map_err(io("removing"))?;
            Outcome::Removed
        }
        OnDisk::File(_) | OnDisk::Other => Outcome::Released,
    };
    manifest.plugins.remove(name);
    manifest::save(dir, manifest).await?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["worldedit", "WorldGuard-7.0", "lp_bukkit.5", "a"] {
            assert!(valid_name(ok), "{ok}");
        }
        let long = "x".repeat(65);
        for bad in ["", ".hidden", "..", "../x", "a/b", "a\\b", "a b", "é", "a\0", long.as_str()] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert_eq!(jar_file_name("worldedit"), "worldedit.jar");
    }

    #[test]
    fn spec_json_matches_the_api_shape() {
        let spec: PluginSpec = serde_json::from_str(
            r#"{"name":"we","version":"7","download_url":"https://x/y.jar","sha256":null,"sha512":"ab"}"#,
        )
        .unwrap();
        assert_eq!(spec.sha256, None);
        assert_eq!(spec.sha512.as_deref(), Some("ab"));
        let minimal: PluginSpec =
            serde_json::from_str(r#"{"name":"we","version":"7","download_url":"https://x/y.jar"}"#).unwrap();
        assert_eq!(minimal.sha256, None);
    }
}
