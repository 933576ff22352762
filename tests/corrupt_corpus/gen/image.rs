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
            let dht_len = usize::from(u16::from_be_bytes([gray_jpeg[dht + 2], gray_jpeg[dht + 3]]));
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
