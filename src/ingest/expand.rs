//! Input files (uploads to the service, a batch folder for `spe estimate`) -> the images the engine reads.
//! PNG/JPEG files are kept as sent (after a full decode, so a bad file is rejected before anything is
//! written); a DICOM instance becomes one PNG per frame and a NIfTI volume one PNG per slice, holding only
//! pixels (no patient attributes reach the blob store). The engine then reads every image the same way, so
//! the same pixels give the same estimate whatever the input format.

use super::{dicom, nifti, IngestError, Pixels, Plane};
use crate::digest::sha256_hex;
use crate::engine::{image_io, EngineError, SIDE};
use bytes::Bytes;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder};
use rayon::prelude::*;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Why files cannot become images. The service maps these to problem responses; the CLI prints them.
#[derive(Debug, thiserror::Error)]
pub enum ExpandError {
    /// A DICOM or NIfTI file that cannot be used; `file` says which (never by a patient attribute).
    #[error("{file}: {source}")]
    Ingest { file: String, source: IngestError },
    /// A PNG or JPEG (or unrecognised) file the image decoder refuses.
    #[error(transparent)]
    Image(#[from] EngineError),
    /// More images than allowed, counting every frame and slice.
    #[error("{0}")]
    TooMany(String),
}

/// What an uploaded file holds, judged by its bytes (not its name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Png,
    Jpeg,
    Dicom,
    Nifti,
    Unknown,
}

impl Format {
    pub fn sniff(bytes: &[u8]) -> Self {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Format::Png
        } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
            Format::Jpeg
        } else if dicom::is_dicom(bytes) {
            Format::Dicom
        } else if nifti::is_nifti(bytes) {
            Format::Nifti
        } else {
            Format::Unknown
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Png => "png",
            Format::Jpeg => "jpeg",
            Format::Dicom => "dicom",
            Format::Nifti => "nifti",
            Format::Unknown => "unknown",
        }
    }
}

/// An uploaded file under the name images taken from it are given.
pub struct InputFile {
    pub name: String,
    pub data: Bytes,
    /// How messages name the file: by its position in the request ("image part #2", "file #3 of the
    /// zip"), since its name can carry patient data; the CLI uses the path.
    pub origin: String,
}

/// An uploaded image file and its label file (paired by name).
pub struct InputPair {
    pub name: String,
    pub image: Bytes,
    pub label: Bytes,
    /// How messages name the pair (see [`InputFile::origin`]).
    pub origin: String,
}

/// One image to store, with where it came from.
pub struct NamedImage {
    pub name: String,
    /// PNG or JPEG bytes as the engine reads them.
    pub image: Bytes,
    pub label: Option<Bytes>,
    pub source_sha256: String,
    pub source_format: Format,
    /// Frame or slice number, for multi-image sources.
    pub source_index: Option<usize>,
    /// Size of a working-grid pixel in mm, [row, column], when the source says.
    pub pixel_mm: Option<[f64; 2]>,
}

/// Default bound on one NIfTI volume or multi-frame DICOM instance, in voxels (2^27).
pub const DEFAULT_MAX_VOLUME_VOXELS: u64 = 134_217_728;

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub max_pixels: u64,
    pub max_images: usize,
    pub max_volume_voxels: u64,
    /// NIfTI slicing axis (default: the last).
    pub axis: Option<usize>,
    /// Slices of labelled volumes with fewer label pixels (on the working grid) are left out.
    pub min_label_area: usize,
    /// Most pixels (voxels, for volumes) one request may decode in total.
    pub max_request_pixels: u64,
}

/// What one request may still decode, counted while it decodes so that it stops as soon as it is over:
/// images (every frame and slice) against `max_images`, pixels against `max_request_pixels`. PNG and
/// JPEG files are counted from their headers before decoding; volumes (NIfTI, multi-frame DICOM), the
/// large ones, are decoded one at a time and counted as they come out, so memory holds one at most.
struct Budget<'a> {
    images: AtomicUsize,
    pixels: AtomicU64,
    one_volume_at_a_time: Mutex<()>,
    opts: &'a Options,
    what: &'a str,
}

