//! NIfTI-1 volumes (.nii, .nii.gz) -> planes, one per slice along a chosen axis.
//!
//! # What is read
//! A single-file NIfTI-1 (`n+1` magic, `vox_offset` >= 352), plain or gzipped (one or more gzip
//! members), either byte order. Voxel types: uint8, int8, int16, uint16, int32, uint32, int64, uint64
//! (converted to f64, so values beyond 2^53 lose precision), float32 and float64. Not read, each with
//! a message saying so: .hdr/.img pairs (`ni1`), NIfTI-2 (the `nifti` crate reads NIfTI-1 only),
//! RGB/complex/float128/binary voxels, time series (dim[4] > 1) and dims 5..7 > 1.
//!
//! # Slicing
//! The three spatial axes are i, j, k (dim[1], dim[2], dim[3]; a 2-D image has k of length 1, so
//! along the default axis it is one slice). Slicing along `axis` (0 = i, 1 = j, 2 = k; default 2)
//! gives dim[axis + 1] planes in index order. In a plane, rows run along the higher of the two
//! remaining axes and columns along the lower, with no flips: along k, rows = j and columns = i,
//! which is nibabel's `data[:, :, s].T`; along j, rows = k, columns = i (`data[:, s, :].T`); along
//! i, rows = k, columns = j (`data[s, :, :].T`). The qform/sform orientation is not applied.
//!
//! # Image intensities
//! v = raw * scl_slope + scl_inter when scl_slope is finite and non-zero (a non-finite scl_inter
//! counts as 0); otherwise v = raw. NaN and infinite v count as the smallest finite v of the volume.
//! - uint8 voxels with no scaling (or slope 1, inter 0) and no display window are kept as
//!   [`Pixels::Gray8`], exactly as stored (a volume stacked from PNG slices gives back their pixels).
//! - Anything else becomes [`Pixels::Gray16`]: round(65535 * (v - lo) / (hi - lo)), clamped to
//!   0..=65535, where [lo, hi] is [cal_min, cal_max] when both are finite and cal_max > cal_min,
//!   else the finite minimum and maximum of v over the whole volume (not per slice). A volume with
//!   no contrast (hi == lo, or no finite voxel) maps to all 0.
//!
//! # Labels
//! Foreground is a raw voxel (no scaling) that is non-zero and not NaN; slicing as for images.
//!
//! # Spacing
//! `spacing_mm` is [pixdim of the row axis, pixdim of the column axis], converted by the spatial
//! unit of xyzt_units (metre x1000, micron /1000, mm or unknown (0) as is). It is `None` when
//! either value is not finite and positive, or the unit code is not a spatial one.
//!
//! # Bounds
//! Only the 348-byte header is inflated before the declared size is checked against [`Limits`];
//! then exactly vox_offset + voxels * bytes-per-voxel bytes are inflated (anything after is never
//! read), so a gzip bomb costs at most the allowed volume. Errors carry sizes, dims, type codes and
//! axis numbers only; the free-text header fields (descrip, aux_file, intent_name) are never read
//! into a message.

use std::borrow::Cow;
use std::io::{self, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};

use flate2::read::MultiGzDecoder;
use ndarray::Array2;
use nifti::{Endianness, NiftiHeader};

use super::{IngestError, Pixels, Plane};

#[doc(hidden)]
pub mod testdata;
#[cfg(test)]
mod tests;

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

/// Size of a NIfTI-1 header.
const HEADER_LEN: usize = 348;
/// Size of a NIfTI-2 header (only recognised, to say it is not supported).
const NIFTI2_HEADER_LEN: i32 = 540;
/// Smallest vox_offset of a single-file NIfTI-1: the header and the 4-byte extension flag.
const MIN_VOX_OFFSET: f32 = 352.0;
/// Header extensions skipped before the voxels; real ones are kilobytes, this bounds inflating.
const MAX_EXTENSION_BYTES: f32 = 64.0 * 1024.0 * 1024.0;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The spatial axes a volume can be sliced along.
const AXES: usize = 3;
/// Default slicing axis: the last spatial one (k).
const DEFAULT_AXIS: usize = 2;

/// Whether the bytes look like a NIfTI file, plain or gzipped. NIfTI-2 files and .hdr headers are
/// recognised too, so that [`decode_volume`] can say why they are not used.
pub fn is_nifti(bytes: &[u8]) -> bool {
    guard(|| {
        let mut head = Vec::with_capacity(HEADER_LEN);
        // A read error after some bytes still leaves a prefix worth sniffing.
        let _ = open(bytes).take(HEADER_LEN as u64).read_to_end(&mut head);
        Ok(sniff(&head).is_some())
    })
    .unwrap_or(false)
}

