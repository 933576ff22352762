use super::*;
use crate::engine::SupportSet;
use ndarray::Array2;

fn views<T>(arrays: &[Array2<T>]) -> Vec<ArrayView2<'_, T>> {
    arrays.iter().map(|a| a.view()).collect()
}

fn support_set<'a>(images: &'a [Array2<f32>], labels: &'a [Array2<bool>]) -> SupportSet<'a> {
    SupportSet {
        images: views(images),
        labels: views(labels),
    }
}

fn agreement(a: &Mask, b: &Mask) -> f64 {
    a.iter().zip(b.iter()).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}

fn dice(g: &Mask, p: &Mask) -> f64 {
    let tp = g.iter().zip(p.iter()).filter(|(a, b)| **a && **b).count() as f64;
    let total = (g.iter().filter(|v| **v).count() + p.iter().filter(|v| **v).count()) as f64;
    if total == 0.0 {
        1.0
    } else {
        2.0 * tp / total
    }
}

/// Label fusion at the full 128 resolution that takes each query's single most similar support.
fn best_support_at_full_resolution(support: &SupportSet<'_>, queries: &[Array2<f32>]) -> Vec<Mask> {
    let params = LabelFusionParams {
        resolution: 128,
        top_k: 1,
        ..LabelFusionParams::default()
    };
    LabelFusion::new(params)
        .segment(support, &views(queries))
        .unwrap()
}

/// Moves an image (or mask) by (dy, dx) pixels, replicating edges.
fn moved<T: Copy>(a: &Array2<T>, dy: i32, dx: i32) -> Array2<T> {
    let clamp = |v: i32| v.clamp(0, SIDE as i32 - 1) as usize;
    Array2::from_shape_fn((SIDE, SIDE), |(y, x)| {
        a[[clamp(y as i32 - dy), clamp(x as i32 - dx)]]
    })
}

#[test]
fn method_md_params_match_the_reference_formula() {
    let (images, labels) = reference::synthetic_set(10, 7);
    let support = support_set(&images[..7], &labels[..7]);
    let queries = views(&images[7..]);
    let fast = LabelFusion::new(LabelFusionParams::method_md())
        .segment(&support, &queries)
        .unwrap();
    let slow = reference::segment(&support, &queries, 4.0).unwrap();
    assert_eq!(fast.len(), 3);
    for (f, s) in fast.iter().zip(&slow) {
        // Only the fast exponential differs: at most a handful of pixels sitting exactly on the 0.5 vote.
        assert!(agreement(f, s) > 0.999, "agreement {}", agreement(f, s));
        assert!(s.iter().any(|v| *v));
    }
}

#[test]
fn default_segments_synthetic_hearts_well() {
    let (images, labels) = reference::synthetic_set(40, 11);
    let support = support_set(&images[..30], &labels[..30]);
    let queries = views(&images[30..]);
    for params in [LabelFusionParams::default(), LabelFusionParams::method_md()] {
        let masks = LabelFusion::new(params.clone())
            .segment(&support, &queries)
            .unwrap();
        let mean: f64 = masks
            .iter()
            .zip(&labels[30..])
            .map(|(m, l)| dice(l, m))
            .sum::<f64>()
            / 10.0;
        assert!(mean > 0.8, "{params:?}: mean dice {mean}");
    }
}

#[test]
fn alignment_recovers_a_shifted_atlas() {
    let (images, labels) = reference::synthetic_set(1, 3);
    let (dy, dx) = (-16, 11);
    let support_img = [moved(&images[0], dy, dx)];
    let support_lab = [moved(&labels[0], dy, dx)];
    let support = support_set(&support_img, &support_lab);
    let masks = best_support_at_full_resolution(&support, &images);
    assert_eq!(
        masks[0], labels[0],
        "the support's label moved back onto the query"
    );
    // Without alignment the label stays where the support has it.
    let unaligned = LabelFusionParams {
        search_radius: 0,
        ..LabelFusionParams::method_md()
    };
    let masks = LabelFusion::new(unaligned)
        .segment(&support, &views(&images))
        .unwrap();
    assert_eq!(masks[0], support_lab[0]);
}

#[test]
fn a_support_at_another_scale_is_rescaled_onto_the_query() {
    use crate::engine::align::{warp_image, warp_mask, Pose};
    let (images, labels) = reference::synthetic_set(1, 3);
    // The support shows the anatomy 10% larger than the query does (a zoomed acquisition), between
    // the scales the search offers (1.08 and its inverse).
    let zoom = Pose {
        degrees: 0.0,
        scale: 1.1,
    };
    let support_img = [warp_image(&images[0], zoom)];
    let support_lab = [warp_mask(&labels[0], zoom)];
    let support = support_set(&support_img, &support_lab);
    let scaled = best_support_at_full_resolution(&support, &images);
    let translation_only = LabelFusion::new(LabelFusionParams {
        resolution: 128,
        top_k: 1,
        scale_step: 0.0,
        ..LabelFusionParams::default()
    })
    .segment(&support, &views(&images))
    .unwrap();
    let (with, without) = (
        dice(&labels[0], &scaled[0]),
        dice(&labels[0], &translation_only[0]),
    );
    assert!(with > 0.95, "rescaled support: dice {with}");
    assert!(
        with > without + 0.03,
        "scale search {with} vs translation only {without}"
    );
}

