//! zstd-compressed tar archives of a data directory, the guarded extraction
//! restores use, and the swap that puts the extracted copy in place.
//!
//! Blocking code (std files, CPU-bound compression): call it from
//! `tokio::task::spawn_blocking`.
//!
//! Past 500 lines because the hostile-archive checks (paths, links, devices,
//! sizes) and their tests belong with the one extractor they guard.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

/// zstd level 3 (its default): most of the ratio of higher levels at a
/// fraction of the CPU, which matters on a host that also runs the servers.
pub const ZSTD_LEVEL: i32 = 3;
/// Entries per archive, both ways: a world is thousands of region files, not
/// millions; past this an archive is a zip bomb of tiny files.
pub const MAX_ENTRIES: u64 = 2_000_000;
/// Directory depth, both ways (a symlink loop cannot recurse: links are not
/// followed, but a hostile tree could still be absurdly deep).
pub const MAX_DEPTH: usize = 64;

/// Why an archive could not be written or was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// An entry that would write outside the target directory, or that we
    /// do not restore (devices, FIFOs). Nothing was changed.
    #[error("refused archive entry `{path}`: {why}")]
    Refused { path: String, why: &'static str },
    #[error("the archive has more than {MAX_ENTRIES} entries or is nested deeper than {MAX_DEPTH}")]
    TooLarge,
    /// Unpacked, the files would take more than the server may store.
    #[error("the archive unpacks to more than {limit} bytes")]
    TooBig { limit: u64 },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io { path: path.to_owned(), source }
}

/// What [`create`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Size of the compressed archive.
    pub bytes: u64,
    /// Lower-case hex SHA-256 of the compressed archive.
    pub sha256: String,
    pub entries: u64,
}