/// The slices of an image volume along `axis` (0-based; default the last), intensities mapped to display
/// values as the module documentation says.
pub fn decode_volume(
    bytes: &[u8],
    axis: Option<usize>,
    limits: &Limits,
) -> Result<Vec<Plane>, IngestError> {
    read_volume(bytes, axis, limits, Volume::image_planes)
}

/// The slices of a label volume along `axis`.
pub fn decode_label_volume(
    bytes: &[u8],
    axis: Option<usize>,
    limits: &Limits,
) -> Result<Vec<LabelPlane>, IngestError> {
    read_volume(bytes, axis, limits, |volume, axis| {
        let spacing_mm = volume.header.plane_spacing(axis);
        (0..volume.header.dims[axis])
            .map(|s| LabelPlane {
                mask: volume.slice(axis, s, |v| v != 0.0 && !v.is_nan()),
                spacing_mm,
            })
            .collect()
    })
}

/// Checks `axis` (default the last), loads the volume and gives `read` what it needs of it, with a panic
/// anywhere on the way turned into an error.
fn read_volume<'a, T>(
    bytes: &'a [u8],
    axis: Option<usize>,
    limits: &Limits,
    read: impl FnOnce(&Volume<'a>, usize) -> T,
) -> Result<T, IngestError> {
    guard(|| {
        let axis = check_axis(axis)?;
        let volume = load(bytes, axis, limits)?;
        Ok(read(&volume, axis))
    })
}

/// Runs a decoding step, turning a panic in it (or in a crate it calls) into an error.
fn guard<T>(f: impl FnOnce() -> Result<T, IngestError>) -> Result<T, IngestError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(IngestError::Malformed(
            "the NIfTI file could not be decoded".into(),
        ))
    })
}

fn check_axis(axis: Option<usize>) -> Result<usize, IngestError> {
    match axis.unwrap_or(DEFAULT_AXIS) {
        a if a < AXES => Ok(a),
        a => Err(IngestError::Unsupported(format!(
            "axis {a} is out of range; a NIfTI volume is sliced along axis 0, 1 or 2"
        ))),
    }
}

fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

fn open(bytes: &[u8]) -> Box<dyn Read + '_> {
    if is_gzip(bytes) {
        Box::new(MultiGzDecoder::new(bytes))
    } else {
        Box::new(bytes)
    }
}

#[derive(Debug, PartialEq)]
enum Kind {
    SingleFile,
    HeaderOfPair,
    Nifti2,
}

/// What the first bytes of a (decompressed) file say it is.
fn sniff(head: &[u8]) -> Option<Kind> {
    let size: [u8; 4] = head.get(..4)?.try_into().ok()?;
    let is_size = |n: i32| i32::from_le_bytes(size) == n || i32::from_be_bytes(size) == n;
    if is_size(HEADER_LEN as i32) {
        match head.get(344..348)? {
            b"n+1\0" => Some(Kind::SingleFile),
            b"ni1\0" => Some(Kind::HeaderOfPair),
            _ => None,
        }
    } else if is_size(NIFTI2_HEADER_LEN) {
        matches!(head.get(4..8)?, b"n+2\0" | b"ni2\0").then_some(Kind::Nifti2)
    } else {
        None
    }
}

/// Voxel types this decoder reads.
#[derive(Clone, Copy, Debug, PartialEq)]
enum DataType {
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

/// The bytes of a sample, or zeros when the slice is short (never the case for checked lengths).
fn sample<const N: usize>(b: &[u8]) -> [u8; N] {
    b.get(..N).and_then(|s| s.try_into().ok()).unwrap_or([0; N])
}

macro_rules! reader {
    ($t:ty, $big:expr) => {
        if $big {
            |b: &[u8]| <$t>::from_be_bytes(sample(b)) as f64
        } else {
            |b: &[u8]| <$t>::from_le_bytes(sample(b)) as f64
        }
    };
}

impl DataType {
    fn from_code(code: i16) -> Result<DataType, IngestError> {
        Ok(match code {
            2 => DataType::U8,
            256 => DataType::I8,
            4 => DataType::I16,
            512 => DataType::U16,
            8 => DataType::I32,
            768 => DataType::U32,
            1024 => DataType::I64,
            1280 => DataType::U64,
            16 => DataType::F32,
            64 => DataType::F64,
            _ => {
                let name = match code {
                    1 => "binary",
                    32 => "complex64",
                    128 => "RGB24",
                    1536 => "float128",
                    1792 => "complex128",
                    2048 => "complex256",
                    2304 => "RGBA32",
                    _ => "unknown",
                };
                return Err(IngestError::Unsupported(format!(
                    "NIfTI datatype {code} ({name}) is not supported; use an integer, float32 or \
                     float64 volume"
                )));
            }
        })
    }