impl<'a> Budget<'a> {
    fn new(opts: &'a Options, what: &'a str) -> Self {
        Self {
            images: AtomicUsize::new(0),
            pixels: AtomicU64::new(0),
            one_volume_at_a_time: Mutex::new(()),
            opts,
            what,
        }
    }

    fn take(&self, images: usize, pixels: u64) -> Result<(), ExpandError> {
        let (opts, what) = (self.opts, self.what);
        let total_images = self.images.fetch_add(images, Ordering::SeqCst) + images;
        if total_images > opts.max_images {
            return Err(ExpandError::TooMany(format!(
                "{what} holds more than {} images (counting every DICOM frame and NIfTI slice), the most \
                 accepted per request; send fewer",
                opts.max_images
            )));
        }
        let total_pixels = self.pixels.fetch_add(pixels, Ordering::SeqCst) + pixels;
        if total_pixels > opts.max_request_pixels {
            return Err(ExpandError::TooMany(format!(
                "{what} decodes to more than {} pixels in total, the most accepted per request \
                 (SPE_MAX_REQUEST_PIXELS); send fewer or smaller images per request",
                opts.max_request_pixels
            )));
        }
        Ok(())
    }

    /// Decodes a volume while no other volume of this request is being decoded.
    fn volume<T>(&self, decode: impl FnOnce() -> T) -> T {
        let _one = self.one_volume_at_a_time.lock();
        decode()
    }
}

impl Options {
    fn dicom_limits(&self) -> dicom::Limits {
        dicom::Limits {
            max_pixels: self.max_pixels,
            max_frames: self.max_images,
            max_total_pixels: self.max_volume_voxels,
        }
    }

    fn nifti_limits(&self) -> nifti::Limits {
        nifti::Limits {
            max_voxels: self.max_volume_voxels,
            max_slices: self.max_images,
        }
    }
}

/// The name a DICOM instance's images get: its digest, never its file name or attributes (which can
/// identify the patient).
pub fn dicom_name(data: &[u8]) -> String {
    dicom_name_of(&sha256_hex(data))
}

/// [`dicom_name`] from the file's digest.
pub fn dicom_name_of(sha256: &str) -> String {
    format!("dicom_{}", &sha256[..12])
}

fn ingest_error(file: &str, source: IngestError) -> ExpandError {
    ExpandError::Ingest {
        file: file.to_string(),
        source,
    }
}

/// A plane as PNG: 8-bit gray, 16-bit gray or 8-bit RGB, whichever holds its values exactly.
pub fn plane_png(pixels: &Pixels) -> Bytes {
    let (rows, cols) = pixels.dim();
    let (raw, color): (Vec<u8>, _) = match pixels {
        Pixels::Gray8(a) => (a.iter().copied().collect(), ExtendedColorType::L8),
        // PNG stores 16-bit samples big-endian.
        Pixels::Gray16(a) => (
            a.iter().flat_map(|v| v.to_be_bytes()).collect(),
            ExtendedColorType::L16,
        ),
        Pixels::Rgb8(a) => (a.iter().copied().collect(), ExtendedColorType::Rgb8),
    };
    png_bytes(&raw, cols, rows, color)
}

fn mask_png(mask: &ndarray::Array2<bool>) -> Bytes {
    let (rows, cols) = mask.dim();
    let raw: Vec<u8> = mask.iter().map(|&m| if m { 255 } else { 0 }).collect();
    png_bytes(&raw, cols, rows, ExtendedColorType::L8)
}

fn png_bytes(raw: &[u8], width: usize, height: usize, color: ExtendedColorType) -> Bytes {
    let mut out = Vec::new();
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive)
        .write_image(raw, width as u32, height as u32, color)
        // Writing to memory with a buffer of the declared size cannot fail.
        .expect("PNG encoding to memory");
    Bytes::from(out)
}

/// Working-grid pixel size from the source's spacing and size.
fn grid_pixel_mm(plane: &Plane) -> Option<[f64; 2]> {
    let (rows, cols) = plane.pixels.dim();
    plane
        .spacing_mm
        .map(|[r, c]| [r * rows as f64 / SIDE as f64, c * cols as f64 / SIDE as f64])
}

