//! Decoding of every supported layout, resize arithmetic checked by hand, hostile inputs, and
//! directory pairing. Test images are written with the `image` crate.

use super::*;
use image::{ImageBuffer, Luma, LumaA, Rgb, Rgba};
use std::fs;

const MAX: u64 = DEFAULT_MAX_PIXELS;

fn encode<P, C>(img: &ImageBuffer<P, C>, format: ImageFormat) -> Vec<u8>
where
    P: image::Pixel + image::PixelWithColorType,
    [P::Subpixel]: image::EncodableLayout,
    C: std::ops::Deref<Target = [P::Subpixel]>,
{
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode test image");
    out.into_inner()
}

fn gray8(w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> Vec<u8> {
    encode(
        &ImageBuffer::from_fn(w, h, |x, y| Luma([f(x, y)])),
        ImageFormat::Png,
    )
}

/// A PNG whose IHDR declares `w` x `h` (valid CRCs); with `body`, a tiny IDAT and IEND follow, so
/// the header parses but the pixel data is far too short.
fn png_header(w: u32, h: u32, body: bool) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit gray, deflate, no filter, no interlace
    chunk(&mut png, b"IHDR", &ihdr);
    if body {
        chunk(
            &mut png,
            b"IDAT",
            &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        );
        chunk(&mut png, b"IEND", &[]);
    }
    png
}

fn chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    png.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = png.len();
    png.extend_from_slice(kind);
    png.extend_from_slice(data);
    let crc = crc32(&png[start..]);
    png.extend_from_slice(&crc.to_be_bytes());
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Bilinear sample with half-pixel centres and edge clamping (OpenCV INTER_LINEAR), written
/// independently of the PIL-style coefficients; the two agree when upscaling.
fn cv_bilinear(src: &Array2<f32>, r: usize, c: usize) -> f64 {
    let (h, w) = src.dim();
    let coord = |x: usize, n: usize| {
        let s = ((x as f64 + 0.5) * n as f64 / SIDE as f64 - 0.5).max(0.0);
        let i0 = (s.floor() as usize).min(n - 1);
        (i0, (i0 + 1).min(n - 1), s - i0 as f64)
    };
    let (r0, r1, fr) = coord(r, h);
    let (c0, c1, fc) = coord(c, w);
    let at = |r, c| f64::from(src[(r, c)]);
    let top = at(r0, c0) * (1.0 - fc) + at(r0, c1) * fc;
    let bottom = at(r1, c0) * (1.0 - fc) + at(r1, c1) * fc;
    top * (1.0 - fr) + bottom * fr
}

/// Every pixel of `g` within `tol` of [`cv_bilinear`] of `src`.
fn assert_bilinear(g: &Gray, src: &Array2<f32>, tol: f64) {
    for ((r, c), &v) in g.indexed_iter() {
        assert!(
            (f64::from(v) - cv_bilinear(src, r, c)).abs() < tol,
            "({r},{c})"
        );
    }
}

#[test]
fn gray8_at_working_size_is_unchanged() {
    let f = |x: u32, y: u32| ((x * 7 + y * 13) % 256) as u8;
    let img = decode_gray(&gray8(128, 128, f), "a.png", MAX).unwrap();
    assert_eq!(img.dim(), (SIDE, SIDE));
    for ((r, c), &v) in img.indexed_iter() {
        assert_eq!(v, f32::from(f(c as u32, r as u32)));
    }
}

#[test]
fn gray16_is_divided_by_257() {
    let vals = [0u16, 257, 1000, 32639, 32640, 65535];
    let img = ImageBuffer::from_fn(128, 128, |x, _| Luma([vals[x as usize % vals.len()]]));
    let bytes = encode(&img, ImageFormat::Png);
    let g = decode_gray(&bytes, "g16.png", MAX).unwrap();
    for c in 0..vals.len() {
        assert_eq!(g[(5, c)], f32::from(vals[c]) / 257.0);
    }
    assert_eq!(g[(0, 5)], 255.0);
    // Label: 32639 / 257 = 127 exactly is background, 32640 is foreground.
    let m = decode_label(&bytes, "g16.png", MAX).unwrap();
    let fg: Vec<bool> = (0..vals.len()).map(|c| m[(9, c)]).collect();
    assert_eq!(fg, [false, false, false, false, true, true]);
}

