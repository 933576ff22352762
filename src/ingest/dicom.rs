//! DICOM Part 10 files -> planes (one per frame), with dicom-rs.
//!
//! # What is read
//!
//! Single- and multi-frame images, MONOCHROME1, MONOCHROME2 and RGB (interleaved or planar), 8 or 16
//! bits allocated, signed or unsigned. Transfer syntaxes: Implicit VR Little Endian, Explicit VR Little
//! and Big Endian, Deflated Explicit VR Little Endian, RLE Lossless, JPEG Baseline (.50), JPEG Extended
//! (.51), JPEG Lossless (.57, .70) and JPEG 2000 (.90, .91). YBR_FULL / YBR_FULL_422 are accepted in
//! lossy JPEG and YBR_ICT / YBR_RCT in JPEG 2000, where the codec returns RGB. Any other transfer
//! syntax is [`IngestError::UnsupportedTransferSyntax`] (HTTP 415) naming it; other photometric
//! interpretations (PALETTE COLOR, YBR in uncompressed data, ...) are [`IngestError::Unsupported`].
//!
//! # Display values
//!
//! 1. Modality LUT: `v = stored * RescaleSlope + RescaleIntercept` (defaults 1 and 0), the stored value
//!    being signed when Pixel Representation is 1.
//! 2. 8-bit unsigned monochrome with the identity rescale and no window is kept as is:
//!    [`Pixels::Gray8`](super::Pixels::Gray8), so a DICOM made from a PNG gives the PNG's pixels.
//!    MONOCHROME1 then becomes `255 - v`.
//! 3. Any other monochrome image becomes [`Pixels::Gray16`](super::Pixels::Gray16) over 0..=65535: with
//!    Window Center/Width (0028,1050/1051; first value; used when the width is >= 1) through the linear
//!    VOI function of PS3.3 C.11.2.1.2.1 (`x <= c - 0.5 - (w-1)/2` -> 0, `x > c - 0.5 + (w-1)/2` ->
//!    65535, else `((x - (c - 0.5)) / (w - 1) + 0.5) * 65535`), otherwise stretched from the frame's
//!    minimum to its maximum after rescale (a constant frame becomes 0); rounded to nearest.
//!    MONOCHROME1 then becomes `65535 - v`. VOI LUT Function and VOI LUT Sequence are not used.
//! 4. RGB becomes [`Pixels::Rgb8`](super::Pixels::Rgb8): 8-bit samples as they are, 16-bit samples
//!    times `255 / (2^BitsStored - 1)`. No window.
//!
//! Rescale and window are read per frame from the Per-Frame, then the Shared Functional Groups (enhanced
//! multi-frame objects), then the top-level data set. Pixel spacing is Pixel Spacing (0028,0030) (or the
//! Pixel Measures functional group), else Imager Pixel Spacing (0018,1164), the same for every frame.
//!
//! # Untrusted input
//!
//! Every declared element length is checked against the bytes that are really there before dicom-rs
//! allocates for it; a deflated data set may inflate to at most what the limits allow for its frames
//! (frames x pixels x 3 samples x 2 bytes, plus 16 MiB of other attributes). Rows x Columns and the
//! number of frames are checked against [`Limits`] before pixel data is decoded, and the sizes written
//! inside JPEG, JPEG 2000 and RLE fragments are checked against those attributes before a codec runs.
//! Parsing and decoding run under `catch_unwind`. Errors name tags, sizes and transfer syntaxes; the
//! parser's and codecs' own messages, which may quote element values, are replaced or scrubbed, so no
//! patient or study attribute value reaches an error.

mod attrs;
mod codestream;
mod frames;
mod map;
mod scan;
#[doc(hidden)]
pub mod testdata;
#[cfg(test)]
mod tests;

use std::panic::{catch_unwind, AssertUnwindSafe};

use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::Endianness;
use dicom_encoding::{Codec, NeverAdapter, NeverPixelAdapter, TransferSyntax};
use dicom_object::{FileMetaTable, InMemDicomObject};

use self::map::{Order, Transform};
use self::scan::Syntax;
use super::{IngestError, Plane};

/// Bounds on what one instance may make the decoder allocate.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Pixels per frame (rows x columns).
    pub max_pixels: u64,
    /// Frames per instance.
    pub max_frames: usize,
    /// Pixels over all frames of an instance.
    pub max_total_pixels: u64,
}

