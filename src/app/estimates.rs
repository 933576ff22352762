//! Estimates: a validated batch becomes a stored image set and a queued estimate job.

use super::models::{self as app_models, prepare_unlabelled, stage_set};
use super::{check_queue, first_under_key, replay, staged, AppError, Context, Keyed};
use crate::engine::fit::CALIBRATION_FORMAT;
use crate::ingest::expand::{InputFile, NamedImage};
use crate::jobs::queue::{self, JobKind};
use crate::store::blobs::Staged;
use crate::store::calibrations;
use crate::store::estimates::{self, EstimateKind, EstimateRow, ListQuery};
use crate::store::idempotency;
use crate::store::image_sets::{self, SetKind};
use crate::store::models::ModelRow;
use crate::store::{received, windows};
use uuid::Uuid;

/// The estimate, or [`AppError::NotFound`].
pub async fn get(ctx: &Context, id: Uuid) -> Result<EstimateRow, AppError> {
    super::existing(estimates::get(&ctx.pool, id).await?, "estimate", id)
}

/// A model that can take a batch now: it has an active calibration this spe reads, and the queue has room.
pub struct Estimable {
    pub model: ModelRow,
    pub calibration_id: Uuid,
}

/// Checks, before the client uploads anything, that the model can be estimated now.
pub async fn admit(ctx: &Context, model_id: Uuid) -> Result<Estimable, AppError> {
    let model = app_models::get(ctx, model_id).await?;
    let calibration_id = active_calibration(ctx, &model).await?;
    check_queue(ctx).await?;
    Ok(Estimable {
        model,
        calibration_id,
    })
}

/// The calibration a new estimate uses: the model's active one (none, or one an older spe made that this
/// one cannot read, is [`AppError::NotReady`]).
async fn active_calibration(ctx: &Context, model: &ModelRow) -> Result<Uuid, AppError> {
    let id = model.id;
    let calibration_id = model.active_calibration_id.ok_or_else(|| {
        AppError::NotReady(format!(
            "model {id} has no active calibration yet; calibrate it first (POST /v1/models/{id}/calibrations)"
        ))
    })?;
    let format = calibrations::get(&ctx.pool, calibration_id)
        .await?
        .and_then(|row| row.result)
        .map(|r| r.format().to_owned());
    match format {
        Some(f) if f != CALIBRATION_FORMAT => Err(AppError::NotReady(format!(
            "model {id}'s active calibration {calibration_id} has format {f:?}, made by an older spe; this one \
             reads {CALIBRATION_FORMAT:?}: calibrate again (POST \
             /v1/models/{id}/calibrations)"
        ))),
        _ => Ok(calibration_id),
    }
}

/// Decodes an uploaded batch and queues its estimate; a replayed Idempotency-Key returns the first one.
pub async fn submit(
    ctx: &Context,
    target: &Estimable,
    keyed: Option<Keyed<'_>>,
    files: Vec<InputFile>,
    axis: Option<usize>,
) -> Result<Uuid, AppError> {
    if let Some(first) = replay(ctx, keyed).await? {
        return Ok(first.resource_id);
    }
    let set = prepare_unlabelled(ctx, files, axis, "the batch").await?;
    let batch = NewBatch {
        target,
        set: &set,
        dicom_instances: &[],
    };
    Ok(create(ctx, keyed, batch, |_| None).await?.0)
}

/// A validated batch for a model's active calibration, with the SOP Instance UIDs of the DICOM instances
/// it came from when they were sent through STOW-RS.
pub struct NewBatch<'a> {
    pub target: &'a Estimable,
    pub set: &'a [NamedImage],
    pub dicom_instances: &'a [String],
}

/// Stores a validated batch and queues its estimate, in one transaction, with the Idempotency-Key and
/// the answer `response` builds for replays, if any, and the SOP Instance UIDs of DICOM instances sent
/// through STOW-RS (so that a resent instance is recognised). A concurrent request with the same key that
/// committed first wins: its estimate and answer are returned (when it was the same request). When the
/// model keeps a rolling window, the batch's images join it in the same transaction, and a window that
/// this batch completes is queued as its own estimate (kind `window`).
pub async fn create(
    ctx: &Context,
    keyed: Option<Keyed<'_>>,
    batch: NewBatch<'_>,
    response: impl Fn(Uuid) -> Option<serde_json::Value>,
) -> Result<(Uuid, Option<serde_json::Value>), AppError> {
    let NewBatch {
        target,
        set,
        dicom_instances,
    } = batch;
    let model_id = target.model.id;
    let estimate_id = Uuid::new_v4();
    let answer = response(estimate_id);
    let created = staged(ctx, async |staged: &mut Staged| {
        let items = stage_set(ctx, staged, set).await?;
        let tx = staged.tx();
        let set_id = image_sets::insert(tx, SetKind::Batch, &items).await?;
        let calibration = target.calibration_id;
        estimates::insert(
            tx,
            estimate_id,
            model_id,
            calibration,
            set_id,
            EstimateKind::Batch,
        )
        .await?;
        queue::enqueue(tx, estimate_id, JobKind::Estimate, ctx.max_attempts).await?;
        let window = windows::add(tx, model_id, &items).await?;
        if let Some(due) = window.due {
            let window_set = image_sets::insert(tx, SetKind::Batch, &due).await?;
            let id = Uuid::new_v4();
            estimates::insert(
                tx,
                id,
                model_id,
                calibration,
                window_set,
                EstimateKind::Window,
            )
            .await?;
            queue::enqueue(tx, id, JobKind::Estimate, ctx.max_attempts).await?;
            metrics::counter!("spe_window_estimates_total").increment(1);
        }
        if !dicom_instances.is_empty() {
            received::record(tx, model_id, estimate_id, dicom_instances).await?;
        }
        if let Some(k) = keyed {
            idempotency::record(tx, k.key, k.digest, estimate_id, answer.as_ref()).await?;
        }
        Ok((estimate_id, answer.clone(), window.left))
    })
    .await;
    let created = match created {
        Ok((id, answer, left)) => {
            metrics::counter!("spe_estimates_submitted_total").increment(1);
            super::collect_left(ctx, &left).await;
            Ok((id, answer))
        }
        Err(e) => Err(e),
    };
    first_under_key(ctx, keyed, created, |winner| {
        (winner.resource_id, winner.response)
    })
    .await
}

/// One page of a model's estimates, newest first, and whether more follow.
pub async fn list(ctx: &Context, query: ListQuery) -> Result<(Vec<EstimateRow>, bool), AppError> {
    app_models::get(ctx, query.model).await?;
    let limit = query.limit;
    let mut rows = estimates::list(
        &ctx.pool,
        &ListQuery {
            limit: limit + 1,
            ..query
        },
    )
    .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    Ok((rows, more))
}
