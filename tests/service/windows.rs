//! Rolling windows: small batches add up to window estimates over the latest N images; concurrent
//! batches are counted once each; window images keep their pixels until they leave the window.

use crate::common::*;
use reqwest::multipart::Form;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

async fn put_window(app: &TestApp, id: &str, body: &Value) -> reqwest::Response {
    let path = format!("/v1/models/{id}/window");
    send(app.request(Method::PUT, &path, &app.admin).json(body)).await
}

fn form_of(files: &[PathBuf]) -> Form {
    files
        .iter()
        .fold(Form::new(), |f, p| f.part("image", file_part(p)))
}

fn digests(files: &[PathBuf]) -> BTreeSet<String> {
    files
        .iter()
        .map(|p| spe::digest::sha256_hex(&std::fs::read(p).unwrap()))
        .collect()
}

async fn post(app: &TestApp, id: &str, files: &[PathBuf]) -> String {
    let r = app
        .post_form(
            &format!("/v1/models/{id}/estimates"),
            &app.submitter,
            form_of(files),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    accepted_location(&r)
}

async fn listed(app: &TestApp, id: &str, kind: &str) -> Vec<Value> {
    let page = app
        .get_json(
            &format!("/v1/models/{id}/estimates?kind={kind}"),
            &app.reader,
        )
        .await;
    page["items"].as_array().unwrap().clone()
}

/// The uploaded files a finished window estimate covered.
async fn window_inputs(app: &TestApp, estimate: &Value) -> BTreeSet<String> {
    let done = wait_succeeded(
        app,
        &format!("/v1/estimates/{}", estimate["id"].as_str().unwrap()),
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(done["kind"], "window");
    assert!(
        done["result"]["metrics"]["dice"]["estimate"].is_number(),
        "{done}"
    );
    each_str(&done["inputs"], "sha256")
        .into_iter()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_estimate_the_latest_images_and_count_concurrent_batches_once() {
    let app = TestApp::start().await;
    let (id, _) = calibrated_model(&app, "windowed").await;
    let files = sorted_files(&synthetic().join("batch"));
    assert!(files.len() >= 12);
    let (a, b, c, d) = (&files[0..3], &files[3..6], &files[6..10], &files[10..12]);

    let r = put_window(&app, &id, &json!({"images": 6})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let window_path = format!("/v1/models/{id}/window");
    assert_eq!(
        app.get_json(&window_path, &app.reader).await,
        json!({"images": 6, "pending": 0, "held": 0})
    );

    // Two batches of 3 at once: exactly one window estimate, over both.
    let (first, second) = tokio::join!(post(&app, &id, a), post(&app, &id, b));
    assert_ne!(first, second);
    assert_eq!(
        app.get_json(&window_path, &app.reader).await,
        json!({"images": 6, "pending": 0, "held": 6})
    );
    let windows = listed(&app, &id, "window").await;
    assert_eq!(windows.len(), 1, "{windows:?}");
    assert_eq!(windows[0]["images"], 6);
    let both: BTreeSet<String> = digests(a).union(&digests(b)).cloned().collect();
    assert_eq!(window_inputs(&app, &windows[0]).await, both);
    assert_eq!(listed(&app, &id, "batch").await.len(), 2);

    // 4 more: not yet a window (4 new images since the last window estimate); 2 more: the latest 6.
    post(&app, &id, c).await;
    assert_eq!(
        app.get_json(&window_path, &app.reader).await,
        json!({"images": 6, "pending": 4, "held": 6})
    );
    assert_eq!(listed(&app, &id, "window").await.len(), 1);
    post(&app, &id, d).await;
    let windows = listed(&app, &id, "window").await;
    assert_eq!(windows.len(), 2);
    let latest: BTreeSet<String> = digests(c).union(&digests(d)).cloned().collect();
    assert_eq!(window_inputs(&app, &windows[0]).await, latest);
    for batch in listed(&app, &id, "batch").await {
        wait_succeeded(
            &app,
            &format!("/v1/estimates/{}", batch["id"].as_str().unwrap()),
            Duration::from_secs(120),
        )
        .await;
    }
    assert_eq!(listed(&app, &id, "batch").await.len(), 4);
    assert_eq!(
        app.get_json(&format!("/v1/models/{id}/estimates"), &app.reader)
            .await["items"]
            .as_array()
            .unwrap()
            .len(),
        6
    );

    // Every finished estimate dropped its pixels; only the window's 6 images still hold theirs.
    let (_, held_blobs) = settled_footprint(&app).await;
    let r = put_window(&app, &id, &json!({"images": null})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        app.get_json(&window_path, &app.reader).await,
        json!({"images": null, "pending": 0, "held": 0})
    );
    let (_, freed_blobs) = settled_footprint(&app).await;
    assert_eq!(
        held_blobs - freed_blobs,
        6,
        "the window's images are purged"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_sizes_are_checked() {
    let app = TestApp::start().await;
    let id = reference_model_id(&app, "unwindowed").await;
    for (body, message) in [
        (json!({"images": 0}), "between 1 and"),
        (json!({"images": 100000}), "between 1 and"),
        (json!({}), "missing field"),
    ] {
        let problem = expect_problem(
            put_window(&app, &id, &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert!(
            problem["detail"].as_str().unwrap().contains(message),
            "{body} -> {problem}"
        );
    }
    expect_problem(
        put_window(
            &app,
            &uuid::Uuid::new_v4().to_string(),
            &json!({"images": 4}),
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let problem = expect_problem(
        app.get(
            &format!("/v1/models/{id}/estimates?kind=windows"),
            &app.reader,
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("kind"),
        "{problem}"
    );
    app.stop().await;
}
