//! DICOM files are built in code with dicom-rs; expected display values are computed here from the
//! rule in the module documentation, independently of `map`.

mod codecs;
mod rejections;

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use ndarray::{Array2, Array3};

use super::testdata::{
    self, write_file, DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE, EXPLICIT_VR_LE, IMPLICIT_VR_LE,
};
use super::{decode, is_dicom, Failure, Instance, Limits};
use crate::ingest::{IngestError, Pixels};

type El = DataElement<InMemDicomObject>;

const LIMITS: Limits = Limits {
    max_pixels: 1 << 16,
    max_frames: 8,
    max_total_pixels: 1 << 18,
};
const SOP_INSTANCE: &str = "1.2.826.0.1.3680043.2.1125.1.42";
const CT_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.2";

/// Pixel attributes of an image to write, as they will be stored.
#[derive(Clone)]
struct Img {
    rows: u16,
    cols: u16,
    frames: usize,
    allocated: u16,
    stored: u16,
    high: u16,
    signed: bool,
    pi: &'static str,
    extra: Vec<El>,
}

impl Img {
    fn new(rows: u16, cols: u16, allocated: u16, pi: &'static str) -> Img {
        Img {
            rows,
            cols,
            frames: 1,
            allocated,
            stored: allocated,
            high: allocated - 1,
            signed: false,
            pi,
            extra: Vec::new(),
        }
    }

    /// Signed 16-bit MONOCHROME2 samples.
    fn signed16(rows: usize, cols: usize) -> Img {
        let mut img = Img::new(rows as u16, cols as u16, 16, "MONOCHROME2");
        img.signed = true;
        img
    }

    fn with(mut self, element: El) -> Img {
        self.extra.push(element);
        self
    }

    fn text(self, tag: dicom_core::Tag, vr: VR, value: &str) -> Img {
        self.with(DataElement::new(tag, vr, value))
    }

    fn samples(&self) -> u16 {
        if self.pi.starts_with("RGB") || self.pi.starts_with("YBR") {
            3
        } else {
            1
        }
    }

    /// The data set without Pixel Data. Every object carries a patient name that must never be echoed.
    fn object(&self) -> InMemDicomObject {
        let us = |tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
        let mut obj = InMemDicomObject::from_element_iter([
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, CT_IMAGE),
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, SOP_INSTANCE),
            DataElement::new(tags::PATIENT_NAME, VR::PN, "SECRET^NAME"),
            DataElement::new(tags::PATIENT_ID, VR::LO, "SECRET-ID"),
            us(tags::SAMPLES_PER_PIXEL, self.samples()),
            DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, self.pi),
            us(tags::ROWS, self.rows),
            us(tags::COLUMNS, self.cols),
            us(tags::BITS_ALLOCATED, self.allocated),
            us(tags::BITS_STORED, self.stored),
            us(tags::HIGH_BIT, self.high),
            us(tags::PIXEL_REPRESENTATION, u16::from(self.signed)),
        ]);
        if self.frames != 1 {
            obj.put(DataElement::new(
                tags::NUMBER_OF_FRAMES,
                VR::IS,
                self.frames.to_string(),
            ));
        }
        for e in &self.extra {
            obj.put(e.clone());
        }
        obj
    }

    fn file(&self, ts: &str, pixel_data: El) -> Vec<u8> {
        let mut obj = self.object();
        obj.put(pixel_data);
        write_file(obj, ts)
    }

    /// Native pixel data as OB bytes.
    fn bytes(&self, ts: &str, data: &[u8]) -> Vec<u8> {
        self.file(
            ts,
            DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::from(data)),
        )
    }

    /// Native pixel data as OW words.
    fn words(&self, ts: &str, data: &[u16]) -> Vec<u8> {
        let value = PrimitiveValue::U16(data.iter().copied().collect());
        self.file(ts, DataElement::new(tags::PIXEL_DATA, VR::OW, value))
    }
}

fn ok(bytes: &[u8]) -> Instance {
    decode(bytes, &LIMITS).unwrap_or_else(|f| panic!("decode failed: {}", f.error))
}

/// Decodes and expects a failure whose message does not leak the patient attributes.
fn fail(bytes: &[u8]) -> Failure {
    fail_with(bytes, &LIMITS)
}

