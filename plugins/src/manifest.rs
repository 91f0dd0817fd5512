//! The record of which jars in a plugins directory the platform installed.
//!
//! Stored as `.respawn-plugins.json` in the plugins directory itself, so it travels with
//! the volume. The file name of a managed jar is always derived from its plugin name,
//! never read from this file, so an edited manifest cannot point a removal elsewhere.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The manifest's file name inside the plugins directory.
pub const MANIFEST_FILE: &str = ".respawn-plugins.json";
const FORMAT_VERSION: u32 = 1;

/// All managed plugins, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub plugins: BTreeMap<String, ManagedPlugin>,
}

impl Default for Manifest {
    fn default() -> Self {
        Self { format: FORMAT_VERSION, plugins: BTreeMap::new() }
    }
}

/// One jar the platform placed, with the digests of the bytes it placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedPlugin {
    pub version: String,
    pub download_url: String,
    pub sha256: String,
    pub sha512: String,
}

/// The manifest exists but cannot be used. Sync stops rather than guess: treating it as
/// empty would turn every managed jar into an unmanaged one.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not a valid plugin manifest: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("{path} has format {found}, this version understands {FORMAT_VERSION}")]
    Format { path: PathBuf, found: u32 },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Reads the manifest of `dir`; a missing file is an empty manifest.
pub async fn load(dir: &Path) -> Result<Manifest, ManifestError> {
    let path = dir.join(MANIFEST_FILE);
    let bytes = match tokio::fs::read(&path).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Manifest::default()),
        Err(source) => return Err(ManifestError::Read { path, source }),
    };
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|source| ManifestError::Parse { path: path.clone(), source })?;
    if manifest.format != FORMAT_VERSION {
        return Err(ManifestError::Format { path, found: manifest.format });
    }
    Ok(manifest)
}

/// Writes the manifest of `dir` atomically (temporary file, fsync, rename).
pub async fn save(dir: &Path, manifest: &Manifest) -> Result<(), ManifestError> {
    let path = dir.join(MANIFEST_FILE);
    let write = |source| ManifestError::Write { path: path.clone(), source };
    let mut json = serde_json::to_vec_pretty(manifest).map_err(|e| write(io::Error::other(e)))?;
    json.push(b'\n');
    crate::place::write_atomically(dir, MANIFEST_FILE, &json).await.map_err(write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trips_and_missing_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).await.unwrap(), Manifest::default());
        let mut m = Manifest::default();
        m.plugins.insert(
            "worldedit".into(),
            ManagedPlugin {
                version: "7.3.0".into(),
                download_url: "https://example.org/we.jar".into(),
                sha256: "a".repeat(64),
                sha512: "b".repeat(128),
            },
        );
        save(dir.path(), &m).await.unwrap();
        assert_eq!(load(dir.path()).await.unwrap(), m);
    }

    #[tokio::test]
    async fn corrupt_manifest_is_an_error_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST_FILE), b"{not json").unwrap();
        assert!(matches!(load(dir.path()).await, Err(ManifestError::Parse { .. })));
        std::fs::write(dir.path().join(MANIFEST_FILE), br#"{"format": 99, "plugins": {}}"#).unwrap();
        assert!(matches!(load(dir.path()).await, Err(ManifestError::Format { found: 99, .. })));
    }
}
