//! Image shifts that simulate deployment changes (scanner, exposure, noise, resolution, positioning),
//! for the accuracy benchmark and shift-augmented calibration. Photometric shifts change the image
//! only; geometric shifts move image and mask together (bilinear + edge replicate for images,
//! nearest + background for masks).

use super::{Gray, Mask};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// One deployment shift with its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Shift {
    /// `255 * (v / 255)^gamma`.
    Gamma { gamma: f32 },
    /// `mean + factor * (v - mean)` with the image's own mean, clamped to 0..255.
    Contrast { factor: f32 },
    /// `v + offset`, clamped to 0..255.
    Brightness { offset: f32 },
    /// Additive Gaussian noise (per-image stream of `seed`, so images differ), clamped to 0..255.
    Noise { sigma: f32, seed: u64 },
    /// Separable Gaussian blur (kernel radius ceil(4 sigma)), symmetric reflection at the borders.
    Blur { sigma: f32 },
    /// Resolution loss: box average down by `factor`, then bilinear back up to the input size.
    Downsample { factor: usize },
    /// Rotation about the image centre, counter-clockwise as displayed (row 0 at the top).
    Rotate { degrees: f32 },
    /// Scaling about the image centre: > 1 zooms in (content bigger), < 1 zooms out.
    Zoom { factor: f32 },
    /// Content moves `dy` rows down and `dx` columns right.
    Translate { dy: i32, dx: i32 },
    /// Mirror left-right.
    FlipHorizontal,
    /// Multiplicative (speckle) noise `v * (1 + sigma z)`, as ultrasound shows; per-image stream of `seed`.
    Speckle { sigma: f32, seed: u64 },
    /// A smooth multiplicative gain across the image (coil or detector non-uniformity): the gain runs
    /// linearly from `1 - strength` to `1 + strength` along a diagonal.
    BiasField { strength: f32 },
    /// Unsharp masking: `v + amount * (v - blur(v, 1))`.
    Sharpen { amount: f32 },
    /// Quantisation to `levels` grey levels (a lower bit depth or a lossy export).
    Posterize { levels: u32 },
}

impl Shift {
    /// The shifted image and, when given, the mask moved with it (unchanged for photometric shifts).
    /// `index` (the image's position in its batch) varies the noise between images.
    pub fn apply(&self, image: &Gray, mask: Option<&Mask>, index: u64) -> (Gray, Option<Mask>) {
        let clamp = |v: f32| v.clamp(0.0, 255.0);
        let photometric = |img: Gray| (img, mask.cloned());
        match *self {
            Shift::Gamma { gamma } => {
                photometric(image.mapv(|v| 255.0 * (clamp(v) / 255.0).powf(gamma)))
            }
            Shift::Contrast { factor } => {
                let mean = image.mean().unwrap_or(0.0);
                photometric(image.mapv(|v| clamp(mean + factor * (v - mean))))
            }
            Shift::Brightness { offset } => photometric(image.mapv(|v| clamp(v + offset))),
            Shift::Noise { sigma, seed } => {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(index);
                let mut spare: Option<f64> = None;
                photometric(image.mapv(|v| {
                    let z = spare.take().unwrap_or_else(|| {
                        let (a, b) = box_muller(&mut rng);
                        spare = Some(b);
                        a
                    });
                    clamp(v + sigma * z as f32)
                }))
            }
            Shift::Blur { sigma } => photometric(blur(image, sigma)),
            Shift::Downsample { factor } => photometric(downsample(image, factor)),
            Shift::Rotate { degrees } => {
                let (s, c) = f64::from(degrees).to_radians().sin_cos();
                warp(image, mask, |dy, dx| (s * dx + c * dy, c * dx - s * dy))
            }
            Shift::Zoom { factor } => {
                let f = f64::from(factor);
                warp(image, mask, |dy, dx| (dy / f, dx / f))
            }
            Shift::Translate { dy, dx } => {
                let (ty, tx) = (f64::from(dy), f64::from(dx));
                warp(image, mask, |y, x| (y - ty, x - tx))
            }
            Shift::FlipHorizontal => warp(image, mask, |dy, dx| (dy, -dx)),
            Shift::Speckle { sigma, seed } => {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(index);
                photometric(image.mapv(|v| {
                    let (z, _) = box_muller(&mut rng);
                    clamp(v * (1.0 + sigma * z as f32))
                }))
            }
            Shift::BiasField { strength } => {
                let (h, w) = image.dim();
                let span = (h + w).saturating_sub(2).max(1) as f32;
                photometric(Array2::from_shape_fn((h, w), |(y, x)| {
                    let t = (y + x) as f32 / span;
                    clamp(image[(y, x)] * (1.0 - strength + 2.0 * strength * t))
                }))
            }
            Shift::Sharpen { amount } => {
                let smooth = blur(image, 1.0);
                photometric(Array2::from_shape_fn(image.dim(), |i| {
                    clamp(image[i] + amount * (image[i] - smooth[i]))
                }))
            }
            Shift::Posterize { levels } => {
                let step = 255.0 / levels.max(2).saturating_sub(1) as f32;
                photometric(image.mapv(|v| (clamp(v) / step).round() * step))
            }
        }
    }

