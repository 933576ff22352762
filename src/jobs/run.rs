//! Executing one claimed job: load its inputs from Postgres and the blob store, run the pipeline off the
//! async runtime, and return the result to be written (by the caller, under the lease).

use super::{JobError, Progress};
use crate::engine::fit::Calibration;
use crate::engine::image_io::{self, LabelledSet};
use crate::engine::metrics::Metric;
use crate::engine::spe::{self, ReferenceSet, SpeParams};
use crate::engine::{EngineError, ReverseSegmenter};
use crate::engine::{Gray, Mask};
use crate::inference::{ModelSpec, Reverse, Runtime, SegModel};
use crate::monitor;
use crate::pipeline::{self, CheckpointMasks};
use crate::store::results::{EstimateResult, StoredCalibration, Timings, V1};
use crate::store::{self, calibrations, estimates, image_sets, models, BlobStore};
use futures::{StreamExt, TryStreamExt};
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

/// What a worker needs to execute jobs.
pub struct Ctx {
    pub pool: PgPool,
    pub blobs: BlobStore,
    pub runtime: Runtime,
    pub max_pixels: u64,
    /// Keep a batch's pixels after its estimate is finished (by default only their digests stay).
    pub retain_batch_pixels: bool,
}

/// A finished job's result, written in the transaction that marks the job succeeded.
pub enum Output {
    // Boxed: both documents are large beside the rest of what a job's end carries.
    Estimate {
        result: Box<EstimateResult>,
        timings: Timings,
    },
    Calibration {
        result: Box<Calibration>,
    },
}

const FETCH_CONCURRENCY: usize = 16;

async fn fetch_all(blobs: &BlobStore, shas: Vec<String>) -> Result<Vec<bytes::Bytes>, JobError> {
    Ok(futures::stream::iter(shas)
        .map(|sha| async move { blobs.get(&sha).await })
        .buffered(FETCH_CONCURRENCY)
        .try_collect()
        .await?)
}

/// A set's images (and labels, when `labelled`) fetched from the blob store, not yet decoded.
struct RawSet {
    names: Vec<String>,
    images: Vec<bytes::Bytes>,
    labels: Vec<bytes::Bytes>,
    /// Working-grid pixel size per image, when its source said.
    pixel_mm: Vec<Option<[f64; 2]>>,
}

