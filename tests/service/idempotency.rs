//! Idempotency-Key: a retried POST returns the first job instead of creating another.

use crate::common::*;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

async fn job_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM jobs WHERE kind = 'estimate'")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_post_creates_one_job() {
    let app = TestApp::start().await;
    let (id, _) = calibrated_model(&app, "idem").await;
    let path = format!("/v1/models/{id}/estimates");
    let submit = |key: &'static str, api_key: String| {
        let client = app.client.clone();
        let url = app.at(&path);
        async move {
            // A fresh form each time: a new multipart boundary, like a real client's retry.
            let r = client
                .post(url)
                .bearer_auth(api_key)
                .header("idempotency-key", key)
                .multipart(images_form(&synthetic().join("batch")))
                .send()
                .await
                .unwrap();
            let status = r.status();
            let location = r
                .headers()
                .get("location")
                .map(|v| v.to_str().unwrap().to_string());
            let body: Value = r.json().await.unwrap();
            (status, location, body)
        }
    };
    let (s1, l1, first) = submit("retry-1", app.submitter.clone()).await;
    assert_eq!(s1, StatusCode::ACCEPTED);
    // Retries, some concurrent: all answer with the first estimate.
    let retries =
        futures::future::join_all((0..4).map(|_| submit("retry-1", app.submitter.clone()))).await;
    for (s, l, body) in retries {
        assert_eq!(s, StatusCode::ACCEPTED);
        assert_eq!(l, l1);
        assert_eq!(body["id"], first["id"]);
    }
    assert_eq!(job_count(&app).await, 1);
    // Concurrent first tries with a new key race on the unique constraint; still one job.
    let racers =
        futures::future::join_all((0..4).map(|_| submit("race-1", app.submitter.clone()))).await;
    let ids: std::collections::BTreeSet<_> =
        racers.iter().map(|(_, _, b)| b["id"].to_string()).collect();
    assert_eq!(ids.len(), 1, "{racers:?}");
    assert_eq!(job_count(&app).await, 2);
    // The same key from another API key is another client's key: a new job.
    let (s, _, other) = submit("retry-1", app.admin.clone()).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_ne!(other["id"], first["id"]);
    assert_eq!(job_count(&app).await, 3);
    // The same key with a different request is refused.
    let r = app
        .client
        .post(app.at(&path))
        .bearer_auth(&app.submitter)
        .header("idempotency-key", "retry-1")
        .multipart(images_form(&synthetic().join("reference/images")))
        .send()
        .await
        .unwrap();
    expect_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(job_count(&app).await, 3);
    // The replay after completion returns the finished estimate.
    let done = app
        .wait(l1.as_deref().unwrap(), std::time::Duration::from_secs(120))
        .await;
    let (_, _, again) = submit("retry-1", app.submitter.clone()).await;
    assert_eq!(again["status"], done["status"]);
    assert_eq!(again["result"], done["result"]);
    app.stop().await;
}

/// A POST to one of the model's collections under an Idempotency-Key.
fn keyed(app: &TestApp, model: &str, collection: &str, api_key: &str, key: &str) -> RequestBuilder {
    let path = format!("/v1/models/{model}/{collection}");
    app.request(Method::POST, &path, api_key)
        .header("idempotency-key", key)
}

async fn post_batch(app: &TestApp, model: &str, key: &str, dir: &str) -> reqwest::Response {
    let form = images_form(&synthetic().join(dir));
    send(keyed(app, model, "estimates", &app.submitter, key).multipart(form)).await
}

fn pairs(points: usize) -> Value {
    let m = |d: f64| serde_json::json!({"dice": d, "jaccard": d * 0.9, "precision": d, "recall": d, "hd95": 30.0 * (1.0 - d), "pearson": d});
    let points: Vec<Value> = (0..points)
        .map(|i| {
            let d = 0.3 + 0.15 * i as f64;
            serde_json::json!({"name": format!("p{i}"), "pseudo": m(d - 0.1), "real": m(d)})
        })
        .collect();
    serde_json::json!({"points": points, "params": {"support_size": 8, "repetitions": 2}})
}

