//! JPEG 2000: codestreams are produced with openjp2's encoder (the library behind the decoder, used
//! here through its C-style API since jpeg2k only encodes to files), lossless 5/3 wavelet.
#![expect(
    unsafe_code,
    reason = "openjp2's encoder is reached through its C-style API"
)]

use std::ffi::c_void;

use dicom_core::VR;
use dicom_dictionary_std::tags;
use ndarray::Array3;
use openjp2::openjpeg::{
    opj_create_compress, opj_destroy_codec, opj_encode, opj_end_compress,
    opj_set_default_encoder_parameters, opj_setup_encoder, opj_start_compress, opj_stream_create,
    opj_stream_destroy, opj_stream_set_user_data, opj_stream_set_write_function,
};
use openjp2::{
    image::{opj_image_create, opj_image_destroy},
    opj_cparameters_t, opj_image_comptparm, OPJ_CLRSPC_GRAY, OPJ_CLRSPC_SRGB, OPJ_CODEC_J2K,
};

use super::super::super::testdata::encapsulated;
use super::super::{arr, expect_minmax, fail, gray16, gray8, ok, rgb8, Img};

const J2K_LOSSLESS: &str = "1.2.840.10008.1.2.4.90";
const J2K: &str = "1.2.840.10008.1.2.4.91";

unsafe extern "C" fn write(buffer: *mut c_void, len: usize, user: *mut c_void) -> usize {
    // SAFETY: openjp2 passes back the Vec given to opj_stream_set_user_data and a buffer of len bytes.
    let out = unsafe { &mut *(user as *mut Vec<u8>) };
    out.extend_from_slice(unsafe { std::slice::from_raw_parts(buffer as *const u8, len) });
    len
}

/// A lossless J2K codestream of `components` planes (each rows x cols, row by row) with samples of
/// `precision` bits, signed or not; three components use the reversible colour transform.
fn encode(planes: &[Vec<i32>], rows: u32, cols: u32, precision: u32, signed: bool) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    let mut params = vec![
        opj_image_comptparm {
            dx: 1,
            dy: 1,
            w: cols,
            h: rows,
            x0: 0,
            y0: 0,
            prec: precision,
            bpp: precision,
            sgnd: u32::from(signed),
        };
        planes.len()
    ];
    let space = if planes.len() == 3 {
        OPJ_CLRSPC_SRGB
    } else {
        OPJ_CLRSPC_GRAY
    };
    // SAFETY: plain use of the openjp2 C API; every pointer comes from it and lives until destroyed.
    unsafe {
        let image = opj_image_create(planes.len() as u32, params.as_mut_ptr(), space);
        assert!(!image.is_null());
        (*image).x1 = cols;
        (*image).y1 = rows;
        for (i, plane) in planes.iter().enumerate() {
            let comp = &mut *(*image).comps.add(i);
            std::slice::from_raw_parts_mut(comp.data, plane.len()).copy_from_slice(plane);
        }
        let mut cp: opj_cparameters_t = Default::default();
        opj_set_default_encoder_parameters(&mut cp);
        cp.tcp_numlayers = 1;
        cp.tcp_rates[0] = 0.0;
        cp.cp_disto_alloc = 1;
        cp.numresolution = 2;
        cp.tcp_mct = u8::from(planes.len() == 3) as _;
        let codec = opj_create_compress(OPJ_CODEC_J2K);
        assert_eq!(opj_setup_encoder(codec, &mut cp, image), 1);
        let stream = opj_stream_create(1 << 16, 0);
        opj_stream_set_write_function(stream, Some(write));
        opj_stream_set_user_data(stream, &mut out as *mut Vec<u8> as *mut c_void, None);
        assert_eq!(opj_start_compress(codec, image, stream), 1);
        assert_eq!(opj_encode(codec, stream), 1);
        assert_eq!(opj_end_compress(codec, stream), 1);
        opj_stream_destroy(stream);
        opj_destroy_codec(codec);
        opj_image_destroy(image);
    }
    out
}

