use std::io::{self, Read};

use ndarray::{array, Array2};

use super::testdata::{file, gzip, nifti_i16, nifti_u8, Header, Sample};
use super::*;

const LIMITS: Limits = Limits {
    max_voxels: 1 << 20,
    max_slices: 1024,
};

fn planes(bytes: &[u8], axis: Option<usize>) -> Vec<Plane> {
    decode_volume(bytes, axis, &LIMITS).expect("decodes")
}

fn gray8(plane: &Plane) -> &Array2<u8> {
    match &plane.pixels {
        Pixels::Gray8(a) => a,
        other => panic!("expected Gray8, got {other:?}"),
    }
}

fn gray16(plane: &Plane) -> &Array2<u16> {
    match &plane.pixels {
        Pixels::Gray16(a) => a,
        other => panic!("expected Gray16, got {other:?}"),
    }
}

/// The expected Gray16 value, computed as the module doc states it.
fn expect16(v: f64, lo: f64, hi: f64) -> u16 {
    ((v.clamp(lo, hi) - lo) / (hi - lo) * 65535.0).round() as u16
}

fn err(bytes: &[u8]) -> IngestError {
    decode_volume(bytes, None, &LIMITS).expect_err("rejected")
}

fn assert_malformed(e: IngestError) {
    assert!(matches!(e, IngestError::Malformed(_)), "{e:?}");
}

