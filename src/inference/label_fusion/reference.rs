//! The literal method.md formula (docs/method.md, "The label-fusion reverse segmenter"): full 128x128,
//! every support, no alignment, `D_i = blur((q - s_i)^2)` with a plain separable Gaussian and std `exp`.
//! Slow and obvious on purpose: the unit tests check the fast path against it and the benchmark times it
//! as the baseline.

use super::kernels::{blur, gaussian_kernel};
use super::median;
use crate::engine::{EngineError, Mask, SupportSet, SIDE};
use ndarray::{Array2, ArrayView2};

/// Segments every query with locally weighted voting over all supports at SIDE x SIDE.
pub fn segment(
    support: &SupportSet<'_>,
    queries: &[ArrayView2<'_, f32>],
    sigma: f32,
) -> Result<Vec<Mask>, EngineError> {
    super::validate(support, queries)?;
    let kernel = gaussian_kernel(sigma);
    let n = SIDE * SIDE;
    let (mut tmp, mut pad) = (vec![0.0f32; n], vec![0.0f32; SIDE + kernel.len()]);
    let labels: Vec<Vec<bool>> = support
        .labels
        .iter()
        .map(|l| l.iter().copied().collect())
        .collect();
    let mut masks = Vec::with_capacity(queries.len());
    for q in queries {
        let dist: Vec<Vec<f32>> = support
            .images
            .iter()
            .map(|s| {
                let mut d: Vec<f32> = q
                    .iter()
                    .zip(s.iter())
                    .map(|(a, b)| (a - b) * (a - b))
                    .collect();
                blur(&mut d, SIDE, &kernel, &mut tmp, &mut pad);
                d
            })
            .collect();
        let mut all: Vec<f32> = dist.iter().flatten().copied().collect();
        let h = median(&mut all).max(f32::MIN_POSITIVE);
        let mut fused = Array2::<bool>::default((SIDE, SIDE));
        for (p, out) in fused.iter_mut().enumerate() {
            let min = dist.iter().map(|d| d[p]).fold(f32::INFINITY, f32::min);
            let (mut num, mut den) = (0.0f32, 0.0f32);
            for (d, label) in dist.iter().zip(&labels) {
                let w = (-(d[p] - min) / h).exp();
                den += w;
                if label[p] {
                    num += w;
                }
            }
            *out = num / den > 0.5;
        }
        masks.push(fused);
    }
    Ok(masks)
}

/// A deterministic synthetic support/query set for tests and benchmarks: smooth "chest-like" images
/// (a vertical gradient, a bright ellipse standing in for the heart at a random position and size, a few
/// random Gaussian blobs), min-max normalised, with the ellipse as label.
pub fn synthetic_set(count: usize, seed: u64) -> (Vec<Array2<f32>>, Vec<Array2<bool>>) {
    let mut state = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    let mut uniform = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let mut images = Vec::with_capacity(count);
    let mut labels = Vec::with_capacity(count);
    for _ in 0..count {
        let (cy, cx) = (
            70.0 + 20.0 * (uniform() - 0.5),
            64.0 + 20.0 * (uniform() - 0.5),
        );
        let (ry, rx) = (22.0 + 8.0 * uniform(), 28.0 + 10.0 * uniform());
        let contrast = 0.4 + 0.4 * uniform();
        let blobs: Vec<[f32; 4]> = (0..6)
            .map(|_| {
                [
                    128.0 * uniform(),
                    128.0 * uniform(),
                    4.0 + 12.0 * uniform(),
                    uniform() - 0.5,
                ]
            })
            .collect();
        let mut label = Array2::<bool>::default((SIDE, SIDE));
        let mut img = Array2::<f32>::from_shape_fn((SIDE, SIDE), |(y, x)| {
            let (yf, xf) = (y as f32, x as f32);
            let r2 = ((yf - cy) / ry).powi(2) + ((xf - cx) / rx).powi(2);
            let heart = contrast / (1.0 + (8.0 * (r2 - 1.0)).exp());
            let texture: f32 = blobs
                .iter()
                .map(|b| {
                    b[3] * (-((yf - b[0]).powi(2) + (xf - b[1]).powi(2)) / (2.0 * b[2] * b[2]))
                        .exp()
                })
                .sum();
            0.3 * yf / SIDE as f32 + heart + 0.3 * texture
        });
        for ((y, x), l) in label.indexed_iter_mut() {
            *l = ((y as f32 - cy) / ry).powi(2) + ((x as f32 - cx) / rx).powi(2) < 1.0;
        }
        let (lo, hi) = img
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        img.mapv_inplace(|v| (v - lo) / (hi - lo).max(f32::MIN_POSITIVE));
        images.push(img);
        labels.push(label);
    }
    (images, labels)
}
