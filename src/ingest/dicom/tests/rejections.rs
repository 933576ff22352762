//! Files that must be refused, with the right error and without panicking or leaking patient data.

use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;

use super::super::scan;
use super::super::testdata::{self, EXPLICIT_VR_LE};
use super::{fail, fail_with, ok, Img, GRAY8, LIMITS, SOP_INSTANCE};
use crate::ingest::dicom::{decode, is_dicom, Limits};
use crate::ingest::IngestError;

fn replace_once(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern present");
    let mut out = bytes.to_vec();
    out[at..at + to.len()].copy_from_slice(to);
    out
}

fn gray_file() -> Vec<u8> {
    Img::new(3, 4, 8, "MONOCHROME2").bytes(EXPLICIT_VR_LE, &GRAY8)
}

#[test]
fn unsupported_transfer_syntax_is_named() {
    let img = Img::new(3, 4, 8, "MONOCHROME2");
    let jpeg_ls = "1.2.840.10008.1.2.4.80";
    let file = img.file(
        jpeg_ls,
        testdata::encapsulated(vec![vec![0xFF, 0xD8, 0xFF, 0xD9]]),
    );
    let f = fail(&file);
    assert_eq!(
        f.error,
        IngestError::UnsupportedTransferSyntax {
            uid: jpeg_ls.into(),
            name: "JPEG-LS Lossless".into()
        }
    );
    assert!(f.error.to_string().contains(jpeg_ls));
    // Refused from the meta group, which names the instance.
    assert_eq!(f.sop_instance_uid.as_deref(), Some(SOP_INSTANCE));

    let htj2k = img.file(
        "1.2.840.10008.1.2.4.201",
        testdata::encapsulated(vec![vec![0; 8]]),
    );
    let f = fail(&htj2k);
    assert!(f.error.to_string().contains("HTJ2K"), "{}", f.error);
}

#[test]
fn unknown_transfer_syntax_uid_is_refused_with_415() {
    let file = replace_once(
        &gray_file(),
        b"1.2.840.10008.1.2.1\0",
        b"1.2.3.4.5.6.7.8.9.1\0",
    );
    let f = fail(&file);
    assert_eq!(
        f.error,
        IngestError::UnsupportedTransferSyntax {
            uid: "1.2.3.4.5.6.7.8.9.1".into(),
            name: "unknown transfer syntax".into()
        }
    );
    // dicom-rs refuses a meta group whose UIDs are not UIDs; the value is not echoed either way.
    let file = replace_once(
        &gray_file(),
        b"1.2.840.10008.1.2.1\0",
        b"SECRET^NAME.2.1.2.1\0",
    );
    assert!(matches!(fail(&file).error, IngestError::Malformed(_)));
}

#[test]
fn not_a_dicom_file() {
    for bytes in [&b""[..], b"DICM", b"\x89PNG\r\n\x1a\n", &[0u8; 300]] {
        assert!(!is_dicom(bytes) || bytes == b"DICM");
        let f = fail(bytes);
        assert!(
            matches!(f.error, IngestError::Malformed(_)),
            "{:?}",
            f.error
        );
        assert_eq!(f.sop_instance_uid, None);
    }
}

#[test]
fn every_truncation_is_an_error_and_never_a_panic() {
    let files = [
        gray_file(),
        Img::new(2, 2, 16, "MONOCHROME2").words(testdata::IMPLICIT_VR_LE, &[1, 2, 3, 4]),
        Img::new(2, 2, 16, "MONOCHROME2").words(testdata::EXPLICIT_VR_BE, &[1, 2, 3, 4]),
        testdata::gray8_instance(3, 4, &GRAY8, 1, "2.25.9", testdata::DEFLATED_EXPLICIT_VR_LE),
        testdata::gray8_instance(3, 4, &GRAY8, 1, "2.25.9", testdata::RLE_LOSSLESS),
    ];
    for file in &files {
        let full = ok(file).frames;
        for cut in 0..file.len() {
            // Only a cut that loses nothing of the image (e.g. the final sequence delimiter of
            // encapsulated pixel data) may decode, and then to the same pixels.
            if let Ok(i) = decode(&file[..cut], &LIMITS) {
                assert_eq!(i.frames, full, "cut at {cut} of {}", file.len());
                assert!(cut + 8 >= file.len(), "cut at {cut} of {}", file.len());
            } else {
                fail(&file[..cut]);
            }
        }
    }
}

