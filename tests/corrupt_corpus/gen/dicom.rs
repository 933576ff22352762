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
        "OB" | "OD" | "OF" | "OL" | "OV" | "OW" | "SQ" | "SV" | "UC" | "UR" | "UT" | "UN" | "UV"
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
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
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
