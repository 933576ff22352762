use super::*;
use crate::estimate::{map_signals, BatchSignals};
use crate::fit::{Calibration, CheckpointPoint, MaskStats};
use crate::SIDE;
use ndarray::Array2;

/// Segments each query with the label of its most similar support (global squared difference):
/// a tiny deterministic reverse segmenter for exercising the protocol.
struct NearestSupport;

impl ReverseSegmenter for NearestSupport {
    fn describe(&self) -> String {
        "nearest-support".into()
    }

    fn segment(
        &self,
        support: &SupportSet<'_>,
        queries: &[ArrayView2<'_, f32>],
    ) -> Result<Vec<Mask>, EngineError> {
        Ok(queries
            .iter()
            .map(|q| {
                let best = (0..support.images.len())
                    .min_by(|&a, &b| {
                        let da: f32 = (q - &support.images[a]).mapv(|v| v * v).sum();
                        let db: f32 = (q - &support.images[b]).mapv(|v| v * v).sum();
                        da.total_cmp(&db)
                    })
                    .expect("non-empty support");
                support.labels[best].to_owned()
            })
            .collect())
    }
}

/// A square of side `size` at (y, x), and an image that is bright inside it.
fn square(y: usize, x: usize, size: usize) -> (Gray, Mask) {
    let mask = Mask::from_shape_fn((SIDE, SIDE), |(r, c)| {
        r >= y && r < y + size && c >= x && c < x + size
    });
    let image = mask.mapv(|m| if m { 200.0 } else { 40.0 });
    (image, mask)
}

fn mask_with_area(area: usize) -> Mask {
    let mut m = Array2::from_elem((SIDE, SIDE), false);
    m.iter_mut().take(area).for_each(|v| *v = true);
    m
}

#[test]
fn draws_respect_min_area_support_size_and_seed() {
    let masks: Vec<Mask> = (0..30)
        .map(|i| mask_with_area(if i % 3 == 0 { 5 } else { 50 }))
        .collect();
    let params = SpeParams {
        min_area: 20,
        support_size: 8,
        repetitions: 4,
        seed: 7,
    };
    let (draws, count) = draw_supports(&masks, &params);
    assert_eq!(
        count,
        SupportCount {
            used: 8,
            rejected: 10
        }
    );
    assert_eq!(draws.len(), 4);
    for d in &draws {
        assert_eq!(d.len(), 8);
        assert!(
            d.iter().all(|&i| i % 3 != 0),
            "a rejected image was drawn: {d:?}"
        );
        assert!(d.windows(2).all(|w| w[0] < w[1]), "no duplicates");
    }
    assert_ne!(draws[0], draws[1], "repetitions draw different subsets");
    assert_eq!(
        draw_supports(&masks, &params).0,
        draws,
        "same seed, same draws"
    );
    let other = SpeParams { seed: 8, ..params };
    assert_ne!(draw_supports(&masks, &other).0, draws);
}

#[test]
fn small_candidate_sets_are_used_whole() {
    let masks: Vec<Mask> = (0..5).map(|_| mask_with_area(30)).collect();
    let (draws, count) = draw_supports(&masks, &SpeParams::default());
    assert_eq!(
        count,
        SupportCount {
            used: 5,
            rejected: 0
        }
    );
    assert!(draws.iter().all(|d| d == &vec![0, 1, 2, 3, 4]));
}

#[test]
fn nothing_predicted_means_insufficient_support() {
    let (image, _) = square(10, 10, 30);
    let reference =
        ReferenceSet::new(std::slice::from_ref(&image), vec![mask_with_area(100)]).unwrap();
    let images = vec![image.clone(); 3];
    let masks = vec![mask_with_area(0), mask_with_area(19), mask_with_area(3)];
    let outcome = pseudo_metrics(
        &NearestSupport,
        &images,
        &masks,
        &reference,
        &SpeParams::default(),
    )
    .unwrap();
    assert_eq!(
        outcome,
        PseudoOutcome::InsufficientSupport {
            support: SupportCount {
                used: 0,
                rejected: 3
            }
        }
    );
    let cal = toy_calibration();
    match map_signals(&signals(outcome, 3), &cal, None) {
        Estimate::InsufficientSupport { support, message } => {
            assert_eq!(support.rejected, 3);
            assert!(message.contains("3 batch images"), "{message}");
        }
        other => panic!("expected insufficient support, got {other:?}"),
    }
}

#[test]
fn pseudo_metrics_reflect_the_quality_of_the_support_masks() {
    let cases: Vec<(Gray, Mask)> = (0..6).map(|i| square(10 + 8 * i, 20 + 5 * i, 30)).collect();
    let ref_images: Vec<Gray> = cases.iter().map(|c| c.0.clone()).collect();
    let ref_labels: Vec<Mask> = cases.iter().map(|c| c.1.clone()).collect();
    let reference = ReferenceSet::new(&ref_images, ref_labels.clone()).unwrap();
    let params = SpeParams {
        support_size: 4,
        repetitions: 3,
        ..SpeParams::default()
    };
    // Perfect masks: every reference image's nearest support is itself, so pseudo dice is 1.
    let good = pseudo_metrics(
        &NearestSupport,
        &ref_images,
        &ref_labels,
        &reference,
        &params,
    )
    .unwrap();
    // Masks shifted by 6 pixels: worse.
    let shifted: Vec<Mask> = (0..6)
        .map(|i| square(16 + 8 * i, 26 + 5 * i, 30).1)
        .collect();
    let bad = pseudo_metrics(&NearestSupport, &ref_images, &shifted, &reference, &params).unwrap();
    let (
        PseudoOutcome::Ok {
            pseudo: g,
            per_repetition,
            ..
        },
        PseudoOutcome::Ok { pseudo: b, .. },
    ) = (&good, &bad)
    else {
        panic!("both have support")
    };
    assert_eq!(per_repetition.len(), 3);
    assert!(g.dice > b.dice + 0.1, "good {} vs bad {}", g.dice, b.dice);
    assert!(g.hd95 < b.hd95);
    let again =
        pseudo_metrics(&NearestSupport, &ref_images, &shifted, &reference, &params).unwrap();
    assert_eq!(again, bad, "same inputs and seed give the same numbers");
}

/// Metrics all at `v`, HD95 falling from 50 to 0 as `v` rises.
fn set(v: f64) -> MetricSet {
    MetricSet::uniform(v, 50.0 * (1.0 - v))
}

fn toy_calibration() -> Calibration {
    let points = [(0.2, 0.1), (0.4, 0.5), (0.6, 0.8), (0.7, 0.95)]
        .iter()
        .enumerate()
        .map(|(i, &(p, r))| {
            CheckpointPoint::from_pair(
                format!("c{i}"),
                set(r),
                PseudoOutcome::Ok {
                    pseudo: set(p),
                    per_repetition: vec![set(p)],
                    support: SupportCount {
                        used: 4,
                        rejected: 0,
                    },
                },
            )
        })
        .collect();
    Calibration::fit("nearest-support".into(), SpeParams::default(), 0, points).unwrap()
}

/// A batch's signals with only the pseudo outcome (as a pairs calibration reads it).
fn signals(outcome: PseudoOutcome, images: usize) -> BatchSignals {
    BatchSignals {
        outcome,
        agreement: None,
        images,
        masks: MaskStats {
            empty_share: 0.0,
            area_mean: 0.1,
            area_sd: 0.01,
        },
        distance: 0.0,
    }
}

#[test]
fn estimates_are_clamped_and_intervals_contain_them() {
    let cal = toy_calibration();
    // Far above the calibrated range: the raw mapping exceeds 1 and must be clamped.
    let outcome = PseudoOutcome::Ok {
        pseudo: set(0.99),
        per_repetition: vec![set(0.98), set(1.0)],
        support: SupportCount {
            used: 2,
            rejected: 1,
        },
    };
    let Estimate::Ok {
        metrics, support, ..
    } = map_signals(&signals(outcome, 3), &cal, None)
    else {
        panic!("expected an estimate")
    };
    assert_eq!(
        support,
        SupportCount {
            used: 2,
            rejected: 1
        }
    );
    for (metric, e) in &metrics {
        let (lo, hi) = metric.bounds();
        assert!(
            e.estimate >= lo && hi.is_none_or(|h| e.estimate <= h),
            "{metric:?} {e:?}"
        );
        assert!(
            e.interval[0] <= e.estimate && e.estimate <= e.interval[1],
            "{metric:?} {e:?}"
        );
        assert!(e.interval[0] >= lo, "{metric:?} {e:?}");
    }
    assert_eq!(metrics[&Metric::Dice].estimate, 1.0);
    assert_eq!(metrics[&Metric::Dice].pseudo, 0.99);
    assert!(metrics[&Metric::Hd95].estimate >= 0.0);
}

#[test]
fn hd95_in_mm_scales_estimate_and_interval_by_the_mean_pixel_size() {
    assert_eq!(mean_pixel_mm(&[]), None);
    assert_eq!(mean_pixel_mm(&[Some([0.5, 0.5]), None]), None);
    // Geometric mean per image (2x0.5 -> 1), then the mean over images: (1 + 3) / 2.
    assert_eq!(
        mean_pixel_mm(&[Some([2.0, 0.5]), Some([3.0, 3.0])]),
        Some(2.0)
    );
    assert_eq!(mean_pixel_mm(&[Some([0.0, 1.0])]), None);
    let mut metrics = BTreeMap::new();
    metrics.insert(
        Metric::Hd95,
        MetricEstimate {
            estimate: 4.0,
            interval: [3.0, 6.5],
            pseudo: 5.0,
            agreement: None,
        },
    );
    let support = SupportCount {
        used: 3,
        rejected: 0,
    };
    let ok = Estimate::Ok {
        metrics,
        support,
        anchor: None,
        warnings: Vec::new(),
    };
    let mm = hd95_mm(&ok, 0.75).unwrap();
    assert_eq!(mm.estimate, 3.0);
    assert_eq!(mm.interval, [2.25, 4.875]);
    let none = Estimate::InsufficientSupport {
        support,
        message: String::new(),
    };
    assert!(hd95_mm(&none, 0.75).is_none());
}

#[test]
fn pixel_order_ignores_the_order_images_come_in() {
    let img = |v: f32, at: usize| {
        let mut a = Array2::<f32>::zeros((2, 2));
        a[[at / 2, at % 2]] = v;
        a
    };
    let images = vec![img(3.0, 0), img(1.0, 3), img(1.0, 0), img(0.0, 0)];
    let order = order_by_pixels(&images);
    // All-zero first, then by the first differing value.
    assert_eq!(order, vec![3, 1, 2, 0]);
    let reversed: Vec<Gray> = images.iter().rev().cloned().collect();
    let sorted = |imgs: &[Gray]| -> Vec<Gray> {
        order_by_pixels(imgs)
            .into_iter()
            .map(|i| imgs[i].clone())
            .collect()
    };
    assert_eq!(sorted(&images), sorted(&reversed));
}