#[test]
fn a_declared_length_beyond_the_input_is_refused_before_allocation() {
    // Pixel Data (7FE0,0010) OB claiming almost 4 GiB.
    let header = [0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0];
    let at = gray_file()
        .windows(8)
        .position(|w| w == header)
        .expect("pixel data header");
    let mut file = gray_file();
    file[at + 8..at + 12].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let f = fail(&file);
    assert!(
        matches!(f.error, IngestError::Malformed(ref m) if m.contains("(7FE0,0010) declares 4294967280 bytes")),
        "{:?}",
        f.error
    );
    assert_eq!(f.sop_instance_uid.as_deref(), Some(SOP_INSTANCE));
}

#[test]
fn inflation_is_bounded() {
    use std::io::Write;
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&vec![0u8; 100_000]).expect("deflate");
    let deflated = enc.finish().expect("deflate");
    assert_eq!(
        scan::inflate(&deflated, 100_000).expect("fits").len(),
        100_000
    );
    assert!(matches!(
        scan::inflate(&deflated, 99_999),
        Err(IngestError::TooLarge(_))
    ));
    assert!(matches!(
        scan::inflate(b"not deflate at all", 1000),
        Err(IngestError::Malformed(_))
    ));
}

#[test]
fn missing_or_short_pixel_data() {
    let f = fail(&super::super::testdata::write_file(
        Img::new(3, 4, 8, "MONOCHROME2").object(),
        EXPLICIT_VR_LE,
    ));
    assert!(matches!(f.error, IngestError::Malformed(ref m) if m.contains("no Pixel Data")));
    assert_eq!(f.sop_instance_uid.as_deref(), Some(SOP_INSTANCE));

    let f = fail(&Img::new(3, 4, 8, "MONOCHROME2").bytes(EXPLICIT_VR_LE, &GRAY8[..10]));
    assert!(
        matches!(f.error, IngestError::Malformed(ref m) if m.contains("holds 10 bytes") && m.contains("need 12")),
        "{:?}",
        f.error
    );
    let mut three = Img::new(3, 4, 8, "MONOCHROME2");
    three.frames = 3;
    let f = fail(&three.bytes(EXPLICIT_VR_LE, &[GRAY8, GRAY8].concat()));
    assert!(matches!(f.error, IngestError::Malformed(ref m) if m.contains("need 36")));
}

#[test]
fn limits_are_checked_before_decoding() {
    let f = fail_with(
        &gray_file(),
        &Limits {
            max_pixels: 11,
            max_frames: 1,
            max_total_pixels: 100,
        },
    );
    assert_eq!(
        f.error,
        IngestError::TooLarge("each frame is 3 x 4 = 12 pixels; the limit is 11".into())
    );
    let mut img = Img::new(3, 4, 8, "MONOCHROME2");
    img.frames = 9;
    // Far less pixel data than 9 frames need: the frame limit answers first.
    let f = fail(&img.bytes(EXPLICIT_VR_LE, &GRAY8));
    assert_eq!(
        f.error,
        IngestError::TooLarge("the instance has 9 frames; the limit is 8".into())
    );
    let f = fail_with(
        &img.bytes(EXPLICIT_VR_LE, &GRAY8),
        &Limits {
            max_pixels: 12,
            max_frames: 9,
            max_total_pixels: 107,
        },
    );
    assert_eq!(
        f.error,
        IngestError::TooLarge(
            "the instance holds 9 frames of 3 x 4 = 108 pixels; the limit is 107".into()
        )
    );
}

