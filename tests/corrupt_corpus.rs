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

mod gen {
    /// (file name, bytes).
    pub type Files = Vec<(String, Vec<u8>)>;

    pub fn named(name: &str, bytes: Vec<u8>) -> (String, Vec<u8>) {
        (name.to_string(), bytes)
    }

    pub fn cut(bytes: &[u8], len: usize) -> Vec<u8> {
        bytes[..len.min(bytes.len())].to_vec()
    }

    pub fn find(bytes: &[u8], pattern: &[u8]) -> usize {
        bytes
            .windows(pattern.len())
            .position(|w| w == pattern)
            .expect("pattern present")
    }

    pub fn patch(bytes: &[u8], at: usize, with: &[u8]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        out[at..at + with.len()].copy_from_slice(with);
        out
    }

    /// A deterministic pseudo-random byte sequence (xorshift).
    pub fn noise(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.max(1);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 24) as u8
            })
            .collect()
    }

    pub fn gradient(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 37 % 251) as u8).collect()
    }

    pub mod image {
        use super::{cut, find, gradient, named, noise, patch, Files};
        use std::io::Write;

        fn crc(bytes: &[u8]) -> u32 {
            let mut c = flate2::Crc::new();
            c.update(bytes);
            c.sum()
        }

        fn chunk(ty: &[u8; 4], data: &[u8]) -> Vec<u8> {
            let mut out = (data.len() as u32).to_be_bytes().to_vec();
            let body = [&ty[..], data].concat();
            out.extend_from_slice(&body);
            out.extend_from_slice(&crc(&body).to_be_bytes());
            out
        }

        fn ihdr(w: u32, h: u32, depth: u8, color: u8) -> Vec<u8> {
            let mut d = w.to_be_bytes().to_vec();
            d.extend_from_slice(&h.to_be_bytes());
            d.extend_from_slice(&[depth, color, 0, 0, 0]);
            chunk(b"IHDR", &d)
        }

        fn zlib(data: &[u8]) -> Vec<u8> {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }

        const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 13, 10, 26, 10];

        /// A PNG from its chunks (signature added).
        fn png(chunks: &[Vec<u8>]) -> Vec<u8> {
            let mut out = SIGNATURE.to_vec();
            chunks.iter().for_each(|c| out.extend_from_slice(c));
            out
        }

        /// Filter-0 scanlines of `rows` rows of `row_bytes` bytes.
        fn scanlines(rows: usize, row_bytes: usize) -> Vec<u8> {
            let data = gradient(rows * row_bytes);
            data.chunks(row_bytes)
                .flat_map(|r| std::iter::once(0).chain(r.iter().copied()))
                .collect()
        }

        /// A valid 16 x 16 8-bit gray PNG.
        fn gray_png() -> Vec<u8> {
            png(&[
                ihdr(16, 16, 8, 0),
                chunk(b"IDAT", &zlib(&scanlines(16, 16))),
                chunk(b"IEND", &[]),
            ])
        }

        fn jpeg(w: u32, h: u32, color: image::ExtendedColorType) -> Vec<u8> {
            let channels = if color == image::ExtendedColorType::L8 {
                1
            } else {
                3
            };
            let mut out = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
                .encode(&gradient((w * h) as usize * channels), w, h, color)
                .unwrap();
            out
        }

        pub fn malformed() -> Files {
            let good = gray_png();
            let idat = find(&good, b"IDAT");
            let iend = find(&good, b"IEND") - 4;
            let ihdr_ok = ihdr(16, 16, 8, 0);
            let idat_ok = chunk(b"IDAT", &zlib(&scanlines(16, 16)));
            let iend_ok = chunk(b"IEND", &[]);
            let gray_jpeg = jpeg(16, 16, image::ExtendedColorType::L8);
            let sof = find(&gray_jpeg, &[0xFF, 0xC0]);
            let sos = find(&gray_jpeg, &[0xFF, 0xDA]);
            let dht = find(&gray_jpeg, &[0xFF, 0xC4]);
            vec![
                named("png-signature-only.png", SIGNATURE.to_vec()),
                named("png-truncated-in-ihdr.png", cut(&good, 8 + 12)),
                named("png-truncated-after-ihdr.png", cut(&good, 8 + 25)),
                named("png-truncated-in-idat.png", cut(&good, idat + 20)),
                named("png-truncated-before-iend.png", cut(&good, iend - 30)),
                named(
                    "png-bad-ihdr-crc.png",
                    patch(&good, 8 + 8 + 13, &[0xDE, 0xAD, 0xBE, 0xEF]),
                ),
                named(
                    "png-huge-dims.png",
                    png(&[
                        ihdr(100_000, 100_000, 8, 0),
                        idat_ok.clone(),
                        iend_ok.clone(),
                    ]),
                ),
                named(
                    "png-wide-and-flat.png",
                    png(&[ihdr(0x7FFF_FFFF, 1, 8, 0), idat_ok.clone(), iend_ok.clone()]),
                ),
                named(
                    "png-zero-width.png",
                    png(&[ihdr(0, 16, 8, 0), idat_ok.clone(), iend_ok.clone()]),
                ),
                named(
                    "png-bad-color-type.png",
                    png(&[ihdr(16, 16, 8, 1), idat_ok.clone(), iend_ok.clone()]),
                ),
                named(
                    "png-bad-bit-depth.png",
                    png(&[ihdr(16, 16, 7, 0), idat_ok.clone(), iend_ok.clone()]),
                ),
                named(
                    "png-palette-without-plte.png",
                    png(&[ihdr(16, 16, 8, 3), idat_ok.clone(), iend_ok.clone()]),
                ),
                named(
                    "png-idat-not-zlib.png",
                    png(&[
                        ihdr_ok.clone(),
                        chunk(b"IDAT", &noise(200, 7)),
                        iend_ok.clone(),
                    ]),
                ),
                named(
                    "png-idat-too-short.png",
                    png(&[
                        ihdr_ok.clone(),
                        chunk(b"IDAT", &zlib(&scanlines(8, 16))),
                        iend_ok.clone(),
                    ]),
                ),
                named(
                    "png-bad-filter-type.png",
                    png(&[
                        ihdr_ok.clone(),
                        chunk(b"IDAT", &zlib(&vec![9; 17 * 16])),
                        iend_ok.clone(),
                    ]),
                ),
                named("png-no-idat.png", png(&[ihdr_ok.clone(), iend_ok.clone()])),
                named("png-no-ihdr.png", png(&[idat_ok.clone(), iend_ok.clone()])),
                named(
                    "png-chunk-length-huge.png",
                    patch(&good, idat - 4, &0x7FFF_FFF0u32.to_be_bytes()),
                ),
                named("jpeg-soi-only.jpg", vec![0xFF, 0xD8]),
                named(
                    "jpeg-truncated-in-huffman-table.jpg",
                    cut(&gray_jpeg, dht + 10),
                ),
                named(
                    "jpeg-truncated-in-frame-header.jpg",
                    cut(&gray_jpeg, sof + 6),
                ),
                named(
                    "jpeg-truncated-in-scan.decodes.jpg",
                    cut(&gray_jpeg, sos + 10),
                ),
                named(
                    "jpeg-huge-dims.jpg",
                    patch(&gray_jpeg, sof + 5, &[0xFF, 0xFF, 0xFF, 0xFF]),
                ),
                named("jpeg-zero-width.jpg", patch(&gray_jpeg, sof + 7, &[0, 0])),
                named(
                    "jpeg-no-frame-header.jpg",
                    [&gray_jpeg[..sof], &gray_jpeg[sos..]].concat(),
                ),
                named("jpeg-no-huffman-tables.jpg", {
                    let dht_len =
                        usize::from(u16::from_be_bytes([gray_jpeg[dht + 2], gray_jpeg[dht + 3]]));
                    let mut out = gray_jpeg.clone();
                    // Every DHT segment removed.
                    while let Some(at) = out.windows(2).position(|w| w == [0xFF, 0xC4]) {
                        let len = usize::from(u16::from_be_bytes([out[at + 2], out[at + 3]]));
                        out.drain(at..at + 2 + len);
                    }
                    assert!(dht_len > 0);
                    out
                }),
                named("jpeg-zero-components.jpg", patch(&gray_jpeg, sof + 9, &[0])),
                named(
                    "gif-signature.gif",
                    b"GIF89a\x10\x00\x10\x00\x00\x00\x00;".to_vec(),
                ),
                named("text.png", b"just some text, not an image\n".to_vec()),
            ]
        }

        pub fn valid() -> Files {
            let mut out = Vec::new();
            let batch = super::super::root().join("tests/fixtures/synthetic/batch");
            for i in 0..3 {
                let name = format!("bat_{i:03}.png");
                out.push(named(&name, std::fs::read(batch.join(&name)).unwrap()));
            }
            let encode = |w: u32, h: u32, color: image::ExtendedColorType, channels: usize| {
                let mut out = Vec::new();
                image::ImageEncoder::write_image(
                    image::codecs::png::PngEncoder::new(&mut out),
                    &gradient((w * h) as usize * channels),
                    w,
                    h,
                    color,
                )
                .unwrap();
                out
            };
            use image::ExtendedColorType as C;
            out.push(named("gray8.png", encode(9, 7, C::L8, 1)));
            out.push(named("gray16.png", encode(5, 6, C::L16, 2)));
            out.push(named("gray-alpha.png", encode(4, 4, C::La8, 2)));
            out.push(named("rgb8.png", encode(6, 5, C::Rgb8, 3)));
            out.push(named("rgba16.png", encode(3, 3, C::Rgba16, 8)));
            let palette = png(&[
                ihdr(4, 4, 2, 3),
                chunk(b"PLTE", &[0, 0, 0, 255, 0, 0, 0, 255, 0, 255, 255, 255]),
                chunk(b"tRNS", &[0, 128]),
                chunk(b"IDAT", &zlib(&scanlines(4, 1))),
                chunk(b"IEND", &[]),
            ]);
            out.push(named("palette2.png", palette));
            out.push(named(
                "gray1.png",
                png(&[
                    ihdr(16, 2, 1, 0),
                    chunk(b"IDAT", &zlib(&scanlines(2, 2))),
                    chunk(b"IEND", &[]),
                ]),
            ));
            out.push(named("gray8.jpg", jpeg(16, 16, C::L8)));
            out.push(named("rgb8.jpg", jpeg(17, 9, C::Rgb8)));
            out.push(named("gray-filtered.png", gray_png()));
            out
        }
    }

    pub mod dicom {
        use super::{cut, find, gradient, named, noise, patch, Files};
        use spe::ingest::dicom::testdata::{self, gray8_instance, gray8_patient_instance};
        use std::collections::BTreeMap;
        use std::io::Write;

        const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
        const RLE: &str = "1.2.840.10008.1.2.5";
        const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
        const JPEG_LOSSLESS_SV1: &str = "1.2.840.10008.1.2.4.70";
        const J2K: &str = "1.2.840.10008.1.2.4.91";
        const DEFLATED: &str = "1.2.840.10008.1.2.1.99";
        const INSTANCE: &str = "1.2.826.0.1.3680043.2.1125.9.1";

        type Tag = (u16, u16);

        fn long_length(vr: &str) -> bool {
            matches!(
                vr,
                "OB" | "OD"
                    | "OF"
                    | "OL"
                    | "OV"
                    | "OW"
                    | "SQ"
                    | "SV"
                    | "UC"
                    | "UR"
                    | "UT"
                    | "UN"
                    | "UV"
            )
        }

        /// An explicit VR little endian element header declaring `len` bytes.
        fn header(tag: Tag, vr: &str, len: u32) -> Vec<u8> {
            let mut out = tag.0.to_le_bytes().to_vec();
            out.extend_from_slice(&tag.1.to_le_bytes());
            out.extend_from_slice(vr.as_bytes());
            if long_length(vr) {
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&len.to_le_bytes());
            } else {
                out.extend_from_slice(&(len as u16).to_le_bytes());
            }
            out
        }

        /// An explicit VR little endian element, padded to even length.
        fn el(tag: Tag, vr: &str, value: &[u8]) -> Vec<u8> {
            let mut v = value.to_vec();
            if v.len() % 2 == 1 {
                v.push(if matches!(vr, "UI" | "OB" | "UN") {
                    0
                } else {
                    b' '
                });
            }
            let mut out = header(tag, vr, v.len() as u32);
            out.extend_from_slice(&v);
            out
        }

        fn us(tag: Tag, v: u16) -> Vec<u8> {
            el(tag, "US", &v.to_le_bytes())
        }

        fn item(tag_element: u16, len: u32) -> Vec<u8> {
            let mut out = 0xFFFEu16.to_le_bytes().to_vec();
            out.extend_from_slice(&tag_element.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
            out
        }

        /// Encapsulated Pixel Data: an empty offset table, the fragments, the delimiter.
        fn encapsulated(fragments: &[Vec<u8>]) -> Vec<u8> {
            let mut out = header(PIXEL_DATA, "OB", u32::MAX);
            out.extend(item(0xE000, 0));
            for f in fragments {
                let mut f = f.clone();
                if f.len() % 2 == 1 {
                    f.push(0);
                }
                out.extend(item(0xE000, f.len() as u32));
                out.extend(f);
            }
            out.extend(item(0xE0DD, 0));
            out
        }

        const PIXEL_DATA: Tag = (0x7FE0, 0x0010);

        /// A data set as encoded elements by tag, written in tag order.
        #[derive(Clone)]
        struct Ds(BTreeMap<Tag, Vec<u8>>);

        impl Ds {
            /// 8-bit MONOCHROME2, rows x cols, with native pixel data.
            fn gray8(rows: u16, cols: u16) -> Ds {
                let mut m = BTreeMap::new();
                let mut put = |e: Vec<u8>| {
                    let tag = (
                        u16::from_le_bytes([e[0], e[1]]),
                        u16::from_le_bytes([e[2], e[3]]),
                    );
                    m.insert(tag, e);
                };
                put(el(
                    (0x0008, 0x0016),
                    "UI",
                    testdata::SECONDARY_CAPTURE.as_bytes(),
                ));
                put(el((0x0008, 0x0018), "UI", INSTANCE.as_bytes()));
                put(el((0x0010, 0x0010), "PN", PATIENT.as_bytes()));
                put(us((0x0028, 0x0002), 1));
                put(el((0x0028, 0x0004), "CS", b"MONOCHROME2"));
                put(us((0x0028, 0x0010), rows));
                put(us((0x0028, 0x0011), cols));
                put(us((0x0028, 0x0100), 8));
                put(us((0x0028, 0x0101), 8));
                put(us((0x0028, 0x0102), 7));
                put(us((0x0028, 0x0103), 0));
                put(el(
                    PIXEL_DATA,
                    "OB",
                    &gradient(usize::from(rows) * usize::from(cols)),
                ));
                Ds(m)
            }

            fn set(mut self, tag: Tag, encoded: Vec<u8>) -> Ds {
                self.0.insert(tag, encoded);
                self
            }

            fn with(self, tag: Tag, vr: &str, value: &[u8]) -> Ds {
                self.set(tag, el(tag, vr, value))
            }

            fn without(mut self, tag: Tag) -> Ds {
                self.0.remove(&tag);
                self
            }

            fn bytes(&self) -> Vec<u8> {
                self.0.values().flatten().copied().collect()
            }

            fn file(&self, ts: &str) -> Vec<u8> {
                [meta(ts), self.bytes()].concat()
            }
        }

        use super::super::PATIENT;

        /// Preamble, "DICM" and the file meta group.
        fn meta(ts: &str) -> Vec<u8> {
            let elements = [
                el((0x0002, 0x0001), "OB", &[0, 1]),
                el(
                    (0x0002, 0x0002),
                    "UI",
                    testdata::SECONDARY_CAPTURE.as_bytes(),
                ),
                el((0x0002, 0x0003), "UI", INSTANCE.as_bytes()),
                el((0x0002, 0x0010), "UI", ts.as_bytes()),
                el((0x0002, 0x0012), "UI", b"1.2.826.0.1.3680043.2.1125.9.2"),
            ]
            .concat();
            let mut out = vec![0; 128];
            out.extend_from_slice(b"DICM");
            out.extend(el(
                (0x0002, 0x0000),
                "UL",
                &(elements.len() as u32).to_le_bytes(),
            ));
            out.extend(elements);
            out
        }

        fn deflate(data: &[u8]) -> Vec<u8> {
            let mut e =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }

        /// A JPEG 2000 codestream start (SOC, SIZ for one 8-bit component) declaring rows x cols,
        /// then nothing decodable.
        fn j2k_header(rows: u32, cols: u32) -> Vec<u8> {
            let mut out = vec![0xFF, 0x4F, 0xFF, 0x51, 0, 41, 0, 0];
            for v in [cols, rows, 0, 0, cols, rows, 0, 0] {
                out.extend_from_slice(&v.to_be_bytes());
            }
            out.extend_from_slice(&[0, 1, 7, 1, 1]);
            out.extend_from_slice(&[0xFF, 0xD9]);
            out
        }

        pub fn malformed() -> Files {
            let gray = Ds::gray8(4, 4);
            let good = gray.file(EXPLICIT_LE);
            let meta_len = meta(EXPLICIT_LE).len();
            let px = find(&good, &[0xE0, 0x7F, 0x10, 0x00]);
            let frame = gradient(16);
            let rle = testdata::rle_fragment(std::slice::from_ref(&frame));
            let jpeg = testdata::jpeg_gray8(&gradient(64), 8, 8);
            let jpeg4 = testdata::jpeg_gray8(&frame, 4, 4);
            let sos = find(&jpeg4, &[0xFF, 0xDA]);
            let with_rle = |f: Vec<u8>| gray.clone().set(PIXEL_DATA, encapsulated(&[f])).file(RLE);
            let mut rle_bad_count = rle.clone();
            rle_bad_count[0] = 3;
            let mut rle_bad_offset = rle.clone();
            rle_bad_offset[4..8].copy_from_slice(&4096u32.to_le_bytes());
            let mut rle_early = rle.clone();
            rle_early[4..8].copy_from_slice(&60u32.to_le_bytes());
            let sequence = [
                header((0x0008, 0x1140), "SQ", u32::MAX),
                item(0xE000, 0x7FFF_0000),
                el((0x0008, 0x1150), "UI", b"1.2.3"),
            ]
            .concat();
            vec![
                named("no-dicm-marker.dcm", patch(&good, 128, b"DICX")),
                named("empty.dcm", Vec::new()),
                named("truncated-in-preamble.dcm", cut(&good, 100)),
                named("truncated-after-marker.dcm", cut(&good, 132)),
                named("truncated-in-meta-group.dcm", cut(&good, meta_len - 20)),
                named("truncated-after-meta-group.dcm", cut(&good, meta_len)),
                named("truncated-in-dataset.dcm", cut(&good, meta_len + 30)),
                named("truncated-in-pixel-data.dcm", cut(&good, good.len() - 5)),
                named("meta-only-no-dataset-no-pixels.dcm", cut(&good, px)),
                named(
                    "meta-group-length-past-end.dcm",
                    patch(&meta(EXPLICIT_LE), 140, &0x00FF_FFFFu32.to_le_bytes()),
                ),
                named(
                    "meta-element-length-huge.dcm",
                    // (0002,0001) OB declares 4 GiB - 2.
                    patch(&good, 144 + 8, &0xFFFF_FFFEu32.to_le_bytes()),
                ),
                named(
                    "unsupported-transfer-syntax-jpeg-ls.dcm",
                    gray.file("1.2.840.10008.1.2.4.80"),
                ),
                named(
                    "unsupported-transfer-syntax-htj2k.dcm",
                    gray.file("1.2.840.10008.1.2.4.201"),
                ),
                named(
                    "unsupported-transfer-syntax-not-a-uid.dcm",
                    gray.file("1.2.x.4"),
                ),
                named(
                    "unsupported-transfer-syntax-unknown.dcm",
                    gray.file("1.2.3.4.5.6.7.8"),
                ),
                named(
                    "pixel-data-length-huge.dcm",
                    gray.clone()
                        .set(PIXEL_DATA, header(PIXEL_DATA, "OB", 0xFFFF_FFF0))
                        .file(EXPLICIT_LE),
                ),
                named(
                    "element-length-past-end.dcm",
                    gray.clone()
                        .set(
                            (0x0008, 0x0060),
                            [header((0x0008, 0x0060), "CS", 0x7FFE), b"OT".to_vec()].concat(),
                        )
                        .without(PIXEL_DATA)
                        .file(EXPLICIT_LE),
                ),
                named(
                    "sequence-item-length-huge.dcm",
                    gray.clone()
                        .set((0x0008, 0x1140), sequence)
                        .file(EXPLICIT_LE),
                ),
                named(
                    "item-outside-sequence-length-huge.dcm",
                    gray.clone()
                        .set((0x0009, 0x0000), item(0xE000, 0x7FFF_FFF0))
                        .file(EXPLICIT_LE),
                ),
                named(
                    "rows-zero.dcm",
                    gray.clone()
                        .set((0x0028, 0x0010), us((0x0028, 0x0010), 0))
                        .file(EXPLICIT_LE),
                ),
                named(
                    "rows-columns-huge.dcm",
                    gray.clone()
                        .set((0x0028, 0x0010), us((0x0028, 0x0010), 65535))
                        .set((0x0028, 0x0011), us((0x0028, 0x0011), 65535))
                        .file(EXPLICIT_LE),
                ),
                named(
                    "rows-missing.dcm",
                    gray.clone().without((0x0028, 0x0010)).file(EXPLICIT_LE),
                ),
                named(
                    "rows-not-a-number.dcm",
                    gray.clone()
                        .with((0x0028, 0x0010), "US", b"\xff")
                        .file(EXPLICIT_LE),
                ),
                named(
                    "rows-odd-length.dcm",
                    gray.clone()
                        .set(
                            (0x0028, 0x0010),
                            [header((0x0028, 0x0010), "US", 3), vec![4, 0, 0]].concat(),
                        )
                        .file(EXPLICIT_LE),
                ),
                named(
                    "frames-huge.dcm",
                    gray.clone()
                        .with((0x0028, 0x0008), "IS", b"2147483647")
                        .file(EXPLICIT_LE),
                ),
                named(
                    "frames-negative.dcm",
                    gray.clone()
                        .with((0x0028, 0x0008), "IS", b"-3")
                        .file(EXPLICIT_LE),
                ),
                named(
                    "frames-not-a-number.dcm",
                    gray.clone()
                        .with((0x0028, 0x0008), "IS", b"many")
                        .file(EXPLICIT_LE),
                ),
                named(
                    "frames-more-than-pixel-data.dcm",
                    gray.clone()
                        .with((0x0028, 0x0008), "IS", b"3")
                        .file(EXPLICIT_LE),
                ),
                named(
                    "bits-allocated-12.dcm",
                    gray.clone()
                        .set((0x0028, 0x0100), us((0x0028, 0x0100), 12))
                        .file(EXPLICIT_LE),
                ),
                named(
                    "bits-stored-above-allocated.dcm",
                    gray.clone()
                        .set((0x0028, 0x0101), us((0x0028, 0x0101), 9))
                        .file(EXPLICIT_LE),
                ),
                named(
                    "high-bit-out-of-range.dcm",
                    gray.clone()
                        .set((0x0028, 0x0102), us((0x0028, 0x0102), 8))
                        .file(EXPLICIT_LE),
                ),
                named(
                    "pixel-representation-2.dcm",
                    gray.clone()
                        .set((0x0028, 0x0103), us((0x0028, 0x0103), 2))
                        .file(EXPLICIT_LE),
                ),
                named(
                    "photometric-palette-color.dcm",
                    gray.clone()
                        .with((0x0028, 0x0004), "CS", b"PALETTE COLOR")
                        .file(EXPLICIT_LE),
                ),
                named(
                    "photometric-missing.dcm",
                    gray.clone().without((0x0028, 0x0004)).file(EXPLICIT_LE),
                ),
                named(
                    "samples-per-pixel-mismatch.dcm",
                    gray.clone()
                        .set((0x0028, 0x0002), us((0x0028, 0x0002), 3))
                        .file(EXPLICIT_LE),
                ),
                named(
                    "pixel-data-short.dcm",
                    gray.clone()
                        .with(PIXEL_DATA, "OB", &[1; 8])
                        .file(EXPLICIT_LE),
                ),
                named(
                    "pixel-data-missing.dcm",
                    gray.clone().without(PIXEL_DATA).file(EXPLICIT_LE),
                ),
                named(
                    "pixel-data-float.dcm",
                    gray.clone()
                        .without(PIXEL_DATA)
                        .with((0x7FE0, 0x0008), "OF", &[0; 64])
                        .file(EXPLICIT_LE),
                ),
                named(
                    "pixel-data-encapsulated-in-native-syntax.dcm",
                    gray.clone()
                        .set(PIXEL_DATA, encapsulated(std::slice::from_ref(&frame)))
                        .file(EXPLICIT_LE),
                ),
                named("rle-native-pixel-data.dcm", gray.file(RLE)),
                named("rle-header-short.dcm", with_rle(rle[..40].to_vec())),
                named("rle-segment-count-wrong.dcm", with_rle(rle_bad_count)),
                named(
                    "rle-segment-offset-out-of-range.dcm",
                    with_rle(rle_bad_offset),
                ),
                named("rle-segment-offset-inside-header.dcm", with_rle(rle_early)),
                named("rle-segment-truncated.dcm", with_rle(rle[..66].to_vec())),
                named(
                    "rle-fewer-fragments-than-frames.dcm",
                    gray.clone()
                        .with((0x0028, 0x0008), "IS", b"2")
                        .set(PIXEL_DATA, encapsulated(std::slice::from_ref(&rle)))
                        .file(RLE),
                ),
                named(
                    "encapsulated-no-fragments.dcm",
                    gray.clone().set(PIXEL_DATA, encapsulated(&[])).file(RLE),
                ),
                named(
                    "encapsulated-fragment-length-huge.dcm",
                    gray.clone()
                        .set(
                            PIXEL_DATA,
                            [
                                header(PIXEL_DATA, "OB", u32::MAX),
                                item(0xE000, 0),
                                item(0xE000, 0x7FFF_FFF0),
                                vec![0; 16],
                            ]
                            .concat(),
                        )
                        .file(RLE),
                ),
                named(
                    "encapsulated-no-delimiter.dcm",
                    gray.clone()
                        .set(
                            PIXEL_DATA,
                            [
                                header(PIXEL_DATA, "OB", u32::MAX),
                                item(0xE000, 0),
                                item(0xE000, 4),
                                vec![0; 4],
                            ]
                            .concat(),
                        )
                        .file(JPEG_BASELINE),
                ),
                named(
                    "jpeg-size-differs-from-attributes.dcm",
                    gray.clone()
                        .set(PIXEL_DATA, encapsulated(std::slice::from_ref(&jpeg)))
                        .file(JPEG_BASELINE),
                ),
                named("jpeg-huge-size.dcm", {
                    let sof = find(&jpeg4, &[0xFF, 0xC0]);
                    let huge = patch(&jpeg4, sof + 5, &[0xFF, 0xFF, 0xFF, 0xFF]);
                    gray.clone()
                        .set(PIXEL_DATA, encapsulated(&[huge]))
                        .file(JPEG_BASELINE)
                }),
                named(
                    "jpeg-no-frame-header.dcm",
                    gray.clone()
                        .set(PIXEL_DATA, encapsulated(&[vec![0xFF, 0xD8, 0xFF, 0xD9]]))
                        .file(JPEG_BASELINE),
                ),
                named(
                    "jpeg-truncated-in-header.dcm",
                    gray.clone()
                        .set(PIXEL_DATA, encapsulated(&[jpeg4[..sos / 2].to_vec()]))
                        .file(JPEG_BASELINE),
                ),
                named(
                    "jpeg-not-a-jpeg.dcm",
                    gray.clone()
                        .set(PIXEL_DATA, encapsulated(&[noise(64, 3)]))
                        .file(JPEG_BASELINE),
                ),
                named(
                    "jpeg-lossless-not-a-jpeg.dcm",
                    gray.clone()
                        .set(PIXEL_DATA, encapsulated(&[noise(64, 5)]))
                        .file(JPEG_LOSSLESS_SV1),
                ),
                named(
                    "j2k-size-differs-from-attributes.dcm",
                    gray.clone()
                        .set(PIXEL_DATA, encapsulated(&[j2k_header(8, 8)]))
                        .file(J2K),
                ),
                named(
                    "j2k-header-only.dcm",
                    gray.clone()
                        .set(PIXEL_DATA, encapsulated(&[j2k_header(4, 4)]))
                        .file(J2K),
                ),
                named(
                    "j2k-truncated-siz.dcm",
                    gray.clone()
                        .set(PIXEL_DATA, encapsulated(&[j2k_header(4, 4)[..20].to_vec()]))
                        .file(J2K),
                ),
                named(
                    "deflated-not-a-deflate-stream.dcm",
                    [meta(DEFLATED), noise(200, 11)].concat(),
                ),
                named("deflated-truncated.dcm", {
                    let d = deflate(&gray.bytes());
                    [meta(DEFLATED), d[..d.len() / 2].to_vec()].concat()
                }),
                named(
                    "deflated-pixel-data-short.dcm",
                    [
                        meta(DEFLATED),
                        deflate(&gray.clone().with(PIXEL_DATA, "OB", &[0; 4]).bytes()),
                    ]
                    .concat(),
                ),
            ]
        }

        pub fn valid() -> Files {
            let px = gradient(8 * 8 * 2);
            let mut out = Vec::new();
            for (name, ts) in [
                ("implicit-le", testdata::IMPLICIT_VR_LE),
                ("explicit-le", testdata::EXPLICIT_VR_LE),
                ("explicit-be", testdata::EXPLICIT_VR_BE),
                ("deflated", testdata::DEFLATED_EXPLICIT_VR_LE),
                ("rle", testdata::RLE_LOSSLESS),
                ("jpeg-baseline", testdata::JPEG_BASELINE),
            ] {
                out.push(named(
                    &format!("{name}.dcm"),
                    gray8_instance(8, 8, &px[..64], 1, INSTANCE, ts),
                ));
                out.push(named(
                    &format!("{name}-2-frames.dcm"),
                    gray8_instance(8, 8, &px, 2, INSTANCE, ts),
                ));
            }
            out.push(named(
                "patient-spacing.dcm",
                gray8_patient_instance(
                    4,
                    5,
                    &px[..20],
                    1,
                    INSTANCE,
                    testdata::EXPLICIT_VR_LE,
                    Some(PATIENT),
                    Some([0.5, 0.25]),
                ),
            ));
            let rgb = Ds::gray8(4, 4)
                .set((0x0028, 0x0002), us((0x0028, 0x0002), 3))
                .with((0x0028, 0x0004), "CS", b"RGB")
                .with((0x0028, 0x0006), "US", &1u16.to_le_bytes())
                .with(PIXEL_DATA, "OB", &gradient(48));
            out.push(named("rgb-planar.dcm", rgb.file(EXPLICIT_LE)));
            let words: Vec<u8> = (0..16u16).flat_map(|v| (v * 3000).to_le_bytes()).collect();
            let gray16 = Ds::gray8(4, 4)
                .set((0x0028, 0x0100), us((0x0028, 0x0100), 16))
                .set((0x0028, 0x0101), us((0x0028, 0x0101), 12))
                .set((0x0028, 0x0102), us((0x0028, 0x0102), 11))
                .set((0x0028, 0x0103), us((0x0028, 0x0103), 1))
                .with((0x0028, 0x1050), "DS", b"100")
                .with((0x0028, 0x1051), "DS", b"400")
                .with((0x0028, 0x1052), "DS", b"-1024")
                .with((0x0028, 0x1053), "DS", b"1.5")
                .with(PIXEL_DATA, "OW", &words);
            out.push(named("gray16-window-rescale.dcm", gray16.file(EXPLICIT_LE)));
            out
        }
    }

    pub mod nifti {
        use super::{cut, named, noise, Files};
        use spe::ingest::nifti::testdata::{file, gzip, nifti_i16, nifti_u8, Header};

        fn u8_volume(dims: [usize; 3]) -> Vec<u8> {
            let n = dims.iter().product();
            nifti_u8(dims, &super::gradient(n), [1.0, 1.0, 2.0], false)
        }

        fn with(header: Header) -> Vec<u8> {
            file::<u8>(&header, &super::gradient(24))
        }

        fn base() -> Header {
            Header::new::<u8>([2, 3, 4])
        }

        pub fn malformed() -> Files {
            let good = u8_volume([2, 3, 4]);
            let gz = gzip(&good);
            let mut big = base();
            big.big_endian = true;
            let big = with(big);
            let mut corrupt_gz = gz.clone();
            for b in &mut corrupt_gz[12..40] {
                *b ^= 0x5A;
            }
            let h = |f: fn(&mut Header)| {
                let mut h = base();
                f(&mut h);
                with(h)
            };
            let mut nifti2 = vec![0u8; 540 + 16];
            nifti2[..4].copy_from_slice(&540i32.to_le_bytes());
            nifti2[4..8].copy_from_slice(b"n+2\0");
            let mut bomb = Header::new::<u8>([1024, 1024, 1024]);
            bomb.dim[0] = 3;
            let bomb = gzip(&[bomb.bytes(), vec![0; 1 << 20]].concat());
            vec![
                named("empty.nii", Vec::new()),
                named("truncated-header.nii", cut(&good, 100)),
                named("truncated-before-magic.nii", cut(&good, 344)),
                named("truncated-before-voxels.nii", cut(&good, 352)),
                named("truncated-voxels.nii", cut(&good, good.len() - 1)),
                named("truncated-voxels-big-endian.nii", cut(&big, big.len() - 3)),
                named("truncated-voxels.nii.gz", gzip(&cut(&good, good.len() - 5))),
                named("truncated-header.nii.gz", gzip(&cut(&good, 200))),
                named("gzip-cut.nii.gz", cut(&gz, gz.len() / 2)),
                named("gzip-cut-in-voxels.nii.gz", {
                    let noisy = Header::new::<u8>([16, 16, 8]);
                    let z = gzip(&file::<u8>(&noisy, &noise(2048, 17)));
                    cut(&z, z.len() - 200)
                }),
                named("gzip-header-only.nii.gz", cut(&gz, 10)),
                named("gzip-magic-only.nii.gz", vec![0x1f, 0x8b]),
                named("gzip-corrupt-deflate.nii.gz", corrupt_gz),
                named("gzip-not-nifti.nii.gz", gzip(&noise(600, 9))),
                named("gzip-bomb-huge-dims.nii.gz", bomb),
                named("not-nifti.nii", noise(500, 13)),
                named("wrong-magic.nii", h(|h| h.magic = *b"n+3\0")),
                named("header-of-pair.hdr", h(|h| h.magic = *b"ni1\0")),
                named("nifti2.nii", nifti2),
                named("sizeof-hdr-wrong.nii", {
                    let mut b = good.clone();
                    b[..4].copy_from_slice(&349i32.to_le_bytes());
                    b
                }),
                named(
                    "dims-huge.nii",
                    h(|h| h.dim[1..4].copy_from_slice(&[32767; 3])),
                ),
                named("dims-huge.nii.gz", {
                    let mut hd = base();
                    hd.dim[1..4].copy_from_slice(&[32767; 3]);
                    gzip(&with(hd))
                }),
                named("dim-negative.nii", h(|h| h.dim[2] = -3)),
                named("dim-zero.nii", h(|h| h.dim[3] = 0)),
                named("dim0-zero.nii", h(|h| h.dim[0] = 0)),
                named("dim0-eight.nii", h(|h| h.dim[0] = 8)),
                named("dim0-negative.nii", h(|h| h.dim[0] = -1)),
                named(
                    "time-series.nii",
                    h(|h| {
                        h.dim[0] = 4;
                        h.dim[4] = 5;
                    }),
                ),
                named(
                    "dim5-above-one.nii",
                    h(|h| {
                        h.dim[0] = 5;
                        h.dim[5] = 2;
                    }),
                ),
                named("slices-too-many.axis2.nii", {
                    let mut hd = Header::new::<u8>([1, 1, 1000]);
                    hd.dim[0] = 3;
                    file::<u8>(&hd, &[0; 1000])
                }),
                named("datatype-rgb24.nii", h(|h| h.datatype = 128)),
                named("datatype-complex64.nii", h(|h| h.datatype = 32)),
                named("datatype-unknown.nii", h(|h| h.datatype = 3)),
                named("datatype-i16-voxels-short.nii", h(|h| h.datatype = 4)),
                named("vox-offset-small.nii", h(|h| h.vox_offset = 100.0)),
                named("vox-offset-nan.nii", h(|h| h.vox_offset = f32::NAN)),
                named(
                    "vox-offset-infinite.nii",
                    h(|h| h.vox_offset = f32::INFINITY),
                ),
                named("vox-offset-huge.nii", h(|h| h.vox_offset = 1e12)),
                named("vox-offset-past-end.nii", {
                    let mut hd = base();
                    hd.vox_offset = 60_000.0;
                    [cut(&hd.bytes(), 352), super::gradient(24)].concat()
                }),
                named("vox-offset-past-end.nii.gz", {
                    let mut hd = base();
                    hd.vox_offset = 60_000_000.0;
                    gzip(&hd.bytes())
                }),
                named("i16-truncated.nii", {
                    let v = nifti_i16([3, 3, 3], &[7; 27], [1.0; 3], 2.0, -1.0, false);
                    cut(&v, v.len() - 2)
                }),
            ]
        }

        pub fn valid() -> Files {
            let mut files = vec![
                ("u8.nii", u8_volume([3, 4, 5])),
                ("u8.nii.gz", gzip(&u8_volume([4, 3, 2]))),
                (
                    "i16.nii",
                    nifti_i16(
                        [3, 2, 2],
                        &[-5, 0, 7, 300, -32768, 32767, 1, 2, 3, 4, 5, 6],
                        [0.5, 0.5, 3.0],
                        1.5,
                        -10.0,
                        false,
                    ),
                ),
                (
                    "i16.nii.gz",
                    nifti_i16(
                        [2, 2, 2],
                        &[1, 2, 3, 4, 5, 6, 7, 8],
                        [1.0; 3],
                        0.0,
                        0.0,
                        true,
                    ),
                ),
                ("2d.nii", {
                    let mut h = Header::new::<u8>([4, 4, 1]);
                    h.dim[0] = 2;
                    file::<u8>(&h, &super::gradient(16))
                }),
            ];
            let mut f32h = Header::new::<f32>([2, 2, 2]);
            f32h.cal_min = -1.0;
            f32h.cal_max = 2.0;
            f32h.big_endian = true;
            files.push((
                "f32-be-window.nii",
                file::<f32>(
                    &f32h,
                    &[0.5, f32::NAN, -3.0, 1.0, 2.5, f32::INFINITY, 0.0, 1.5],
                ),
            ));
            let mut f64h = Header::new::<f64>([2, 1, 2]);
            f64h.xyzt_units = 3;
            f64h.vox_offset = 400.0;
            files.push((
                "f64-ext.nii",
                file::<f64>(&f64h, &[1e300, -1e300, 0.0, 5.0]),
            ));
            let u16h = Header::new::<u16>([2, 2, 1]);
            files.push(("u16.nii", file::<u16>(&u16h, &[0, 1, 65535, 4])));
            let multi = [
                gzip(&u8_volume([2, 2, 2])[..200]),
                gzip(&u8_volume([2, 2, 2])[200..]),
            ]
            .concat();
            files.push(("multi-member.nii.gz", multi));
            files.into_iter().map(|(n, b)| named(n, b)).collect()
        }
    }

    pub mod multipart {
        use super::{named, Files};

        const CT: &str = "multipart/related; type=\"application/dicom\"; boundary=XyZ";

        fn input(header: &str, body: &[u8]) -> Vec<u8> {
            [header.as_bytes(), b"\n", body].concat()
        }

        fn part(boundary: &str, ct: &str, data: &[u8]) -> Vec<u8> {
            [
                format!("--{boundary}\r\nContent-Type: {ct}\r\n\r\n").as_bytes(),
                data,
                b"\r\n",
            ]
            .concat()
        }

        fn body(parts: usize) -> Vec<u8> {
            let mut out: Vec<u8> = (0..parts)
                .flat_map(|i| part("XyZ", "application/dicom", format!("DICM{i}").as_bytes()))
                .collect();
            out.extend_from_slice(b"--XyZ--\r\n");
            out
        }

        pub fn malformed() -> Files {
            let one = body(1);
            vec![
                named(
                    "content-type-unparseable.txt",
                    input("not a mime type", &one),
                ),
                named(
                    "content-type-form-data.txt",
                    input("multipart/form-data; boundary=XyZ", &one),
                ),
                named(
                    "content-type-no-boundary.txt",
                    input("multipart/related; type=\"application/dicom\"", &one),
                ),
                named(
                    "content-type-empty-boundary.txt",
                    input("multipart/related; boundary=\"\"", &one),
                ),
                named(
                    "content-type-not-utf8.txt",
                    [
                        b"multipart/related; boundary=\xff\xfe\n".to_vec(),
                        one.clone(),
                    ]
                    .concat(),
                ),
                named("body-empty.txt", input(CT, b"")),
                named(
                    "body-no-boundary.txt",
                    input(CT, b"DICM just bytes, no framing\r\n"),
                ),
                named("body-close-only.txt", input(CT, b"--XyZ--\r\n")),
                named("body-missing-close.txt", input(CT, &one[..one.len() - 9])),
                named(
                    "body-truncated-in-close.txt",
                    input(CT, &one[..one.len() - 4]),
                ),
                named("body-truncated-in-part-headers.txt", input(CT, &one[..20])),
                named(
                    "body-part-headers-unterminated.txt",
                    input(CT, b"--XyZ\r\nContent-Type: application/dicom\r\n"),
                ),
                named(
                    "body-bad-part-header.txt",
                    input(CT, b"--XyZ\r\nno colon here\r\n\r\nDICM\r\n--XyZ--\r\n"),
                ),
                named(
                    "body-wrong-boundary.txt",
                    input("multipart/related; boundary=other", &one),
                ),
                named("body-too-many-parts.txt", input(CT, &body(65))),
                named(
                    "body-boundary-without-crlf.txt",
                    input(CT, b"--XyZDICM--XyZ--"),
                ),
            ]
        }

        pub fn valid() -> Files {
            vec![
                named("one.txt", input(CT, &body(1))),
                named("three.txt", input(CT, &body(3))),
                named(
                    "preamble-epilogue.txt",
                    input(
                        "Multipart/Related; boundary=\"a b:c\"; type=\"application/dicom\"",
                        &[
                            b"preamble\r\n".to_vec(),
                            part(
                                "a b:c",
                                "application/dicom; transfer-syntax=1.2.840.10008.1.2.1",
                                b"DICM\r\n--a b",
                            ),
                            b"--a b:c--\r\nepilogue".to_vec(),
                        ]
                        .concat(),
                    ),
                ),
                named(
                    "no-content-type.txt",
                    input(CT, b"--XyZ\r\nContent-Length: 4\r\n\r\nDICM\r\n--XyZ--"),
                ),
            ]
        }
    }
}
