//! NIfTI-1 files built in memory for tests and fuzz seeds. Not a general writer: it writes only
//! the header fields the decoder reads (the rest are zero) and panics on values it cannot encode.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;

/// A voxel type and how it is stored.
pub trait Sample: Copy {
    /// NIFTI_TYPE_* code.
    const DATATYPE: i16;
    /// Appends the value in the given byte order.
    fn put(self, big_endian: bool, out: &mut Vec<u8>);
}

macro_rules! sample {
    ($($t:ty => $code:expr),* $(,)?) => {$(
        impl Sample for $t {
            const DATATYPE: i16 = $code;
            fn put(self, big_endian: bool, out: &mut Vec<u8>) {
                if big_endian {
                    out.extend_from_slice(&self.to_be_bytes());
                } else {
                    out.extend_from_slice(&self.to_le_bytes());
                }
            }
        }
    )*};
}

sample!(u8 => 2, i8 => 256, i16 => 4, u16 => 512, i32 => 8, u32 => 768, i64 => 1024,
        u64 => 1280, f32 => 16, f64 => 64);

/// The header fields a test may want to set; [`Header::new`] gives a valid 3-D volume.
#[derive(Clone, Debug)]
pub struct Header {
    pub dim: [i16; 8],
    pub datatype: i16,
    pub bitpix: i16,
    pub pixdim: [f32; 8],
    pub vox_offset: f32,
    pub scl_slope: f32,
    pub scl_inter: f32,
    pub cal_min: f32,
    pub cal_max: f32,
    pub xyzt_units: u8,
    /// Free text (80 bytes in the file, truncated).
    pub descrip: String,
    /// Free text (16 bytes in the file, truncated).
    pub intent_name: String,
    pub magic: [u8; 4],
    pub big_endian: bool,
}

impl Header {
    /// A little-endian single-file header for `dims` (i, j, k) voxels of type `T`, 1 mm voxels,
    /// no scaling, no display window.
    pub fn new<T: Sample>(dims: [usize; 3]) -> Header {
        let d = |n: usize| i16::try_from(n).expect("a NIfTI-1 dim fits in i16");
        Header {
            dim: [3, d(dims[0]), d(dims[1]), d(dims[2]), 1, 1, 1, 1],
            datatype: T::DATATYPE,
            bitpix: 8 * std::mem::size_of::<T>() as i16,
            pixdim: [1.0; 8],
            vox_offset: 352.0,
            scl_slope: 0.0,
            scl_inter: 0.0,
            cal_min: 0.0,
            cal_max: 0.0,
            xyzt_units: 2,
            descrip: String::new(),
            intent_name: String::new(),
            magic: *b"n+1\0",
            big_endian: false,
        }
    }

    /// The header, the (empty) extension flag and zero padding up to vox_offset (at least 352
    /// bytes when vox_offset is not a usable offset).
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(352);
        let be = self.big_endian;
        let i16s = |out: &mut Vec<u8>, v: i16| v.put(be, out);
        let f32s = |out: &mut Vec<u8>, v: f32| v.put(be, out);
        348i32.put(be, &mut out);
        out.resize(40, 0);
        self.dim.iter().for_each(|&v| i16s(&mut out, v));
        out.resize(70, 0);
        i16s(&mut out, self.datatype);
        i16s(&mut out, self.bitpix);
        i16s(&mut out, 0); // slice_start
        self.pixdim.iter().for_each(|&v| f32s(&mut out, v));
        f32s(&mut out, self.vox_offset);
        f32s(&mut out, self.scl_slope);
        f32s(&mut out, self.scl_inter);
        i16s(&mut out, 0); // slice_end
        out.push(0); // slice_code
        out.push(self.xyzt_units);
        f32s(&mut out, self.cal_max);
        f32s(&mut out, self.cal_min);
        out.resize(148, 0);
        put_text(&mut out, &self.descrip, 80);
        out.resize(252, 0);
        i16s(&mut out, 1); // qform_code: scanner
        i16s(&mut out, 0); // sform_code
        out.resize(328, 0);
        put_text(&mut out, &self.intent_name, 16);
        out.extend_from_slice(&self.magic);
        assert_eq!(out.len(), 348);
        let offset = self.vox_offset;
        let len = if offset.is_finite() && (352.0..=1e6).contains(&offset) {
            offset as usize
        } else {
            352
        };
        out.resize(len, 0);
        out
    }
}

fn put_text(out: &mut Vec<u8>, text: &str, len: usize) {
    let start = out.len();
    out.extend(text.bytes().take(len));
    out.resize(start + len, 0);
}

/// A whole .nii: `header` and `data` (NIfTI order, i fastest) in the header's byte order.
pub fn file<T: Sample>(header: &Header, data: &[T]) -> Vec<u8> {
    let mut out = header.bytes();
    data.iter()
        .for_each(|&v| v.put(header.big_endian, &mut out));
    out
}

/// Gzips bytes (a .nii -> .nii.gz).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).expect("writing to memory");
    enc.finish().expect("writing to memory")
}

fn with_pixdim(mut header: Header, pixdim: [f32; 3]) -> Header {
    header.pixdim[1..4].copy_from_slice(&pixdim);
    header
}

fn maybe_gzip(bytes: Vec<u8>, gz: bool) -> Vec<u8> {
    if gz {
        gzip(&bytes)
    } else {
        bytes
    }
}

/// A uint8 volume of `dims` (i, j, k) with `data` in NIfTI order (i fastest), voxel size
/// `pixdim` mm, gzipped when asked.
pub fn nifti_u8(dims: [usize; 3], data: &[u8], pixdim: [f32; 3], gzip: bool) -> Vec<u8> {
    let header = with_pixdim(Header::new::<u8>(dims), pixdim);
    maybe_gzip(file(&header, data), gzip)
}

/// An int16 volume like [`nifti_u8`], with scl_slope and scl_inter.
pub fn nifti_i16(
    dims: [usize; 3],
    data: &[i16],
    pixdim: [f32; 3],
    slope: f32,
    inter: f32,
    gzip: bool,
) -> Vec<u8> {
    let mut header = with_pixdim(Header::new::<i16>(dims), pixdim);
    header.scl_slope = slope;
    header.scl_inter = inter;
    maybe_gzip(file(&header, data), gzip)
}