/// A decoded DICOM instance: its UIDs (for STOW-RS answers) and its frames as images.
pub struct DicomImages {
    pub sop_class_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
    pub images: Vec<NamedImage>,
}

/// The frames of a DICOM instance (whose digest is `sha`) as images named `<name>_fNNNN`.
pub fn dicom_images(
    name: &str,
    data: &Bytes,
    sha: &str,
    opts: &Options,
) -> Result<DicomImages, dicom::Failure> {
    let instance = dicom::decode(data, &opts.dicom_limits())?;
    let images = instance
        .frames
        .iter()
        .enumerate()
        .map(|(i, frame)| NamedImage {
            name: format!("{name}_f{i:04}"),
            image: plane_png(&frame.pixels),
            label: None,
            source_sha256: sha.to_string(),
            source_format: Format::Dicom,
            source_index: Some(i),
            pixel_mm: grid_pixel_mm(frame),
        })
        .collect();
    Ok(DicomImages {
        sop_class_uid: instance.sop_class_uid,
        sop_instance_uid: instance.sop_instance_uid,
        images,
    })
}

fn passthrough(name: &str, data: &Bytes, format: Format, label: Option<Bytes>) -> NamedImage {
    NamedImage {
        name: name.to_string(),
        image: data.clone(),
        label,
        source_sha256: sha256_hex(data),
        source_format: format,
        source_index: None,
        pixel_mm: None,
    }
}

/// What a PNG or JPEG header declares, when within the per-image limit (a larger one is refused by the
/// decoder with its own message, naming the image).
fn declared_within(bytes: &[u8], opts: &Options) -> u64 {
    image_io::declared_pixels(bytes)
        .filter(|&p| p <= opts.max_pixels)
        .unwrap_or(0)
}

fn pixels_of(images: &[NamedImage]) -> u64 {
    images
        .iter()
        .map(|i| image_io::declared_pixels(&i.image).unwrap_or(0))
        .sum()
}

/// What expanding some input gives: its images, or why it is refused.
type Expanded = Result<Vec<NamedImage>, ExpandError>;

fn expand_one(file: &InputFile, budget: &Budget) -> Expanded {
    let opts = budget.opts;
    let format = Format::sniff(&file.data);
    match format {
        Format::Dicom => {
            let images = budget
                .volume(|| dicom_images(&file.name, &file.data, &sha256_hex(&file.data), opts))
                .map(|d| d.images)
                .map_err(|f| ingest_error(&format!("{} (DICOM)", file.origin), f.error))?;
            budget.take(images.len(), pixels_of(&images))?;
            Ok(images)
        }
        Format::Nifti => {
            let planes = budget
                .volume(|| nifti::decode_volume(&file.data, opts.axis, &opts.nifti_limits()))
                .map_err(|e| ingest_error(&format!("{} (NIfTI)", file.origin), e))?;
            let voxels = planes
                .iter()
                .map(|p| {
                    let (h, w) = p.pixels.dim();
                    (h * w) as u64
                })
                .sum();
            budget.take(planes.len(), voxels)?;
            let sha = sha256_hex(&file.data);
            Ok(planes
                .iter()
                .enumerate()
                .map(|(k, plane)| NamedImage {
                    name: format!("{}_z{k:04}", file.name),
                    image: plane_png(&plane.pixels),
                    label: None,
                    source_sha256: sha.clone(),
                    source_format: Format::Nifti,
                    source_index: Some(k),
                    pixel_mm: grid_pixel_mm(plane),
                })
                .collect())
        }
        // Unknown bytes go to the image decoder too, whose error says what it could not read.
        Format::Png | Format::Jpeg | Format::Unknown => {
            budget.take(1, declared_within(&file.data, opts))?;
            image_io::decode_gray(&file.data, &file.origin, opts.max_pixels)?;
            Ok(vec![passthrough(&file.name, &file.data, format, None)])
        }
    }
}