#[test]
fn rgb_and_rgba_use_pil_luma_and_ignore_alpha() {
    let colours = [
        [10u8, 200, 30],
        [255, 0, 0],
        [0, 0, 255],
        [77, 77, 77],
        [255, 255, 255],
    ];
    let pick = |x: u32| colours[x as usize % colours.len()];
    let rgb = ImageBuffer::from_fn(128, 128, |x, _| Rgb(pick(x)));
    let rgba = ImageBuffer::from_fn(128, 128, |x, y| {
        let [r, g, b] = pick(x);
        Rgba([r, g, b, (y * 2) as u8])
    });
    let a = decode_gray(&encode(&rgb, ImageFormat::Png), "rgb.png", MAX).unwrap();
    let b = decode_gray(&encode(&rgba, ImageFormat::Png), "rgba.png", MAX).unwrap();
    assert_eq!(a, b);
    // PIL: (r*19595 + g*38470 + b*7471 + 0x8000) >> 16.
    let want = [
        (10 * 19595 + 200 * 38470 + 30 * 7471 + 0x8000) >> 16,
        76,
        29,
        77,
        255,
    ];
    for (c, &w) in want.iter().enumerate() {
        assert_eq!(a[(3, c)], w as f32, "colour {c}");
    }
    assert_eq!(want[0], 124); // 0.299 * 10 + 0.587 * 200 + 0.114 * 30 = 123.81
}

#[test]
fn gray_alpha_and_rgb16() {
    let la = ImageBuffer::from_fn(128, 128, |x, _| LumaA([x as u8, 9]));
    let g = decode_gray(&encode(&la, ImageFormat::Png), "la.png", MAX).unwrap();
    assert_eq!(g[(0, 100)], 100.0);
    let rgb16 = ImageBuffer::from_fn(128, 128, |_, _| Rgb([65535u16, 65535, 65535]));
    let g = decode_gray(&encode(&rgb16, ImageFormat::Png), "rgb16.png", MAX).unwrap();
    assert!(g.iter().all(|&v| v == 255.0));
}

#[test]
fn jpeg_gray_and_rgb() {
    let flat = ImageBuffer::from_fn(128, 128, |_, _| Luma([100u8]));
    let g = decode_gray(&encode(&flat, ImageFormat::Jpeg), "flat.jpg", MAX).unwrap();
    assert!(
        g.iter().all(|&v| (v - 100.0).abs() <= 1.0),
        "{:?}",
        g[(0, 0)]
    );
    let ramp = ImageBuffer::from_fn(256, 64, |x, _| Rgb([x as u8, x as u8, x as u8]));
    let g = decode_gray(&encode(&ramp, ImageFormat::Jpeg), "ramp.jpeg", MAX).unwrap();
    assert_eq!(g.dim(), (SIDE, SIDE));
    // 2x horizontal downscale of a ramp: output column x averages source 2x and 2x + 1.
    assert!((g[(64, 50)] - 100.5).abs() < 3.0, "{}", g[(64, 50)]);
}

#[test]
fn upscale_2x2_by_hand() {
    let src = [[0u8, 100], [200, 255]];
    let g = decode_gray(
        &gray8(2, 2, |x, y| src[y as usize][x as usize]),
        "tiny.png",
        MAX,
    )
    .unwrap();
    // Corners clamp to the source corners.
    assert_eq!(
        (g[(0, 0)], g[(0, 127)], g[(127, 0)], g[(127, 127)]),
        (0.0, 100.0, 200.0, 255.0)
    );
    // Output 63 samples source coordinate 63.5 / 64 - 0.5 = 0.4921875 on both axes.
    let t = 0.492_187_5;
    let top = 100.0 * t;
    let bottom = 200.0 * (1.0 - t) + 255.0 * t;
    assert!((f64::from(g[(63, 63)]) - (top * (1.0 - t) + bottom * t)).abs() < 1e-4);
    let src = Array2::from_shape_fn((2, 2), |(r, c)| f32::from(src[r][c]));
    assert_bilinear(&g, &src, 1e-4);
}

