//! Image kernels of the label-fusion reverse segmenter: resampling, the separable Gaussian, a fast
//! exponential and the translation search. Images are row-major `side x side` slices of f32; every inner
//! loop runs over contiguous slices so that the compiler vectorises it.

/// 2x2 mean: `side x side` -> `side/2 x side/2`.
pub(crate) fn downsample2(src: &[f32], side: usize) -> Vec<f32> {
    let half = side / 2;
    let mut out = vec![0.0f32; half * half];
    for y in 0..half {
        let r0 = &src[2 * y * side..(2 * y + 1) * side];
        let r1 = &src[(2 * y + 1) * side..(2 * y + 2) * side];
        let row = &mut out[y * half..(y + 1) * half];
        for (x, o) in row.iter_mut().enumerate() {
            *o = 0.25 * (r0[2 * x] + r0[2 * x + 1] + r1[2 * x] + r1[2 * x + 1]);
        }
    }
    out
}

/// Source coordinate of each output index when a `side`-long axis is scaled by `scale` about its centre
/// (>1 enlarges the content).
fn scaled_coordinates(side: usize, scale: f32) -> impl Iterator<Item = f32> {
    let c = (side as f32 - 1.0) / 2.0;
    (0..side).map(move |i| c + (i as f32 - c) / scale)
}

/// The image scaled by `scale` about its centre: bilinear, edges replicated. `align::warp_image` gives the
/// same for a pose without rotation (tested), but per pixel; this separable form runs once per support
/// and scale in every `segment` call.
pub(crate) fn scale_image(src: &[f32], side: usize, scale: f32) -> Vec<f32> {
    let taps: Vec<(usize, usize, f32)> = scaled_coordinates(side, scale)
        .map(|v| {
            let v = v.clamp(0.0, (side - 1) as f32);
            let i0 = v.floor() as usize;
            (i0, (i0 + 1).min(side - 1), v - i0 as f32)
        })
        .collect();
    let mut rows = vec![0.0f32; side * side];
    for y in 0..side {
        let (src_row, out) = (
            &src[y * side..(y + 1) * side],
            &mut rows[y * side..(y + 1) * side],
        );
        for (o, &(a, b, f)) in out.iter_mut().zip(&taps) {
            *o = (1.0 - f) * src_row[a] + f * src_row[b];
        }
    }
    let mut out = vec![0.0f32; side * side];
    for (y, &(a, b, f)) in taps.iter().enumerate() {
        let (ra, rb) = (
            &rows[a * side..(a + 1) * side],
            &rows[b * side..(b + 1) * side],
        );
        for ((o, &va), &vb) in out[y * side..(y + 1) * side].iter_mut().zip(ra).zip(rb) {
            *o = (1.0 - f) * va + f * vb;
        }
    }
    out
}

/// A 0/1 label scaled by `scale` about its centre: nearest neighbour, outside the image is background.
pub(crate) fn scale_label(src: &[f32], side: usize, scale: f32) -> Vec<f32> {
    let index: Vec<Option<usize>> = scaled_coordinates(side, scale)
        .map(|v| {
            let r = v.round();
            (r >= 0.0 && (r as usize) < side).then_some(r as usize)
        })
        .collect();
    let mut out = vec![0.0f32; side * side];
    for (y, sy) in index.iter().enumerate() {
        let Some(sy) = sy else { continue };
        let src_row = &src[sy * side..(sy + 1) * side];
        for (o, sx) in out[y * side..(y + 1) * side].iter_mut().zip(&index) {
            if let Some(sx) = sx {
                *o = src_row[*sx];
            }
        }
    }
    out
}

/// `dst(y, x) = src(clamp(y - dy), clamp(x - dx))`: the image moved by (dy, dx), edges replicated.
pub(crate) fn shift_into(src: &[f32], side: usize, dy: i32, dx: i32, dst: &mut [f32]) {
    let clamp = |v: i32| v.clamp(0, side as i32 - 1) as usize;
    for y in 0..side {
        let sy = clamp(y as i32 - dy);
        let srow = &src[sy * side..(sy + 1) * side];
        let drow = &mut dst[y * side..(y + 1) * side];
        // Interior part is a plain copy; the ends replicate the edge pixels.
        let lo = dx.clamp(0, side as i32) as usize;
        let hi = (side as i32 + dx).clamp(0, side as i32) as usize;
        if lo < hi {
            drow[lo..hi]
                .copy_from_slice(&srow[(lo as i32 - dx) as usize..(hi as i32 - dx) as usize]);
        }
        drow[..lo].fill(srow[0]);
        drow[hi..].fill(srow[side - 1]);
    }
}

