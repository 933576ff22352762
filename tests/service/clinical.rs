//! Clinical inputs over HTTP: NIfTI volumes and DICOM instances (form uploads and STOW-RS) give the same
//! estimates as the same pixels sent as PNG; batch pixels are dropped once the estimate is finished while
//! their digests stay; patient attributes go nowhere.

use crate::common::*;
use reqwest::multipart::{Form, Part};
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
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

async fn estimate(app: &TestApp, id: &str, form: Form) -> Value {
    let r = app
        .post_form(&format!("/v1/models/{id}/estimates"), &app.submitter, form)
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", r.text().await.unwrap());
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let est = app.wait(&location, Duration::from_secs(120)).await;
    assert_eq!(est["status"], "succeeded", "{est}");
    est
}

fn bytes_part(bytes: Vec<u8>, name: &str) -> Part {
    Part::bytes(bytes).file_name(name.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clinical_nifti_volumes_match_png_and_report_hd95_in_mm() {
    let app = TestApp::start().await;
    let (id, _) = calibrated_model(&app, "nifti").await;
    let png = estimate(&app, &id, images_form(&synthetic().join("batch"))).await;
    assert!(png["result"]["hd95_mm"].is_null(), "PNGs carry no spacing");
    let blobs_before = app.footprint().await.1;

    // The same pixels as one gzipped volume, with 0.5 mm columns and 0.8 mm rows.
    let nii = volume(&gray_pngs(&synthetic().join("batch")), [0.5, 0.8, 2.0]);
    let form = Form::new().part("image", bytes_part(nii.clone(), "batch.nii.gz"));
    let est = estimate(&app, &id, form).await;
    assert_eq!(est["images"], 12);
    assert_eq!(est["result"]["metrics"], png["result"]["metrics"]);
    let pixel_mm = (0.5f64 * 0.8).sqrt();
    let hd = &est["result"]["hd95_mm"];
    assert!((hd["pixel_mm"].as_f64().unwrap() - pixel_mm).abs() < 1e-6, "{hd}");
    let hd95_px = est["result"]["metrics"]["hd95"]["estimate"].as_f64().unwrap();
    assert!((hd["estimate"].as_f64().unwrap() - hd95_px * pixel_mm).abs() < 1e-6);
    assert_eq!(
        est["inputs"],
        serde_json::json!([{"sha256": sha256(&nii), "format": "nifti", "images": 12}])
    );
    // The slices were stored for the job and dropped after it; the digests stay.
    assert_eq!(est["pixels_retained"], false);
    assert_eq!(app.footprint().await.1, blobs_before);

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
    let model = model_with_reference(&app, "nifti-ref").await;
    let id = model["id"].as_str().unwrap();
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
    let put = |form: Form| {
        app.client
            .put(app.at(&format!("/v1/models/{id}/reference-set")))
            .bearer_auth(&app.admin)
            .multipart(form)
            .send()
    };
    let form = Form::new()
        .part("image", bytes_part(volume(&images, [1.0; 3]), "ref.nii.gz"))
        .part("label", bytes_part(volume(&labels01, [1.0; 3]), "ref.nii.gz"));
    let r = put(form).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let set: Value = r.json().await.unwrap();
    assert_eq!(set["images"], expected, "{set}");

    // A label volume of another shape, or a PNG label for a volume, is refused and changes nothing.
    let before = app.footprint().await;
    let form = Form::new()
        .part("image", bytes_part(volume(&images, [1.0; 3]), "ref.nii.gz"))
        .part("label", bytes_part(volume(&labels01[1..], [1.0; 3]), "ref.nii.gz"));
    let p = expect_problem(put(form).await.unwrap(), StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(p["detail"].as_str().unwrap().contains("slices"), "{p}");
    let label_png = std::fs::read(sorted_files(&dir.join("labels"))[0].clone()).unwrap();
    let form = Form::new()
        .part("image", bytes_part(volume(&images, [1.0; 3]), "ref.nii.gz"))
        .part("label", bytes_part(label_png, "ref.png"));
    expect_problem(put(form).await.unwrap(), StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(app.footprint().await, before);
    app.stop().await;
}
