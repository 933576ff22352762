//! Loading images and labels as docs/method.md ("Preprocessing") prescribes: one gray channel,
//! 0..=255, resized to SIDE x SIDE (bilinear for images, nearest for labels, foreground = > 127).
//!
//! Inputs may come from users, so decoding is defensive: the format is sniffed from the bytes,
//! the declared size is checked against a pixel budget before any pixel buffer is allocated, and
//! every failure is an error naming the input, never a panic.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageFormat, ImageReader, Limits};
use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

use super::{EngineError, Gray, Mask, SIDE};

/// Default pixel budget per input image (width * height): above any medical 2-D image (a full-field
/// mammogram is about 23 million), and the one default of the CLI and the service.
pub const DEFAULT_MAX_PIXELS: u64 = 25_000_000;

/// Largest bytes per pixel of any PNG/JPEG layout the decoder can produce (16-bit RGBA).
const MAX_BYTES_PER_PIXEL: u64 = 8;

/// Decode a PNG or JPEG to a SIDE x SIDE gray image with values in 0..=255.
///
/// Colour is reduced to luma with ITU-R 601 weights exactly as PIL's `convert("L")` does (alpha is
/// ignored); 16-bit samples are divided by 257. The resize is PIL's BILINEAR: half-pixel centres
/// (the same as OpenCV's INTER_LINEAR when upscaling) and, when downscaling, a triangle filter
/// widened by the scale factor so that every source pixel contributes (no aliasing). An image that
/// already is SIDE x SIDE is returned unchanged.
pub fn decode_gray(bytes: &[u8], name: &str, max_pixels: u64) -> Result<Gray, EngineError> {
    let src = decode_source(bytes, name, max_pixels)?;
    Ok(resize_bilinear(src.view(), SIDE, SIDE))
}

/// Decode a PNG or JPEG label to a SIDE x SIDE mask: gray as in [`decode_gray`], foreground where
/// the value is > 127, resized with PIL's NEAREST (source index floor((x + 0.5) * in / out)).
pub fn decode_label(bytes: &[u8], name: &str, max_pixels: u64) -> Result<Mask, EngineError> {
    let src = decode_source(bytes, name, max_pixels)?;
    // Thresholding before a nearest-neighbour resize gives the same mask at less cost.
    let fg = src.mapv(|v| v > 127.0);
    Ok(resize_nearest(fg.view(), SIDE, SIDE))
}

/// [`decode_gray`] of a file. Read failures are [`EngineError::Image`] with the path.
pub fn load_gray(path: &Path, max_pixels: u64) -> Result<Gray, EngineError> {
    decode_gray(&read(path)?, &path.display().to_string(), max_pixels)
}

/// [`decode_label`] of a file. Read failures are [`EngineError::Image`] with the path.
pub fn load_label(path: &Path, max_pixels: u64) -> Result<Mask, EngineError> {
    decode_label(&read(path)?, &path.display().to_string(), max_pixels)
}

