//! The application layer: the service's use cases (register a model, attach a reference set, calibrate,
//! submit a batch, store DICOM instances), between the HTTP handlers (`api`, which parse requests and map
//! results) and storage (`store`, `jobs::queue`). Functions here take typed inputs and return [`AppError`],
//! whose variants say what went wrong, not which HTTP status it becomes (`api::error` decides that).

pub mod calibrations;
pub mod dashboard;
pub mod estimates;
pub mod models;
pub mod plots;
pub mod studies;
pub mod thresholds;
pub mod webhooks;
pub mod windows;

use crate::engine::EngineError;
use crate::inference::{InferenceError, Runtime};
use crate::ingest::expand::ExpandError;
use crate::ingest::IngestError;
use crate::store::idempotency::{self, Recorded, ScopedKey};
use crate::store::{self, BlobStore, StoreError};
use sqlx::PgPool;
use std::time::Duration;

/// Request limits (all configurable on `spe serve`).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: u64,
    /// Most images in one set or batch.
    pub max_images: usize,
    /// Most pixels (width x height) per image, checked before decoding (decompression-bomb guard).
    pub max_pixels: u64,
    /// Most voxels per NIfTI volume or multi-frame DICOM instance, checked before decoding.
    pub max_volume_voxels: u64,
    /// Most pixels one request may decode in total (every image, frame and slice), counted while decoding.
    pub max_request_pixels: u64,
    /// Most jobs queued or running; beyond it submissions get 429 with Retry-After.
    pub max_queue: i64,
    /// Retry-After seconds sent with 429.
    pub retry_after_s: u64,
    /// Longest time one request may take, body included (408 beyond); header reads have their own 30 s.
    pub request_timeout: Duration,
}

/// What every use case needs: storage, ONNX Runtime and the limits.
#[derive(Clone)]
pub struct Context {
    pub pool: PgPool,
    pub blobs: BlobStore,
    /// ONNX Runtime, or why it could not be loaded (then model registration fails and /readyz says why).
    pub runtime: Result<Runtime, String>,
    pub limits: Limits,
    /// Attempts a job gets before it is failed for good.
    pub max_attempts: i32,
    /// Hosts webhooks may call.
    pub webhook_hosts: crate::webhooks::AllowList,
}

impl Context {
    pub fn runtime(&self) -> Result<&Runtime, AppError> {
        self.runtime.as_ref().map_err(|e| {
            tracing::error!(error = %e, "ONNX Runtime unavailable");
            AppError::RuntimeUnavailable
        })
    }
}

/// `row`, or [`AppError::NotFound`] naming what was looked up (e.g. "model") and its id.
pub fn existing<T>(row: Option<T>, what: &str, id: uuid::Uuid) -> Result<T, AppError> {
    row.ok_or_else(|| AppError::NotFound(format!("{what} {id} does not exist")))
}

/// Why a use case failed, in its own terms.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The named resource does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A resource with that name exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The input breaks a rule (a missing part, a bad name, too few checkpoints, ...).
    #[error("{0}")]
    InvalidInput(String),
    /// The resource is not in a state that allows this yet (no reference set, no active calibration, a
    /// calibration that has not succeeded).
    #[error("{0}")]
    NotReady(String),
    /// None of the DICOM instances sent could be stored (each is named with its reason).
    #[error("{0}")]
    NothingStored(String),
    /// The Idempotency-Key was used before for a different request.
    #[error("this Idempotency-Key was already used for a different request; use a new key for a new request")]
    KeyReused,
    /// A concurrent request with the same Idempotency-Key won the race and then failed.
    #[error("a concurrent request with this Idempotency-Key failed; retry")]
    KeyRaceLost,
    /// More images (or pixels) than the server accepts in one request.
    #[error("{0}")]
    TooLarge(String),
    /// The job queue is full.
    #[error("{detail}")]
    QueueFull { detail: String, retry_after_s: u64 },
    /// ONNX Runtime could not be loaded on this server.
    #[error("ONNX Runtime is not available on this server; ask the operator to check /readyz")]
    RuntimeUnavailable,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Inference(#[from] InferenceError),
    /// A DICOM or NIfTI file that cannot be used; `file` says which (never by a patient attribute).
    #[error("{file}: {source}")]
    Ingest { file: String, source: IngestError },
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ExpandError> for AppError {
    fn from(e: ExpandError) -> Self {
        match e {
            ExpandError::Ingest { file, source } => AppError::Ingest { file, source },
            ExpandError::Image(e) => AppError::Engine(e),
            ExpandError::TooMany(detail) => AppError::TooLarge(detail),
        }
    }
}

impl From<tokio::task::JoinError> for AppError {
    fn from(e: tokio::task::JoinError) -> Self {
        AppError::Internal(e.to_string())
    }
}

impl From<serde_json::Error> for AppError {
    fn from(e: serde_json::Error) -> Self {
        AppError::Internal(format!("cannot serialise a stored value: {e}"))
    }
}

/// Runs CPU-bound work (hashing, unzipping, decoding) on a blocking thread at the background priority,
/// off the async workers that answer every other request.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AppError> {
    Ok(crate::background::spawn_blocking(f).await?)
}

