//! The orphaned-blob sweep as a background task of `spe serve`: once at start-up, then every interval;
//! a tick is skipped while another process sweeps the same database.

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
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
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