fn fail_with(bytes: &[u8], limits: &Limits) -> Failure {
    let Err(f) = decode(bytes, limits) else {
        panic!("decode succeeded on a file it should refuse")
    };
    let text = f.error.to_string();
    assert!(!text.contains("SECRET"), "patient data in error: {text}");
    f
}

fn gray8(i: &Instance, frame: usize) -> &Array2<u8> {
    match &i.frames[frame].pixels {
        Pixels::Gray8(a) => a,
        other => panic!("expected Gray8, got {other:?}"),
    }
}

fn gray16(i: &Instance, frame: usize) -> &Array2<u16> {
    match &i.frames[frame].pixels {
        Pixels::Gray16(a) => a,
        other => panic!("expected Gray16, got {other:?}"),
    }
}

fn rgb8(i: &Instance, frame: usize) -> &Array3<u8> {
    match &i.frames[frame].pixels {
        Pixels::Rgb8(a) => a,
        other => panic!("expected Rgb8, got {other:?}"),
    }
}

fn arr<T: Clone>(rows: usize, cols: usize, v: &[T]) -> Array2<T> {
    Array2::from_shape_vec((rows, cols), v.to_vec()).expect("shape")
}

/// Rule 3 without a window: min-max of the rescaled values onto 0..=65535, rounded.
fn expect_minmax(rescaled: &[f64]) -> Vec<u16> {
    let lo = rescaled.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = rescaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    rescaled
        .iter()
        .map(|v| {
            if hi > lo {
                ((v - lo) * 65535.0 / (hi - lo)).round() as u16
            } else {
                0
            }
        })
        .collect()
}

/// Rule 3 with a window (PS3.3 C.11.2.1.2.1).
fn expect_window(rescaled: &[f64], c: f64, w: f64) -> Vec<u16> {
    rescaled
        .iter()
        .map(|&x| {
            if x <= c - 0.5 - (w - 1.0) / 2.0 {
                0
            } else if x > c - 0.5 + (w - 1.0) / 2.0 {
                65535
            } else {
                (((x - (c - 0.5)) / (w - 1.0) + 0.5) * 65535.0).round() as u16
            }
        })
        .collect()
}

const GRAY8: [u8; 12] = [0, 1, 2, 3, 127, 128, 129, 200, 250, 253, 254, 255];

#[test]
fn gray8_identity_is_kept_exactly_in_every_native_syntax() {
    for ts in [
        IMPLICIT_VR_LE,
        EXPLICIT_VR_LE,
        EXPLICIT_VR_BE,
        DEFLATED_EXPLICIT_VR_LE,
    ] {
        let file = Img::new(3, 4, 8, "MONOCHROME2").bytes(ts, &GRAY8);
        assert!(is_dicom(&file));
        let i = ok(&file);
        assert_eq!(i.transfer_syntax, ts);
        assert_eq!(i.sop_class_uid.as_deref(), Some(CT_IMAGE));
        assert_eq!(i.sop_instance_uid.as_deref(), Some(SOP_INSTANCE));
        assert_eq!(i.frames.len(), 1);
        assert_eq!(gray8(&i, 0), arr(3, 4, &GRAY8), "{ts}");
        assert_eq!(i.frames[0].spacing_mm, None);
    }
}

#[test]
fn monochrome1_8bit_is_inverted() {
    let i = ok(&Img::new(3, 4, 8, "MONOCHROME1").bytes(EXPLICIT_VR_LE, &GRAY8));
    let inverted: Vec<u8> = GRAY8.iter().map(|v| 255 - v).collect();
    assert_eq!(gray8(&i, 0), arr(3, 4, &inverted));
}

#[test]
fn a_file_without_preamble_is_accepted() {
    let file = Img::new(3, 4, 8, "MONOCHROME2").bytes(EXPLICIT_VR_LE, &GRAY8);
    let bare = &file[128..];
    assert!(is_dicom(bare));
    assert_eq!(gray8(&ok(bare), 0), arr(3, 4, &GRAY8));
}

#[test]
fn testdata_gray8_instance_round_trips() {
    let pixels: Vec<u8> = (0..2 * 3 * 5).map(|v| (v * 8) as u8).collect();
    for ts in [
        IMPLICIT_VR_LE,
        EXPLICIT_VR_LE,
        DEFLATED_EXPLICIT_VR_LE,
        testdata::RLE_LOSSLESS,
    ] {
        let file = testdata::gray8_instance(3, 5, &pixels, 2, "2.25.7", ts);
        let i = ok(&file);
        assert_eq!(i.sop_instance_uid.as_deref(), Some("2.25.7"));
        assert_eq!(
            i.sop_class_uid.as_deref(),
            Some(testdata::SECONDARY_CAPTURE)
        );
        assert_eq!(i.frames.len(), 2, "{ts}");
        assert_eq!(gray8(&i, 0), arr(3, 5, &pixels[..15]), "{ts}");
        assert_eq!(gray8(&i, 1), arr(3, 5, &pixels[15..]), "{ts}");
    }
}

