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
    /// The `N` bytes at `at` in little-endian order (reversed when the input is big endian).
    fn word<const N: usize>(&self, at: usize) -> Option<[u8; N]> {
        let mut b: [u8; N] = self.data.get(at..at.checked_add(N)?)?.try_into().ok()?;
        if self.big_endian {
            b.reverse();
        }
        Some(b)
    }

    fn u16(&self, at: usize) -> Option<u16> {
        self.word(at).map(u16::from_le_bytes)
    }

    fn u32(&self, at: usize) -> Option<u32> {
        self.word(at).map(u32::from_le_bytes)
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

    /// Where a value of `len` bytes starting at `at` ends: None for an undefined length, an error when
    /// the input is shorter than declared.
    fn value_end(&self, tag: Tag, len: u32, at: usize) -> Result<Option<usize>, IngestError> {
        if len == UNDEFINED {
            return Ok(None);
        }
        self.ensure(tag, len, at)?;
        Ok(Some(at + len as usize))
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

/// A sequence or item the walk is inside, as dicom-rs's data set reader tracks it.
struct Open {
    item: bool,
    /// Inside encapsulated pixel data: items are opaque fragments, not nested data sets.
    pixel: bool,
    /// Where it ends, for a defined length.
    end: Option<usize>,
}

/// Checks every declared length in a data set encoded as `syntax`.
///
/// The walk keeps dicom-rs's reader state (open sequences and items, and whether an item header or an
/// element header comes next): a flat walk parts ways with the reader on malformed nesting (an item tag
/// where an element is expected is read as a value), and would then miss lengths it allocates for.
pub(super) fn check_dataset(data: &[u8], syntax: Syntax) -> Result<(), IngestError> {
    let b = Bytes {
        data,
        big_endian: syntax.big_endian,
    };
    let mut pos = 0usize;
    let mut open: Vec<Open> = Vec::new();
    // An item header (or a sequence delimiter) comes next, not an element.
    let mut in_sequence = false;
    loop {
        // A defined-length item or sequence ends where its length says.
        while let Some(top) = open.last() {
            match top.end {
                Some(end) if end == pos => {
                    in_sequence = top.item;
                    open.pop();
                }
                Some(end) if end < pos => return Ok(()), // the parser reports the overrun
                _ => break,
            }
        }
        let (Some(group), Some(element)) = (b.u16(pos), b.u16(pos + 2)) else {
            return Ok(());
        };
        let tag = Tag(group, element);
        if in_sequence {
            // Item and delimiters: tag and a 32-bit length, no VR, in every syntax.
            let Some(len) = b.u32(pos + 4) else {
                return Ok(());
            };
            pos += 8;
            match (group, element) {
                (0xFFFE, 0xE000) => {
                    let pixel = open.last().is_some_and(|o| o.pixel);
                    let end = b.value_end(tag, len, pos)?;
                    open.push(Open {
                        item: true,
                        pixel,
                        end,
                    });
                    in_sequence = false;
                    if pixel {
                        // A fragment is read whole (an undefined length is a parser error).
                        match end {
                            Some(end) => pos = end,
                            None => return Ok(()),
                        }
                    }
                }
                (0xFFFE, 0xE00D) => {
                    open.pop();
                    in_sequence = true;
                }
                (0xFFFE, 0xE0DD) => {
                    open.pop();
                    in_sequence = false;
                }
                _ => return Ok(()), // not an item: the parser fails here
            }
            continue;
        }
        let (vr, len, header) = if group == 0xFFFE {
            // Read like an item header, then taken as an element (UN in explicit VR).
            let Some(len) = b.u32(pos + 4) else {
                return Ok(());
            };
            let vr = if syntax.explicit_vr {
                VR::UN
            } else {
                implicit_vr(tag)
            };
            (vr, len, 8)
        } else if syntax.explicit_vr {
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
        if tag == Tag(0xFFFE, 0xE00D) && vr != VR::SQ {
            // An item delimiter ends the innermost item (outside any, it is skipped).
            if open.pop().is_some() {
                in_sequence = true;
            }
            continue;
        }
        if vr == VR::SQ || len == UNDEFINED {
            // dicom-rs reads undefined-length Pixel Data as fragments (unless its VR says SQ: it tests
            // that first) and any other as a sequence.
            let end = b.value_end(tag, len, pos)?;
            open.push(Open {
                item: false,
                pixel: vr != VR::SQ && tag == tags::PIXEL_DATA && len == UNDEFINED,
                end,
            });
            in_sequence = true;
            continue;
        }
        b.ensure(tag, len, pos)?;
        // dicom-rs reads len / size numbers and skips the rest unread, which would desynchronise this walk.
        if let Some(size) = value_size(vr).filter(|size| len % size != 0) {
            return Err(IngestError::Malformed(format!(
                "element {tag} ({vr}) has length {len}, not a multiple of its {size}-byte values"
            )));
        }
        pos += len as usize;
    }
}

/// Size of one value of a binary numeric VR (the values dicom-rs reads as numbers).
fn value_size(vr: VR) -> Option<u32> {
    use VR::*;
    match vr {
        US | SS | OW => Some(2),
        UL | SL | FL | OF | OL | AT => Some(4),
        FD | OD | SV | UV | OV => Some(8),
        _ => None,
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
