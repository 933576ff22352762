//! Structural checks on the raw bytes before dicom-rs parses them.
//!
//! dicom-rs allocates (and zero-fills) each value at its declared length before reading it, so a
//! 200-byte file declaring a 4 GiB element would make it touch 4 GiB. These walks follow the element
//! headers exactly as its reader does (same tag, VR and length rules) and refuse any declared length
//! longer than what is left of the input, which bounds every allocation by the input size. They only
//! fail when sure; on anything they do not follow they stop and leave the error to the parser.

use std::io::Read;

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};

use super::IngestError;

const UNDEFINED: u32 = 0xFFFF_FFFF;

/// How the data set is encoded.
#[derive(Clone, Copy, Debug)]
pub(super) struct Syntax {
    pub explicit_vr: bool,
    pub big_endian: bool,
}

/// A bounds-checked reader of the input (never indexes past the end).
struct Bytes<'a> {
    data: &'a [u8],
    big_endian: bool,
}

impl Bytes<'_> {
    fn u16(&self, at: usize) -> Option<u16> {
        let b: [u8; 2] = self.data.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(if self.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }

    fn u32(&self, at: usize) -> Option<u32> {
        let b: [u8; 4] = self.data.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    /// Fails when `len` bytes starting at `at` are not all in the input.
    fn ensure(&self, tag: Tag, len: u32, at: usize) -> Result<(), IngestError> {
        let left = self.data.len().saturating_sub(at);
        if usize::try_from(len).map_or(true, |len| len > left) {
            return Err(IngestError::Malformed(format!(
                "element {tag} declares {len} bytes but only {left} remain: the file is truncated or corrupt"
            )));
        }
        Ok(())
    }

    /// Explicit-VR header at `at`: (VR, value length, header size).
    fn explicit_header(&self, at: usize) -> Option<(VR, u32, usize)> {
        let vr = self.data.get(at + 4..at + 6)?;
        let vr = VR::from_binary([vr[0], vr[1]]).unwrap_or(VR::UN);
        if has_short_length(vr) {
            Some((vr, u32::from(self.u16(at + 6)?), 8))
        } else {
            Some((vr, self.u32(at + 8)?, 12))
        }
    }
}

/// VRs whose explicit-VR length field has 16 bits (PS3.5 7.1.2); dicom-rs uses the same list.
fn has_short_length(vr: VR) -> bool {
    use VR::*;
    matches!(
        vr,
        AE | AS
            | AT
            | CS
            | DA
            | DS
            | DT
            | FL
            | FD
            | IS
            | LO
            | LT
            | PN
            | SH
            | SL
            | SS
            | ST
            | TM
            | UI
            | UL
            | US
    )
}

/// Checks the file meta group. `data` starts at the "DICM" magic code; like dicom-rs, the group's
/// extent is taken from (0002,0000) File Meta Information Group Length.
pub(super) fn check_meta(data: &[u8]) -> Result<(), IngestError> {
    let b = Bytes {
        data,
        big_endian: false,
    };
    let first = (b.u16(4), b.u16(6), b.explicit_header(4));
    let (Some(0x0002), Some(0x0000), Some((_, 4, 8))) = first else {
        return Ok(()); // not a group length: the parser reports it
    };
    let Some(group_length) = b.u32(12) else {
        return Ok(());
    };
    let mut pos = 16usize;
    let mut consumed = 0u64;
    while consumed < u64::from(group_length) {
        let (Some(group), Some(element)) = (b.u16(pos), b.u16(pos + 2)) else {
            return Ok(());
        };
        let Some((_, len, header)) = b.explicit_header(pos) else {
            return Ok(());
        };
        if len == UNDEFINED {
            return Ok(());
        }
        b.ensure(Tag(group, element), len, pos + header)?;
        let step = header + len as usize;
        pos += step;
        consumed += step as u64;
    }
    Ok(())
}

/// Checks every declared length in a data set encoded as `syntax`.
pub(super) fn check_dataset(data: &[u8], syntax: Syntax) -> Result<(), IngestError> {
    let b = Bytes {
        data,
        big_endian: syntax.big_endian,
    };
    let mut pos = 0usize;
    // Inside encapsulated pixel data: items are opaque fragments, not nested data sets.
    let mut in_fragments = false;
    loop {
        let (Some(group), Some(element)) = (b.u16(pos), b.u16(pos + 2)) else {
            return Ok(());
        };
        let tag = Tag(group, element);
        if group == 0xFFFE {
            // Item and delimiters: tag and a 32-bit length, no VR, in every syntax.
            let Some(len) = b.u32(pos + 4) else {
                return Ok(());
            };
            pos += 8;
            match element {
                0xE000 if in_fragments => {
                    if len == UNDEFINED {
                        return Ok(());
                    }
                    b.ensure(tag, len, pos)?;
                    pos += len as usize;
                }
                // A sequence item holds elements: step into it.
                0xE000 if len != UNDEFINED => b.ensure(tag, len, pos)?,
                0xE0DD => in_fragments = false,
                _ => {}
            }
            continue;
        }
        if in_fragments {
            return Ok(());
        }
        let (vr, len, header) = if syntax.explicit_vr {
            let Some(h) = b.explicit_header(pos) else {
                return Ok(());
            };
            h
        } else {
            let Some(len) = b.u32(pos + 4) else {
                return Ok(());
            };
            (implicit_vr(tag), len, 8)
        };
        pos += header;
        if len == UNDEFINED {
            // dicom-rs reads undefined-length Pixel Data as fragments and any other as a sequence.
            in_fragments = tag == tags::PIXEL_DATA;
            continue;
        }
        b.ensure(tag, len, pos)?;
        if vr != VR::SQ {
            pos += len as usize;
        }
    }
}

/// The VR dicom-rs's implicit-VR decoder assigns to a tag.
fn implicit_vr(tag: Tag) -> VR {
    if tag == tags::PIXEL_DATA || (tag.0 >> 8 == 0x60 && tag.1 == 0x3000) {
        return VR::OW;
    }
    StandardDataDictionary
        .by_tag(tag)
        .map(|entry| entry.vr().relaxed())
        .unwrap_or(VR::UN)
}

/// Inflates a deflated data set (raw deflate, PS3.5 A.5), refusing to produce more than `cap` bytes.
pub(super) fn inflate(data: &[u8], cap: u64) -> Result<Vec<u8>, IngestError> {
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(data)
        .take(cap.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|_| {
            IngestError::Malformed("the deflated data set is not a valid deflate stream".into())
        })?;
    if out.len() as u64 > cap {
        return Err(IngestError::TooLarge(format!(
            "the deflated data set inflates to more than {cap} bytes, more than the frame and pixel limits allow"
        )));
    }
    Ok(out)
}