    fn size(self) -> usize {
        match self {
            DataType::U8 | DataType::I8 => 1,
            DataType::I16 | DataType::U16 => 2,
            DataType::I32 | DataType::U32 | DataType::F32 => 4,
            DataType::I64 | DataType::U64 | DataType::F64 => 8,
        }
    }

    /// Reads one sample (`size()` bytes in the file's byte order) as f64.
    fn reader(self, big: bool) -> fn(&[u8]) -> f64 {
        match self {
            DataType::U8 => |b: &[u8]| f64::from(b.first().copied().unwrap_or(0)),
            DataType::I8 => |b: &[u8]| f64::from(b.first().map_or(0, |&x| x as i8)),
            DataType::I16 => reader!(i16, big),
            DataType::U16 => reader!(u16, big),
            DataType::I32 => reader!(i32, big),
            DataType::U32 => reader!(u32, big),
            DataType::I64 => reader!(i64, big),
            DataType::U64 => reader!(u64, big),
            DataType::F32 => reader!(f32, big),
            DataType::F64 => reader!(f64, big),
        }
    }
}

/// The validated facts of a header this decoder uses.
#[derive(Debug)]
struct Header {
    /// Lengths of i, j, k.
    dims: [usize; AXES],
    dtype: DataType,
    big_endian: bool,
    /// Where the voxels start in the decompressed file.
    vox_offset: usize,
    /// voxels * bytes per voxel.
    data_len: usize,
    /// (slope, inter) when the header asks for scaling.
    scaling: Option<(f64, f64)>,
    /// [cal_min, cal_max] when set.
    window: Option<(f64, f64)>,
    /// Voxel size along i, j, k in mm.
    spacing_mm: [Option<f64>; AXES],
}

fn malformed(msg: impl Into<String>) -> IngestError {
    IngestError::Malformed(msg.into())
}

impl Header {
    /// Parses and validates the first [`HEADER_LEN`] bytes, checking the declared size against
    /// `limits` for slicing along `axis`.
    fn parse(head: &[u8], axis: usize, limits: &Limits) -> Result<Header, IngestError> {
        match sniff(head) {
            Some(Kind::SingleFile) => {}
            Some(Kind::HeaderOfPair) => {
                return Err(IngestError::Unsupported(
                    "this is the header of a .hdr/.img pair; send a single-file .nii or .nii.gz"
                        .into(),
                ))
            }
            Some(Kind::Nifti2) => {
                return Err(IngestError::Unsupported(
                    "NIfTI-2 is not supported; send a NIfTI-1 .nii or .nii.gz".into(),
                ))
            }
            None => return Err(malformed("not a NIfTI-1 file (no n+1 header)")),
        }
        // sizeof_hdr gives the byte order. The crate guesses it from dim[0] instead, which agrees
        // only once dim[0] is known to be valid, so that is checked first.
        let little = head.starts_with(&(HEADER_LEN as i32).to_le_bytes());
        let dim0 = sample::<2>(head.get(40..).unwrap_or_default());
        let ndim = if little {
            i16::from_le_bytes(dim0)
        } else {
            i16::from_be_bytes(dim0)
        };
        if !(2..=7).contains(&ndim) {
            return Err(malformed(format!(
                "dim[0] is {ndim}; a NIfTI image has 2 to 7 dimensions"
            )));
        }
        let h = catch_unwind(|| NiftiHeader::from_reader(head))
            .ok()
            .and_then(Result::ok)
            .filter(|h| (h.endianness == Endianness::Little) == little)
            .ok_or_else(|| malformed("unreadable NIfTI-1 header"))?;

        // The crate stores dim as u16; the format's are signed, so negative lengths show up here.
        let dim = h.dim.map(|d| d as i16);
        let ndim = ndim as usize;
        for (d, &len) in dim.iter().enumerate().take(ndim + 1).skip(1) {
            if len < 1 {
                return Err(malformed(format!(
                    "dim[{d}] is {len}; every dimension must be at least 1"
                )));
            }
        }
        if ndim >= 4 && dim[4] > 1 {
            return Err(IngestError::Unsupported(format!(
                "a time series of {} volumes is not supported; send one 3-D volume",
                dim[4]
            )));
        }
        if let Some((d, &len)) = dim
            .iter()
            .enumerate()
            .take(ndim + 1)
            .skip(5)
            .find(|(_, &l)| l > 1)
        {
            return Err(IngestError::Unsupported(format!(
                "dim[{d}] is {len}; only 3-D volumes with one value per voxel are supported"
            )));
        }
        let len_of = |d: usize| if d <= ndim { dim[d] as usize } else { 1 };
        let dims = [len_of(1), len_of(2), len_of(3)];

        let dtype = DataType::from_code(h.datatype)?;

        let voxels = dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d as u64));
        let voxels = match voxels {
            Some(n) if n <= limits.max_voxels => n,
            _ => {
                return Err(IngestError::TooLarge(format!(
                    "the volume is {}x{}x{} voxels; the limit is {} voxels",
                    dims[0], dims[1], dims[2], limits.max_voxels
                )))
            }
        };
        if dims[axis] > limits.max_slices {
            return Err(IngestError::TooLarge(format!(
                "the volume has {} slices along axis {axis}; the limit is {}",
                dims[axis], limits.max_slices
            )));
        }
        let data_len = voxels
            .checked_mul(dtype.size() as u64)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| IngestError::TooLarge("the volume does not fit in memory".into()))?;

        let offset = h.vox_offset;
        if !(MIN_VOX_OFFSET..=MIN_VOX_OFFSET + MAX_EXTENSION_BYTES).contains(&offset) {
            return Err(malformed(format!(
                "vox_offset is {offset}; a single-file NIfTI-1 has it between {MIN_VOX_OFFSET} \
                 and {}",
                MIN_VOX_OFFSET + MAX_EXTENSION_BYTES
            )));
        }
        // Like nibabel, use the integer part of the float offset.
        let vox_offset = offset as usize;

        let slope = f64::from(h.scl_slope);
        let inter = f64::from(h.scl_inter);
        let scaling = (slope.is_finite() && slope != 0.0)
            .then(|| (slope, if inter.is_finite() { inter } else { 0.0 }));
        let (cal_min, cal_max) = (f64::from(h.cal_min), f64::from(h.cal_max));
        let window = (cal_min.is_finite() && cal_max.is_finite() && cal_max > cal_min)
            .then_some((cal_min, cal_max));

        let to_mm: Option<fn(f64) -> f64> = match h.xyzt_units & 0x07 {
            0 | 2 => Some(|v| v),
            1 => Some(|v| v * 1000.0),
            // Dividing keeps round micron values exact (500 um is 0.5 mm, not 0.5 + 1 ulp).
            3 => Some(|v| v / 1000.0),
            _ => None,
        };
        let spacing_mm = [1, 2, 3].map(|d| {
            let mm = to_mm?(f64::from(h.pixdim[d]));
            (mm.is_finite() && mm > 0.0).then_some(mm)
        });

        Ok(Header {
            dims,
            dtype,
            big_endian: h.endianness == Endianness::Big,
            vox_offset,
            data_len,
            scaling,
            window,
            spacing_mm,
        })
    }

    /// The two axes left in a plane when slicing along `axis`: (rows, columns).
    fn plane_axes(axis: usize) -> (usize, usize) {
        match axis {
            0 => (2, 1),
            1 => (2, 0),
            _ => (1, 0),
        }
    }

    fn plane_spacing(&self, axis: usize) -> Option<[f64; 2]> {
        let (rows, cols) = Header::plane_axes(axis);
        Some([self.spacing_mm[rows]?, self.spacing_mm[cols]?])
    }
}

