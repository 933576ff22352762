//! Orchestration shared by the CLI and the job workers: runs segmentation models (inference) and
//! hands their masks to the engine.

use crate::engine::estimate;
use crate::engine::fit::{Calibration, CheckpointPoint};
use crate::engine::image_io::LabelledSet;
use crate::engine::levels::{self, CalibrationInputs};
use crate::engine::metrics::{self, MetricSet};
use crate::engine::shift::Shift;
use crate::engine::spe::{self, Estimate, PseudoOutcome, ReferenceSet, SpeParams};
use crate::engine::{EngineError, Gray, Mask, ReverseSegmenter};
use crate::inference::{InferenceError, SegModel};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::ControlFlow;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Inference(#[from] InferenceError),
    /// The caller's progress callback asked to stop (a worker that lost its lease or its deadline).
    #[error("the computation was stopped before it finished")]
    Stopped,
}

/// Real metrics of a model on a labelled set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub mean: MetricSet,
    pub per_image: BTreeMap<String, MetricSet>,
}

/// Real metrics of predicted masks against labels.
pub fn score(names: &[String], labels: &[Mask], predictions: &[Mask]) -> Evaluation {
    let scores: Vec<MetricSet> = labels
        .par_iter()
        .zip(predictions.par_iter())
        .map(|(g, p)| metrics::compute(g.view(), p.view(), None))
        .collect();
    Evaluation {
        mean: MetricSet::mean(&scores),
        per_image: names.iter().cloned().zip(scores).collect(),
    }
}

pub fn evaluate(model: &SegModel, set: &LabelledSet) -> Result<Evaluation, PipelineError> {
    let predictions = model.predict(&set.images)?;
    Ok(score(&set.names, &set.labels, &predictions))
}

/// Predicted masks of one checkpoint on the calibration set, the input of [`calibrate_from_masks`].
pub struct CheckpointMasks {
    pub name: String,
    /// Digest of the checkpoint's ONNX file, when it came as one (deployed models are anchored by it).
    pub sha256: Option<String>,
    pub masks: Vec<Mask>,
    /// Its masks on each of [`shifted_sets`] (empty when only masks were given).
    pub shifted: Vec<Vec<Mask>>,
}

/// A labelled set under one calibration shift.
pub struct ShiftedSet {
    pub shift: Shift,
    pub set: LabelledSet,
}

/// The calibration set under each of the calibration shifts (images and, for geometric shifts, labels).
pub fn shifted_sets(calibration: &LabelledSet) -> Vec<ShiftedSet> {
    levels::calibration_shifts()
        .into_iter()
        .map(|shift| {
            let (images, labels) = calibration
                .images
                .par_iter()
                .zip(calibration.labels.par_iter())
                .enumerate()
                .map(|(i, (image, label))| {
                    let (moved, moved_label) = shift.apply(image, Some(label), i as u64);
                    (moved, moved_label.unwrap_or_else(|| label.clone()))
                })
                .unzip();
            ShiftedSet {
                shift,
                set: LabelledSet {
                    names: calibration.names.clone(),
                    images,
                    labels,
                },
            }
        })
        .collect()
}

/// Stage 1 from predicted masks: real and pseudo metrics per checkpoint, then the fits.
/// `progress` is told each finished checkpoint (index, count, point) and may stop the rest.
pub fn calibrate_from_masks(
    checkpoints: impl ExactSizeIterator<Item = Result<CheckpointMasks, PipelineError>>,
    reference: &ReferenceSet,
    calibration: &LabelledSet,
    shifted: &[ShiftedSet],
    reverse: &dyn ReverseSegmenter,
    params: &SpeParams,
    progress: &mut dyn FnMut(usize, usize, &CheckpointPoint) -> ControlFlow<()>,
) -> Result<Calibration, PipelineError> {
    params.validate()?;
    let count = checkpoints.len();
    let inputs =
        CalibrationInputs::new(reverse, &calibration.images, &calibration.labels, reference)?;
    let shifted_inputs = shifted
        .iter()
        .map(|s| CalibrationInputs::new(reverse, &s.set.images, &s.set.labels, reference))
        .collect::<Result<Vec<_>, _>>()?;
    let mut points = Vec::with_capacity(count);
    for (i, checkpoint) in checkpoints.enumerate() {
        let CheckpointMasks {
            name,
            sha256,
            masks,
            shifted: shifted_masks,
        } = checkpoint?;
        let mut point =
            levels::checkpoint_point(reverse, reference, &inputs, &masks, params, name, sha256)?;
        if matches!(point.outcome, PseudoOutcome::Ok { .. }) {
            for ((set, set_inputs), masks) in
                shifted.iter().zip(&shifted_inputs).zip(&shifted_masks)
            {
                let p = levels::shifted_point(
                    reverse, reference, set_inputs, masks, params, &set.shift,
                )?;
                point.shifted.extend(p);
            }
        }
        if progress(i, count, &point).is_break() {
            return Err(PipelineError::Stopped);
        }
        points.push(point);
    }
    let mut fitted = Calibration::fit(
        reverse.describe(),
        *params,
        calibration.images.len(),
        points,
    )?;
    fitted.distance = Some(inputs.distance_summary());
    Ok(fitted)
}

