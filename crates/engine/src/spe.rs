//! Steps 2-5 of method.md's stage 1, which stage 2 repeats on a batch: support selection, reverse
//! segmentation of the reference set, pseudo metrics averaged over repetitions; plus the estimate's output
//! types (the mapping itself is in `estimate`).

use super::metrics::{self, Metric, MetricSet};
use super::{EngineError, Gray, Mask, ReverseSegmenter, SupportSet};
use ndarray::ArrayView2;
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Protocol parameters (method.md defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpeParams {
    /// Images whose predicted mask has fewer foreground pixels are not used as supports.
    pub min_area: usize,
    /// At most this many supports per repetition (UniverSeg's published weights take <= 64).
    pub support_size: usize,
    /// Number of random support subsets; the pseudo metric is their mean.
    pub repetitions: usize,
    /// Seed of the support-subset draws: same inputs + seed give the same numbers.
    pub seed: u64,
}

impl Default for SpeParams {
    fn default() -> Self {
        Self {
            min_area: 20,
            support_size: 64,
            repetitions: 6,
            seed: 0,
        }
    }
}

impl SpeParams {
    pub fn validate(&self) -> Result<(), EngineError> {
        if self.support_size == 0 {
            return Err(EngineError::Invalid(
                "support_size must be at least 1".into(),
            ));
        }
        if self.repetitions == 0 {
            return Err(EngineError::Invalid(
                "repetitions must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// The labelled reference set (the model's training images), prepared for the reverse segmenter.
pub struct ReferenceSet {
    /// Rank-normalised images (see [`normalise`]).
    pub images: Vec<Gray>,
    pub labels: Vec<Mask>,
    /// 32x32 means of the normalised images, for [`distance_to_reference`] and pose search.
    pub thumbnails: Vec<Vec<f32>>,
}

impl ReferenceSet {
    /// `images` as loaded (0..255); they are rank-normalised here (see [`normalise`]).
    pub fn new(images: &[Gray], labels: Vec<Mask>) -> Result<Self, EngineError> {
        if images.is_empty() {
            return Err(EngineError::Invalid("the reference set is empty".into()));
        }
        if images.len() != labels.len() {
            return Err(EngineError::Invalid(format!(
                "the reference set has {} images but {} labels",
                images.len(),
                labels.len()
            )));
        }
        let images: Vec<Gray> = images.iter().map(normalise).collect();
        let thumbnails = images.iter().map(super::align::thumbnail).collect();
        Ok(Self {
            images,
            labels,
            thumbnails,
        })
    }
}

impl ReferenceSet {
    /// At most `max` of the images, evenly spaced: calibration's many small draws query this subset,
    /// whose mean pseudo metric is an unbiased estimate of the whole set's at a fraction of the cost.
    pub fn subset(&self, max: usize) -> ReferenceSet {
        let n = self.images.len();
        let take = max.clamp(1, n);
        let picked: Vec<usize> = (0..take).map(|i| i * n / take).collect();
        ReferenceSet {
            images: picked.iter().map(|&i| self.images[i].clone()).collect(),
            labels: picked.iter().map(|&i| self.labels[i].clone()).collect(),
            thumbnails: picked.iter().map(|&i| self.thumbnails[i].clone()).collect(),
        }
    }
}

/// How many batch images could serve as supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupportCount {
    /// Supports used per repetition.
    pub used: usize,
    /// Images whose predicted mask had fewer than `min_area` foreground pixels.
    pub rejected: usize,
}

/// The pseudo metrics of one batch (or one checkpoint on the calibration set).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PseudoOutcome {
    Ok {
        /// Mean over repetitions of the mean over reference images.
        pseudo: MetricSet,
        /// One entry per repetition (their spread enters the estimate's interval).
        per_repetition: Vec<MetricSet>,
        support: SupportCount,
    },
    /// No image passed the `min_area` rule: there is nothing to build a support set from.
    InsufficientSupport { support: SupportCount },
}

/// Draws the support subsets: one index list per repetition (indices into the batch).
/// Returns `None` when no image passes `min_area`.
pub fn draw_supports(masks: &[Mask], params: &SpeParams) -> (Vec<Vec<usize>>, SupportCount) {
    let candidates: Vec<usize> = masks
        .iter()
        .enumerate()
        .filter(|(_, m)| m.iter().filter(|&&v| v).count() >= params.min_area)
        .map(|(i, _)| i)
        .collect();
    let rejected = masks.len() - candidates.len();
    if candidates.is_empty() {
        return (Vec::new(), SupportCount { used: 0, rejected });
    }
    let used = candidates.len().min(params.support_size);
    let draws = (0..params.repetitions)
        .map(|rep| {
            if candidates.len() <= params.support_size {
                return candidates.clone();
            }
            // A separate stream per repetition keeps draws stable when `repetitions` changes.
            let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
            rng.set_stream(rep as u64);
            let mut picked: Vec<usize> = sample(&mut rng, candidates.len(), params.support_size)
                .into_iter()
                .map(|k| candidates[k])
                .collect();
            picked.sort_unstable();
            picked
        })
        .collect();
    (draws, SupportCount { used, rejected })
}

/// Valid parameters and one predicted mask per image.
pub fn check_batch(images: &[Gray], masks: &[Mask], params: &SpeParams) -> Result<(), EngineError> {
    params.validate()?;
    if images.len() != masks.len() {
        return Err(EngineError::Invalid(format!(
            "{} images but {} predicted masks",
            images.len(),
            masks.len()
        )));
    }
    Ok(())
}

/// Steps 2-5: the pseudo metrics of a batch whose images (as loaded, 0..255) the model predicted
/// `masks` for, measured by reverse-segmenting the reference set.
pub fn pseudo_metrics(
    reverse: &dyn ReverseSegmenter,
    images: &[Gray],
    masks: &[Mask],
    reference: &ReferenceSet,
    params: &SpeParams,
) -> Result<PseudoOutcome, EngineError> {
    check_batch(images, masks, params)?;
    let normalised: Vec<Gray> = images.iter().map(normalise).collect();
    pseudo_metrics_normalised(reverse, &normalised, masks, reference, params)
}

/// [`pseudo_metrics`] of images already passed through [`normalise`].
pub fn pseudo_metrics_normalised(
    reverse: &dyn ReverseSegmenter,
    normalised: &[Gray],
    masks: &[Mask],
    reference: &ReferenceSet,
    params: &SpeParams,
) -> Result<PseudoOutcome, EngineError> {
    let (draws, support) = draw_supports(masks, params);
    if draws.is_empty() {
        return Ok(PseudoOutcome::InsufficientSupport { support });
    }
    let queries: Vec<ArrayView2<f32>> = reference.images.iter().map(|i| i.view()).collect();

    let mut per_repetition = Vec::with_capacity(draws.len());
    let mut previous: Option<(&Vec<usize>, MetricSet)> = None;
    for draw in &draws {
        // The reverse segmenters are deterministic: an identical subset (every repetition, when no
        // more than support_size images qualify) gives an identical result, so it is computed once.
        if let Some((prev_draw, prev_metrics)) = previous {
            if prev_draw == draw {
                per_repetition.push(prev_metrics);
                continue;
            }
        }
        let support_set = SupportSet {
            images: draw.iter().map(|&i| normalised[i].view()).collect(),
            labels: draw.iter().map(|&i| masks[i].view()).collect(),
        };
        let reverse_masks = segment_checked(reverse, &support_set, &queries)?;
        let scores: Vec<MetricSet> = reverse_masks
            .par_iter()
            .zip(reference.labels.par_iter())
            .map(|(pred, label)| metrics::compute(label.view(), pred.view(), None))
            .collect();
        let mean = MetricSet::mean(&scores);
        per_repetition.push(mean);
        previous = Some((draw, mean));
    }
    Ok(PseudoOutcome::Ok {
        pseudo: MetricSet::mean(&per_repetition),
        per_repetition,
        support,
    })
}

/// The reverse segmenter's intensity normalisation: regional ranks in [0, 1], the same for every monotone
/// change of intensity and nearly so for smooth gains (see [`super::image_io::rank_normalise`]).
pub fn normalise(image: &Gray) -> Gray {
    super::image_io::rank_normalise(image.view())
}

/// How unlike the reference set a normalised image looks: the smallest mean squared difference between
/// its 32x32 thumbnail and a reference image's. Batches far beyond the calibration images' distances are
/// an extrapolation of the calibration.
pub fn distance_to_reference(normalised: &Gray, reference: &ReferenceSet) -> f64 {
    let t = super::align::thumbnail(normalised);
    reference
        .thumbnails
        .iter()
        .map(|r| {
            r.iter()
                .zip(&t)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>()
                / t.len() as f32
        })
        .fold(f32::INFINITY, f32::min) as f64
}

/// The forward check beside SPE's reverse one: the reverse segmenter segments each (normalised) image with
/// the labelled reference set as its supports. How far the model's mask is from that atlas mask, per image,
/// does not depend on how many images the batch has. Segmenters that take a limited number of supports get
/// an evenly spaced subset of the reference set.
pub fn atlas_masks(
    reverse: &dyn ReverseSegmenter,
    normalised: &[Gray],
    reference: &ReferenceSet,
) -> Result<Vec<Mask>, EngineError> {
    let n = reference.images.len();
    let take = reverse.max_supports().unwrap_or(n).clamp(1, n);
    let picked: Vec<usize> = (0..take).map(|i| i * n / take).collect();
    let support = SupportSet {
        images: picked.iter().map(|&i| reference.images[i].view()).collect(),
        labels: picked.iter().map(|&i| reference.labels[i].view()).collect(),
    };
    let queries: Vec<ArrayView2<f32>> = normalised.iter().map(|i| i.view()).collect();
    segment_checked(reverse, &support, &queries)
}

/// [`ReverseSegmenter::segment`], refusing an answer without exactly one mask per query.
fn segment_checked(
    reverse: &dyn ReverseSegmenter,
    support: &SupportSet<'_>,
    queries: &[ArrayView2<'_, f32>],
) -> Result<Vec<Mask>, EngineError> {
    let masks = reverse.segment(support, queries)?;
    if masks.len() != queries.len() {
        return Err(EngineError::Reverse(format!(
            "{} masks returned for {} queries",
            masks.len(),
            queries.len()
        )));
    }
    Ok(masks)
}

/// Per image, the metrics of the model's mask scored against the atlas mask.
pub fn agreement(atlas: &[Mask], predicted: &[Mask]) -> Vec<MetricSet> {
    atlas
        .par_iter()
        .zip(predicted.par_iter())
        .map(|(a, p)| metrics::compute(a.view(), p.view(), None))
        .collect()
}

/// One metric's estimate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricEstimate {
    pub estimate: f64,
    /// Clamped to the metric's range.
    pub interval: [f64; 2],
    pub pseudo: f64,
    /// The batch's mean atlas agreement for this metric (the model's masks scored against the reference
    /// set's label fusion of the same images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<f64>,
}

/// Something about the batch that a person should know beside the number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    /// Stable identifier: empty_predictions, predicted_area, extrapolation, unanchored.
    pub code: String,
    pub message: String,
}

/// The answer for one unlabeled batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Estimate {
    Ok {
        metrics: BTreeMap<Metric, MetricEstimate>,
        support: SupportCount,
        /// The calibration checkpoint the deployed model is (same ONNX digest): the estimate is that
        /// checkpoint's calibration value moved by the change the batch shows.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        anchor: Option<String>,
        #[serde(default)]
        warnings: Vec<Warning>,
    },
    InsufficientSupport {
        support: SupportCount,
        /// A sentence for people: why there is no number.
        message: String,
    },
}

/// Normalised images and their masks brought to the reference set's pose (see [`super::align`]).
pub fn posed(
    normalised: &[Gray],
    masks: &[Mask],
    reference: &ReferenceSet,
) -> (Vec<Gray>, Vec<Mask>) {
    normalised
        .par_iter()
        .zip(masks.par_iter())
        .map(|(image, mask)| {
            let pose = super::align::canonical_pose(image, &reference.thumbnails);
            (
                super::align::warp_image(image, pose),
                super::align::warp_mask(mask, pose),
            )
        })
        .unzip()
}

/// An order of the images that depends only on their pixels (lexicographic over the values), so that the
/// supports drawn for a batch, and so its estimate, do not depend on file names, formats or upload order.
pub fn order_by_pixels(images: &[Gray]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..images.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&images[a], &images[b]);
        a.dim().cmp(&b.dim()).then_with(|| {
            a.iter()
                .zip(b.iter())
                .map(|(x, y)| x.total_cmp(y))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        })
    });
    order
}

