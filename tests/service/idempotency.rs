//! Idempotency-Key: a retried POST returns the first job instead of creating another.

use crate::common::*;
use reqwest::StatusCode;
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
