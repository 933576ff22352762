//! Stored results are read through one typed schema: a document that does not decode is a logged
//! internal error (a 500 problem), never served as `result: null` or as default parameters. Documents
//! written before the schema had a version still decode.

use crate::common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn set(app: &TestApp, sql: &str, id: &str, doc: Value) {
    sqlx::query(sql)
        .bind(uuid::Uuid::parse_str(id).unwrap())
        .bind(doc)
        .execute(&app.pool)
        .await
        .unwrap();
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
    let list = format!("/v1/models/{model}/estimates");

    // The shape written before the version field decodes to the same view.
    let (stored, timings): (Value, Value) =
        sqlx::query_as("SELECT result, timings FROM estimates WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(stored["version"], 1, "{stored}");
    let mut old = stored.clone();
    old.as_object_mut().unwrap().remove("version");
    let mut old_timings = timings.clone();
    old_timings.as_object_mut().unwrap().remove("version");
    set(
        &app,
        "UPDATE estimates SET result = $2 WHERE id = $1",
        id,
        old,
    )
    .await;
    set(
        &app,
        "UPDATE estimates SET timings = $2 WHERE id = $1",
        id,
        old_timings,
    )
    .await;
    let again = app.get_json(&path, &app.reader).await;
    assert_eq!(again["result"], est["result"]);
    assert_eq!(again["timings"], est["timings"]);

    // A corrupt result: every read of it fails loudly, the Prometheus gauge included.
    let corrupt = json!({ "estimate": { "status": "ok", "metrics": 3 } });
    set(
        &app,
        "UPDATE estimates SET result = $2 WHERE id = $1",
        id,
        corrupt,
    )
    .await;
    internal(&app, &path).await;
    internal(&app, &list).await;
    let r = app.client.get(app.at("/metrics")).send().await.unwrap();
    expect_problem(r, StatusCode::INTERNAL_SERVER_ERROR).await;
    // A version this build does not know is not misread as the current one.
    let mut newer = stored.clone();
    newer["version"] = json!(2);
    set(
        &app,
        "UPDATE estimates SET result = $2 WHERE id = $1",
        id,
        newer,
    )
    .await;
    internal(&app, &path).await;
    set(
        &app,
        "UPDATE estimates SET result = $2 WHERE id = $1",
        id,
        stored,
    )
    .await;
    set(
        &app,
        "UPDATE estimates SET timings = $2 WHERE id = $1",
        id,
        json!({ "load_s": "slow" }),
    )
    .await;
    internal(&app, &path).await;

    // Calibrations: a corrupt result or parameters are errors; an older format is listed without one.
    let cal_id = cal["id"].as_str().unwrap();
    let cal_path = format!("/v1/calibrations/{cal_id}");
    let (cal_stored, params): (Value, Value) =
        sqlx::query_as("SELECT result, params FROM calibrations WHERE id = $1::uuid")
            .bind(cal_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let mut broken = cal_stored.clone();
    broken["fits"] = json!(3);
    set(
        &app,
        "UPDATE calibrations SET result = $2 WHERE id = $1",
        cal_id,
        broken,
    )
    .await;
    internal(&app, &cal_path).await;
    internal(&app, &format!("/v1/models/{model}/calibrations")).await;
    let older = json!({ "format": "spe-calibration/1", "fits": {} });
    set(
        &app,
        "UPDATE calibrations SET result = $2 WHERE id = $1",
        cal_id,
        older,
    )
    .await;
    let view = app.get_json(&cal_path, &app.reader).await;
    assert_eq!(view["result"], Value::Null, "{view}");
    set(
        &app,
        "UPDATE calibrations SET result = $2 WHERE id = $1",
        cal_id,
        cal_stored,
    )
    .await;
    set(
        &app,
        "UPDATE calibrations SET params = $2 WHERE id = $1",
        cal_id,
        json!({ "support_size": -1 }),
    )
    .await;
    internal(&app, &cal_path).await;
    set(
        &app,
        "UPDATE calibrations SET params = $2 WHERE id = $1",
        cal_id,
        params,
    )
    .await;
    let view = app.get_json(&cal_path, &app.reader).await;
    assert_eq!(view["result"], cal["result"]);
    app.stop().await;
}
