//! Reading and validating the attributes that describe the pixels.
//!
//! Errors name the tag and, for image-geometry attributes, the number; text values only appear after
//! [`code_string`] or [`clean_uid`] proved they are code strings or UIDs, never free text.

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemElement;
use dicom_object::InMemDicomObject;

use super::map::{Color, Layout, Transform};
use super::{Encoding, IngestError};

type Obj = InMemDicomObject;

fn malformed(msg: String) -> IngestError {
    IngestError::Malformed(msg)
}

/// A required unsigned integer attribute.
pub(super) fn required_uint(obj: &Obj, tag: Tag, name: &str) -> Result<u32, IngestError> {
    let elem = obj
        .get(tag)
        .ok_or_else(|| malformed(format!("{name} {tag} is missing")))?;
    elem.to_int::<u32>()
        .map_err(|_| malformed(format!("{name} {tag} is not an unsigned integer")))
}

/// Number of Frames (0028,0008); 1 when absent.
pub(super) fn number_of_frames(obj: &Obj) -> Result<u64, IngestError> {
    let Some(elem) = obj.get(tags::NUMBER_OF_FRAMES) else {
        return Ok(1);
    };
    let tag = tags::NUMBER_OF_FRAMES;
    match elem.to_int::<i64>() {
        Ok(n) if n >= 1 => Ok(n as u64),
        Ok(n) => Err(malformed(format!("Number of Frames {tag} is {n}"))),
        Err(_) => Err(malformed(format!(
            "Number of Frames {tag} is not an integer"
        ))),
    }
}

/// The layout of the decoded samples, or why it cannot be handled.
pub(super) fn layout(
    obj: &Obj,
    rows: u32,
    cols: u32,
    encoding: Encoding,
) -> Result<Layout, IngestError> {
    let spp = required_uint(obj, tags::SAMPLES_PER_PIXEL, "Samples per Pixel")?;
    let bits_allocated = required_uint(obj, tags::BITS_ALLOCATED, "Bits Allocated")?;
    let bits_stored = required_uint(obj, tags::BITS_STORED, "Bits Stored")?;
    let high_bit = required_uint(obj, tags::HIGH_BIT, "High Bit")?;
    let representation = required_uint(obj, tags::PIXEL_REPRESENTATION, "Pixel Representation")?;
    let pi_tag = tags::PHOTOMETRIC_INTERPRETATION;
    let pi = obj
        .get(pi_tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_matches([' ', '\0']).to_string())
        .ok_or_else(|| malformed(format!("Photometric Interpretation {pi_tag} is missing")))?;

    if bits_allocated != 8 && bits_allocated != 16 {
        return Err(IngestError::Unsupported(format!(
            "Bits Allocated {} is {bits_allocated}; only 8 and 16 are supported",
            tags::BITS_ALLOCATED
        )));
    }
    if bits_stored == 0 || bits_stored > bits_allocated {
        return Err(malformed(format!(
            "Bits Stored {bits_stored} does not fit Bits Allocated {bits_allocated}"
        )));
    }
    if high_bit >= bits_allocated || high_bit + 1 < bits_stored {
        return Err(malformed(format!(
            "High Bit {high_bit} does not fit Bits Stored {bits_stored} and Bits Allocated {bits_allocated}"
        )));
    }
    if representation > 1 {
        return Err(malformed(format!(
            "Pixel Representation {} is {representation}; it must be 0 or 1",
            tags::PIXEL_REPRESENTATION
        )));
    }
    let color = color(&pi, encoding)?;
    let wanted_spp = if color == Color::Rgb { 3 } else { 1 };
    if spp != wanted_spp {
        return Err(malformed(format!(
            "Samples per Pixel is {spp} but photometric interpretation {} needs {wanted_spp}",
            code_string(&pi)
        )));
    }
    if color == Color::Rgb && representation == 1 {
        return Err(IngestError::Unsupported(
            "signed colour samples (Pixel Representation 1 with three samples per pixel) are not supported"
                .into(),
        ));
    }
    // Codecs return interleaved samples whatever the attribute says.
    let planar = color == Color::Rgb && encoding.is_native() && planar_configuration(obj)? == 1;
    Ok(Layout {
        rows: rows as usize,
        cols: cols as usize,
        color,
        bits_allocated: bits_allocated as u16,
        bits_stored: bits_stored as u16,
        high_bit: high_bit as u16,
        signed: representation == 1,
        planar,
    })
}

fn planar_configuration(obj: &Obj) -> Result<u32, IngestError> {
    let tag = tags::PLANAR_CONFIGURATION;
    match obj.get(tag).map(|e| e.to_int::<u32>()) {
        None => Ok(0),
        Some(Ok(v @ (0 | 1))) => Ok(v),
        Some(_) => Err(malformed(format!(
            "Planar Configuration {tag} must be 0 or 1"
        ))),
    }
}

