//! Stage 1's mapping: per metric, a function f with real ~= f(pseudo) fitted over the checkpoints.
//! Candidates are a least-squares line (the paper), a monotone quadratic, a log form (HD95) and isotonic
//! regression; the one with the lowest leave-one-out MAE is kept.

use super::metrics::{Metric, MetricSet};
use super::spe::{PseudoOutcome, SpeParams};
use super::EngineError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Fewer points than this cannot be fitted and validated by leave-one-out.
pub const MIN_POINTS: usize = 3;
/// Flexible forms (quadratic, isotonic) are only tried with at least this many points.
const MIN_POINTS_FLEXIBLE: usize = 5;

/// A fitted mapping from a pseudo value to a real value.
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
            Mapping::Isotonic { x, y } => interpolate(x, y, p),
        }
    }
}

/// The chosen mapping of one metric with its validation figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    /// The pseudo metric the mapping reads (the same metric as the real one it predicts).
    pub input: Metric,
    pub mapping: Mapping,
    /// Leave-one-out mean absolute error of the chosen form.
    pub loo_mae: f64,
    /// Leave-one-out root mean square error; used for the estimate's interval.
    pub loo_rmse: f64,
    /// Pearson r between the pseudo and the real values over the fitted checkpoints (the paper's figure).
    pub pearson_r: f64,
    /// Pearson r between leave-one-out predictions and the real values.
    pub loo_pearson_r: f64,
    pub n_points: usize,
    /// Leave-one-out MAE of every form tried, so the choice can be checked.
    pub candidates: BTreeMap<String, f64>,
}

impl Fit {
    pub fn predict(&self, pseudo: &MetricSet) -> f64 {
        self.mapping.apply(pseudo.get(self.input))
    }
}

/// One calibration checkpoint: its real metrics on the calibration set and its pseudo outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointPoint {
    pub name: String,
    pub real: MetricSet,
    #[serde(flatten)]
    pub outcome: PseudoOutcome,
}

/// What `spe calibrate` writes and `spe estimate` reads (CAL.json).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub format: String,
    /// The reverse segmenter's `describe()`: estimates must use the same one.
    pub reverse: String,
    pub params: SpeParams,
    pub checkpoints: Vec<CheckpointPoint>,
    /// Checkpoints without a support set, reported and left out of the fit.
    pub excluded: Vec<String>,
    pub fits: BTreeMap<Metric, Fit>,
}

pub const CALIBRATION_FORMAT: &str = "spe-calibration/1";

impl Calibration {
    /// Fits every metric over the checkpoints that have a pseudo metric.
    pub fn fit(
        reverse: String,
        params: SpeParams,
        checkpoints: Vec<CheckpointPoint>,
    ) -> Result<Self, EngineError> {
        let mut excluded = Vec::new();
        let mut pairs: Vec<(&MetricSet, &MetricSet)> = Vec::new();
        for cp in &checkpoints {
            match &cp.outcome {
                PseudoOutcome::Ok { pseudo, .. } => pairs.push((pseudo, &cp.real)),
                PseudoOutcome::InsufficientSupport { .. } => excluded.push(cp.name.clone()),
            }
        }
        if pairs.len() < MIN_POINTS {
            return Err(EngineError::Calibration(format!(
                "{} of {} checkpoints have a support set (predictions with at least {} foreground pixels); \
                 at least {MIN_POINTS} are needed to fit and validate the mapping — add checkpoints that \
                 segment something",
                pairs.len(),
                checkpoints.len(),
                params.min_area
            )));
        }
        let mut fits = BTreeMap::new();
        for metric in Metric::ALL {
            let x: Vec<f64> = pairs.iter().map(|(p, _)| p.get(metric)).collect();
            let y: Vec<f64> = pairs.iter().map(|(_, r)| r.get(metric)).collect();
            fits.insert(metric, fit_metric(metric, &x, &y)?);
        }
        Ok(Self {
            format: CALIBRATION_FORMAT.into(),
            reverse,
            params,
            checkpoints,
            excluded,
            fits,
        })
    }

    /// Checks a calibration read from outside (file or database) before use.
    pub fn validate(&self) -> Result<(), EngineError> {
        if self.format != CALIBRATION_FORMAT {
            return Err(EngineError::Calibration(format!(
                "unknown calibration format {:?}; expected {CALIBRATION_FORMAT:?}",
                self.format
            )));
        }
        if self.fits.is_empty() {
            return Err(EngineError::Calibration("it holds no fitted metric".into()));
        }
        self.params.validate()
    }
}

