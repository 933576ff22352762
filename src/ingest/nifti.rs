//! NIfTI-1 volumes (.nii, .nii.gz) -> planes (one per slice). STUB: being implemented.

use super::{IngestError, Plane};
use ndarray::Array2;

/// Bounds on what one volume may make the decoder allocate.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Voxels per volume.
    pub max_voxels: u64,
    /// Slices per volume.
    pub max_slices: usize,
}

/// One slice of a label volume: foreground where the voxel is non-zero.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelPlane {
    pub mask: Array2<bool>,
    pub spacing_mm: Option<[f64; 2]>,
}

/// Whether the bytes look like a NIfTI-1 file, plain or gzipped.
pub fn is_nifti(_bytes: &[u8]) -> bool {
    false
}

/// The slices of an image volume along `axis` (0-based; default the last), intensities mapped to display
/// values.
pub fn decode_volume(
    _bytes: &[u8],
    _axis: Option<usize>,
    _limits: &Limits,
) -> Result<Vec<Plane>, IngestError> {
    Err(IngestError::Unsupported("NIfTI decoding is not implemented yet".into()))
}

/// The slices of a label volume along `axis`.
pub fn decode_label_volume(
    _bytes: &[u8],
    _axis: Option<usize>,
    _limits: &Limits,
) -> Result<Vec<LabelPlane>, IngestError> {
    Err(IngestError::Unsupported("NIfTI decoding is not implemented yet".into()))
}