#[test]
fn unsigned_16bit_is_stretched_min_max() {
    let stored = [100u16, 200, 300, 1100, 100, 600];
    for ts in [
        EXPLICIT_VR_LE,
        IMPLICIT_VR_LE,
        EXPLICIT_VR_BE,
        DEFLATED_EXPLICIT_VR_LE,
    ] {
        let i = ok(&Img::new(2, 3, 16, "MONOCHROME2").words(ts, &stored));
        // (v - 100) / 1000 * 65535: 0, 6553.5, 13107, 65535, 0, 32767.5
        assert_eq!(
            gray16(&i, 0),
            arr(2, 3, &[0, 6554, 13107, 65535, 0, 32768]),
            "{ts}"
        );
    }
}

#[test]
fn signed_16bit_with_rescale() {
    let stored = [-2000i16, -1024, 0, 1, 3071, 500];
    let words: Vec<u16> = stored.iter().map(|&v| v as u16).collect();
    let mut img = Img::signed16(2, 3)
        .text(tags::RESCALE_SLOPE, VR::DS, "2")
        .text(tags::RESCALE_INTERCEPT, VR::DS, "-1024");
    img.stored = 12;
    img.high = 11;
    // 12 bits stored: -2000 and 3071 do not fit and wrap as the file's stored bits say.
    let twelve = |v: i16| {
        let v = i32::from(v) & 0xFFF;
        if v >= 0x800 {
            v - 0x1000
        } else {
            v
        }
    };
    let rescaled: Vec<f64> = stored
        .iter()
        .map(|&v| f64::from(twelve(v)) * 2.0 - 1024.0)
        .collect();
    let i = ok(&img.words(EXPLICIT_VR_LE, &words));
    assert_eq!(gray16(&i, 0), arr(2, 3, &expect_minmax(&rescaled)));
}

#[test]
fn window_center_width_uses_the_linear_voi_function() {
    // c = 40, w = 400: 0 at <= -160, 65535 above 239, ramp between.
    let stored = [0u16, 864, 1064, 1063, 1263, 1264, 1400, 500];
    let img = Img::new(2, 4, 16, "MONOCHROME2")
        .text(tags::RESCALE_INTERCEPT, VR::DS, "-1024")
        .text(tags::WINDOW_CENTER, VR::DS, "40\\-600")
        .text(tags::WINDOW_WIDTH, VR::DS, "400\\1500");
    let i = ok(&img.words(EXPLICIT_VR_LE, &stored));
    let rescaled: Vec<f64> = stored.iter().map(|&v| f64::from(v) - 1024.0).collect();
    let expected = expect_window(&rescaled, 40.0, 400.0);
    // By hand: -1024 and -160 -> 0; 40 -> (0.5 / 399 + 0.5) * 65535 = 32849.6; 39 -> 32685.4;
    // 239 is the top of the ramp -> 65535; 240 is above it.
    assert_eq!(&expected[..6], &[0, 0, 32850, 32685, 65535, 65535]);
    assert_eq!(gray16(&i, 0), arr(2, 4, &expected));
}

#[test]
fn monochrome1_16bit_inverts_after_the_window() {
    let stored = [0u16, 50, 100, 150];
    let img = Img::new(2, 2, 16, "MONOCHROME1")
        .text(tags::WINDOW_CENTER, VR::DS, "75")
        .text(tags::WINDOW_WIDTH, VR::DS, "101");
    let i = ok(&img.words(EXPLICIT_VR_LE, &stored));
    let rescaled: Vec<f64> = stored.iter().map(|&v| f64::from(v)).collect();
    let expected: Vec<u16> = expect_window(&rescaled, 75.0, 101.0)
        .iter()
        .map(|v| 65535 - v)
        .collect();
    assert_eq!(gray16(&i, 0), arr(2, 2, &expected));
}