fn truncated(what: &str, got: usize, want: usize) -> IngestError {
    malformed(format!(
        "the NIfTI file is truncated: {got} of the {want} bytes of {what}"
    ))
}

fn too_short() -> IngestError {
    malformed("not a NIfTI-1 file: shorter than the 348-byte header")
}

fn stream_error(e: io::Error, what: &str) -> IngestError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        malformed(format!("the NIfTI file is truncated in the {what}"))
    } else {
        malformed(format!("the gzip stream is corrupt (in the {what})"))
    }
}

/// A header and its voxel bytes (borrowed from a plain file, inflated from a gzipped one).
struct Volume<'a> {
    header: Header,
    data: Cow<'a, [u8]>,
}

fn load<'a>(bytes: &'a [u8], axis: usize, limits: &Limits) -> Result<Volume<'a>, IngestError> {
    if is_gzip(bytes) {
        let (header, data) = read_stream(MultiGzDecoder::new(bytes), axis, limits)?;
        return Ok(Volume {
            header,
            data: Cow::Owned(data),
        });
    }
    let head = bytes.get(..HEADER_LEN).ok_or_else(too_short)?;
    let header = Header::parse(head, axis, limits)?;
    let data = header
        .vox_offset
        .checked_add(header.data_len)
        .and_then(|end| bytes.get(header.vox_offset..end))
        .ok_or_else(|| {
            truncated(
                "header and voxels",
                bytes.len(),
                header.vox_offset.saturating_add(header.data_len),
            )
        })?;
    Ok(Volume {
        header,
        data: Cow::Borrowed(data),
    })
}

