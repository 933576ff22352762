//! Content-addressed blob store: a blob's name is the sha256 of its bytes, so writing twice is harmless,
//! readers can verify what they get, and a blob no row references can be deleted safely.

use super::StoreError;
use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct BlobStore {
    inner: Arc<dyn ObjectStore>,
    description: String,
    /// A local store's directory: its writes are fsynced, and its temp leftovers swept.
    local_root: Option<PathBuf>,
    /// Directories already made durable by this process (a new blob's own directory is synced each time).
    synced_dirs: Arc<Mutex<HashSet<PathBuf>>>,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

pub use crate::digest::sha256_hex;

/// [`sha256_hex`] on a blocking thread for large blobs (an ONNX model takes a while), inline for small.
pub async fn digest_off_thread(bytes: &Bytes) -> Result<String, StoreError> {
    if bytes.len() < 1 << 20 {
        return Ok(sha256_hex(bytes));
    }
    let bytes = bytes.clone();
    crate::background::spawn_blocking(move || sha256_hex(&bytes))
        .await
        .map_err(|e| io_error(std::io::Error::other(e)))
}

impl BlobStore {
    /// `location`: a local directory (created if missing), or `s3://bucket[/prefix]` configured from the
    /// usual AWS_* environment variables (AWS_ENDPOINT for S3-compatible stores).
    pub fn open(location: &str) -> Result<Self, StoreError> {
        if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let s3 = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()?;
            let inner: Arc<dyn ObjectStore> = if prefix.is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
            };
            return Ok(Self {
                inner,
                description: format!("s3://{bucket}/{prefix}"),
                local_root: None,
                synced_dirs: Arc::default(),
            });
        }
        std::fs::create_dir_all(location).map_err(|e| object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(e),
        })?;
        Ok(Self {
            inner: Arc::new(LocalFileSystem::new_with_prefix(location)?),
            description: format!("local:{location}"),
            local_root: Some(PathBuf::from(location)),
            synced_dirs: Arc::default(),
        })
    }

    fn path(sha: &str) -> ObjectPath {
        ObjectPath::from(format!("sha256/{}/{sha}", &sha[..2.min(sha.len())]))
    }

    pub async fn exists(&self, sha: &str) -> Result<bool, StoreError> {
        match self.inner.head(&Self::path(sha)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the store answers (readiness): a local directory exists, an S3 bucket answers a HEAD.
    pub async fn check(&self) -> Result<(), StoreError> {
        if let Some(root) = &self.local_root {
            if !root.is_dir() {
                return Err(StoreError::MissingBlob(format!(
                    "the blob directory {}",
                    root.display()
                )));
            }
        }
        // A digest no blob has: `false` proves the store answers.
        self.exists(&"0".repeat(64)).await.map(drop)
    }

    /// Stores `bytes` under their sha256; returns (sha, whether this call wrote the blob). A local blob is
    /// fsynced, with its directory, before this returns, so a row committed after it never points to a
    /// file a power loss emptied; a stored blob of the wrong size (such a file) is written again.
    pub async fn put(&self, bytes: Bytes) -> Result<(String, bool), StoreError> {
        let sha = digest_off_thread(&bytes).await?;
        self.put_digested(sha, bytes).await
    }

    async fn put_digested(&self, sha: String, bytes: Bytes) -> Result<(String, bool), StoreError> {
        let path = Self::path(&sha);
        match self.inner.head(&path).await {
            Ok(meta) if meta.size == bytes.len() as u64 => return Ok((sha, false)),
            Ok(meta) => tracing::warn!(
                sha = %sha,
                stored = meta.size,
                expected = bytes.len(),
                "a stored blob has the wrong size; writing it again"
            ),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.inner.put(&path, PutPayload::from(bytes)).await?;
        if let Some(root) = &self.local_root {
            let (root, synced) = (root.clone(), self.synced_dirs.clone());
            tokio::task::spawn_blocking(move || sync_local(&root, path.as_ref(), &synced))
                .await
                .map_err(|e| io_error(std::io::Error::other(e)))?
                .map_err(io_error)?;
        }
        Ok((sha, true))
    }

    /// Deletes a local store's temp files (`<digest>#<n>`, what an interrupted write leaves) at least
    /// `min_age` old; returns how many. S3 has none.
    pub async fn sweep_temp_files(
        &self,
        min_age: std::time::Duration,
    ) -> Result<usize, StoreError> {
        let Some(root) = self.local_root.clone() else {
            return Ok(0);
        };
        tokio::task::spawn_blocking(move || remove_temp_files(&root.join("sha256"), min_age))
            .await
            .map_err(|e| io_error(std::io::Error::other(e)))?
            .map_err(io_error)
    }

    pub async fn get(&self, sha: &str) -> Result<Bytes, StoreError> {
        let result = match self.inner.get(&Self::path(sha)).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StoreError::MissingBlob(sha.into()))
            }
            Err(e) => return Err(e.into()),
        };
        let bytes = result.bytes().await?;
        if sha256_hex(&bytes) != sha {
            return Err(StoreError::Corrupt(format!(
                "blob {sha} does not match its digest"
            )));
        }
        Ok(bytes)
    }

    pub async fn delete(&self, sha: &str) -> Result<(), StoreError> {
        match self.inner.delete(&Self::path(sha)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The digests of the blobs last modified at least `min_age` ago, a stream of pages of at most `page`.
    /// Objects not laid out as this store writes them are left out, so nothing else is ever swept.
    pub fn list_older_than(
        &self,
        min_age: std::time::Duration,
        page: usize,
    ) -> impl futures::Stream<Item = Result<Vec<String>, StoreError>> {
        use futures::TryStreamExt;
        let now = chrono::Utc::now();
        self.inner
            .list(Some(&ObjectPath::from("sha256")))
            .try_filter_map(move |meta| async move {
                // A clock skewed into the future gives a negative age: such a blob counts as young.
                let old = (now - meta.last_modified)
                    .to_std()
                    .is_ok_and(|age| age >= min_age);
                let sha = meta.location.filename().filter(|name| {
                    name.len() == 64
                        && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                        && Self::path(name) == meta.location
                });
                Ok(sha.filter(|_| old).map(str::to_string))
            })
            .map_err(StoreError::from)
            .try_chunks(page)
            .map_err(|e| e.1)
    }

    /// Number of blobs stored (tests use it to check that rejected requests leave nothing behind).
    pub async fn count(&self) -> Result<usize, StoreError> {
        use futures::TryStreamExt;
        let list: Vec<_> = self.inner.list(None).try_collect().await?;
        Ok(list.len())
    }
}

fn io_error(e: std::io::Error) -> StoreError {
    StoreError::Blob(object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(e),
    })
}

