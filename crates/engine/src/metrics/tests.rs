//! Hand-made edge cases from method.md, and a brute-force O(n^2) HD95 on random masks.

use super::*;
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const DIAG_128: f64 = 181.019_335_983_756_18;

fn empty(h: usize, w: usize) -> Array2<bool> {
    Array2::from_elem((h, w), false)
}

fn with_pixels(h: usize, w: usize, px: &[(usize, usize)]) -> Array2<bool> {
    let mut m = empty(h, w);
    for &p in px {
        m[p] = true;
    }
    m
}

fn rect(
    h: usize,
    w: usize,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) -> Array2<bool> {
    Array2::from_shape_fn((h, w), |(r, c)| rows.contains(&r) && cols.contains(&c))
}

fn run(g: &Array2<bool>, p: &Array2<bool>) -> MetricSet {
    compute(g.view(), p.view(), None)
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

// ---- brute force reference ---------------------------------------------------------------

/// Contour by the literal definition: a pixel of X with an 8-neighbour outside X or the image.
fn brute_contour(m: &Array2<bool>) -> Vec<(usize, usize)> {
    let (h, w) = m.dim();
    let inside = |r: i64, c: i64| {
        r >= 0 && c >= 0 && r < h as i64 && c < w as i64 && m[(r as usize, c as usize)]
    };
    let mut out = Vec::new();
    for r in 0..h as i64 {
        for c in 0..w as i64 {
            if !inside(r, c) {
                continue;
            }
            let edge = (-1..=1).any(|dr| (-1..=1).any(|dc| !inside(r + dr, c + dc)));
            if edge {
                out.push((r as usize, c as usize));
            }
        }
    }
    out
}

fn brute_hd95(g: &Array2<bool>, p: &Array2<bool>, sp: [f64; 2]) -> f64 {
    let (h, w) = g.dim();
    let (cg, cp) = (brute_contour(g), brute_contour(p));
    match (cg.is_empty(), cp.is_empty()) {
        (true, true) => return 0.0,
        (true, false) | (false, true) => {
            return ((h as f64 * sp[0]).powi(2) + (w as f64 * sp[1]).powi(2)).sqrt()
        }
        _ => {}
    }
    let nearest = |a: (usize, usize), set: &[(usize, usize)]| {
        set.iter()
            .map(|b| {
                let dr = (a.0 as f64 - b.0 as f64) * sp[0];
                let dc = (a.1 as f64 - b.1 as f64) * sp[1];
                (dr * dr + dc * dc).sqrt()
            })
            .fold(f64::INFINITY, f64::min)
    };
    let mut d: Vec<f64> = cp.iter().map(|&a| nearest(a, &cg)).collect();
    d.extend(cg.iter().map(|&a| nearest(a, &cp)));
    d.sort_by(f64::total_cmp);
    let idx = (d.len() - 1) as f64 * 0.95;
    let lo = idx.floor() as usize;
    let hi = (lo + 1).min(d.len() - 1);
    d[lo] + (d[hi] - d[lo]) * (idx - lo as f64)
}

fn brute_pearson(g: &Array2<bool>, p: &Array2<bool>) -> f64 {
    let n = g.len() as f64;
    let x: Vec<f64> = g.iter().map(|&b| f64::from(u8::from(b))).collect();
    let y: Vec<f64> = p.iter().map(|&b| f64::from(u8::from(b))).collect();
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(&y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    sxy / (sxx * syy).sqrt()
}

/// Random blobs (unions of rectangles and discs) with salt noise: holes, thin parts, border contact.
fn random_mask(rng: &mut ChaCha8Rng, h: usize, w: usize) -> Array2<bool> {
    let mut m = empty(h, w);
    for _ in 0..rng.random_range(1..4) {
        let (r0, c0) = (rng.random_range(0..h), rng.random_range(0..w));
        let rad = rng.random_range(1..=(h.min(w) / 3).max(1)) as f64;
        let disc = rng.random_bool(0.5);
        for r in 0..h {
            for c in 0..w {
                let (dr, dc) = (r as f64 - r0 as f64, c as f64 - c0 as f64);
                let hit = if disc {
                    dr * dr + dc * dc <= rad * rad
                } else {
                    dr.abs() <= rad && dc.abs() <= rad / 2.0
                };
                if hit {
                    m[(r, c)] = true;
                }
            }
        }
    }
    for v in m.iter_mut() {
        if rng.random_bool(0.01) {
            *v = !*v;
        }
    }
    m
}

// ---- Metric and MetricSet ---------------------------------------------------------------

#[test]
fn metric_names_round_trip() {
    for m in Metric::ALL {
        assert_eq!(Metric::parse(m.name()), Some(m));
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            format!("\"{}\"", m.name())
        );
        assert_eq!(m.to_string(), m.name());
    }
    assert_eq!(Metric::parse(" HD95 "), Some(Metric::Hd95));
    assert_eq!(Metric::parse("f1"), None);
    assert_eq!(Metric::Pearson.bounds(), (-1.0, Some(1.0)));
    assert_eq!(Metric::Hd95.bounds(), (0.0, None));
    assert_eq!(Metric::Recall.bounds(), (0.0, Some(1.0)));
}

#[test]
fn metric_set_get_set_mean() {
    let mut a = MetricSet::default();
    for (i, m) in Metric::ALL.into_iter().enumerate() {
        a.set(m, i as f64);
        assert_eq!(a.get(m), i as f64);
    }
    let mut b = a;
    b.hd95 = 10.0;
    let mean = MetricSet::mean(&[a, b]);
    assert_eq!(mean.hd95, (a.hd95 + 10.0) / 2.0);
    assert_eq!(mean.dice, a.dice);
    assert_eq!(MetricSet::mean(&[]), MetricSet::default());
}

// ---- method.md edge cases ----------------------------------------------------------------

#[test]
fn both_empty() {
    let m = run(&empty(128, 128), &empty(128, 128));
    let want = MetricSet::uniform(1.0, 0.0);
    assert_eq!(m, want);
}

#[test]
fn label_empty_prediction_not() {
    let m = run(&empty(128, 128), &rect(128, 128, 10..20, 10..20));
    let want = MetricSet::uniform(0.0, m.hd95);
    assert_eq!(m, want);
    assert!(close(m.hd95, DIAG_128, 1e-15), "{}", m.hd95);
}

#[test]
fn prediction_empty_label_not() {
    let m = run(&rect(128, 128, 10..20, 10..20), &empty(128, 128));
    let want = MetricSet::uniform(0.0, m.hd95);
    assert_eq!(m, want);
    assert!(close(m.hd95, DIAG_128, 1e-15));
}

#[test]
fn one_empty_with_spacing_uses_physical_diagonal() {
    let m = compute(
        empty(128, 64).view(),
        with_pixels(128, 64, &[(3, 3)]).view(),
        Some([0.5, 2.0]),
    );
    assert!(close(
        m.hd95,
        (64.0f64 * 64.0 + 128.0 * 128.0).sqrt(),
        1e-15
    ));
}

#[test]
fn identical_masks() {
    let g = rect(128, 128, 30..90, 40..70);
    let m = run(&g, &g.clone());
    let want = MetricSet::uniform(1.0, 0.0);
    assert_eq!(m, want);
}

#[test]
fn single_pixels() {
    let a = with_pixels(128, 128, &[(10, 10)]);
    let same = run(&a, &a.clone());
    assert_eq!((same.dice, same.hd95, same.pearson), (1.0, 0.0, 1.0));
    // Disjoint single pixels 10 columns apart: every ratio is 0, both directed distances are 10.
    let m = run(&a, &with_pixels(128, 128, &[(10, 20)]));
    assert_eq!(
        (m.dice, m.jaccard, m.precision, m.recall),
        (0.0, 0.0, 0.0, 0.0)
    );
    assert_eq!(m.hd95, 10.0);
    assert!(close(
        m.pearson,
        brute_pearson(&a, &with_pixels(128, 128, &[(10, 20)])),
        1e-12
    ));
    assert!(m.pearson < 0.0);
}

#[test]
fn disjoint_squares_counts() {
    let g = rect(64, 64, 0..10, 0..10);
    let p = rect(64, 64, 30..40, 30..40);
    let m = run(&g, &p);
    assert_eq!(
        (m.dice, m.jaccard, m.precision, m.recall),
        (0.0, 0.0, 0.0, 0.0)
    );
    assert!(close(m.hd95, brute_hd95(&g, &p, [1.0, 1.0]), 1e-12));
}

#[test]
fn partial_overlap_ratios() {
    // G = 10x10 (100 px), P = 10x5 inside it plus 10x5 outside: TP 50, FP 50, FN 50.
    let g = rect(64, 64, 10..20, 10..20);
    let p = rect(64, 64, 10..20, 15..25);
    let m = run(&g, &p);
    assert_eq!(m.dice, 0.5);
    assert_eq!(m.jaccard, 50.0 / 150.0);
    assert_eq!(m.precision, 0.5);
    assert_eq!(m.recall, 0.5);
    assert!(close(m.pearson, brute_pearson(&g, &p), 1e-12));
}

#[test]
fn full_image() {
    let full = Array2::from_elem((128, 128), true);
    let both = run(&full, &full.clone());
    assert_eq!((both.dice, both.hd95, both.pearson), (1.0, 0.0, 1.0));
    // The whole image border is contour(G) because outside the image counts as outside.
    let sq = rect(128, 128, 40..80, 40..80);
    let m = run(&full, &sq);
    assert_eq!(m.recall, 1600.0 / 16384.0);
    assert_eq!(m.precision, 1.0);
    assert_eq!(m.pearson, 0.0);
    assert!(close(m.hd95, brute_hd95(&full, &sq, [1.0, 1.0]), 1e-12));
    assert_eq!(brute_contour(&full).len(), 4 * 127);
}

#[test]
fn shifted_square_by_hand() {
    // G rows/cols 10..20; P the same shifted 3 columns right. Each direction gives 14 zeros
    // (shared top/bottom edges), four 1s, four 2s and fourteen 3s; pooled (n = 72) the 95th
    // percentile sits at index 67.45, inside the run of 3s.
    let g = rect(64, 64, 10..20, 10..20);
    let p = rect(64, 64, 10..20, 13..23);
    assert_eq!(run(&g, &p).hd95, 3.0);
}

#[test]
fn percentile_interpolates_like_numpy() {
    // G one pixel, P two: pooled [0, 0, 3]; index 2 * 0.95 = 1.9 -> 0 + 0.9 * 3.
    let g = with_pixels(16, 16, &[(0, 0)]);
    let p = with_pixels(16, 16, &[(0, 0), (0, 3)]);
    assert!(close(run(&g, &p).hd95, 2.7, 1e-12));
    let mut v: Vec<f64> = (0..10).rev().map(f64::from).collect();
    assert!(close(percentile_linear(&mut v, 0.95), 8.55, 1e-12));
    assert_eq!(percentile_linear(&mut [4.0], 0.95), 4.0);
    assert_eq!(percentile_linear(&mut [1.0, 1.0, 5.0, 5.0, 5.0], 0.95), 5.0);
}

#[test]
fn anisotropic_spacing() {
    let g = with_pixels(32, 32, &[(5, 5)]);
    let p = with_pixels(32, 32, &[(8, 9)]);
    let m = compute(g.view(), p.view(), Some([2.0, 0.5]));
    assert!(close(m.hd95, 40f64.sqrt(), 1e-15));
    // Spacing changes which contour pixel is nearest: unit spacing 3 (down), [2, 1] 4 (right).
    let g = with_pixels(32, 32, &[(10, 14), (13, 10)]);
    let p = with_pixels(32, 32, &[(10, 10)]);
    // Pooled: d_G(P) = 4, d_P(G) = {4, 6}; [4, 4, 6] -> 4 + 0.9 * 2.
    let m = compute(g.view(), p.view(), Some([2.0, 1.0]));
    assert!(close(m.hd95, 5.8, 1e-12), "{}", m.hd95);
    let m = compute(g.view(), p.view(), None);
    assert!(close(m.hd95, brute_hd95(&g, &p, [1.0, 1.0]), 1e-12));
}

#[test]
fn pearson_constant_cases() {
    let (e, f) = (empty(16, 16), Array2::from_elem((16, 16), true));
    let part = rect(16, 16, 2..5, 2..5);
    assert_eq!(run(&e, &e).pearson, 1.0);
    assert_eq!(run(&f, &f).pearson, 1.0);
    assert_eq!(run(&e, &f).pearson, 0.0);
    assert_eq!(run(&f, &e).pearson, 0.0);
    assert_eq!(run(&f, &part).pearson, 0.0);
    assert_eq!(run(&part, &e).pearson, 0.0);
    let inv = part.mapv(|b| !b);
    assert!(close(run(&part, &inv).pearson, -1.0, 1e-15));
}

#[test]
fn degenerate_shapes_do_not_panic() {
    let z = empty(0, 0);
    assert_eq!(run(&z, &z).hd95, 0.0);
    let line = Array2::from_elem((1, 7), true);
    let m = run(&line, &with_pixels(1, 7, &[(0, 0)]));
    assert!(close(
        m.hd95,
        brute_hd95(&line, &with_pixels(1, 7, &[(0, 0)]), [1.0, 1.0]),
        1e-12
    ));
}

#[test]
#[should_panic(expected = "differ in shape")]
fn shape_mismatch_panics() {
    run(&empty(4, 4), &empty(4, 5));
}

// ---- random masks against the brute force ------------------------------------------------

#[test]
fn random_masks_match_brute_force() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5be);
    for &(h, w, cases) in &[(8, 8, 60), (17, 31, 40), (64, 48, 12), (128, 128, 6)] {
        for case in 0..cases {
            let g = random_mask(&mut rng, h, w);
            let p = random_mask(&mut rng, h, w);
            for sp in [None, Some([0.7, 1.3])] {
                let m = compute(g.view(), p.view(), sp);
                let want = brute_hd95(&g, &p, sp.unwrap_or([1.0, 1.0]));
                assert!(
                    close(m.hd95, want, 1e-9),
                    "{h}x{w} case {case} {sp:?}: {} vs {want}",
                    m.hd95
                );
            }
            let m = run(&g, &p);
            assert!(
                close(m.pearson, brute_pearson(&g, &p), 1e-9),
                "{h}x{w} case {case}"
            );
        }
    }
}

