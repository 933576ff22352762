use super::*;
use crate::SIDE;

/// A smooth image with structure in both directions, values in 0..255.
fn test_image() -> Gray {
    Array2::from_shape_fn((SIDE, SIDE), |(y, x)| {
        let (fy, fx) = (y as f32 / SIDE as f32, x as f32 / SIDE as f32);
        127.5 + 100.0 * (6.0 * fx).sin() * (4.0 * fy + 0.3).cos() + 20.0 * (fx - fy)
    })
}

/// An asymmetric mask: an off-centre rectangle plus a small blob.
fn test_mask() -> Mask {
    Array2::from_shape_fn((SIDE, SIDE), |(y, x)| {
        ((20..50).contains(&y) && (30..90).contains(&x)) || ((80..100).contains(&y) && x < 15)
    })
}

fn disc(radius: f64) -> Mask {
    let c = (SIDE as f64 - 1.0) / 2.0;
    Array2::from_shape_fn((SIDE, SIDE), |(y, x)| {
        (y as f64 - c).powi(2) + (x as f64 - c).powi(2) <= radius * radius
    })
}

fn max_abs_diff(a: &Gray, b: &Gray) -> f32 {
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn area(m: &Mask) -> usize {
    m.iter().filter(|&&v| v).count()
}

#[test]
fn identity_parameters_return_the_input() {
    let (img, mask) = (test_image(), test_mask());
    for shift in [
        Shift::Gamma { gamma: 1.0 },
        Shift::Contrast { factor: 1.0 },
        Shift::Brightness { offset: 0.0 },
        Shift::Noise {
            sigma: 0.0,
            seed: 3,
        },
        Shift::Blur { sigma: 0.0 },
        Shift::Downsample { factor: 1 },
        Shift::Rotate { degrees: 0.0 },
        Shift::Zoom { factor: 1.0 },
        Shift::Translate { dy: 0, dx: 0 },
        Shift::Speckle {
            sigma: 0.0,
            seed: 3,
        },
        Shift::BiasField { strength: 0.0 },
        Shift::Sharpen { amount: 0.0 },
    ] {
        let (out, m) = shift.apply(&img, Some(&mask), 0);
        assert!(max_abs_diff(&out, &img) <= 1e-4, "{}", shift.label());
        assert_eq!(m.as_ref(), Some(&mask), "{}", shift.label());
    }
}

#[test]
fn rotate_90_of_a_mask_is_numpy_rot90() {
    let mask = test_mask();
    let (_, rotated) = Shift::Rotate { degrees: 90.0 }.apply(&test_image(), Some(&mask), 0);
    // np.rot90 (counter-clockwise): out[i][j] = m[j][n-1-i].
    let expected = Array2::from_shape_fn((SIDE, SIDE), |(i, j)| mask[(j, SIDE - 1 - i)]);
    assert_eq!(rotated.unwrap(), expected);
    let (_, back) = Shift::Rotate { degrees: -90.0 }.apply(&test_image(), Some(&expected), 0);
    assert_eq!(back.unwrap(), mask);
}

#[test]
fn zoom_2_doubles_a_centred_disc() {
    let small = disc(20.0);
    let (_, zoomed) = Shift::Zoom { factor: 2.0 }.apply(&test_image(), Some(&small), 0);
    let ratio = area(&zoomed.unwrap()) as f64 / area(&small) as f64;
    assert!((ratio - 4.0).abs() <= 0.4, "area ratio {ratio}");
    // Zooming out shrinks it again; the border outside the source is background.
    let big = disc(40.0);
    let (img, shrunk) = Shift::Zoom { factor: 0.5 }.apply(&test_image(), Some(&big), 0);
    let ratio = area(&shrunk.unwrap()) as f64 / area(&big) as f64;
    assert!((ratio - 0.25).abs() <= 0.025, "area ratio {ratio}");
    assert!(img.iter().all(|v| v.is_finite()));
}

#[test]
fn translate_moves_content_and_clears_the_border() {
    let mask = test_mask();
    let (_, moved) = Shift::Translate { dy: 5, dx: -7 }.apply(&test_image(), Some(&mask), 0);
    let moved = moved.unwrap();
    for y in 0..SIDE {
        for x in 0..SIDE {
            let src = (y as isize - 5, x as isize + 7);
            let inside = src.0 >= 0 && src.1 < SIDE as isize;
            let want = inside && mask[(src.0 as usize, src.1 as usize)];
            assert_eq!(moved[(y, x)], want, "({y},{x})");
        }
    }
}

#[test]
fn noise_is_deterministic_per_seed_and_index() {
    let img = test_image();
    let shift = Shift::Noise {
        sigma: 10.0,
        seed: 42,
    };
    let (a, _) = shift.apply(&img, None, 3);
    let (b, _) = shift.apply(&img, None, 3);
    assert_eq!(a, b);
    let (c, _) = shift.apply(&img, None, 4);
    assert_ne!(a, c, "another image index gets other noise");
    let (d, _) = Shift::Noise {
        sigma: 10.0,
        seed: 43,
    }
    .apply(&img, None, 3);
    assert_ne!(a, d);
    // Roughly the requested sigma away from the clamped borders.
    let diffs: Vec<f32> = a.iter().zip(img.iter()).map(|(x, y)| x - y).collect();
    let sd = (diffs.iter().map(|d| d * d).sum::<f32>() / diffs.len() as f32).sqrt();
    assert!((7.0..=11.0).contains(&sd), "noise sd {sd}");
}

#[test]
fn flip_twice_is_identity() {
    let (img, mask) = (test_image(), test_mask());
    let (once, m1) = Shift::FlipHorizontal.apply(&img, Some(&mask), 0);
    assert_eq!(once[(10, 0)], img[(10, SIDE - 1)]);
    let (twice, m2) = Shift::FlipHorizontal.apply(&once, m1.as_ref(), 0);
    assert_eq!(twice, img);
    assert_eq!(m2.unwrap(), mask);
}

#[test]
fn values_stay_in_range_and_photometric_shifts_keep_the_mask() {
    let (img, mask) = (test_image(), test_mask());
    for shift in [
        Shift::Gamma { gamma: 0.6 },
        Shift::Gamma { gamma: 1.6 },
        Shift::Contrast { factor: 2.5 },
        Shift::Brightness { offset: 80.0 },
        Shift::Brightness { offset: -80.0 },
        Shift::Noise {
            sigma: 40.0,
            seed: 1,
        },
        Shift::Blur { sigma: 2.0 },
        Shift::Downsample { factor: 4 },
        Shift::Downsample { factor: 3 },
        Shift::Rotate { degrees: -12.0 },
        Shift::Zoom { factor: 0.88 },
        Shift::Zoom { factor: 1.12 },
        Shift::Translate { dy: 6, dx: -6 },
        Shift::FlipHorizontal,
        Shift::Speckle {
            sigma: 0.4,
            seed: 1,
        },
        Shift::BiasField { strength: 0.5 },
        Shift::Sharpen { amount: 3.0 },
        Shift::Posterize { levels: 8 },
    ] {
        let (out, m) = shift.apply(&img, Some(&mask), 7);
        assert_eq!(out.dim(), img.dim());
        assert!(
            out.iter().all(|v| (0.0..=255.0).contains(v)),
            "{}",
            shift.label()
        );
        if !shift.is_geometric() {
            assert_eq!(m.as_ref(), Some(&mask), "{}", shift.label());
        }
        assert!(shift.apply(&img, None, 0).1.is_none());
    }
}

#[test]
fn blur_and_downsample_keep_a_constant_image_and_smooth_an_edge() {
    let flat = Array2::from_elem((SIDE, SIDE), 90.0f32);
    for shift in [Shift::Blur { sigma: 1.5 }, Shift::Downsample { factor: 4 }] {
        let (out, _) = shift.apply(&flat, None, 0);
        assert!(max_abs_diff(&out, &flat) <= 1e-3, "{}", shift.label());
    }
    let step = Array2::from_shape_fn((SIDE, SIDE), |(_, x)| if x < 64 { 0.0 } else { 255.0 });
    let (out, _) = Shift::Blur { sigma: 2.0 }.apply(&step, None, 0);
    assert!(out[(5, 63)] > 0.0 && out[(5, 63)] < 127.5 && out[(5, 64)] > 127.5);
    assert_eq!(out[(5, 0)], 0.0);
}

#[test]
fn labels_and_serde_names() {
    assert_eq!(Shift::Gamma { gamma: 0.5 }.label(), "gamma 0.5");
    assert_eq!(Shift::Rotate { degrees: 10.0 }.label(), "rotate 10°");
    assert_eq!(Shift::Zoom { factor: 0.85 }.label(), "zoom 0.85");
    assert_eq!(Shift::Brightness { offset: 30.0 }.label(), "brightness +30");
    let json = serde_json::to_value(Shift::Translate { dy: 6, dx: -6 }).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"kind": "translate", "dy": 6, "dx": -6})
    );
    let back: Shift = serde_json::from_str(r#"{"kind":"flip_horizontal"}"#).unwrap();
    assert_eq!(back, Shift::FlipHorizontal);
}

