//! Workers: claim jobs from the Postgres queue, keep the lease alive while the pipeline runs, write the
//! result under the lease. A worker killed mid-job simply stops heartbeating; its lease expires and
//! another worker (or the restarted one) runs the job again from its stored inputs.

pub mod deliver;
pub mod queue;
pub mod run;
pub mod supervise;
pub mod sweep;

use crate::engine::EngineError;
use crate::inference::InferenceError;
use crate::pipeline::PipelineError;
use crate::store::StoreError;
use run::Ctx;
use sqlx::postgres::PgListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("the job's inputs are inconsistent: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Gone(String),
    #[error("the job crashed: {0}")]
    Crashed(String),
}

impl From<EngineError> for JobError {
    fn from(e: EngineError) -> Self {
        JobError::Pipeline(e.into())
    }
}

impl From<InferenceError> for JobError {
    fn from(e: InferenceError) -> Self {
        JobError::Pipeline(e.into())
    }
}

impl From<tokio::task::JoinError> for JobError {
    fn from(e: tokio::task::JoinError) -> Self {
        JobError::Crashed(e.to_string())
    }
}

impl JobError {
    /// Worth another attempt: the same inputs may well succeed later (database, store, runtime hiccups).
    fn transient(&self) -> bool {
        match self {
            JobError::Store(_) => true,
            JobError::Pipeline(PipelineError::Inference(e)) => {
                matches!(
                    e,
                    InferenceError::RuntimeMissing(_)
                        | InferenceError::Provider { .. }
                        | InferenceError::Io { .. }
                )
            }
            JobError::Pipeline(PipelineError::Engine(e)) => matches!(e, EngineError::Io { .. }),
            JobError::Pipeline(PipelineError::Stopped) => false,
            // A panic is a bug: running it again would panic again.
            JobError::Corrupt(_) | JobError::Gone(_) | JobError::Crashed(_) => false,
        }
    }

    /// The kind of failure, for logs (never a message that could name an input).
    pub fn kind(&self) -> &'static str {
        match self {
            JobError::Store(_) => "store",
            JobError::Pipeline(PipelineError::Engine(_)) => "engine",
            JobError::Pipeline(PipelineError::Inference(_)) => "inference",
            JobError::Pipeline(PipelineError::Stopped) => "stopped",
            JobError::Corrupt(_) => "corrupt",
            JobError::Gone(_) => "gone",
            JobError::Crashed(_) => "crashed",
        }
    }

    /// What the job's owner is told: pipeline messages are written for people; internals are not exposed.
    fn public_message(&self) -> String {
        match self {
            JobError::Pipeline(e) => e.to_string(),
            JobError::Gone(m) => m.clone(),
            JobError::Store(_) | JobError::Corrupt(_) | JobError::Crashed(_) => {
                "internal error while running the job (see the service logs)".into()
            }
        }
    }
}

/// Latest progress of the running job, written to the database with each heartbeat, and the supervisor's
/// request to stop (lease lost, deadline passed), checked by the work between its stages.
#[derive(Clone, Default)]
pub struct Progress(
    Arc<Mutex<(f32, String)>>,
    Arc<std::sync::atomic::AtomicBool>,
);

impl Progress {
    pub fn stop(&self) {
        self.1.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    pub fn stopped(&self) -> bool {
        self.1.load(std::sync::atomic::Ordering::SeqCst)
    }
    pub fn set(&self, fraction: f32, stage: &str) {
        if let Ok(mut p) = self.0.lock() {
            *p = (fraction, stage.to_string());
        }
    }
    fn get(&self) -> (f32, String) {
        self.0.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Jobs run concurrently by this process (each uses all cores through rayon).
    pub count: usize,
    pub lease: Duration,
    pub poll: Duration,
    /// Attempts a job gets, counting runs that were lost to a crash.
    pub max_attempts: i32,
    /// At shutdown, how long a running job may take to finish before it is handed back to the queue.
    pub shutdown_grace: Duration,
    /// How long transient failures (database, blob store, runtime) are retried, counted from the first.
    pub retry_window: Duration,
    /// A job still running after this long fails; None = no limit.
    pub deadline: Option<Duration>,
}

/// Runs `config.count` workers until `shutdown` turns true; returns when they have all stopped.
pub async fn run_workers(ctx: Arc<Ctx>, config: WorkerConfig, shutdown: watch::Receiver<bool>) {
    let wake = Arc::new(Notify::new());
    let listener = tokio::spawn(listen(ctx.pool.clone(), wake.clone(), shutdown.clone()));
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    let mut handles = Vec::new();
    for i in 0..config.count {
        let name = format!("{host}:{}:{i}", std::process::id());
        handles.push(tokio::spawn(worker(
            ctx.clone(),
            config.clone(),
            name,
            wake.clone(),
            shutdown.clone(),
        )));
    }
    for h in handles {
        let _ = h.await;
    }
    listener.abort();
}

/// Turns queue notifications into wake-ups; polling covers lost connections and expired leases.
async fn listen(pool: sqlx::PgPool, wake: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot LISTEN for jobs; relying on polling");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(queue::CHANNEL).await {
            tracing::warn!(error = %e, "cannot LISTEN for jobs; relying on polling");
            tokio::time::sleep(Duration::from_secs(5)).await;
            continue;
        }
        loop {
            tokio::select! {
                n = listener.recv() => match n {
                    Ok(_) => wake.notify_waiters(),
                    Err(_) => break,
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}

async fn worker(
    ctx: Arc<Ctx>,
    config: WorkerConfig,
    name: String,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    tracing::info!(worker = %name, "worker started");
    while !*shutdown.borrow() {
        match queue::claim(&ctx.pool, &name, config.lease).await {
            Ok(Some(job)) => {
                let span = tracing::info_span!("job", id = %job.id, kind = job.kind.as_str(), attempt = job.attempts);
                let work = {
                    let (ctx, kind, id) = (ctx.clone(), job.kind, job.id);
                    move |progress: Progress| async move {
                        match kind {
                            queue::JobKind::Estimate => {
                                run::estimate_job(&ctx, id, &progress).await
                            }
                            queue::JobKind::Calibration => {
                                run::calibration_job(&ctx, id, &progress).await
                            }
                        }
                    }
                };
                let _ = tracing::Instrument::instrument(
                    supervise::supervise(&ctx, &config, job, shutdown.clone(), work),
                    span,
                )
                .await;
            }
            Ok(None) => {
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(config.poll) => {}
                    _ = shutdown.changed() => {}
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot claim a job");
                tokio::time::sleep(config.poll.max(Duration::from_secs(1))).await;
            }
        }
    }
    tracing::info!(worker = %name, "worker stopped");
}

async fn heartbeat(
    pool: sqlx::PgPool,
    id: Uuid,
    token: Uuid,
    lease: Duration,
    progress: Progress,
    lost: Arc<supervise::LeaseLost>,
) {
    let every = (lease / 3).max(Duration::from_millis(200));
    loop {
        tokio::time::sleep(every).await;
        let (fraction, stage) = progress.get();
        match queue::heartbeat(&pool, id, token, lease, fraction, &stage).await {
            Ok(true) => {}
            Ok(false) => {
                lost.signal();
                return;
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}