#[test]
fn contour_matches_definition() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..20 {
        let m = random_mask(&mut rng, 23, 19);
        let mut s = Contours::new(23, 19);
        let got: Vec<(usize, usize)> = s.of(m.view()).iter().map(|&i| (i / 19, i % 19)).collect();
        assert_eq!(got, brute_contour(&m));
    }
}

#[test]
fn non_standard_layout_input() {
    // A transposed view iterates in logical order too; results must not depend on memory layout.
    let g = rect(40, 30, 5..20, 3..9);
    let p = rect(40, 30, 7..25, 4..12);
    let (gt, pt) = (g.t().to_owned(), p.t().to_owned());
    let a = compute(gt.view(), pt.view(), None);
    let b = compute(g.t(), p.t(), None);
    assert_eq!(a, b);
}

#[test]
fn envelope_and_per_query_minimum_agree() {
    // The two second-pass strategies (chosen by row density) must give identical values.
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for w in [1usize, 2, 3, 5, 17, 128] {
        for wgt in [1.0, 0.49, 1.69] {
            let f: Vec<f64> = (0..w)
                .map(|_| {
                    if rng.random_bool(0.3) {
                        f64::INFINITY
                    } else {
                        f64::from(rng.random_range(0u32..400))
                    }
                })
                .collect();
            let pos: Vec<f64> = (0..w).map(|c| c as f64).collect();
            let (mut v, mut z, mut out) = (vec![0; w], vec![0.0; w + 1], vec![0.0; w]);
            lower_envelope(&f, wgt, &mut v, &mut z, &mut out);
            for (q, &o) in out.iter().enumerate() {
                assert_eq!(o, row_min(&f, &pos, q as f64, wgt), "w {w} wgt {wgt} q {q}");
            }
        }
    }
}

#[test]
fn dense_rows_match_brute_force() {
    // Stripes put a contour pixel in every other column, so rows take the envelope path.
    let g = Array2::from_shape_fn((40, 40), |(r, c)| c % 2 == 0 && (3..30).contains(&r));
    let p = Array2::from_shape_fn((40, 40), |(r, c)| c % 3 == 0 && (8..37).contains(&r));
    for sp in [[1.0, 1.0], [0.6, 1.7]] {
        let m = compute(g.view(), p.view(), Some(sp));
        assert!(close(m.hd95, brute_hd95(&g, &p, sp), 1e-12), "{sp:?}");
    }
}
