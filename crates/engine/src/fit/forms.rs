//! The one-dimensional mapping forms and their least-squares fits.

use super::Mapping;

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Form {
    Linear,
    Log,
    Quadratic,
    Isotonic,
}

impl Form {
    pub(super) fn name(self) -> &'static str {
        match self {
            Form::Linear => "linear",
            Form::Log => "log",
            Form::Quadratic => "quadratic",
            Form::Isotonic => "isotonic",
        }
    }

    pub(super) fn fit(self, x: &[f64], y: &[f64]) -> Option<Mapping> {
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

pub(super) fn least_squares_line(x: &[f64], y: &[f64]) -> Option<(f64, f64)> {
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
pub(super) fn fit_monotone_quadratic(x: &[f64], y: &[f64]) -> Option<Mapping> {
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
pub(super) fn fit_isotonic(x: &[f64], y: &[f64]) -> Option<Mapping> {
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

pub(super) fn interpolate(xs: &[f64], ys: &[f64], p: f64) -> f64 {
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
