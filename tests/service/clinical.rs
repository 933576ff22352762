//! Clinical inputs over HTTP: NIfTI volumes and DICOM instances (form uploads and STOW-RS) give the same
//! estimates as the same pixels sent as PNG; batch pixels are dropped once the estimate is finished while
//! their digests stay; patient attributes go nowhere.

use crate::common::*;
use reqwest::multipart::{Form, Part};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};
use spe::ingest::dicom::testdata as dcm;
use spe::ingest::nifti::testdata::nifti_u8;
use std::path::Path;
use std::time::Duration;

const SIDE: usize = 128;

/// The 8-bit gray pixels of the PNGs in a folder (all SIDE x SIDE), in name order.
fn gray_pngs(dir: &Path) -> Vec<Vec<u8>> {
    sorted_files(dir)
        .iter()
        .map(|p| {
            let img = image::open(p).unwrap().to_luma8();
            assert_eq!(img.dimensions(), (SIDE as u32, SIDE as u32));
            img.into_raw()
        })
        .collect()
}

/// Slices (row-major SIDE x SIDE) stacked into a NIfTI u8 volume along the last axis: voxel (i, j, k) =
/// slice k at row j, column i.
fn volume(slices: &[Vec<u8>], pixdim: [f32; 3]) -> Vec<u8> {
    let data: Vec<u8> = slices.iter().flatten().copied().collect();
    nifti_u8([SIDE, SIDE, slices.len()], &data, pixdim, true)
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn bytes_part(bytes: Vec<u8>, name: &str) -> Part {
    Part::bytes(bytes).file_name(name.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clinical_nifti_volumes_match_png_and_report_hd95_in_mm() {
    let app = TestApp::start().await;
    let (id, _) = calibrated_model(&app, "nifti").await;
    let png = estimate_ok(&app, &id, images_form(&synthetic().join("batch"))).await;
    assert!(png["result"]["hd95_mm"].is_null(), "PNGs carry no spacing");
    let blobs_before = settled_footprint(&app).await.1;

    // The same pixels as one gzipped volume, with 0.5 mm columns and 0.8 mm rows.
    let nii = volume(&gray_pngs(&synthetic().join("batch")), [0.5, 0.8, 2.0]);
    let form = Form::new().part("image", bytes_part(nii.clone(), "batch.nii.gz"));
    let est = estimate_ok(&app, &id, form).await;
    assert_eq!(est["images"], 12);
    assert_eq!(est["result"]["metrics"], png["result"]["metrics"]);
    let pixel_mm = (0.5f64 * 0.8).sqrt();
    let hd = &est["result"]["hd95_mm"];
    assert!(
        (hd["pixel_mm"].as_f64().unwrap() - pixel_mm).abs() < 1e-6,
        "{hd}"
    );
    let hd95_px = est["result"]["metrics"]["hd95"]["estimate"]
        .as_f64()
        .unwrap();
    assert!((hd["estimate"].as_f64().unwrap() - hd95_px * pixel_mm).abs() < 1e-6);
    assert_eq!(
        est["inputs"],
        serde_json::json!([{"sha256": sha256(&nii), "format": "nifti", "images": 12}])
    );
    // The slices were stored for the job and dropped after it; the digests stay.
    assert_eq!(est["pixels_retained"], false);
    assert_eq!(settled_footprint(&app).await.1, blobs_before);

    // Slicing along another axis is a form field; out of range is a clear 422.
    let form = Form::new()
        .text("axis", "7")
        .part("image", bytes_part(nii.clone(), "batch.nii.gz"));
    let r = app
        .post_form(&format!("/v1/models/{id}/estimates"), &app.submitter, form)
        .await;
    let p = expect_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(p["detail"].as_str().unwrap().contains("axis"), "{p}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clinical_nifti_reference_volume_keeps_labelled_slices() {
    let app = TestApp::start().await;
    let id = &reference_model_id(&app, "nifti-ref").await;
    let dir = synthetic().join("reference");
    let mut images = gray_pngs(&dir.join("images"));
    let mut labels = gray_pngs(&dir.join("labels"));
    let expected = labels
        .iter()
        .filter(|l| l.iter().filter(|&&v| v > 127).count() >= 20)
        .count();
    // Two slices without any label: left out of the reference set.
    images.push(vec![90; SIDE * SIDE]);
    labels.push(vec![0; SIDE * SIDE]);
    images.insert(0, vec![10; SIDE * SIDE]);
    labels.insert(0, vec![0; SIDE * SIDE]);
    let labels01: Vec<Vec<u8>> = labels
        .iter()
        .map(|l| l.iter().map(|&v| u8::from(v > 127)).collect())
        .collect();
    let path = reference_set(id);
    let put = |form: Form| app.put_form(&path, &app.admin, form);
    let form = Form::new()
        .part("image", bytes_part(volume(&images, [1.0; 3]), "ref.nii.gz"))
        .part(
            "label",
            bytes_part(volume(&labels01, [1.0; 3]), "ref.nii.gz"),
        );
    let r = put(form).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let set: Value = r.json().await.unwrap();
    assert_eq!(set["images"], expected, "{set}");

    // A label volume of another shape, or a PNG label for a volume, is refused and changes nothing.
    let before = app.footprint().await;
    let form = Form::new()
        .part("image", bytes_part(volume(&images, [1.0; 3]), "ref.nii.gz"))
        .part(
            "label",
            bytes_part(volume(&labels01[1..], [1.0; 3]), "ref.nii.gz"),
        );
    let p = expect_problem(put(form).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(p["detail"].as_str().unwrap().contains("slices"), "{p}");
    let label_png = std::fs::read(sorted_files(&dir.join("labels"))[0].clone()).unwrap();
    let form = Form::new()
        .part("image", bytes_part(volume(&images, [1.0; 3]), "ref.nii.gz"))
        .part("label", bytes_part(label_png, "ref.png"));
    expect_problem(put(form).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(app.footprint().await, before);
    app.stop().await;
}

const SECRET: &str = "SECRET^PATIENT";

fn uid(i: usize) -> String {
    format!("1.2.826.0.1.3680043.10.543.{i}")
}

/// The batch PNGs as single-frame DICOM instances (explicit VR LE) with a patient name and 0.6 mm pixels.
fn batch_instances() -> Vec<Vec<u8>> {
    batch_instances_from(0)
}

/// The batch as instances whose UIDs start at `first`.
fn batch_instances_from(first: usize) -> Vec<Vec<u8>> {
    gray_pngs(&synthetic().join("batch"))
        .iter()
        .enumerate()
        .map(|(i, px)| {
            dcm::gray8_patient_instance(
                SIDE,
                SIDE,
                px,
                1,
                &uid(first + i),
                dcm::EXPLICIT_VR_LE,
                Some(SECRET),
                Some([0.6, 0.6]),
            )
        })
        .collect()
}

/// An instance whose pixel data is JPEG-LS, which this service does not decode.
fn jpeg_ls_instance() -> Vec<u8> {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let us = |tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
    let mut obj = dicom_object::InMemDicomObject::from_element_iter([
        DataElement::new(tags::SOP_CLASS_UID, VR::UI, dcm::SECONDARY_CAPTURE),
        DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, uid(99).as_str()),
        us(tags::SAMPLES_PER_PIXEL, 1),
        DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        us(tags::ROWS, 4),
        us(tags::COLUMNS, 4),
        us(tags::BITS_ALLOCATED, 8),
        us(tags::BITS_STORED, 8),
        us(tags::HIGH_BIT, 7),
        us(tags::PIXEL_REPRESENTATION, 0),
    ]);
    obj.put(dcm::encapsulated(vec![vec![0xFF, 0xD8, 0xFF, 0xD9]]));
    dcm::write_file(obj, "1.2.840.10008.1.2.4.80")
}

const BOUNDARY: &str = "spe-test-boundary";

fn related_body(parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (ct, data) in parts {
        out.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Type: {ct}\r\n\r\n").as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

/// A STOW-RS request of `content_type` to the model's studies.
fn stow_request(app: &TestApp, id: &str, content_type: &str) -> RequestBuilder {
    let studies = format!("/v1/models/{id}/studies");
    let request = app.request(Method::POST, &studies, &app.submitter);
    request.header("content-type", content_type)
}

async fn stow(app: &TestApp, id: &str, content_type: &str, body: Vec<u8>) -> reqwest::Response {
    send(stow_request(app, id, content_type).body(body)).await
}

async fn stow_with_key(app: &TestApp, id: &str, key: &str, body: Vec<u8>) -> reqwest::Response {
    let request = stow_request(app, id, &related_type()).header("idempotency-key", key);
    send(request.body(body)).await
}

fn related_type() -> String {
    format!("multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}")
}

/// Every UI value of a STOW-RS sequence's items under `tag`.
fn sequence_uids(v: &Value, seq: &str, tag: &str) -> Vec<String> {
    v[seq]["Value"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i[tag]["Value"][0].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Every file under `dir` (the blob store) and the text of every table row that could hold a name.
async fn assert_no_secret(app: &TestApp) {
    let leaks: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM image_set_items WHERE name LIKE '%SECRET%' OR source_format LIKE '%SECRET%')
              + (SELECT count(*) FROM jobs WHERE coalesce(error, '') LIKE '%SECRET%')
              + (SELECT count(*) FROM estimates WHERE coalesce(result::text, '') LIKE '%SECRET%')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(leaks, 0, "a patient attribute reached the database");
    let mut stack = vec![app.blob_dir.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                assert!(
                    !bytes.windows(6).any(|w| w == b"SECRET"),
                    "{} holds a patient attribute",
                    path.display()
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clinical_dicom_uploads_and_stow_match_png_without_patient_data() {
    let app = TestApp::start().await;
    let (id, _) = calibrated_model(&app, "dicom").await;
    let png = estimate_ok(&app, &id, images_form(&synthetic().join("batch"))).await;
    let instances = batch_instances();

    // A PACS-style zip: extensionless files that share a name across series folders.
    let entries: Vec<(String, Vec<u8>)> = instances
        .iter()
        .enumerate()
        .map(|(i, d)| (format!("series{i}/IM0001"), d.clone()))
        .collect();
    let form = Form::new().part("archive", bytes_part(zip_of(&entries), "study.zip"));
    let est = estimate_ok(&app, &id, form).await;
    assert_eq!(est["images"], 12);
    assert_eq!(est["result"]["metrics"], png["result"]["metrics"]);
    assert!((est["result"]["hd95_mm"]["pixel_mm"].as_f64().unwrap() - 0.6).abs() < 1e-9);
    assert_eq!(each_str(&est["inputs"], "format"), vec!["dicom"; 12]);

    // One multi-frame instance holding the same 12 images.
    let all: Vec<u8> = gray_pngs(&synthetic().join("batch")).concat();
    let multi = dcm::gray8_instance(SIDE, SIDE, &all, 12, &uid(50), dcm::RLE_LOSSLESS);
    let est = estimate_ok(
        &app,
        &id,
        Form::new().part("image", bytes_part(multi, "multi.dcm")),
    )
    .await;
    assert_eq!(est["result"]["metrics"], png["result"]["metrics"]);

    // STOW-RS: the 12 instances, a repeat, a truncated one and a part that is not DICOM.
    let truncated = &instances[0][..instances[0].len() / 2];
    let mut parts: Vec<(&str, &[u8])> = instances
        .iter()
        .map(|d| ("application/dicom", d.as_slice()))
        .collect();
    parts.push(("application/dicom", &instances[3]));
    parts.push(("application/dicom", truncated));
    parts.push(("text/plain", b"hello"));
    let r = stow(&app, &id, &related_type(), related_body(&parts)).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.headers()["content-type"], "application/dicom+json");
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let text = r.text().await.unwrap();
    assert!(!text.contains("SECRET"), "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["00081190"]["Value"][0], location.as_str());
    let accepted = sequence_uids(&answer, "00081199", "00081155");
    assert_eq!(accepted, (0..12).map(uid).collect::<Vec<_>>());
    let codes: Vec<u64> = answer["00081198"]["Value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["00081197"]["Value"][0].as_u64().unwrap())
        .collect();
    assert_eq!(codes, vec![0x0111, 0xC000, 0xC000], "{answer}");
    let est = wait_succeeded(&app, &location, Duration::from_secs(120)).await;
    assert_eq!(est["result"]["metrics"], png["result"]["metrics"]);

    // The same instances again (a PACS resending the study): none is stored twice, so 409 (PS3.18),
    // naming the estimate they went into; no new estimate.
    let estimates_before = app
        .get_json(&format!("/v1/models/{id}/estimates"), &app.reader)
        .await;
    let r = stow(&app, &id, &related_type(), related_body(&parts)).await;
    let p = expect_problem(r, StatusCode::CONFLICT).await;
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains("already received for this model"), "{p}");
    assert!(detail.contains(&location), "{p}");
    // Partly new: the new instances are stored (202), the old ones fail as duplicates.
    let fresh = batch_instances_from(100);
    let mixed: Vec<(&str, &[u8])> = vec![
        ("application/dicom", instances[0].as_slice()),
        ("application/dicom", fresh[0].as_slice()),
    ];
    let r = stow(&app, &id, &related_type(), related_body(&mixed)).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(
        sequence_uids(&answer, "00081199", "00081155"),
        vec![uid(100)]
    );
    assert_eq!(sequence_uids(&answer, "00081198", "00081155"), vec![uid(0)]);
    let estimates_after = app
        .get_json(&format!("/v1/models/{id}/estimates"), &app.reader)
        .await;
    assert_eq!(
        estimates_after["items"].as_array().unwrap().len(),
        estimates_before["items"].as_array().unwrap().len() + 1
    );

    // Every instance stored: 200. A replay under an Idempotency-Key gets the first answer verbatim.
    let clean: Vec<(&str, &[u8])> = fresh[1..]
        .iter()
        .map(|d| ("application/dicom", d.as_slice()))
        .collect();
    let first = stow_with_key(&app, &id, "study-1.2.3", related_body(&clean)).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first_location = first.headers()["location"].to_str().unwrap().to_string();
    let first_text = first.text().await.unwrap();
    assert!(!first_text.contains("00081198"), "{first_text}");
    let again = stow_with_key(&app, &id, "study-1.2.3", related_body(&clean)).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers()["location"], first_location.as_str());
    assert_eq!(again.headers()["content-type"], "application/dicom+json");
    assert_eq!(again.text().await.unwrap(), first_text);

    // The keyed study's job deletes its pixels when it finishes: let it, so the footprint below is still.
    app.wait(&first_location, Duration::from_secs(120)).await;
    // Nothing stored: 409, naming each part's problem (the transfer syntax, the truncation).
    let before = settled_footprint(&app).await;
    let jls = jpeg_ls_instance();
    let r = stow(
        &app,
        &id,
        &related_type(),
        related_body(&[("application/dicom", &jls)]),
    )
    .await;
    let p = expect_problem(r, StatusCode::CONFLICT).await;
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("1.2.840.10008.1.2.4.80"),
        "{p}"
    );
    let r = stow(
        &app,
        &id,
        &related_type(),
        related_body(&[("application/dicom", truncated)]),
    )
    .await;
    expect_problem(r, StatusCode::CONFLICT).await;
    let form_type = format!("multipart/form-data; boundary={BOUNDARY}");
    let r = stow(
        &app,
        &id,
        &form_type,
        related_body(&[("application/dicom", &instances[0])]),
    )
    .await;
    expect_problem(r, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    let r = stow(
        &app,
        &id,
        "multipart/related; type=\"application/dicom\"",
        Vec::new(),
    )
    .await;
    expect_problem(r, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    // The same through the form endpoint: 415 naming the transfer syntax.
    let form = Form::new().part("image", bytes_part(jls, "x.dcm"));
    let r = app
        .post_form(&format!("/v1/models/{id}/estimates"), &app.submitter, form)
        .await;
    expect_problem(r, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert_eq!(app.footprint().await, before);
    assert_no_secret(&app).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clinical_batch_pixels_are_kept_when_configured() {
    let app = TestApp::configured(|a| a.retain_batch_pixels = true).await;
    let (id, _) = calibrated_model(&app, "retain").await;
    let before = settled_footprint(&app).await.1;
    let est = estimate_ok(&app, &id, images_form(&synthetic().join("batch"))).await;
    assert_eq!(est["pixels_retained"], true);
    assert_eq!(settled_footprint(&app).await.1, before + 12);
    app.stop().await;
}
