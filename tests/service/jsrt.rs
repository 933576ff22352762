//! The whole flow on the shared JSRT heart model family (../shared): calibrate with the 16 checkpoints on
//! train (reference) and test (calibration), then estimate the last checkpoint on the test images; the
//! estimate must be within 0.03 of its real Dice. Skipped (with a note) when ../shared is absent, except
//! in CI (CI=true), where that is a failure.

use crate::common::*;
use crate::shared_data::shared;
use serde_json::Value;
use std::time::Duration;

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

    let app = TestApp::configured(|a| (a.max_images, a.max_body_mb) = (512, 128)).await;
    let form = model_form("jsrt-heart-unet", &spec, &models.join("epoch_060.onnx"));
    let model = register_model(&app, form).await;
    let id = model["id"].as_str().unwrap();
    put_reference_set(&app, id, &data.join("train")).await;

    // Default protocol (S=64, R=6, label fusion), like `spe calibrate`.
    let checkpoints: Vec<_> = sorted_files(&models)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    let started = std::time::Instant::now();
    let location = queue_calibration(&app, id, None, &checkpoints, &data.join("test")).await;
    let cal = wait_succeeded(&app, &location, Duration::from_secs(600)).await;
    let dice_fit = &cal["result"]["fits"]["dice"];
    eprintln!(
        "JSRT calibration in {:.1}s: dice {} fit, LOO MAE {:.4}, r {:.4}; excluded {}",
        started.elapsed().as_secs_f64(),
        dice_fit["mapping"],
        dice_fit["loo_mae"].as_f64().unwrap(),
        dice_fit["pearson_r"].as_f64().unwrap(),
        cal["result"]["excluded"]
    );

    let form = images_form(&data.join("test/images"));
    let r = app
        .post_form(&format!("/v1/models/{id}/estimates"), &app.submitter, form)
        .await;
    let est = wait_succeeded(&app, &accepted_location(&r), Duration::from_secs(300)).await;
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