#[test]
fn upscale_non_square_matches_half_pixel_bilinear() {
    let f = |x: u32, y: u32| ((x * 37 + y * 91) % 256) as u8;
    let g = decode_gray(&gray8(50, 33, f), "odd.png", MAX).unwrap();
    let src = Array2::from_shape_fn((33, 50), |(r, c)| f32::from(f(c as u32, r as u32)));
    assert_bilinear(&g, &src, 1e-3);
}

#[test]
fn downscale_2x_is_antialiased() {
    // PIL weights for an exact 2x reduction: 1/8, 3/8, 3/8, 1/8 over source 2x-1 ..= 2x+2.
    let g = decode_gray(&gray8(256, 256, |x, _| x as u8), "big.png", MAX).unwrap();
    for c in 1..127 {
        assert!(
            (g[(40, c)] - (2 * c) as f32 - 0.5).abs() < 1e-4,
            "col {c}: {}",
            g[(40, c)]
        );
    }
    let flat = decode_gray(&gray8(300, 700, |_, _| 77), "flat.png", MAX).unwrap();
    assert!(flat.iter().all(|&v| (v - 77.0).abs() < 1e-4));
}

#[test]
fn labels_threshold_and_nearest() {
    // 4x4 -> 128x128: each source pixel becomes a 32x32 block; > 127 is foreground.
    let vals = [0u8, 127, 128, 255];
    let m = decode_label(&gray8(4, 4, |x, _| vals[x as usize]), "l.png", MAX).unwrap();
    for ((_, c), &v) in m.indexed_iter() {
        assert_eq!(v, vals[c / 32] > 127);
    }
    // 3 -> 128: source floor((x + 0.5) * 3 / 128) switches at 43 and 85.
    let m = decode_label(
        &gray8(3, 1, |x, _| if x == 1 { 255 } else { 0 }),
        "l3.png",
        MAX,
    )
    .unwrap();
    let fg: Vec<usize> = (0..128).filter(|&c| m[(0, c)]).collect();
    assert_eq!(fg, (43..85).collect::<Vec<_>>());
    assert!((0..128).all(|r| m[(r, 50)]));
    // RGB labels go through luma, too.
    let rgb = ImageBuffer::from_fn(128, 128, |x, _| {
        if x < 64 {
            Rgb([255u8, 255, 255])
        } else {
            Rgb([0, 0, 0])
        }
    });
    let m = decode_label(&encode(&rgb, ImageFormat::Png), "rgb.png", MAX).unwrap();
    assert!(m[(0, 63)] && !m[(0, 64)]);
}

#[test]
fn truncated_png_names_the_input() {
    let bytes = gray8(128, 128, |x, y| (x ^ y) as u8);
    let err = decode_gray(&bytes[..bytes.len() / 2], "scan-17.png", MAX).unwrap_err();
    assert!(
        matches!(&err, EngineError::ImageData { name, .. } if name == "scan-17.png"),
        "{err:?}"
    );
    assert!(err.to_string().contains("scan-17.png"));
    // Only the signature and header: dimensions parse, pixel data is missing.
    let err = decode_label(&png_header(16, 16, false), "hdr.png", MAX).unwrap_err();
    assert!(matches!(err, EngineError::ImageData { .. }), "{err:?}");
}

