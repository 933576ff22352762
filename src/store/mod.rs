//! Persistence: Postgres repositories (runtime-checked sqlx queries, so builds need no database) and
//! the content-addressed blob store.

pub mod blobs;
pub mod calibrations;
pub mod estimates;
pub mod idempotency;
pub mod image_sets;
pub mod keys;
pub mod models;
pub mod received;
pub mod results;
pub mod sessions;
pub mod webhooks;
pub mod windows;

pub use blobs::BlobStore;

/// A job's state as the jobs table stores it (`CHECK (state IN (...))`). Read as this enum, a value the
/// code does not know is a decode error, never taken for another state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::str::FromStr;
use std::time::Duration;

/// Errors of the persistence layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("blob store error: {0}")]
    Blob(#[from] object_store::Error),
    #[error("blob {0} is missing from the blob store")]
    MissingBlob(String),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("cannot serialise a document to store: {0}")]
    Serialise(String),
}

impl StoreError {
    /// The name of the violated unique constraint, if this is one (mapped to 409 by the API).
    pub fn unique_violation(&self) -> Option<String> {
        match self {
            StoreError::Db(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Some(e.constraint().unwrap_or_default().to_string())
            }
            _ => None,
        }
    }
}

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A pool sized for `max_connections`, failing fast when the database is unreachable.
/// A pool of at most `max_connections`; a query waiting longer than `acquire_timeout` for a connection
/// fails with `sqlx::Error::PoolTimedOut` (the API answers 503 with Retry-After).
pub async fn connect(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<PgPool, StoreError> {
    let options = PgConnectOptions::from_str(url)?.application_name("spe");
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// Where the database's schema stands against this binary's migrations.
#[derive(Debug, PartialEq, Eq)]
pub enum Schema {
    Current,
    /// Migrations this binary has are not applied yet.
    Behind {
        applied: i64,
        known: i64,
    },
    /// A newer binary applied migrations this one does not know.
    Newer {
        applied: i64,
        known: i64,
    },
}

/// Whether the database answers (readiness).
pub async fn ping(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(pool)
        .await?;
    Ok(())
}

pub async fn schema(pool: &PgPool) -> Result<Schema, StoreError> {
    let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    // Two queries: a relation name is resolved even in a CASE branch that is not taken.
    let migrated: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    let applied: i64 = if migrated {
        sqlx::query_scalar("SELECT COALESCE(max(version), 0) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await?
    } else {
        0
    };
    Ok(match applied.cmp(&known) {
        std::cmp::Ordering::Equal => Schema::Current,
        std::cmp::Ordering::Less => Schema::Behind { applied, known },
        std::cmp::Ordering::Greater => Schema::Newer { applied, known },
    })
}

/// Applies pending migrations (idempotent; concurrent callers serialise on sqlx's advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Deletes the given blobs when no row references them any more. Blobs are content-addressed and may be
/// shared, so the reference check (not the caller's belief) decides.
pub async fn collect_garbage(
    pool: &PgPool,
    blobs: &BlobStore,
    candidates: &[String],
) -> Result<usize, StoreError> {
    let mut removed = 0;
    for sha in candidates {
        // Under the blob's lock: a writer that found this blob present cannot commit rows naming it
        // between the check and the delete.
        let mut tx = pool.begin().await?;
        blobs::lock_exclusive(&mut tx, sha).await?;
        let referenced: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM blob_references WHERE sha256 = $1)")
                .bind(sha)
                .fetch_one(&mut *tx)
                .await?;
        if !referenced {
            blobs.delete(sha).await?;
            removed += 1;
        }
        tx.commit().await?;
    }
    Ok(removed)
}

/// Blobs checked per reference query while sweeping.
const SWEEP_PAGE: usize = 512;

/// Deletes every blob older than `min_age` that no row references: what is left when a process dies
/// between committing the rows that dropped a blob and deleting it. Returns how many were deleted.
///
/// Writers hold a blob's lock shared from writing it until their rows commit, and the delete goes through
/// `collect_garbage` (exclusive lock, then the reference check), so a blob an upload is about to commit
/// survives; `min_age` is a margin on top of that.
pub async fn sweep_orphans(
    pool: &PgPool,
    blobs: &BlobStore,
    min_age: Duration,
) -> Result<usize, StoreError> {
    use futures::TryStreamExt;
    let temp = blobs.sweep_temp_files(min_age).await?;
    if temp > 0 {
        tracing::info!(
            removed = temp,
            "blob sweep: interrupted writes' temp files deleted"
        );
    }
    let mut pages = std::pin::pin!(blobs.list_older_than(min_age, SWEEP_PAGE));
    let mut removed = 0;
    while let Some(page) = pages.try_next().await? {
        // One unlocked query per page keeps the per-blob locked check for the few that look unreferenced;
        // a blob it wrongly counts as referenced is merely kept until the next sweep.
        let referenced: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT sha256 FROM blob_references WHERE sha256 = ANY($1)",
        )
        .bind(&page)
        .fetch_all(pool)
        .await?;
        let referenced: std::collections::HashSet<String> = referenced.into_iter().collect();
        let orphans: Vec<String> = page
            .into_iter()
            .filter(|sha| !referenced.contains(sha))
            .collect();
        removed += collect_garbage(pool, blobs, &orphans).await?;
    }
    Ok(removed)
}

/// The session advisory lock a background sweep holds (the two-int form, so it cannot meet a blob's
/// single-bigint lock): with several `spe serve` processes on one database, one sweeps at a time.
pub const SWEEP_LOCK: (i32, i32) = (0x5350_4521, 1);

/// `sweep_orphans`, unless another process is sweeping this database right now (then None).
pub async fn sweep_orphans_unless_running(
    pool: &PgPool,
    blobs: &BlobStore,
    min_age: Duration,
) -> Result<Option<usize>, StoreError> {
    let mut conn = pool.acquire().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(SWEEP_LOCK.0)
        .bind(SWEEP_LOCK.1)
        .fetch_one(&mut *conn)
        .await?;
    if !locked {
        return Ok(None);
    }
    let swept = sweep_orphans(pool, blobs, min_age).await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
        .bind(SWEEP_LOCK.0)
        .bind(SWEEP_LOCK.1)
        .execute(&mut *conn)
        .await;
    if unlocked.is_err() {
        // Closing the session is what releases a lock it could not release itself.
        let _ = conn.close().await;
    }
    swept.map(Some)
}