fn read(path: &Path) -> Result<Vec<u8>, EngineError> {
    std::fs::read(path).map_err(|e| EngineError::Image {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Min-max normalise one image to [0, 1] (what the reverse segmenter expects). A constant image
/// has no contrast to stretch and becomes all zeros.
pub fn minmax(img: ArrayView2<f32>) -> Gray {
    let (lo, hi) = img.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
        (lo.min(v), hi.max(v))
    });
    let range = hi - lo;
    if !range.is_finite() || range <= 0.0 {
        return Array2::zeros(img.raw_dim());
    }
    img.mapv(|v| (v - lo) / range)
}

/// A labelled directory: `names[i]` is the file stem shared by `images[i]` and `labels[i]`.
#[derive(Clone, Debug)]
pub struct LabelledSet {
    pub names: Vec<String>,
    pub images: Vec<Gray>,
    pub labels: Vec<Mask>,
}

/// Load `dir/images/*` and `dir/labels/*`, paired by file stem and sorted by it.
///
/// Only .png/.jpg/.jpeg files (any case) count; other files and hidden files are ignored. An image
/// without a label, a label without an image, two files with one stem, or an empty set is an error.
pub fn load_labelled_dir(dir: &Path, max_pixels: u64) -> Result<LabelledSet, EngineError> {
    load_labelled(&dir.join("images"), &dir.join("labels"), max_pixels)
}

/// Like [`load_labelled_dir`] with the two folders named separately.
pub fn load_labelled(
    images_dir: &Path,
    labels_dir: &Path,
    max_pixels: u64,
) -> Result<LabelledSet, EngineError> {
    let images = list_images(images_dir)?;
    let mut labels = list_images(labels_dir)?;
    let mut pairs = Vec::with_capacity(images.len());
    for (name, image) in images {
        let Some(label) = labels.remove(&name) else {
            return Err(EngineError::Invalid(format!(
                "image {} has no label in {}",
                image.display(),
                labels_dir.display()
            )));
        };
        pairs.push((name, image, label));
    }
    if let Some(label) = labels.values().next() {
        return Err(EngineError::Invalid(format!(
            "label {} has no image in {}",
            label.display(),
            images_dir.display()
        )));
    }
    if pairs.is_empty() {
        return Err(EngineError::Invalid(format!(
            "no PNG or JPEG images in {}",
            images_dir.display()
        )));
    }
    let loaded = pairs
        .par_iter()
        .map(|(_, image, label)| {
            Ok((
                load_gray(image, max_pixels)?,
                load_label(label, max_pixels)?,
            ))
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    let names = pairs.into_iter().map(|(name, _, _)| name).collect();
    let (images, labels) = loaded.into_iter().unzip();
    Ok(LabelledSet {
        names,
        images,
        labels,
    })
}

/// Image files directly in `dir`, by stem (a BTreeMap, so iteration is sorted by name).
fn list_images(dir: &Path) -> Result<BTreeMap<String, PathBuf>, EngineError> {
    let io_err = |source| EngineError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io_err)? {
        let path = entry.map_err(io_err)?.path();
        let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        // Hidden files include macOS "._x.png" resource forks, which are not images.
        if file_name.starts_with('.') || !has_image_extension(&path) || !path.is_file() {
            continue;
        }
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if let Some(previous) = out.insert(stem.to_string(), path.clone()) {
            return Err(EngineError::Invalid(format!(
                "{} and {} have the same name; names must be unique",
                previous.display(),
                path.display()
            )));
        }
    }
    Ok(out)
}

fn has_image_extension(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        ["png", "jpg", "jpeg"]
            .iter()
            .any(|x| e.eq_ignore_ascii_case(x))
    })
}

/// Decode to a gray image at the source resolution, values 0..=255.
/// The pixel count a PNG or JPEG header declares (None when it is neither, or unreadable): a budget check
/// before anything is decoded.
pub fn declared_pixels(bytes: &[u8]) -> Option<u64> {
    let format = match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Png | ImageFormat::Jpeg)) => f,
        _ => return None,
    };
    let (w, h) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .ok()?;
    Some(u64::from(w) * u64::from(h))
}

fn decode_source(bytes: &[u8], name: &str, max_pixels: u64) -> Result<Array2<f32>, EngineError> {
    let data_err = |reason: String| EngineError::ImageData {
        name: name.to_string(),
        reason,
    };
    if bytes.is_empty() {
        return Err(data_err("the file is empty".into()));
    }
    // Sniff the magic bytes: extensions and declared content types cannot be trusted.
    let format = match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Png | ImageFormat::Jpeg)) => f,
        Ok(other) => {
            return Err(data_err(format!(
                "{other:?} images are not supported; use PNG or JPEG"
            )))
        }
        Err(_) => return Err(data_err("not a PNG or JPEG image".into())),
    };
    let reader = || ImageReader::with_format(Cursor::new(bytes), format);
    // Only the header is parsed here, so a decompression bomb is refused before allocation.
    let (width, height) = reader()
        .into_dimensions()
        .map_err(|e| data_err(e.to_string()))?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels == 0 {
        return Err(data_err(format!("the image is empty ({width}x{height})")));
    }
    if pixels > max_pixels {
        return Err(EngineError::ImageTooLarge {
            name: name.to_string(),
            width,
            height,
            max_pixels,
        });
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    limits.max_alloc = Some(
        pixels
            .saturating_mul(MAX_BYTES_PER_PIXEL)
            .saturating_add(1 << 20),
    );
    let mut reader = reader();
    reader.limits(limits);
    // Decoders are fuzzed but not proven panic-free; a hostile file must not take a worker down.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader.decode()))
        .map_err(|_| data_err("the decoder failed on malformed data".into()))?
        .map_err(|e| data_err(e.to_string()))?;
    to_gray(decoded).map_err(data_err)
}