/// fsyncs a new blob file and the directory that names it, and (once per process) the directories
/// above it up to the store's root.
fn sync_local(
    root: &Path,
    relative: &str,
    synced: &Mutex<HashSet<PathBuf>>,
) -> std::io::Result<()> {
    let file = root.join(relative);
    std::fs::File::open(&file)?.sync_all()?;
    let mut dir = file.parent();
    let mut first = true;
    while let Some(d) = dir {
        let known = synced.lock().map(|s| s.contains(d)).unwrap_or(false);
        if !first && known {
            break;
        }
        std::fs::File::open(d)?.sync_all()?;
        if let Ok(mut s) = synced.lock() {
            s.insert(d.to_path_buf());
        }
        if d == root {
            break;
        }
        first = false;
        dir = d.parent();
    }
    Ok(())
}

fn remove_temp_files(dir: &Path, min_age: std::time::Duration) -> std::io::Result<usize> {
    let mut removed = 0;
    let Ok(shards) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    for shard in shards.flatten() {
        let Ok(files) = std::fs::read_dir(shard.path()) else {
            continue;
        };
        for file in files.flatten() {
            let is_temp = file.file_name().to_string_lossy().contains('#');
            let old = file
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= min_age);
            if is_temp && old && std::fs::remove_file(file.path()).is_ok() {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// The advisory-lock key of a blob: one of 256 buckets (its digest's first byte). Writers hold it shared
/// from writing the blob until their rows commit; garbage collection holds it exclusively from its
/// reference check to the delete. So a blob is never deleted between a writer finding it present and its
/// rows referencing it. Buckets, not one lock per blob, so that a 1000-image upload holds at most 256 locks
/// and a few of them cannot fill PostgreSQL's lock table (max_locks_per_transaction x max_connections).
fn lock_key(sha: &str) -> i64 {
    const BASE: i64 = 0x5350_4500_0000;
    let bucket = sha
        .get(..2)
        .and_then(|b| i64::from_str_radix(b, 16).ok())
        .unwrap_or(0);
    BASE + bucket
}

/// Takes the exclusive lock on a blob for the rest of `conn`'s transaction.
pub async fn lock_exclusive(conn: &mut PgConnection, sha: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(lock_key(sha))
        .execute(conn)
        .await?;
    Ok(())
}

/// One request's writes: its transaction and the blobs it created (deleted again, unless something
/// references them, when the request fails).
pub struct Staged {
    pub created: Vec<String>,
    tx: Transaction<'static, Postgres>,
    locked: HashSet<i64>,
}

impl Staged {
    pub async fn begin(pool: &PgPool) -> Result<Self, StoreError> {
        Ok(Self {
            created: Vec::new(),
            tx: pool.begin().await?,
            locked: HashSet::new(),
        })
    }

    /// Stores a blob for rows this transaction will insert.
    pub async fn put(&mut self, store: &BlobStore, bytes: Bytes) -> Result<String, StoreError> {
        let sha = digest_off_thread(&bytes).await?;
        let key = lock_key(&sha);
        if self.locked.insert(key) {
            sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
                .bind(key)
                .execute(&mut *self.tx)
                .await?;
        }
        let (sha, created) = store.put_digested(sha, bytes).await?;
        if created {
            self.created.push(sha.clone());
        }
        Ok(sha)
    }

    /// The request's transaction, for the rows that reference the staged blobs.
    pub fn tx(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }

    /// Ends the transaction, releasing its shared blob locks: call before deleting what it staged, whose
    /// exclusive locks would otherwise wait on this very transaction.
    pub async fn rollback(self) -> Result<(), StoreError> {
        self.tx.rollback().await?;
        Ok(())
    }
}
