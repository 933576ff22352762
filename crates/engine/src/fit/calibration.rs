//! What a calibration stores (CAL.json and the service's calibrations): the checkpoints with their draws
//! and shifted copies, and the fits per support level.

use super::{fit_observations, Criterion, Fit, Observation, MIN_POINTS};
use crate::metrics::{Metric, MetricSet};
use crate::spe::{PseudoOutcome, SpeParams};
use crate::EngineError;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A batch drawn from the calibration set for one checkpoint: its real metrics and what the estimate
/// would have seen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Draw {
    /// Images in the draw.
    pub size: usize,
    pub real: MetricSet,
    pub pseudo: MetricSet,
    /// Mean atlas agreement of the draw's images; absent for calibrations fitted from given pairs.
    #[serde(default)]
    pub agreement: Option<MetricSet>,
}

/// The predicted masks' summary on the calibration set, for the warnings of an estimate.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MaskStats {
    /// Share of images whose predicted mask is below `min_area`.
    pub empty_share: f64,
    /// Mean and standard deviation over images of the predicted foreground share.
    pub area_mean: f64,
    pub area_sd: f64,
}

/// A checkpoint on a shifted copy of the calibration set (shift-augmented calibration): how wrong the
/// estimate is when images change, which the interval must cover.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShiftedPoint {
    /// What was done to the images (e.g. "gamma 1.35").
    pub shift: String,
    pub real: MetricSet,
    pub pseudo: MetricSet,
    pub agreement: Option<MetricSet>,
}

/// One calibration checkpoint: its real metrics on the calibration set and its pseudo outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointPoint {
    pub name: String,
    /// SHA-256 of the checkpoint's ONNX file, when it came as one: a deployed model with the same digest
    /// is anchored at this checkpoint.
    #[serde(default)]
    pub sha256: Option<String>,
    pub real: MetricSet,
    #[serde(flatten)]
    pub outcome: PseudoOutcome,
    /// Mean atlas agreement over the calibration images.
    #[serde(default)]
    pub agreement: Option<MetricSet>,
    #[serde(default)]
    pub masks: Option<MaskStats>,
    /// Batches of every support level drawn from the calibration set (the whole set is the top level).
    #[serde(default)]
    pub draws: Vec<Draw>,
    /// The whole calibration set under each calibration shift (when the checkpoint came as a model).
    #[serde(default)]
    pub shifted: Vec<ShiftedPoint>,
}

impl CheckpointPoint {
    /// A point known only by its real metrics and pseudo outcome (pairs given by a user, tests).
    pub fn from_pair(name: String, real: MetricSet, outcome: PseudoOutcome) -> Self {
        Self {
            name,
            sha256: None,
            real,
            outcome,
            agreement: None,
            masks: None,
            draws: Vec::new(),
            shifted: Vec::new(),
        }
    }
}

/// The fits for batches of one size (the pseudo metric depends on how many supports it had).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Level {
    /// Images per draw (supports per repetition, before the `min_area` rule).
    pub size: usize,
    pub fits: BTreeMap<Metric, Fit>,
    /// The mappings chosen for anchored estimates ([`Criterion::Anchored`]); empty when no checkpoint has
    /// more than one observation (then `fits` serve).
    #[serde(default)]
    pub anchored_fits: BTreeMap<Metric, Fit>,
}

/// What `spe calibrate` writes and `spe estimate` reads (CAL.json).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub format: String,
    /// The reverse segmenter's `describe()`: estimates must use the same one.
    pub reverse: String,
    pub params: SpeParams,
    /// Images in the calibration set (0 for calibrations fitted from given pairs).
    #[serde(default)]
    pub images: usize,
    pub checkpoints: Vec<CheckpointPoint>,
    /// Checkpoints without a support set, reported and left out of the fit.
    pub excluded: Vec<String>,
    /// The fits of the largest level: the whole calibration set, the paper's protocol.
    pub fits: BTreeMap<Metric, Fit>,
    /// Fits per support level, smallest first.
    pub levels: Vec<Level>,
    /// Per-image distance of the calibration images to the reference set (mean, sd), for warnings.
    #[serde(default)]
    pub distance: Option<[f64; 2]>,
}

pub const CALIBRATION_FORMAT: &str = "spe-calibration/4";

/// What changed since an older calibration format, for the message that asks to calibrate again.
fn older_format(format: &str) -> Option<&'static str> {
    match format {
        "spe-calibration/1" => Some("one mapping for every batch size and min-max intensities"),
        "spe-calibration/2" => {
            Some("pseudo metrics from whole-image intensity ranks; images are now ranked by region")
        }
        "spe-calibration/3" => Some(
            "pseudo metrics from label fusion without a scale search; supports are now also matched at \
             other scales",
        ),
        _ => None,
    }
}

