//! Where archives live: an `object_store` over a local directory (the
//! embedded default) or an S3 bucket. Keys are
//! `<tenant>/<server>/<backup>.tar.zst`, all ids the API made.

use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use tokio::io::AsyncReadExt;

use crate::config::{BackupConfig, BackupStoreKind};

/// Upload part size: S3 wants at least 5 MiB per part; 8 MiB keeps requests
/// few without holding much in memory.
const PART_BYTES: usize = 8 << 20;
/// Parts in flight at once per upload.
const PARTS_IN_FLIGHT: usize = 2;

pub struct BackupStorage {
    store: Arc<dyn ObjectStore>,
    /// For logs and errors: `local:/path` or `s3://bucket`.
    pub describe: String,
}

impl BackupStorage {
    /// The store the config names. Nothing is contacted yet (S3 errors show
    /// on the first backup); the local directory is created.
    pub fn from_config(config: &BackupConfig) -> anyhow::Result<BackupStorage> {
        match config.store {
            BackupStoreKind::Local => {
                std::fs::create_dir_all(&config.local_dir)
                    .map_err(|e| anyhow::anyhow!("backups.local_dir {}: {e}", config.local_dir.display()))?;
                let store = LocalFileSystem::new_with_prefix(&config.local_dir)
                    .map_err(|e| anyhow::anyhow!("backups.local_dir {}: {e}", config.local_dir.display()))?;
                Ok(BackupStorage { store: Arc::new(store), describe: format!("local:{}", config.local_dir.display()) })
            }
            BackupStoreKind::S3 => {
                let bucket = config.s3_bucket.clone().unwrap_or_default();
                // Credentials from the config win; otherwise the usual AWS_*
                // variables (and instance/IRSA credentials) apply.
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(&bucket)
                    .with_region(&config.s3_region)
                    .with_allow_http(config.s3_allow_http);
                if let Some(endpoint) = &config.s3_endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if let (Some(id), Some(secret)) = (&config.s3_access_key_id, &config.s3_secret_access_key) {
                    builder = builder.with_access_key_id(id).with_secret_access_key(secret);
                }
                let s3 = builder.build().map_err(|e| anyhow::anyhow!("backups (s3): {e}"))?;
                let store: Arc<dyn ObjectStore> = match config.s3_prefix.as_deref().map(|p| p.trim_matches('/')) {
                    Some(prefix) if !prefix.is_empty() => Arc::new(PrefixStore::new(s3, prefix)),
                    _ => Arc::new(s3),
                };
                Ok(BackupStorage { store, describe: format!("s3://{bucket}") })
            }
        }
    }

    /// The key of a backup's archive.
    pub fn key(&self, tenant_id: &str, server_id: &str, backup_id: &str) -> String {
        format!("{tenant_id}/{server_id}/{backup_id}.tar.zst")
    }

    /// Uploads a file in parts, so memory stays bounded whatever its size.
    pub async fn upload(&self, key: &str, file: &FsPath) -> Result<(), object_store::Error> {
        let io = |e: std::io::Error| object_store::Error::Generic { store: "backup", source: Box::new(e) };
        let mut source = tokio::fs::File::open(file).await.map_err(io)?;
        let upload = self.store.put_multipart(&Path::from(key)).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match source.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(io(e));
                }
            };
            if n == 0 {
                break;
            }
            if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                let _ = writer.abort().await;
                return Err(e);
            }
            writer.write(&buf[..n]);
        }
        writer.finish().await?;
        Ok(())
    }

    /// The archive as a stream of chunks, and its size.
    pub async fn get_sized(
        &self,
        key: &str,
    ) -> Result<(u64, BoxStream<'static, object_store::Result<Bytes>>), object_store::Error> {
        let result = self.store.get(&Path::from(key)).await?;
        Ok((result.meta.size, result.into_stream()))
    }

    /// The archive as a stream of chunks.
    pub async fn get(&self, key: &str) -> Result<BoxStream<'static, object_store::Result<Bytes>>, object_store::Error> {
        Ok(self.get_sized(key).await?.1)
    }

    /// Deletes an archive; one that is already gone is fine.
    pub async fn delete(&self, key: &str) -> Result<(), object_store::Error> {
        match self.store.delete(&Path::from(key)).await {
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            other => other,
        }
    }

    /// True when the archive exists (tests and diagnostics).
    pub async fn exists(&self, key: &str) -> Result<bool, object_store::Error> {
        match self.store.head(&Path::from(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