pub fn check_total(images: &[NamedImage], what: &str, opts: &Options) -> Result<(), ExpandError> {
    if images.len() > opts.max_images {
        return Err(ExpandError::TooMany(format!(
            "{what} holds {} images (counting every DICOM frame and NIfTI slice); at most {} are accepted per request",
            images.len(),
            opts.max_images
        )));
    }
    Ok(())
}

/// Unlabelled files -> images. CPU-bound: call from `spawn_blocking`.
pub fn unlabelled(files: &[InputFile], opts: &Options, what: &str) -> Expanded {
    expand_all(files, opts, what, expand_one)
}

/// Expands every input in parallel against one shared [`Budget`], then checks the total.
fn expand_all<T: Sync>(
    inputs: &[T],
    opts: &Options,
    what: &str,
    expand: impl Fn(&T, &Budget) -> Expanded + Sync,
) -> Expanded {
    let budget = Budget::new(opts, what);
    let nested = inputs
        .par_iter()
        .map(|input| expand(input, &budget))
        .collect::<Result<Vec<_>, _>>()?;
    let images: Vec<NamedImage> = nested.into_iter().flatten().collect();
    check_total(&images, what, opts)?;
    Ok(images)
}

fn expand_pair(pair: &InputPair, budget: &Budget) -> Expanded {
    let opts = budget.opts;
    let (name, origin) = (&pair.name, &pair.origin);
    match (Format::sniff(&pair.image), Format::sniff(&pair.label)) {
        (Format::Dicom, _) | (_, Format::Dicom) => Err(ingest_error(
            origin,
            IngestError::Unsupported(
                "labelled sets take PNG/JPEG image-label pairs or NIfTI volumes; DICOM is accepted for \
                 unlabeled batches"
                    .into(),
            ),
        )),
        (Format::Nifti, Format::Nifti) => {
            let kept = budget.volume(|| nifti_pair(pair, opts))?;
            budget.take(kept.len(), pixels_of(&kept))?;
            Ok(kept)
        }
        (Format::Nifti, _) | (_, Format::Nifti) => Err(ingest_error(
            origin,
            IngestError::Unsupported(
                "a NIfTI image volume needs a NIfTI label volume of the same shape (and the other way round)"
                    .into(),
            ),
        )),
        (format, _) => {
            budget.take(1, declared_within(&pair.image, opts) + declared_within(&pair.label, opts))?;
            image_io::decode_gray(&pair.image, &format!("image of {origin}"), opts.max_pixels)?;
            image_io::decode_label(&pair.label, &format!("label of {origin}"), opts.max_pixels)?;
            Ok(vec![passthrough(
                name,
                &pair.image,
                format,
                Some(pair.label.clone()),
            )])
        }
    }
}

/// A labelled volume: the slices whose label has at least `min_label_area` pixels on the working grid.
fn nifti_pair(pair: &InputPair, opts: &Options) -> Expanded {
    let (name, origin) = (&pair.name, &pair.origin);
    let limits = opts.nifti_limits();
    let planes = nifti::decode_volume(&pair.image, opts.axis, &limits)
        .map_err(|e| ingest_error(&format!("NIfTI image volume of {origin}"), e))?;
    let labels = nifti::decode_label_volume(&pair.label, opts.axis, &limits)
        .map_err(|e| ingest_error(&format!("NIfTI label volume of {origin}"), e))?;
    let shape = |n: usize, dim: (usize, usize)| format!("{n} slices of {}x{}", dim.0, dim.1);
    let image_shape = shape(
        planes.len(),
        planes.first().map_or((0, 0), |p| p.pixels.dim()),
    );
    let label_shape = shape(
        labels.len(),
        labels.first().map_or((0, 0), |l| l.mask.dim()),
    );
    if image_shape != label_shape {
        return Err(ingest_error(
            &format!("NIfTI volumes of {origin}"),
            IngestError::Malformed(format!(
                "the image volume has {image_shape} but its label volume has {label_shape}"
            )),
        ));
    }
    let sha = sha256_hex(&pair.image);
    let mut kept = Vec::new();
    for (k, (plane, label)) in planes.iter().zip(&labels).enumerate() {
        let label_png = mask_png(&label.mask);
        let slice_name = format!("{name}_z{k:04}");
        let area = image_io::decode_label(
            &label_png,
            &format!("slice {k} of {origin}"),
            opts.max_pixels,
        )?
        .iter()
        .filter(|&&m| m)
        .count();
        if area < opts.min_label_area {
            continue;
        }
        kept.push(NamedImage {
            name: slice_name,
            image: plane_png(&plane.pixels),
            label: Some(label_png),
            source_sha256: sha.clone(),
            source_format: Format::Nifti,
            source_index: Some(k),
            pixel_mm: grid_pixel_mm(plane),
        });
    }
    if kept.is_empty() {
        return Err(ingest_error(
            &format!("NIfTI volumes of {origin}"),
            IngestError::Unsupported(format!(
                "none of its {} slices has at least {} label pixels (at {SIDE}x{SIDE}), so it adds nothing",
                planes.len(),
                opts.min_label_area
            )),
        ));
    }
    Ok(kept)
}

