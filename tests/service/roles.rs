//! Role enforcement on every route: no key -> 401, a weaker role -> 403, the right role gets through.

use crate::common::*;
use reqwest::{Method, StatusCode};
use std::collections::BTreeSet;

/// Every API route with the weakest role allowed on it (`None`: open by default).
const ROUTES: &[(&str, &str, Option<&str>)] = &[
    ("POST", "/v1/models", Some("admin")),
    ("GET", "/v1/models", Some("reader")),
    ("GET", "/v1/models/{id}", Some("reader")),
    ("DELETE", "/v1/models/{id}", Some("admin")),
    ("PUT", "/v1/models/{id}/reference-set", Some("admin")),
    ("GET", "/v1/models/{id}/reference-set", Some("reader")),
    ("POST", "/v1/models/{id}/calibrations", Some("admin")),
    ("GET", "/v1/models/{id}/calibrations", Some("reader")),
    ("GET", "/v1/calibrations/{id}", Some("reader")),
    ("POST", "/v1/calibrations/{id}/activate", Some("admin")),
    ("GET", "/v1/calibrations/{id}/plot.svg", Some("reader")),
    ("POST", "/v1/models/{id}/estimates", Some("submitter")),
    ("GET", "/v1/models/{id}/estimates", Some("reader")),
    ("GET", "/v1/models/{id}/estimates/plot.svg", Some("reader")),
    ("GET", "/v1/estimates/{id}", Some("reader")),
    ("POST", "/v1/models/{id}/studies", Some("submitter")),
    ("POST", "/v1/reverse-segmenters", Some("admin")),
    ("GET", "/v1/reverse-segmenters", Some("reader")),
    ("GET", "/v1/reverse-segmenters/{id}", Some("reader")),
    ("GET", "/v1/models/{id}/thresholds", Some("reader")),
    ("PUT", "/v1/models/{id}/thresholds", Some("admin")),
    ("GET", "/v1/models/{id}/window", Some("reader")),
    ("PUT", "/v1/models/{id}/window", Some("admin")),
    ("POST", "/v1/webhooks", Some("admin")),
    ("GET", "/v1/webhooks", Some("admin")),
    ("GET", "/v1/webhooks/{id}", Some("admin")),
    ("DELETE", "/v1/webhooks/{id}", Some("admin")),
    ("GET", "/v1/webhooks/{id}/deliveries", Some("admin")),
    ("GET", "/healthz", None),
    ("GET", "/readyz", None),
    ("GET", "/metrics", None),
];

fn rank(role: &str) -> u8 {
    match role {
        "reader" => 1,
        "submitter" => 2,
        "admin" => 3,
        _ => unreachable!(),
    }
}

#[test]
fn roles_table_covers_every_route() {
    let api = serde_json::to_value(spe::api::openapi()).unwrap();
    let mut documented = BTreeSet::new();
    for (path, item) in api["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let tested: BTreeSet<_> = ROUTES
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, tested, "every route needs a row in ROUTES");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_enforced_on_every_route() {
    let app = TestApp::start().await;
    let keys = [
        ("reader", &app.reader),
        ("submitter", &app.submitter),
        ("admin", &app.admin),
    ];
    let id = uuid::Uuid::new_v4().to_string();
    for (method, template, min) in ROUTES {
        let path = template.replace("{id}", &id);
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let anonymous = app
            .client
            .request(method.clone(), app.at(&path))
            .send()
            .await
            .unwrap();
        match min {
            None => assert_eq!(
                anonymous.status(),
                StatusCode::OK,
                "{method} {path} is open"
            ),
            Some(_) => {
                expect_problem(anonymous, StatusCode::UNAUTHORIZED).await;
            }
        }
        for (role, key) in keys {
            let r = app
                .client
                .request(method.clone(), app.at(&path))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            let allowed = min.is_none_or(|m| rank(role) >= rank(m));
            if allowed {
                assert!(
                    !matches!(r.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN),
                    "{role} must be allowed on {method} {template}, got {}",
                    r.status()
                );
            } else {
                let p = expect_problem(r, StatusCode::FORBIDDEN).await;
                assert!(p["detail"].as_str().unwrap().contains(role), "{p}");
            }
        }
    }
    // A revoked key is refused everywhere.
    let key_id = app
        .reader
        .trim_start_matches("spe_")
        .split('.')
        .next()
        .unwrap()
        .to_string();
    assert!(spe::store::keys::revoke(&app.pool, &key_id).await.unwrap());
    expect_problem(
        app.get("/v1/models", &app.reader).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_protect_ops_when_configured() {
    let app = TestApp::configured(|a| a.protect_ops = true).await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        expect_problem(
            app.client.get(app.at(path)).send().await.unwrap(),
            StatusCode::UNAUTHORIZED,
        )
        .await;
        assert_eq!(
            app.get(path, &app.reader).await.status(),
            StatusCode::OK,
            "{path}"
        );
    }
    app.stop().await;
}

/// A revoked bootstrap key stays revoked when the service starts again with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_revoked_bootstrap_key_stays_revoked() {
    use spe::store::keys::{self, Bootstrap};
    let app = TestApp::start().await;
    let token = "spe_boot1.0123456789abcdefXYZ";
    assert_eq!(
        keys::ensure_bootstrap(&app.pool, token).await.unwrap(),
        Bootstrap::Installed
    );
    assert_eq!(app.get("/v1/models", token).await.status(), StatusCode::OK);
    assert!(keys::revoke(&app.pool, "boot1").await.unwrap());
    // What `spe serve` does at every start-up.
    assert_eq!(
        keys::ensure_bootstrap(&app.pool, token).await.unwrap(),
        Bootstrap::Revoked
    );
    expect_problem(app.get("/v1/models", token).await, StatusCode::UNAUTHORIZED).await;
    // Rotation: a new key id works beside the revoked one.
    let rotated = "spe_boot2.fedcba9876543210XYZ";
    assert_eq!(
        keys::ensure_bootstrap(&app.pool, rotated).await.unwrap(),
        Bootstrap::Installed
    );
    assert_eq!(
        app.get("/v1/models", rotated).await.status(),
        StatusCode::OK
    );
    app.stop().await;
}