async fn post_pairs(app: &TestApp, model: &str, key: &str, body: &Value) -> reqwest::Response {
    send(keyed(app, model, "calibrations", &app.admin, key).json(body)).await
}

/// The key is scoped to the route and its model: the same key on another model is another request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_is_scoped_to_the_model() {
    let app = TestApp::start().await;
    let (a, _) = calibrated_model(&app, "model-a").await;
    let b = reference_model_id(&app, "model-b").await;
    let r = post_batch(&app, &a, "study-1.2.3", "batch").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let on_a: Value = r.json().await.unwrap();
    // B has no active calibration: 409, not A's estimate.
    let r = post_batch(&app, &b, "study-1.2.3", "batch").await;
    expect_problem(r, StatusCode::CONFLICT).await;

    // Pair calibrations honour the key: a retry is the same calibration, another body is refused.
    let body = pairs(4);
    let r = post_pairs(&app, &b, "cal-1", &body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let cal: Value = r.json().await.unwrap();
    let r = post_pairs(&app, &b, "cal-1", &body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["id"], cal["id"]);
    let r = post_pairs(&app, &b, "cal-1", &pairs(5)).await;
    expect_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    let calibrations: i64 =
        sqlx::query_scalar("SELECT count(*) FROM calibrations WHERE model_id = $1::uuid")
            .bind(&b)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(calibrations, 1);

    // Now calibrated, B takes the key as a new request of its own.
    let r = post_batch(&app, &b, "study-1.2.3", "batch").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let on_b: Value = r.json().await.unwrap();
    assert_ne!(on_b["id"], on_a["id"]);
    assert_eq!(on_b["model_id"].as_str(), Some(b.as_str()));
    app.stop().await;
}

/// Concurrent first uses of a key with different bodies: one wins, every other body is refused, including
/// the losers of the race on the unique key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_race_losers_get_the_digest_check() {
    let app = TestApp::start().await;
    let (id, _) = calibrated_model(&app, "race").await;
    for round in 0..3 {
        let key = format!("race-{round}");
        let posts = (0..6).map(|i| {
            let dir = if i % 2 == 0 {
                "batch"
            } else {
                "calibration/images"
            };
            let (app, id, key) = (&app, &id, &key);
            async move { (dir, post_batch(app, id, key, dir).await) }
        });
        let answers = futures::future::join_all(posts).await;
        let mut winners = std::collections::BTreeMap::new();
        for (dir, r) in answers {
            match r.status() {
                StatusCode::ACCEPTED => {
                    let body: Value = r.json().await.unwrap();
                    winners
                        .entry(dir)
                        .or_insert_with(Vec::new)
                        .push(body["id"].to_string());
                }
                StatusCode::UNPROCESSABLE_ENTITY => {}
                other => panic!("unexpected {other}: {}", r.text().await.unwrap()),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "two different bodies were accepted under one key: {winners:?}"
        );
        let ids: std::collections::BTreeSet<_> = winners.values().flatten().collect();
        assert_eq!(ids.len(), 1, "{winners:?}");
    }
    assert_eq!(job_count(&app).await, 3);
    app.stop().await;
}

/// What the document declares is what the server takes: a key with a tab (not a visible character) is a
/// 400, and a pair named with a NUL (which PostgreSQL cannot store) a 422, not a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_with_tabs_and_pair_names_with_nul_are_refused() {
    let app = TestApp::start().await;
    let model = reference_model_id(&app, "model-nul").await;
    let r = post_pairs(&app, &model, "a\tb", &pairs(4)).await;
    expect_problem(r, StatusCode::BAD_REQUEST).await;
    let mut body = pairs(4);
    body["points"][0]["name"] = Value::from("p\u{0}0");
    let r = post_pairs(&app, &model, "nul-name", &body).await;
    let problem = expect_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["type"], "urn:spe:problem:invalid-input");
    // Neither stored anything; the same key with a clean body is a new calibration.
    let r = post_pairs(&app, &model, "nul-name", &pairs(4)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    app.stop().await;
}
