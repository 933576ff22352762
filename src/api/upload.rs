//! Reading uploads: multipart parts held in memory (the body limit bounds them), zip archives unpacked
//! with bounds on entries and inflated size, and the files of an image set gathered by name (see
//! `expand` for turning them into stored images).

use super::{ApiError, Limits};
use crate::ingest::dicom;
use crate::ingest::expand::{dicom_name, InputFile, InputPair};
use axum::extract::Multipart;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;

#[derive(Clone)]
pub struct Part {
    pub name: String,
    pub file_name: Option<String>,
    pub data: Bytes,
}

/// A multipart body, read completely.
#[derive(Clone, Default)]
pub struct Upload {
    parts: Vec<Part>,
}

impl Upload {
    /// Reads every part; a part not in `allowed` is an error (it is most likely a typo of an allowed one).
    pub async fn read(mut multipart: Multipart, allowed: &[&str]) -> Result<Self, ApiError> {
        let mut parts = Vec::new();
        while let Some(field) = multipart.next_field().await? {
            let name = field.name().unwrap_or_default().to_string();
            if !allowed.contains(&name.as_str()) {
                return Err(ApiError::Unprocessable(format!(
                    "unexpected form part {name:?}; this endpoint takes: {}",
                    allowed.join(", ")
                )));
            }
            let file_name = field.file_name().map(str::to_string);
            let data = field.bytes().await?;
            parts.push(Part {
                name,
                file_name,
                data,
            });
        }
        Ok(Self { parts })
    }

    /// An upload built from parts received some other way (e.g. a raw application/zip body).
    pub fn from_parts(parts: Vec<Part>) -> Self {
        Self { parts }
    }

    /// A digest of what was sent (part names, file names, contents) that ignores multipart framing, so a
    /// client's retry with a new boundary matches its first try.
    pub fn digest(&self) -> String {
        let mut entries: Vec<(String, String, String)> = self
            .parts
            .iter()
            .map(|p| {
                let sha = hex::encode(Sha256::digest(&p.data));
                (p.name.clone(), p.file_name.clone().unwrap_or_default(), sha)
            })
            .collect();
        entries.sort();
        let mut h = Sha256::new();
        for (a, b, c) in entries {
            h.update(format!("{a}\0{b}\0{c}\n"));
        }
        hex::encode(h.finalize())
    }

    /// All parts with this name, removed from the upload.
    pub fn take_all(&mut self, name: &str) -> Vec<Part> {
        let (taken, kept) = std::mem::take(&mut self.parts)
            .into_iter()
            .partition(|p| p.name == name);
        self.parts = kept;
        taken
    }

    /// The single part with this name, if any.
    pub fn take_one(&mut self, name: &str) -> Result<Option<Part>, ApiError> {
        let mut parts = self.take_all(name);
        if parts.len() > 1 {
            return Err(ApiError::Unprocessable(format!(
                "form part {name:?} was sent more than once"
            )));
        }
        Ok(parts.pop())
    }

    pub fn take_text(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        self.take_one(name)?
            .map(|p| {
                String::from_utf8(p.data.to_vec()).map_err(|_| {
                    ApiError::Unprocessable(format!("form part {name:?} is not UTF-8 text"))
                })
            })
            .transpose()
    }

    /// The optional `axis` part: which axis NIfTI volumes are sliced along (0, 1 or 2; default the last).
    pub fn take_axis(&mut self) -> Result<Option<usize>, ApiError> {
        let Some(text) = self.take_text("axis")? else {
            return Ok(None);
        };
        match text.trim().parse::<usize>() {
            Ok(axis) if axis <= 2 => Ok(Some(axis)),
            _ => Err(ApiError::Unprocessable(format!(
                "form part \"axis\" is {text:?}; it must be 0, 1 or 2 (the NIfTI axis to slice along)"
            ))),
        }
    }

    pub fn require(&mut self, name: &str, what: &str) -> Result<Part, ApiError> {
        self.take_one(name)?
            .ok_or_else(|| ApiError::Unprocessable(format!("missing form part {name:?} ({what})")))
    }
}