/// A decoded instance: its identifying UIDs (for STOW-RS answers) and its frames.
#[derive(Debug)]
pub struct Instance {
    pub sop_class_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
    pub transfer_syntax: String,
    pub frames: Vec<Plane>,
}

/// An instance that cannot be used: its UIDs when they could be read, and why.
#[derive(Debug)]
pub struct Failure {
    pub sop_class_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
    pub error: IngestError,
}

/// Whether the bytes look like a DICOM Part 10 file: "DICM" after the 128-byte preamble, or at the
/// start of a file stored without its preamble.
pub fn is_dicom(bytes: &[u8]) -> bool {
    without_preamble(bytes).is_some()
}

/// Decodes every frame of a DICOM Part 10 file.
///
/// The UIDs come from SOP Class/Instance UID (0008,0016/0018) when the data set could be read, else
/// from the file meta information (0002,0002/0003); a value that is not a well-formed UID is left out.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Instance, Failure> {
    let mut ids = Ids::default();
    let outcome = catch_unwind(AssertUnwindSafe(|| decode_file(bytes, limits, &mut ids)));
    let error = match outcome {
        Ok(Ok((transfer_syntax, frames))) => {
            return Ok(Instance {
                sop_class_uid: ids.class,
                sop_instance_uid: ids.instance,
                transfer_syntax,
                frames,
            })
        }
        Ok(Err(e)) => e,
        Err(_) => IngestError::Malformed("the DICOM reader failed on malformed data".into()),
    };
    Err(Failure {
        sop_class_uid: ids.class,
        sop_instance_uid: ids.instance,
        error,
    })
}

/// UIDs found so far (kept outside the unwinding closure so a failure still carries them).
#[derive(Default)]
struct Ids {
    class: Option<String>,
    instance: Option<String>,
}

/// How pixel data is stored in a transfer syntax.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Native,
    Deflated,
    Rle,
    JpegLossy,
    JpegLossless,
    Jpeg2000,
}

impl Encoding {
    /// Pixel data as plain samples in the data set (not encapsulated).
    fn is_native(self) -> bool {
        matches!(self, Encoding::Native | Encoding::Deflated)
    }
}

struct Supported {
    uid: &'static str,
    name: &'static str,
    encoding: Encoding,
    syntax: Syntax,
}

const fn ts(uid: &'static str, name: &'static str, encoding: Encoding) -> Supported {
    let syntax = Syntax {
        explicit_vr: true,
        big_endian: false,
    };
    Supported {
        uid,
        name,
        encoding,
        syntax,
    }
}

const SUPPORTED: [Supported; 11] = [
    Supported {
        syntax: Syntax {
            explicit_vr: false,
            big_endian: false,
        },
        ..ts(
            "1.2.840.10008.1.2",
            "Implicit VR Little Endian",
            Encoding::Native,
        )
    },
    ts(
        "1.2.840.10008.1.2.1",
        "Explicit VR Little Endian",
        Encoding::Native,
    ),
    Supported {
        syntax: Syntax {
            explicit_vr: true,
            big_endian: true,
        },
        ..ts(
            "1.2.840.10008.1.2.2",
            "Explicit VR Big Endian",
            Encoding::Native,
        )
    },
    ts(
        "1.2.840.10008.1.2.1.99",
        "Deflated Explicit VR Little Endian",
        Encoding::Deflated,
    ),
    ts("1.2.840.10008.1.2.5", "RLE Lossless", Encoding::Rle),
    ts(
        "1.2.840.10008.1.2.4.50",
        "JPEG Baseline (Process 1)",
        Encoding::JpegLossy,
    ),
    ts(
        "1.2.840.10008.1.2.4.51",
        "JPEG Extended (Process 2 & 4)",
        Encoding::JpegLossy,
    ),
    ts(
        "1.2.840.10008.1.2.4.57",
        "JPEG Lossless (Process 14)",
        Encoding::JpegLossless,
    ),
    ts(
        "1.2.840.10008.1.2.4.70",
        "JPEG Lossless (Process 14, Selection Value 1)",
        Encoding::JpegLossless,
    ),
    ts(
        "1.2.840.10008.1.2.4.90",
        "JPEG 2000 (Lossless Only)",
        Encoding::Jpeg2000,
    ),
    ts("1.2.840.10008.1.2.4.91", "JPEG 2000", Encoding::Jpeg2000),
];

