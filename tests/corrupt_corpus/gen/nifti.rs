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