/// A file's stem: the last path component without its extension (both of `.nii.gz`).
pub fn stem(path: &str) -> String {
    let file = path.rsplit(['/', '\\']).next().unwrap_or(path);
    let file = match file.len().checked_sub(7) {
        Some(cut) if file.is_char_boundary(cut) && file[cut..].eq_ignore_ascii_case(".nii.gz") => {
            &file[..cut]
        }
        _ => file,
    };
    match file.rsplit_once('.') {
        Some((s, _)) if !s.is_empty() => s.to_string(),
        _ => file.to_string(),
    }
}

const IMAGE_EXTENSIONS: [&str; 6] = [".png", ".jpg", ".jpeg", ".dcm", ".nii", ".nii.gz"];

/// Archive entries that are images: by extension, or DICOM files without one (as PACS exports write them).
fn is_image_entry(path: &str, data: &[u8]) -> bool {
    let lower = path.to_ascii_lowercase();
    let file = lower.rsplit('/').next().unwrap_or(&lower);
    if file.starts_with('.') || file == "dicomdir" {
        return false;
    }
    IMAGE_EXTENSIONS.iter().any(|ext| file.ends_with(ext)) || dicom::is_dicom(data)
}

/// The files of a zip archive (path, bytes, position among the archive's entries from 1), bounded in
/// count and inflated size. Messages name entries by position: their paths can carry patient names.
/// `zip` names the archive in messages ("the zip", "zip archive #2").
pub fn unzip(
    data: &Bytes,
    limits: &Limits,
    zip: &str,
) -> Result<Vec<(String, Bytes, usize)>, ApiError> {
    let bad = |e: zip::result::ZipError| {
        ApiError::Unprocessable(format!("{zip} is not a readable zip file: {e}"))
    };
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(data.clone())).map_err(bad)?;
    let max_entries = limits.max_images * 2 + 16;
    if archive.len() > max_entries {
        return Err(ApiError::PayloadTooLarge(format!(
            "{zip} has {} entries; at most {max_entries} are accepted",
            archive.len()
        )));
    }
    let budget = limits.max_body_bytes.saturating_mul(4);
    let mut total: u64 = 0;
    let mut files = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(bad)?;
        if entry.is_dir() || entry.name().starts_with("__MACOSX/") {
            continue;
        }
        let position = i + 1;
        // PostgreSQL text cannot hold NUL, and such a path is no file name any system writes.
        if entry.name().contains('\0') {
            return Err(ApiError::Unprocessable(format!(
                "entry #{position} of {zip}: its path contains a NUL character"
            )));
        }
        let name = entry
            .enclosed_name()
            .map(|p| p.to_string_lossy().replace('\\', "/"))
            .ok_or_else(|| {
                ApiError::Unprocessable(format!(
                    "entry #{position} of {zip} has an unsafe path (absolute, or leaving the archive \
                     with ..)"
                ))
            })?;
        // The declared size can lie; reading is bounded by what is left of the budget either way.
        let left = budget - total;
        let mut buf = Vec::with_capacity(entry.size().min(left) as usize);
        (&mut entry)
            .take(left + 1)
            .read_to_end(&mut buf)
            .map_err(|e| {
                ApiError::Unprocessable(format!(
                    "entry #{position} of {zip} cannot be inflated: {e}"
                ))
            })?;
        total += buf.len() as u64;
        if total > budget {
            return Err(ApiError::PayloadTooLarge(format!(
                "{zip} inflates to more than {budget} bytes"
            )));
        }
        files.push((name, Bytes::from(buf), position));
    }
    Ok(files)
}

fn check_count(n: usize, what: &str, limits: &Limits) -> Result<(), ApiError> {
    if n == 0 {
        return Err(ApiError::Unprocessable(format!(
            "{what} holds no image (PNG, JPEG, DICOM or NIfTI)"
        )));
    }
    if n > limits.max_images {
        return Err(ApiError::PayloadTooLarge(format!(
            "{what} holds {n} images; at most {} are accepted per request",
            limits.max_images
        )));
    }
    Ok(())
}

/// Where an uploaded file came from, as messages name it: by position, never by its file name (PACS
/// exports carry patient names in them), e.g. "image part #2" or "file #3 of zip archive #1".
pub type Origin = String;

