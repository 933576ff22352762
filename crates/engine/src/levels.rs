//! Calibration for every batch size: a checkpoint's pseudo metric depends on how many supports it had
//! (more supports, closer atlases, a higher pseudo Dice), so batches of several sizes are drawn from the
//! calibration set and each size gets its own mapping. A draw is what an estimate on a batch of that size
//! would see: its images' real metrics, pseudo metrics with them as supports, and atlas agreement.

use super::align::{self, Pose};
use super::fit::{top_level, CheckpointPoint, Draw, MaskStats, ShiftedPoint};
use super::metrics::{self, MetricSet};
use super::shift::Shift;
use super::spe::{self, PseudoOutcome, ReferenceSet, SpeParams};
use super::{EngineError, Gray, Mask, ReverseSegmenter};
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// Sizes of the drawn batches below the top level: 1, 2, 4, ... (the top level is the whole set).
pub fn level_sizes(top: usize) -> Vec<usize> {
    std::iter::successors(Some(1usize), |s| Some(s * 2))
        .take_while(|&s| s < top)
        .collect()
}

/// Reference images queried per draw (see [`ReferenceSet::subset`]).
const DRAW_QUERIES: usize = 64;

/// Draws per level: small batches vary more from draw to draw, so they get more.
fn draws_at(size: usize) -> usize {
    (64 / size).clamp(4, 16)
}

/// The shifts of shift-augmented calibration: what deployment changes (exposure, contrast, sharpness,
/// noise, positioning), at strengths that leave most models working and some not. Their estimate errors
/// widen the intervals to what a changed batch needs.
pub fn calibration_shifts() -> Vec<Shift> {
    vec![
        Shift::Gamma { gamma: 0.75 },
        Shift::Gamma { gamma: 1.35 },
        Shift::Contrast { factor: 0.75 },
        Shift::Blur { sigma: 1.5 },
        Shift::Noise {
            sigma: 12.0,
            seed: 7,
        },
        Shift::Rotate { degrees: -6.0 },
        Shift::Zoom { factor: 1.06 },
    ]
}

/// The calibration set prepared once for every checkpoint.
pub struct CalibrationInputs<'a> {
    /// Normalised images in the reference set's pose.
    pub normalised: Vec<Gray>,
    /// The pose each image was moved by (its masks move with it).
    pub poses: Vec<Pose>,
    pub labels: &'a [Mask],
    /// Each image segmented by the reverse segmenter with the reference set as supports.
    pub atlas: Vec<Mask>,
    /// Each image's [`spe::distance_to_reference`].
    pub distances: Vec<f64>,
}

impl<'a> CalibrationInputs<'a> {
    pub fn new(
        reverse: &dyn ReverseSegmenter,
        images: &[Gray],
        labels: &'a [Mask],
        reference: &ReferenceSet,
    ) -> Result<Self, EngineError> {
        if images.len() != labels.len() {
            return Err(EngineError::Invalid(format!(
                "the calibration set has {} images but {} labels",
                images.len(),
                labels.len()
            )));
        }
        if images.is_empty() {
            return Err(EngineError::Invalid("the calibration set is empty".into()));
        }
        let normalised: Vec<Gray> = images.iter().map(spe::normalise).collect();
        let poses: Vec<Pose> = normalised
            .par_iter()
            .map(|i| align::canonical_pose(i, &reference.thumbnails))
            .collect();
        let normalised: Vec<Gray> = normalised
            .iter()
            .zip(&poses)
            .map(|(i, &p)| align::warp_image(i, p))
            .collect();
        let atlas = spe::atlas_masks(reverse, &normalised, reference)?;
        let distances = normalised
            .iter()
            .map(|n| spe::distance_to_reference(n, reference))
            .collect();
        Ok(Self {
            normalised,
            poses,
            labels,
            atlas,
            distances,
        })
    }

    /// Per image, the real metrics of the masks as predicted, and the masks moved to the reference pose
    /// (everything the estimate sees is in that pose).
    fn real_and_posed(&self, masks: &[Mask]) -> (Vec<MetricSet>, Vec<Mask>) {
        let real = self
            .labels
            .par_iter()
            .zip(masks.par_iter())
            .map(|(g, p)| metrics::compute(g.view(), p.view(), None))
            .collect();
        let posed = masks
            .iter()
            .zip(&self.poses)
            .map(|(m, &p)| align::warp_mask(m, p))
            .collect();
        (real, posed)
    }

    /// Mean and standard deviation of the calibration images' distances to the reference set.
    pub fn distance_summary(&self) -> [f64; 2] {
        mean_sd(&self.distances)
    }
}

pub fn mean_sd(values: &[f64]) -> [f64; 2] {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    [mean, var.sqrt()]
}