/// A normalised 1-D Gaussian truncated at `ceil(3 sigma)`.
pub(crate) fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let r = (3.0 * sigma).ceil().max(1.0) as i32;
    let mut k: Vec<f32> = (-r..=r)
        .map(|i| (-0.5 * (i as f32 / sigma).powi(2)).exp())
        .collect();
    let sum: f32 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= sum);
    k
}

/// Reflected index (`d c b a | a b c d`, scipy's "reflect"), valid for offsets up to one image side.
#[inline]
fn reflect(i: i32, n: i32) -> usize {
    let i = if i < 0 { -i - 1 } else { i };
    (if i >= n { 2 * n - i - 1 } else { i }) as usize
}

/// Separable Gaussian blur with reflected borders. `data` is blurred in place; `tmp` must hold
/// `side * side` values and `pad` `side + kernel.len() - 1`.
pub(crate) fn blur(
    data: &mut [f32],
    side: usize,
    kernel: &[f32],
    tmp: &mut [f32],
    pad: &mut [f32],
) {
    let r = (kernel.len() / 2) as i32;
    let n = side as i32;
    // Vertical pass: each output row is a weighted sum of whole input rows.
    for y in 0..side {
        let out = &mut tmp[y * side..(y + 1) * side];
        out.fill(0.0);
        for (t, &kt) in kernel.iter().enumerate() {
            let sy = reflect(y as i32 + t as i32 - r, n);
            let src = &data[sy * side..(sy + 1) * side];
            for (o, &s) in out.iter_mut().zip(src) {
                *o += kt * s;
            }
        }
    }
    // Horizontal pass over a reflected, padded copy of each row.
    let width = side + kernel.len() - 1;
    let pad = &mut pad[..width];
    for y in 0..side {
        let row = &tmp[y * side..(y + 1) * side];
        for (j, p) in pad.iter_mut().enumerate() {
            *p = row[reflect(j as i32 - r, n)];
        }
        let out = &mut data[y * side..(y + 1) * side];
        out.fill(0.0);
        for (t, &kt) in kernel.iter().enumerate() {
            for (o, &s) in out.iter_mut().zip(&pad[t..t + side]) {
                *o += kt * s;
            }
        }
    }
}

/// `exp(x)` for `x <= 0` to ~5e-6 relative error (2e-7 for x > -10); branch-free so that loops over it vectorise
/// (std's `exp` is a libm call per element). Arguments below -87 give ~1e-38.
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer held in the low bits
    let t = x.max(-87.0) * LOG2E;
    let shifted = t + MAGIC;
    let n = shifted.to_bits() as i32 - MAGIC.to_bits() as i32;
    let f = t - (shifted - MAGIC); // in [-0.5, 0.5]
                                   // 2^f = e^(f ln 2), Taylor to degree 6 (error < 2e-7 on |f| <= 0.5).
    let z = f * std::f32::consts::LN_2;
    let p = 1.0
        + z * (1.0
            + z * (0.5
                + z * (1.0 / 6.0 + z * (1.0 / 24.0 + z * (1.0 / 120.0 + z * (1.0 / 720.0))))));
    let scale = f32::from_bits(((n + 127) as u32) << 23);
    p * scale
}

/// Sum of `(a - b)^2`, with eight partial sums so that the loop vectorises (a single f32 accumulator
/// would force sequential adds).
#[inline]
pub(crate) fn sum_squared_difference(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| (x - y) * (x - y)).sum();
    acc.iter().sum::<f32>() + tail
}

/// Mean squared difference between `q` and `s` moved by (dy, dx), over the square window that stays
/// `border` pixels away from every edge (`|dy|, |dx| <= border`, so no edge clamping is needed).
#[inline]
fn window_mse(q: &[f32], s: &[f32], side: usize, dy: i32, dx: i32, border: usize) -> f32 {
    let mut acc = 0.0f32;
    let w = side - 2 * border;
    for y in border..side - border {
        let qr = &q[y * side + border..y * side + border + w];
        let sy = (y as i32 - dy) as usize;
        let sx = (border as i32 - dx) as usize;
        let sr = &s[sy * side + sx..sy * side + sx + w];
        acc += sum_squared_difference(qr, sr);
    }
    acc / (w * w) as f32
}

/// Image pyramid, coarsest level first; the last level is the working resolution.
pub(crate) struct Pyramid {
    pub levels: Vec<Vec<f32>>,
    pub sides: Vec<usize>,
}

impl Pyramid {
    /// Builds `count` levels (halving each time) from `finest` of side `side`.
    pub(crate) fn new(finest: Vec<f32>, side: usize, count: usize) -> Self {
        let mut levels = vec![finest];
        let mut sides = vec![side];
        for _ in 1..count {
            let (prev, s) = (
                levels.last().expect("non-empty"),
                *sides.last().expect("non-empty"),
            );
            levels.push(downsample2(prev, s));
            sides.push(s / 2);
        }
        levels.reverse();
        sides.reverse();
        Self { levels, sides }
    }
}

