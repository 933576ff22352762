//! Header checks on compressed fragments before a codec sees them.
//!
//! The JPEG and JPEG 2000 decoders allocate for the size written in the codestream, not for Rows and
//! Columns, and dicom-rs's RLE reader trusts the segment table; so the declared geometry is compared
//! with the (already size-checked) DICOM attributes first.

use super::map::Layout;
use super::IngestError;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Geometry a codestream declares.
#[derive(Debug, PartialEq, Eq)]
struct Declared {
    rows: u64,
    cols: u64,
    components: u64,
    /// Bits per sample (largest over components).
    precision: u64,
    /// Some component is subsampled (JPEG 2000 only; the adapter expects full-size components).
    subsampled: bool,
}

/// Checks every fragment that starts a JPEG image (SOI marker) against the layout.
pub(super) fn check_jpeg(fragments: &[Vec<u8>], layout: &Layout) -> Result<(), IngestError> {
    for (i, f) in fragments.iter().enumerate() {
        if f.starts_with(&[0xFF, 0xD8]) {
            let d = jpeg_frame_header(f).ok_or_else(|| {
                IngestError::Malformed(format!("JPEG fragment {i} has no readable frame header"))
            })?;
            // jpeg-decoder returns 1 byte per sample up to 8 bits, 2 above.
            compare("JPEG", i, &d, layout, true)?;
        }
    }
    Ok(())
}

/// The SOF segment of a JPEG stream (ITU T.81 B.2.2).
fn jpeg_frame_header(b: &[u8]) -> Option<Declared> {
    let mut pos = 2;
    loop {
        if *b.get(pos)? != 0xFF {
            return None;
        }
        // Any number of 0xFF fill bytes may precede a marker.
        while *b.get(pos + 1)? == 0xFF {
            pos += 1;
        }
        let marker = *b.get(pos + 1)?;
        pos += 2;
        match marker {
            // Standalone markers carry no length.
            0x01 | 0xD0..=0xD7 => continue,
            // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                return Some(Declared {
                    precision: u64::from(*b.get(pos + 2)?),
                    rows: u64::from(be16(b, pos + 3)?),
                    cols: u64::from(be16(b, pos + 5)?),
                    components: u64::from(*b.get(pos + 7)?),
                    // jpeg-decoder upsamples chroma itself.
                    subsampled: false,
                });
            }
            // Scan or end of image before any frame header.
            0xDA | 0xD9 => return None,
            _ => pos += usize::from(be16(b, pos)?),
        }
    }
}

/// Checks every fragment that starts a JPEG 2000 codestream (SOC + SIZ, possibly inside a JP2 file)
/// against the layout.
pub(super) fn check_j2k(fragments: &[Vec<u8>], layout: &Layout) -> Result<(), IngestError> {
    const JP2_SIGNATURE: [u8; 12] = [0, 0, 0, 12, b'j', b'P', b' ', b' ', 13, 10, 0x87, 10];
    const SOC_SIZ: [u8; 4] = [0xFF, 0x4F, 0xFF, 0x51];
    for (i, f) in fragments.iter().enumerate() {
        let start = if f.starts_with(&SOC_SIZ) {
            Some(0)
        } else if f.starts_with(&JP2_SIGNATURE) {
            Some(f.windows(4).position(|w| w == SOC_SIZ).ok_or_else(|| {
                IngestError::Malformed(format!("JPEG 2000 fragment {i} holds no codestream"))
            })?)
        } else {
            None
        };
        if let Some(start) = start {
            let d = j2k_size(f.get(start..).unwrap_or_default()).ok_or_else(|| {
                IngestError::Malformed(format!(
                    "JPEG 2000 fragment {i} has no readable image header"
                ))
            })?;
            // The JPEG 2000 adapter writes Bits Allocated / 8 bytes per sample whatever the precision.
            compare("JPEG 2000", i, &d, layout, false)?;
        }
    }
    Ok(())
}

/// The SIZ segment of a codestream starting with SOC (ITU T.800 A.5.1).
fn j2k_size(b: &[u8]) -> Option<Declared> {
    let cols = be32(b, 8)?.checked_sub(be32(b, 16)?)?;
    let rows = be32(b, 12)?.checked_sub(be32(b, 20)?)?;
    let components = be16(b, 40)?;
    let mut precision = 0;
    let mut subsampled = false;
    for c in 0..usize::from(components) {
        let ssiz = *b.get(42 + 3 * c)?;
        precision = precision.max(u64::from(ssiz & 0x7F) + 1);
        subsampled |= *b.get(43 + 3 * c)? != 1 || *b.get(44 + 3 * c)? != 1;
    }
    Some(Declared {
        rows: u64::from(rows),
        cols: u64::from(cols),
        components: u64::from(components),
        precision,
        subsampled,
    })
}