/// The HD95 estimate in millimetres, for batches whose images say how large their pixels are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hd95Mm {
    /// Mean size of a working-grid pixel over the batch, in mm.
    pub pixel_mm: f64,
    pub estimate: f64,
    pub interval: [f64; 2],
}

/// Mean working-grid pixel size of a batch (per image the geometric mean of row and column size, so a
/// distance in pixels converts with one factor); None unless every image has one.
pub fn mean_pixel_mm(sizes: &[Option<[f64; 2]>]) -> Option<f64> {
    if sizes.is_empty() {
        return None;
    }
    let total = sizes
        .iter()
        .map(|s| s.map(|[r, c]| (r * c).sqrt()))
        .sum::<Option<f64>>()?;
    let mean = total / sizes.len() as f64;
    (mean.is_finite() && mean > 0.0).then_some(mean)
}

/// HD95 is estimated in working-grid pixels (the calibration's unit); scaled here by the batch's pixel size.
pub fn hd95_mm(estimate: &Estimate, pixel_mm: f64) -> Option<Hd95Mm> {
    let Estimate::Ok { metrics, .. } = estimate else {
        return None;
    };
    let hd = metrics.get(&Metric::Hd95)?;
    Some(Hd95Mm {
        pixel_mm,
        estimate: hd.estimate * pixel_mm,
        interval: [hd.interval[0] * pixel_mm, hd.interval[1] * pixel_mm],
    })
}

#[cfg(test)]
mod tests;
