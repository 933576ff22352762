//! Stage 1's mapping: per metric, a function f with real ~= f(score) fitted over calibration draws.
//!
//! The score a mapping reads is the pseudo metric, the atlas agreement (see [`super::spe::atlas_agreement`])
//! or a mix of the two; the forms are a least-squares line (the paper), a monotone quadratic, a log form
//! (HD95) and isotonic regression. The candidate with the lowest leave-one-checkpoint-out MAE is kept:
//! draws of one checkpoint share its masks, so they are held out together.

mod forms;

use super::metrics::{Metric, MetricSet};
use super::spe::{PseudoOutcome, SpeParams};
use super::EngineError;
pub use forms::pearson;
use forms::Form;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Fewer checkpoints than this cannot be fitted and validated by leave-one-out.
pub const MIN_POINTS: usize = 3;
/// Flexible forms (quadratic, isotonic) are only tried with at least this many checkpoints.
const MIN_POINTS_FLEXIBLE: usize = 5;
/// Weights of the atlas agreement in the mixed score `(1 - w) pseudo + w agreement` that are tried.
const AGREEMENT_WEIGHTS: [f64; 5] = [0.0, 0.25, 0.5, 0.75, 1.0];

/// A fitted mapping from a score to a real value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mapping {
    /// real = intercept + slope * pseudo
    Linear { intercept: f64, slope: f64 },
    /// real = c0 + c1 p + c2 p^2 on the fitted range [lo, hi] (monotone there), continued linearly outside.
    Quadratic {
        coefficients: [f64; 3],
        range: [f64; 2],
    },
    /// real = intercept + slope * ln(1 + pseudo); for HD95, whose errors grow multiplicatively.
    Log { intercept: f64, slope: f64 },
    /// Monotone step-free interpolation through the pool-adjacent-violators solution; flat outside.
    Isotonic { x: Vec<f64>, y: Vec<f64> },
}

impl Mapping {
    pub fn name(&self) -> &'static str {
        match self {
            Mapping::Linear { .. } => "linear",
            Mapping::Quadratic { .. } => "quadratic",
            Mapping::Log { .. } => "log",
            Mapping::Isotonic { .. } => "isotonic",
        }
    }

    pub fn apply(&self, p: f64) -> f64 {
        match self {
            Mapping::Linear { intercept, slope } => intercept + slope * p,
            Mapping::Quadratic {
                coefficients: [c0, c1, c2],
                range: [lo, hi],
            } => {
                let q = |x: f64| c0 + c1 * x + c2 * x * x;
                let dq = |x: f64| c1 + 2.0 * c2 * x;
                if p < *lo {
                    q(*lo) + dq(*lo) * (p - lo)
                } else if p > *hi {
                    q(*hi) + dq(*hi) * (p - hi)
                } else {
                    q(p)
                }
            }
            Mapping::Log { intercept, slope } => intercept + slope * (1.0 + p.max(0.0)).ln(),
            Mapping::Isotonic { x, y } => forms::interpolate(x, y, p),
        }
    }
}

/// The chosen mapping of one metric with its validation figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    /// The metric whose pseudo value and agreement the mapping reads (the one it predicts).
    pub input: Metric,
    /// Weight w of the atlas agreement in the score `(1 - w) pseudo + w agreement` (0: the pseudo metric
    /// alone, as in the paper).
    #[serde(default)]
    pub agreement_weight: f64,
    pub mapping: Mapping,
    /// Leave-one-checkpoint-out mean absolute error of the chosen candidate.
    pub loo_mae: f64,
    /// Leave-one-checkpoint-out root mean square error.
    pub loo_rmse: f64,
    /// Root mean square of the leave-one-checkpoint-out residuals after removing each checkpoint's mean
    /// residual: the error left once a checkpoint's own offset is known (anchored estimates).
    #[serde(default)]
    pub within_rmse: f64,
    /// Root mean square leave-one-checkpoint-out error on the shift-augmented copies (after each
    /// checkpoint's own offset, for anchored fits): what a changed batch adds to the error.
    #[serde(default)]
    pub shift_rmse: f64,
    /// Pearson r between the score and the real values over the fitted points (the paper's figure).
    pub pearson_r: f64,
    /// Pearson r between leave-one-out predictions and the real values.
    pub loo_pearson_r: f64,
    pub n_points: usize,
    /// Leave-one-checkpoint-out MAE of every candidate tried (`form` or `form@w` for a mixed score).
    pub candidates: BTreeMap<String, f64>,
}

impl Fit {
    /// The mapped value for a batch's pseudo metrics and atlas agreement.
    pub fn predict(&self, pseudo: &MetricSet, agreement: Option<&MetricSet>) -> f64 {
        self.predict_values(pseudo.get(self.input), agreement.map(|a| a.get(self.input)))
    }

    fn predict_values(&self, pseudo: f64, agreement: Option<f64>) -> f64 {
        self.mapping
            .apply(score(pseudo, agreement, self.agreement_weight))
    }
}