/// Fits one metric: tries every applicable form and keeps the lowest leave-one-out MAE
/// (ties go to the simpler form, which is tried first).
pub fn fit_metric(metric: Metric, x: &[f64], y: &[f64]) -> Result<Fit, EngineError> {
    let n = x.len();
    if n < MIN_POINTS {
        return Err(EngineError::Calibration(format!(
            "{}: {n} points, at least {MIN_POINTS} needed",
            metric.name()
        )));
    }
    if x.iter().chain(y).any(|v| !v.is_finite()) {
        return Err(EngineError::Calibration(format!(
            "{}: non-finite values among the calibration points",
            metric.name()
        )));
    }
    let mut forms: Vec<Form> = vec![Form::Linear];
    if metric == Metric::Hd95 {
        forms.push(Form::Log);
    }
    if n >= MIN_POINTS_FLEXIBLE {
        forms.push(Form::Quadratic);
        forms.push(Form::Isotonic);
    }
    let mut best: Option<(Form, f64, f64, Vec<f64>)> = None;
    let mut candidates = BTreeMap::new();
    for form in forms {
        let Some(loo) = leave_one_out(form, x, y) else {
            continue;
        };
        let mae = loo.iter().zip(y).map(|(p, t)| (p - t).abs()).sum::<f64>() / n as f64;
        let rmse = (loo.iter().zip(y).map(|(p, t)| (p - t).powi(2)).sum::<f64>() / n as f64).sqrt();
        candidates.insert(form.name().to_string(), mae);
        if best.as_ref().is_none_or(|b| mae < b.1 - 1e-12) {
            best = Some((form, mae, rmse, loo));
        }
    }
    let (form, loo_mae, loo_rmse, loo) = best.ok_or_else(|| {
        EngineError::Calibration(format!(
            "{}: the pseudo values do not vary across checkpoints, so no mapping can be fitted",
            metric.name()
        ))
    })?;
    let mapping = form.fit(x, y).ok_or_else(|| {
        EngineError::Calibration(format!("{}: the {} fit failed", metric.name(), form.name()))
    })?;
    Ok(Fit {
        input: metric,
        mapping,
        loo_mae,
        loo_rmse,
        pearson_r: pearson(x, y),
        loo_pearson_r: pearson(&loo, y),
        n_points: n,
        candidates,
    })
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Form {
    Linear,
    Log,
    Quadratic,
    Isotonic,
}

impl Form {
    fn name(self) -> &'static str {
        match self {
            Form::Linear => "linear",
            Form::Log => "log",
            Form::Quadratic => "quadratic",
            Form::Isotonic => "isotonic",
        }
    }

    fn fit(self, x: &[f64], y: &[f64]) -> Option<Mapping> {
        match self {
            Form::Linear => {
                let (intercept, slope) = least_squares_line(x, y)?;
                Some(Mapping::Linear { intercept, slope })
            }
            Form::Log => {
                let lx: Vec<f64> = x.iter().map(|v| (1.0 + v.max(0.0)).ln()).collect();
                let (intercept, slope) = least_squares_line(&lx, y)?;
                Some(Mapping::Log { intercept, slope })
            }
            Form::Quadratic => fit_monotone_quadratic(x, y),
            Form::Isotonic => fit_isotonic(x, y),
        }
    }
}

/// Predictions for each point from a fit over all the others; None when some fold cannot be fitted.
fn leave_one_out(form: Form, x: &[f64], y: &[f64]) -> Option<Vec<f64>> {
    (0..x.len())
        .map(|i| {
            let xs: Vec<f64> = x
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, v)| *v)
                .collect();
            let ys: Vec<f64> = y
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, v)| *v)
                .collect();
            form.fit(&xs, &ys).map(|m| m.apply(x[i]))
        })
        .collect()
}

fn least_squares_line(x: &[f64], y: &[f64]) -> Option<(f64, f64)> {
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let sxx: f64 = x.iter().map(|v| (v - mx).powi(2)).sum();
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    if sxx <= 1e-18 {
        return None;
    }
    let slope = sxy / sxx;
    Some((my - slope * mx, slope))
}