impl Calibration {
    /// Fits every metric at every level over the checkpoints that have a pseudo metric. A checkpoint
    /// without draws (pairs given by a user) contributes its one point at the top level.
    pub fn fit(
        reverse: String,
        params: SpeParams,
        images: usize,
        checkpoints: Vec<CheckpointPoint>,
    ) -> Result<Self, EngineError> {
        let excluded: Vec<String> = checkpoints
            .iter()
            .filter(|cp| matches!(cp.outcome, PseudoOutcome::InsufficientSupport { .. }))
            .map(|cp| cp.name.clone())
            .collect();
        let top = top_level(&params, images);
        let mut draws_by_size: BTreeMap<usize, Vec<(usize, &Draw)>> = BTreeMap::new();
        let mut owned: Vec<(usize, Draw)> = Vec::new();
        for (group, cp) in checkpoints.iter().enumerate() {
            let PseudoOutcome::Ok { pseudo, .. } = &cp.outcome else {
                continue;
            };
            if cp.draws.is_empty() {
                owned.push((
                    group,
                    Draw {
                        size: top,
                        real: cp.real,
                        pseudo: *pseudo,
                        agreement: cp.agreement,
                    },
                ));
            }
        }
        for (group, cp) in checkpoints.iter().enumerate() {
            if matches!(cp.outcome, PseudoOutcome::InsufficientSupport { .. }) {
                continue;
            }
            for d in &cp.draws {
                draws_by_size.entry(d.size).or_default().push((group, d));
            }
        }
        for (group, d) in &owned {
            draws_by_size.entry(d.size).or_default().push((*group, d));
        }
        let usable = checkpoints.len() - excluded.len();
        if usable < MIN_POINTS {
            return Err(EngineError::Calibration(format!(
                "{usable} of {} checkpoints have a support set (predictions with at least {} foreground \
                 pixels); at least {MIN_POINTS} are needed to fit and validate the mapping — add \
                 checkpoints that segment something",
                checkpoints.len(),
                params.min_area
            )));
        }
        let mut levels = Vec::new();
        for (&size, draws) in &draws_by_size {
            let groups: BTreeSet<usize> = draws.iter().map(|(g, _)| *g).collect();
            if groups.len() < MIN_POINTS {
                continue;
            }
            let mut fits = BTreeMap::new();
            let mut anchored_fits = BTreeMap::new();
            let is_top = size == top;
            for metric in Metric::ALL {
                let mut obs: Vec<Observation> = draws
                    .iter()
                    .map(|(group, d)| Observation {
                        pseudo: d.pseudo.get(metric),
                        agreement: d.agreement.map(|a| a.get(metric)),
                        real: d.real.get(metric),
                        group: *group,
                        fitted: true,
                    })
                    .collect();
                if is_top {
                    // The shifted copies were measured like the whole set: they judge the top level.
                    for (group, cp) in checkpoints.iter().enumerate() {
                        if !groups.contains(&group) {
                            continue;
                        }
                        obs.extend(cp.shifted.iter().map(|s| Observation {
                            pseudo: s.pseudo.get(metric),
                            agreement: s.agreement.map(|a| a.get(metric)),
                            real: s.real.get(metric),
                            group,
                            fitted: false,
                        }));
                    }
                }
                fits.insert(metric, fit_observations(metric, &obs, Criterion::Curve)?);
                let mut count: BTreeMap<usize, usize> = BTreeMap::new();
                for o in &obs {
                    *count.entry(o.group).or_default() += 1;
                }
                if count.values().any(|&c| c >= 2) {
                    anchored_fits
                        .insert(metric, fit_observations(metric, &obs, Criterion::Anchored)?);
                }
            }
            levels.push(Level {
                size,
                fits,
                anchored_fits,
            });
        }
        let all_finite = levels
            .iter()
            .flat_map(|l| l.fits.values().chain(l.anchored_fits.values()))
            .all(Fit::is_finite);
        if !all_finite {
            return Err(EngineError::Calibration(
                "these calibration values give a fit with numbers that are not finite; the pseudo and \
                 real metrics must be metric values (dice, jaccard, precision, recall between 0 and 1, \
                 hd95 in pixels)"
                    .into(),
            ));
        }
        let fits = levels
            .last()
            .map(|l| l.fits.clone())
            .ok_or_else(|| EngineError::Calibration("no level could be fitted".into()))?;
        Ok(Self {
            format: CALIBRATION_FORMAT.into(),
            reverse,
            params,
            images,
            checkpoints,
            excluded,
            fits,
            levels,
            distance: None,
        })
    }

    /// Checks a calibration read from outside (file or database) before use.
    pub fn validate(&self) -> Result<(), EngineError> {
        if let Some(why) = older_format(&self.format) {
            return Err(EngineError::Calibration(format!(
                "it was made by an older spe (format {}, {why}); calibrate again",
                self.format
            )));
        }
        if self.format != CALIBRATION_FORMAT {
            return Err(EngineError::Calibration(format!(
                "unknown calibration format {:?}; expected {CALIBRATION_FORMAT:?}",
                self.format
            )));
        }
        if self.fits.is_empty() || self.levels.is_empty() {
            return Err(EngineError::Calibration("it holds no fitted metric".into()));
        }
        self.params.validate()
    }

    /// The checkpoint whose ONNX digest is `sha256`, when the deployed model is one of them.
    pub fn anchor(&self, sha256: &str) -> Option<&CheckpointPoint> {
        self.checkpoints.iter().find(|cp| {
            cp.sha256.as_deref() == Some(sha256) && matches!(cp.outcome, PseudoOutcome::Ok { .. })
        })
    }
}

/// Images per draw at the top level: the whole calibration set, at most `support_size` supports.
pub fn top_level(params: &SpeParams, images: usize) -> usize {
    if images == 0 {
        params.support_size
    } else {
        images.min(params.support_size)
    }
}
