//! The six segmentation metrics, exactly as docs/method.md ("Metric definitions") defines them.
//!
//! G is the label, P the prediction. Ratio metrics come from the confusion counts; HD95 pools the
//! distances between the two contours (8-neighbourhood, the image border counts as outside) measured
//! with an exact Euclidean distance transform, and takes numpy's default (linear) 95th percentile.
//! This runs for every (checkpoint, repetition, image) of a calibration, so it avoids per-pixel
//! allocation, runs the distance transform only over the bounding box of the two contours (which
//! is exact, see `hd95_nonempty`) and does its second pass only on rows that hold a query.

use ndarray::{ArrayView2, Zip};
use serde::{Deserialize, Serialize};

/// One of the metrics the service estimates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Dice,
    Jaccard,
    Precision,
    Recall,
    Hd95,
    Pearson,
}

impl Metric {
    pub const ALL: [Metric; 6] = [
        Metric::Dice,
        Metric::Jaccard,
        Metric::Precision,
        Metric::Recall,
        Metric::Hd95,
        Metric::Pearson,
    ];

    /// The stable lowercase name (also the serde name).
    pub fn name(self) -> &'static str {
        match self {
            Metric::Dice => "dice",
            Metric::Jaccard => "jaccard",
            Metric::Precision => "precision",
            Metric::Recall => "recall",
            Metric::Hd95 => "hd95",
            Metric::Pearson => "pearson",
        }
    }

    /// Parse a metric name; ASCII case and surrounding whitespace are ignored.
    pub fn parse(s: &str) -> Option<Metric> {
        let s = s.trim();
        Metric::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s))
    }

    /// The metric's range: (lower, upper); HD95 has no upper bound. Estimates are clamped to it.
    pub fn bounds(self) -> (f64, Option<f64>) {
        match self {
            Metric::Dice | Metric::Jaccard | Metric::Precision | Metric::Recall => (0.0, Some(1.0)),
            Metric::Hd95 => (0.0, None),
            Metric::Pearson => (-1.0, Some(1.0)),
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// All six metrics of one (label, prediction) pair, or a mean of such.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricSet {
    pub dice: f64,
    pub jaccard: f64,
    pub precision: f64,
    pub recall: f64,
    pub hd95: f64,
    pub pearson: f64,
}

impl MetricSet {
    pub fn get(&self, metric: Metric) -> f64 {
        match metric {
            Metric::Dice => self.dice,
            Metric::Jaccard => self.jaccard,
            Metric::Precision => self.precision,
            Metric::Recall => self.recall,
            Metric::Hd95 => self.hd95,
            Metric::Pearson => self.pearson,
        }
    }

    pub fn set(&mut self, metric: Metric, value: f64) {
        let slot = match metric {
            Metric::Dice => &mut self.dice,
            Metric::Jaccard => &mut self.jaccard,
            Metric::Precision => &mut self.precision,
            Metric::Recall => &mut self.recall,
            Metric::Hd95 => &mut self.hd95,
            Metric::Pearson => &mut self.pearson,
        };
        *slot = value;
    }

    /// Field-wise arithmetic mean. An empty slice gives the all-zero `MetricSet::default()`;
    /// callers that must distinguish "no images" check the length themselves.
    pub fn mean(sets: &[MetricSet]) -> MetricSet {
        let mut out = MetricSet::default();
        if sets.is_empty() {
            return out;
        }
        let n = sets.len() as f64;
        for m in Metric::ALL {
            out.set(m, sets.iter().map(|s| s.get(m)).sum::<f64>() / n);
        }
        out
    }
}

#[cfg(test)]
impl MetricSet {
    /// Every ratio metric (Pearson too) at `ratio`, with the given HD95: a test fixture.
    pub(crate) fn uniform(ratio: f64, hd95: f64) -> MetricSet {
        MetricSet {
            dice: ratio,
            jaccard: ratio,
            precision: ratio,
            recall: ratio,
            hd95,
            pearson: ratio,
        }
    }
}

/// Compute all six metrics of `pred` against `label`.
///
/// `spacing` is the physical size of a pixel as [row, col]; `None` measures HD95 in pixels. It must
/// hold finite positive values. Panics if the two masks differ in shape (a programming error).
pub fn compute(
    label: ArrayView2<bool>,
    pred: ArrayView2<bool>,
    spacing: Option<[f64; 2]>,
) -> MetricSet {
    assert_eq!(
        label.dim(),
        pred.dim(),
        "metrics::compute: label and prediction differ in shape"
    );
    let [sr, sc] = spacing.unwrap_or([1.0, 1.0]);
    debug_assert!(
        sr.is_finite() && sc.is_finite() && sr > 0.0 && sc > 0.0,
        "spacing must be finite and positive"
    );
    let c = Counts::of(label, pred);
    let g_empty = c.tp + c.fn_ == 0;
    let p_empty = c.tp + c.fp == 0;
    let identical = c.fp == 0 && c.fn_ == 0;
    let both_empty = g_empty && p_empty;
    let (tp, fp, fn_) = (c.tp as f64, c.fp as f64, c.fn_ as f64);

    let dice = if both_empty {
        1.0
    } else {
        2.0 * tp / (2.0 * tp + fp + fn_)
    };
    let jaccard = if both_empty {
        1.0
    } else {
        tp / (tp + fp + fn_)
    };
    let precision = if p_empty {
        f64::from(u8::from(g_empty))
    } else {
        tp / (tp + fp)
    };
    let recall = if g_empty {
        f64::from(u8::from(p_empty))
    } else {
        tp / (tp + fn_)
    };

    let (h, w) = label.dim();
    let hd95 = if both_empty || identical {
        // Identical masks have identical contours: every pooled distance is 0.
        0.0
    } else if g_empty || p_empty {
        let (ph, pw) = (h as f64 * sr, w as f64 * sc);
        (ph * ph + pw * pw).sqrt()
    } else {
        hd95_nonempty(label, pred, sr, sc)
    };

    MetricSet {
        dice,
        jaccard,
        precision,
        recall,
        hd95,
        pearson: c.pearson(),
    }
}

/// Confusion counts. u64 so products in `pearson` cannot overflow for any image size we accept.
struct Counts {
    tp: u64,
    fp: u64,
    fn_: u64,
    tn: u64,
}

impl Counts {
    fn of(label: ArrayView2<bool>, pred: ArrayView2<bool>) -> Counts {
        // TP and the two mask sizes are plain sums. On slices (the usual layout) they run in
        // chunks with u32 lanes, which the compiler vectorises; u64 totals avoid any overflow.
        let (mut tp, mut g_pos, mut p_pos) = (0u64, 0u64, 0u64);
        match (label.as_slice(), pred.as_slice()) {
            (Some(gs), Some(ps)) => {
                for (gc, pc) in gs.chunks(1 << 16).zip(ps.chunks(1 << 16)) {
                    let (mut t, mut g, mut p) = (0u32, 0u32, 0u32);
                    for (&a, &b) in gc.iter().zip(pc) {
                        t += u32::from(a & b);
                        g += u32::from(a);
                        p += u32::from(b);
                    }
                    tp += u64::from(t);
                    g_pos += u64::from(g);
                    p_pos += u64::from(p);
                }
            }
            _ => Zip::from(&label).and(&pred).for_each(|&a, &b| {
                tp += u64::from(a & b);
                g_pos += u64::from(a);
                p_pos += u64::from(b);
            }),
        }
        Counts {
            tp,
            fp: p_pos - tp,
            fn_: g_pos - tp,
            tn: label.len() as u64 - (g_pos + p_pos - tp),
        }
    }

    /// Pearson r of the masks as 0/1 vectors, in closed form from the counts. The numerator is an
    /// exact integer, so there is no cancellation; a constant mask gives 1 if G == P else 0.
    fn pearson(&self) -> f64 {
        let n = self.tp + self.fp + self.fn_ + self.tn;
        let g_pos = self.tp + self.fn_;
        let p_pos = self.tp + self.fp;
        let constant = |k: u64| k == 0 || k == n;
        if constant(g_pos) || constant(p_pos) {
            return f64::from(u8::from(self.fp == 0 && self.fn_ == 0));
        }
        let num =
            i128::from(self.tp) * i128::from(self.tn) - i128::from(self.fp) * i128::from(self.fn_);
        // Two square roots keep each product exact in f64 (each factor <= n).
        let den = ((p_pos as f64) * (g_pos as f64)).sqrt()
            * (((n - g_pos) as f64) * ((n - p_pos) as f64)).sqrt();
        num as f64 / den
    }
}

/// HD95 when both masks are non-empty and differ.
fn hd95_nonempty(label: ArrayView2<bool>, pred: ArrayView2<bool>, sr: f64, sc: f64) -> f64 {
    let (h, w) = label.dim();
    let mut contours = Contours::new(h, w);
    let mut g = contours.of(label);
    let mut p = contours.of(pred);
    // Every feature and every query pixel lies in the bounding box of the two contours, so the
    // distance transform restricted to that box is still exact: no nearest contour pixel can lie
    // outside it. (The contours themselves are found on the whole image, border rules included.)
    let (r0, r1) = (g[0].min(p[0]) / w, g[g.len() - 1].max(p[p.len() - 1]) / w);
    let (c0, c1) = g.iter().chain(&p).fold((w, 0), |(lo, hi), &i| {
        let c = i % w;
        (lo.min(c), hi.max(c))
    });
    let (bh, bw) = (r1 - r0 + 1, c1 - c0 + 1);
    for i in g.iter_mut().chain(p.iter_mut()) {
        let (r, c) = (*i / w, *i % w);
        *i = (r - r0) * bw + (c - c0);
    }
    let mut edt = Edt::new(bh, bw);
    let mut dists = Vec::with_capacity(g.len() + p.len());
    // d_G at contour(P) pixels, then d_P at contour(G) pixels, pooled.
    edt.distances(&g, &p, sr, sc, &mut dists);
    edt.distances(&p, &g, sr, sc, &mut dists);
    percentile_linear(&mut dists, 0.95)
}

/// Marker for "no feature in this column" in the first EDT pass.
const NONE: u32 = u32::MAX;

/// Buffers to find contours, reused for both masks.
struct Contours {
    h: usize,
    w: usize,
    /// The current mask as 0/1 bytes (row-major), whatever the input layout.
    mask: Vec<u8>,
    /// Horizontal 3-erosion of `mask` (the 3x3 erosion is separable).
    horiz: Vec<u8>,
    /// One row of contour flags.
    edge: Vec<u8>,
}

impl Contours {
    fn new(h: usize, w: usize) -> Contours {
        Contours {
            h,
            w,
            mask: vec![0; h * w],
            horiz: vec![0; h * w],
            edge: vec![0; w],
        }
    }

    /// Flat row-major indices of the contour of `m`: its pixels with at least one of the 8
    /// neighbours outside it (or outside the image), i.e. `m & !erode3x3(m)` with a false border.
    fn of(&mut self, m: ArrayView2<bool>) -> Vec<usize> {
        let (h, w) = (self.h, self.w);
        match m.as_slice() {
            Some(src) => {
                for (dst, &b) in self.mask.iter_mut().zip(src) {
                    *dst = u8::from(b);
                }
            }
            None => {
                for (dst, &b) in self.mask.iter_mut().zip(m.iter()) {
                    *dst = u8::from(b);
                }
            }
        }
        // Horizontal erosion; the first and last columns erode to 0 (outside counts as outside).
        for (hr, row) in self
            .horiz
            .chunks_exact_mut(w)
            .zip(self.mask.chunks_exact(w))
        {
            hr.fill(0);
            for (d, win) in hr[1..].iter_mut().zip(row.windows(3)) {
                *d = win[0] & win[1] & win[2];
            }
        }
        let mut pts = Vec::new();
        for r in 0..h {
            let row = &self.mask[r * w..(r + 1) * w];
            let edge = &mut self.edge[..w];
            if r == 0 || r + 1 == h {
                edge.copy_from_slice(row);
            } else {
                let (up, mid, down) = (
                    &self.horiz[(r - 1) * w..r * w],
                    &self.horiz[r * w..(r + 1) * w],
                    &self.horiz[(r + 1) * w..(r + 2) * w],
                );
                for ((((e, &x), &u), &m), &d) in edge.iter_mut().zip(row).zip(up).zip(mid).zip(down)
                {
                    *e = x & !(u & m & d);
                }
            }
            for (c, &e) in edge.iter().enumerate() {
                if e != 0 {
                    pts.push(r * w + c);
                }
            }
        }
        pts
    }
}

/// Buffers of the exact distance transform over an h x w grid, reused for both directions.
struct Edt {
    h: usize,
    w: usize,
    /// The feature set (a contour): NONE (all ones) at features, else 0.
    feature: Vec<u32>,
    /// First pass: distance in rows to the nearest feature in the same column, or NONE.
    col: Vec<u32>,
    /// Second-pass buffers of one row: input, column positions, output, envelope sites and
    /// boundaries.
    f: Vec<f64>,
    pos: Vec<f64>,
    out: Vec<f64>,
    v: Vec<usize>,
    z: Vec<f64>,
}

impl Edt {
    fn new(h: usize, w: usize) -> Edt {
        Edt {
            h,
            w,
            feature: vec![0; h * w],
            col: vec![0; h * w],
            f: vec![0.0; w],
            pos: (0..w).map(|c| c as f64).collect(),
            out: vec![0.0; w],
            v: vec![0; w],
            z: vec![0.0; w + 1],
        }
    }

    /// Push, for each query pixel (flat indices in row-major order), the exact Euclidean distance
    /// to the nearest of `features`. Separable exact EDT: a 1-D pass down the columns, then along
    /// each row that holds a query the exact minimum over columns — per query when the row has few
    /// (cheap, vectorised), else the Felzenszwalb–Huttenlocher lower envelope (linear in w).
    fn distances(
        &mut self,
        features: &[usize],
        queries: &[usize],
        sr: f64,
        sc: f64,
        out: &mut Vec<f64>,
    ) {
        let (h, w) = (self.h, self.w);
        self.feature.fill(0);
        for &i in features {
            self.feature[i] = NONE;
        }
        // Column pass, top-down then bottom-up, a row at a time and branch-free so the loops
        // vectorise: `feature` is an all-ones mask, and NONE saturates ("no feature seen yet").
        for (c, &f) in self.col[..w].iter_mut().zip(&self.feature[..w]) {
            *c = !f & NONE;
        }
        for r in 1..h {
            let (above, rest) = self.col.split_at_mut(r * w);
            let above = &above[(r - 1) * w..];
            let feature = &self.feature[r * w..(r + 1) * w];
            for ((c, &a), &f) in rest[..w].iter_mut().zip(above).zip(feature) {
                *c = a.saturating_add(1) & !f;
            }
        }
        for r in (0..h.saturating_sub(1)).rev() {
            let (upto, below) = self.col.split_at_mut((r + 1) * w);
            for (c, &b) in upto[r * w..].iter_mut().zip(&below[..w]) {
                *c = (*c).min(b.saturating_add(1));
            }
        }
        let wc = sc * sc;
        let mut k = 0;
        while k < queries.len() {
            let r = queries[k] / w;
            let n_row = queries[k..].iter().take_while(|&&q| q / w == r).count();
            for (f, &d) in self.f.iter_mut().zip(&self.col[r * w..(r + 1) * w]) {
                *f = if d == NONE {
                    f64::INFINITY
                } else {
                    let y = f64::from(d) * sr;
                    y * y
                };
            }
            let row_queries = &queries[k..k + n_row];
            if n_row <= DENSE_ROW {
                for &q in row_queries {
                    out.push(row_min(&self.f, &self.pos, (q % w) as f64, wc).sqrt());
                }
            } else {
                lower_envelope(&self.f, wc, &mut self.v, &mut self.z, &mut self.out);
                out.extend(row_queries.iter().map(|&q| self.out[q % w].sqrt()));
            }
            k += n_row;
        }
    }
}

/// Above this many queries in a row, one O(w) lower envelope beats O(w) work per query (measured:
/// smooth masks have a few contour pixels per row; this bounds the cost of ragged ones).
const DENSE_ROW: usize = 16;

/// min over c of f[c] + wgt * (q - c)^2, with `pos[c] = c`: the same minimum the envelope finds,
/// by brute force. Four independent accumulators let the compiler use packed min instructions.
fn row_min(f: &[f64], pos: &[f64], q: f64, wgt: f64) -> f64 {
    const LANES: usize = 4;
    let mut best = [f64::INFINITY; LANES];
    let (fc, pc) = (f.chunks_exact(LANES), pos.chunks_exact(LANES));
    let tail = fc.remainder().iter().zip(pc.remainder());
    for (fs, ps) in fc.zip(pc) {
        for j in 0..LANES {
            let d = q - ps[j];
            let v = fs[j] + wgt * d * d;
            best[j] = if v < best[j] { v } else { best[j] };
        }
    }
    let mut m = best.into_iter().fold(f64::INFINITY, f64::min);
    for (&fv, &p) in tail {
        let d = q - p;
        m = m.min(fv + wgt * d * d);
    }
    m
}

/// out[p] = min_q f[q] + wgt * (p - q)^2 over the finite f[q] (Felzenszwalb & Huttenlocher 2012).
/// `v` and `z` hold the envelope's parabola sites and their boundaries (len >= n and n + 1).
fn lower_envelope(f: &[f64], wgt: f64, v: &mut [usize], z: &mut [f64], out: &mut [f64]) {
    let Some(first) = f.iter().position(|x| x.is_finite()) else {
        out.fill(f64::INFINITY);
        return;
    };
    let meet = |q: usize, p: usize| {
        let (qf, pf) = (q as f64, p as f64);
        ((f[q] + wgt * qf * qf) - (f[p] + wgt * pf * pf)) / (2.0 * wgt * (qf - pf))
    };
    let mut k = 0;
    v[0] = first;
    z[0] = f64::NEG_INFINITY;
    z[1] = f64::INFINITY;
    for (q, fq) in f.iter().enumerate().skip(first + 1) {
        if !fq.is_finite() {
            continue;
        }
        let mut s = meet(q, v[k]);
        // z[0] is -inf and s is finite, so k never underflows.
        while s <= z[k] {
            k -= 1;
            s = meet(q, v[k]);
        }
        k += 1;
        v[k] = q;
        z[k] = s;
        z[k + 1] = f64::INFINITY;
    }
    k = 0;
    for (p, o) in out.iter_mut().enumerate() {
        let pf = p as f64;
        while z[k + 1] < pf {
            k += 1;
        }
        let d = pf - v[k] as f64;
        *o = wgt * d * d + f[v[k]];
    }
}

/// numpy's default `percentile` ("linear": virtual index (n-1)q, numpy's two-sided lerp), by
/// selection rather than a full sort. `values` must be non-empty and NaN-free; it is reordered.
fn percentile_linear(values: &mut [f64], q: f64) -> f64 {
    let n = values.len();
    let index = (n - 1) as f64 * q;
    let lo = index.floor() as usize;
    let gamma = index - lo as f64;
    let (_, a, rest) = values.select_nth_unstable_by(lo, f64::total_cmp);
    let a = *a;
    let Some(b) = rest.iter().copied().min_by(f64::total_cmp) else {
        return a;
    };
    let diff = b - a;
    // numpy lerps from the nearer end, which keeps the result monotone in gamma.
    if gamma >= 0.5 {
        b - diff * (1.0 - gamma)
    } else {
        a + diff * gamma
    }
}

#[cfg(test)]
mod tests;
