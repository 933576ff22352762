//! Webhooks against a real local HTTP receiver: signed deliveries, retried while the receiver is down,
//! each event received once when it comes back.

use crate::common::*;
use axum::body::Bytes;
use axum::http::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "a-receiver-secret-0123456789";

/// What the receiver got: headers and body of each POST.
type Received = Arc<Mutex<Vec<(HeaderMap, String)>>>;

/// An HTTP receiver on `port` that records every POST to /hook and answers 204.
async fn receiver(port: u16, received: Received) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the receiver's port is free again");
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let received = received.clone();
            async move {
                let body = String::from_utf8(body.to_vec()).unwrap();
                received.lock().unwrap().push((headers, body));
                StatusCode::NO_CONTENT
            }
        }),
    );
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    })
}

async fn register(app: &TestApp, body: &Value) -> reqwest::Response {
    app.post_json("/v1/webhooks", &app.admin, body).await
}

async fn deliveries(app: &TestApp, hook: &str) -> Vec<Value> {
    app.get_json(&format!("/v1/webhooks/{hook}/deliveries"), &app.admin)
        .await["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// Polls the deliveries until `done` holds for them (panics after `limit`).
async fn wait_deliveries(
    app: &TestApp,
    hook: &str,
    limit: Duration,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let items = deliveries(app, hook).await;
        if done(&items) {
            return items;
        }
        assert!(
            start.elapsed() < limit,
            "deliveries never got there: {items:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_signed_retried_while_the_receiver_is_down_and_arrive_once() {
    let app = TestApp::start().await;
    let (id, _) = calibrated_model(&app, "hooked").await;
    let r = app
        .request(
            Method::PUT,
            &format!("/v1/models/{id}/thresholds"),
            &app.admin,
        )
        .json(&json!({"dice": {"min": 0.99}}));
    assert_eq!(send(r).await.status(), StatusCode::OK);

    // The receiver is down: its port is known but nothing listens yet.
    let port = free_port();
    let r = register(
        &app,
        &json!({"url": format!("http://127.0.0.1:{port}/hook"), "secret": SECRET,
                "events": ["estimate.alert", "estimate.succeeded"]}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let hook: Value = r.json().await.unwrap();
    let hook_id = hook["id"].as_str().unwrap().to_string();
    assert_eq!(
        hook["events"],
        json!(["estimate.alert", "estimate.succeeded"])
    );
    let listed = app.get_json("/v1/webhooks", &app.admin).await;
    assert!(
        !listed.to_string().contains(SECRET) && !hook.to_string().contains(SECRET),
        "the secret is never returned: {listed}"
    );

    let estimate = estimate_ok(&app, &id, images_form(&synthetic().join("batch"))).await;
    assert_eq!(
        estimate["result"]["alerts"][0]["severity"], "alert",
        "{estimate}"
    );
    let estimate_id = estimate["id"].as_str().unwrap();

    // Both events are attempted and fail while nobody listens; the estimate is not held up by it.
    let failing = wait_deliveries(&app, &hook_id, Duration::from_secs(30), |items| {
        items.len() == 2
            && items
                .iter()
                .all(|d| d["attempts"].as_i64() >= Some(2) && d["state"] == "pending")
    })
    .await;
    assert!(
        failing.iter().all(|d| d["last_error"].is_string()),
        "{failing:?}"
    );

    let received = Received::default();
    let server = receiver(port, received.clone()).await;
    let delivered = wait_deliveries(&app, &hook_id, Duration::from_secs(60), |items| {
        items.iter().all(|d| d["state"] == "delivered")
    })
    .await;
    // Nothing more arrives later: each event once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = received.lock().unwrap().clone();
    server.abort();
    assert_eq!(got.len(), 2, "{got:?}");
    let mut events = Vec::new();
    for (headers, body) in &got {
        let signature = headers["x-spe-signature"].to_str().unwrap();
        assert!(
            spe::webhooks::verify(SECRET, signature, body),
            "{signature}"
        );
        assert!(!spe::webhooks::verify(
            "another-secret-0123456789",
            signature,
            body
        ));
        let t: i64 = signature[2..signature.find(',').unwrap()].parse().unwrap();
        assert!(
            (chrono::Utc::now().timestamp() - t).abs() < 120,
            "{signature}"
        );
        assert_eq!(headers["content-type"], "application/json");
        let payload: Value = serde_json::from_str(body).unwrap();
        assert_eq!(headers["x-spe-event"].to_str().unwrap(), payload["event"]);
        assert_eq!(headers["x-spe-delivery"].to_str().unwrap(), payload["id"]);
        assert!(delivered.iter().any(|d| d["id"] == payload["id"]));
        assert_eq!(payload["estimate"]["id"], estimate_id);
        assert_eq!(payload["model"]["name"], "hooked");
        assert_eq!(
            payload["estimate"]["metrics"]["dice"]["estimate"],
            estimate["result"]["metrics"]["dice"]["estimate"]
        );
        events.push(payload["event"].as_str().unwrap().to_string());
    }
    events.sort();
    assert_eq!(events, ["estimate.alert", "estimate.succeeded"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_checked_before_they_are_stored_and_can_be_removed() {
    let app =
        TestApp::configured(|a| a.webhook_allowed_hosts = "hooks.example.org, 127.0.0.1:9".into())
            .await;
    let good = json!({"url": "https://hooks.example.org/spe", "secret": SECRET, "events": ["estimate.failed"]});
    let cases = [
        (
            json!({"url": "ftp://hooks.example.org/", "secret": SECRET, "events": ["estimate.failed"]}),
            "http or https",
        ),
        (
            json!({"url": "https://other.example.org/", "secret": SECRET, "events": ["estimate.failed"]}),
            "SPE_WEBHOOK_ALLOWED_HOSTS",
        ),
        (
            json!({"url": "http://127.0.0.1:10/", "secret": SECRET, "events": ["estimate.failed"]}),
            "SPE_WEBHOOK_ALLOWED_HOSTS",
        ),
        (
            json!({"url": "https://hooks.example.org/", "secret": "short", "events": ["estimate.failed"]}),
            "16 to 256",
        ),
        (
            json!({"url": "https://hooks.example.org/", "secret": SECRET, "events": []}),
            "at least one",
        ),
        (
            json!({"url": "https://hooks.example.org/", "secret": SECRET, "events": ["estimate.done"]}),
            "unknown event",
        ),
    ];
    for (body, message) in cases {
        let problem = expect_problem(
            register(&app, &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert!(
            problem["detail"].as_str().unwrap().contains(message),
            "{body} -> {problem}"
        );
    }
    assert!(app.get_json("/v1/webhooks", &app.admin).await["items"]
        .as_array()
        .unwrap()
        .is_empty());

    let created: Value = register(&app, &good).await.json().await.unwrap();
    let path = format!("/v1/webhooks/{}", created["id"].as_str().unwrap());
    assert_eq!(app.get_json(&path, &app.admin).await, created);
    assert!(deliveries(&app, created["id"].as_str().unwrap())
        .await
        .is_empty());
    let r = app.send_empty(Method::DELETE, &path, &app.admin).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    expect_problem(app.get(&path, &app.admin).await, StatusCode::NOT_FOUND).await;
    expect_problem(
        app.get(&format!("{path}/deliveries"), &app.admin).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    app.stop().await;
}
