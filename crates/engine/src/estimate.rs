//! Stage 2's last step: a batch's signals through the calibration's mappings, with an interval and
//! warnings.
//!
//! - The mapping is the one fitted for batches of this size (levels; log-interpolated between two).
//! - Anchoring: when the deployed model is one of the calibration checkpoints (same ONNX digest), its own
//!   calibration draws tell how far the fitted curve is from its real values; that offset is removed, so
//!   the estimate is the checkpoint's known value moved by the change the batch shows, and the curve's
//!   error across checkpoints does not land on every estimate.
//! - The interval combines the calibration residuals at this size (within the checkpoint when anchored,
//!   leave-one-checkpoint-out otherwise) with the spread over support repetitions.

use super::fit::{Calibration, CheckpointPoint, Fit, Level, MaskStats};
use super::levels;
use super::metrics::{Metric, MetricSet};
use super::spe::{self, ReferenceSet, SpeParams};
use super::spe::{Estimate, MetricEstimate, PseudoOutcome, SupportCount, Warning};
use super::{EngineError, Gray, Mask, ReverseSegmenter};

/// z for a two-sided 95% interval.
const Z95: f64 = 1.96;

/// What the engine measured on one batch.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchSignals {
    pub outcome: PseudoOutcome,
    /// Mean atlas agreement over the batch images.
    pub agreement: Option<MetricSet>,
    pub images: usize,
    pub masks: MaskStats,
    /// Mean distance of the batch images to the reference set.
    pub distance: f64,
}

/// Measures a batch: the images as loaded (0..255) and the masks the model predicted for them.
pub fn measure(
    reverse: &dyn ReverseSegmenter,
    images: &[Gray],
    masks: &[Mask],
    reference: &ReferenceSet,
    params: &SpeParams,
) -> Result<BatchSignals, EngineError> {
    spe::check_batch(images, masks, params)?;
    let normalised: Vec<Gray> = images.iter().map(spe::normalise).collect();
    let (normalised, masks) = spe::posed(&normalised, masks, reference);
    let outcome = spe::pseudo_metrics_normalised(reverse, &normalised, &masks, reference, params)?;
    let atlas = spe::atlas_masks(reverse, &normalised, reference)?;
    let agreement = MetricSet::mean(&spe::agreement(&atlas, &masks));
    let distances: Vec<f64> = normalised
        .iter()
        .map(|n| spe::distance_to_reference(n, reference))
        .collect();
    Ok(BatchSignals {
        outcome,
        agreement: Some(agreement),
        images: images.len(),
        masks: levels::mask_stats(&masks, params.min_area),
        distance: levels::mean_sd(&distances)[0],
    })
}

