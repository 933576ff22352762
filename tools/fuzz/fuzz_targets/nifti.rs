//! NIfTI volumes (plain and gzipped), as image and as label volumes, along every axis.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spe::ingest::nifti;

fuzz_target!(|data: &[u8]| {
    let limits = nifti::Limits {
        max_voxels: 1 << 22,
        max_slices: 256,
    };
    // The first byte picks the axis so every slicing path is reached.
    let (axis, bytes) = match data.split_first() {
        Some((a, rest)) => (Some(usize::from(*a % 4)), rest),
        None => (None, data),
    };
    let _ = nifti::is_nifti(bytes);
    let _ = nifti::decode_volume(bytes, axis, &limits);
    let _ = nifti::decode_label_volume(bytes, axis, &limits);
});