#[test]
fn eight_bit_that_is_not_identity_becomes_gray16() {
    // Signed 8-bit.
    let mut img = Img::new(1, 4, 8, "MONOCHROME2");
    img.signed = true;
    let i = ok(&img.bytes(EXPLICIT_VR_LE, &[0x80, 0xFF, 0x00, 0x7F]));
    assert_eq!(
        gray16(&i, 0),
        arr(1, 4, &expect_minmax(&[-128.0, -1.0, 0.0, 127.0]))
    );
    // Unsigned 8-bit with a rescale.
    let img = Img::new(1, 4, 8, "MONOCHROME2").text(tags::RESCALE_SLOPE, VR::DS, "0.5");
    let i = ok(&img.bytes(EXPLICIT_VR_LE, &[0, 10, 20, 40]));
    assert_eq!(gray16(&i, 0), arr(1, 4, &[0, 16384, 32768, 65535]));
    // Unsigned 8-bit with a window.
    let img = Img::new(1, 4, 8, "MONOCHROME2")
        .text(tags::WINDOW_CENTER, VR::DS, "128")
        .text(tags::WINDOW_WIDTH, VR::DS, "256");
    let i = ok(&img.bytes(EXPLICIT_VR_LE, &[0, 10, 128, 255]));
    let expected = expect_window(&[0.0, 10.0, 128.0, 255.0], 128.0, 256.0);
    assert_eq!(gray16(&i, 0), arr(1, 4, &expected));
}

#[test]
fn constant_frame_and_unusable_window_fall_back_to_zero_and_min_max() {
    let img = Img::new(1, 3, 16, "MONOCHROME2")
        .text(tags::WINDOW_CENTER, VR::DS, "10")
        .text(tags::WINDOW_WIDTH, VR::DS, "0");
    let i = ok(&img.words(EXPLICIT_VR_LE, &[7, 7, 7]));
    assert_eq!(gray16(&i, 0), arr(1, 3, &[0, 0, 0]));
    let i = ok(&img.words(EXPLICIT_VR_LE, &[0, 5, 10]));
    assert_eq!(gray16(&i, 0), arr(1, 3, &[0, 32768, 65535]));
}

#[test]
fn high_bit_and_bits_stored_mask_the_sample() {
    // 10 bits stored ending at bit 11: the value is bits 2..=11; the rest is overlay/noise.
    let mut img = Img::new(1, 3, 16, "MONOCHROME2");
    img.stored = 10;
    img.high = 11;
    let words = [0xF000 | (5 << 2) | 0b11, 1023 << 2, 0];
    let i = ok(&img.words(EXPLICIT_VR_LE, &words));
    assert_eq!(
        gray16(&i, 0),
        arr(1, 3, &expect_minmax(&[5.0, 1023.0, 0.0]))
    );
}

#[test]
fn rgb_interleaved_and_planar() {
    let rgb: Vec<u8> = (0..2 * 2 * 3).map(|v| (v * 20) as u8).collect();
    let expected = Array3::from_shape_vec((2, 2, 3), rgb.clone()).expect("shape");
    let i = ok(&Img::new(2, 2, 8, "RGB").bytes(EXPLICIT_VR_LE, &rgb));
    assert_eq!(rgb8(&i, 0), expected);

    let interleaved = &rgb;
    let planar: Vec<u8> = (0..3)
        .flat_map(|ch| (0..4).map(move |p| interleaved[p * 3 + ch]))
        .collect();
    let img = Img::new(2, 2, 8, "RGB").with(DataElement::new(
        tags::PLANAR_CONFIGURATION,
        VR::US,
        PrimitiveValue::from(1u16),
    ));
    let i = ok(&img.bytes(IMPLICIT_VR_LE, &planar));
    assert_eq!(rgb8(&i, 0), expected);
}

#[test]
fn rgb_16bit_is_scaled_by_bits_stored() {
    let mut img = Img::new(1, 2, 16, "RGB");
    img.stored = 12;
    img.high = 11;
    let words = [0u16, 4095, 2048, 1, 100, 4000];
    let i = ok(&img.words(EXPLICIT_VR_LE, &words));
    let expected: Vec<u8> = words
        .iter()
        .map(|&v| (f64::from(v) * 255.0 / 4095.0).round() as u8)
        .collect();
    assert_eq!(
        rgb8(&i, 0),
        Array3::from_shape_vec((1, 2, 3), expected).expect("shape")
    );
}

