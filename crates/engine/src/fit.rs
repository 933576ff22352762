//! Stage 1's mapping: per metric, a function f with real ~= f(score) fitted over calibration draws.
//!
//! The score a mapping reads is the pseudo metric, the atlas agreement (see [`super::spe::atlas_agreement`])
//! or a mix of the two; the forms are a least-squares line (the paper), a monotone quadratic, a log form
//! (HD95) and isotonic regression. The candidate with the lowest leave-one-checkpoint-out MAE is kept:
//! draws of one checkpoint share its masks, so they are held out together.

mod calibration;
mod forms;

use super::metrics::{Metric, MetricSet};
use super::EngineError;
pub use calibration::{
    top_level, Calibration, CheckpointPoint, Draw, Level, MaskStats, ShiftedPoint,
    CALIBRATION_FORMAT,
};
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
    /// For anchored estimates: how much of the mapped change from the anchor is real change, the slope of
    /// the real values on the mapped ones within checkpoints (leave-one-checkpoint-out predictions, around
    /// each checkpoint's mean; shifted copies included). Below 1 where the score's variation within a
    /// checkpoint is mostly noise (small batches, a steep stretch of the curve). 1 for curve fits.
    #[serde(default = "unit_slope")]
    pub within_slope: f64,
    /// How much single checkpoints' within slopes spread around `within_slope`: an estimate that moves far
    /// from its anchor carries this uncertainty times the distance (0 for curve fits).
    #[serde(default)]
    pub within_slope_sd: f64,
    /// Pearson r between the score and the real values over the fitted points (the paper's figure).
    pub pearson_r: f64,
    /// Pearson r between leave-one-out predictions and the real values.
    pub loo_pearson_r: f64,
    pub n_points: usize,
    /// Leave-one-checkpoint-out MAE of every candidate tried (`form` or `form@w` for a mixed score).
    pub candidates: BTreeMap<String, f64>,
}

impl Mapping {
    /// Every number of the mapping is finite (JSON cannot hold the others).
    fn is_finite(&self) -> bool {
        match self {
            Mapping::Linear { intercept, slope } | Mapping::Log { intercept, slope } => {
                intercept.is_finite() && slope.is_finite()
            }
            Mapping::Quadratic {
                coefficients,
                range,
            } => coefficients.iter().chain(range).all(|v| v.is_finite()),
            Mapping::Isotonic { x, y } => x.iter().chain(y).all(|v| v.is_finite()),
        }
    }
}

impl Fit {
    /// Every number of the fit is finite: finite but extreme calibration values (pseudo Dice 1e245) can
    /// overflow in the fit, and a stored calibration holding infinities could not be read back.
    pub fn is_finite(&self) -> bool {
        self.mapping.is_finite()
            && [
                self.agreement_weight,
                self.loo_mae,
                self.loo_rmse,
                self.within_rmse,
                self.shift_rmse,
                self.within_slope,
                self.within_slope_sd,
                self.pearson_r,
                self.loo_pearson_r,
            ]
            .iter()
            .chain(self.candidates.values())
            .all(|v| v.is_finite())
    }

    /// The mapped value for a batch's pseudo metrics and atlas agreement.
    pub fn predict(&self, pseudo: &MetricSet, agreement: Option<&MetricSet>) -> f64 {
        self.predict_values(pseudo.get(self.input), agreement.map(|a| a.get(self.input)))
    }

    /// The score the mapping reads for these pseudo metrics and atlas agreement (the x of a calibration
    /// plot): the pseudo metric, or its mix with the agreement when the fit weights it.
    pub fn score(&self, pseudo: &MetricSet, agreement: Option<&MetricSet>) -> f64 {
        score(
            pseudo.get(self.input),
            agreement.map(|a| a.get(self.input)),
            self.agreement_weight,
        )
    }

    fn predict_values(&self, pseudo: f64, agreement: Option<f64>) -> f64 {
        self.mapping
            .apply(score(pseudo, agreement, self.agreement_weight))
    }
}

fn unit_slope() -> f64 {
    1.0
}

/// Range of [`Fit::within_slope`]: never an amplifier of more than half again.
const WITHIN_SLOPE_MAX: f64 = 1.5;

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
    // The candidate is chosen as it reads the curve; how much of its change within a checkpoint to
    // trust is measured after (choosing both together let the shifted copies alone pick the top level).
    let (slope, slope_sd) = match criterion {
        Criterion::Curve => (1.0, 0.0),
        Criterion::Anchored => within_slope(&loo, &y, obs),
    };
    let loo = shrink_within(&loo, obs, slope);
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
        within_slope: slope,
        within_slope_sd: slope_sd,
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

/// Each checkpoint's mean of `residuals` (or any per-observation value) over its fitted observations: for
/// residuals, its anchor offset.
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

/// Least-squares slope through the origin of the real values on the predictions, both taken around
/// their checkpoint's mean over its fitted observations (1 when nothing varies within checkpoints), and
/// how much the checkpoints' own slopes spread around it (their standard deviation, each weighted by its
/// checkpoint's variation in the predictions).
fn within_slope(predicted: &[f64], real: &[f64], obs: &[Observation]) -> (f64, f64) {
    let (mp, mr) = (group_offsets(predicted, obs), group_offsets(real, obs));
    let mut sums: BTreeMap<usize, (f64, f64)> = BTreeMap::new();
    for (i, o) in obs.iter().enumerate() {
        let (Some(p0), Some(r0)) = (mp.get(&o.group), mr.get(&o.group)) else {
            continue;
        };
        let (x, y) = (predicted[i] - p0, real[i] - r0);
        let e = sums.entry(o.group).or_default();
        e.0 += x * y;
        e.1 += x * x;
    }
    let (sxy, sxx) = sums
        .values()
        .fold((0.0, 0.0), |(a, b), (xy, xx)| (a + xy, b + xx));
    if sxx <= 1e-18 {
        return (1.0, 0.0);
    }
    let slope = (sxy / sxx).clamp(0.0, WITHIN_SLOPE_MAX);
    let spread = sums
        .values()
        .filter(|(_, xx)| *xx > 1e-18)
        .map(|(xy, xx)| xx * (xy / xx - slope).powi(2))
        .sum::<f64>()
        / sxx;
    (slope, spread.sqrt())
}

/// Predictions moved toward their checkpoint's mean prediction: mean + slope * (prediction - mean).
fn shrink_within(predicted: &[f64], obs: &[Observation], slope: f64) -> Vec<f64> {
    if slope == 1.0 {
        return predicted.to_vec();
    }
    let means = group_offsets(predicted, obs);
    predicted
        .iter()
        .zip(obs)
        .map(|(p, o)| match means.get(&o.group) {
            Some(m) => m + slope * (p - m),
            None => *p,
        })
        .collect()
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

#[cfg(test)]
mod tests;