async fn fetch_set(ctx: &Ctx, set: Uuid, labelled: bool) -> Result<RawSet, JobError> {
    let items = image_sets::items(&ctx.pool, set).await?;
    let names = items.iter().map(|i| i.name.clone()).collect();
    let pixel_mm = items
        .iter()
        .map(|i| Some([i.pixel_row_mm?, i.pixel_col_mm?]))
        .collect();
    let images = fetch_all(
        &ctx.blobs,
        items.iter().map(|i| i.image_sha256.clone()).collect(),
    )
    .await?;
    let labels = if labelled {
        let shas = items
            .iter()
            .map(|i| {
                i.label_sha256.clone().ok_or_else(|| {
                    JobError::Corrupt(format!("image set {set} has an image without a label"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        fetch_all(&ctx.blobs, shas).await?
    } else {
        Vec::new()
    };
    Ok(RawSet {
        names,
        images,
        labels,
        pixel_mm,
    })
}

/// How a job error names the i-th stored image of a set: by position, never by its file name (which
/// can carry patient data, and job errors are stored and served).
fn nth(what: &str, i: usize) -> String {
    format!("{what} #{} of the set (in file name order)", i + 1)
}

fn decode_images(set: &RawSet, max_pixels: u64) -> Result<Vec<Gray>, JobError> {
    use rayon::prelude::*;
    Ok(set
        .images
        .par_iter()
        .enumerate()
        .map(|(i, b)| image_io::decode_gray(b, &nth("image", i), max_pixels))
        .collect::<Result<Vec<_>, _>>()?)
}

fn decode_masks(
    bytes: &[bytes::Bytes],
    what: &str,
    max_pixels: u64,
) -> Result<Vec<Mask>, EngineError> {
    use rayon::prelude::*;
    bytes
        .par_iter()
        .enumerate()
        .map(|(i, b)| image_io::decode_label(b, &nth(what, i), max_pixels))
        .collect()
}

fn decode_labelled(set: &RawSet, max_pixels: u64) -> Result<LabelledSet, JobError> {
    Ok(LabelledSet {
        names: set.names.clone(),
        images: decode_images(set, max_pixels)?,
        labels: decode_masks(&set.labels, "label", max_pixels)?,
    })
}

struct ModelInputs {
    spec: ModelSpec,
    onnx: bytes::Bytes,
    reverse: Reverse,
    /// The ONNX reverse segmenter's model file, when it is one.
    reverse_onnx: Option<bytes::Bytes>,
}

impl ModelInputs {
    fn build_reverse(&self, runtime: &Runtime) -> Result<Arc<dyn ReverseSegmenter>, JobError> {
        Ok(self.reverse.build(runtime, self.reverse_onnx.as_deref())?)
    }
}

async fn model_inputs(
    ctx: &Ctx,
    model_id: Uuid,
) -> Result<(models::ModelRow, ModelInputs), JobError> {
    let model = models::get(&ctx.pool, model_id)
        .await?
        .ok_or_else(|| JobError::Gone(format!("model {model_id} was deleted")))?;
    let spec: ModelSpec = serde_json::from_value(model.spec.clone())
        .map_err(|e| JobError::Corrupt(format!("model spec: {e}")))?;
    let onnx = ctx.blobs.get(&model.onnx_sha256).await?;
    let reverse = Reverse::from_stored(model.reverse_sha256.as_deref(), model.onnx_threshold)
        .map_err(|e| JobError::Corrupt(format!("model {model_id}: {e}")))?;
    let reverse_onnx = match reverse.onnx_sha256() {
        Some(sha) => Some(ctx.blobs.get(sha).await?),
        None => None,
    };
    Ok((
        model,
        ModelInputs {
            spec,
            onnx,
            reverse,
            reverse_onnx,
        },
    ))
}

/// A stored document that does not decode will not decode on a retry either: the job fails at once.
fn final_if_corrupt(e: store::StoreError) -> JobError {
    match e {
        store::StoreError::Corrupt(m) => JobError::Corrupt(m),
        other => other.into(),
    }
}

pub async fn estimate_job(ctx: &Ctx, id: Uuid, progress: &Progress) -> Result<Output, JobError> {
    let started = Instant::now();
    progress.set(0.05, "loading");
    let row = estimates::get(&ctx.pool, id)
        .await?
        .ok_or_else(|| JobError::Gone(format!("estimate {id} was deleted")))?;
    let cal_row = calibrations::get(&ctx.pool, row.calibration_id)
        .await
        .map_err(final_if_corrupt)?
        .ok_or_else(|| JobError::Gone(format!("calibration {} was deleted", row.calibration_id)))?;
    let calibration: Calibration = match cal_row.result {
        Some(StoredCalibration::Current(c)) => *c,
        Some(StoredCalibration::Older { format }) => {
            return Err(JobError::Corrupt(format!(
                "the estimate's calibration has format {format:?}, which this spe does not read"
            )))
        }
        None => {
            return Err(JobError::Corrupt(
                "the estimate's calibration has no result".into(),
            ))
        }
    };
    let reference_id = cal_row
        .reference_set_id
        .ok_or_else(|| JobError::Corrupt("the calibration has no reference set".into()))?;
    let (model, inputs) = model_inputs(ctx, row.model_id).await?;
    // Thresholds as they stand when the estimate is computed; changing them later leaves its alerts be.
    let thresholds = models::thresholds(&ctx.pool, row.model_id)
        .await
        .map_err(final_if_corrupt)?
        .unwrap_or_default();
    let baseline = monitor::Baseline {
        calibration: &calibration,
        onnx_sha256: &model.onnx_sha256,
    };
    let calibration_values: BTreeMap<Metric, f64> = Metric::ALL
        .into_iter()
        .filter_map(|m| baseline.value(m).ok().map(|v| (m, v)))
        .collect();
    let finds_something = baseline.finds_something();
    let reference = fetch_set(ctx, reference_id, true).await?;
    let batch = fetch_set(ctx, row.batch_set_id, false).await?;
    let load_s = started.elapsed().as_secs_f64();
    if progress.stopped() {
        return Err(crate::pipeline::PipelineError::Stopped.into());
    }
    progress.set(0.2, "estimating");
    let runtime = ctx.runtime.clone();
    let max_pixels = ctx.max_pixels;
    let (result, compute_s, sessions_s) =
        crate::background::spawn_blocking(move || -> Result<_, JobError> {
            let t = Instant::now();
            let reference = decode_labelled(&reference, max_pixels)?;
            let reference = ReferenceSet::new(&reference.images, reference.labels)?;
            let images = decode_images(&batch, max_pixels)?;
            let sessions = Instant::now();
            let model = SegModel::load(&runtime, &inputs.onnx, "model", &inputs.spec)?;
            let reverse = inputs.build_reverse(&runtime)?;
            let sessions_s = sessions.elapsed().as_secs_f64();
            let params: SpeParams = calibration.params;
            let (estimate, pseudo) = pipeline::estimate_batch(
                &model,
                &calibration,
                &reference,
                &images,
                reverse.as_ref(),
                &params,
            )?;
            let hd95_mm =
                spe::mean_pixel_mm(&batch.pixel_mm).and_then(|mm| spe::hd95_mm(&estimate, mm));
            let alerts = monitor::evaluate(
                &estimate,
                &thresholds,
                |m| calibration_values.get(&m).copied(),
                finds_something,
            );
            let result = EstimateResult {
                version: V1,
                estimate,
                pseudo,
                hd95_mm,
                alerts,
            };
            Ok((result, t.elapsed().as_secs_f64(), sessions_s))
        })
        .await??;
    let timings = Timings {
        version: V1,
        queued_s: row
            .started_at
            .map(|s| (s - row.created_at).num_milliseconds() as f64 / 1000.0),
        load_s,
        compute_s,
        sessions_s: Some(sessions_s),
        total_s: started.elapsed().as_secs_f64(),
    };
    Ok(Output::Estimate {
        result: Box::new(result),
        timings,
    })
}

pub async fn calibration_job(ctx: &Ctx, id: Uuid, progress: &Progress) -> Result<Output, JobError> {
    progress.set(0.02, "loading");
    let row = calibrations::get(&ctx.pool, id)
        .await
        .map_err(final_if_corrupt)?
        .ok_or_else(|| JobError::Gone(format!("calibration {id} was deleted")))?;
    let params: SpeParams = row.params;
    let (_, inputs) = model_inputs(ctx, row.model_id).await?;
    let missing = |what: &str| JobError::Corrupt(format!("calibration {id} has no {what}"));
    let reference = fetch_set(
        ctx,
        row.reference_set_id
            .ok_or_else(|| missing("reference set"))?,
        true,
    )
    .await?;
    let cal_set = fetch_set(
        ctx,
        row.calibration_set_id
            .ok_or_else(|| missing("calibration set"))?,
        true,
    )
    .await?;
    let checkpoints = calibrations::checkpoints(&ctx.pool, id).await?;
    // Checkpoint models or predicted masks, fetched now so the blocking part does no I/O.
    let mut sources = Vec::with_capacity(checkpoints.len());
    for cp in &checkpoints {
        sources.push(match (&cp.onnx_sha256, cp.masks_set_id) {
            (Some(sha), _) => (
                cp.name.clone(),
                Some(sha.clone()),
                ctx.blobs.get(sha).await?,
                None,
            ),
            (None, Some(set)) => (
                cp.name.clone(),
                None,
                bytes::Bytes::new(),
                Some(fetch_set(ctx, set, false).await?),
            ),
            (None, None) => return Err(missing("model or masks for a checkpoint")),
        });
    }
    progress.set(0.05, "calibrating");
    let runtime = ctx.runtime.clone();
    let max_pixels = ctx.max_pixels;
    let progress = progress.clone();
    let result = crate::background::spawn_blocking(move || -> Result<Calibration, JobError> {
        let reference = decode_labelled(&reference, max_pixels)?;
        let reference = ReferenceSet::new(&reference.images, reference.labels)?;
        let cal_set = decode_labelled(&cal_set, max_pixels)?;
        let reverse = inputs.build_reverse(&runtime)?;
        let shifted = pipeline::shifted_sets(&cal_set);
        let masks = sources
            .into_iter()
            .map(|(name, sha256, onnx, masks)| match masks {
                Some(set) => Ok(CheckpointMasks {
                    masks: decode_masks(&set.images, "predicted mask", max_pixels)?,
                    shifted: Vec::new(),
                    sha256,
                    name,
                }),
                None => {
                    let model = SegModel::load(&runtime, &onnx, &name, &inputs.spec)?;
                    Ok(CheckpointMasks {
                        masks: model.predict(&cal_set.images)?,
                        shifted: shifted
                            .iter()
                            .map(|s| model.predict(&s.set.images))
                            .collect::<Result<_, _>>()?,
                        sha256,
                        name,
                    })
                }
            });
        // Between checkpoints: report, and stop if the supervisor asks (lease lost, deadline passed).
        let mut report = |i: usize, n: usize, _: &crate::engine::fit::CheckpointPoint| {
            progress.set(0.05 + 0.95 * (i + 1) as f32 / n as f32, "calibrating");
            if progress.stopped() {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        };
        let fitted = pipeline::calibrate_from_masks(
            masks,
            &reference,
            &cal_set,
            &shifted,
            reverse.as_ref(),
            &params,
            &mut report,
        )?;
        Ok(fitted)
    })
    .await??;
    Ok(Output::Calibration {
        result: Box::new(result),
    })
}

/// Writes the result (or the failure) under the lease; false when the lease was lost (another worker owns
/// the job now). A finished estimate's batch pixels are dropped in the same transaction unless retained.
pub async fn finish(
    ctx: &Ctx,
    id: Uuid,
    token: Uuid,
    outcome: Result<&Output, &str>,
) -> Result<bool, store::StoreError> {
    let mut tx = ctx.pool.begin().await?;
    if !super::queue::finish(&mut tx, id, token, outcome.is_ok(), outcome.err()).await? {
        tx.rollback().await?;
        return Ok(false);
    }
    match outcome {
        Ok(Output::Estimate { result, timings }) => {
            estimates::set_result(&mut tx, id, result, timings).await?;
            super::deliver::notify(&mut tx, id, Ok(result)).await?;
        }
        Ok(Output::Calibration { result }) => calibrations::set_result(&mut tx, id, result).await?,
        // A no-op for calibrations.
        Err(error) => super::deliver::notify(&mut tx, id, Err(error)).await?,
    }
    let garbage = match estimates::batch_set(&mut tx, id).await? {
        Some(set) if !ctx.retain_batch_pixels => image_sets::purge_pixels(&mut tx, set).await?,
        _ => Vec::new(),
    };
    tx.commit().await?;
    if let Err(e) = store::collect_garbage(&ctx.pool, &ctx.blobs, &garbage).await {
        // The rows no longer reference them; a later cleanup pass can remove what is left.
        tracing::warn!(error = %e, "cannot delete a finished batch's pixels");
    }
    Ok(true)
}