/// Least-squares quadratic, kept only when monotone over the data's range (a fold-back would map
/// a better pseudo value to a worse estimate).
fn fit_monotone_quadratic(x: &[f64], y: &[f64]) -> Option<Mapping> {
    let lo = x.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if hi - lo <= 1e-12 || x.len() < 3 {
        return None;
    }
    // Solve on a centred, scaled variable for conditioning, then expand back.
    let c = (lo + hi) / 2.0;
    let s = (hi - lo) / 2.0;
    let mut ata = [[0.0f64; 3]; 3];
    let mut aty = [0.0f64; 3];
    for (&xi, &yi) in x.iter().zip(y) {
        let u = (xi - c) / s;
        let row = [1.0, u, u * u];
        for r in 0..3 {
            aty[r] += row[r] * yi;
            for k in 0..3 {
                ata[r][k] += row[r] * row[k];
            }
        }
    }
    let [b0, b1, b2] = solve3(ata, aty)?;
    // y = b0 + b1 u + b2 u^2 with u = (x - c)/s
    let c2 = b2 / (s * s);
    let c1 = b1 / s - 2.0 * b2 * c / (s * s);
    let c0 = b0 - b1 * c / s + b2 * c * c / (s * s);
    let d_lo = c1 + 2.0 * c2 * lo;
    let d_hi = c1 + 2.0 * c2 * hi;
    if d_lo * d_hi < 0.0 {
        return None;
    }
    Some(Mapping::Quadratic {
        coefficients: [c0, c1, c2],
        range: [lo, hi],
    })
}

fn solve3(mut a: [[f64; 3]; 3], mut b: [f64; 3]) -> Option<[f64; 3]> {
    for col in 0..3 {
        let pivot = (col..3).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in 0..3 {
            if row != col {
                let f = a[row][col] / a[col][col];
                let pivot_row = a[col];
                for (value, p) in a[row].iter_mut().zip(pivot_row) {
                    *value -= f * p;
                }
                b[row] -= f * b[col];
            }
        }
    }
    Some([b[0] / a[0][0], b[1] / a[1][1], b[2] / a[2][2]])
}

/// Pool-adjacent-violators in the direction of the linear trend.
fn fit_isotonic(x: &[f64], y: &[f64]) -> Option<Mapping> {
    let (_, slope) = least_squares_line(x, y)?;
    let sign = if slope >= 0.0 { 1.0 } else { -1.0 };
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    // Blocks of (sum of y*sign, count, sum of x).
    let mut blocks: Vec<(f64, f64, f64)> = Vec::new();
    for &i in &order {
        blocks.push((sign * y[i], 1.0, x[i]));
        while blocks.len() >= 2 {
            let (s1, n1, x1) = blocks[blocks.len() - 2];
            let (s2, n2, x2) = blocks[blocks.len() - 1];
            if s1 / n1 <= s2 / n2 {
                break;
            }
            blocks.truncate(blocks.len() - 2);
            blocks.push((s1 + s2, n1 + n2, x1 + x2));
        }
    }
    let mut xs = Vec::with_capacity(blocks.len());
    let mut ys = Vec::with_capacity(blocks.len());
    for (s, n, sx) in blocks {
        xs.push(sx / n);
        ys.push(sign * s / n);
    }
    if xs.len() < 2 {
        return None;
    }
    Some(Mapping::Isotonic { x: xs, y: ys })
}

fn interpolate(xs: &[f64], ys: &[f64], p: f64) -> f64 {
    if p <= xs[0] {
        return ys[0];
    }
    let last = xs.len() - 1;
    if p >= xs[last] {
        return ys[last];
    }
    let k = xs.partition_point(|&v| v <= p);
    let (x0, x1, y0, y1) = (xs[k - 1], xs[k], ys[k - 1], ys[k]);
    if x1 - x0 <= 0.0 {
        return y1;
    }
    y0 + (y1 - y0) * (p - x0) / (x1 - x0)
}

/// Pearson correlation; 0 when either side is constant.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    if x.len() < 2 {
        return 0.0;
    }
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let sxx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let syy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
    if sxx <= 0.0 || syy <= 0.0 {
        return 0.0;
    }
    sxy / (sxx * syy).sqrt()
}

#[cfg(test)]
mod tests;
