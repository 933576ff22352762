//! Content-addressed blob store: a blob's name is the sha256 of its bytes, so writing twice is harmless,
//! readers can verify what they get, and a blob no row references can be deleted safely.

use super::StoreError;
use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use std::sync::Arc;

#[derive(Clone)]
pub struct BlobStore {
    inner: Arc<dyn ObjectStore>,
    description: String,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
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
            });
        }
        std::fs::create_dir_all(location).map_err(|e| object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(e),
        })?;
        Ok(Self {
            inner: Arc::new(LocalFileSystem::new_with_prefix(location)?),
            description: format!("local:{location}"),
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

    /// Stores `bytes` under their sha256; returns (sha, whether this call created the blob).
    pub async fn put(&self, bytes: Bytes) -> Result<(String, bool), StoreError> {
        let sha = sha256_hex(&bytes);
        if self.exists(&sha).await? {
            return Ok((sha, false));
        }
        self.inner
            .put(&Self::path(&sha), PutPayload::from(bytes))
            .await?;
        Ok((sha, true))
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

/// The advisory-lock key of a blob (its digest's first 8 bytes). Writers hold it shared from writing the
/// blob until their rows commit; garbage collection holds it exclusively from its reference check to the
/// delete. So a blob is never deleted between a writer finding it present and its rows referencing it.
fn lock_key(sha: &str) -> i64 {
    let prefix = sha.get(..16).unwrap_or(sha);
    u64::from_str_radix(prefix, 16).unwrap_or(0) as i64
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
}

impl Staged {
    pub async fn begin(pool: &PgPool) -> Result<Self, StoreError> {
        Ok(Self {
            created: Vec::new(),
            tx: pool.begin().await?,
        })
    }

    /// Stores a blob for rows this transaction will insert.
    pub async fn put(&mut self, store: &BlobStore, bytes: Bytes) -> Result<String, StoreError> {
        let sha = sha256_hex(&bytes);
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
            .bind(lock_key(&sha))
            .execute(&mut *self.tx)
            .await?;
        let (sha, created) = store.put(bytes).await?;
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
}
