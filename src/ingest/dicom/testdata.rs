//! Synthetic DICOM files for tests (unit, integration over HTTP) and fuzz seeds. Not for production
//! use: the functions panic on arguments they cannot encode.

use dicom_core::value::{PixelFragmentSequence, PrimitiveValue};
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

/// Secondary Capture Image Storage.
pub const SECONDARY_CAPTURE: &str = "1.2.840.10008.5.1.4.1.1.7";

pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
pub const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";
pub const DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";
pub const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";
pub const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";

/// An 8-bit MONOCHROME2 Secondary Capture instance: `frames` frames of `rows` x `cols` pixels, `pixels`
/// holding them one after the other, row by row.
///
/// `transfer_syntax` is one of the constants above. RLE encodes losslessly; JPEG Baseline is lossy
/// (quality 95), so decoded values are only close to `pixels`.
pub fn gray8_instance(
    rows: usize,
    cols: usize,
    pixels: &[u8],
    frames: usize,
    sop_instance_uid: &str,
    transfer_syntax: &str,
) -> Vec<u8> {
    gray8_patient_instance(
        rows,
        cols,
        pixels,
        frames,
        sop_instance_uid,
        transfer_syntax,
        None,
        None,
    )
}

/// [`gray8_instance`] with a Patient's Name and a Pixel Spacing ([row, column] mm), for checking that
/// patient attributes go nowhere and that spacing is carried.
#[expect(
    clippy::too_many_arguments,
    reason = "a test builder mirroring the attributes it writes"
)]
pub fn gray8_patient_instance(
    rows: usize,
    cols: usize,
    pixels: &[u8],
    frames: usize,
    sop_instance_uid: &str,
    transfer_syntax: &str,
    patient_name: Option<&str>,
    pixel_spacing: Option<[f64; 2]>,
) -> Vec<u8> {
    assert_eq!(
        pixels.len(),
        rows * cols * frames,
        "pixels != rows x cols x frames"
    );
    let us = |tag, v: usize| {
        let v = u16::try_from(v).expect("fits in US");
        DataElement::new(tag, VR::US, PrimitiveValue::from(v))
    };
    let mut obj = InMemDicomObject::from_element_iter([
        DataElement::new(tags::SOP_CLASS_UID, VR::UI, SECONDARY_CAPTURE),
        DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, sop_instance_uid),
        DataElement::new(tags::MODALITY, VR::CS, "OT"),
        us(tags::SAMPLES_PER_PIXEL, 1),
        DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        us(tags::ROWS, rows),
        us(tags::COLUMNS, cols),
        us(tags::BITS_ALLOCATED, 8),
        us(tags::BITS_STORED, 8),
        us(tags::HIGH_BIT, 7),
        us(tags::PIXEL_REPRESENTATION, 0),
    ]);
    if let Some(name) = patient_name {
        obj.put(DataElement::new(tags::PATIENT_NAME, VR::PN, name));
    }
    if let Some([r, c]) = pixel_spacing {
        obj.put(DataElement::new(
            tags::PIXEL_SPACING,
            VR::DS,
            format!("{r}\\{c}"),
        ));
    }
    if frames != 1 {
        obj.put(DataElement::new(
            tags::NUMBER_OF_FRAMES,
            VR::IS,
            frames.to_string(),
        ));
    }
    let frame_len = rows * cols;
    let frame_data = pixels.chunks(frame_len.max(1));
    let pixel_data = match transfer_syntax {
        RLE_LOSSLESS => encapsulated(frame_data.map(|f| rle_fragment(&[f.to_vec()])).collect()),
        JPEG_BASELINE => encapsulated(frame_data.map(|f| jpeg_gray8(f, rows, cols)).collect()),
        IMPLICIT_VR_LE | EXPLICIT_VR_LE | EXPLICIT_VR_BE | DEFLATED_EXPLICIT_VR_LE => {
            DataElement::new(
                tags::PIXEL_DATA,
                VR::OB,
                PrimitiveValue::from(pixels.to_vec()),
            )
        }
        other => panic!("gray8_instance cannot write transfer syntax {other}"),
    };
    obj.put(pixel_data);
    write_file(obj, transfer_syntax)
}

/// Encapsulated Pixel Data: an empty basic offset table and the given fragments.
pub fn encapsulated(fragments: Vec<Vec<u8>>) -> DataElement<InMemDicomObject> {
    DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PixelFragmentSequence::new(Vec::<u32>::new(), fragments),
    )
}

/// A Part 10 file (preamble, meta group, data set) of `obj` in `transfer_syntax`. The media storage
/// UIDs are taken from the object's SOP Class/Instance UID, or placeholders when it has none.
pub fn write_file(obj: InMemDicomObject, transfer_syntax: &str) -> Vec<u8> {
    let text = |tag| {
        obj.get(tag)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.to_string())
    };
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(transfer_syntax)
        .media_storage_sop_class_uid(text(tags::SOP_CLASS_UID).unwrap_or(SECONDARY_CAPTURE.into()))
        .media_storage_sop_instance_uid(text(tags::SOP_INSTANCE_UID).unwrap_or("2.25.1".into()))
        .build()
        .expect("file meta group");
    let mut out = Vec::new();
    obj.with_exact_meta(meta)
        .write_all(&mut out)
        .expect("dicom-rs writes the file");
    out
}

/// One RLE Lossless frame (PS3.5 Annex G): the 64-byte header, then each segment PackBits-encoded and
/// padded to an even length. Segments are the byte planes, most significant byte of the first sample
/// first.
pub fn rle_fragment(segments: &[Vec<u8>]) -> Vec<u8> {
    assert!(segments.len() <= 15, "RLE allows at most 15 segments");
    let encoded: Vec<Vec<u8>> = segments
        .iter()
        .map(|s| {
            let mut e = packbits(s);
            if e.len() % 2 == 1 {
                e.push(0);
            }
            e
        })
        .collect();
    let mut header = [0u32; 16];
    header[0] = segments.len() as u32;
    let mut offset = 64u32;
    for (slot, e) in header[1..].iter_mut().zip(&encoded) {
        *slot = offset;
        offset += e.len() as u32;
    }
    let mut out: Vec<u8> = header.iter().flat_map(|v| v.to_le_bytes()).collect();
    for e in encoded {
        out.extend(e);
    }
    out
}

/// PackBits (PS3.5 G.3.1): runs of 2..=128 equal bytes as (1 - n, byte), other bytes as literal runs of
/// up to 128 preceded by n - 1.
pub fn packbits(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let run = data[i..]
            .iter()
            .take(128)
            .take_while(|&&b| b == data[i])
            .count();
        if run >= 2 {
            out.push((1 - run as i16) as i8 as u8);
            out.push(data[i]);
            i += run;
            continue;
        }
        let start = i;
        while i < data.len() && i - start < 128 && !(i + 1 < data.len() && data[i + 1] == data[i]) {
            i += 1;
        }
        if i == start {
            i += 1; // a lone byte before a run of itself is never reached, but stay total
        }
        out.push((i - start - 1) as u8);
        out.extend_from_slice(&data[start..i]);
    }
    out
}

/// A baseline JPEG of one 8-bit gray frame (quality 95).
pub fn jpeg_gray8(frame: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
        .encode(
            frame,
            cols as u32,
            rows as u32,
            image::ExtendedColorType::L8,
        )
        .expect("JPEG encoding");
    out
}
