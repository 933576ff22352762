//! Encapsulated transfer syntaxes: RLE Lossless, JPEG baseline, JPEG lossless, JPEG 2000.

mod j2k;
mod lossless_jpeg;

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use ndarray::Array3;

use super::super::testdata::{self, encapsulated, rle_fragment, JPEG_BASELINE, RLE_LOSSLESS};
use super::{arr, expect_minmax, fail, gray16, gray8, ok, rgb8, Img, GRAY8};
use crate::ingest::IngestError;

const JPEG_LOSSLESS: &str = "1.2.840.10008.1.2.4.57";
const JPEG_LOSSLESS_SV1: &str = "1.2.840.10008.1.2.4.70";

#[test]
fn rle_8bit_multi_frame() {
    let mut img = Img::new(3, 4, 8, "MONOCHROME2");
    img.frames = 3;
    let frames: Vec<Vec<u8>> = (0..3u8)
        .map(|f| GRAY8.iter().map(|v| v.wrapping_add(f * 7)).collect())
        .collect();
    let fragments = frames
        .iter()
        .map(|f| rle_fragment(std::slice::from_ref(f)))
        .collect();
    let i = ok(&img.file(RLE_LOSSLESS, encapsulated(fragments)));
    assert_eq!(i.transfer_syntax, RLE_LOSSLESS);
    for (n, f) in frames.iter().enumerate() {
        assert_eq!(gray8(&i, n), arr(3, 4, f));
    }
}

#[test]
fn rle_16bit_signed_with_rescale() {
    let stored = [-1000i16, -1, 0, 1, 255, 256, 32767, -32768];
    let img = Img::signed16(2, 4)
        .text(tags::RESCALE_SLOPE, VR::DS, "0.5")
        .text(tags::RESCALE_INTERCEPT, VR::DS, "10");
    let high = stored.iter().map(|v| (*v as u16 >> 8) as u8).collect();
    let low = stored.iter().map(|v| *v as u16 as u8).collect();
    let i = ok(&img.file(RLE_LOSSLESS, encapsulated(vec![rle_fragment(&[high, low])])));
    let rescaled: Vec<f64> = stored.iter().map(|&v| f64::from(v) * 0.5 + 10.0).collect();
    assert_eq!(gray16(&i, 0), arr(2, 4, &expect_minmax(&rescaled)));
}

#[test]
fn rle_rgb() {
    let rgb: Vec<u8> = (0..3 * 2 * 3).map(|v| (v * 13) as u8).collect();
    let planes: Vec<Vec<u8>> = (0..3)
        .map(|ch| rgb.iter().skip(ch).step_by(3).copied().collect())
        .collect();
    let img = Img::new(3, 2, 8, "RGB");
    let i = ok(&img.file(RLE_LOSSLESS, encapsulated(vec![rle_fragment(&planes)])));
    assert_eq!(
        rgb8(&i, 0),
        Array3::from_shape_vec((3, 2, 3), rgb).expect("shape")
    );
}

