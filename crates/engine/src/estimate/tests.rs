use super::*;
use crate::fit::{Calibration, CheckpointPoint, Draw};
use crate::spe::SpeParams;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

fn set(v: f64) -> MetricSet {
    MetricSet::uniform(v, 40.0 * (1.0 - v))
}

fn ok(pseudo: f64) -> PseudoOutcome {
    PseudoOutcome::Ok {
        pseudo: set(pseudo),
        per_repetition: vec![set(pseudo)],
        support: SupportCount {
            used: 4,
            rejected: 0,
        },
    }
}

fn stats(empty_share: f64, area_mean: f64) -> MaskStats {
    MaskStats {
        empty_share,
        area_mean,
        area_sd: 0.02,
    }
}

fn signals(pseudo: f64, images: usize) -> BatchSignals {
    BatchSignals {
        outcome: ok(pseudo),
        agreement: None,
        images,
        masks: stats(0.0, 0.2),
        distance: 0.01,
    }
}

/// Checkpoints with real Dice `reals`; a draw of `size` images reads pseudo = real - bias(size) + noise.
fn calibration(reals: &[f64], bias: impl Fn(usize) -> f64, noise: f64, seed: u64) -> Calibration {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let sizes = [4usize, 16, 64];
    let points = reals
        .iter()
        .enumerate()
        .map(|(i, &real)| {
            let mut draws = Vec::new();
            for &size in &sizes {
                let count = if size == 64 { 1 } else { 40 };
                for _ in 0..count {
                    // A draw's real value varies with its images; the pseudo metric follows it.
                    let spread = noise * (16.0 / size as f64).sqrt();
                    let r = (real + spread * (rng.random::<f64>() - 0.5)).clamp(0.0, 1.0);
                    let p = r - bias(size) + 0.5 * spread * normal(&mut rng);
                    draws.push(Draw {
                        size,
                        real: set(r),
                        pseudo: set(p),
                        agreement: None,
                    });
                }
            }
            let mut point =
                CheckpointPoint::from_pair(format!("c{i}"), set(real), ok(real - bias(64)));
            point.sha256 = Some(format!("digest{i}"));
            point.masks = Some(stats(0.0, 0.2));
            point.draws = draws;
            point
        })
        .collect();
    let mut cal = Calibration::fit("toy".into(), SpeParams::default(), 64, points).unwrap();
    cal.distance = Some([0.01, 0.002]);
    cal
}

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

const REALS: [f64; 6] = [0.4, 0.55, 0.7, 0.8, 0.86, 0.9];

fn dice(e: &Estimate) -> &MetricEstimate {
    match e {
        Estimate::Ok { metrics, .. } => &metrics[&Metric::Dice],
        other => panic!("expected an estimate, got {other:?}"),
    }
}

#[test]
fn each_batch_size_reads_the_mapping_fitted_for_its_support_count() {
    // Small batches read lower pseudo values for the same real Dice (fewer, less similar supports).
    let bias = |size: usize| 0.12 / (size as f64).sqrt();
    let cal = calibration(&REALS, bias, 0.0, 1);
    assert_eq!(
        cal.levels.iter().map(|l| l.size).collect::<Vec<_>>(),
        vec![4, 16, 64]
    );
    for size in [4usize, 16, 64] {
        let e = map_signals(&signals(0.8 - bias(size), size), &cal, None);
        let got = dice(&e).estimate;
        assert!((got - 0.8).abs() < 0.005, "size {size}: {got}");
    }
    // Between two levels the two mappings are interpolated on a log scale.
    let e = map_signals(&signals(0.8 - bias(8), 8), &cal, None);
    assert!((dice(&e).estimate - 0.8).abs() < 0.01, "{e:?}");
    // One mapping for every size (the old protocol) would read the small batch far too low.
    let top = &cal.levels[2].fits[&Metric::Dice];
    let old = top.predict(&set(0.8 - bias(4)), None);
    assert!(old < 0.8 - 0.03, "{old}");
}

#[test]
fn anchoring_removes_the_checkpoints_own_offset_from_the_curve() {
    let mut cal = calibration(&REALS, |_| 0.0, 0.0, 2);
    // Checkpoint 4 (real 0.86) sits 0.04 above what its pseudo value says on the common curve.
    for d in &mut cal.checkpoints[4].draws {
        d.real = set(d.real.dice + 0.04);
    }
    cal.checkpoints[4].real = set(0.90);
    let refit = Calibration::fit(
        cal.reverse.clone(),
        cal.params,
        cal.images,
        cal.checkpoints.clone(),
    )
    .unwrap();
    let batch = signals(0.86, 16);
    let plain = dice(&map_signals(&batch, &refit, None)).estimate;
    let anchored_estimate = map_signals(&batch, &refit, Some("digest4"));
    let anchored = dice(&anchored_estimate).estimate;
    assert!((anchored - 0.90).abs() < 0.01, "anchored {anchored}");
    assert!((plain - 0.90).abs() > 0.02, "unanchored {plain}");
    let Estimate::Ok { anchor, .. } = &anchored_estimate else {
        unreachable!()
    };
    assert_eq!(anchor.as_deref(), Some("c4"));
}

