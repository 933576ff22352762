//! Geometric normalisation beyond translation: each batch (or calibration) image is brought to the pose
//! (rotation and scale about the centre) in which it best matches its nearest reference images, and its
//! predicted mask moves with it. A rotated or zoomed acquisition then meets the reverse segmenter in the
//! reference set's pose, so "the image is posed differently" is not read as "the mask is wrong"; the mask's
//! agreement with the image is unchanged by moving both.

use super::{Gray, Mask, SIDE};
use ndarray::Array2;

/// A rotation (degrees, counter-clockwise) and scale (>1 enlarges the content) about the image centre.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pose {
    pub degrees: f32,
    pub scale: f32,
}

impl Pose {
    pub const IDENTITY: Pose = Pose {
        degrees: 0.0,
        scale: 1.0,
    };

    pub fn is_identity(&self) -> bool {
        *self == Self::IDENTITY
    }
}

/// Rotations and scales searched (within what acquisitions vary by).
const DEGREES: [f32; 5] = [-12.0, -6.0, 0.0, 6.0, 12.0];
const SCALES: [f32; 7] = [0.78, 0.85, 0.92, 1.0, 1.09, 1.18, 1.28];
/// A pose other than the identity must match this much better (relative), so clean images stay as
/// they are instead of being resampled for noise-level gains.
const MARGIN: f32 = 0.08;
/// Nearest references compared, and how many of their best matches are averaged.
const NEAREST: usize = 8;
const BEST: usize = 3;
/// Side of the thumbnails matched, and the translation searched at that size (pixels).
pub const THUMB: usize = 32;
const SHIFT: i32 = 4;

/// 4x4 means of a SIDE x SIDE image.
pub fn thumbnail(image: &Gray) -> Vec<f32> {
    let step = SIDE / THUMB;
    let mut out = vec![0.0f32; THUMB * THUMB];
    for ((y, x), v) in image.indexed_iter() {
        out[(y / step) * THUMB + x / step] += v;
    }
    let area = (step * step) as f32;
    out.iter_mut().for_each(|v| *v /= area);
    out
}

/// Where output pixel (y, x) of a `side` x `side` image reads from under `pose`.
fn source(pose: Pose, side: usize, y: usize, x: usize) -> (f32, f32) {
    let c = (side as f32 - 1.0) / 2.0;
    let (s, co) = pose.degrees.to_radians().sin_cos();
    let (dy, dx) = (y as f32 - c, x as f32 - c);
    // Inverse of "rotate by degrees, then scale": rotate back and shrink.
    let sy = (co * dy - s * dx) / pose.scale;
    let sx = (s * dy + co * dx) / pose.scale;
    (c + sy, c + sx)
}

fn warp_values(src: &[f32], side: usize, pose: Pose) -> Vec<f32> {
    let at = |y: i64, x: i64| {
        let y = y.clamp(0, side as i64 - 1) as usize;
        let x = x.clamp(0, side as i64 - 1) as usize;
        src[y * side + x]
    };
    let mut out = vec![0.0f32; side * side];
    for y in 0..side {
        for x in 0..side {
            let (sy, sx) = source(pose, side, y, x);
            let (y0, x0) = (sy.floor(), sx.floor());
            let (fy, fx) = (sy - y0, sx - x0);
            let (y0, x0) = (y0 as i64, x0 as i64);
            out[y * side + x] = (1.0 - fy) * ((1.0 - fx) * at(y0, x0) + fx * at(y0, x0 + 1))
                + fy * ((1.0 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1));
        }
    }
    out
}

/// The image under `pose`: bilinear, edges replicated.
pub fn warp_image(image: &Gray, pose: Pose) -> Gray {
    if pose.is_identity() {
        return image.clone();
    }
    let src: Vec<f32> = image.iter().copied().collect();
    Array2::from_shape_vec(image.raw_dim(), warp_values(&src, image.nrows(), pose))
        .expect("same shape")
}

/// The mask under `pose`: nearest neighbour, outside the image is background.
pub fn warp_mask(mask: &Mask, pose: Pose) -> Mask {
    if pose.is_identity() {
        return mask.clone();
    }
    let side = mask.nrows();
    Array2::from_shape_fn(mask.raw_dim(), |(y, x)| {
        let (sy, sx) = source(pose, side, y, x);
        let (ry, rx) = (sy.round(), sx.round());
        ry >= 0.0
            && rx >= 0.0
            && (ry as usize) < side
            && (rx as usize) < side
            && mask[[ry as usize, rx as usize]]
    })
}

/// Smallest mean squared difference over translations of up to SHIFT thumbnail pixels (overlap only).
fn shifted_mse(a: &[f32], b: &[f32]) -> f32 {
    let n = THUMB as i32;
    let mut best = f32::INFINITY;
    for dy in -SHIFT..=SHIFT {
        for dx in -SHIFT..=SHIFT {
            let (mut sum, mut count) = (0.0f32, 0u32);
            for y in (0.max(dy))..(n.min(n + dy)) {
                let ra = &a[(y * n) as usize..((y + 1) * n) as usize];
                let rb = &b[((y - dy) * n) as usize..((y - dy + 1) * n) as usize];
                for x in (0.max(dx))..(n.min(n + dx)) {
                    let d = ra[x as usize] - rb[(x - dx) as usize];
                    sum += d * d;
                    count += 1;
                }
            }
            best = best.min(sum / count.max(1) as f32);
        }
    }
    best
}

fn mean_of_best(mut values: Vec<f32>, k: usize) -> f32 {
    values.sort_by(f32::total_cmp);
    let k = k.min(values.len()).max(1);
    values[..k].iter().sum::<f32>() / k as f32
}

/// The pose in which a (normalised) image best matches the reference thumbnails.
pub fn canonical_pose(normalised: &Gray, references: &[Vec<f32>]) -> Pose {
    if references.is_empty() {
        return Pose::IDENTITY;
    }
    let thumb = thumbnail(normalised);
    let mut at_identity: Vec<(f32, usize)> = references
        .iter()
        .enumerate()
        .map(|(i, r)| (shifted_mse(&thumb, r), i))
        .collect();
    at_identity.sort_by(|a, b| a.0.total_cmp(&b.0));
    let nearest: Vec<&Vec<f32>> = at_identity
        .iter()
        .take(NEAREST)
        .map(|&(_, i)| &references[i])
        .collect();
    let score = |pose: Pose| {
        let moved = warp_values(&thumb, THUMB, pose);
        mean_of_best(
            nearest.iter().map(|r| shifted_mse(&moved, r)).collect(),
            BEST,
        )
    };
    let identity = mean_of_best(at_identity.iter().map(|p| p.0).collect(), BEST);
    let mut best = (identity * (1.0 - MARGIN), Pose::IDENTITY);
    for &degrees in &DEGREES {
        for &scale in &SCALES {
            let pose = Pose { degrees, scale };
            if pose.is_identity() {
                continue;
            }
            let s = score(pose);
            if s < best.0 {
                best = (s, pose);
            }
        }
    }
    best.1
}

#[cfg(test)]
mod tests;