/// PIL's "L" conversion, `(299 R + 587 G + 114 B) / 1000` in 16.16 fixed point with rounding:
/// the weights sum to exactly 65536, so a gray image stored as RGB keeps its exact values.
fn luma(r: u32, g: u32, b: u32) -> u32 {
    ((u64::from(r) * 19595 + u64::from(g) * 38470 + u64::from(b) * 7471 + 0x8000) >> 16) as u32
}

fn to_gray(img: DynamicImage) -> Result<Array2<f32>, String> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let v8 = |v: u32| v as f32;
    let v16 = |v: u32| v as f32 / 257.0;
    let data: Vec<f32> = match img {
        DynamicImage::ImageLuma8(b) => b.into_raw().into_iter().map(f32::from).collect(),
        DynamicImage::ImageLumaA8(b) => b.pixels().map(|p| f32::from(p.0[0])).collect(),
        DynamicImage::ImageRgb8(b) => b.pixels().map(|p| v8(luma3(p.0))).collect(),
        DynamicImage::ImageRgba8(b) => b.pixels().map(|p| v8(luma3(p.0))).collect(),
        DynamicImage::ImageLuma16(b) => b.into_raw().into_iter().map(|v| v16(v.into())).collect(),
        DynamicImage::ImageLumaA16(b) => b.pixels().map(|p| v16(p.0[0].into())).collect(),
        DynamicImage::ImageRgb16(b) => b.pixels().map(|p| v16(luma3(p.0))).collect(),
        DynamicImage::ImageRgba16(b) => b.pixels().map(|p| v16(luma3(p.0))).collect(),
        // Not produced by the PNG/JPEG decoders today; go through 16-bit RGB to stay total.
        other => other.to_rgb16().pixels().map(|p| v16(luma3(p.0))).collect(),
    };
    Array2::from_shape_vec((h, w), data).map_err(|e| format!("unexpected pixel buffer: {e}"))
}

/// Luma of the first three channels of a pixel (alpha, if any, is ignored).
fn luma3<T: Copy + Into<u32>, const N: usize>(p: [T; N]) -> u32 {
    luma(p[0].into(), p[1].into(), p[2].into())
}

/// PIL's BILINEAR resample, separable (rows first, then columns), in f64 without PIL's 8-bit
/// rounding of intermediate and final values.
fn resize_bilinear(src: ArrayView2<f32>, out_h: usize, out_w: usize) -> Array2<f32> {
    let (in_h, in_w) = src.dim();
    if (in_h, in_w) == (out_h, out_w) {
        return src.to_owned();
    }
    let cols = bilinear_coeffs(in_w, out_w);
    let rows = bilinear_coeffs(in_h, out_h);
    let mut tmp = Array2::<f64>::zeros((in_h, out_w));
    for (src_row, mut tmp_row) in src.rows().into_iter().zip(tmp.rows_mut()) {
        for (t, (start, weights)) in tmp_row.iter_mut().zip(&cols) {
            *t = weights
                .iter()
                .enumerate()
                .map(|(k, wt)| f64::from(src_row[start + k]) * wt)
                .sum();
        }
    }
    let mut out = Array2::<f32>::zeros((out_h, out_w));
    for (mut out_row, (start, weights)) in out.rows_mut().into_iter().zip(&rows) {
        for (x, o) in out_row.iter_mut().enumerate() {
            let v: f64 = weights
                .iter()
                .enumerate()
                .map(|(k, wt)| tmp[(start + k, x)] * wt)
                .sum();
            *o = v as f32;
        }
    }
    out
}

/// Per output index: first source index and normalised weights (PIL's `precompute_coeffs` for the
/// triangle filter; the support widens by the scale factor when downscaling).
fn bilinear_coeffs(in_size: usize, out_size: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter_scale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // PIL truncates toward zero (a C cast) and then clamps to the image.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).clamp(0, in_size as i64) as usize;
            let mut weights: Vec<f64> = (xmin..xmax.max(xmin))
                .map(|x| {
                    let t = ((x as f64 - center + 0.5) / filter_scale).abs();
                    (1.0 - t).max(0.0)
                })
                .collect();
            let total: f64 = weights.iter().sum();
            if total != 0.0 {
                weights.iter_mut().for_each(|w| *w /= total);
            }
            (xmin, weights)
        })
        .collect()
}