/// Maps a batch's signals through the calibration. `anchor` is the deployed model's ONNX digest.
pub fn map_signals(
    signals: &BatchSignals,
    calibration: &Calibration,
    anchor: Option<&str>,
) -> Estimate {
    let (pseudo, per_repetition, support) = match &signals.outcome {
        PseudoOutcome::InsufficientSupport { support } => return insufficient_support(*support),
        PseudoOutcome::Ok {
            pseudo,
            per_repetition,
            support,
        } => (pseudo, per_repetition, *support),
    };
    let anchor = anchor.and_then(|sha| calibration.anchor(sha));
    let n = signals.images.max(1);
    let key = n.min(calibration.params.support_size);
    let (lower, upper, t) = bracket(&calibration.levels, key);
    let agreement = signals.agreement.as_ref();
    let top = &calibration.levels[calibration.levels.len() - 1];
    let metrics = Metric::ALL
        .into_iter()
        .filter_map(|metric| {
            // Shift-augmented calibration: the top level's error on the shifted copies.
            let shifted =
                fit_for(top, metric, anchor.is_some()).map_or(0.0, |f| f.shift_rmse.powi(2));
            let at = |level: &Level| -> Option<(f64, f64)> {
                let fit = fit_for(level, metric, anchor.is_some())?;
                // Anchored: the anchor's mean real value at this level, moved by the part of the mapped
                // change that is real change within a checkpoint (within_slope).
                let drawn = anchor.and_then(|a| anchor_draws(fit, a, level.size));
                let moved = |mapped: f64| match drawn {
                    Some((real, at)) => real + fit.within_slope * (mapped - at),
                    None => mapped,
                };
                let batch = fit.predict(pseudo, agreement);
                let value = moved(batch);
                let mapped: Vec<f64> = per_repetition
                    .iter()
                    .map(|p| moved(fit.predict(p, agreement)))
                    .collect();
                let residual = residual_variance(fit, calibration, n, anchor.is_some());
                // The further the batch moves the estimate from its anchor, the more the slope's
                // uncertainty counts.
                let travel = drawn.map_or(0.0, |(_, at)| batch - at);
                let slope_term = (fit.within_slope_sd * travel).powi(2);
                let half = Z95
                    * (residual + shifted + slope_term + levels::mean_sd(&mapped)[1].powi(2))
                        .sqrt();
                Some((value, half))
            };
            let (v0, h0) = at(lower)?;
            let (v1, h1) = at(upper).unwrap_or((v0, h0));
            let value = v0 + t * (v1 - v0);
            let half = h0 + t * (h1 - h0);
            let (lo, hi) = metric.bounds();
            let clamp = |v: f64| match hi {
                Some(hi) => v.clamp(lo, hi),
                None => v.max(lo),
            };
            Some((
                metric,
                MetricEstimate {
                    estimate: clamp(value),
                    interval: [clamp(value - half), clamp(value + half)],
                    pseudo: pseudo.get(metric),
                    agreement: agreement.map(|a| a.get(metric)),
                },
            ))
        })
        .collect();
    Estimate::Ok {
        metrics,
        support,
        anchor: anchor.map(|a| a.name.clone()),
        warnings: warnings(signals, calibration, anchor),
    }
}

/// Half the 95% interval of an estimate that reads this curve fit without anchoring, for a batch as large
/// as the calibration's top level, leaving out the spread over support repetitions (a property of the
/// batch): what a calibration plot shows as the band around the curve. The same terms as
/// [`map_signals`]'s interval.
pub fn curve_half_width(fit: &Fit) -> f64 {
    Z95 * (fit.loo_rmse.powi(2) + fit.shift_rmse.powi(2)).sqrt()
}

/// The mapping of one metric at one level: the one chosen for anchored estimates when anchored.
fn fit_for(level: &Level, metric: Metric, anchored: bool) -> Option<&Fit> {
    let anchored_fit = anchored.then(|| level.anchored_fits.get(&metric)).flatten();
    anchored_fit.or_else(|| level.fits.get(&metric))
}

/// The two levels around `key` and the log-scale position of `key` between them.
fn bracket(levels: &[Level], key: usize) -> (&Level, &Level, f64) {
    let first = &levels[0];
    let last = &levels[levels.len() - 1];
    if key <= first.size {
        return (first, first, 0.0);
    }
    if key >= last.size {
        return (last, last, 0.0);
    }
    let i = levels.partition_point(|l| l.size <= key);
    let (a, b) = (&levels[i - 1], &levels[i]);
    let t =
        ((key as f64).ln() - (a.size as f64).ln()) / ((b.size as f64).ln() - (a.size as f64).ln());
    (a, b, t)
}

/// The anchor checkpoint's draws at this level: their mean real value and mean mapped value under this fit.
fn anchor_draws(fit: &Fit, anchor: &CheckpointPoint, size: usize) -> Option<(f64, f64)> {
    let pairs: Vec<(f64, f64)> = anchor
        .draws
        .iter()
        .filter(|d| d.size == size)
        .map(|d| {
            (
                d.real.get(fit.input),
                fit.predict(&d.pseudo, d.agreement.as_ref()),
            )
        })
        .collect();
    if pairs.is_empty() {
        return None;
    }
    let n = pairs.len() as f64;
    Some((
        pairs.iter().map(|p| p.0).sum::<f64>() / n,
        pairs.iter().map(|p| p.1).sum::<f64>() / n,
    ))
}