/// A writer that counts and hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Archives everything under `src` into `out` (created or truncated) as a
/// zstd-compressed tar with paths relative to `src`. Symbolic links are
/// stored as links, never followed; sockets, FIFOs and devices are skipped.
pub fn create(src: &Path, out: &Path) -> Result<Written, ArchiveError> {
    let meta = fs::metadata(src).map_err(io_at(src))?;
    if !meta.is_dir() {
        return Err(ArchiveError::Io {
            path: src.to_owned(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    let file = File::create(out).map_err(io_at(out))?;
    let hashing = Hashing { inner: BufWriter::new(file), hasher: Sha256::new(), bytes: 0 };
    let encoder = zstd::Encoder::new(hashing, ZSTD_LEVEL).map_err(io_at(out))?;
    let mut builder = tar::Builder::new(encoder);
    builder.follow_symlinks(false);
    let mut entries = 0u64;
    // Depth-first with an explicit stack, sorted, so the same tree always
    // gives the same archive.
    let mut stack: Vec<(PathBuf, usize)> = vec![(PathBuf::new(), 0)];
    while let Some((rel, depth)) = stack.pop() {
        let dir = src.join(&rel);
        let mut children: Vec<_> = fs::read_dir(&dir)
            .map_err(io_at(&dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io_at(&dir))?;
        children.sort();
        let mut subdirs = Vec::new();
        for name in children {
            let child_rel = rel.join(&name);
            let child = src.join(&child_rel);
            let kind = fs::symlink_metadata(&child).map_err(io_at(&child))?.file_type();
            entries += 1;
            if entries > MAX_ENTRIES {
                return Err(ArchiveError::TooLarge);
            }
            if kind.is_dir() {
                if depth + 1 > MAX_DEPTH {
                    return Err(ArchiveError::TooLarge);
                }
                builder.append_dir(&child_rel, &child).map_err(io_at(&child))?;
                subdirs.push((child_rel, depth + 1));
            } else if kind.is_file() || kind.is_symlink() {
                builder.append_path_with_name(&child, &child_rel).map_err(io_at(&child))?;
            } else {
                tracing::warn!(path = %child.display(), "backup skips a socket, FIFO or device file");
                entries -= 1;
            }
        }
        // Reversed onto the stack, so they are visited in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    let encoder = builder.into_inner().map_err(io_at(out))?;
    let mut hashing = encoder.finish().map_err(io_at(out))?;
    hashing.flush().map_err(io_at(out))?;
    let Hashing { inner, hasher, bytes } = hashing;
    let file = inner.into_inner().map_err(|e| ArchiveError::Io { path: out.to_owned(), source: e.into_error() })?;
    file.sync_all().map_err(io_at(out))?;
    Ok(Written { bytes, sha256: hex(&hasher.finalize()), entries })
}

/// The entry's path as a relative path of normal components, or why not.
fn safe_relative(raw: &Path, display: &str) -> Result<PathBuf, ArchiveError> {
    let refuse = |why| ArchiveError::Refused { path: display.to_owned(), why };
    let mut out = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(refuse("the path contains `..`")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(refuse("the path is absolute"));
            }
        }
    }
    if out.components().count() > MAX_DEPTH {
        return Err(ArchiveError::TooLarge);
    }
    Ok(out)
}

/// Where a symbolic link at `link_rel` (relative to the root) pointing to
/// `target` ends up, resolved by name only; `None` when it leaves the root.
fn link_stays_inside(link_rel: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: Vec<&std::ffi::OsStr> = link_rel
        .parent()
        .map(|p| {
            p.components()
                .filter_map(|c| match c {
                    Component::Normal(part) => Some(part),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    for component in target.components() {
        match component {
            Component::Normal(part) => depth.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Refuses to write at `rel` when any directory on the way to it (or the
/// path itself) is a symbolic link already extracted: writing through it
/// could land anywhere, even when the link itself looked harmless.
fn no_links_on_the_way(root: &Path, rel: &Path, display: &str) -> Result<(), ArchiveError> {
    let mut at = root.to_path_buf();
    for component in rel.components() {
        at.push(component);
        match fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(ArchiveError::Refused {
                    path: display.to_owned(),
                    why: "it would be written through a symbolic link",
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(ArchiveError::Io { path: at, source: e });
            }
        }
    }
    Ok(())
}

/// Extracts a [`create`]d archive into `dest`, which must be an empty
/// directory. Refuses, before writing it, any entry with an absolute path or
/// `..`, a symbolic link or hard link that points out of `dest`, an entry
/// that would be written through a symbolic link, and devices or FIFOs; and
/// stops once the files add up to more than `max_bytes` (a decompression
/// bomb must not fill the disk). On a refusal `dest` holds a partial tree:
/// the caller throws it away. Returns the number of entries.
pub fn extract(archive: &Path, dest: &Path, max_bytes: u64) -> Result<u64, ArchiveError> {
    let file = File::open(archive).map_err(io_at(archive))?;
    let decoder = zstd::Decoder::new(BufReader::new(file)).map_err(io_at(archive))?;
    extract_from(decoder, dest, max_bytes)
}

/// [`extract`] from a reader of the decompressed tar stream.
pub fn extract_from(reader: impl Read, dest: &Path, max_bytes: u64) -> Result<u64, ArchiveError> {
    let mut tar = tar::Archive::new(reader);
    let mut count = 0u64;
    let mut bytes = 0u64;
    for entry in tar.entries().map_err(io_at(dest))? {
        let mut entry = entry.map_err(io_at(dest))?;
        count += 1;
        if count > MAX_ENTRIES {
            return Err(ArchiveError::TooLarge);
        }
        let raw = entry.path().map_err(io_at(dest))?.into_owned();
        let display = raw.display().to_string();
        let refuse = |why| ArchiveError::Refused { path: display.clone(), why };
        let kind = entry.header().entry_type();
        if matches!(kind, tar::EntryType::XGlobalHeader | tar::EntryType::XHeader) {
            continue;
        }
        let rel = safe_relative(&raw, &display)?;
        if rel.as_os_str().is_empty() {
            continue; // "./" itself
        }
        no_links_on_the_way(dest, &rel, &display)?;
        let target = dest.join(&rel);
        if kind != tar::EntryType::Directory && fs::symlink_metadata(&target).is_ok() {
            return Err(refuse("the path appears twice in the archive"));
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io_at(parent))?;
        }
        match kind {
            tar::EntryType::Directory => fs::create_dir_all(&target).map_err(io_at(&target))?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                // The header's size is what unpack writes (it copies exactly
                // that many bytes), so check it before writing any.
                bytes = bytes.saturating_add(entry.header().size().map_err(io_at(&target))?);
                if bytes > max_bytes {
                    return Err(ArchiveError::TooBig { limit: max_bytes });
                }
                entry.unpack(&target).map_err(io_at(&target))?;
            }
            tar::EntryType::Symlink => {
                let link =
                    entry.link_name().map_err(io_at(&target))?.ok_or_else(|| refuse("a link without a target"))?;
                if !link_stays_inside(&rel, &link) {
                    return Err(refuse("the symbolic link points outside the data directory"));
                }
                std::os::unix::fs::symlink(&link, &target).map_err(io_at(&target))?;
            }
            tar::EntryType::Link => {
                let link =
                    entry.link_name().map_err(io_at(&target))?.ok_or_else(|| refuse("a link without a target"))?;
                let link_rel = safe_relative(&link, &display)
                    .map_err(|_| refuse("the hard link points outside the data directory"))?;
                no_links_on_the_way(dest, &link_rel, &display)?;
                let source = dest.join(&link_rel);
                if !fs::symlink_metadata(&source).is_ok_and(|m| m.is_file()) {
                    return Err(refuse("the hard link does not point to a file extracted before it"));
                }
                fs::hard_link(&source, &target).map_err(io_at(&target))?;
            }
            _ => {
                return Err(refuse("devices, FIFOs and other special files are not restored"));
            }
        }
    }
    verify_links(dest)?;
    Ok(count)
}

/// The by-name check above cannot see chains (`b -> a/l/..` where `a/l` is
/// itself a link to `..`), and links may be created in any order: once
/// everything is extracted, resolve every symbolic link for real and refuse
/// the archive if one leads outside `dest` or nowhere.
fn verify_links(dest: &Path) -> Result<(), ArchiveError> {
    let root = fs::canonicalize(dest).map_err(io_at(dest))?;
    let mut stack = vec![dest.to_path_buf()];
    let mut seen = 0u64;
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).map_err(io_at(&dir))? {
            let path = entry.map_err(io_at(&dir))?.path();
            seen += 1;
            if seen > MAX_ENTRIES {
                return Err(ArchiveError::TooLarge);
            }
            let kind = fs::symlink_metadata(&path).map_err(io_at(&path))?.file_type();
            if kind.is_symlink() {
                let inside = fs::canonicalize(&path).is_ok_and(|real| real.starts_with(&root));
                if !inside {
                    let shown = path.strip_prefix(dest).unwrap_or(&path).display().to_string();
                    return Err(ArchiveError::Refused {
                        path: shown,
                        why: "the symbolic link does not resolve to something inside the data directory",
                    });
                }
            } else if kind.is_dir() {
                stack.push(path);
            }
        }
    }
    Ok(())
}

/// A fresh directory beside `data_dir` (same file system, so renames are
/// atomic) for staging a restore: `.<name>.<purpose>-<tag>`.
pub fn sibling(data_dir: &Path, purpose: &str, tag: &str) -> Result<PathBuf, ArchiveError> {
    let name = data_dir.file_name().ok_or_else(|| ArchiveError::Io {
        path: data_dir.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "the data directory has no name"),
    })?;
    let parent = data_dir.parent().unwrap_or_else(|| Path::new("."));
    Ok(parent.join(format!(".{}.{purpose}-{tag}", name.to_string_lossy())))
}

/// Puts `staged` in place of `data_dir`: rename the old one away, rename the
/// new one in, then delete the old one. Each rename is atomic; if the second
/// fails the old directory is renamed back, so `data_dir` is never left
/// missing or half-written.
pub fn swap_in(data_dir: &Path, staged: &Path, tag: &str) -> Result<(), ArchiveError> {
    let old = sibling(data_dir, "replaced", tag)?;
    let had_old = match fs::symlink_metadata(data_dir) {
        Ok(_) => {
            fs::rename(data_dir, &old).map_err(io_at(data_dir))?;
            true
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => {
            return Err(ArchiveError::Io { path: data_dir.to_owned(), source: e });
        }
    };
    if let Err(e) = fs::rename(staged, data_dir) {
        if had_old && let Err(back) = fs::rename(&old, data_dir) {
            tracing::error!(data_dir = %data_dir.display(), old = %old.display(), error = %back,
                "could not move the previous data back after a failed restore swap");
        }
        return Err(ArchiveError::Io { path: data_dir.to_owned(), source: e });
    }
    if had_old && let Err(e) = fs::remove_dir_all(&old) {
        tracing::warn!(old = %old.display(), error = %e, "restored, but the replaced data could not be deleted");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("respawn-archive-{tag}-{}", crate::db::new_id("t")));
        fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    /// `(path, type, file contents or link target)` of a hand-made entry.
    type RawEntry<'a> = (&'a str, tar::EntryType, &'a str);

    /// A tar (zstd-compressed) built entry by entry, for hostile cases the
    /// builder's own checks would refuse to write.
    fn raw_archive(entries: &[RawEntry]) -> Vec<u8> {
        let mut tar_bytes = Vec::new();
        for (path, kind, data_or_link) in entries {
            let mut header = tar::Header::new_gnu();
            // Write the name bytes directly: `set_path` refuses `..`.
            let name = &mut header.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            let data: &[u8] = if matches!(kind, tar::EntryType::Regular) { data_or_link.as_bytes() } else { b"" };
            if matches!(kind, tar::EntryType::Symlink | tar::EntryType::Link) {
                let link = &mut header.as_old_mut().linkname;
                link[..data_or_link.len()].copy_from_slice(data_or_link.as_bytes());
            }
            header.set_size(data.len() as u64);
            header.set_cksum();
            tar_bytes.extend_from_slice(header.as_bytes());
            tar_bytes.extend_from_slice(data);
            tar_bytes.resize(tar_bytes.len().div_ceil(512) * 512, 0);
        }
        tar_bytes.extend_from_slice(&[0u8; 1024]);
        zstd::encode_all(&tar_bytes[..], ZSTD_LEVEL).expect("compress")
    }

    fn extract_bytes(bytes: &[u8], dest: &Path) -> Result<u64, ArchiveError> {
        extract_from(zstd::Decoder::new(bytes).expect("decoder"), dest, 1 << 20)
    }

    #[test]
    fn round_trip_keeps_files_dirs_and_inner_links() {
        let root = temp("rt");
        let src = root.join("src");
        fs::create_dir_all(src.join("world/region")).expect("mkdir");
        fs::create_dir_all(src.join("empty")).expect("mkdir");
        fs::write(src.join("server.properties"), "motd=hi\n").expect("write");
        fs::write(src.join("world/region/r.0.0.mca"), vec![7u8; 100_000]).expect("write");
        std::os::unix::fs::symlink("world/region", src.join("regions")).expect("symlink");
        let out = root.join("a.tar.zst");
        let written = create(&src, &out).expect("create");
        assert_eq!(written.bytes, fs::metadata(&out).expect("meta").len());
        assert_eq!(written.sha256, hex(&Sha256::digest(fs::read(&out).expect("read"))));
        assert_eq!(written.entries, 6);
        assert!(written.bytes < 10_000, "compressed: {}", written.bytes);
        let dest = root.join("dest");
        fs::create_dir(&dest).expect("mkdir");
        assert_eq!(extract(&out, &dest, u64::MAX).expect("extract"), 6);
        assert_eq!(fs::read(dest.join("world/region/r.0.0.mca")).expect("read"), vec![7u8; 100_000]);
        assert_eq!(fs::read_to_string(dest.join("server.properties")).expect("read"), "motd=hi\n");
        assert!(dest.join("empty").is_dir());
        assert_eq!(fs::read_link(dest.join("regions")).expect("link"), Path::new("world/region"));
        let _ = fs::remove_dir_all(root);
    }

    #[test]
    fn hostile_entries_are_refused() {
        use tar::EntryType::{Link, Regular, Symlink};
        let cases: &[(&[RawEntry], &str)] = &[
            (&[("../x", Regular, "evil")], "`..`"),
            (&[("a/../../x", Regular, "evil")], "`..`"),
            (&[("/abs/x", Regular, "evil")], "absolute"),
            (&[("out", Symlink, "/etc")], "outside"),
            (&[("out", Symlink, "../../x")], "outside"),
            (&[("a/out", Symlink, "../..")], "outside"),
            (&[("in", Symlink, "."), ("in/x", Regular, "y")], "through a symbolic link"),
            (&[("hl", Link, "../x")], "outside"),
            (&[("hl", Link, "/etc/passwd")], "outside"),
            (&[("x", Regular, "1"), ("x", Regular, "2")], "twice"),
            // A chain: each link looks inside by name, together they leave.
            (&[("a/l", Symlink, ".."), ("b", Symlink, "a/l/..")], "does not resolve"),
            (&[("b", Symlink, "a/l/.."), ("a/l", Symlink, "..")], "does not resolve"),
            (&[("dangling", Symlink, "nowhere")], "does not resolve"),
            (&[("fifo", tar::EntryType::Fifo, "")], "special"),
        ];
        for (entries, why) in cases {
            let root = temp("hostile");
            let dest = root.join("dest");
            fs::create_dir(&dest).expect("mkdir");
            let err = extract_bytes(&raw_archive(entries), &dest).expect_err("refused");
            assert!(matches!(err, ArchiveError::Refused { .. }), "{entries:?}: {err}");
            assert!(err.to_string().contains(why), "{entries:?}: {err}");
            assert!(!root.join("x").exists(), "{entries:?} wrote outside");
            let _ = fs::remove_dir_all(root);
        }
        // Harmless links inside are fine, and a hard link to an earlier file works.
        let root = temp("ok");
        let bytes = raw_archive(&[
            ("a/f", Regular, "data"),
            ("a/up", Symlink, "../a/f"),
            ("h", Link, "a/f"),
            ("./", tar::EntryType::Directory, ""),
        ]);
        assert_eq!(extract_bytes(&bytes, &root).expect("extract"), 4);
        assert_eq!(fs::read_to_string(root.join("h")).expect("read"), "data");
        let _ = fs::remove_dir_all(root);
    }

    #[test]
    fn stops_at_the_size_limit() {
        let root = temp("big");
        let src = root.join("src");
        fs::create_dir_all(&src).expect("mkdir");
        fs::write(src.join("a"), vec![0u8; 600]).expect("write");
        fs::write(src.join("b"), vec![0u8; 600]).expect("write");
        let out = root.join("a.tar.zst");
        create(&src, &out).expect("create");
        let fits = root.join("fits");
        fs::create_dir(&fits).expect("mkdir");
        assert_eq!(extract(&out, &fits, 1200).expect("exactly fits"), 2);
        let over = root.join("over");
        fs::create_dir(&over).expect("mkdir");
        let err = extract(&out, &over, 1199).expect_err("too big");
        assert!(matches!(err, ArchiveError::TooBig { limit: 1199 }), "{err}");
        assert!(!over.join("b").exists(), "stopped before writing past the limit");
        let _ = fs::remove_dir_all(root);
    }

    #[test]
    fn swap_replaces_the_directory_and_cleans_up() {
        let root = temp("swap");
        let data = root.join("data");
        fs::create_dir(&data).expect("mkdir");
        fs::write(data.join("old"), "old").expect("write");
        let staged = sibling(&data, "restore", "t1").expect("sibling");
        fs::create_dir(&staged).expect("mkdir");
        fs::write(staged.join("new"), "new").expect("write");
        swap_in(&data, &staged, "t1").expect("swap");
        assert_eq!(fs::read_to_string(data.join("new")).expect("read"), "new");
        assert!(!data.join("old").exists());
        let left: Vec<_> = fs::read_dir(&root).expect("ls").filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("data")], "no staging or replaced directory left");
        // A failing swap (nothing staged) puts the old directory back.
        assert!(swap_in(&data, &root.join("missing"), "t2").is_err());
        assert_eq!(fs::read_to_string(data.join("new")).expect("read"), "new");
        let _ = fs::remove_dir_all(root);
    }

    #[test]
    fn link_resolution_by_name() {
        assert!(link_stays_inside(Path::new("a/b/l"), Path::new("../c")));
        assert!(link_stays_inside(Path::new("a/l"), Path::new("..")));
        assert!(!link_stays_inside(Path::new("a/l"), Path::new("../..")));
        assert!(!link_stays_inside(Path::new("l"), Path::new("/x")));
        assert!(link_stays_inside(Path::new("l"), Path::new("./x/./y")));
    }
}
