//! Calibrations: a job from checkpoints or predicted masks, or a fit of (pseudo, real) pairs computed
//! elsewhere; activation.

use super::models::{self as app_models, prepare_labelled, stage_set, validate_name};
use super::{blocking, check_queue, first_under_key, replay, staged, AppError, Context, Keyed};
use crate::engine::fit::{Calibration, CheckpointPoint, MIN_POINTS};
use crate::engine::image_io;
use crate::engine::spe::SpeParams;
use crate::inference::{ModelSpec, Reverse, SegModel};
use crate::ingest::expand::InputPair;
use crate::jobs::queue::{self, JobKind};
use crate::store::blobs::Staged;
use crate::store::calibrations::{self, CalibrationRow, CheckpointRow, NewCalibration};
use crate::store::idempotency;
use crate::store::image_sets::{self, Item, SetKind};
use crate::store::models::ModelRow;
use crate::store::StoreError;
use bytes::Bytes;
use std::collections::BTreeMap;
use uuid::Uuid;

/// The calibration, or [`AppError::NotFound`].
pub async fn get(ctx: &Context, id: Uuid) -> Result<CalibrationRow, AppError> {
    super::existing(calibrations::get(&ctx.pool, id).await?, "calibration", id)
}

/// A model ready to be calibrated: it exists and has a reference set.
pub struct Calibratable {
    pub model: ModelRow,
    pub reference_set_id: Uuid,
}

/// Checks, before the client uploads anything, that the model can be calibrated now; `queued` also checks
/// that the job queue has room.
pub async fn admit(ctx: &Context, model_id: Uuid, queued: bool) -> Result<Calibratable, AppError> {
    let model = app_models::get(ctx, model_id).await?;
    let reference_set_id = model.reference_set_id.ok_or_else(|| {
        AppError::NotReady(format!(
            "model {model_id} has no reference set yet; PUT /v1/models/{model_id}/reference-set first"
        ))
    })?;
    if queued {
        check_queue(ctx).await?;
    }
    Ok(Calibratable {
        model,
        reference_set_id,
    })
}

/// A checkpoint's ONNX file as uploaded; `name` is its file name without extension.
pub struct UploadedCheckpoint {
    pub name: String,
    pub onnx: Bytes,
}

/// Predicted masks per checkpoint folder: mask file stem -> (mask, position in the zip).
pub type MaskFolders = BTreeMap<String, BTreeMap<String, (Bytes, usize)>>;

/// A calibration job's inputs, parsed from the request.
pub struct CalibrationUpload {
    pub params: SpeParams,
    pub activate: bool,
    pub checkpoints: Vec<UploadedCheckpoint>,
    pub masks: Option<MaskFolders>,
    /// The labelled calibration split.
    pub pairs: Vec<InputPair>,
    pub axis: Option<usize>,
}

/// What one checkpoint contributes: its ONNX file or its predicted masks (in calibration-set order).
enum Source {
    Model(String, Bytes),
    Masks(String, Vec<(String, Bytes)>),
}