#[test]
fn a_query_equal_to_a_support_gets_that_label_at_full_resolution() {
    let (images, labels) = reference::synthetic_set(12, 5);
    let support = support_set(&images, &labels);
    let masks = best_support_at_full_resolution(&support, &images[4..6]);
    assert_eq!(masks[0], labels[4]);
    assert_eq!(masks[1], labels[5]);
}

#[test]
fn results_do_not_depend_on_threads() {
    let (images, labels) = reference::synthetic_set(20, 9);
    let support = support_set(&images[..12], &labels[..12]);
    let queries = views(&images[12..]);
    let one = LabelFusion::new(LabelFusionParams {
        threads: 1,
        ..LabelFusionParams::default()
    })
    .segment(&support, &queries)
    .unwrap();
    let two = LabelFusion::new(LabelFusionParams {
        threads: 2,
        ..LabelFusionParams::default()
    })
    .segment(&support, &queries)
    .unwrap();
    assert_eq!(one, two);
}

#[test]
fn fewer_supports_than_top_k_and_no_queries_are_fine() {
    let (images, labels) = reference::synthetic_set(3, 1);
    let support = support_set(&images[..2], &labels[..2]);
    let lf = LabelFusion::new(LabelFusionParams::default());
    assert_eq!(lf.segment(&support, &views(&images[2..])).unwrap().len(), 1);
    assert!(lf.segment(&support, &[]).unwrap().is_empty());
}

#[test]
fn rejects_bad_inputs() {
    let (images, labels) = reference::synthetic_set(2, 1);
    let lf = LabelFusion::new(LabelFusionParams::default());
    let queries = views(&images);
    let empty = SupportSet {
        images: vec![],
        labels: vec![],
    };
    assert!(matches!(
        lf.segment(&empty, &queries),
        Err(EngineError::Invalid(_))
    ));
    let unpaired = SupportSet {
        images: views(&images),
        labels: views(&labels[..1]),
    };
    assert!(matches!(
        lf.segment(&unpaired, &queries),
        Err(EngineError::Invalid(_))
    ));
    let small = Array2::<f32>::zeros((64, 64));
    let support = support_set(&images, &labels);
    assert!(matches!(
        lf.segment(&support, &[small.view()]),
        Err(EngineError::Invalid(_))
    ));
    // Each spoils one parameter of the defaults.
    let spoilers: [fn(&mut LabelFusionParams); 7] = [
        |p| p.resolution = 32,
        |p| p.sigma = 0.0,
        |p| p.h_scale = f32::NAN,
        |p| p.search_radius = 100,
        |p| p.threshold = 1.0,
        |p| p.scale_step = 0.9,
        |p| p.scale_step = f32::NAN,
    ];
    for spoil in spoilers {
        let mut bad = LabelFusionParams::default();
        spoil(&mut bad);
        assert!(bad.validate().is_err(), "{bad:?}");
        let lf = LabelFusion::new(bad);
        assert!(matches!(
            lf.segment(&support, &queries),
            Err(EngineError::Invalid(_))
        ));
    }
}

#[test]
fn describe_is_stable_and_params_round_trip() {
    let lf = LabelFusion::new(LabelFusionParams::default());
    assert_eq!(
        lf.describe(),
        "label-fusion(res=64,sigma=2,top_k=4,h_scale=0.3,search=24,threshold=0.5,scale_step=0.08)"
    );
    assert_eq!(
        LabelFusion::new(LabelFusionParams::method_md()).describe(),
        "label-fusion(res=128,sigma=4,top_k=0,h_scale=1,search=0,threshold=0.5)"
    );
    // Threads change speed, not results, so they are not part of the description.
    let threaded = LabelFusion::new(LabelFusionParams {
        threads: 2,
        ..LabelFusionParams::default()
    });
    assert_eq!(threaded.describe(), lf.describe());
    let json = serde_json::to_string(&LabelFusionParams::default()).unwrap();
    let back: LabelFusionParams = serde_json::from_str(&json).unwrap();
    assert_eq!(back, LabelFusionParams::default());
    let partial: LabelFusionParams = serde_json::from_str(r#"{"top_k": 4}"#).unwrap();
    assert_eq!(
        partial,
        LabelFusionParams {
            top_k: 4,
            ..LabelFusionParams::default()
        }
    );
    assert!(serde_json::from_str::<LabelFusionParams>(r#"{"topk": 4}"#).is_err());
}