fn assert_unsupported(e: IngestError, needle: &str) {
    match e {
        IngestError::Unsupported(m) => assert!(m.contains(needle), "{m}"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

/// A volume whose voxel (i, j, k) holds i + 4j + 16k, so any mix-up of axes shows.
fn coded_volume(dims: [usize; 3]) -> Vec<u8> {
    let mut data = Vec::new();
    for k in 0..dims[2] {
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                data.push((i + 4 * j + 16 * k) as u8);
            }
        }
    }
    data
}

#[test]
fn uint8_identity_is_gray8_as_stored() {
    let data: Vec<u8> = (0..12).map(|v| v * 20).collect();
    let nii = nifti_u8([3, 2, 2], &data, [1.0, 1.0, 1.0], false);
    let p = planes(&nii, None);
    assert_eq!(p.len(), 2);
    assert_eq!(gray8(&p[0]), &array![[0, 20, 40], [60, 80, 100]]);
    assert_eq!(gray8(&p[1]), &array![[120, 140, 160], [180, 200, 220]]);
    assert_eq!(p[0].spacing_mm, Some([1.0, 1.0]));
    assert!(is_nifti(&nii));
}

#[test]
fn uint8_slope_one_inter_zero_is_still_gray8() {
    let mut h = Header::new::<u8>([2, 1, 1]);
    h.scl_slope = 1.0;
    let p = planes(&file(&h, &[7u8, 250]), None);
    assert_eq!(gray8(&p[0]), &array![[7, 250]]);
}

#[test]
fn uint8_with_window_or_scaling_is_gray16() {
    let mut h = Header::new::<u8>([3, 1, 1]);
    h.cal_min = 10.0;
    h.cal_max = 110.0;
    let p = planes(&file(&h, &[0u8, 60, 200]), None);
    assert_eq!(gray16(&p[0]), &array![[0, 32768, 65535]]);

    let mut h = Header::new::<u8>([3, 1, 1]);
    h.scl_slope = 2.0;
    h.scl_inter = 1.0;
    // Scaled 1, 21, 201: min-max over the volume.
    let p = planes(&file(&h, &[0u8, 10, 100]), None);
    let e = |v| expect16(v, 1.0, 201.0);
    assert_eq!(gray16(&p[0]), &array![[e(1.0), e(21.0), e(201.0)]]);
}

#[test]
fn int16_scaling_maps_over_the_whole_volume() {
    // Slice 0 spans a small range, slice 1 a large one: one window for both.
    let data: [i16; 8] = [-100, -90, -80, -70, 0, 50, 300, 1000];
    let (slope, inter) = (0.5f32, 10.0f32);
    let nii = nifti_i16([2, 2, 2], &data, [1.0, 1.0, 1.0], slope, inter, false);
    let p = planes(&nii, None);
    let v: Vec<f64> = data
        .iter()
        .map(|&r| f64::from(r) * f64::from(slope) + f64::from(inter))
        .collect();
    let (lo, hi) = (-40.0, 510.0);
    assert_eq!((v[0], v[7]), (lo, hi));
    let e = |x: f64| expect16(x, lo, hi);
    assert_eq!(
        gray16(&p[0]),
        &array![[e(v[0]), e(v[1])], [e(v[2]), e(v[3])]]
    );
    assert_eq!(
        gray16(&p[1]),
        &array![[e(v[4]), e(v[5])], [e(v[6]), e(v[7])]]
    );
    assert_eq!(gray16(&p[0])[[0, 0]], 0);
    assert_eq!(gray16(&p[1])[[1, 1]], 65535);
}

#[test]
fn zero_or_non_finite_slope_means_no_scaling() {
    for slope in [0.0, f32::NAN, f32::INFINITY] {
        let nii = nifti_i16([3, 1, 1], &[-10, 0, 30], [1.0; 3], slope, 5.0, false);
        let p = planes(&nii, None);
        assert_eq!(
            gray16(&p[0]),
            &array![[0, expect16(0.0, -10.0, 30.0), 65535]]
        );
    }
}

#[test]
fn float32_window_clamps_and_non_finite_is_the_volume_minimum() {
    let mut h = Header::new::<f32>([6, 1, 1]);
    h.cal_min = -1.0;
    h.cal_max = 3.0;
    let data = [-5.0f32, 0.0, 1.5, 10.0, f32::NAN, f32::INFINITY];
    let p = planes(&file(&h, &data), None);
    let e = |v| expect16(v, -1.0, 3.0);
    // NaN and inf count as -5 (the finite minimum), which the window clamps to 0.
    assert_eq!(gray16(&p[0]), &array![[0, e(0.0), e(1.5), 65535, 0, 0]]);
}

#[test]
fn float_non_finite_without_window_is_the_minimum() {
    let h = Header::new::<f64>([4, 1, 1]);
    let p = planes(&file(&h, &[2.0f64, f64::NEG_INFINITY, 4.0, f64::NAN]), None);
    assert_eq!(gray16(&p[0]), &array![[0, 0, 65535, 0]]);
}

#[test]
fn constant_and_all_nan_volumes_are_zero() {
    let nii = nifti_i16([2, 2, 1], &[7; 4], [1.0; 3], 0.0, 0.0, false);
    assert_eq!(
        gray16(&planes(&nii, None)[0]),
        &Array2::<u16>::zeros((2, 2))
    );
    let h = Header::new::<f32>([2, 1, 1]);
    let p = planes(&file(&h, &[f32::NAN, f32::NAN]), None);
    assert_eq!(gray16(&p[0]), &array![[0, 0]]);
}

#[test]
fn every_integer_type_decodes() {
    fn check<T: Sample>(data: [T; 3], big_endian: bool) {
        let mut h = Header::new::<T>([3, 1, 1]);
        h.big_endian = big_endian;
        let p = decode_volume(&file(&h, &data), None, &LIMITS).expect("decodes");
        // Each data set is (min, middle, max) with the middle a quarter of the way up.
        assert_eq!(gray16(&p[0]), &array![[0, 16384, 65535]], "{}", T::DATATYPE);
    }
    for be in [false, true] {
        check::<i8>([-100, -50, 100], be);
        check::<u16>([1000, 1250, 2000], be);
        check::<i32>([-200_000, -100_000, 200_000], be);
        check::<u32>([4_000_000_000, 4_000_000_100, 4_000_000_400], be);
        check::<i64>([-4, -2, 4], be);
        check::<u64>([0, 1 << 40, 1 << 42], be);
        check::<f64>([-1.0, -0.5, 1.0], be);
        check::<f32>([10.0, 12.5, 20.0], be);
    }
}

#[test]
fn axis_orientation_is_exact() {
    let dims = [2, 3, 4];
    let nii = nifti_u8(dims, &coded_volume(dims), [1.0; 3], false);
    let code = |i: usize, j: usize, k: usize| (i + 4 * j + 16 * k) as u8;
    // (slices, rows, cols, voxel of (slice, row, col)) per axis.
    type Voxel = fn(usize, usize, usize) -> (usize, usize, usize);
    let cases: [(usize, usize, usize, usize, Voxel); 3] = [
        (0, 2, 4, 3, |s, r, c| (s, c, r)),
        (1, 3, 4, 2, |s, r, c| (c, s, r)),
        (2, 4, 3, 2, |s, r, c| (c, r, s)),
    ];
    for (axis, slices, rows, cols, voxel) in cases {
        let p = planes(&nii, Some(axis));
        assert_eq!(p.len(), slices, "axis {axis}");
        for (s, plane) in p.iter().enumerate() {
            let a = gray8(plane);
            assert_eq!(a.dim(), (rows, cols), "axis {axis}");
            for ((r, c), &v) in a.indexed_iter() {
                let (i, j, k) = voxel(s, r, c);
                assert_eq!(v, code(i, j, k), "axis {axis} slice {s} ({r}, {c})");
            }
        }
    }
    // Spot checks written out: along k, row = j and column = i.
    assert_eq!(
        gray8(&planes(&nii, None)[3]),
        &array![[48, 49], [52, 53], [56, 57]]
    );
    assert_eq!(gray8(&planes(&nii, Some(0))[1])[[3, 2]], code(1, 2, 3));
    assert_eq!(gray8(&planes(&nii, Some(1))[2])[[1, 0]], code(0, 2, 1));
}

#[test]
fn big_endian_equals_little_endian() {
    let data: Vec<i16> = (0..24).map(|v| v * 300 - 3000).collect();
    let mut h = Header::new::<i16>([2, 3, 4]);
    h.scl_slope = 1.5;
    h.scl_inter = -2.0;
    h.pixdim[1..4].copy_from_slice(&[0.5, 0.75, 3.0]);
    let le = file(&h, &data);
    h.big_endian = true;
    let be = file(&h, &data);
    assert_ne!(le, be);
    assert!(is_nifti(&be));
    for axis in 0..3 {
        assert_eq!(planes(&le, Some(axis)), planes(&be, Some(axis)));
    }
    assert_eq!(planes(&be, None)[0].spacing_mm, Some([0.75, 0.5]));
}

#[test]
fn gzipped_equals_plain() {
    let dims = [5, 4, 3];
    let plain = nifti_u8(dims, &coded_volume(dims), [0.8, 0.9, 2.5], false);
    let gz = nifti_u8(dims, &coded_volume(dims), [0.8, 0.9, 2.5], true);
    assert!(gz.starts_with(&[0x1f, 0x8b]));
    assert!(is_nifti(&gz));
    for axis in [None, Some(0), Some(1)] {
        assert_eq!(planes(&plain, axis), planes(&gz, axis));
    }
    let data: Vec<i16> = (0..60).map(|v| v * 7 - 100).collect();
    let plain = nifti_i16(dims, &data, [1.0; 3], 0.25, 3.0, false);
    let gz = nifti_i16(dims, &data, [1.0; 3], 0.25, 3.0, true);
    assert_eq!(planes(&plain, None), planes(&gz, None));
    let labels = decode_label_volume(&gz, Some(1), &LIMITS).unwrap();
    assert_eq!(
        labels,
        decode_label_volume(&plain, Some(1), &LIMITS).unwrap()
    );
}

#[test]
fn multi_member_gzip_is_read_whole() {
    let dims = [4, 4, 2];
    let plain = nifti_u8(dims, &coded_volume(dims), [1.0; 3], false);
    let mut gz = gzip(&plain[..200]);
    gz.extend(gzip(&plain[200..]));
    assert_eq!(planes(&gz, None), planes(&plain, None));
}

#[test]
fn spacing_follows_rows_and_columns_in_mm() {
    let spacing = |units: u8, pixdim: [f32; 3], axis: usize| {
        let mut h = Header::new::<u8>([2, 2, 2]);
        h.xyzt_units = units;
        h.pixdim[1..4].copy_from_slice(&pixdim);
        planes(&file(&h, &[0u8; 8]), Some(axis))[0].spacing_mm
    };
    let pd = [0.5, 0.75, 2.0];
    // mm (2), and mm | seconds (2 | 8): the time bits do not matter.
    for units in [2, 10] {
        assert_eq!(spacing(units, pd, 2), Some([0.75, 0.5]));
        assert_eq!(spacing(units, pd, 1), Some([2.0, 0.5]));
        assert_eq!(spacing(units, pd, 0), Some([2.0, 0.75]));
    }
    assert_eq!(spacing(0, pd, 2), Some([0.75, 0.5]), "unknown unit is mm");
    let m = spacing(1, [0.0005, 0.002, 0.001], 2).expect("metres");
    assert!(
        (m[0] - 2.0).abs() < 1e-6 && (m[1] - 0.5).abs() < 1e-6,
        "{m:?}"
    );
    assert_eq!(
        spacing(1, [0.0009765625, 1.0, 1.0], 2),
        Some([1000.0, 0.9765625])
    );
    assert_eq!(
        spacing(3, [500.0, 250.0, 1.0], 2),
        Some([0.25, 0.5]),
        "microns"
    );
    assert_eq!(spacing(2, [0.0, 1.0, 1.0], 2), None);
    assert_eq!(spacing(2, [1.0, -1.0, 1.0], 2), None);
    assert_eq!(spacing(2, [1.0, f32::NAN, 1.0], 2), None);
    // The slicing axis's own pixdim does not matter.
    assert_eq!(spacing(2, [1.0, 1.0, 0.0], 2), Some([1.0, 1.0]));
    assert_eq!(spacing(5, pd, 2), None, "not a spatial unit code");
}

#[test]
fn label_masks_are_non_zero_raw_voxels() {
    // Scaling would make -2 zero (slope 1, inter 2); labels ignore it.
    let data: [i16; 8] = [0, 1, -2, 0, 0, 0, 5, 0];
    let nii = nifti_i16([2, 2, 2], &data, [0.5, 0.75, 1.25], 1.0, 2.0, true);
    let l = decode_label_volume(&nii, None, &LIMITS).unwrap();
    assert_eq!(l.len(), 2);
    assert_eq!(l[0].mask, array![[false, true], [true, false]]);
    assert_eq!(l[1].mask, array![[false, false], [true, false]]);
    assert_eq!(l[0].spacing_mm, Some([0.75, 0.5]));
    // Along i: rows = k, columns = j.
    let l = decode_label_volume(&nii, Some(0), &LIMITS).unwrap();
    assert_eq!(l[0].mask, array![[false, true], [false, true]]);
    assert_eq!(l[1].mask, array![[true, false], [false, false]]);
    assert_eq!(l[1].spacing_mm, Some([1.25, 0.75]));

    let h = Header::new::<f32>([4, 1, 1]);
    let nii = file(&h, &[0.0f32, -0.0, f32::NAN, 0.25]);
    let l = decode_label_volume(&nii, None, &LIMITS).unwrap();
    assert_eq!(l[0].mask, array![[false, false, false, true]]);
}

#[test]
fn two_d_image_is_one_slice() {
    let mut h = Header::new::<u8>([3, 2, 1]);
    h.dim[0] = 2;
    h.dim[3] = 0; // beyond dim[0]: ignored
    let p = planes(&file(&h, &[1u8, 2, 3, 4, 5, 6]), None);
    assert_eq!(p.len(), 1);
    assert_eq!(gray8(&p[0]), &array![[1, 2, 3], [4, 5, 6]]);
}

#[test]
fn trailing_singleton_dims_are_accepted() {
    let mut h = Header::new::<u8>([2, 1, 2]);
    h.dim[0] = 5;
    let p = planes(&file(&h, &[1u8, 2, 3, 4]), None);
    assert_eq!(p.len(), 2);
}

#[test]
fn extensions_before_the_voxels_are_skipped() {
    let mut h = Header::new::<u8>([2, 1, 1]);
    h.vox_offset = 400.0;
    let mut nii = file(&h, &[9u8, 8]);
    nii[348] = 1; // extension flag; the extension bytes are opaque to this decoder
    nii[352..400].fill(0xee);
    assert_eq!(gray8(&planes(&nii, None)[0]), &array![[9, 8]]);
    assert_eq!(gray8(&planes(&gzip(&nii), None)[0]), &array![[9, 8]]);
}

#[test]
fn not_nifti_is_rejected() {
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    for bytes in [
        Vec::new(),
        png,
        vec![0u8; 400],
        gzip(&[7u8; 1000]),
        vec![0x1f, 0x8b],
    ] {
        assert!(!is_nifti(&bytes));
        assert_malformed(err(&bytes));
    }
    let mut h = Header::new::<u8>([1, 1, 1]);
    h.magic = *b"n+3\0";
    assert!(!is_nifti(&file(&h, &[0u8])));
    assert_malformed(err(&file(&h, &[0u8])));
}

#[test]
fn header_pairs_and_nifti2_are_unsupported() {
    let mut h = Header::new::<u8>([1, 1, 1]);
    h.magic = *b"ni1\0";
    let hdr = file(&h, &[0u8]);
    assert!(is_nifti(&hdr));
    assert_unsupported(err(&hdr), ".nii or .nii.gz");

    let mut n2 = vec![0u8; 560];
    n2[..4].copy_from_slice(&540i32.to_le_bytes());
    n2[4..12].copy_from_slice(b"n+2\0\r\n\x1a\n");
    assert!(is_nifti(&n2));
    assert_unsupported(err(&n2), "NIfTI-2");
    assert_unsupported(err(&gzip(&n2)), "NIfTI-2");
}

#[test]
fn truncation_anywhere_is_an_error() {
    let data: Vec<i16> = (0..60).collect();
    let mut h = Header::new::<i16>([5, 4, 3]);
    h.vox_offset = 368.0;
    let nii = file(&h, &data);
    for cut in 0..nii.len() {
        assert_malformed(err(&nii[..cut]));
        let _ = is_nifti(&nii[..cut]);
    }
    let gz = gzip(&nii);
    for cut in (0..gz.len()).step_by(3) {
        // Cut near the end (the 8-byte trailer, an end-of-block code) every voxel may be there.
        if cut < gz.len() - 16 {
            assert_malformed(err(&gz[..cut]));
        }
        let _ = decode_label_volume(&gz[..cut], None, &LIMITS);
    }
}

#[test]
fn corrupt_gzip_is_an_error_not_a_panic() {
    let dims = [8, 8, 4];
    let mut gz = nifti_u8(dims, &coded_volume(dims), [1.0; 3], true);
    for at in (10..gz.len() - 8).step_by(7) {
        gz[at] ^= 0x5a;
        let _ = decode_volume(&gz, None, &LIMITS);
        let _ = is_nifti(&gz);
    }
}

#[test]
fn bad_dims_are_malformed() {
    let cases: [(usize, i16, &str); 6] = [
        (0, 0, "dim[0] is 0"),
        (0, 1, "dim[0] is 1"),
        (0, 8, "dim[0]"),
        (0, -3, "dim[0]"),
        (2, 0, "dim[2] is 0"),
        (1, -4, "dim[1] is -4"),
    ];
    for (at, value, needle) in cases {
        let mut h = Header::new::<u8>([2, 2, 2]);
        h.dim[at] = value;
        match err(&file(&h, &[0u8; 8])) {
            IngestError::Malformed(m) => assert!(m.contains(needle), "{m}"),
            other => panic!("dim[{at}] = {value}: {other:?}"),
        }
    }
}

#[test]
fn time_series_and_higher_dims_are_unsupported() {
    let mut h = Header::new::<u8>([2, 2, 2]);
    h.dim[0] = 4;
    h.dim[4] = 3;
    h.descrip = "Doe^Jane 1970-01-01".into();
    h.intent_name = "SECRET".into();
    let e = err(&file(&h, &[0u8; 24]));
    let msg = e.to_string();
    assert!(!msg.contains("Doe") && !msg.contains("SECRET"), "{msg}");
    assert_unsupported(e, "time series of 3");

    let mut h = Header::new::<u8>([2, 2, 2]);
    h.dim[0] = 5;
    h.dim[5] = 2;
    assert_unsupported(err(&file(&h, &[0u8; 16])), "dim[5] is 2");
}

#[test]
fn unsupported_datatypes_are_named() {
    for (code, name) in [
        (128, "RGB24"),
        (32, "complex64"),
        (1, "binary"),
        (9, "unknown"),
    ] {
        let mut h = Header::new::<u8>([1, 1, 1]);
        h.datatype = code;
        assert_unsupported(err(&file(&h, &[0u8; 16])), &format!("{code} ({name})"));
    }
}

#[test]
fn bad_vox_offset_is_malformed() {
    for offset in [0.0, 348.0, f32::NAN, f32::INFINITY, -400.0, 1e12] {
        let mut h = Header::new::<u8>([1, 1, 1]);
        h.vox_offset = offset;
        let nii = file(&h, &[0u8]);
        assert_malformed(err(&nii));
        assert_malformed(err(&gzip(&nii)));
    }
}

#[test]
fn axis_out_of_range_names_the_valid_axes() {
    let nii = nifti_u8([2, 2, 2], &[0; 8], [1.0; 3], false);
    for axis in [3, 7, usize::MAX] {
        let e = decode_volume(&nii, Some(axis), &LIMITS).unwrap_err();
        assert_unsupported(e, "axis 0, 1 or 2");
        let e = decode_label_volume(&nii, Some(axis), &LIMITS).unwrap_err();
        assert_unsupported(e, &format!("axis {axis}"));
    }
}

#[test]
fn huge_declared_volume_is_too_large_before_reading() {
    // 30000^3 voxels declared, 1 byte of data: refused from the header alone.
    let h = Header::new::<f64>([30_000, 30_000, 30_000]);
    let nii = file(&h, &[0.0f64]);
    for bytes in [nii.clone(), gzip(&nii)] {
        match decode_volume(&bytes, None, &LIMITS).unwrap_err() {
            IngestError::TooLarge(m) => assert!(m.contains("30000x30000x30000"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    // Within max_voxels but over max_slices along the chosen axis only.
    let limits = Limits {
        max_voxels: 1 << 20,
        max_slices: 10,
    };
    let nii = nifti_u8([20, 2, 2], &[0; 80], [1.0; 3], false);
    assert!(decode_volume(&nii, None, &limits).is_ok());
    assert!(matches!(
        decode_volume(&nii, Some(0), &limits),
        Err(IngestError::TooLarge(_))
    ));
    assert!(matches!(
        decode_label_volume(&nii, Some(0), &limits),
        Err(IngestError::TooLarge(_))
    ));
}

#[test]
fn gzip_bomb_is_read_only_up_to_the_declared_size() {
    // A valid 4x4x1 volume followed by 64 MiB of zeros (about 64 KiB gzipped); that only the
    // declared bytes are inflated is shown exactly by the endless-stream test below.
    let dims = [4, 4, 1];
    let mut nii = nifti_u8(dims, &coded_volume(dims), [1.0; 3], false);
    let plain = nii.clone();
    nii.resize(nii.len() + (64 << 20), 0);
    let bomb = gzip(&nii);
    drop(nii);
    assert!(bomb.len() < 1 << 20);
    assert_eq!(planes(&bomb, None), planes(&plain, None));
}

#[test]
fn stream_reading_stops_at_the_declared_size() {
    // An endless stream after the voxels: reading past them would never return.
    let dims = [3, 2, 1];
    let nii = nifti_u8(dims, &coded_volume(dims), [1.0; 3], false);
    let endless = (&nii[..]).chain(io::repeat(0xab));
    let (header, data) = read_stream(endless, 2, &LIMITS).expect("reads");
    assert_eq!(header.dims, [3, 2, 1]);
    assert_eq!(data, coded_volume(dims));

    // An endless stream with a header over the limit: refused without reading on.
    let h = Header::new::<u8>([1024, 1024, 2]);
    let endless = io::Cursor::new(h.bytes()).chain(io::repeat(0));
    assert!(matches!(
        read_stream(endless, 2, &LIMITS),
        Err(IngestError::TooLarge(_))
    ));
}

#[test]
fn testdata_helpers_write_the_documented_layout() {
    let nii = nifti_i16([2, 1, 1], &[-2, 300], [0.5, 1.0, 1.0], 2.0, 1.0, false);
    assert_eq!(nii.len(), 352 + 4);
    assert_eq!(&nii[344..348], b"n+1\0");
    assert_eq!(&nii[352..], &[0xfe, 0xff, 0x2c, 0x01]);
    let h = super::Header::parse(&nii[..348], 2, &LIMITS).unwrap();
    assert_eq!(h.scaling, Some((2.0, 1.0)));
    assert_eq!(h.spacing_mm, [Some(0.5), Some(1.0), Some(1.0)]);
    assert_eq!(h.dtype, DataType::I16);
    assert!(!h.big_endian);
}