/// A translation found at one pyramid level, with the window MSE it achieved there.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Shift {
    pub level: usize,
    pub dy: i32,
    pub dx: i32,
    pub mse: f32,
}

impl Shift {
    /// The same translation in pixels of pyramid level `level` (>= self.level).
    pub(crate) fn at_level(&self, level: usize) -> (i32, i32) {
        let k = 1 << (level - self.level);
        (self.dy * k, self.dx * k)
    }
}

/// Exhaustive +-`radius` translation search at the coarsest level.
pub(crate) fn coarse_shift(q: &Pyramid, s: &Pyramid, radius: usize) -> Shift {
    search(q, s, radius, 0, (0, 0), radius as i32)
}

/// +-1 around `near` at the coarsest level, within +-`radius`: another scale of a support already
/// aligned there moves its content by less than a coarsest pixel.
pub(crate) fn coarse_shift_near(q: &Pyramid, s: &Pyramid, radius: usize, near: Shift) -> Shift {
    let r = radius as i32;
    let (dy, dx) = (near.dy.clamp(1 - r, r - 1), near.dx.clamp(1 - r, r - 1));
    search(q, s, radius, 0, (dy, dx), 1.min(r))
}

/// One coarse-to-fine step: +-1 around the doubled translation of the level below.
pub(crate) fn refine_shift(q: &Pyramid, s: &Pyramid, radius: usize, from: Shift) -> Shift {
    let level = from.level + 1;
    search(q, s, radius, level, from.at_level(level), 1)
}

/// Best shift within +-`r` of `centre` at `level`, by the MSE over the central window that every shift
/// reachable from a coarsest search of +-`radius` keeps inside the image.
fn search(
    q: &Pyramid,
    s: &Pyramid,
    radius: usize,
    level: usize,
    centre: (i32, i32),
    r: i32,
) -> Shift {
    let (ql, sl, side) = (&q.levels[level], &s.levels[level], q.sides[level]);
    let scale = 1usize << level;
    let border = radius * scale + (scale - 1);
    let mut best = Shift {
        level,
        dy: centre.0,
        dx: centre.1,
        mse: f32::INFINITY,
    };
    for dy in centre.0 - r..=centre.0 + r {
        for dx in centre.1 - r..=centre.1 + r {
            let mse = window_mse(ql, sl, side, dy, dx, border);
            if mse < best.mse {
                best = Shift { level, dy, dx, mse };
            }
        }
    }
    best
}