#[test]
fn inconsistent_pixel_attributes() {
    let check = |img: Img, data: &[u8], want: &str| {
        let f = fail(&img.bytes(EXPLICIT_VR_LE, data));
        let text = f.error.to_string();
        assert!(text.contains(want), "{text:?} lacks {want:?}");
    };
    let mut twelve = Img::new(3, 4, 8, "MONOCHROME2");
    twelve.allocated = 12;
    check(twelve, &GRAY8, "Bits Allocated (0028,0100) is 12");
    let mut stored = Img::new(3, 4, 8, "MONOCHROME2");
    stored.stored = 9;
    check(stored, &GRAY8, "Bits Stored 9 does not fit");
    let mut high = Img::new(3, 4, 8, "MONOCHROME2");
    high.high = 8;
    check(high, &GRAY8, "High Bit 8 does not fit");
    let spp = Img::new(3, 4, 8, "MONOCHROME2").with(DataElement::new(
        tags::SAMPLES_PER_PIXEL,
        VR::US,
        dicom_core::value::PrimitiveValue::from(3u16),
    ));
    check(spp, &GRAY8, "Samples per Pixel is 3");
    check(
        Img::new(0, 4, 8, "MONOCHROME2"),
        &[],
        "the image is empty (0 rows x 4 columns)",
    );
    let no_rows = Img::new(3, 4, 8, "MONOCHROME2");
    let mut obj = no_rows.object();
    obj.remove_element(tags::ROWS);
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        dicom_core::value::PrimitiveValue::from(&GRAY8[..]),
    ));
    let f = fail(&testdata::write_file(obj, EXPLICIT_VR_LE));
    assert!(f.error.to_string().contains("Rows (0028,0010) is missing"));
}

#[test]
fn unsupported_photometric_interpretations() {
    for pi in ["PALETTE COLOR", "YBR_FULL", "HSV"] {
        let data = if pi == "PALETTE COLOR" {
            GRAY8.to_vec()
        } else {
            vec![0; 36]
        };
        let f = fail(&Img::new(3, 4, 8, pi).bytes(EXPLICIT_VR_LE, &data));
        assert!(
            matches!(f.error, IngestError::Unsupported(ref m) if m.contains(pi)),
            "{pi}: {:?}",
            f.error
        );
    }
    // A value that is not a code string is not echoed.
    let f = fail(&Img::new(3, 4, 8, "secret^name").bytes(EXPLICIT_VR_LE, &GRAY8));
    assert!(!f.error.to_string().to_lowercase().contains("secret"));
}

#[test]
fn float_pixel_data_is_unsupported() {
    let mut obj = Img::new(1, 2, 32, "MONOCHROME2").object();
    obj.put(DataElement::new(
        tags::FLOAT_PIXEL_DATA,
        VR::OF,
        dicom_core::value::PrimitiveValue::F32([1.0f32, 2.0].into_iter().collect()),
    ));
    let f = fail(&testdata::write_file(obj, EXPLICIT_VR_LE));
    assert!(matches!(f.error, IngestError::Unsupported(ref m) if m.contains("(7FE0,0008)")));
}

#[test]
fn invalid_values_elsewhere_do_not_leak_into_errors() {
    // An unparseable birth date, a bad slope: the slope is named, the patient attributes are not.
    let img = Img::new(3, 4, 8, "MONOCHROME2")
        .text(tags::PATIENT_BIRTH_DATE, VR::DA, "SECRETDATE")
        .text(tags::RESCALE_SLOPE, VR::DS, "SECRET");
    let f = fail(&img.bytes(EXPLICIT_VR_LE, &GRAY8));
    assert!(
        f.error.to_string().contains("Rescale Slope (0028,1053)"),
        "{}",
        f.error
    );
    // Structure broken right after the patient name.
    let file = gray_file();
    let name = file
        .windows(11)
        .position(|w| w == b"SECRET^NAME")
        .expect("name");
    let mut broken = file[..name + 12].to_vec();
    broken.extend_from_slice(&[0x10, 0x00, 0x20, 0x00, b'L', b'O', 0xFF, 0x7F]);
    let f = fail(&broken);
    assert_eq!(f.sop_instance_uid.as_deref(), Some(SOP_INSTANCE));
    assert!(format!("{:?}", f.error).find("SECRET").is_none());
}

#[test]
fn decode_does_not_panic_on_noise_after_a_valid_header() {
    let file = gray_file();
    let pixel_at = file.len() - GRAY8.len() - 12;
    for seed in 0u32..200 {
        let mut noisy = file.clone();
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        for b in noisy[132..pixel_at].iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if x % 7 == 0 {
                *b = x as u8;
            }
        }
        let _ = decode(&noisy, &LIMITS);
    }
}