/// Names of transfer syntaxes that are refused, for the 415 answer.
fn unsupported_name(uid: &str) -> &'static str {
    let Some(jpeg) = uid.strip_prefix("1.2.840.10008.1.2.4.") else {
        return match uid {
            "1.2.840.10008.1.2.1.98" => "Encapsulated Uncompressed Explicit VR Little Endian",
            "1.2.840.10008.1.2.8.1" => "Deflated Image Frame Compression",
            "1.2.840.10008.1.2.6.1" => "RFC 2557 MIME Encapsulation",
            "1.2.840.10008.1.2.6.2" => "XML Encoding",
            "1.2.840.10008.1.20" => "Papyrus 3 Implicit VR Little Endian",
            u if u.starts_with("1.2.840.10008.1.2.7.") => "SMPTE ST 2110",
            _ => "unknown transfer syntax",
        };
    };
    match jpeg {
        "80" => "JPEG-LS Lossless",
        "81" => "JPEG-LS Near-Lossless",
        "92" | "93" => "JPEG 2000 Part 2 Multi-component",
        "94" | "95" => "JPIP Referenced",
        "201" | "202" => "HTJ2K Lossless",
        "203" => "HTJ2K",
        "204" | "205" => "JPIP HTJ2K Referenced",
        "110" => "JPEG XL Lossless",
        "111" => "JPEG XL JPEG Recompression",
        "112" => "JPEG XL",
        j if j.starts_with("100") || j.starts_with("101") => "MPEG-2 video",
        j if ["102", "103", "104", "105", "106"]
            .iter()
            .any(|p| j.starts_with(p)) =>
        {
            "MPEG-4 AVC/H.264 video"
        }
        j if j.starts_with("107") || j.starts_with("108") => "HEVC/H.265 video",
        j if j.parse::<u32>().is_ok_and(|n| (52..=66).contains(&n)) => "JPEG (retired process)",
        _ => "unknown transfer syntax",
    }
}

fn unsupported_transfer_syntax(uid: &str) -> IngestError {
    match attrs::clean_uid(uid) {
        Some(uid) => IngestError::UnsupportedTransferSyntax {
            name: unsupported_name(&uid).to_string(),
            uid,
        },
        None => IngestError::UnsupportedTransferSyntax {
            uid: "(not a valid UID)".into(),
            name: "unknown transfer syntax".into(),
        },
    }
}

/// The file from its "DICM" magic code on.
fn without_preamble(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.get(128..132) == Some(b"DICM") {
        bytes.get(128..)
    } else if bytes.starts_with(b"DICM") {
        Some(bytes)
    } else {
        None
    }
}

/// (transfer syntax UID, planes).
fn decode_file(
    bytes: &[u8],
    limits: &Limits,
    ids: &mut Ids,
) -> Result<(String, Vec<Plane>), IngestError> {
    let file = without_preamble(bytes).ok_or_else(|| {
        IngestError::Malformed("not a DICOM Part 10 file (no \"DICM\" marker)".into())
    })?;
    scan::check_meta(file)?;
    let mut rest = file;
    let mut meta = FileMetaTable::from_reader(&mut rest).map_err(|_| {
        IngestError::Malformed(
            "the DICOM file meta information (group 0002) is missing, truncated or invalid".into(),
        )
    })?;
    ids.class = attrs::clean_uid(meta.media_storage_sop_class_uid());
    ids.instance = attrs::clean_uid(meta.media_storage_sop_instance_uid());
    let ts = SUPPORTED
        .iter()
        .find(|t| t.uid == meta.transfer_syntax())
        .ok_or_else(|| unsupported_transfer_syntax(meta.transfer_syntax()))?;
    // dicom-pixeldata looks the codec up by this string; keep it free of padding.
    meta.transfer_syntax = ts.uid.to_string();

    let obj = read_dataset(rest, ts, limits)?;
    if let Some(uid) = attrs::uid(&obj, tags::SOP_CLASS_UID) {
        ids.class = Some(uid);
    }
    if let Some(uid) = attrs::uid(&obj, tags::SOP_INSTANCE_UID) {
        ids.instance = Some(uid);
    }
    let planes = planes(obj, meta, ts, limits)?;
    Ok((ts.uid.to_string(), planes))
}