#[test]
fn multi_frame_gives_one_plane_per_frame() {
    let mut img = Img::new(2, 2, 16, "MONOCHROME2").text(tags::PIXEL_SPACING, VR::DS, "0.5\\0.25");
    img.frames = 3;
    let words = [0u16, 1, 2, 3, 10, 10, 10, 10, 5, 0, 0, 10];
    for ts in [EXPLICIT_VR_LE, EXPLICIT_VR_BE] {
        let i = ok(&img.words(ts, &words));
        assert_eq!(i.frames.len(), 3);
        assert_eq!(gray16(&i, 0), arr(2, 2, &[0, 21845, 43690, 65535]));
        assert_eq!(gray16(&i, 1), arr(2, 2, &[0, 0, 0, 0]));
        assert_eq!(gray16(&i, 2), arr(2, 2, &[32768, 0, 0, 65535]));
        assert!(i.frames.iter().all(|f| f.spacing_mm == Some([0.5, 0.25])));
    }
}

#[test]
fn pixel_spacing_falls_back_to_imager_pixel_spacing() {
    let base = Img::new(3, 4, 8, "MONOCHROME2");
    let spacing = |img: Img| ok(&img.bytes(EXPLICIT_VR_LE, &GRAY8)).frames[0].spacing_mm;
    let both = base
        .clone()
        .text(tags::PIXEL_SPACING, VR::DS, "0.7\\0.8")
        .text(tags::IMAGER_PIXEL_SPACING, VR::DS, "0.1\\0.2");
    assert_eq!(spacing(both), Some([0.7, 0.8]));
    let imager = base
        .clone()
        .text(tags::PIXEL_SPACING, VR::DS, "0\\0.8")
        .text(tags::IMAGER_PIXEL_SPACING, VR::DS, "0.1\\0.2");
    assert_eq!(spacing(imager), Some([0.1, 0.2]));
    assert_eq!(spacing(base.text(tags::PIXEL_SPACING, VR::DS, "0.5")), None);
}

#[test]
fn enhanced_multi_frame_reads_functional_groups() {
    let item = |elements: Vec<El>| InMemDicomObject::from_element_iter(elements);
    let seq = |tag, items: Vec<InMemDicomObject>| {
        DataElement::new(tag, VR::SQ, dicom_core::value::DataSetSequence::from(items))
    };
    let rescale = |intercept: &str| {
        item(vec![seq(
            tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
            vec![item(vec![
                DataElement::new(tags::RESCALE_SLOPE, VR::DS, "1"),
                DataElement::new(tags::RESCALE_INTERCEPT, VR::DS, intercept),
            ])],
        )])
    };
    let shared = item(vec![
        seq(
            tags::PIXEL_MEASURES_SEQUENCE,
            vec![item(vec![DataElement::new(
                tags::PIXEL_SPACING,
                VR::DS,
                "0.3\\0.4",
            )])],
        ),
        seq(
            tags::FRAME_VOILUT_SEQUENCE,
            vec![item(vec![
                DataElement::new(tags::WINDOW_CENTER, VR::DS, "100"),
                DataElement::new(tags::WINDOW_WIDTH, VR::DS, "101"),
            ])],
        ),
    ]);
    let mut img = Img::new(1, 2, 16, "MONOCHROME2")
        .with(seq(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![shared]))
        .with(seq(
            tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
            vec![rescale("0"), rescale("50")],
        ));
    img.frames = 2;
    let i = ok(&img.words(EXPLICIT_VR_LE, &[50, 100, 50, 100]));
    let w = |v: &[f64]| arr(1, 2, &expect_window(v, 100.0, 101.0));
    assert_eq!(gray16(&i, 0), w(&[50.0, 100.0]));
    assert_eq!(gray16(&i, 1), w(&[100.0, 150.0]));
    assert_eq!(i.frames[1].spacing_mm, Some([0.3, 0.4]));
}

#[test]
fn a_failure_carries_the_uids_of_a_file_that_parsed() {
    let f = fail(&Img::new(3, 4, 8, "PALETTE COLOR").bytes(EXPLICIT_VR_LE, &GRAY8));
    assert_eq!(f.sop_instance_uid.as_deref(), Some(SOP_INSTANCE));
    assert_eq!(f.sop_class_uid.as_deref(), Some(CT_IMAGE));
    assert!(matches!(f.error, IngestError::Unsupported(ref m) if m.contains("PALETTE COLOR")));
}