#[test]
fn j2k_8bit_gray_is_exact() {
    let (rows, cols) = (8usize, 12usize);
    let pixels: Vec<u8> = (0..rows * cols).map(|i| (i * 29 % 256) as u8).collect();
    let plane: Vec<i32> = pixels.iter().map(|&v| i32::from(v)).collect();
    let codestream = encode(&[plane], rows as u32, cols as u32, 8, false);
    for ts in [J2K_LOSSLESS, J2K] {
        let img = Img::new(rows as u16, cols as u16, 8, "MONOCHROME2");
        let i = ok(&img.file(ts, encapsulated(vec![codestream.clone()])));
        assert_eq!(i.transfer_syntax, ts);
        assert_eq!(gray8(&i, 0), arr(rows, cols, &pixels));
    }
}

#[test]
fn j2k_16bit_signed_multi_frame_with_rescale() {
    let (rows, cols) = (4usize, 8usize);
    let frames: Vec<Vec<i32>> = (0..2)
        .map(|f| {
            (0..rows * cols)
                .map(|i| (i as i32 * 997 + f * 5000) % 30000 - 15000)
                .collect()
        })
        .collect();
    let fragments = frames
        .iter()
        .map(|p| encode(std::slice::from_ref(p), rows as u32, cols as u32, 16, true))
        .collect();
    let mut img = Img::signed16(rows, cols).text(tags::RESCALE_SLOPE, VR::DS, "3");
    img.frames = 2;
    let i = ok(&img.file(J2K_LOSSLESS, encapsulated(fragments)));
    for (n, f) in frames.iter().enumerate() {
        let rescaled: Vec<f64> = f.iter().map(|&v| f64::from(v) * 3.0).collect();
        assert_eq!(
            gray16(&i, n),
            arr(rows, cols, &expect_minmax(&rescaled)),
            "frame {n}"
        );
    }
}

#[test]
fn j2k_rgb_with_colour_transform_is_exact() {
    let (rows, cols) = (6usize, 6usize);
    let rgb: Vec<u8> = (0..rows * cols * 3).map(|i| (i * 7 % 256) as u8).collect();
    let planes: Vec<Vec<i32>> = (0..3)
        .map(|ch| {
            rgb.iter()
                .skip(ch)
                .step_by(3)
                .map(|&v| i32::from(v))
                .collect()
        })
        .collect();
    let codestream = encode(&planes, rows as u32, cols as u32, 8, false);
    for pi in ["RGB", "YBR_RCT"] {
        let img = Img::new(rows as u16, cols as u16, 8, pi);
        let i = ok(&img.file(J2K_LOSSLESS, encapsulated(vec![codestream.clone()])));
        let want = Array3::from_shape_vec((rows, cols, 3), rgb.clone()).expect("shape");
        assert_eq!(rgb8(&i, 0), want, "{pi}");
    }
}

#[test]
fn j2k_with_a_wrong_size_or_garbage_is_malformed() {
    let plane: Vec<i32> = (0..64).collect();
    let codestream = encode(&[plane], 8, 8, 8, false);
    let f =
        fail(&Img::new(8, 4, 8, "MONOCHROME2").file(J2K, encapsulated(vec![codestream.clone()])));
    assert!(
        f.error
            .to_string()
            .contains("JPEG 2000 fragment 0 is 8 x 8"),
        "{}",
        f.error
    );
    let img = Img::new(8, 8, 8, "MONOCHROME2");
    let mut damaged = codestream.clone();
    let len = damaged.len();
    for b in damaged[60..len - 2].iter_mut() {
        *b ^= 0x5A;
    }
    for fragment in [
        damaged,
        codestream[..40].to_vec(),
        vec![0xFF, 0x4F, 0xFF, 0x51],
    ] {
        if let Err(f) = super::super::super::decode(
            &img.file(J2K, encapsulated(vec![fragment])),
            &super::super::LIMITS,
        ) {
            assert!(f.error.to_string().contains("JPEG 2000"), "{}", f.error);
        }
    }
}