#[test]
fn rle_with_a_bad_header_is_malformed() {
    let img = Img::new(3, 4, 8, "MONOCHROME2");
    let good = rle_fragment(&[GRAY8.to_vec()]);
    let mut wrong_count = good.clone();
    wrong_count[0] = 2;
    let mut far_offset = good.clone();
    far_offset[4..8].copy_from_slice(&1_000_000u32.to_le_bytes());
    let mut huge_count = good.clone();
    huge_count[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
    for fragment in [wrong_count, far_offset, huge_count, good[..40].to_vec()] {
        let f = fail(&img.file(RLE_LOSSLESS, encapsulated(vec![fragment])));
        assert!(
            matches!(f.error, IngestError::Malformed(ref m) if m.starts_with("RLE fragment 0"))
        );
    }
    // One fragment for two frames.
    let mut two = img.clone();
    two.frames = 2;
    let f = fail(&two.file(RLE_LOSSLESS, encapsulated(vec![good])));
    assert!(f.error.to_string().contains("1 fragments for 2 frame(s)"));
    // A segment that decodes to too few bytes.
    let short = rle_fragment(&[GRAY8[..5].to_vec()]);
    let f = fail(&img.file(RLE_LOSSLESS, encapsulated(vec![short])));
    assert!(matches!(f.error, IngestError::Malformed(_)));
}

/// Mean absolute difference, for lossy codecs.
fn mean_abs_diff(a: impl Iterator<Item = u8>, b: impl Iterator<Item = u8>) -> f64 {
    let d: Vec<f64> = a.zip(b).map(|(x, y)| f64::from(x.abs_diff(y))).collect();
    d.iter().sum::<f64>() / d.len() as f64
}

fn smooth_gray(rows: usize, cols: usize) -> Vec<u8> {
    (0..rows * cols)
        .map(|i| ((i / cols) * 6 + (i % cols) * 3) as u8)
        .collect()
}

#[test]
fn jpeg_baseline_gray_multi_frame() {
    let (rows, cols) = (16, 24);
    let frames: Vec<Vec<u8>> = (0..2)
        .map(|f| smooth_gray(rows, cols).iter().map(|v| v + f * 40).collect())
        .collect();
    let file = testdata::gray8_instance(rows, cols, &frames.concat(), 2, "2.25.5", JPEG_BASELINE);
    let i = ok(&file);
    assert_eq!(i.transfer_syntax, JPEG_BASELINE);
    for (n, f) in frames.iter().enumerate() {
        let got = gray8(&i, n);
        assert_eq!(got.dim(), (rows, cols));
        let mad = mean_abs_diff(got.iter().copied(), f.iter().copied());
        assert!(mad < 3.0, "frame {n}: mean abs diff {mad}");
    }
}

/// JPEG Extended (Process 2 & 4): an 8-bit extended-sequential Huffman frame, i.e. the baseline stream
/// with its SOF0 marker declared as SOF1 (no 12-bit lossy encoder is at hand for the 12-bit case).
#[test]
fn jpeg_extended_sof1_gray() {
    const JPEG_EXTENDED: &str = "1.2.840.10008.1.2.4.51";
    let (rows, cols) = (16, 24);
    let pixels = smooth_gray(rows, cols);
    let mut jpeg = testdata::jpeg_gray8(&pixels, rows, cols);
    let sof = jpeg
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("a baseline frame header");
    jpeg[sof + 1] = 0xC1;
    let img = Img::new(rows as u16, cols as u16, 8, "MONOCHROME2");
    let i = ok(&img.file(JPEG_EXTENDED, encapsulated(vec![jpeg])));
    assert_eq!(i.transfer_syntax, JPEG_EXTENDED);
    let got = gray8(&i, 0);
    assert_eq!(got.dim(), (rows, cols));
    let mad = mean_abs_diff(got.iter().copied(), pixels.iter().copied());
    assert!(mad < 3.0, "mean abs diff {mad}");
}

#[test]
fn jpeg_baseline_ybr_becomes_rgb() {
    let (rows, cols) = (16, 16);
    let rgb: Vec<u8> = (0..rows * cols)
        .flat_map(|i| {
            let (r, c) = ((i / cols) as u8, (i % cols) as u8);
            [r * 12, c * 12, 128 + r * 4]
        })
        .collect();
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
        .encode(
            &rgb,
            cols as u32,
            rows as u32,
            image::ExtendedColorType::Rgb8,
        )
        .expect("jpeg");
    let img = Img::new(rows as u16, cols as u16, 8, "YBR_FULL_422");
    let i = ok(&img.file(JPEG_BASELINE, encapsulated(vec![jpeg])));
    let got = rgb8(&i, 0);
    assert_eq!(got.dim(), (rows, cols, 3));
    let mad = mean_abs_diff(got.iter().copied(), rgb.iter().copied());
    assert!(mad < 3.0, "mean abs diff {mad}");
}

#[test]
fn jpeg_whose_size_differs_from_the_attributes_is_malformed() {
    let jpeg = testdata::jpeg_gray8(&smooth_gray(16, 24), 16, 24);
    // The DICOM header claims a smaller image than the JPEG holds.
    let f = fail(
        &Img::new(8, 24, 8, "MONOCHROME2").file(JPEG_BASELINE, encapsulated(vec![jpeg.clone()])),
    );
    assert!(
        f.error.to_string().contains("JPEG fragment 0 is 16 x 24 with 1 component(s), but the DICOM attributes say 8 x 24 with 1"),
        "{}",
        f.error
    );
    // 8-bit samples in a 16-bit allocation.
    let f = fail(
        &Img::new(16, 24, 16, "MONOCHROME2").file(JPEG_BASELINE, encapsulated(vec![jpeg.clone()])),
    );
    assert!(f.error.to_string().contains("8-bit samples"), "{}", f.error);
    // Garbage after a valid SOI, and a cut stream.
    let img = Img::new(16, 24, 8, "MONOCHROME2");
    let garbage = [&[0xFF, 0xD8][..], &[0x5A; 64]].concat();
    for fragment in [garbage, jpeg[..jpeg.len() / 3].to_vec(), vec![1, 2, 3]] {
        if let Err(f) = super::super::decode(
            &img.file(JPEG_BASELINE, encapsulated(vec![fragment])),
            &super::LIMITS,
        ) {
            assert!(
                matches!(f.error, IngestError::Malformed(_)),
                "{:?}",
                f.error
            );
        }
    }
}

#[test]
fn jpeg_lossless_8_and_16_bit_are_exact() {
    let (rows, cols) = (5, 7);
    let eight: Vec<u16> = (0..rows * cols).map(|i| ((i * 37) % 256) as u16).collect();
    let sixteen: Vec<u16> = (0..rows * cols)
        .map(|i| ((i * 7919 + 11) % 65536) as u16)
        .collect();
    for (ts, predictor) in [
        (JPEG_LOSSLESS_SV1, 1),
        (JPEG_LOSSLESS, 7),
        (JPEG_LOSSLESS, 4),
    ] {
        let jpeg = lossless_jpeg::encode(&eight, rows, cols, 8, predictor);
        let img = Img::new(rows as u16, cols as u16, 8, "MONOCHROME2");
        let i = ok(&img.file(ts, encapsulated(vec![jpeg])));
        let want: Vec<u8> = eight.iter().map(|&v| v as u8).collect();
        assert_eq!(
            gray8(&i, 0),
            arr(rows, cols, &want),
            "{ts} predictor {predictor}"
        );

        let jpeg = lossless_jpeg::encode(&sixteen, rows, cols, 16, predictor);
        let img = Img::new(rows as u16, cols as u16, 16, "MONOCHROME2");
        let i = ok(&img.file(ts, encapsulated(vec![jpeg])));
        let rescaled: Vec<f64> = sixteen.iter().map(|&v| f64::from(v)).collect();
        assert_eq!(
            gray16(&i, 0),
            arr(rows, cols, &expect_minmax(&rescaled)),
            "{ts} predictor {predictor}"
        );
    }
}

#[test]
fn jpeg_lossless_signed_12_bit_with_rescale() {
    let (rows, cols) = (4, 4);
    let values: Vec<i16> = vec![
        -2048, -1000, -1, 0, 1, 100, 2047, 5, -5, 300, -300, 0, 12, 13, 14, 15,
    ];
    // Signed samples are coded as their 12-bit two's complement bit patterns.
    let coded: Vec<u16> = values.iter().map(|&v| (v as u16) & 0x0FFF).collect();
    let mut img = Img::signed16(rows, cols).text(tags::RESCALE_INTERCEPT, VR::DS, "-24");
    img.stored = 12;
    img.high = 11;
    let jpeg = lossless_jpeg::encode(&coded, rows, cols, 12, 1);
    let i = ok(&img.file(JPEG_LOSSLESS_SV1, encapsulated(vec![jpeg])));
    let rescaled: Vec<f64> = values.iter().map(|&v| f64::from(v) - 24.0).collect();
    assert_eq!(gray16(&i, 0), arr(rows, cols, &expect_minmax(&rescaled)));
}

#[test]
fn encapsulated_syntax_with_native_pixel_data_is_malformed() {
    let img = Img::new(3, 4, 8, "MONOCHROME2");
    let f = fail(&img.file(
        RLE_LOSSLESS,
        DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PrimitiveValue::from(GRAY8.to_vec()),
        ),
    ));
    assert!(
        f.error.to_string().contains("not encapsulated"),
        "{}",
        f.error
    );
    let f = fail(&img.file(RLE_LOSSLESS, encapsulated(Vec::new())));
    assert!(f.error.to_string().contains("no fragments"), "{}", f.error);
}

#[test]
fn rle_long_runs_and_literals_round_trip() {
    // Runs and literal stretches longer than one PackBits packet (128 bytes).
    let mut pixels = vec![7u8; 200];
    pixels.extend((0..=255u8).cycle().take(300).map(|v| v.wrapping_mul(31)));
    pixels.extend([1, 1, 2, 2, 2, 3]);
    let cols = pixels.len();
    let file = testdata::gray8_instance(1, cols, &pixels, 1, "2.25.3", RLE_LOSSLESS);
    assert_eq!(gray8(&ok(&file), 0), arr(1, cols, &pixels));
}

#[test]
fn native_syntax_with_encapsulated_pixel_data_is_malformed() {
    let img = Img::new(3, 4, 8, "MONOCHROME2");
    let file = img.file(
        testdata::EXPLICIT_VR_LE,
        encapsulated(vec![rle_fragment(&[GRAY8.to_vec()])]),
    );
    let f = fail(&file);
    assert!(
        f.error.to_string().contains("not a plain run of samples"),
        "{}",
        f.error
    );
}
