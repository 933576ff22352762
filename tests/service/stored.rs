//! Stored results are read through one typed schema: a document that does not decode is a logged
//! internal error (a 500 problem), never served as `result: null` or as default parameters. Documents
//! written before the schema had a version still decode.

use crate::common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Overwrites one JSON column of a row, as a bug or a hand edit could.
async fn put(app: &TestApp, table: &str, column: &str, id: &str, doc: &Value) {
    sqlx::query(&format!(
        "UPDATE {table} SET {column} = $2 WHERE id = $1::uuid"
    ))
    .bind(id)
    .bind(doc)
    .execute(&app.pool)
    .await
    .unwrap();
}

async fn stored(app: &TestApp, table: &str, column: &str, id: &str) -> Value {
    sqlx::query_scalar(&format!("SELECT {column} FROM {table} WHERE id = $1::uuid"))
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn internal(app: &TestApp, path: &str) {
    let r = app.get(path, &app.reader).await;
    let p = expect_problem(r, StatusCode::INTERNAL_SERVER_ERROR).await;
    assert_eq!(p["type"], "urn:spe:problem:internal", "{path}: {p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_corrupt_documents_are_internal_errors() {
    let app = TestApp::start().await;
    let (model, cal) = calibrated_model(&app, "stored").await;
    let est = estimate_ok(&app, &model, images_form(&synthetic().join("batch"))).await;
    let id = est["id"].as_str().unwrap();
    let path = format!("/v1/estimates/{id}");
    let result = stored(&app, "estimates", "result", id).await;
    let timings = stored(&app, "estimates", "timings", id).await;

    // A corrupt result: every read of it fails loudly, the Prometheus gauge included.
    let corrupt = json!({ "estimate": { "status": "ok", "metrics": 3 } });
    put(&app, "estimates", "result", id, &corrupt).await;
    internal(&app, &path).await;
    internal(&app, &format!("/v1/models/{model}/estimates")).await;
    let r = app.client.get(app.at("/metrics")).send().await.unwrap();
    expect_problem(r, StatusCode::INTERNAL_SERVER_ERROR).await;
    // A version this build does not know is not misread as the current one.
    let mut newer = result.clone();
    newer["version"] = json!(2);
    put(&app, "estimates", "result", id, &newer).await;
    internal(&app, &path).await;
    put(&app, "estimates", "result", id, &result).await;
    put(
        &app,
        "estimates",
        "timings",
        id,
        &json!({ "load_s": "slow" }),
    )
    .await;
    internal(&app, &path).await;

    // The shape written before the version field decodes to the same view.
    assert_eq!(result["version"], 1, "{result}");
    for (column, mut doc) in [("result", result), ("timings", timings)] {
        doc.as_object_mut().unwrap().remove("version");
        put(&app, "estimates", column, id, &doc).await;
    }
    let again = app.get_json(&path, &app.reader).await;
    assert_eq!(again["result"], est["result"]);
    assert_eq!(again["timings"], est["timings"]);

    // Calibrations: a corrupt result or parameters are errors; an older format is listed without one.
    let cal_id = cal["id"].as_str().unwrap();
    let cal_path = format!("/v1/calibrations/{cal_id}");
    let cal_result = stored(&app, "calibrations", "result", cal_id).await;
    let params = stored(&app, "calibrations", "params", cal_id).await;
    let mut broken = cal_result.clone();
    broken["fits"] = json!(3);
    put(&app, "calibrations", "result", cal_id, &broken).await;
    internal(&app, &cal_path).await;
    internal(&app, &format!("/v1/models/{model}/calibrations")).await;
    let older = json!({ "format": "spe-calibration/1", "fits": {} });
    put(&app, "calibrations", "result", cal_id, &older).await;
    let view = app.get_json(&cal_path, &app.reader).await;
    assert_eq!(view["result"], Value::Null, "{view}");
    put(&app, "calibrations", "result", cal_id, &cal_result).await;
    let bad_params = json!({ "support_size": -1 });
    put(&app, "calibrations", "params", cal_id, &bad_params).await;
    internal(&app, &cal_path).await;
    put(&app, "calibrations", "params", cal_id, &params).await;
    let view = app.get_json(&cal_path, &app.reader).await;
    assert_eq!(view["result"], cal["result"]);
    app.stop().await;
}