/// Colour model for a photometric interpretation in a given encoding. YBR models are accepted where the
/// codec itself converts to RGB: lossy JPEG (YCbCr -> RGB in the decoder) and JPEG 2000 (inverse
/// component transform in the codestream).
fn color(pi: &str, encoding: Encoding) -> Result<Color, IngestError> {
    match pi {
        "MONOCHROME1" => Ok(Color::Monochrome1),
        "MONOCHROME2" => Ok(Color::Monochrome2),
        "RGB" => Ok(Color::Rgb),
        "YBR_FULL" | "YBR_FULL_422" if encoding == Encoding::JpegLossy => Ok(Color::Rgb),
        "YBR_ICT" | "YBR_RCT" if encoding == Encoding::Jpeg2000 => Ok(Color::Rgb),
        other => Err(IngestError::Unsupported(format!(
            "photometric interpretation {} is not supported{}; use MONOCHROME1, MONOCHROME2 or RGB",
            code_string(other),
            if other.starts_with("YBR") {
                " in this transfer syntax"
            } else {
                ""
            }
        ))),
    }
}

/// Rescale and window of frame `frame` (0-based).
pub(super) fn transform(obj: &Obj, frame: usize) -> Result<Transform, IngestError> {
    let pvt = tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE;
    let voi = tags::FRAME_VOILUT_SEQUENCE;
    let slope = number(
        lookup(obj, frame, pvt, tags::RESCALE_SLOPE),
        "Rescale Slope",
    )?;
    let intercept = number(
        lookup(obj, frame, pvt, tags::RESCALE_INTERCEPT),
        "Rescale Intercept",
    )?;
    // A window is a display hint: one that cannot be read is ignored rather than fatal.
    let center = number(lookup(obj, frame, voi, tags::WINDOW_CENTER), "").ok();
    let width = number(lookup(obj, frame, voi, tags::WINDOW_WIDTH), "").ok();
    let window = match (center.flatten(), width.flatten()) {
        (Some(c), Some(w)) if w >= 1.0 => Some((c, w)),
        _ => None,
    };
    Ok(Transform {
        slope: slope.unwrap_or(1.0),
        intercept: intercept.unwrap_or(0.0),
        window,
    })
}

/// First value of a numeric attribute; None when absent or empty.
fn number(elem: Option<&InMemElement>, name: &str) -> Result<Option<f64>, IngestError> {
    let Some(elem) = elem else {
        return Ok(None);
    };
    let tag = elem.header().tag;
    match elem.to_multi_float64() {
        Ok(v) => match v.first() {
            None => Ok(None),
            Some(x) if x.is_finite() => Ok(Some(*x)),
            Some(_) => Err(malformed(format!("{name} {tag} is not a finite number"))),
        },
        Err(_) => Err(malformed(format!("{name} {tag} is not a number"))),
    }
}

/// An attribute of one frame: the Per-Frame Functional Groups item of that frame, then the Shared
/// Functional Groups (enhanced multi-frame objects keep it in the functional group `sequence`), then the
/// top-level data set (classic objects).
fn lookup<'a>(obj: &'a Obj, frame: usize, sequence: Tag, tag: Tag) -> Option<&'a InMemElement> {
    let in_group = |group: Option<&'a Obj>| -> Option<&'a InMemElement> {
        group?.get(sequence)?.items()?.first()?.get(tag)
    };
    let item = |seq: Tag, i: usize| obj.get(seq).and_then(|e| e.items()).and_then(|v| v.get(i));
    in_group(item(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, frame))
        .or_else(|| in_group(item(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, 0)))
        .or_else(|| obj.get(tag))
}

/// Pixel Spacing (0028,0030), also as found in the Pixel Measures functional group, else Imager Pixel
/// Spacing (0018,1164); [row spacing, column spacing] in mm, both positive.
pub(super) fn spacing(obj: &Obj) -> Option<[f64; 2]> {
    let read = |elem: Option<&InMemElement>| -> Option<[f64; 2]> {
        let v = elem?.to_multi_float64().ok()?;
        match v.as_slice() {
            [r, c, ..] if r.is_finite() && c.is_finite() && *r > 0.0 && *c > 0.0 => Some([*r, *c]),
            _ => None,
        }
    };
    read(lookup(
        obj,
        0,
        tags::PIXEL_MEASURES_SEQUENCE,
        tags::PIXEL_SPACING,
    ))
    .or_else(|| read(obj.get(tags::IMAGER_PIXEL_SPACING)))
}

/// A UID attribute's value when it is a well-formed UID (digits and dots, at most 64 characters).
pub(super) fn uid(obj: &Obj, tag: Tag) -> Option<String> {
    clean_uid(&obj.get(tag)?.to_str().ok()?)
}

/// `s` without its padding when it is a well-formed UID; anything else could be arbitrary text, which
/// must not reach answers or logs.
pub(super) fn clean_uid(s: &str) -> Option<String> {
    let s = s.trim_matches([' ', '\0']);
    let ok = !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    ok.then(|| s.to_string())
}

/// A code string value for an error message, or a placeholder when it is not one (PS3.5 6.2: upper
/// case letters, digits, space and underscore, at most 16 characters).
pub(super) fn code_string(s: &str) -> String {
    let ok = s.len() <= 16
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' ' || b == b'_');
    if ok {
        s.to_string()
    } else {
        "(not a valid code string)".to_string()
    }
}