/// The mixed score; without an agreement only the pseudo metric is available.
fn score(pseudo: f64, agreement: Option<f64>, weight: f64) -> f64 {
    match agreement {
        Some(a) if weight > 0.0 => (1.0 - weight) * pseudo + weight * a,
        _ => pseudo,
    }
}

/// One calibration observation of one metric: a batch drawn from the calibration set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation {
    pub pseudo: f64,
    pub agreement: Option<f64>,
    pub real: f64,
    /// The checkpoint it came from (held out together).
    pub group: usize,
    /// Fitted on (a draw from the calibration set) or only judged by (a shifted copy of it: how the
    /// estimate anchored at this checkpoint follows a change of images).
    pub fitted: bool,
}

/// What a candidate mapping is chosen by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Criterion {
    /// Leave-one-checkpoint-out error of the curve itself (estimates of models that are no checkpoint).
    Curve,
    /// Leave-one-checkpoint-out error once each checkpoint's own mean residual is removed: how well the
    /// mapping's changes follow the real changes within a checkpoint (anchored estimates).
    Anchored,
}

/// Fits one metric over one point per checkpoint (`x` pseudo values, `y` real values).
pub fn fit_metric(metric: Metric, x: &[f64], y: &[f64]) -> Result<Fit, EngineError> {
    let obs: Vec<Observation> = x
        .iter()
        .zip(y)
        .enumerate()
        .map(|(group, (&pseudo, &real))| Observation {
            pseudo,
            agreement: None,
            real,
            group,
            fitted: true,
        })
        .collect();
    fit_observations(metric, &obs, Criterion::Curve)
}

