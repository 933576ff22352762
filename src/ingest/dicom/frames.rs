//! Getting each frame's sample bytes: sliced from native pixel data, or decoded by the transfer
//! syntax's codec through dicom-pixeldata.

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};

use dicom_core::value::PrimitiveValue;
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, FileMetaTable, InMemDicomObject};
use dicom_pixeldata::PixelDecoder;

use super::map::{Layout, Order};
use super::{codestream, Encoding, IngestError, Supported};

/// Byte order of native pixel data as dicom-rs holds it: OW values were decoded to native integers,
/// OB bytes are in the file's order.
pub(super) fn native_order(obj: &InMemDicomObject, ts: &Supported) -> Order {
    let bytes = obj
        .get(tags::PIXEL_DATA)
        .and_then(|e| e.value().primitive())
        .is_some_and(|p| matches!(p, PrimitiveValue::U8(_)));
    match (bytes, ts.syntax.big_endian) {
        (true, true) => Order::Big,
        (true, false) => Order::Little,
        (false, _) => Order::native(),
    }
}

/// All frames of native pixel data, checked to be long enough.
pub(super) fn native_frames<'a>(
    obj: &'a InMemDicomObject,
    layout: &Layout,
    frames: usize,
    ts: &Supported,
) -> Result<Cow<'a, [u8]>, IngestError> {
    let value = obj.get(tags::PIXEL_DATA).map(|e| e.value());
    let Some(primitive) = value.and_then(|v| v.primitive()) else {
        return Err(IngestError::Malformed(format!(
            "Pixel Data is not a plain run of samples, as {} requires",
            ts.name
        )));
    };
    let bytes = primitive.to_bytes();
    let needed = layout.frame_bytes().saturating_mul(frames);
    if bytes.len() < needed {
        return Err(IngestError::Malformed(format!(
            "Pixel Data holds {} bytes, but {frames} frame(s) of {} x {} x {} samples of {} bits need {needed}",
            bytes.len(),
            layout.rows,
            layout.cols,
            layout.samples_per_pixel(),
            layout.bits_allocated
        )));
    }
    Ok(match bytes {
        Cow::Borrowed(b) => Cow::Borrowed(b.get(..needed).unwrap_or(b)),
        Cow::Owned(mut b) => {
            b.truncate(needed);
            Cow::Owned(b)
        }
    })
}

/// A minimal object holding the pixel data and the attributes a codec reads: irrelevant attributes
/// (inconsistent windows, LUTs, ...) cannot make dicom-pixeldata fail, and its messages can only
/// mention what is here.
pub(super) fn encapsulated(
    obj: &mut InMemDicomObject,
    meta: FileMetaTable,
    layout: &Layout,
    frames: usize,
    ts: &Supported,
) -> Result<DefaultDicomObject, IngestError> {
    let pixel_data = obj.take(tags::PIXEL_DATA).ok_or_else(|| {
        IngestError::Malformed(format!(
            "the instance has no Pixel Data {}",
            tags::PIXEL_DATA
        ))
    })?;
    let Some(fragments) = pixel_data.value().fragments() else {
        return Err(IngestError::Malformed(format!(
            "Pixel Data is not encapsulated, but {} requires it",
            ts.name
        )));
    };
    if fragments.is_empty() {
        return Err(IngestError::Malformed(
            "the encapsulated Pixel Data has no fragments".into(),
        ));
    }
    match ts.encoding {
        Encoding::Rle => codestream::check_rle(fragments, frames, layout)?,
        Encoding::JpegLossy | Encoding::JpegLossless => codestream::check_jpeg(fragments, layout)?,
        Encoding::Jpeg2000 => codestream::check_j2k(fragments, layout)?,
        Encoding::Native | Encoding::Deflated => {}
    }
    let keep = [
        tags::SAMPLES_PER_PIXEL,
        tags::PHOTOMETRIC_INTERPRETATION,
        tags::PLANAR_CONFIGURATION,
        tags::NUMBER_OF_FRAMES,
        tags::ROWS,
        tags::COLUMNS,
        tags::BITS_ALLOCATED,
        tags::BITS_STORED,
        tags::HIGH_BIT,
        tags::PIXEL_REPRESENTATION,
    ];
    let elements = keep.iter().filter_map(|t| obj.get(*t).cloned());
    let minimal = InMemDicomObject::from_element_iter(elements.chain([pixel_data]));
    Ok(minimal.with_exact_meta(meta))
}

/// Decodes one frame with the transfer syntax's codec.
pub(super) fn decode_frame(
    decoder: &DefaultDicomObject,
    frame: usize,
    layout: &Layout,
    ts: &Supported,
) -> Result<Vec<u8>, IngestError> {
    let index = u32::try_from(frame).map_err(|_| {
        IngestError::TooLarge(format!("frame {frame} is beyond what can be decoded"))
    })?;
    let decoded = catch_unwind(AssertUnwindSafe(|| {
        decoder
            .decode_pixel_data_frame(index)
            .map(|d| d.into_data())
    }))
    .map_err(|_| {
        IngestError::Malformed(format!(
            "frame {frame}: the {} decoder failed on malformed data",
            ts.name
        ))
    })?
    .map_err(|e| {
        IngestError::Malformed(format!(
            "frame {frame} could not be decoded as {}: {}",
            ts.name,
            describe(&e)
        ))
    })?;
    if decoded.len() < layout.frame_bytes() {
        return Err(IngestError::Malformed(format!(
            "frame {frame} decoded to {} bytes; {} x {} x {} samples of {} bits need {}",
            decoded.len(),
            layout.rows,
            layout.cols,
            layout.samples_per_pixel(),
            layout.bits_allocated,
            layout.frame_bytes()
        )));
    }
    Ok(decoded)
}

/// A codec error and its causes, with anything quoted in backticks (dicom-rs's way of quoting values)
/// removed and the length bounded.
fn describe(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    let mut out = String::new();
    let mut quoted = false;
    for c in parts.join(": ").chars() {
        if c == '`' {
            if !quoted {
                out.push('…');
            }
            quoted = !quoted;
        } else if !quoted {
            out.push(c);
        }
    }
    if out.chars().count() > 300 {
        out = out.chars().take(300).collect::<String>() + "…";
    }
    out
}
