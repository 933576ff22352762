//! Alert thresholds: rules stored per model, alerts carried by each estimate as the rules stood when it
//! was computed, and the Prometheus gauges an alerting system reads.

use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn put(app: &TestApp, id: &str, body: &Value) -> reqwest::Response {
    send(
        app.request(
            Method::PUT,
            &format!("/v1/models/{id}/thresholds"),
            &app.admin,
        )
        .json(body),
    )
    .await
}

async fn scrape(app: &TestApp) -> String {
    send(app.client.get(app.at("/metrics")))
        .await
        .text()
        .await
        .unwrap()
}

/// The value of the first sample of `name` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_raise_alerts_on_later_estimates_and_in_prometheus() {
    let app = TestApp::start().await;
    let (id, _) = calibrated_model(&app, "monitored").await;
    let path = format!("/v1/models/{id}/thresholds");
    assert_eq!(app.get_json(&path, &app.reader).await, json!({}));

    // Before any threshold, an estimate raises nothing.
    let quiet = estimate_ok(&app, &id, images_form(&synthetic().join("batch"))).await;
    assert_eq!(quiet["result"]["alerts"], json!([]), "{quiet}");

    // A minimum no real model reaches: the next estimate is an alert.
    let rules = json!({"dice": {"min": 0.99}, "hd95": {"max": 1000.0}});
    let r = put(&app, &id, &rules).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.get_json(&path, &app.reader).await, rules);
    let est = estimate_ok(&app, &id, images_form(&synthetic().join("batch"))).await;
    let alerts = est["result"]["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "hd95 stays far below its maximum: {est}");
    let alert = &alerts[0];
    assert_eq!(
        (&alert["metric"], &alert["rule"], &alert["severity"]),
        (&json!("dice"), &json!("min"), &json!("alert"))
    );
    assert_eq!(alert["threshold"], 0.99);
    assert_eq!(
        alert["estimate"],
        est["result"]["metrics"]["dice"]["estimate"]
    );
    assert_eq!(
        alert["interval"],
        est["result"]["metrics"]["dice"]["interval"]
    );

    let text = scrape(&app).await;
    let model = "model=\"monitored\"";
    assert_eq!(
        sample(&text, "spe_alert_active", &[model, "metric=\"dice\""]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "spe_alert_active", &[model, "metric=\"hd95\""]),
        Some(0.0)
    );
    let dice = est["result"]["metrics"]["dice"].clone();
    for (bound, want) in [
        ("estimate", &dice["estimate"]),
        ("lower", &dice["interval"][0]),
        ("upper", &dice["interval"][1]),
    ] {
        let got = sample(
            &text,
            "spe_estimate",
            &[model, "metric=\"dice\"", &format!("bound=\"{bound}\"")],
        )
        .unwrap_or_else(|| panic!("no spe_estimate {bound}: {text}"));
        assert!((got - want.as_f64().unwrap()).abs() < 1e-9, "{bound}");
    }

    // Removing the thresholds never rewrites a stored estimate's alerts; the next estimate has none and
    // the model's alert state (its latest estimate's) clears.
    assert_eq!(put(&app, &id, &json!({})).await.status(), StatusCode::OK);
    let stored = app
        .get_json(
            &format!("/v1/estimates/{}", est["id"].as_str().unwrap()),
            &app.reader,
        )
        .await;
    assert_eq!(stored["result"]["alerts"], est["result"]["alerts"]);
    let after = estimate_ok(&app, &id, images_form(&synthetic().join("batch"))).await;
    assert_eq!(after["result"]["alerts"], json!([]));
    let text = scrape(&app).await;
    assert_eq!(
        sample(&text, "spe_alert_active", &[model, "metric=\"dice\""]),
        Some(0.0),
        "{text}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_and_malformed_thresholds_are_refused_with_reasons() {
    let app = TestApp::start().await;
    // No active calibration yet: nothing to be relative to.
    let model = model_with_reference(&app, "uncalibrated").await;
    let id = model["id"].as_str().unwrap();
    let relative = json!({"dice": {"below_calibration": 0.05}});
    let problem = expect_problem(
        put(&app, id, &relative).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("no active calibration"), "{detail}");
    assert!(
        detail.contains("min/max"),
        "says what to do instead: {detail}"
    );
    for (body, says) in [
        (json!({"dise": {"min": 0.8}}), "dise"),
        (json!({"dice": {"minimum": 0.8}}), "minimum"),
        (json!({"dice": {}}), "at least one of"),
        (json!({"dice": {"min": 1.5}}), "dice.min"),
        (json!({"dice": {"min": 0.9, "max": 0.8}}), "above"),
    ] {
        let problem =
            expect_problem(put(&app, id, &body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(says), "{body}: {problem}");
    }
    // Nothing refused was stored.
    let path = format!("/v1/models/{id}/thresholds");
    assert_eq!(app.get_json(&path, &app.reader).await, json!({}));

    // With the model among the active calibration's checkpoints, the relative rule resolves.
    let (calibrated, _) = calibrated_model(&app, "anchored").await;
    assert_eq!(
        put(&app, &calibrated, &relative).await.status(),
        StatusCode::OK
    );
    let unknown = "00000000-0000-0000-0000-000000000000";
    expect_problem(put(&app, unknown, &relative).await, StatusCode::NOT_FOUND).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_estimates_but_never_a_models_latest() {
    let app = TestApp::configured(|a| {
        a.estimate_retention_days = 30;
        a.blob_sweep_interval_secs = 1;
    })
    .await;
    let (id, _) = calibrated_model(&app, "retained").await;
    let old = estimate_ok(&app, &id, images_form(&synthetic().join("batch"))).await;
    let latest = estimate_ok(&app, &id, images_form(&synthetic().join("batch"))).await;
    // Both finished 100 days ago; the latest one stays as the model's alert state.
    for est in [&old, &latest] {
        sqlx::query(
            "UPDATE jobs SET finished_at = now() - interval '100 days' WHERE id = $1::uuid",
        )
        .bind(est["id"].as_str().unwrap())
        .execute(&app.pool)
        .await
        .unwrap();
    }
    let old_path = format!("/v1/estimates/{}", old["id"].as_str().unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while app.get(&old_path, &app.reader).await.status() != StatusCode::NOT_FOUND {
        assert!(
            std::time::Instant::now() < deadline,
            "the old estimate was not deleted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let latest_path = format!("/v1/estimates/{}", latest["id"].as_str().unwrap());
    assert_eq!(
        app.get(&latest_path, &app.reader).await.status(),
        StatusCode::OK
    );
    let batch_sets: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM image_sets s WHERE s.id = (SELECT batch_set_id FROM estimates WHERE id = $1::uuid)",
    )
    .bind(latest["id"].as_str().unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(batch_sets, 1);
    let orphaned: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs j WHERE j.kind = 'estimate' AND NOT EXISTS (SELECT 1 FROM estimates e WHERE e.id = j.id)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(orphaned, 0, "the deleted estimate's job went with it");
    app.stop().await;
}