/// Fits one metric: tries every applicable candidate and keeps the lowest leave-one-checkpoint-out MAE
/// (ties go to the simpler candidate, which is tried first).
pub fn fit_observations(
    metric: Metric,
    obs: &[Observation],
    criterion: Criterion,
) -> Result<Fit, EngineError> {
    let groups: BTreeSet<usize> = obs.iter().filter(|o| o.fitted).map(|o| o.group).collect();
    let n_groups = groups.len();
    if n_groups < MIN_POINTS {
        return Err(EngineError::Calibration(format!(
            "{}: {n_groups} points, at least {MIN_POINTS} needed",
            metric.name()
        )));
    }
    let finite = obs.iter().all(|o| {
        o.pseudo.is_finite() && o.real.is_finite() && o.agreement.is_none_or(f64::is_finite)
    });
    if !finite {
        return Err(EngineError::Calibration(format!(
            "{}: non-finite values among the calibration points",
            metric.name()
        )));
    }
    let mut forms: Vec<Form> = vec![Form::Linear];
    if metric == Metric::Hd95 {
        forms.push(Form::Log);
    }
    if n_groups >= MIN_POINTS_FLEXIBLE {
        forms.push(Form::Quadratic);
        forms.push(Form::Isotonic);
    }
    let weights: &[f64] = if obs.iter().all(|o| o.agreement.is_some()) {
        &AGREEMENT_WEIGHTS
    } else {
        &AGREEMENT_WEIGHTS[..1]
    };
    let y: Vec<f64> = obs.iter().map(|o| o.real).collect();
    let mut best: Option<(Form, f64, f64, Vec<f64>)> = None;
    let mut candidates = BTreeMap::new();
    for &weight in weights {
        let x: Vec<f64> = obs
            .iter()
            .map(|o| score(o.pseudo, o.agreement, weight))
            .collect();
        for &form in &forms {
            let Some(loo) = leave_one_group_out(form, &x, &y, obs) else {
                continue;
            };
            let residuals: Vec<f64> = y.iter().zip(&loo).map(|(t, p)| t - p).collect();
            let mae = match criterion {
                Criterion::Curve => mean(
                    residuals
                        .iter()
                        .zip(obs)
                        .filter(|(_, o)| o.fitted)
                        .map(|(r, _)| r.abs()),
                ),
                Criterion::Anchored => anchored_mae(&residuals, obs),
            };
            let name = if weight > 0.0 {
                format!("{}@{weight}", form.name())
            } else {
                form.name().to_string()
            };
            candidates.insert(name, mae);
            if best.as_ref().is_none_or(|b| mae < b.2 - 1e-12) {
                best = Some((form, weight, mae, loo));
            }
        }
    }
    let (form, weight, _, loo) = best.ok_or_else(|| {
        EngineError::Calibration(format!(
            "{}: the pseudo values do not vary across checkpoints, so no mapping can be fitted",
            metric.name()
        ))
    })?;
    let x: Vec<f64> = obs
        .iter()
        .map(|o| score(o.pseudo, o.agreement, weight))
        .collect();
    let mapping = form.fit(&x, &y).ok_or_else(|| {
        EngineError::Calibration(format!("{}: the {} fit failed", metric.name(), form.name()))
    })?;
    let residuals: Vec<f64> = y.iter().zip(&loo).map(|(t, p)| t - p).collect();
    let fitted: Vec<usize> = (0..obs.len()).filter(|&i| obs[i].fitted).collect();
    let pick = |v: &[f64]| fitted.iter().map(|&i| v[i]).collect::<Vec<f64>>();
    let (xf, yf, lf) = (pick(&x), pick(&y), pick(&loo));
    Ok(Fit {
        input: metric,
        agreement_weight: weight,
        mapping,
        loo_mae: mean(yf.iter().zip(&lf).map(|(t, p)| (t - p).abs())),
        loo_rmse: mean(yf.iter().zip(&lf).map(|(t, p)| (t - p).powi(2))).sqrt(),
        within_rmse: within_rmse(&residuals, obs),
        shift_rmse: shift_rmse(&residuals, obs, criterion),
        pearson_r: pearson(&xf, &yf),
        loo_pearson_r: pearson(&lf, &yf),
        n_points: fitted.len(),
        candidates,
    })
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

/// Each checkpoint's mean residual over its fitted observations (its anchor offset).
fn group_offsets(residuals: &[f64], obs: &[Observation]) -> BTreeMap<usize, f64> {
    let mut sums: BTreeMap<usize, (f64, usize)> = BTreeMap::new();
    for (r, o) in residuals.iter().zip(obs).filter(|(_, o)| o.fitted) {
        let e = sums.entry(o.group).or_default();
        e.0 += r;
        e.1 += 1;
    }
    sums.into_iter()
        .map(|(g, (sum, n))| (g, sum / n as f64))
        .collect()
}

/// Mean absolute residual once each checkpoint's mean residual over its fitted observations (the anchor
/// offset) is removed, over checkpoints with more than one observation; 0 when there are none.
fn anchored_mae(residuals: &[f64], obs: &[Observation]) -> f64 {
    let offsets = group_offsets(residuals, obs);
    let mut count: BTreeMap<usize, usize> = BTreeMap::new();
    for o in obs {
        *count.entry(o.group).or_default() += 1;
    }
    mean(
        residuals
            .iter()
            .zip(obs)
            .filter(|(_, o)| count[&o.group] >= 2)
            .filter_map(|(r, o)| offsets.get(&o.group).map(|offset| (r - offset).abs())),
    )
}

/// RMS of the residuals of the observations only judged by (shifted copies), after their checkpoint's
/// offset when the fit is for anchored estimates.
fn shift_rmse(residuals: &[f64], obs: &[Observation], criterion: Criterion) -> f64 {
    let offsets = group_offsets(residuals, obs);
    let errors = residuals
        .iter()
        .zip(obs)
        .filter(|(_, o)| !o.fitted)
        .map(|(r, o)| {
            let offset = match (criterion, offsets.get(&o.group)) {
                (Criterion::Anchored, Some(&offset)) => offset,
                _ => 0.0,
            };
            (r - offset).powi(2)
        });
    mean(errors).sqrt()
}

/// RMS of the fitted residuals around their checkpoint's mean (degrees of freedom corrected per
/// checkpoint).
fn within_rmse(residuals: &[f64], obs: &[Observation]) -> f64 {
    let mut by_group: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for (r, o) in residuals.iter().zip(obs).filter(|(_, o)| o.fitted) {
        by_group.entry(o.group).or_default().push(*r);
    }
    let (mut ss, mut dof) = (0.0, 0usize);
    for rs in by_group.values().filter(|rs| rs.len() >= 2) {
        let m = rs.iter().sum::<f64>() / rs.len() as f64;
        ss += rs.iter().map(|r| (r - m).powi(2)).sum::<f64>();
        dof += rs.len() - 1;
    }
    if dof == 0 {
        0.0
    } else {
        (ss / dof as f64).sqrt()
    }
}

/// Predictions for each observation from a fit over the other checkpoints' observations; None when some
/// fold cannot be fitted.
fn leave_one_group_out(form: Form, x: &[f64], y: &[f64], obs: &[Observation]) -> Option<Vec<f64>> {
    let groups: BTreeSet<usize> = obs.iter().map(|o| o.group).collect();
    let mut out = vec![f64::NAN; x.len()];
    for g in groups {
        let (xs, ys): (Vec<f64>, Vec<f64>) = obs
            .iter()
            .zip(x.iter().zip(y))
            .filter(|(o, _)| o.fitted && o.group != g)
            .map(|(_, (a, b))| (*a, *b))
            .unzip();
        let mapping = form.fit(&xs, &ys)?;
        for (i, o) in obs.iter().enumerate() {
            if o.group == g {
                out[i] = mapping.apply(x[i]);
            }
        }
    }
    Some(out)
}

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

pub const CALIBRATION_FORMAT: &str = "spe-calibration/2";

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
        if self.format == "spe-calibration/1" {
            return Err(EngineError::Calibration(
                "it was made by an older spe (format spe-calibration/1, one mapping for every batch size \
                 and min-max intensities); calibrate again: estimates now use a mapping per support count"
                    .into(),
            ));
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

#[cfg(test)]
mod tests;
