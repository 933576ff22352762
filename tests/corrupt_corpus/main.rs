//! The malformed-input corpus: every file in tests/fixtures/corrupt/{image,dicom,nifti,multipart}/ goes
//! through the decoder(s) an upload of that kind reaches, which must return without panicking (even a
//! panic the decoder catches itself fails here) and, unless the file name contains `.decodes`, with an
//! error (`.decodes`: fuzzer findings that are valid input, and a JPEG cut short in its scan, which the
//! decoder fills in as libjpeg does). Limits are the fuzz targets' (tools/fuzz/fuzz_targets/), so their findings replay as found.
//!
//! File conventions:
//! - `image/`: PNG/JPEG bytes, decoded by `decode_gray` and `decode_label`.
//! - `dicom/`: DICOM Part 10 files. Every hand-made one carries a patient name that no error may echo.
//! - `nifti/`: .nii / .nii.gz files, decoded along the default axis and axes 0, 1, 2 (only axis N when
//!   the name contains `.axisN.`), as image and as label volumes.
//! - `multipart/`: the fuzz target's format: the first line is the Content-Type, the rest the body.
//! - `fuzz-*`: inputs libFuzzer found (minimized), kept after the decoder was fixed; the others are
//!   hand-made by [`generate_corpus_and_seeds`].
//!
//! `cargo test --test corrupt_corpus -- --ignored` rewrites the hand-made files (fuzz-* files are kept)
//! and the fuzzing seeds in tools/fuzz/corpus/ (git-ignored); see README, "Fuzzing".

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;

use bytes::Bytes;
use spe::engine::image_io;
use spe::ingest::multipart::{related_boundary, related_parts};
use spe::ingest::{dicom, nifti};

const IMAGE_MAX_PIXELS: u64 = 1 << 22;
const DICOM_LIMITS: dicom::Limits = dicom::Limits {
    max_pixels: 1 << 22,
    max_frames: 64,
    max_total_pixels: 1 << 24,
};
const NIFTI_LIMITS: nifti::Limits = nifti::Limits {
    max_voxels: 1 << 22,
    max_slices: 256,
};
const MAX_PARTS: usize = 64;
/// Patient's Name of every hand-made DICOM file; it must not appear in any error.
const PATIENT: &str = "SECRET^PATIENT";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn corpus_dir(kind: &str) -> PathBuf {
    root().join("tests/fixtures/corrupt").join(kind)
}

/// (file name, bytes) of every file in a corpus folder, sorted by name.
fn corpus(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(kind);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    out.sort();
    assert!(out.len() >= 10, "{}: too few files", dir.display());
    out
}

fn must_fail(name: &str) -> bool {
    !name.contains(".decodes")
}