    /// True when the shift moves pixels (so labels must move with the image).
    pub fn is_geometric(&self) -> bool {
        matches!(
            self,
            Shift::Rotate { .. }
                | Shift::Zoom { .. }
                | Shift::Translate { .. }
                | Shift::FlipHorizontal
        )
    }

    /// A short human name, e.g. "gamma 0.5", "rotate 10°", "zoom 0.85".
    pub fn label(&self) -> String {
        match *self {
            Shift::Gamma { gamma } => format!("gamma {gamma}"),
            Shift::Contrast { factor } => format!("contrast {factor}"),
            Shift::Brightness { offset } => format!("brightness {offset:+}"),
            Shift::Noise { sigma, .. } => format!("noise σ{sigma}"),
            Shift::Blur { sigma } => format!("blur σ{sigma}"),
            Shift::Downsample { factor } => format!("downsample ×{factor}"),
            Shift::Rotate { degrees } => format!("rotate {degrees}°"),
            Shift::Zoom { factor } => format!("zoom {factor}"),
            Shift::Translate { dy, dx } => format!("translate ({dy},{dx})"),
            Shift::FlipHorizontal => "flip horizontal".to_string(),
            Shift::Speckle { sigma, .. } => format!("speckle σ{sigma}"),
            Shift::BiasField { strength } => format!("bias field ±{strength}"),
            Shift::Sharpen { amount } => format!("sharpen {amount}"),
            Shift::Posterize { levels } => format!("posterize {levels}"),
        }
    }
}

/// Two independent standard normal draws.
fn box_muller(rng: &mut ChaCha8Rng) -> (f64, f64) {
    // 1 - U is in (0, 1], so the logarithm is finite.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    let r = (-2.0 * u1.ln()).sqrt();
    let t = std::f64::consts::TAU * u2;
    (r * t.cos(), r * t.sin())
}

/// Symmetric reflection of an index into 0..n (d c b a | a b c d | d c b a).
fn reflect(i: isize, n: usize) -> usize {
    let period = 2 * n as isize;
    let m = i.rem_euclid(period) as usize;
    if m < n {
        m
    } else {
        2 * n - 1 - m
    }
}