#[test]
fn intervals_cover_about_their_promise_on_data_with_a_known_answer() {
    let noise = 0.06;
    let cal = calibration(&REALS, |_| 0.05, noise, 3);
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let (mut covered, mut total) = (0, 0);
    let mut widths = BTreeMap::new();
    for size in [4usize, 16] {
        for _ in 0..400 {
            let real = 0.5 + 0.4 * rng.random::<f64>();
            let spread = noise * (16.0 / size as f64).sqrt();
            let r = real + spread * (rng.random::<f64>() - 0.5);
            let p = r - 0.05 + 0.5 * spread * normal(&mut rng);
            let e = map_signals(&signals(p, size), &cal, None);
            let d = dice(&e);
            total += 1;
            covered += usize::from(d.interval[0] <= r && r <= d.interval[1]);
            *widths.entry(size).or_insert(0.0) += (d.interval[1] - d.interval[0]) / 400.0;
        }
    }
    let coverage = covered as f64 / total as f64;
    assert!(coverage >= 0.9, "coverage {coverage}");
    assert!(
        coverage <= 0.995,
        "intervals far wider than needed: {coverage}"
    );
    assert!(
        widths[&4] > widths[&16],
        "small batches get wider intervals: {widths:?}"
    );
}

#[test]
fn warnings_name_what_is_unusual_about_the_batch() {
    let cal = calibration(&REALS, |_| 0.0, 0.0, 4);
    let codes = |s: &BatchSignals, anchor: Option<&str>| match map_signals(s, &cal, anchor) {
        Estimate::Ok { warnings, .. } => warnings.into_iter().map(|w| w.code).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    let usual = signals(0.8, 16);
    assert_eq!(codes(&usual, Some("digest3")), Vec::<String>::new());
    assert_eq!(codes(&usual, None), vec!["unanchored"]);
    let mut empty = usual.clone();
    empty.masks = stats(0.5, 0.2);
    assert_eq!(codes(&empty, Some("digest3")), vec!["empty_predictions"]);
    let mut area = usual.clone();
    area.masks = stats(0.0, 0.3);
    assert_eq!(codes(&area, Some("digest3")), vec!["predicted_area"]);
    let mut far = usual.clone();
    far.distance = 0.03;
    assert_eq!(codes(&far, Some("digest3")), vec!["extrapolation"]);
}

/// The test calibration with every anchored fit edited.
fn with_anchored_fits(edit: impl Fn(&mut Fit)) -> Calibration {
    let mut cal = calibration(&REALS, |_| 0.0, 0.0, 2);
    for level in &mut cal.levels {
        level.anchored_fits.values_mut().for_each(&edit);
    }
    cal
}

#[test]
fn anchored_estimates_move_by_the_part_of_the_mapped_change_that_is_real() {
    let with_slope = |slope: f64| with_anchored_fits(|fit| fit.within_slope = slope);
    let change = |cal: &Calibration| {
        let at = |p: f64| dice(&map_signals(&signals(p, 16), cal, Some("digest4"))).estimate;
        at(0.84) - at(0.80)
    };
    let (full, half) = (change(&with_slope(1.0)), change(&with_slope(0.5)));
    assert!(full > 0.02, "{full}");
    assert!((half - 0.5 * full).abs() < 1e-9, "full {full} half {half}");
}

#[test]
fn intervals_widen_with_how_far_an_estimate_moves_from_its_anchor_when_slopes_are_uncertain() {
    let with_spread = |sd: f64| with_anchored_fits(|fit| fit.within_slope_sd = sd);
    let width = |cal: &Calibration, p: f64| {
        let e = map_signals(&signals(p, 16), cal, Some("digest4"));
        let [lo, hi] = dice(&e).interval;
        hi - lo
    };
    let (sure, unsure) = (with_spread(0.0), with_spread(0.5));
    // Near the anchor's own value (pseudo 0.86 is checkpoint 4's) the spread hardly matters...
    assert!(width(&unsure, 0.86) - width(&sure, 0.86) < 0.01);
    // ...far from it, it does.
    assert!(width(&unsure, 0.70) > width(&sure, 0.70) + 0.05);
}

#[test]
fn the_curve_band_is_the_interval_of_an_unanchored_full_size_estimate() {
    let mut cal = calibration(&REALS, |_| 0.03, 0.08, 5);
    // As if shifted copies had been measured: their error widens both.
    let top = cal.levels.len() - 1;
    for fits in [&mut cal.fits, &mut cal.levels[top].fits] {
        fits.get_mut(&Metric::Dice).unwrap().shift_rmse = 0.02;
    }
    let fit = &cal.fits[&Metric::Dice];
    let half = curve_half_width(fit);
    assert!(half > 0.0, "{fit:?}");
    // One support repetition: no spread over repetitions, so the interval is the band's.
    let e = map_signals(&signals(0.6, 64), &cal, None);
    let [lo, hi] = dice(&e).interval;
    assert!(((hi - lo) / 2.0 - half).abs() < 1e-9, "{lo} {hi} {half}");
}