#[test]
fn bias_field_sharpen_and_posterize_do_what_they_say() {
    let flat = Array2::from_elem((SIDE, SIDE), 100.0f32);
    let (biased, _) = Shift::BiasField { strength: 0.3 }.apply(&flat, None, 0);
    assert!((biased[(0, 0)] - 70.0).abs() < 1e-3);
    assert!((biased[(SIDE - 1, SIDE - 1)] - 130.0).abs() < 1e-3);
    let (sharp, _) = Shift::Sharpen { amount: 2.0 }.apply(&flat, None, 0);
    assert!(max_abs_diff(&sharp, &flat) <= 1e-3);
    let step = Array2::from_shape_fn((SIDE, SIDE), |(_, x)| if x < 64 { 50.0 } else { 200.0 });
    let (edge, _) = Shift::Sharpen { amount: 1.0 }.apply(&step, None, 0);
    assert!(
        edge[(5, 63)] < 50.0 && edge[(5, 64)] > 200.0,
        "overshoot at the edge"
    );
    let (poster, _) = Shift::Posterize { levels: 4 }.apply(&test_image(), None, 0);
    let mut values: Vec<u32> = poster.iter().map(|v| v.round() as u32).collect();
    values.sort_unstable();
    values.dedup();
    assert!(values.len() <= 4, "{values:?}");
    let (a, _) = Shift::Speckle {
        sigma: 0.2,
        seed: 5,
    }
    .apply(&flat, None, 0);
    let (b, _) = Shift::Speckle {
        sigma: 0.2,
        seed: 5,
    }
    .apply(&flat, None, 1);
    assert_ne!(a, b, "images of a batch get different speckle");
    assert_eq!(
        a,
        Shift::Speckle {
            sigma: 0.2,
            seed: 5
        }
        .apply(&flat, None, 0)
        .0
    );
}
