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