/// Stores the calibration split and the checkpoints (or masks) and queues the calibration job; a replayed
/// Idempotency-Key returns the first job.
pub async fn from_upload(
    ctx: &Context,
    target: &Calibratable,
    keyed: Option<Keyed<'_>>,
    upload: CalibrationUpload,
) -> Result<Uuid, AppError> {
    if let Some(first) = replay(ctx, keyed).await? {
        return Ok(first.resource_id);
    }
    let CalibrationUpload {
        params,
        activate,
        checkpoints,
        masks,
        pairs,
        axis,
    } = upload;
    let set = prepare_labelled(ctx, pairs, axis, params.min_area, "the calibration set").await?;
    let names: Vec<String> = set.iter().map(|i| i.name.clone()).collect();
    let sources = match (checkpoints.is_empty(), masks) {
        (false, None) => {
            let sources = checkpoint_sources(checkpoints)?;
            validate_checkpoints(ctx, &target.model, &sources).await?;
            sources
        }
        (true, Some(folders)) => {
            let sources = blocking(move || masks_in_set_order(folders, &names)).await??;
            validate_masks(ctx, &sources).await?;
            sources
        }
        (false, Some(_)) => {
            return Err(AppError::InvalidInput(
                "send either checkpoint files or a masks zip, not both".into(),
            ))
        }
        (true, None) => {
            return Err(AppError::InvalidInput(
                "send checkpoint files (part \"checkpoint\") or predicted masks (part \"masks\", a zip)".into(),
            ))
        }
    };
    if sources.len() < MIN_POINTS {
        return Err(AppError::InvalidInput(format!(
            "{} checkpoints were sent; fitting and validating the mapping needs at least {MIN_POINTS}",
            sources.len()
        )));
    }
    let new = NewCalibration {
        id: Uuid::new_v4(),
        model_id: target.model.id,
        source: match sources.first() {
            Some(Source::Masks(..)) => "masks",
            _ => "checkpoints",
        },
        params,
        reference_set_id: Some(target.reference_set_id),
        calibration_set_id: None,
        activate,
        result: None,
    };
    let created = staged(ctx, async |staged: &mut Staged| {
        let items = stage_set(ctx, staged, &set).await?;
        let rows = stage_sources(ctx, staged, &sources).await?;
        let tx = staged.tx();
        let new = NewCalibration {
            calibration_set_id: Some(image_sets::insert(tx, SetKind::Calibration, &items).await?),
            ..new
        };
        calibrations::insert(tx, &new).await?;
        for (position, (mut row, masks)) in rows.into_iter().enumerate() {
            if let Some(masks) = masks {
                row.masks_set_id = Some(image_sets::insert(tx, SetKind::Masks, &masks).await?);
            }
            calibrations::insert_checkpoint(tx, new.id, position as i32, &row).await?;
        }
        queue::enqueue(tx, new.id, JobKind::Calibration, ctx.max_attempts).await?;
        if let Some(k) = keyed {
            idempotency::record(tx, k.key, k.digest, new.id, None).await?;
        }
        Ok(new.id)
    })
    .await;
    first_under_key(ctx, keyed, created, |winner| winner.resource_id).await
}

/// Checkpoint names are unique and valid; an invalid one is not echoed (it may be anything, a patient's
/// name included).
fn checkpoint_sources(checkpoints: Vec<UploadedCheckpoint>) -> Result<Vec<Source>, AppError> {
    let mut seen = std::collections::BTreeSet::new();
    let mut sources = Vec::with_capacity(checkpoints.len());
    for (i, part) in checkpoints.into_iter().enumerate() {
        validate_name(&part.name).map_err(|_| {
            AppError::InvalidInput(format!(
                "checkpoint part #{}: its file name (without extension) is not a valid checkpoint \
                 name: use 1-100 letters, digits, '.', '_' or '-'",
                i + 1
            ))
        })?;
        if !seen.insert(part.name.clone()) {
            return Err(AppError::InvalidInput(format!(
                "two checkpoints are named {:?}",
                part.name
            )));
        }
        sources.push(Source::Model(part.name, part.onnx));
    }
    Ok(sources)
}

/// Writes each checkpoint's ONNX file or masks to the blob store; its row, and its mask items if any.
async fn stage_sources(
    ctx: &Context,
    staged: &mut Staged,
    sources: &[Source],
) -> Result<Vec<(CheckpointRow, Option<Vec<Item>>)>, AppError> {
    let mut rows = Vec::with_capacity(sources.len());
    for source in sources {
        match source {
            Source::Model(name, bytes) => {
                let sha = staged.put(&ctx.blobs, bytes.clone()).await?;
                let row = CheckpointRow {
                    name: name.clone(),
                    onnx_sha256: Some(sha),
                    masks_set_id: None,
                };
                rows.push((row, None));
            }
            Source::Masks(name, masks) => {
                let mut items = Vec::with_capacity(masks.len());
                for (image, mask) in masks {
                    let sha = staged.put(&ctx.blobs, mask.clone()).await?;
                    items.push(Item {
                        name: image.clone(),
                        image_sha256: sha,
                        ..Item::default()
                    });
                }
                let row = CheckpointRow {
                    name: name.clone(),
                    onnx_sha256: None,
                    masks_set_id: None,
                };
                rows.push((row, Some(items)));
            }
        }
    }
    Ok(rows)
}