fn compare(
    codec: &str,
    i: usize,
    d: &Declared,
    layout: &Layout,
    same_width: bool,
) -> Result<(), IngestError> {
    let wanted = Declared {
        rows: layout.rows as u64,
        cols: layout.cols as u64,
        components: layout.samples_per_pixel() as u64,
        precision: d.precision,
        subsampled: d.subsampled,
    };
    if *d != wanted {
        return Err(IngestError::Malformed(format!(
            "{codec} fragment {i} is {} x {} with {} component(s), but the DICOM attributes say {} x {} with {}",
            d.rows, d.cols, d.components, wanted.rows, wanted.cols, wanted.components
        )));
    }
    if d.subsampled {
        return Err(IngestError::Unsupported(format!(
            "{codec} fragment {i} has subsampled components, which are not supported"
        )));
    }
    let bits = u64::from(layout.bits_allocated);
    if d.precision == 0 || d.precision > bits || (same_width && (d.precision > 8) != (bits > 8)) {
        return Err(IngestError::Malformed(format!(
            "{codec} fragment {i} has {}-bit samples, which do not fit Bits Allocated {bits}",
            d.precision
        )));
    }
    Ok(())
}

/// Checks the RLE header of each frame's fragment (PS3.5 G.3.1): one segment per byte of each sample,
/// offsets ascending within the fragment.
pub(super) fn check_rle(
    fragments: &[Vec<u8>],
    frames: usize,
    layout: &Layout,
) -> Result<(), IngestError> {
    if fragments.len() != frames {
        return Err(IngestError::Malformed(format!(
            "RLE pixel data has {} fragments for {frames} frame(s); it needs one per frame",
            fragments.len()
        )));
    }
    let segments = layout.samples_per_pixel() * usize::from(layout.bits_allocated / 8);
    for (i, f) in fragments.iter().enumerate() {
        let le32 = |at: usize| {
            f.get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_le_bytes)
        };
        let bad = |why: &str| IngestError::Malformed(format!("RLE fragment {i}: {why}"));
        if f.len() < 64 {
            return Err(bad("shorter than the 64-byte RLE header"));
        }
        if le32(0) != Some(segments as u32) {
            return Err(bad(&format!(
                "the header does not declare {segments} segment(s)"
            )));
        }
        let mut previous = 64u32;
        for s in 0..segments {
            let offset = le32(4 + 4 * s).unwrap_or(0);
            if (s == 0 && offset != 64) || offset < previous || offset as usize > f.len() {
                return Err(bad("segment offsets are out of order or out of range"));
            }
            previous = offset;
        }
        // dicom-rs indexes past a segment that decodes short (a panic), so the length is checked here.
        let pixels = layout.rows * layout.cols;
        for s in 0..segments {
            let start = le32(4 + 4 * s).unwrap_or(0) as usize;
            let end = if s + 1 < segments {
                le32(8 + 4 * s).unwrap_or(0) as usize
            } else {
                f.len()
            };
            let decoded = packbits_len(f.get(start..end).unwrap_or_default(), pixels);
            if decoded < pixels {
                return Err(bad(&format!(
                    "segment {s} decodes to {decoded} bytes; {} x {} pixels need {pixels}",
                    layout.rows, layout.cols
                )));
            }
        }
    }
    Ok(())
}

/// How many bytes a PackBits segment decodes to (counting stops at `enough`), read as dicom-rs's
/// reader reads it: a literal run cut short by the end of the segment gives the bytes that are there.
fn packbits_len(segment: &[u8], enough: usize) -> usize {
    let (mut pos, mut len) = (0, 0);
    while pos < segment.len() && len < enough {
        let h = segment[pos] as i8;
        pos += 1;
        match h {
            // A replicate run: one byte repeated 1 - h times.
            -127..=-1 if pos < segment.len() => {
                len += (1 - isize::from(h)) as usize;
                pos += 1;
            }
            // A literal run of h + 1 bytes.
            0..=127 => {
                let n = h as usize + 1;
                len += n.min(segment.len() - pos);
                pos += n;
            }
            // -128 is a no-op; a replicate header at the very end is a read error in dicom-rs.
            _ => {}
        }
    }
    len
}
