//! Clinical input formats (DICOM, NIfTI) turned into the 2-D planes the engine works on.
//!
//! Every decoder here takes untrusted bytes: it bounds what it allocates, never panics on malformed data
//! and never puts patient-identifying attribute values into its errors. A plane keeps the source's display
//! values at the source's resolution; it is stored as a PNG (8-bit when the source is 8-bit, 16-bit when its
//! values were mapped from a wider range), so the engine decodes it exactly as it decodes an uploaded PNG.

pub mod dicom;
pub mod expand;
pub mod multipart;
pub mod nifti;

use ndarray::{Array2, Array3};

/// Pixels of one plane, rows x columns as stored in the source.
#[derive(Clone, Debug, PartialEq)]
pub enum Pixels {
    /// 8-bit gray used as-is (0..=255).
    Gray8(Array2<u8>),
    /// Gray mapped from a wider range onto 0..=65535 (the engine reads v / 257, i.e. 0..=255).
    Gray16(Array2<u16>),
    /// 8-bit RGB, shape (rows, cols, 3); the engine reduces it to luma as it does for an RGB PNG.
    Rgb8(Array3<u8>),
}

impl Pixels {
    /// (rows, cols).
    pub fn dim(&self) -> (usize, usize) {
        match self {
            Pixels::Gray8(a) => a.dim(),
            Pixels::Gray16(a) => a.dim(),
            Pixels::Rgb8(a) => (a.dim().0, a.dim().1),
        }
    }
}

/// One 2-D image of a source file (a DICOM frame, a NIfTI slice).
#[derive(Clone, Debug, PartialEq)]
pub struct Plane {
    pub pixels: Pixels,
    /// Physical size of one pixel in millimetres, [between rows, between columns], when the source says.
    pub spacing_mm: Option<[f64; 2]>,
}

/// Why a clinical file cannot be used. Messages name tags, transfer syntaxes and sizes, never values of
/// patient attributes.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum IngestError {
    /// The encoding of the pixel data is one this service does not decode (HTTP 415).
    #[error("transfer syntax {uid} ({name}) is not supported; send uncompressed, deflated, RLE, JPEG or JPEG 2000 DICOM")]
    UnsupportedTransferSyntax { uid: String, name: String },
    /// Well-formed but outside what the service handles (e.g. a photometric interpretation it cannot map).
    #[error("{0}")]
    Unsupported(String),
    /// Not a readable file of the expected format.
    #[error("{0}")]
    Malformed(String),
    /// Larger than the configured limits.
    #[error("{0}")]
    TooLarge(String),
}