/// PIL's NEAREST resample: output x reads source floor((x + 0.5) * in / out).
fn resize_nearest<T: Copy>(src: ArrayView2<T>, out_h: usize, out_w: usize) -> Array2<T> {
    let (in_h, in_w) = src.dim();
    if (in_h, in_w) == (out_h, out_w) {
        return src.to_owned();
    }
    let index = |x: usize, in_size: usize, out_size: usize| {
        let i = ((x as f64 + 0.5) * (in_size as f64 / out_size as f64)) as usize;
        i.min(in_size - 1)
    };
    Array2::from_shape_fn((out_h, out_w), |(r, c)| {
        src[(index(r, in_h, out_h), index(c, in_w, out_w))]
    })
}

#[cfg(test)]
mod tests;

/// Regions per side of [`rank_normalise`]'s grid.
const RANK_REGIONS: usize = 4;

/// Rank-normalise one image to [0, 1], region by region: each pixel becomes its mid-rank among the pixels
/// of the regions around it (a 4x4 grid of overlapping windows twice a region's size), interpolated
/// bilinearly between region centres, i.e. adaptive histogram equalisation without clipping.
/// - Any strictly increasing change of intensity (gamma, contrast, brightness, a scanner's tone curve)
///   leaves the result unchanged, so the reverse segmenter compares anatomy rather than tone.
/// - A smooth gain across the image (a bias field, uneven illumination) barely changes it, since each
///   region sees nearly one gain; a rank over the whole image reads such a gain as different anatomy.
///   Measured with `make bench-accuracy` against whole-image ranks: JSRT clean error 0.022 -> 0.008, the
///   JSRT bias-field false alarm gone, every-checkpoint Dice MAE 0.012 -> 0.005 (JSRT) and
///   0.006 -> 0.005 (HC18), HD95 0.95 -> 0.43 px and 0.72 -> 0.43 px.
///
/// A constant image becomes all 0.5.
pub fn rank_normalise(img: ArrayView2<f32>) -> Gray {
    let (h, w) = img.dim();
    if h == 0 || w == 0 {
        return img.to_owned();
    }
    // Images too small for regions of a few pixels are ranked as one region.
    let grid = if h.min(w) >= 4 * RANK_REGIONS {
        RANK_REGIONS
    } else {
        1
    };
    let th = h / grid;
    let tw = w / grid;
    let mut tiles: Vec<Vec<f32>> = Vec::with_capacity(grid * grid);
    for ty in 0..grid {
        for tx in 0..grid {
            // A window twice the region, centred on it, so neighbouring regions' ranks overlap.
            let y0 = (ty * th).saturating_sub(th / 2);
            let y1 = ((ty + 1) * th + th / 2).min(h);
            let x0 = (tx * tw).saturating_sub(tw / 2);
            let x1 = ((tx + 1) * tw + tw / 2).min(w);
            let mut v: Vec<f32> = img
                .slice(ndarray::s![y0..y1, x0..x1])
                .iter()
                .copied()
                .collect();
            v.sort_unstable_by(f32::total_cmp);
            tiles.push(v);
        }
    }
    let cdf = |t: usize, v: f32| -> f32 {
        let s = &tiles[t];
        let below = s.partition_point(|&x| x < v);
        let upto = s.partition_point(|&x| x <= v);
        (below + upto) as f32 * 0.5 / s.len() as f32
    };
    let coord = |p: usize, size: usize| -> (usize, usize, f32) {
        let c = (p as f32 + 0.5) / size as f32 - 0.5;
        if c <= 0.0 {
            return (0, 0, 0.0);
        }
        let lo = c.floor() as usize;
        if lo + 1 >= grid {
            return (grid - 1, grid - 1, 0.0);
        }
        (lo, lo + 1, c - lo as f32)
    };
    Array2::from_shape_fn((h, w), |(y, x)| {
        let v = img[[y, x]];
        let (y0, y1, fy) = coord(y, th);
        let (x0, x1, fx) = coord(x, tw);
        let top = cdf(y0 * grid + x0, v) * (1.0 - fx) + cdf(y0 * grid + x1, v) * fx;
        let bottom = cdf(y1 * grid + x0, v) * (1.0 - fx) + cdf(y1 * grid + x1, v) * fx;
        top * (1.0 - fy) + bottom * fy
    })
}
