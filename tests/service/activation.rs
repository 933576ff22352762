//! Which calibration is active: the latest request wins. A queued calibration's `activate` counts as
//! requested when it was submitted, so one that finishes after an admin's manual activation does not
//! replace that choice; one submitted after it does.

use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;

fn pairs(activate: bool) -> Value {
    let m = |d: f64| serde_json::json!({"dice": d, "jaccard": d * 0.9, "precision": d, "recall": d, "hd95": 30.0 * (1.0 - d), "pearson": d});
    let points: Vec<Value> = (0..4)
        .map(|i| {
            let d = 0.3 + 0.15 * i as f64;
            serde_json::json!({"name": format!("p{i}"), "pseudo": m(d - 0.1), "real": m(d)})
        })
        .collect();
    serde_json::json!({"points": points, "params": {"support_size": 8, "repetitions": 2}, "activate": activate})
}

fn calibrations(model: &str) -> String {
    format!("/v1/models/{model}/calibrations")
}

async fn post_pairs(app: &TestApp, model: &str, activate: bool) -> String {
    let body = pairs(activate);
    let r = app.post_json(&calibrations(model), &app.admin, &body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().to_string()
}

async fn active(app: &TestApp, model: &str) -> String {
    let m = app
        .get_json(&format!("/v1/models/{model}"), &app.reader)
        .await;
    m["active_calibration_id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_latest_request_wins() {
    // No workers at first, so the checkpoint calibration waits in the queue.
    let app = TestApp::configured(|a| a.workers = 0).await;
    let model = reference_model_id(&app, "activation").await;
    let first = post_pairs(&app, &model, true).await;
    assert_eq!(active(&app, &model).await, first);
    // Submitted with the default activate=true.
    let queued = queue_synthetic_calibration(&app, &model, FAST).await;
    let waiting = app.get_json(&queued, &app.reader).await;
    assert_eq!(waiting["status"], "queued", "{waiting}");
    assert!(
        waiting["finished_at"].is_null(),
        "a queued calibration has finished_at: {waiting}"
    );
    // The admin chooses another calibration while that one waits.
    let chosen = post_pairs(&app, &model, false).await;
    let activate = format!("/v1/calibrations/{chosen}/activate");
    let r = app.send_empty(Method::POST, &activate, &app.admin).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(active(&app, &model).await, chosen);

    let (stop, rx) = tokio::sync::watch::channel(false);
    let worker_args = serve_args(
        &app.database_url,
        app.blob_dir.path(),
        ServeArgs {
            role: spe::service::Role::Worker,
            ..test_args()
        },
    );
    let worker = tokio::spawn(spe::service::run(worker_args, None, rx));
    let done = wait_succeeded(&app, &queued, Duration::from_secs(300)).await;
    assert_eq!(done["active"], false, "{done}");
    assert_eq!(
        active(&app, &model).await,
        chosen,
        "a calibration submitted before the manual choice replaced it"
    );

    // A calibration submitted after the choice is the newer request: it becomes active.
    let newer = queue_synthetic_calibration(&app, &model, FAST).await;
    let newer = wait_succeeded(&app, &newer, Duration::from_secs(300)).await;
    assert_eq!(active(&app, &model).await, newer["id"].as_str().unwrap());
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), worker).await;
    app.stop().await;
}

/// Pairs whose fit overflows (infinities, which JSON stores as null) are refused before anything is
/// stored; stored, they made the calibration, the model's calibration list and its estimates unreadable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_refuses_pairs_whose_fit_is_not_finite() {
    let app = TestApp::start().await;
    let id = &reference_model_id(&app, "overflow").await;
    let m = |d: f64| serde_json::json!({"dice": d, "jaccard": d, "precision": d, "recall": d, "hd95": d, "pearson": d});
    let points: Vec<Value> = [8.6e245, -2.5e16, 1e-5]
        .iter()
        .enumerate()
        .map(|(i, &d)| serde_json::json!({"name": format!("p{i}"), "pseudo": m(d), "real": m(-d)}))
        .collect();
    let body = serde_json::json!({"points": points, "activate": true});
    let r = app.post_json(&calibrations(id), &app.admin, &body).await;
    let problem = expect_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("not finite"),
        "{problem}"
    );
    let r = app.get(&calibrations(id), &app.reader).await;
    assert_eq!(r.status(), StatusCode::OK);
    let list: Value = r.json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
}