#[test]
fn garbage_is_rejected() {
    let mut state = 0x1234_5678_u32;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    for (name, bytes) in [
        ("empty", Vec::new()),
        ("noise", noise.clone()),
        ("gif", b"GIF89a\x01\x00\x01\x00".to_vec()),
        (
            "png-then-noise",
            [b"\x89PNG\r\n\x1a\n".as_slice(), &noise].concat(),
        ),
        (
            "jpeg-then-noise",
            [b"\xff\xd8\xff".as_slice(), &noise].concat(),
        ),
        ("zero-size", png_header(0, 0, true)),
        ("no-pixels", png_header(16, 16, true)),
    ] {
        let err = decode_gray(&bytes, name, MAX).unwrap_err();
        assert!(
            matches!(&err, EngineError::ImageData { name: n, .. } if n == name),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn huge_declared_size_is_refused_before_decoding() {
    let err = decode_gray(&png_header(100_000, 100_000, true), "bomb.png", MAX).unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::ImageTooLarge {
                width: 100_000,
                height: 100_000,
                max_pixels: MAX,
                ..
            }
        ),
        "{err:?}"
    );
    let err = decode_label(&gray8(128, 128, |_, _| 0), "small.png", 100).unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::ImageTooLarge {
                width: 128,
                height: 128,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn minmax_stretches_and_handles_constants() {
    let img = Array2::from_shape_fn((4, 4), |(r, c)| (10 + r * 4 + c) as f32);
    let n = minmax(img.view());
    assert_eq!(n[(0, 0)], 0.0);
    assert_eq!(n[(3, 3)], 1.0);
    assert!((n[(1, 2)] - 6.0 / 15.0).abs() < 1e-7);
    assert!(minmax(Array2::from_elem((3, 3), 42.0).view())
        .iter()
        .all(|&v| v == 0.0));
}

#[test]
fn load_gray_reports_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.png");
    let err = load_gray(&path, MAX).unwrap_err();
    assert!(
        matches!(&err, EngineError::Image { path: p, .. } if *p == path),
        "{err:?}"
    );
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

/// Loading the labelled directory at `root` fails with an error that says every one of `parts`.
fn assert_load_fails_naming(root: &Path, parts: &[&str]) {
    let err = load_labelled_dir(root, MAX).unwrap_err();
    let text = err.to_string();
    assert!(parts.iter().all(|p| text.contains(p)), "{err}");
}

#[test]
fn labelled_dir_pairs_by_stem_sorted() {
    let root = tempfile::tempdir().unwrap();
    let (images, labels) = (root.path().join("images"), root.path().join("labels"));
    let jpeg = encode(
        &ImageBuffer::from_fn(128, 128, |_, _| Luma([60u8])),
        ImageFormat::Jpeg,
    );
    write(&images, "b.png", &gray8(128, 128, |_, _| 20));
    write(&images, "a.JPG", &jpeg);
    write(&images, "notes.txt", b"ignored");
    write(&images, "._a.png", b"resource fork");
    write(
        &labels,
        "a.png",
        &gray8(128, 128, |x, _| if x < 10 { 255 } else { 0 }),
    );
    write(&labels, "b.png", &gray8(64, 64, |_, _| 255));
    let set = load_labelled_dir(root.path(), MAX).unwrap();
    assert_eq!(set.names, ["a", "b"]);
    assert!((set.images[0][(0, 0)] - 60.0).abs() <= 1.0);
    assert_eq!(set.images[1][(0, 0)], 20.0);
    assert_eq!(set.labels[0].iter().filter(|&&v| v).count(), 10 * 128);
    assert!(set.labels[1].iter().all(|&v| v));

    write(&images, "c.png", &gray8(8, 8, |_, _| 0));
    assert_load_fails_naming(root.path(), &["c.png", "no label"]);
    fs::remove_file(images.join("c.png")).unwrap();
    write(&labels, "d.png", &gray8(8, 8, |_, _| 0));
    assert_load_fails_naming(root.path(), &["d.png", "no image"]);
    fs::remove_file(labels.join("d.png")).unwrap();
    write(&images, "b.jpeg", &jpeg);
    assert_load_fails_naming(root.path(), &["same name"]);
    fs::remove_file(images.join("b.jpeg")).unwrap();
    // A corrupt member fails the whole load, naming the file.
    write(&labels, "b.png", b"\x89PNG\r\n\x1a\nbroken");
    assert_load_fails_naming(root.path(), &["b.png"]);
}

#[test]
fn empty_or_missing_dirs_are_errors() {
    let root = tempfile::tempdir().unwrap();
    assert!(matches!(
        load_labelled_dir(root.path(), MAX),
        Err(EngineError::Io { .. })
    ));
    fs::create_dir_all(root.path().join("images")).unwrap();
    fs::create_dir_all(root.path().join("labels")).unwrap();
    write(&root.path().join("images"), "readme.md", b"x");
    let err = load_labelled_dir(root.path(), MAX).unwrap_err();
    assert!(matches!(err, EngineError::Invalid(_)), "{err:?}");
}

#[test]
fn huge_declared_jpeg_is_refused() {
    let mut jpeg = encode(
        &ImageBuffer::from_fn(16, 16, |_, _| Luma([9u8])),
        ImageFormat::Jpeg,
    );
    // Patch the frame header (SOF0: FF C0, length, precision, height, width) to 60000 x 60000.
    let sof = jpeg
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("baseline JPEG");
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
    let err = decode_gray(&jpeg, "bomb.jpg", MAX).unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::ImageTooLarge {
                width: 60_000,
                height: 60_000,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn rank_normalisation_is_blind_to_monotone_intensity_changes() {
    let image = Array2::from_shape_fn((SIDE, SIDE), |(y, x)| ((y * 7 + x * 3) % 251) as f32);
    let base = rank_normalise(image.view());
    for change in [
        |v: f32| 255.0 * (v / 255.0).powf(0.5),
        |v: f32| 255.0 * (v / 255.0).powf(2.0),
        |v: f32| 0.4 * v + 30.0,
    ] {
        assert_eq!(rank_normalise(image.mapv(change).view()), base);
    }
    assert!(base.iter().all(|v| (0.0..=1.0).contains(v)));
    // Ties share one value; a constant image is flat.
    let flat = rank_normalise(Array2::from_elem((4, 4), 9.0f32).view());
    assert!(flat.iter().all(|&v| v == 0.5));
}

#[test]
fn regional_ranks_barely_move_under_a_smooth_gain_that_moves_whole_image_ranks() {
    // Anatomy-like texture: a bright disc on a varying background.
    let image = Array2::from_shape_fn((SIDE, SIDE), |(y, x)| {
        let (dy, dx) = (y as f32 - 64.0, x as f32 - 50.0);
        let disc = if dy * dy + dx * dx < 900.0 { 90.0 } else { 0.0 };
        60.0 + disc + 25.0 * ((x as f32) * 0.21).sin() * ((y as f32) * 0.13).cos()
    });
    // A +-30% gain ramp across the image (the accuracy benchmark's bias field).
    let biased = Array2::from_shape_fn((SIDE, SIDE), |(y, x)| {
        image[[y, x]] * (1.0 + 0.3 * (x as f32 / (SIDE - 1) as f32 * 2.0 - 1.0))
    });
    let moved = |a: &Gray, b: &Gray| (a - b).mapv(f32::abs).mean().unwrap();
    let regional = moved(
        &rank_normalise(image.view()),
        &rank_normalise(biased.view()),
    );
    let whole = |img: &Gray| {
        let mut sorted: Vec<f32> = img.iter().copied().collect();
        sorted.sort_by(f32::total_cmp);
        img.mapv(|v| sorted.partition_point(|&s| s < v) as f32 / (sorted.len() - 1) as f32)
    };
    let global = moved(&whole(&image), &whole(&biased));
    assert!(
        regional < 0.5 * global,
        "regional {regional}, whole-image {global}"
    );
    assert!(regional < 0.05, "{regional}");
}

#[test]
fn rank_normalisation_takes_images_smaller_than_its_grid() {
    let tiny = Array2::from_shape_vec((2, 3), vec![1.0f32, 5.0, 3.0, 2.0, 4.0, 6.0]).unwrap();
    let ranked = rank_normalise(tiny.view());
    assert!(ranked
        .iter()
        .all(|v| v.is_finite() && (0.0..=1.0).contains(v)));
    assert!(ranked[[0, 1]] > ranked[[0, 2]] && ranked[[0, 2]] > ranked[[0, 0]]);
}