fn blur(image: &Gray, sigma: f32) -> Gray {
    if sigma <= 0.0 || image.is_empty() {
        return image.clone();
    }
    let radius = (4.0 * sigma).ceil() as isize;
    let mut kernel: Vec<f32> = (-radius..=radius)
        .map(|k| (-((k * k) as f32) / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|w| *w /= total);
    let (h, w) = image.dim();
    let pass = |src: &Gray, along_rows: bool| {
        Array2::from_shape_fn((h, w), |(y, x)| {
            let value: f32 = kernel
                .iter()
                .enumerate()
                .map(|(k, wt)| {
                    let off = k as isize - radius;
                    let v = if along_rows {
                        src[(y, reflect(x as isize + off, w))]
                    } else {
                        src[(reflect(y as isize + off, h), x)]
                    };
                    v * wt
                })
                .sum();
            value.clamp(0.0, 255.0)
        })
    };
    pass(&pass(image, true), false)
}

fn downsample(image: &Gray, factor: usize) -> Gray {
    let (h, w) = image.dim();
    if factor <= 1 || image.is_empty() {
        return image.clone();
    }
    let (sh, sw) = (h.div_ceil(factor), w.div_ceil(factor));
    let small = Array2::from_shape_fn((sh, sw), |(by, bx)| {
        let rows = by * factor..((by + 1) * factor).min(h);
        let cols = bx * factor..((bx + 1) * factor).min(w);
        let n = (rows.len() * cols.len()) as f32;
        image.slice(ndarray::s![rows, cols]).iter().sum::<f32>() / n
    });
    // Bilinear with half-pixel centres, edge replicate.
    let coord = |x: usize, out: usize, inn: usize| {
        let s = ((x as f64 + 0.5) * inn as f64 / out as f64 - 0.5).clamp(0.0, (inn - 1) as f64);
        let i0 = s.floor() as usize;
        (i0, (i0 + 1).min(inn - 1), (s - i0 as f64) as f32)
    };
    Array2::from_shape_fn((h, w), |(y, x)| {
        let (y0, y1, fy) = coord(y, h, sh);
        let (x0, x1, fx) = coord(x, w, sw);
        let top = small[(y0, x0)] * (1.0 - fx) + small[(y0, x1)] * fx;
        let bottom = small[(y1, x0)] * (1.0 - fx) + small[(y1, x1)] * fx;
        (top * (1.0 - fy) + bottom * fy).clamp(0.0, 255.0)
    })
}

/// Inverse-maps every output pixel: `source(dy, dx)` takes the output's offset from the image centre
/// and returns the source offset. Images: bilinear with edge replicate; masks: nearest, outside = false.
fn warp(
    image: &Gray,
    mask: Option<&Mask>,
    source: impl Fn(f64, f64) -> (f64, f64),
) -> (Gray, Option<Mask>) {
    let (h, w) = image.dim();
    let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
    let at = |y: usize, x: usize| {
        let (sy, sx) = source(y as f64 - cy, x as f64 - cx);
        (sy + cy, sx + cx)
    };
    let out = Array2::from_shape_fn((h, w), |(y, x)| {
        let (sy, sx) = at(y, x);
        let sy = sy.clamp(0.0, h as f64 - 1.0);
        let sx = sx.clamp(0.0, w as f64 - 1.0);
        let (y0, x0) = (sy.floor() as usize, sx.floor() as usize);
        let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
        let (fy, fx) = ((sy - y0 as f64) as f32, (sx - x0 as f64) as f32);
        if fy == 0.0 && fx == 0.0 {
            return image[(y0, x0)];
        }
        let top = image[(y0, x0)] * (1.0 - fx) + image[(y0, x1)] * fx;
        let bottom = image[(y1, x0)] * (1.0 - fx) + image[(y1, x1)] * fx;
        (top * (1.0 - fy) + bottom * fy).clamp(0.0, 255.0)
    });
    let moved = mask.map(|m| {
        let (mh, mw) = m.dim();
        Array2::from_shape_fn((mh, mw), |(y, x)| {
            let (sy, sx) = at(y, x);
            let (ry, rx) = (sy.round(), sx.round());
            ry >= 0.0
                && rx >= 0.0
                && ry < mh as f64
                && rx < mw as f64
                && m[(ry as usize, rx as usize)]
        })
    });
    (out, moved)
}

#[cfg(test)]
mod tests;