/// Bilinear x2 upsampling (half-pixel centres, edges clamped): `side x side` -> `2side x 2side`.
/// Output pixel 2m sits at source coordinate m - 1/4 and 2m+1 at m + 1/4, along both axes.
pub(crate) fn upsample2(src: &[f32], side: usize, out: &mut [f32]) {
    let big = 2 * side;
    // Rows padded by one replicated pixel at each end, so the horizontal pass needs no clamping.
    let mut row = vec![0.0f32; side + 2];
    let (mut even, mut odd) = (vec![0.0f32; side], vec![0.0f32; side]);
    for oy in 0..big {
        let m = oy / 2;
        let (a, b, wa) = if oy % 2 == 0 {
            (m.saturating_sub(1), m, 0.25f32)
        } else {
            (m, (m + 1).min(side - 1), 0.75f32)
        };
        let (ra, rb) = (
            &src[a * side..(a + 1) * side],
            &src[b * side..(b + 1) * side],
        );
        for ((r, &va), &vb) in row[1..=side].iter_mut().zip(ra).zip(rb) {
            *r = wa * va + (1.0 - wa) * vb;
        }
        (row[0], row[side + 1]) = (row[1], row[side]);
        for (((e, o), w), &c) in even
            .iter_mut()
            .zip(odd.iter_mut())
            .zip(row.windows(3))
            .zip(&row[1..=side])
        {
            *e = 0.25 * w[0] + 0.75 * c;
            *o = 0.75 * c + 0.25 * w[2];
        }
        for ((pair, &e), &o) in out[oy * big..(oy + 1) * big]
            .chunks_exact_mut(2)
            .zip(&even)
            .zip(&odd)
        {
            pair[0] = e;
            pair[1] = o;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_matches_std() {
        let mut worst = 0.0f32;
        for i in 0..=20_000 {
            let x = -(i as f32) * 0.004;
            let rel = ((exp_nonpositive(x) - x.exp()) / x.exp()).abs();
            worst = worst.max(rel);
        }
        // x * log2(e) rounded to f32 costs up to ~5e-6 relative at x = -80; plenty for voting weights.
        assert!(worst < 1e-5, "relative error {worst}");
        assert!(exp_nonpositive(-1e30) >= 0.0 && exp_nonpositive(-1e30) < 1e-37);
        assert_eq!(exp_nonpositive(0.0), 1.0);
    }

    #[test]
    fn blur_preserves_constants_and_mass_centre() {
        let side = 16;
        let k = gaussian_kernel(2.0);
        let mut data = vec![0.7f32; side * side];
        let (mut tmp, mut pad) = (vec![0.0; side * side], vec![0.0; side + k.len()]);
        blur(&mut data, side, &k, &mut tmp, &mut pad);
        assert!(data.iter().all(|v| (v - 0.7).abs() < 1e-5));
        let mut impulse = vec![0.0f32; side * side];
        impulse[8 * side + 8] = 1.0;
        blur(&mut impulse, side, &k, &mut tmp, &mut pad);
        let total: f32 = impulse.iter().sum();
        assert!((total - 1.0).abs() < 1e-5);
        assert_eq!(impulse[8 * side + 7], impulse[8 * side + 9]);
        assert_eq!(impulse[7 * side + 8], impulse[9 * side + 8]);
    }

    #[test]
    fn shift_moves_content() {
        let side = 8;
        let src: Vec<f32> = (0..side * side).map(|i| i as f32).collect();
        let mut dst = vec![0.0; side * side];
        shift_into(&src, side, 2, -1, &mut dst);
        assert_eq!(dst[4 * side + 3], src[2 * side + 4]);
        assert_eq!(dst[0], src[1]); // clamped row 0, column 1
        assert_eq!(dst[side - 1], src[side - 1]);
    }

    #[test]
    fn align_recovers_a_translation() {
        let side = 64;
        let img: Vec<f32> = (0..side * side)
            .map(|i| {
                let (y, x) = ((i / side) as f32, (i % side) as f32);
                ((y - 30.0).powi(2) / 90.0 + (x - 28.0).powi(2) / 60.0)
                    .min(4.0)
                    .sin()
                    + 0.01 * x
            })
            .collect();
        let mut moved = vec![0.0; side * side];
        shift_into(&img, side, -5, 7, &mut moved);
        let (q, s) = (Pyramid::new(img, side, 3), Pyramid::new(moved, side, 3));
        let coarse = coarse_shift(&q, &s, 3);
        let fine = refine_shift(&q, &s, 3, refine_shift(&q, &s, 3, coarse));
        assert_eq!((fine.level, fine.dy, fine.dx), (2, 5, -7));
        assert!(fine.mse < 1e-10);
        assert_eq!(fine.at_level(2), (5, -7));
    }

    #[test]
    fn scaling_matches_the_pose_warp_without_rotation() {
        use crate::engine::align::{warp_image, warp_mask, Pose};
        use ndarray::Array2;
        let side = crate::engine::SIDE;
        let image = Array2::from_shape_fn((side, side), |(y, x)| {
            ((y as f32 * 0.11).sin() + (x as f32 * 0.07).cos()) * 100.0
        });
        let label = Array2::from_shape_fn((side, side), |(y, x)| {
            (y as f32 - 70.0).powi(2) + (x as f32 - 50.0).powi(2) < 900.0
        });
        let flat: Vec<f32> = image.iter().copied().collect();
        let flat_label: Vec<f32> = label.iter().map(|&b| f32::from(u8::from(b))).collect();
        for scale in [1.08, 1.0 / 1.08, 1.3] {
            let pose = Pose {
                degrees: 0.0,
                scale,
            };
            let ours = scale_image(&flat, side, scale);
            let worst = warp_image(&image, pose)
                .iter()
                .zip(&ours)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-3, "scale {scale}: largest difference {worst}");
            let expected: Vec<f32> = warp_mask(&label, pose)
                .iter()
                .map(|&b| f32::from(u8::from(b)))
                .collect();
            assert_eq!(
                scale_label(&flat_label, side, scale),
                expected,
                "scale {scale}"
            );
        }
    }

    #[test]
    fn resampling_round_trip() {
        let side = 8;
        let src: Vec<f32> = (0..side * side)
            .map(|i| (i % side) as f32 / side as f32)
            .collect();
        let down = downsample2(&src, side);
        assert_eq!(down.len(), 16);
        assert!((down[0] - 0.0625).abs() < 1e-6);
        let mut up = vec![0.0; side * side];
        upsample2(&down, side / 2, &mut up);
        // Bilinear upsampling reproduces a ramp away from the edges.
        for y in 0..side {
            for x in 1..side - 1 {
                assert!(
                    (up[y * side + x] - src[y * side + x]).abs() < 1e-6,
                    "({y},{x})"
                );
            }
        }
    }
}
