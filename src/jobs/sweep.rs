//! The orphaned-blob sweep as a background task of `spe serve`: once at start-up, then every interval;
//! a tick is skipped while another process sweeps the same database. With a retention period, estimates
//! older than it are deleted first, so that their blobs go in the same tick.

use crate::store::{self, BlobStore};
use sqlx::PgPool;
use std::time::Duration;
use tokio::sync::watch;

/// Sweeps now and then every `interval` until `shutdown` turns true. Failures are logged and retried at
/// the next tick: a missed sweep only delays a deletion.
pub async fn sweep_blobs(
    pool: PgPool,
    blobs: BlobStore,
    interval: Duration,
    min_age: Duration,
    retention: Option<Duration>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if let Some(retention) = retention {
            match expire_estimates(&pool, &blobs, retention).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "retention: old estimates deleted"),
                Err(e) => tracing::warn!(error = %e, "retention: deleting old estimates failed"),
            }
        }
        match store::sweep_orphans_unless_running(&pool, &blobs, min_age).await {
            Ok(Some(removed)) => {
                metrics::counter!("spe_blobs_swept_total").increment(removed as u64);
                tracing::info!(removed, "blob sweep: orphaned blobs deleted");
            }
            Ok(None) => tracing::debug!("blob sweep skipped: another process is sweeping"),
            Err(e) => tracing::warn!(error = %e, "blob sweep failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Estimates deleted per transaction, so that a first run over a long history holds no long locks.
const RETENTION_BATCH: i64 = 1000;

/// Deletes the estimates that finished more than `retention` ago (never a model's latest), in batches;
/// returns how many.
async fn expire_estimates(
    pool: &PgPool,
    blobs: &BlobStore,
    retention: Duration,
) -> Result<u64, store::StoreError> {
    let cutoff =
        chrono::Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let mut total = 0;
    loop {
        let mut tx = pool.begin().await?;
        let (deleted, garbage) =
            store::estimates::delete_finished_before(&mut tx, cutoff, RETENTION_BATCH).await?;
        tx.commit().await?;
        if let Err(e) = store::collect_garbage(pool, blobs, &garbage).await {
            // No row names them any more: the orphan sweep removes what is left.
            tracing::warn!(error = %e, "retention: cannot delete expired estimates' blobs yet");
        }
        total += deleted;
        if deleted < RETENTION_BATCH as u64 {
            return Ok(total);
        }
    }
}
