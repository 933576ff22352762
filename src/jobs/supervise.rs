//! One claimed job from start to its outcome: the work runs in its own task (a panic fails the job
//! instead of leaving it `running`), a heartbeat keeps the lease, and the work is asked to stop when the
//! lease is lost or the deadline passes. Transient failures are retried with backoff for the retry
//! window; the final write is retried in place, so a short database outage costs no recomputation.

use super::run::{self, Ctx, Output};
use super::{heartbeat, queue, JobError, Progress, WorkerConfig};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use uuid::Uuid;

/// Set by the heartbeat when another worker owns the job now.
#[derive(Default)]
pub struct LeaseLost {
    lost: AtomicBool,
    notify: Notify,
}

impl LeaseLost {
    pub fn signal(&self) {
        self.lost.store(true, Ordering::SeqCst);
        // notify_one keeps a permit when nobody waits yet.
        self.notify.notify_one();
    }
    fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

/// Aborts a task when dropped, so no path out of `supervise` leaves a heartbeat running.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum Ended {
    Done(Result<Output, JobError>),
    Released,
    Lost,
    PastDeadline(Duration),
}

/// Runs `work` for the claimed `job` and records its outcome; returns the outcome's label (for metrics).
pub async fn supervise<W, F>(
    ctx: &Arc<Ctx>,
    config: &WorkerConfig,
    job: queue::Claimed,
    mut shutdown: watch::Receiver<bool>,
    work: W,
) -> &'static str
where
    W: FnOnce(Progress) -> F,
    F: Future<Output = Result<Output, JobError>> + Send + 'static,
{
    let (id, token) = (job.id, job.lease_token);
    let started = Instant::now();
    if job.attempts > job.max_attempts {
        let reason = format!(
            "gave up after {} attempts: the workers running it stopped before finishing",
            job.max_attempts
        );
        return record_failure(ctx, config, id, token, &reason).await;
    }
    tracing::info!("job started");
    let progress = Progress::default();
    let lost = Arc::new(LeaseLost::default());
    let _heartbeat = AbortOnDrop(tokio::spawn(heartbeat(
        ctx.pool.clone(),
        id,
        token,
        config.lease,
        progress.clone(),
        lost.clone(),
    )));
    let mut task = AbortOnDrop(tokio::spawn(work(progress.clone())));
    let deadline = async {
        match config.deadline {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    // On shutdown the job gets `shutdown_grace` to finish; then it goes back to the queue for another worker.
    let ended = loop {
        tokio::select! {
            r = &mut task.0 => break Ended::Done(r.unwrap_or_else(|e| Err(crashed(e)))),
            _ = lost.notify.notified() => break Ended::Lost,
            _ = &mut deadline => break Ended::PastDeadline(config.deadline.unwrap_or_default()),
            _ = shutdown.changed(), if !*shutdown.borrow() => {}
            _ = tokio::time::sleep(config.shutdown_grace), if *shutdown.borrow() => break Ended::Released,
        }
    };
    if !matches!(ended, Ended::Done(_)) {
        // The blocking part of the work stops at its next check; its async part is aborted on drop.
        progress.stop();
    }
    let label = match ended {
        Ended::Released => {
            tracing::warn!("shutting down: job handed back to the queue");
            let _ = queue::requeue(&ctx.pool, id, token, Duration::ZERO, None, true).await;
            "released"
        }
        Ended::Lost => {
            tracing::warn!("lease lost: work stopped (another worker owns the job)");
            "lost"
        }
        Ended::Done(_) if lost.is_lost() => {
            tracing::warn!("lease lost: result discarded (another worker owns the job)");
            "lost"
        }
        Ended::PastDeadline(d) => {
            let reason = format!(
                "the job ran longer than its deadline of {} s (SPE_JOB_DEADLINE_SECS) and was stopped",
                d.as_secs()
            );
            tracing::warn!("{reason}");
            record_failure(ctx, config, id, token, &reason).await
        }
        Ended::Done(Ok(output)) => record(ctx, config, id, token, Ok(&output), &lost).await,
        Ended::Done(Err(e)) if e.transient() => {
            retry_later(ctx, config, id, token, &e, &lost).await
        }
        Ended::Done(Err(e)) => {
            // A pipeline message can name an input file: the reason goes to the job's record only.
            tracing::warn!(
                kind = e.kind(),
                "job failed (its reason is in the job's record)"
            );
            record_failure(ctx, config, id, token, &e.public_message()).await
        }
    };
    metrics::histogram!("spe_job_duration_seconds", "kind" => job.kind.as_str(), "outcome" => label)
        .record(started.elapsed().as_secs_f64());
    label
}

fn crashed(e: tokio::task::JoinError) -> JobError {
    let what = match e.try_into_panic() {
        Ok(panic) => panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into()),
        Err(e) => e.to_string(),
    };
    tracing::error!(panic = %what, "the job crashed");
    JobError::Crashed(what)
}

/// Schedules the retry of a transient failure. The failure is often the database itself, so scheduling
/// is retried through the outage while the heartbeat keeps the lease: an expired lease would count the
/// next run as another attempt.
async fn retry_later(
    ctx: &Ctx,
    config: &WorkerConfig,
    id: Uuid,
    token: Uuid,
    e: &JobError,
    lost: &LeaseLost,
) -> &'static str {
    let message = e.public_message();
    let scheduled = through_outage(
        config,
        lost,
        "job failed; cannot schedule its retry yet",
        || queue::retry_later(&ctx.pool, id, token, config.retry_window, &message),
    )
    .await;
    let scheduled = match scheduled {
        Ok(scheduled) => scheduled,
        Err(store) => {
            // The lease expires and the job is claimed again once the database answers.
            tracing::warn!(error = %e, store_error = %store, "job failed; cannot schedule its retry");
            return "retry";
        }
    };
    match scheduled {
        queue::Retry::Scheduled(delay) => {
            tracing::warn!(error = %e, delay_s = delay, "job failed; will retry");
            "retry"
        }
        queue::Retry::WindowSpent => {
            tracing::warn!(error = %e, "job failed; its retry window is spent");
            let reason = format!(
                "gave up after retrying for {} s (SPE_JOB_RETRY_WINDOW_SECS): {}",
                config.retry_window.as_secs(),
                e.public_message()
            );
            record_failure(ctx, config, id, token, &reason).await
        }
        queue::Retry::LeaseLost => "lost",
    }
}

