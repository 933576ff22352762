//! The whole flow on the shared JSRT heart model family (../shared): calibrate with the 16 checkpoints on
//! train (reference) and test (calibration), then estimate the last checkpoint on the test images; the
//! estimate must be within 0.03 of its real Dice. Skipped (with a note) when ../shared is absent, except
//! in CI (CI=true), where that is a failure.

use crate::common::*;
use reqwest::multipart::Form;
use reqwest::StatusCode;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

fn shared() -> Option<PathBuf> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared"));
    if dir.join("models/jsrt-heart-unet").is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{} is missing and CI=true: the shared JSRT service test must run in CI",
            dir.display()
        );
    }
    eprintln!(
        "note: {} is missing; skipping the JSRT service test",
        dir.display()
    );
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsrt_estimate_of_last_checkpoint_is_within_003_of_real_dice() {
    let Some(shared) = shared() else { return };
    let models = shared.join("models/jsrt-heart-unet");
    let data = shared.join("datasets/jsrt");
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(models.join("reference_metrics.json")).unwrap(),
    )
    .unwrap();
    let real = reference["epochs"]["60"]["test"]["mean"]["dice"]
        .as_f64()
        .unwrap();
    let spec = std::fs::read_to_string(repo().join("tests/fixtures/jsrt_spec.json")).unwrap();

    let app = TestApp::with(ServeArgs {
        max_images: 512,
        max_body_mb: 128,
        ..test_args()
    })
    .await;
    let form = Form::new()
        .text("name", "jsrt-heart-unet")
        .text("spec", spec)
        .part("onnx", file_part(&models.join("epoch_060.onnx")));
    let r = app.post_form("/v1/models", &app.admin, form).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let model: Value = r.json().await.unwrap();
    let id = model["id"].as_str().unwrap();
    let r = app
        .client
        .put(app.at(&format!("/v1/models/{id}/reference-set")))
        .bearer_auth(&app.admin)
        .multipart(labelled_form(Form::new(), &data.join("train")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Default protocol (S=64, R=6, label fusion), like `spe calibrate`.
    let mut form = Form::new();
    for f in sorted_files(&models)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
    {
        form = form.part("checkpoint", file_part(f));
    }
    let form = labelled_form(form, &data.join("test"));
    let started = std::time::Instant::now();
    let r = app
        .post_form(&format!("/v1/models/{id}/calibrations"), &app.admin, form)
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let cal = app
        .wait(
            r.headers()["location"].to_str().unwrap(),
            Duration::from_secs(600),
        )
        .await;
    assert_eq!(cal["status"], "succeeded", "{cal}");
    let dice_fit = &cal["result"]["fits"]["dice"];
    eprintln!(
        "JSRT calibration in {:.1}s: dice {} fit, LOO MAE {:.4}, r {:.4}; excluded {}",
        started.elapsed().as_secs_f64(),
        dice_fit["mapping"],
        dice_fit["loo_mae"].as_f64().unwrap(),
        dice_fit["pearson_r"].as_f64().unwrap(),
        cal["result"]["excluded"]
    );

    let r = app
        .post_form(
            &format!("/v1/models/{id}/estimates"),
            &app.submitter,
            images_form(&data.join("test/images")),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let est = app
        .wait(
            r.headers()["location"].to_str().unwrap(),
            Duration::from_secs(300),
        )
        .await;
    assert_eq!(est["status"], "succeeded", "{est}");
    let estimate = est["result"]["metrics"]["dice"]["estimate"]
        .as_f64()
        .unwrap();
    eprintln!(
        "JSRT epoch 60 on test: estimated dice {estimate:.4}, real {real:.4}; timings {}",
        est["timings"]
    );
    assert!(
        (estimate - real).abs() <= 0.03,
        "estimate {estimate:.4} vs real dice {real:.4}"
    );
    app.stop().await;
}