fn read_dataset(
    data: &[u8],
    ts: &Supported,
    limits: &Limits,
) -> Result<InMemDicomObject, IngestError> {
    let inflated;
    let data = if ts.encoding == Encoding::Deflated {
        // Inflated here rather than by dicom-rs so that the output is bounded.
        let cap = (limits.max_frames as u64)
            .saturating_mul(limits.max_pixels)
            .min(limits.max_total_pixels)
            .saturating_mul(6)
            .saturating_add(16 << 20);
        inflated = scan::inflate(data, cap)?;
        &inflated[..]
    } else {
        data
    };
    scan::check_dataset(data, ts.syntax)?;
    let endianness = if ts.syntax.big_endian {
        Endianness::Big
    } else {
        Endianness::Little
    };
    // Structure only: pixel data codecs are applied later, from the registry, by dicom-pixeldata.
    let reader = TransferSyntax::<NeverAdapter, NeverPixelAdapter, NeverPixelAdapter>::new(
        ts.uid,
        ts.name,
        endianness,
        ts.syntax.explicit_vr,
        Codec::None,
    )
    .erased();
    InMemDicomObject::read_dataset_with_ts(data, &reader).map_err(|_| {
        // dicom-rs messages can quote element values (e.g. an invalid date); say only what failed.
        IngestError::Malformed(format!(
            "the DICOM data set ({}) is malformed or truncated",
            ts.name
        ))
    })
}

fn planes(
    mut obj: InMemDicomObject,
    meta: FileMetaTable,
    ts: &Supported,
    limits: &Limits,
) -> Result<Vec<Plane>, IngestError> {
    let rows = attrs::required_uint(&obj, tags::ROWS, "Rows")?;
    let cols = attrs::required_uint(&obj, tags::COLUMNS, "Columns")?;
    if rows == 0 || cols == 0 {
        return Err(IngestError::Malformed(format!(
            "the image is empty ({rows} rows x {cols} columns)"
        )));
    }
    let frames = attrs::number_of_frames(&obj)?;
    let pixels = u64::from(rows) * u64::from(cols);
    if pixels > limits.max_pixels {
        return Err(IngestError::TooLarge(format!(
            "each frame is {rows} x {cols} = {pixels} pixels; the limit is {}",
            limits.max_pixels
        )));
    }
    if frames > limits.max_frames as u64 {
        return Err(IngestError::TooLarge(format!(
            "the instance has {frames} frames; the limit is {}",
            limits.max_frames
        )));
    }
    let total = pixels.saturating_mul(frames);
    if total > limits.max_total_pixels {
        return Err(IngestError::TooLarge(format!(
            "the instance holds {frames} frames of {rows} x {cols} = {total} pixels; the limit is {}",
            limits.max_total_pixels
        )));
    }
    let frames = frames as usize;
    if obj.get(tags::PIXEL_DATA).is_none() {
        let float = [tags::FLOAT_PIXEL_DATA, tags::DOUBLE_FLOAT_PIXEL_DATA];
        if let Some(tag) = float.into_iter().find(|t| obj.get(*t).is_some()) {
            return Err(IngestError::Unsupported(format!(
                "floating-point pixel data {tag} is not supported"
            )));
        }
        return Err(IngestError::Malformed(format!(
            "the instance has no Pixel Data {}",
            tags::PIXEL_DATA
        )));
    }
    let layout = attrs::layout(&obj, rows, cols, ts.encoding)?;
    let transforms = (0..frames)
        .map(|i| attrs::transform(&obj, i))
        .collect::<Result<Vec<_>, _>>()?;
    let spacing_mm = attrs::spacing(&obj);
    let plane = |frame: &[u8], order: Order, t: &Transform| Plane {
        pixels: map::to_pixels(frame, order, &layout, t),
        spacing_mm,
    };
    if ts.encoding.is_native() {
        let order = frames::native_order(&obj, ts);
        let data = frames::native_frames(&obj, &layout, frames, ts)?;
        // frame_bytes() > 0: rows, columns, samples and bytes per sample are all at least 1.
        Ok(data
            .chunks_exact(layout.frame_bytes())
            .zip(&transforms)
            .map(|(frame, t)| plane(frame, order, t))
            .collect())
    } else {
        let decoder = frames::encapsulated(&mut obj, meta, &layout, frames, ts)?;
        transforms
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let frame = frames::decode_frame(&decoder, i, &layout, ts)?;
                Ok(plane(&frame, Order::native(), t))
            })
            .collect()
    }
}