/// Removes blobs a failed request wrote (unless something references them by now).
pub async fn cleanup(ctx: &Context, created: &[String]) {
    if created.is_empty() {
        return;
    }
    if let Err(e) = store::collect_garbage(&ctx.pool, &ctx.blobs, created).await {
        tracing::error!(error = %e, "cannot remove the blobs of a failed request");
    }
}

/// Deletes the blobs of images that left a rolling window, unless something else still references them.
/// A failure only leaves them to the orphan sweep.
pub async fn collect_left(ctx: &Context, left: &[String]) {
    if left.is_empty() {
        return;
    }
    if let Err(e) = store::collect_garbage(&ctx.pool, &ctx.blobs, left).await {
        tracing::warn!(error = %e, "cannot delete images that left a rolling window");
    }
}

/// Runs `f` in one transaction (committed when it succeeds) and, when anything fails, deletes the blobs it
/// staged.
pub async fn staged<T, F>(ctx: &Context, f: F) -> Result<T, AppError>
where
    F: AsyncFnOnce(&mut store::blobs::Staged) -> Result<T, AppError>,
{
    let mut staged = store::blobs::Staged::begin(&ctx.pool).await?;
    let result = f(&mut staged).await;
    let created = staged.created.clone();
    let result = match result {
        Ok(value) => staged
            .commit()
            .await
            .map(|()| value)
            .map_err(AppError::from),
        Err(e) => {
            // Roll back first: the cleanup's exclusive blob locks would wait on this transaction's shared
            // ones. (If the rollback itself fails, the connection is closed, which also releases them.)
            let _ = staged.rollback().await;
            Err(e)
        }
    };
    // The transaction is over on every path here (committed, rolled back, or consumed by a failed commit).
    if result.is_err() {
        cleanup(ctx, &created).await;
    }
    result
}

/// An Idempotency-Key with the digest of the request sent under it.
#[derive(Clone, Copy)]
pub struct Keyed<'a> {
    pub key: &'a ScopedKey,
    pub digest: &'a str,
}

/// What an earlier request with the same scoped key created, if that request was the same; a different
/// request under a used key is refused.
pub async fn replay(ctx: &Context, keyed: Option<Keyed<'_>>) -> Result<Option<Recorded>, AppError> {
    let Some(Keyed { key, digest }) = keyed else {
        return Ok(None);
    };
    match idempotency::find(&ctx.pool, key).await? {
        None => Ok(None),
        Some(found) => same_request(found, digest).map(Some),
    }
}

fn same_request(found: Recorded, digest: &str) -> Result<Recorded, AppError> {
    if found.request_sha256 == digest {
        Ok(found)
    } else {
        Err(AppError::KeyReused)
    }
}

/// Runs a create that records `keyed`; when it loses the race for its key to a concurrent request, that
/// request's result is returned instead, if it was the same request (the digest is checked here too).
async fn first_under_key<T>(
    ctx: &Context,
    keyed: Option<Keyed<'_>>,
    created: Result<T, AppError>,
    winner: impl FnOnce(Recorded) -> T,
) -> Result<T, AppError> {
    match created {
        Err(AppError::Store(e))
            if e.unique_violation().as_deref() == Some(idempotency::CONSTRAINT) =>
        {
            let found = match keyed {
                Some(k) => idempotency::find(&ctx.pool, k.key).await?,
                None => None,
            };
            let found = found.ok_or(AppError::KeyRaceLost)?;
            let digest = keyed.map(|k| k.digest).unwrap_or_default();
            Ok(winner(same_request(found, digest)?))
        }
        other => other,
    }
}

/// Refuses new work when the job queue is full (before the client uploads anything).
pub async fn check_queue(ctx: &Context) -> Result<(), AppError> {
    let depth = crate::jobs::queue::depth(&ctx.pool).await?;
    if depth >= ctx.limits.max_queue {
        return Err(AppError::QueueFull {
            detail: format!(
                "{depth} jobs are queued or running (the limit is {}); retry after the Retry-After delay",
                ctx.limits.max_queue
            ),
            retry_after_s: ctx.limits.retry_after_s,
        });
    }
    Ok(())
}
