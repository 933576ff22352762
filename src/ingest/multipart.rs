//! multipart/related bodies (DICOMweb STOW-RS): the parts' content types and bytes. The framing is
//! multer's; what this adds is the multipart/related content-type check and bounds on the number of parts.

use super::IngestError;
use bytes::Bytes;

/// One part of a multipart/related body.
#[derive(Debug)]
pub struct RelatedPart {
    /// The part's Content-Type essence (lowercase, no parameters), if it had one.
    pub content_type: Option<String>,
    pub data: Bytes,
}

/// The boundary and `type` parameter of a multipart/related Content-Type. Parameter values may be quoted
/// or not: many STOW-RS clients send `type=application/dicom` unquoted, though `/` strictly needs quotes.
pub fn related_boundary(content_type: &str) -> Result<(String, Option<String>), IngestError> {
    let mut fields = content_type.split(';');
    let essence = fields
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence != "multipart/related" {
        return Err(IngestError::Unsupported(format!(
            "expected multipart/related; type=\"application/dicom\", got {essence:?}"
        )));
    }
    let (mut boundary, mut kind) = (None, None);
    for field in fields {
        let Some((key, value)) = field.split_once('=') else {
            if field.trim().is_empty() {
                continue;
            }
            return Err(IngestError::Malformed(format!(
                "Content-Type parameter {:?} has no value",
                field.trim()
            )));
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        match key.trim().to_ascii_lowercase().as_str() {
            "boundary" => boundary = Some(value.to_string()),
            "type" => kind = Some(value.to_ascii_lowercase()),
            _ => {}
        }
    }
    let boundary = boundary
        .filter(|b| !b.is_empty() && b.len() <= 70)
        .ok_or_else(|| {
            IngestError::Malformed(
                "the multipart/related Content-Type has no usable boundary (1 to 70 characters)"
                    .into(),
            )
        })?;
    Ok((boundary, kind))
}

/// Splits a complete body into its parts; more than `max_parts` parts is an error.
pub async fn related_parts(
    boundary: &str,
    body: Bytes,
    max_parts: usize,
) -> Result<Vec<RelatedPart>, IngestError> {
    let stream = futures::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut parts = Vec::new();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return Err(malformed(e)),
        };
        if parts.len() == max_parts {
            return Err(IngestError::TooLarge(format!(
                "the body has more than {max_parts} parts; send fewer instances per request"
            )));
        }
        let content_type = field
            .content_type()
            .map(|m| m.essence_str().to_ascii_lowercase());
        let data = field.bytes().await.map_err(malformed)?;
        parts.push(RelatedPart { content_type, data });
    }
    if parts.is_empty() {
        return Err(IngestError::Malformed(
            "the multipart/related body has no parts".into(),
        ));
    }
    Ok(parts)
}

fn malformed(e: multer::Error) -> IngestError {
    IngestError::Malformed(format!("malformed multipart/related body: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(boundary: &str, parts: &[(&str, &[u8])]) -> Bytes {
        let mut out = Vec::new();
        for (ct, data) in parts {
            let head = format!("--{boundary}\r\nContent-Type: {ct}\r\n\r\n");
            out.extend([head.as_bytes(), data, b"\r\n"].concat());
        }
        out.extend(format!("--{boundary}--\r\n").into_bytes());
        Bytes::from(out)
    }

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        futures::executor::block_on(f)
    }

    #[test]
    fn boundary_and_type_are_read_from_the_content_type() {
        let (b, t) =
            related_boundary(r#"multipart/related; type="application/dicom"; boundary=abc123"#)
                .unwrap();
        assert_eq!(b, "abc123");
        assert_eq!(t.as_deref(), Some("application/dicom"));
        assert!(matches!(
            related_boundary("multipart/form-data; boundary=x"),
            Err(IngestError::Unsupported(_))
        ));
        assert!(matches!(
            related_boundary("multipart/related; type=application/dicom"),
            Err(IngestError::Malformed(_))
        ));
        assert!(matches!(
            related_boundary("not a mime type"),
            Err(IngestError::Unsupported(_))
        ));
        let (b, t) =
            related_boundary("Multipart/Related; type=application/dicom; boundary=\"a b\"")
                .unwrap();
        assert_eq!(
            (b.as_str(), t.as_deref()),
            ("a b", Some("application/dicom"))
        );
        assert!(matches!(
            related_boundary("multipart/related; boundary"),
            Err(IngestError::Malformed(_))
        ));
    }

    #[test]
    fn parts_keep_their_bytes_and_content_types_in_order() {
        let data: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        let b = body(
            "xyz",
            &[
                ("application/dicom", &data),
                ("Application/DICOM; x=1", b"\r\n--"),
            ],
        );
        let parts = run(related_parts("xyz", b, 10)).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].content_type.as_deref(), Some("application/dicom"));
        assert_eq!(&parts[0].data[..], &data[..]);
        assert_eq!(&parts[1].data[..], b"\r\n--");
    }

    #[test]
    fn too_many_empty_and_broken_bodies_are_errors() {
        let b = body(
            "q",
            &[("application/dicom", b"1"), ("application/dicom", b"2")],
        );
        assert!(matches!(
            run(related_parts("q", b, 1)),
            Err(IngestError::TooLarge(_))
        ));
        assert!(matches!(
            run(related_parts("q", Bytes::from_static(b"--q--\r\n"), 5)),
            Err(IngestError::Malformed(_))
        ));
        let cut = body("q", &[("application/dicom", b"12345")]);
        let cut = cut.slice(..cut.len() - 12);
        assert!(matches!(
            run(related_parts("q", cut, 5)),
            Err(IngestError::Malformed(_))
        ));
    }
}
