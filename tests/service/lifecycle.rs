//! Start-up, readiness and shutdown: /readyz drains before the listener closes, shutdown has a deadline,
//! a request has a time limit, worker-only processes answer health checks, and a schema from another
//! version is refused with a clear message.

use crate::common::*;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Starts a multipart model registration whose body never completes: the handler waits on it.
pub async fn trickling_upload(app: &TestApp) -> TcpStream {
    let addr = app.url.trim_start_matches("http://");
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/models HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: multipart/form-data; boundary=XYZ\r\nContent-Length: 10000000\r\n\r\n\
         --XYZ\r\nContent-Disposition: form-data; name=\"onnx\"; filename=\"m.onnx\"\r\n\r\n",
        app.admin
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn
}

async fn wait_finished(app: &TestApp, limit: Duration) -> Duration {
    let started = Instant::now();
    while !app.server_finished() {
        assert!(
            started.elapsed() < limit,
            "the service did not stop within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_readyz_drains_before_the_listener_closes() {
    let app = TestApp::configured(|a| a.drain_secs = 3).await;
    let r = app.client.get(app.at("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let ready: Value = r.json().await.unwrap();
    assert_eq!(ready["checks"]["blob_store"], "ok", "{ready}");
    app.request_shutdown();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Still answering, but not ready: load balancers stop routing here.
    let r = app.client.get(app.at("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let draining: Value = r.json().await.unwrap();
    assert!(
        draining["checks"]["shutdown"]
            .as_str()
            .unwrap()
            .starts_with("draining"),
        "{draining}"
    );
    assert_eq!(
        app.get("/v1/models", &app.reader).await.status(),
        StatusCode::OK
    );
    wait_finished(&app, Duration::from_secs(20)).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_shutdown_does_not_wait_for_a_stuck_request() {
    let app = TestApp::start().await;
    let _stuck = trickling_upload(&app).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.request_shutdown();
    // Drain 0 s, grace 5 s (the tests' settings); the request would otherwise hold it for 120 s.
    wait_finished(&app, Duration::from_secs(30)).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_a_request_has_a_time_limit() {
    let app = TestApp::configured(|a| a.request_timeout_secs = 2).await;
    let mut conn = trickling_upload(&app).await;
    let (mut read, mut write) = conn.split();
    let trickle = async {
        for _ in 0..100 {
            if write.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let answer = async {
        let mut buf = vec![0u8; 4096];
        let n = read.read(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    let answer = tokio::select! {
        a = answer => a,
        _ = trickle => panic!("no answer while the body trickled for 20 s"),
    };
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(answer.contains("SPE_REQUEST_TIMEOUT_SECS"), "{answer}");
    // Nothing of the half-sent model was kept.
    assert_eq!(
        app.get_json("/v1/models", &app.reader).await["items"],
        serde_json::json!([])
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_a_worker_answers_health_checks_only() {
    let database_url = fresh_database().await;
    let blob_dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, rx) = tokio::sync::watch::channel(false);
    let args = serve_args(
        &database_url,
        blob_dir.path(),
        ServeArgs {
            role: spe::service::Role::Worker,
            ..test_args()
        },
    );
    let worker = tokio::spawn(spe::service::run(args, Some(listener), rx));
    let client = reqwest::Client::new();
    let started = Instant::now();
    let ready = loop {
        if let Ok(r) = client.get(format!("{url}/readyz")).send().await {
            break r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the worker never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ready.status(), StatusCode::OK);
    let checks: Value = ready.json().await.unwrap();
    for check in ["database", "blob_store", "onnxruntime"] {
        assert!(
            checks["checks"][check].as_str().unwrap().starts_with("ok"),
            "{checks}"
        );
    }
    let health = client.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let api = client.get(format!("{url}/v1/models")).send().await.unwrap();
    assert_eq!(api.status(), StatusCode::NOT_FOUND);
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(30), worker)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

async fn start_error(database_url: &str, no_migrate: bool) -> String {
    let blob_dir = tempfile::tempdir().unwrap();
    let args = serve_args(
        database_url,
        blob_dir.path(),
        ServeArgs {
            no_migrate,
            ..test_args()
        },
    );
    let (_stop, rx) = tokio::sync::watch::channel(false);
    let result = tokio::time::timeout(Duration::from_secs(60), spe::service::run(args, None, rx))
        .await
        .expect("start-up should have failed at once");
    format!("{:#}", result.expect_err("start-up should have failed"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_a_schema_from_another_version_is_refused_clearly() {
    let database_url = fresh_database().await;
    // --no-migrate on an empty database: it says what to run.
    let e = start_error(&database_url, true).await;
    assert!(e.contains("run `spe migrate` first"), "{e}");
    let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
    spe::store::migrate(&pool).await.unwrap();
    // A newer spe applied a migration this one does not know.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99991231000000, 'from the future', true, '\\x00', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    for no_migrate in [false, true] {
        let e = start_error(&database_url, no_migrate).await;
        assert!(e.contains("newer than this spe knows"), "{e}");
    }
    pool.close().await;
}

/// A client sending its headers one byte per second is cut after the 30 s header-read timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_a_slow_header_client_is_cut() {
    let app = TestApp::start().await;
    let addr = app.url.trim_start_matches("http://").to_string();
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    let started = Instant::now();
    let head = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    let mut bytes = head.iter().chain(std::iter::repeat(&b'a'));
    let cut = loop {
        if started.elapsed() > Duration::from_secs(45) {
            break None;
        }
        if conn.write_all(&[*bytes.next().unwrap()]).await.is_err() {
            break Some(started.elapsed());
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_secs(1), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break Some(started.elapsed()),
            // hyper answers 408 before closing.
            Ok(Ok(_)) => break Some(started.elapsed()),
            Err(_) => {}
        }
    };
    let cut = cut.expect("the slow client was not cut within 45 s");
    assert!(cut >= Duration::from_secs(25), "cut too early: {cut:?}");
    app.stop().await;
}

/// A saturated API pool sheds requests: one that cannot get a database connection within
/// --db-acquire-timeout-secs is answered 503 with Retry-After (not a 500 after 10 s of waiting), and
/// the service answers normally as soon as connections free up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_a_saturated_pool_answers_503_with_retry_after() {
    let app = TestApp::configured(|a| {
        a.db_connections = 2;
        a.max_concurrent_uploads = 1;
        a.db_acquire_timeout_secs = 1;
        a.workers = 0;
    })
    .await;
    // With api_keys locked, each request's key lookup blocks while holding one of the two connections.
    let mut lock = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let started = Instant::now();
    let requests: Vec<_> = (0..5)
        .map(|_| {
            let request = app
                .client
                .get(app.at("/v1/models"))
                .bearer_auth(&app.reader);
            tokio::spawn(async move { request.send().await.unwrap() })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    lock.rollback().await.unwrap();
    let mut statuses = Vec::new();
    for request in requests {
        let r = request.await.unwrap();
        let status = r.status();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(r.headers()["retry-after"], "2");
            let problem = expect_problem(r, status).await;
            assert_eq!(problem["type"], "urn:spe:problem:unavailable");
            assert!(
                problem["detail"].as_str().unwrap().contains("busy"),
                "{problem}"
            );
        }
        statuses.push(status.as_u16());
    }
    statuses.sort();
    // Two held the connections and finished once the lock went; the other three were shed in time.
    assert_eq!(
        statuses,
        [200, 200, 503, 503, 503],
        "after {:?}",
        started.elapsed()
    );
    let r = app
        .client
        .get(app.at("/v1/models"))
        .bearer_auth(&app.reader)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    app.stop().await;
}
