//! DICOM Part 10 files -> planes (one per frame). STUB: being implemented.

use super::{IngestError, Plane};

/// Bounds on what one instance may make the decoder allocate.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Pixels per frame (rows x columns).
    pub max_pixels: u64,
    /// Frames per instance.
    pub max_frames: usize,
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

/// Whether the bytes look like a DICOM Part 10 file ("DICM" after the 128-byte preamble).
pub fn is_dicom(bytes: &[u8]) -> bool {
    bytes.len() >= 132 && &bytes[128..132] == b"DICM"
}

/// Decodes every frame of a DICOM Part 10 file.
pub fn decode(_bytes: &[u8], _limits: &Limits) -> Result<Instance, Failure> {
    Err(Failure {
        sop_class_uid: None,
        sop_instance_uid: None,
        error: IngestError::Unsupported("DICOM decoding is not implemented yet".into()),
    })
}
