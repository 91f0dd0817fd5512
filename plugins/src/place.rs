//! Putting files into the plugins directory atomically, and looking at what is there.
//!
//! A jar is written to a temporary name in the same directory (so the rename cannot cross
//! a file system), fsynced, then renamed over the final name: the server sees the old jar
//! or the new one, never half of one. Temporary names start with [`TEMP_PREFIX`] and end in
//! `.part`, which the server does not load and the next sync cleans up.

use std::io;
use std::path::{Path, PathBuf};

use tokio::fs::{File, OpenOptions};
use tokio::io::AsyncWriteExt;

use crate::digest::{self, Actual};

pub const TEMP_PREFIX: &str = ".respawn-";
const TEMP_SUFFIX: &str = ".part";

/// What occupies a path in the plugins directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnDisk {
    Missing,
    /// A regular file, with its digests.
    File(Actual),
    /// A directory, symlink, fifo, ...: never hashed (a symlink to `/dev/zero` would never
    /// end) and never treated as a jar we placed.
    Other,
}

pub async fn inspect(path: &Path) -> io::Result<OnDisk> {
    match tokio::fs::symlink_metadata(path).await {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(OnDisk::Missing),
        Err(e) => Err(e),
        Ok(meta) if !meta.file_type().is_file() => Ok(OnDisk::Other),
        Ok(_) => Ok(digest::of_file(path).await?.map_or(OnDisk::Missing, OnDisk::File)),
    }
}

/// A fresh temporary file for `final_name` in `dir`. Whatever was at that name before (a
/// leftover, or a planted symlink) is removed first and the file is created exclusively,
/// so writing never follows a link out of the directory.
pub async fn create_temp(dir: &Path, final_name: &str) -> io::Result<(PathBuf, File)> {
    let path = dir.join(format!("{TEMP_PREFIX}{final_name}.{}{TEMP_SUFFIX}", std::process::id()));
    match tokio::fs::remove_file(&path).await {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let file = OpenOptions::new().write(true).create_new(true).open(&path).await?;
    Ok((path, file))
}

/// Flushes `file` to disk and renames `temp` to `dir/final_name`.
pub async fn commit(file: File, temp: &Path, dir: &Path, final_name: &str) -> io::Result<()> {
    file.sync_all().await?;
    drop(file);
    tokio::fs::rename(temp, dir.join(final_name)).await?;
    sync_dir(dir).await;
    Ok(())
}

/// Writes `bytes` to `dir/name` through a temporary file and a rename.
pub async fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let (temp, mut file) = create_temp(dir, name).await?;
    let result = async {
        file.write_all(bytes).await?;
        commit(file, &temp, dir, name).await
    }
    .await;
    if result.is_err() {
        discard(&temp).await;
    }
    result
}

/// Removes a temporary file, ignoring errors (it may never have been created).
pub async fn discard(temp: &Path) {
    if let Err(e) = tokio::fs::remove_file(temp).await
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %temp.display(), error = %e, "could not remove temporary file");
    }
}

/// Removes temporary files a crashed earlier sync left behind.
pub async fn remove_stale_temps(dir: &Path) -> io::Result<()> {
    let mut entries = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX) {
            discard(&entry.path()).await;
        }
    }
    Ok(())
}

/// Makes a rename durable. Best effort: some file systems refuse to fsync a directory, and
/// the rename itself is already atomic.
async fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir).await {
        let _ = d.sync_all().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        write_atomically(dir.path(), "a.jar", b"one").await.unwrap();
        write_atomically(dir.path(), "a.jar", b"two").await.unwrap();
        assert_eq!(std::fs::read(dir.path().join("a.jar")).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.jar")]);
    }

    #[tokio::test]
    async fn stale_temps_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".respawn-x.jar.1.part"), b"junk").unwrap();
        std::fs::write(dir.path().join("x.jar.part"), b"not ours").unwrap();
        std::fs::write(dir.path().join("x.jar"), b"jar").unwrap();
        remove_stale_temps(dir.path()).await.unwrap();
        assert!(!dir.path().join(".respawn-x.jar.1.part").exists());
        assert!(dir.path().join("x.jar.part").exists());
        assert!(dir.path().join("x.jar").exists());
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn symlinks_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("victim");
        std::fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("a.jar")).unwrap();
        assert_eq!(inspect(&dir.path().join("a.jar")).await.unwrap(), OnDisk::Other);
        // A planted link at the temporary name is replaced, not written through.
        let temp_name = format!("{TEMP_PREFIX}b.jar.{}{TEMP_SUFFIX}", std::process::id());
        std::os::unix::fs::symlink(&target, dir.path().join(temp_name)).unwrap();
        write_atomically(dir.path(), "b.jar", b"new").await.unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert_eq!(std::fs::read(dir.path().join("b.jar")).unwrap(), b"new");
    }
}