async fn record_failure(
    ctx: &Ctx,
    config: &WorkerConfig,
    id: Uuid,
    token: Uuid,
    reason: &str,
) -> &'static str {
    record(ctx, config, id, token, Err(reason), &LeaseLost::default()).await
}

/// Writes the outcome under the lease, retrying through a store outage for the retry window while the
/// heartbeat keeps the lease.
async fn record(
    ctx: &Ctx,
    config: &WorkerConfig,
    id: Uuid,
    token: Uuid,
    outcome: Result<&Output, &str>,
    lost: &LeaseLost,
) -> &'static str {
    let finished = through_outage(
        config,
        lost,
        "cannot store the job's outcome yet; retrying",
        || run::finish(ctx, id, token, outcome),
    )
    .await;
    match finished {
        Ok(true) if outcome.is_ok() => {
            tracing::info!("job succeeded");
            "succeeded"
        }
        Ok(true) => "failed",
        Ok(false) => {
            tracing::warn!("lease lost before commit: result discarded");
            "lost"
        }
        Err(e) => {
            // Nothing was committed; the lease expires and the job runs again.
            tracing::error!(error = %e, "cannot store the job's outcome");
            "error"
        }
    }
}

/// Repeats a database call through an outage, with backoff, while the retry window lasts and the
/// heartbeat holds the lease (`waiting` is logged at each failed try); the last error once it gives up.
async fn through_outage<T, E, F>(
    config: &WorkerConfig,
    lost: &LeaseLost,
    waiting: &str,
    mut call: impl FnMut() -> F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let mut delay = Duration::from_millis(500);
    loop {
        match call().await {
            Err(e) if started.elapsed() < config.retry_window && !lost.is_lost() => {
                tracing::warn!(error = %e, "{waiting}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            done => return done,
        }
    }
}