/// What the masks of a checkpoint (or a batch) look like, for the warnings.
pub fn mask_stats(masks: &[Mask], min_area: usize) -> MaskStats {
    let areas: Vec<f64> = masks
        .iter()
        .map(|m| m.iter().filter(|&&v| v).count() as f64 / m.len().max(1) as f64)
        .collect();
    let empty = masks
        .iter()
        .filter(|m| m.iter().filter(|&&v| v).count() < min_area)
        .count();
    let [area_mean, area_sd] = mean_sd(&areas);
    MaskStats {
        empty_share: empty as f64 / masks.len().max(1) as f64,
        area_mean,
        area_sd,
    }
}

/// One checkpoint's calibration point: real metrics, the full-protocol pseudo outcome, atlas agreement
/// and the draws of every level.
pub fn checkpoint_point(
    reverse: &dyn ReverseSegmenter,
    reference: &ReferenceSet,
    inputs: &CalibrationInputs<'_>,
    masks: &[Mask],
    params: &SpeParams,
    name: String,
    sha256: Option<String>,
) -> Result<CheckpointPoint, EngineError> {
    let n = inputs.normalised.len();
    if masks.len() != n {
        return Err(EngineError::Invalid(format!(
            "checkpoint {name}: {} masks for {n} calibration images",
            masks.len()
        )));
    }
    let (real_per_image, masks) = inputs.real_and_posed(masks);
    let masks = masks.as_slice();
    let agreement_per_image = spe::agreement(&inputs.atlas, masks);
    let real = MetricSet::mean(&real_per_image);
    let agreement = MetricSet::mean(&agreement_per_image);
    let outcome =
        spe::pseudo_metrics_normalised(reverse, &inputs.normalised, masks, reference, params)?;
    let mut draws = Vec::new();
    let queries = reference.subset(DRAW_QUERIES);
    if let PseudoOutcome::Ok { pseudo, .. } = &outcome {
        for (level, &size) in level_sizes(top_level(params, n)).iter().enumerate() {
            for k in 0..draws_at(size) {
                let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
                rng.set_stream(((level as u64) << 32) | k as u64);
                let mut picked: Vec<usize> = sample(&mut rng, n, size).into_vec();
                picked.sort_unstable();
                let images: Vec<Gray> = picked
                    .iter()
                    .map(|&i| inputs.normalised[i].clone())
                    .collect();
                let draw_masks: Vec<Mask> = picked.iter().map(|&i| masks[i].clone()).collect();
                let one = SpeParams {
                    repetitions: 1,
                    ..*params
                };
                let PseudoOutcome::Ok { pseudo, .. } =
                    spe::pseudo_metrics_normalised(reverse, &images, &draw_masks, &queries, &one)?
                else {
                    continue; // no support in this draw: such a batch gets no number either
                };
                let pick = |per_image: &[MetricSet]| {
                    MetricSet::mean(&picked.iter().map(|&i| per_image[i]).collect::<Vec<_>>())
                };
                draws.push(Draw {
                    size,
                    real: pick(&real_per_image),
                    pseudo,
                    agreement: Some(pick(&agreement_per_image)),
                });
            }
        }
        draws.push(Draw {
            size: top_level(params, n),
            real,
            pseudo: *pseudo,
            agreement: Some(agreement),
        });
    }
    Ok(CheckpointPoint {
        name,
        sha256,
        real,
        outcome,
        agreement: Some(agreement),
        masks: Some(mask_stats(masks, params.min_area)),
        draws,
        shifted: Vec::new(),
    })
}

/// A checkpoint on one shifted calibration set: real metrics of its masks there, and the signals (one
/// support repetition; its mean is the same as six's, at a sixth of the cost). None without support.
pub fn shifted_point(
    reverse: &dyn ReverseSegmenter,
    reference: &ReferenceSet,
    inputs: &CalibrationInputs<'_>,
    masks: &[Mask],
    params: &SpeParams,
    shift: &Shift,
) -> Result<Option<ShiftedPoint>, EngineError> {
    if masks.len() != inputs.normalised.len() {
        return Err(EngineError::Invalid(format!(
            "{} masks for {} shifted calibration images",
            masks.len(),
            inputs.normalised.len()
        )));
    }
    let (real, posed) = inputs.real_and_posed(masks);
    let one = SpeParams {
        repetitions: 1,
        ..*params
    };
    let PseudoOutcome::Ok { pseudo, .. } =
        spe::pseudo_metrics_normalised(reverse, &inputs.normalised, &posed, reference, &one)?
    else {
        return Ok(None);
    };
    Ok(Some(ShiftedPoint {
        shift: shift.label(),
        real: MetricSet::mean(&real),
        pseudo,
        agreement: Some(MetricSet::mean(&spe::agreement(&inputs.atlas, &posed))),
    }))
}
