//! DICOM Part 10 files as the upload and STOW-RS endpoints decode them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spe::ingest::dicom;

fuzz_target!(|data: &[u8]| {
    let limits = dicom::Limits {
        max_pixels: 1 << 22,
        max_frames: 64,
        max_total_pixels: 1 << 24,
    };
    let _ = dicom::decode(data, &limits);
});