/// Variance of the estimate's error at one level for a batch of `n` images.
///
/// Anchored: a per-image residual variance, times (1/n + 1/N) for the batch's own images and the anchor's
/// N calibration images its offset comes from. The per-image variance is read off the within-checkpoint
/// residuals of the draws (a draw of L of N images without replacement varies (N - L)/(N - 1) times less
/// than an independent batch of L); the largest over the sizes up to N/2 is taken, since a reverse
/// segmenter's noise differs between sizes and the overlap of larger draws hides it. Not anchored: the
/// leave-one-checkpoint-out error at this size.
fn residual_variance(fit: &Fit, calibration: &Calibration, n: usize, anchored: bool) -> f64 {
    if !anchored {
        return fit.loo_rmse.powi(2);
    }
    let total = calibration.images.max(1) as f64;
    let per_image = calibration
        .levels
        .iter()
        .filter(|l| 2.0 * l.size as f64 <= total)
        .filter_map(|l| {
            let w = fit_for(l, fit.input, true)?.within_rmse;
            (w > 0.0).then(|| w * w * l.size as f64 * (total - 1.0) / (total - l.size as f64))
        })
        .fold(None, |acc: Option<f64>, v| {
            Some(acc.map_or(v, |a| a.max(v)))
        })
        .unwrap_or(fit.loo_rmse.powi(2));
    per_image * (1.0 / n as f64 + 1.0 / total)
}

fn warnings(
    signals: &BatchSignals,
    calibration: &Calibration,
    anchor: Option<&CheckpointPoint>,
) -> Vec<Warning> {
    let mut out = Vec::new();
    let n = signals.images.max(1) as f64;
    let batch = signals.masks;
    match anchor.and_then(|a| a.masks) {
        Some(cal) => {
            let p = cal.empty_share;
            let allowed = (3.0 * (p * (1.0 - p) / n).sqrt()).max(0.1);
            if (batch.empty_share - p).abs() > allowed {
                out.push(Warning {
                    code: "empty_predictions".into(),
                    message: format!(
                        "{:.0}% of the batch images have an empty predicted mask (fewer than {} pixels), \
                         against {:.0}% on the calibration images: the model behaves differently here",
                        100.0 * batch.empty_share,
                        calibration.params.min_area,
                        100.0 * p
                    ),
                });
            }
            let allowed = 3.0 * cal.area_sd / n.sqrt();
            let relative = (batch.area_mean - cal.area_mean).abs() / cal.area_mean.max(1e-9);
            if (batch.area_mean - cal.area_mean).abs() > allowed && relative > 0.1 {
                out.push(Warning {
                    code: "predicted_area".into(),
                    message: format!(
                        "the predicted masks cover {:.1}% of the image on average, against {:.1}% (sd \
                         {:.1}%) on the calibration images",
                        100.0 * batch.area_mean,
                        100.0 * cal.area_mean,
                        100.0 * cal.area_sd
                    ),
                });
            }
        }
        None => out.push(Warning {
            code: "unanchored".into(),
            message: "the model is not one of the calibration checkpoints (no checkpoint has its ONNX \
                      digest), so the estimate reads the curve fitted across checkpoints and carries \
                      its error; calibrate with the deployed model among the checkpoints for a \
                      tighter estimate"
                .into(),
        }),
    }
    if let Some([mean, sd]) = calibration.distance {
        let limit = mean + 3.0 * sd / n.sqrt();
        if signals.distance > limit {
            out.push(Warning {
                code: "extrapolation".into(),
                message: format!(
                    "the batch images are further from the reference set (mean distance {:.4}) than the \
                     calibration images are (mean {mean:.4}, sd {sd:.4}): the estimate extrapolates the \
                     calibration and deserves less trust",
                    signals.distance
                ),
            });
        }
    }
    out
}

fn insufficient_support(support: SupportCount) -> Estimate {
    Estimate::InsufficientSupport {
        support,
        message: format!(
            "none of the {} batch images has a predicted mask with at least the minimum area, so there is \
             no support set: the model found nothing in this batch",
            support.rejected
        ),
    }
}

#[cfg(test)]
mod tests;