thread_local! {
    static PANICKED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`; an error naming the file if anything panicked inside it, caught or not.
fn no_panic<T>(name: &str, what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            PANICKED.with(|p| p.set(true));
            default(info);
        }));
    });
    PANICKED.with(|p| p.set(false));
    let out = panic::catch_unwind(AssertUnwindSafe(f));
    match out {
        Ok(v) if !PANICKED.with(Cell::get) => Ok(v),
        _ => Err(format!("{name}: {what} panicked")),
    }
}

/// Fails listing every problem, one per line.
fn report(kind: &str, problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{} problem(s) in tests/fixtures/corrupt/{kind}/:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn malformed_images_are_refused() {
    let mut problems = Vec::new();
    for (name, bytes) in corpus("image") {
        let check = || -> Result<(), String> {
            let gray = no_panic(&name, "decode_gray", || {
                image_io::decode_gray(&bytes, &name, IMAGE_MAX_PIXELS)
            })?;
            let label = no_panic(&name, "decode_label", || {
                image_io::decode_label(&bytes, &name, IMAGE_MAX_PIXELS)
            })?;
            println!("{name}: {:?}", gray.as_ref().err());
            if must_fail(&name) && gray.is_ok() {
                return Err(format!("{name}: decode_gray accepted it"));
            }
            if must_fail(&name) && label.is_ok() {
                return Err(format!("{name}: decode_label accepted it"));
            }
            Ok(())
        };
        problems.extend(check().err());
    }
    report("image", problems);
}

#[test]
fn malformed_dicom_is_refused() {
    let mut problems = Vec::new();
    for (name, bytes) in corpus("dicom") {
        let out = no_panic(&name, "dicom::decode", || {
            dicom::decode(&bytes, &DICOM_LIMITS)
        });
        if let Ok(Err(f)) = &out {
            println!("{name}: {}", f.error);
        }
        match out {
            Err(p) => problems.push(p),
            Ok(Err(f)) if f.error.to_string().contains("SECRET") => {
                problems.push(format!(
                    "{name}: the error quotes a patient attribute: {}",
                    f.error
                ));
            }
            Ok(Ok(_)) if must_fail(&name) => {
                problems.push(format!("{name}: dicom::decode accepted it"));
            }
            Ok(_) => {}
        }
    }
    report("dicom", problems);
}

#[test]
fn malformed_nifti_is_refused() {
    let mut problems = Vec::new();
    for (name, bytes) in corpus("nifti") {
        let axes: Vec<Option<usize>> = match (0..3).find(|a| name.contains(&format!(".axis{a}."))) {
            Some(a) => vec![Some(a)],
            None => vec![None, Some(0), Some(1), Some(2)],
        };
        let check = || -> Result<(), String> {
            no_panic(&name, "is_nifti", || nifti::is_nifti(&bytes))?;
            for axis in axes {
                let image = no_panic(&name, "decode_volume", || {
                    nifti::decode_volume(&bytes, axis, &NIFTI_LIMITS)
                })?;
                let label = no_panic(&name, "decode_label_volume", || {
                    nifti::decode_label_volume(&bytes, axis, &NIFTI_LIMITS)
                })?;
                println!("{name} axis {axis:?}: {:?}", image.as_ref().err());
                if must_fail(&name) && image.is_ok() {
                    return Err(format!("{name}: decode_volume(axis {axis:?}) accepted it"));
                }
                if must_fail(&name) && label.is_ok() {
                    return Err(format!(
                        "{name}: decode_label_volume(axis {axis:?}) accepted it"
                    ));
                }
            }
            Ok(())
        };
        problems.extend(check().err());
    }
    report("nifti", problems);
}

#[test]
fn malformed_multipart_is_refused() {
    let mut problems = Vec::new();
    for (name, bytes) in corpus("multipart") {
        let split = bytes
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(bytes.len());
        let body = Bytes::copy_from_slice(bytes.get(split + 1..).unwrap_or_default());
        // A Content-Type that is not UTF-8 never reaches the decoder (the HTTP layer refuses it).
        let Ok(header) = std::str::from_utf8(&bytes[..split]) else {
            continue;
        };
        let check = || -> Result<(), String> {
            let boundary = no_panic(&name, "related_boundary", || related_boundary(header))?;
            let (boundary, _) = match boundary {
                Ok(b) => b,
                Err(e) => {
                    println!("{name}: {e}");
                    return Ok(());
                }
            };
            let parts = no_panic(&name, "related_parts", || {
                futures::executor::block_on(related_parts(&boundary, body, MAX_PARTS))
            })?;
            println!("{name}: {:?}", parts.as_ref().err());
            if must_fail(&name) && parts.is_ok() {
                return Err(format!("{name}: related_parts accepted it"));
            }
            Ok(())
        };
        problems.extend(check().err());
    }
    report("multipart", problems);
}

// ---------------------------------------------------------------------------------------------------
// Generator of the hand-made files and of the fuzzing seeds.

/// The generator's valid files decode, so that each malformed file differs from a good one only in
/// what its name says.
#[test]
fn generated_valid_files_decode() {
    for (name, bytes) in gen::image::valid() {
        image_io::decode_gray(&bytes, &name, IMAGE_MAX_PIXELS)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for (name, bytes) in gen::dicom::valid() {
        dicom::decode(&bytes, &DICOM_LIMITS).unwrap_or_else(|f| panic!("{name}: {}", f.error));
    }
    for (name, bytes) in gen::nifti::valid() {
        for axis in [None, Some(0), Some(1), Some(2)] {
            nifti::decode_volume(&bytes, axis, &NIFTI_LIMITS)
                .unwrap_or_else(|e| panic!("{name} axis {axis:?}: {e}"));
        }
    }
    for (name, bytes) in gen::multipart::valid() {
        let split = bytes.iter().position(|&b| b == b'\n').unwrap();
        let header = std::str::from_utf8(&bytes[..split]).unwrap();
        let (boundary, _) = related_boundary(header).unwrap_or_else(|e| panic!("{name}: {e}"));
        let body = Bytes::copy_from_slice(&bytes[split + 1..]);
        futures::executor::block_on(related_parts(&boundary, body, MAX_PARTS))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// Writes the hand-made malformed files (replacing every non-`fuzz-` file of the corpus folders) and
/// the fuzzing seeds, valid and malformed files alike (tools/fuzz/corpus/<target>/seed-*; a NIfTI seed
/// starts with the target's axis byte).
#[test]
#[ignore = "writes files; run to regenerate the corpus and the fuzzing seeds"]
fn generate_corpus_and_seeds() {
    let sets = [
        ("image", gen::image::malformed(), gen::image::valid()),
        ("dicom", gen::dicom::malformed(), gen::dicom::valid()),
        ("nifti", gen::nifti::malformed(), gen::nifti::valid()),
        (
            "multipart",
            gen::multipart::malformed(),
            gen::multipart::valid(),
        ),
    ];
    for (kind, malformed, valid) in sets {
        let dir = corpus_dir(kind);
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.starts_with("fuzz-") {
                std::fs::remove_file(path).unwrap();
            }
        }
        for (name, bytes) in &malformed {
            assert!(bytes.len() <= 8 << 10, "{name} is {} bytes", bytes.len());
            assert!(!name.starts_with("fuzz-"));
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        let seed_dir = root().join("tools/fuzz/corpus").join(kind);
        std::fs::create_dir_all(&seed_dir).unwrap();
        for (i, (name, bytes)) in valid.iter().chain(&malformed).enumerate() {
            let bytes = match kind {
                "nifti" => [&[(i % 4) as u8][..], bytes].concat(),
                _ => bytes.clone(),
            };
            std::fs::write(seed_dir.join(format!("seed-{name}")), bytes).unwrap();
        }
    }
}

mod gen;