fn insert_unique(
    map: &mut BTreeMap<String, (Bytes, Origin)>,
    name: String,
    data: Bytes,
    origin: Origin,
    what: &str,
) -> Result<(), ApiError> {
    // DICOM file names are often reused across series (IM0001...) and may carry patient data: key by content.
    let name = if dicom::is_dicom(&data) {
        dicom_name(&data)
    } else {
        name
    };
    if let Some((_, first)) = map.get(&name) {
        if name.starts_with("dicom_") {
            return Err(ApiError::Unprocessable(format!(
                "{what} holds the same DICOM instance twice ({first} and {origin})"
            )));
        }
        return Err(ApiError::Unprocessable(format!(
            "{what}: {first} and {origin} have the same file name (names are file names without extension \
             and must be unique)"
        )));
    }
    map.insert(name, (data, origin));
    Ok(())
}

/// Moves the file parts named `field` into `map`, keyed by file stem (parts without a file name get
/// `image_NNNN` by position).
fn insert_parts(
    upload: &mut Upload,
    field: &str,
    map: &mut BTreeMap<String, (Bytes, Origin)>,
    what: &str,
) -> Result<(), ApiError> {
    for (i, part) in upload.take_all(field).into_iter().enumerate() {
        let origin = format!("{field} part #{}", i + 1);
        let name = match part.file_name.as_deref() {
            Some(file) if file.contains('\0') => {
                return Err(ApiError::Unprocessable(format!(
                    "{origin}: its file name contains a NUL character"
                )))
            }
            Some(file) => stem(file),
            None => format!("image_{i:04}"),
        };
        insert_unique(map, name, part.data, origin, what)?;
    }
    Ok(())
}

/// The image files of the `archive` parts, with their origins.
fn archive_files(
    upload: &mut Upload,
    limits: &Limits,
) -> Result<Vec<(String, Bytes, Origin)>, ApiError> {
    let mut files = Vec::new();
    let archives = upload.take_all("archive");
    let several = archives.len() > 1;
    for (k, part) in archives.into_iter().enumerate() {
        let zip = if several {
            format!("zip archive #{}", k + 1)
        } else {
            "the zip".to_string()
        };
        for (path, data, position) in unzip(&part.data, limits, &zip)? {
            if is_image_entry(&path, &data) {
                files.push((path, data, format!("file #{position} of {zip}")));
            }
        }
    }
    Ok(files)
}

/// Unlabelled files: `image` parts and/or `archive` zips (every image file inside). Sorted by name.
pub fn images(
    upload: &mut Upload,
    limits: &Limits,
    what: &str,
) -> Result<Vec<InputFile>, ApiError> {
    let mut map = BTreeMap::new();
    insert_parts(upload, "image", &mut map, what)?;
    for (path, data, origin) in archive_files(upload, limits)? {
        insert_unique(&mut map, stem(&path), data, origin, what)?;
    }
    check_count(map.len(), what, limits)?;
    Ok(map
        .into_iter()
        .map(|(name, (data, origin))| InputFile { name, data, origin })
        .collect())
}

/// Labelled images: `image` + `label` parts paired by file name, and/or `archive` zips with `images/` and
/// `labels/` folders. Sorted by name.
pub fn labelled(
    upload: &mut Upload,
    limits: &Limits,
    what: &str,
) -> Result<Vec<InputPair>, ApiError> {
    let mut images = BTreeMap::new();
    let mut labels = BTreeMap::new();
    insert_parts(upload, "image", &mut images, what)?;
    insert_parts(upload, "label", &mut labels, what)?;
    for (path, data, origin) in archive_files(upload, limits)? {
        let folder = path.rsplit('/').nth(1).unwrap_or_default();
        match folder {
            "images" => insert_unique(&mut images, stem(&path), data, origin, what)?,
            "labels" => insert_unique(&mut labels, stem(&path), data, origin, what)?,
            _ => {}
        }
    }
    check_count(images.len(), what, limits)?;
    let mut set = Vec::with_capacity(images.len());
    for (name, (image, origin)) in images {
        let (label, label_origin) = labels.remove(&name).ok_or_else(|| {
            ApiError::Unprocessable(format!(
                "{what}: {origin} has no label (labels pair with images by file name; a zip \
                 needs them under labels/)"
            ))
        })?;
        set.push(InputPair {
            name,
            image,
            label,
            origin: format!("{origin} (label: {label_origin})"),
        });
    }
    if let Some((_, origin)) = labels.values().next() {
        return Err(ApiError::Unprocessable(format!(
            "{what}: {origin} is a label without an image (labels pair with images by file name)"
        )));
    }
    Ok(set)
}