/// Per checkpoint folder, masks ordered like the calibration set; every image needs one, and every mask
/// an image. Messages name masks by position in the zip and images by position in the set: their file
/// names can carry patient names.
fn masks_in_set_order(folders: MaskFolders, names: &[String]) -> Result<Vec<Source>, AppError> {
    folders
        .into_iter()
        .map(|(checkpoint, mut masks)| {
            let ordered = names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    masks.remove(n).map(|(m, _)| (n.clone(), m)).ok_or_else(|| {
                        AppError::InvalidInput(format!(
                            "checkpoint {checkpoint:?} has no mask for calibration image #{} (in file \
                             name order; a mask takes its image's file name)",
                            i + 1
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if let Some((_, position)) = masks.values().next() {
                return Err(AppError::InvalidInput(format!(
                    "checkpoint {checkpoint:?}: file #{position} of the masks zip is a mask for no \
                     calibration image (a mask takes its image's file name)"
                )));
            }
            Ok(Source::Masks(checkpoint, ordered))
        })
        .collect()
}

/// Every checkpoint must load and match the model's spec (the same check as at registration).
async fn validate_checkpoints(
    ctx: &Context,
    model: &ModelRow,
    sources: &[Source],
) -> Result<(), AppError> {
    let spec: ModelSpec = serde_json::from_value(model.spec.clone())
        .map_err(|e| AppError::Internal(format!("model {}'s stored spec: {e}", model.id)))?;
    let runtime = ctx.runtime()?.clone();
    let models: Vec<(String, Bytes)> = sources
        .iter()
        .filter_map(|s| match s {
            Source::Model(n, b) => Some((n.clone(), b.clone())),
            Source::Masks(..) => None,
        })
        .collect();
    blocking(move || {
        for (name, bytes) in &models {
            SegModel::load(&runtime, bytes, name, &spec)?;
        }
        Ok::<_, AppError>(())
    })
    .await?
}

async fn validate_masks(ctx: &Context, sources: &[Source]) -> Result<(), AppError> {
    let max_pixels = ctx.limits.max_pixels;
    let masks: Vec<(String, Bytes)> = sources
        .iter()
        .flat_map(|s| match s {
            Source::Masks(cp, m) => m
                .iter()
                .map(|(n, b)| (format!("{cp}/{n}"), b.clone()))
                .collect(),
            Source::Model(..) => Vec::new(),
        })
        .collect();
    blocking(move || {
        use rayon::prelude::*;
        masks
            .par_iter()
            .try_for_each(|(n, b)| image_io::decode_label(b, n, max_pixels).map(drop))
    })
    .await?
    .map_err(Into::into)
}

/// (pseudo, real) pairs computed elsewhere, to fit now.
pub struct PairsFit {
    pub params: SpeParams,
    pub points: Vec<CheckpointPoint>,
    pub activate: bool,
}

/// Fits (pseudo, real) pairs now. The reverse segmenter recorded is the model's, so estimates (which
/// compare it) work; the caller vouches that the pseudo metrics came from it with these params.
pub async fn from_pairs(
    ctx: &Context,
    target: &Calibratable,
    keyed: Option<Keyed<'_>>,
    fit: PairsFit,
) -> Result<Uuid, AppError> {
    if let Some(first) = replay(ctx, keyed).await? {
        return Ok(first.resource_id);
    }
    let model = &target.model;
    let reverse = reverse_description(model)?;
    let fitted = Calibration::fit(reverse, fit.params, 0, fit.points)?;
    let new = NewCalibration {
        id: Uuid::new_v4(),
        model_id: model.id,
        source: "pairs",
        params: fit.params,
        reference_set_id: Some(target.reference_set_id),
        calibration_set_id: None,
        activate: fit.activate,
        result: Some(fitted),
    };
    let stored = async {
        let mut tx = ctx.pool.begin().await?;
        calibrations::insert(&mut tx, &new).await?;
        if fit.activate {
            calibrations::activate_for(&mut tx, model.id, new.id).await?;
        }
        if let Some(k) = keyed {
            idempotency::record(&mut tx, k.key, k.digest, new.id, None).await?;
        }
        tx.commit().await?;
        Ok::<_, StoreError>(new.id)
    }
    .await
    .map_err(AppError::from);
    first_under_key(ctx, keyed, stored, |winner| winner.resource_id).await
}

/// What the model's reverse segmenter records in a calibration; nothing is loaded.
fn reverse_description(model: &ModelRow) -> Result<String, AppError> {
    Reverse::from_stored(model.reverse_sha256.as_deref(), model.onnx_threshold)
        .map(|r| r.describe())
        .map_err(|e| AppError::Internal(format!("model {}: {e}", model.id)))
}

/// Makes a succeeded calibration its model's active one.
pub async fn activate(ctx: &Context, id: Uuid) -> Result<(), AppError> {
    let row = get(ctx, id).await?;
    if row.result.is_none() {
        return Err(AppError::NotReady(format!(
            "calibration {id} is {}; only a succeeded calibration can be activated",
            row.state
        )));
    }
    let mut tx = ctx.pool.begin().await.map_err(StoreError::from)?;
    calibrations::activate_for(&mut tx, row.model_id, id).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(())
}