/// Labelled pairs -> images with labels. CPU-bound: call from `spawn_blocking`.
pub fn labelled(pairs: &[InputPair], opts: &Options, what: &str) -> Expanded {
    expand_all(pairs, opts, what, expand_pair)
}

#[cfg(test)]
mod budget_tests {
    use super::*;

    fn opts(max_images: usize, max_request_pixels: u64) -> Options {
        Options {
            max_pixels: 50_000_000,
            max_images,
            max_volume_voxels: 1 << 24,
            axis: None,
            min_label_area: 0,
            max_request_pixels,
        }
    }

    /// A valid gray PNG that decodes to `side` x `side` zeros: tiny on the wire, large decoded.
    fn zeros_png(side: u32) -> Bytes {
        let raw = vec![0u8; (side * side) as usize];
        png_bytes(&raw, side as usize, side as usize, ExtendedColorType::L8)
    }

    /// `n` parts holding the same bytes, named `{prefix}{i}`.
    fn copies(data: &Bytes, n: usize, prefix: &str) -> Vec<InputFile> {
        (0..n)
            .map(|i| InputFile {
                name: format!("{prefix}{i}"),
                data: data.clone(),
                origin: format!("image part #{i}"),
            })
            .collect()
    }

    #[test]
    fn large_declared_pngs_are_refused_by_the_request_total() {
        let png = zeros_png(5000);
        assert!(png.len() < 200_000, "{} bytes", png.len());
        let files = copies(&png, 1000, "p");
        // 1000 x 25 Mpx against a 100 Mpx budget: refused after a handful, not after decoding all.
        let started = std::time::Instant::now();
        let e = unlabelled(&files, &opts(2000, 100_000_000), "the batch")
            .err()
            .unwrap();
        assert!(matches!(e, ExpandError::TooMany(_)), "{e}");
        assert!(e.to_string().contains("SPE_MAX_REQUEST_PIXELS"), "{e}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "took {:?}: the budget did not stop the decoding",
            started.elapsed()
        );
        // Under the budget the same files are fine.
        assert_eq!(
            unlabelled(&files[..3], &opts(2000, 100_000_000), "x")
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn volumes_count_their_slices_while_decoding() {
        let dims = [16, 16, 64];
        let data = vec![7u8; dims.iter().product()];
        let nii = Bytes::from(crate::ingest::nifti::testdata::nifti_u8(
            dims, &data, [1.0; 3], true,
        ));
        let files = copies(&nii, 16, "v");
        // 16 volumes of 64 slices against 100 images: the third volume is over.
        let e = unlabelled(&files, &opts(100, u64::MAX), "the batch")
            .err()
            .unwrap();
        assert!(matches!(e, ExpandError::TooMany(_)), "{e}");
        assert!(e.to_string().contains("more than 100 images"), "{e}");
        assert_eq!(
            unlabelled(&files[..1], &opts(100, u64::MAX), "x")
                .unwrap()
                .len(),
            64
        );
    }
}
