//! The committed DICOM and NIfTI fixtures (tests/fixtures/dicom, tests/fixtures/nifti) used by the README's
//! walkthrough hold exactly the synthetic batch's pixels. Regenerate them with
//! `cargo test --test clinical_fixtures -- --ignored`.

use ndarray::Array2;
use spe::ingest::dicom::{self, testdata as dcm};
use spe::ingest::nifti::{self, testdata::nifti_u8};
use spe::ingest::Pixels;
use std::path::{Path, PathBuf};

const SIDE: usize = 128;
/// The fixtures' pixel size in mm (so HD95 is also reported in mm).
const SPACING: f64 = 0.7;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// (file stem, 8-bit pixels) of the synthetic batch PNGs, in name order.
fn batch() -> Vec<(String, Vec<u8>)> {
    let dir = fixtures().join("synthetic/batch");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let img = image::open(p).unwrap().to_luma8();
            assert_eq!(img.dimensions(), (SIDE as u32, SIDE as u32));
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            (stem, img.into_raw())
        })
        .collect()
}

fn dicom_path(stem: &str) -> PathBuf {
    fixtures().join(format!("dicom/batch/{stem}.dcm"))
}

fn nifti_path() -> PathBuf {
    fixtures().join("nifti/batch.nii.gz")
}

fn dicom_bytes(i: usize, pixels: &[u8]) -> Vec<u8> {
    dcm::gray8_patient_instance(
        SIDE,
        SIDE,
        pixels,
        1,
        &format!("2.25.{}", 1_000_000 + i),
        dcm::EXPLICIT_VR_LE,
        None,
        Some([SPACING, SPACING]),
    )
}

fn nifti_bytes(slices: &[Vec<u8>]) -> Vec<u8> {
    // Voxel (i, j, k) = slice k at row j, column i: the service slices the last axis back into the PNGs.
    let data: Vec<u8> = slices.concat();
    let s = SPACING as f32;
    nifti_u8([SIDE, SIDE, slices.len()], &data, [s, s, 1.0], true)
}

#[test]
#[ignore = "writes the fixtures; run with --ignored to regenerate"]
fn write_clinical_fixtures() {
    std::fs::create_dir_all(fixtures().join("dicom/batch")).unwrap();
    std::fs::create_dir_all(fixtures().join("nifti")).unwrap();
    let batch = batch();
    for (i, (stem, pixels)) in batch.iter().enumerate() {
        std::fs::write(dicom_path(stem), dicom_bytes(i, pixels)).unwrap();
    }
    let slices: Vec<Vec<u8>> = batch.into_iter().map(|(_, p)| p).collect();
    std::fs::write(nifti_path(), nifti_bytes(&slices)).unwrap();
}

fn as_gray8(p: &Pixels) -> &Array2<u8> {
    match p {
        Pixels::Gray8(a) => a,
        other => panic!("expected 8-bit gray, got {other:?}"),
    }
}

#[test]
fn committed_dicom_fixtures_hold_the_batch_pixels() {
    let limits = dicom::Limits {
        max_pixels: 1 << 20,
        max_frames: 4,
        max_total_pixels: 1 << 22,
    };
    let batch = batch();
    for (stem, pixels) in &batch {
        let path = dicom_path(stem);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (regenerate: see this file's header)",
                path.display()
            )
        });
        let instance = dicom::decode(&bytes, &limits).unwrap();
        assert_eq!(instance.frames.len(), 1);
        let frame = &instance.frames[0];
        assert_eq!(
            as_gray8(&frame.pixels).as_slice().unwrap(),
            &pixels[..],
            "{stem}"
        );
        assert_eq!(frame.spacing_mm, Some([SPACING, SPACING]), "{stem}");
    }
    let dir_count = std::fs::read_dir(fixtures().join("dicom/batch"))
        .unwrap()
        .count();
    assert_eq!(
        dir_count,
        batch.len(),
        "stale files in tests/fixtures/dicom/batch"
    );
}

#[test]
fn committed_nifti_fixture_holds_the_batch_pixels() {
    let limits = nifti::Limits {
        max_voxels: 1 << 24,
        max_slices: 64,
    };
    let bytes = std::fs::read(nifti_path()).unwrap();
    let planes = nifti::decode_volume(&bytes, None, &limits).unwrap();
    let batch = batch();
    assert_eq!(planes.len(), batch.len());
    for (plane, (stem, pixels)) in planes.iter().zip(&batch) {
        assert_eq!(
            as_gray8(&plane.pixels).as_slice().unwrap(),
            &pixels[..],
            "{stem}"
        );
        let [r, c] = plane.spacing_mm.unwrap();
        assert!((r - SPACING).abs() < 1e-6 && (c - SPACING).abs() < 1e-6);
    }
}