/// Stage 1 from checkpoint models.
pub fn calibrate(
    checkpoints: &[SegModel],
    reference: &ReferenceSet,
    calibration: &LabelledSet,
    reverse: &dyn ReverseSegmenter,
    params: &SpeParams,
    progress: &mut dyn FnMut(usize, usize, &CheckpointPoint) -> ControlFlow<()>,
) -> Result<Calibration, PipelineError> {
    let shifted = shifted_sets(calibration);
    let masks = checkpoints.iter().map(|model| {
        Ok(CheckpointMasks {
            name: model.name().to_string(),
            sha256: Some(model.sha256().to_string()),
            masks: model.predict(&calibration.images)?,
            shifted: shifted
                .iter()
                .map(|s| model.predict(&s.set.images))
                .collect::<Result<_, _>>()?,
        })
    });
    calibrate_from_masks(
        masks,
        reference,
        calibration,
        &shifted,
        reverse,
        params,
        progress,
    )
}

/// The support size and the `min_area` rule shape the pseudo metric, so an estimate under others than its
/// calibration's would read mappings fitted for different numbers. Repetitions and the seed only change
/// which supports are drawn, and may differ.
fn check_protocol(params: &SpeParams, calibrated: &SpeParams) -> Result<(), PipelineError> {
    let differs = |flag: &str, asked: usize, stored: usize| {
        (asked != stored).then(|| format!("{flag} {asked} (the calibration used {stored})"))
    };
    let conflicts: Vec<String> = [
        differs(
            "--support-size",
            params.support_size,
            calibrated.support_size,
        ),
        differs("--min-area", params.min_area, calibrated.min_area),
    ]
    .into_iter()
    .flatten()
    .collect();
    if conflicts.is_empty() {
        return Ok(());
    }
    Err(EngineError::Calibration(format!(
        "this estimate asks for {}; pseudo metrics under another protocol are not comparable with the \
         calibration's, so drop the flag or calibrate with it",
        conflicts.join(" and ")
    ))
    .into())
}

/// Stage 2 for one unlabeled batch.
pub fn estimate_batch(
    model: &SegModel,
    calibration: &Calibration,
    reference: &ReferenceSet,
    images: &[Gray],
    reverse: &dyn ReverseSegmenter,
    params: &SpeParams,
) -> Result<(Estimate, PseudoOutcome), PipelineError> {
    calibration.validate()?;
    if images.is_empty() {
        return Err(EngineError::Invalid("the batch holds no image".into()).into());
    }
    let described = reverse.describe();
    if described != calibration.reverse {
        return Err(EngineError::Calibration(format!(
            "it was made with the reverse segmenter {:?} but this estimate uses {described:?}; \
             estimate with the same reverse segmenter (pseudo metrics of different segmenters are not comparable)",
            calibration.reverse
        ))
        .into());
    }
    check_protocol(params, &calibration.params)?;
    let images: Vec<Gray> = spe::order_by_pixels(images)
        .into_iter()
        .map(|i| images[i].clone())
        .collect();
    let masks = model.predict(&images)?;
    let signals = estimate::measure(reverse, &images, &masks, reference, params)?;
    let result = estimate::map_signals(&signals, calibration, Some(model.sha256()));
    Ok((result, signals.outcome))
}
