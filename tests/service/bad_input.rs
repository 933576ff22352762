//! Bad input: every rejected request gets the right 4xx as problem+json and leaves no rows and no blobs.

use crate::common::*;
use reqwest::multipart::{Form, Part};
use reqwest::{RequestBuilder, StatusCode};
use std::path::Path;

/// A one-image batch for requests rejected before their body is read (401, 404, 409, 400 on headers):
/// the server answers and closes the connection, and a large body still being written then surfaces as
/// a client send error instead of the response.
fn one_image_form() -> reqwest::multipart::Form {
    reqwest::multipart::Form::new().part("image", file_part(&synthetic().join("batch/bat_000.png")))
}

fn bytes_part(data: Vec<u8>, name: &str) -> Part {
    Part::bytes(data).file_name(name.to_string())
}

fn batch_with(extra: &Path) -> Form {
    images_form(&synthetic().join("batch")).part("image", file_part(extra))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_without_leftovers() {
    let app = TestApp::configured(|a| (a.max_images, a.max_body_mb) = (30, 2)).await;
    let (id, _) = calibrated_model(&app, "taken").await;
    // A second model without a calibration, for the 409s.
    let bare = reference_model_id(&app, "bare").await;
    let before = app.footprint().await;
    let estimates = format!("/v1/models/{id}/estimates");
    let calibrations = format!("/v1/models/{id}/calibrations");
    let ckpt = synthetic().join("checkpoints/ckpt_07.onnx");
    let corrupt = |f: &str| fixture(&format!("corrupt/{f}"));
    let post = |path: &str| app.client.post(app.at(path)).bearer_auth(&app.admin);
    let one_image = std::fs::read(synthetic().join("batch/bat_000.png")).unwrap();
    let register = |form: Form| post("/v1/models").multipart(form);
    let typed = |path: &str, content_type: &str, body: Vec<u8>| {
        post(path).header("content-type", content_type).body(body)
    };
    let zip = |entries: &[(String, Vec<u8>)]| typed(&estimates, "application/zip", zip_of(entries));
    let three_channels = SPEC.replace("\"channels\":1", "\"channels\":3");
    let misspelt = SPEC.replace("\"scale\"", "\"scael\"");

    let mut cases: Vec<(&str, RequestBuilder, (StatusCode, &str))> = vec![
        (
            "empty batch",
            post(&estimates)
                .multipart(Form::new().part("archive", bytes_part(zip_of(&[]), "empty.zip"))),
            (StatusCode::UNPROCESSABLE_ENTITY, "holds no image"),
        ),
        (
            "empty multipart body",
            post(&estimates).multipart(Form::new()),
            (StatusCode::BAD_REQUEST, "multipart"),
        ),
        (
            // PostgreSQL text cannot hold NUL: refused as input, not a failed insert (500).
            "NUL in a zip entry's path",
            zip(&[("a\0b.png".into(), one_image.clone())]),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "entry #1 of the zip: its path contains a NUL character",
            ),
        ),
        (
            "zip without images",
            zip(&[("a.txt".into(), b"hi".to_vec())]),
            (StatusCode::UNPROCESSABLE_ENTITY, "holds no image"),
        ),
        (
            "corrupt zip",
            typed(
                &estimates,
                "application/zip",
                b"PK\x03\x04 not really".to_vec(),
            ),
            (StatusCode::UNPROCESSABLE_ENTITY, "zip"),
        ),
        (
            "too many images",
            post(&estimates).multipart((0..31).fold(Form::new(), |f, i| {
                f.part("image", bytes_part(one_image.clone(), &format!("{i}.png")))
            })),
            (StatusCode::PAYLOAD_TOO_LARGE, "at most 30"),
        ),
        (
            "body too large",
            post(&estimates).multipart(Form::new().part(
                "image",
                bytes_part(vec![0u8; (2 << 20) + 16_384], "big.png"),
            )),
            (StatusCode::PAYLOAD_TOO_LARGE, "larger"),
        ),
        (
            "wrong content type",
            typed(&estimates, "text/plain", b"hello".to_vec()),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "multipart"),
        ),
        (
            "unknown form part",
            post(&estimates).multipart(images_form(&synthetic().join("batch")).text("imagez", "x")),
            (StatusCode::UNPROCESSABLE_ENTITY, "imagez"),
        ),
        (
            "duplicate image names",
            post(&estimates).multipart(
                Form::new()
                    .part("image", bytes_part(one_image.clone(), "a.png"))
                    .part("image", bytes_part(one_image.clone(), "a.png")),
            ),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "image part #1 and image part #2 have the same file name",
            ),
        ),
        (
            "unknown model",
            post(&format!("/v1/models/{}/estimates", uuid::Uuid::new_v4()))
                .multipart(one_image_form()),
            (StatusCode::NOT_FOUND, "does not exist"),
        ),
        (
            "malformed model id",
            post("/v1/models/not-a-uuid/estimates").multipart(one_image_form()),
            (StatusCode::NOT_FOUND, "no such"),
        ),
        (
            "no active calibration",
            post(&format!("/v1/models/{bare}/estimates")).multipart(one_image_form()),
            (StatusCode::CONFLICT, "no active calibration"),
        ),
        (
            "wrong ONNX signature",
            register(model_form("m1", SPEC, &corrupt("wrong_signature.onnx"))),
            (StatusCode::UNPROCESSABLE_ENTITY, "no input named"),
        ),
        (
            "garbage ONNX",
            register(model_form("m2", SPEC, &corrupt("garbage.onnx"))),
            (StatusCode::UNPROCESSABLE_ENTITY, "cannot load"),
        ),
        (
            "spec mismatch",
            register(model_form("m3", &three_channels, &ckpt)),
            (StatusCode::UNPROCESSABLE_ENTITY, "channels"),
        ),
        (
            "malformed spec JSON",
            register(model_form("m4", "{\"input\":", &ckpt)),
            (StatusCode::UNPROCESSABLE_ENTITY, "spec"),
        ),
        (
            "spec with unknown field",
            register(model_form("m5", &misspelt, &ckpt)),
            (StatusCode::UNPROCESSABLE_ENTITY, "scael"),
        ),
        (
            "missing ONNX part",
            register(Form::new().text("name", "m6").text("spec", SPEC)),
            (StatusCode::UNPROCESSABLE_ENTITY, "onnx"),
        ),
        (
            "invalid model name",
            register(model_form("bad name/..", SPEC, &ckpt)),
            (StatusCode::UNPROCESSABLE_ENTITY, "name"),
        ),
        (
            "duplicate model name",
            register(model_form("taken", SPEC, &ckpt)),
            (StatusCode::CONFLICT, "already exists"),
        ),
        (
            "registration as JSON",
            post("/v1/models").json(&serde_json::json!({"name": "m7"})),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "multipart"),
        ),
        (
            "unknown reverse segmenter",
            register(model_form("m8", SPEC, &ckpt).text(
                "reverse",
                format!("{{\"kind\":\"onnx\",\"id\":\"{}\"}}", uuid::Uuid::new_v4()),
            )),
            (StatusCode::UNPROCESSABLE_ENTITY, "not registered"),
        ),
        (
            "reference image without label",
            app.client
                .put(app.at(&format!("/v1/models/{id}/reference-set")))
                .bearer_auth(&app.admin)
                .multipart(Form::new().part("image", bytes_part(one_image.clone(), "x.png"))),
            (StatusCode::UNPROCESSABLE_ENTITY, "no label"),
        ),
        (
            "malformed pairs JSON",
            typed(&calibrations, "application/json", b"{\"points\": ".to_vec()),
            (StatusCode::BAD_REQUEST, ""),
        ),
        (
            "pairs of the wrong shape",
            post(&calibrations).json(&serde_json::json!({"points": [{"name": "a"}]})),
            (StatusCode::UNPROCESSABLE_ENTITY, ""),
        ),
        (
            "too few pairs",
            post(&calibrations).json(&serde_json::json!({"points": []})),
            (StatusCode::UNPROCESSABLE_ENTITY, "at least"),
        ),
        (
            "checkpoint not matching the spec",
            post(&calibrations).multipart(labelled_form(
                Form::new()
                    .part("checkpoint", file_part(&corrupt("wrong_signature.onnx")))
                    .part("checkpoint", file_part(&ckpt))
                    .part(
                        "checkpoint",
                        file_part(&synthetic().join("checkpoints/ckpt_05.onnx")),
                    ),
                &synthetic().join("calibration"),
            )),
            (StatusCode::UNPROCESSABLE_ENTITY, "wrong_signature"),
        ),
        (
            "too few checkpoints",
            post(&calibrations).multipart(labelled_form(
                Form::new().part("checkpoint", file_part(&ckpt)),
                &synthetic().join("calibration"),
            )),
            (StatusCode::UNPROCESSABLE_ENTITY, "at least 3"),
        ),
        (
            "invalid params",
            post(&calibrations).multipart(labelled_form(
                Form::new()
                    .text("params", "{\"support_size\":0}")
                    .part("checkpoint", file_part(&ckpt)),
                &synthetic().join("calibration"),
            )),
            (StatusCode::UNPROCESSABLE_ENTITY, "support_size"),
        ),
        (
            "no API key",
            app.client
                .post(app.at(&estimates))
                .multipart(one_image_form()),
            (StatusCode::UNAUTHORIZED, "Bearer"),
        ),
        (
            "unknown API key",
            app.client
                .post(app.at(&estimates))
                .bearer_auth("spe_0123456789ab.nope")
                .multipart(one_image_form()),
            (StatusCode::UNAUTHORIZED, "unknown"),
        ),
        (
            "bad Idempotency-Key",
            post(&estimates)
                .header("idempotency-key", "x".repeat(300))
                .multipart(one_image_form()),
            (StatusCode::BAD_REQUEST, "Idempotency-Key"),
        ),
        (
            "bad list cursor",
            app.client
                .get(app.at(&format!("{estimates}?cursor=zzz")))
                .bearer_auth(&app.reader),
            (StatusCode::BAD_REQUEST, "cursor"),
        ),
        (
            "unknown route",
            app.client
                .get(app.at("/v1/nothing"))
                .bearer_auth(&app.reader),
            (StatusCode::NOT_FOUND, "route"),
        ),
    ];
    // Broken images among a good batch: named by their part's position.
    cases.extend(
        [
            ("truncated.png", "(image part #13): unexpected end of file"),
            ("not_an_image.png", "(image part #13)"),
            ("zero_bytes.png", "(image part #13)"),
            ("huge_dims.png", "60000"),
        ]
        .map(|(file, needle)| {
            let request = post(&estimates).multipart(batch_with(&corrupt(file)));
            (file, request, (StatusCode::UNPROCESSABLE_ENTITY, needle))
        }),
    );
    let kinds = cases.len();
    for (what, request, (status, needle)) in cases {
        let r = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let problem = expect_problem(r, status).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains(needle),
            "{what}: detail {detail:?} lacks {needle:?}"
        );
        assert_eq!(
            app.footprint().await,
            before,
            "{what} left rows or blobs behind"
        );
    }
    assert!(kinds >= 15);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_queue_full_is_429_with_retry_after() {
    // No workers: jobs stay queued, so the queue fills.
    let app = TestApp::configured(|a| (a.max_queue, a.workers) = (1, 0)).await;
    let id = &reference_model_id(&app, "q").await;
    let point = |n: &str, v: f64| {
        let m = serde_json::json!({"dice": v, "jaccard": v, "precision": v, "recall": v, "hd95": 10.0 - v, "pearson": v});
        serde_json::json!({"name": n, "pseudo": m, "real": m})
    };
    let pairs = serde_json::json!({"points": [point("a", 0.1), point("b", 0.5), point("c", 0.9)]});
    let calibrations = format!("/v1/models/{id}/calibrations");
    let r = app.post_json(&calibrations, &app.admin, &pairs).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let path = format!("/v1/models/{id}/estimates");
    let submit = || {
        app.post_form(
            &path,
            &app.submitter,
            images_form(&synthetic().join("batch")),
        )
    };
    assert_eq!(submit().await.status(), StatusCode::ACCEPTED);
    let before = app.footprint().await;
    let r = submit().await;
    assert_eq!(r.headers()["retry-after"], "7");
    expect_problem(r, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(app.footprint().await, before);
    // The queue is checked before the body is read: a body that is not even multipart still gets 429.
    let r = app
        .client
        .post(app.at(&path))
        .bearer_auth(&app.submitter)
        .header("content-type", "multipart/form-data; boundary=XYZ")
        .body("this is not a multipart body")
        .send()
        .await
        .unwrap();
    expect_problem(r, StatusCode::TOO_MANY_REQUESTS).await;
    app.stop().await;
}

/// Uploads beyond the concurrency limit get 429 with Retry-After at once, while reads keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_concurrent_uploads_are_bounded() {
    let app = TestApp::configured(|a| a.max_concurrent_uploads = 2).await;
    let _first = crate::lifecycle::trickling_upload(&app).await;
    let _second = crate::lifecycle::trickling_upload(&app).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r = app
        .post_form(
            "/v1/models",
            &app.admin,
            images_form(&synthetic().join("batch")),
        )
        .await;
    assert_eq!(r.headers()["retry-after"], "7");
    let p = expect_problem(r, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(p["type"], "urn:spe:problem:too-many-uploads");
    assert_eq!(
        app.get("/v1/models", &app.reader).await.status(),
        StatusCode::OK
    );
    // Once the stuck uploads are gone, uploads are taken again.
    drop(_first);
    drop(_second);
    let started = std::time::Instant::now();
    loop {
        let form = reqwest::multipart::Form::new().text("name", "x");
        let r = app.post_form("/v1/models", &app.admin, form).await;
        if r.status() != StatusCode::TOO_MANY_REQUESTS {
            expect_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the permits never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    app.stop().await;
}

/// A client that writes its whole request before reading (as simple HTTP clients do) and returns the
/// status line, or the error that stopped it.
async fn send_all_then_read(
    url: &str,
    path: &str,
    headers: &str,
    body_len: usize,
) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Type: multipart/form-data; boundary=b\r\n\
         Content-Length: {body_len}\r\n\r\n"
    );
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let chunk = vec![0u8; 64 * 1024];
    let mut sent = 0;
    while sent < body_len {
        let n = chunk.len().min(body_len - sent);
        stream
            .write_all(&chunk[..n])
            .await
            .map_err(|e| format!("send failed after {sent} bytes: {e}"))?;
        sent += n;
    }
    let mut answer = vec![0u8; 512];
    let n = stream.read(&mut answer).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&answer[..n]).into_owned();
    Ok(text.lines().next().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_large_upload_rejected_early_still_gets_its_answer() {
    let app = TestApp::start().await;
    let id = &reference_model_id(&app, "early").await;
    let estimates = format!("/v1/models/{id}/estimates");
    let unknown = format!("/v1/models/{}/estimates", uuid::Uuid::new_v4());
    let bearer = |key: &str| format!("Authorization: Bearer {key}\r\n");
    // Rejected from the headers alone, before the handler reads a byte of the 24 MB body.
    let cases = [
        (estimates.as_str(), bearer("spe_nope.nope"), "401"),
        (estimates.as_str(), bearer(&app.reader), "403"),
        (unknown.as_str(), bearer(&app.submitter), "404"),
        (
            estimates.as_str(),
            format!("{}Idempotency-Key: \r\n", bearer(&app.submitter)),
            "400",
        ),
    ];
    for (path, headers, status) in cases {
        let line = send_all_then_read(&app.url, path, &headers, 24 << 20)
            .await
            .unwrap_or_else(|e| panic!("expected {status}, got: {e}"));
        assert!(line.contains(status), "expected {status}, got {line:?}");
    }
    app.stop().await;
}

/// The bounds the document declares on the protocol parameters are the server's: beyond them a
/// calibration is refused before any job is queued (u64::MAX repetitions would otherwise run for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_params_beyond_the_declared_bounds() {
    let app = TestApp::start().await;
    let model = model_with_reference(&app, "bounded").await;
    let calibrations = format!("/v1/models/{}/calibrations", model["id"].as_str().unwrap());
    let before = app.footprint().await;
    let ckpts = sorted_files(&synthetic().join("checkpoints"));
    let point = |n: &str, v: f64| {
        let m = serde_json::json!({"dice": v, "jaccard": v, "precision": v, "recall": v, "hd95": 10.0 - v, "pearson": v});
        serde_json::json!({"name": n, "pseudo": m, "real": m})
    };
    for (params, needle) in [
        (r#"{"support_size":1025}"#, "support_size is 1025"),
        (r#"{"repetitions":101}"#, "repetitions is 101"),
        (r#"{"repetitions":18446744073709551615}"#, "repetitions"),
        (r#"{"support_size":0}"#, "support_size"),
        (
            r#"{"seed":9223372036854775808}"#,
            "params.seed is 9223372036854775808",
        ),
    ] {
        let form = ckpts
            .iter()
            .take(3)
            .fold(Form::new(), |f, c| f.part("checkpoint", file_part(c)));
        let form = labelled_form(
            form.text("params", params),
            &synthetic().join("calibration"),
        );
        let r = app.post_form(&calibrations, &app.admin, form).await;
        let problem = expect_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(needle), "{params}: {detail}");
        let pairs = serde_json::json!({
            "points": [point("a", 0.1), point("b", 0.5), point("c", 0.9)],
            "params": serde_json::from_str::<serde_json::Value>(params).unwrap(),
        });
        let r = app.post_json(&calibrations, &app.admin, &pairs).await;
        let problem = expect_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(needle), "pairs {params}: {detail}");
        assert_eq!(app.footprint().await, before, "{params} left rows or blobs");
    }
    app.stop().await;
}