/// Reads a header and then exactly the voxels it declares from a decompressing stream, never more.
fn read_stream<R: Read>(
    mut reader: R,
    axis: usize,
    limits: &Limits,
) -> Result<(Header, Vec<u8>), IngestError> {
    let mut head = [0u8; HEADER_LEN];
    reader.read_exact(&mut head).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => too_short(),
        _ => stream_error(e, "header"),
    })?;
    let header = Header::parse(&head, axis, limits)?;

    let skip = (header.vox_offset - HEADER_LEN) as u64;
    let skipped = io::copy(&mut (&mut reader).take(skip), &mut io::sink())
        .map_err(|e| stream_error(e, "header extensions"))?;
    if skipped < skip {
        return Err(malformed("the NIfTI file is truncated before its voxels"));
    }

    let mut data = Vec::new();
    data.try_reserve_exact(header.data_len)
        .map_err(|_| IngestError::TooLarge("the volume does not fit in memory".into()))?;
    // take() stops inflating at the declared size, so a bomb cannot grow `data` past it.
    reader
        .take(header.data_len as u64)
        .read_to_end(&mut data)
        .map_err(|e| stream_error(e, "voxels"))?;
    if data.len() < header.data_len {
        return Err(truncated("voxels", data.len(), header.data_len));
    }
    Ok((header, data))
}

impl Volume<'_> {
    /// Slice `s` along `axis`, each voxel (raw, as f64) mapped by `f`.
    fn slice<T>(&self, axis: usize, s: usize, f: impl Fn(f64) -> T) -> Array2<T> {
        let [ni, nj, _] = self.header.dims;
        let stride = [1, ni, ni * nj];
        let (row_axis, col_axis) = Header::plane_axes(axis);
        let dims = self.header.dims;
        let size = self.header.dtype.size();
        let read = self.header.dtype.reader(self.header.big_endian);
        let base = s * stride[axis];
        Array2::from_shape_fn((dims[row_axis], dims[col_axis]), |(r, c)| {
            let at = (base + r * stride[row_axis] + c * stride[col_axis]) * size;
            // The length was checked against the dims, so `get` always succeeds.
            f(self.data.get(at..at + size).map_or(f64::NAN, read))
        })
    }

    fn image_planes(&self, axis: usize) -> Vec<Plane> {
        let h = &self.header;
        let spacing_mm = h.plane_spacing(axis);
        let slices = 0..h.dims[axis];
        let identity = h.scaling.is_none_or(|s| s == (1.0, 0.0));
        if h.dtype == DataType::U8 && identity && h.window.is_none() {
            return slices
                .map(|s| Plane {
                    pixels: Pixels::Gray8(self.slice(axis, s, |v| v as u8)),
                    spacing_mm,
                })
                .collect();
        }

        let scale = |raw: f64| h.scaling.map_or(raw, |(m, b)| raw * m + b);
        let read = h.dtype.reader(h.big_endian);
        let (min, max) = self
            .data
            .chunks_exact(h.dtype.size())
            .map(|b| scale(read(b)))
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
        let (lo, hi) = h.window.unwrap_or((min, max));
        // Non-finite voxels take the volume minimum; with no finite voxel at all, the window floor.
        let fill = if min.is_finite() { min } else { lo };
        // Halving is exact and keeps (v - lo) / (hi - lo) finite for values near f64::MAX.
        let span = hi * 0.5 - lo * 0.5;
        let map = |raw: f64| -> u16 {
            let v = scale(raw);
            let v = if v.is_finite() { v } else { fill };
            let t = (v * 0.5 - lo * 0.5) / span;
            if t.is_finite() {
                (t.clamp(0.0, 1.0) * 65535.0).round() as u16
            } else {
                0
            }
        };
        slices
            .map(|s| Plane {
                pixels: Pixels::Gray16(self.slice(axis, s, map)),
                spacing_mm,
            })
            .collect()
    }
}
