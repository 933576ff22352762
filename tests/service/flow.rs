//! The whole flow on the repo's synthetic fixtures: register -> reference set -> calibrate -> estimate -> poll.

use crate::common::*;
use reqwest::multipart::Form;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;

fn real_batch_dice(checkpoint: &str) -> f64 {
    let text = std::fs::read_to_string(synthetic().join("checkpoint_metrics.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["checkpoints"][checkpoint]["batch"]["mean_dice"]
        .as_f64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_register_calibrate_estimate_poll() {
    let app = TestApp::start().await;
    let (id, cal) = calibrated_model(&app, "synthetic").await;
    let result = &cal["result"];
    assert_eq!(cal["active"], true);
    assert_eq!(cal["source"], "checkpoints");
    assert_eq!(result["checkpoints"].as_array().unwrap().len(), 8, "{cal}");
    assert_eq!(
        result["excluded"],
        serde_json::json!(["ckpt_00"]),
        "the all-empty checkpoint is left out"
    );
    for metric in ["dice", "jaccard", "precision", "recall", "hd95", "pearson"] {
        assert!(
            result["fits"][metric]["loo_mae"].is_number(),
            "{metric}: {cal}"
        );
    }
    // A mapping per batch size, smallest first; the atlas agreement's weight is reported with each fit.
    let sizes: Vec<u64> = result["level_sizes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(
        sizes.len() >= 3 && sizes.windows(2).all(|w| w[0] < w[1]),
        "{sizes:?}"
    );
    assert!(
        result["fits"]["dice"]["agreement_weight"].is_number(),
        "{cal}"
    );
    let model = app.get_json(&format!("/v1/models/{id}"), &app.reader).await;
    assert_eq!(model["active_calibration_id"], cal["id"]);
    assert_eq!(model["reference_set"]["images"], 24);
    assert_eq!(
        model["reverse_segmenter"],
        serde_json::json!({"kind": "label_fusion"})
    );
    // Label fusion has no threshold, and the model stores none.
    let stored: Option<f32> = sqlx::query_scalar("SELECT onnx_threshold FROM models WHERE id = $1")
        .bind(uuid::Uuid::parse_str(&id).unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, None);

    let r = app
        .post_form(
            &format!("/v1/models/{id}/estimates"),
            &app.submitter,
            images_form(&synthetic().join("batch")),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let queued: Value = r.json().await.unwrap();
    assert!(matches!(
        queued["status"].as_str(),
        Some("queued" | "running" | "succeeded")
    ));
    assert_eq!(
        location,
        format!("/v1/estimates/{}", queued["id"].as_str().unwrap())
    );
    let est = app.wait(&location, Duration::from_secs(120)).await;
    assert_eq!(est["status"], "succeeded", "{est}");
    assert_eq!(est["images"], 12);
    let dice = &est["result"]["metrics"]["dice"];
    let estimate = dice["estimate"].as_f64().unwrap();
    let real = real_batch_dice("ckpt_07");
    eprintln!("synthetic ckpt_07: estimated dice {estimate:.4}, real {real:.4}; {est}");
    assert!(
        (estimate - real).abs() < 0.1,
        "estimate {estimate} vs real {real}"
    );
    let [lo, hi] = [
        dice["interval"][0].as_f64().unwrap(),
        dice["interval"][1].as_f64().unwrap(),
    ];
    assert!(lo <= estimate && estimate <= hi && hi <= 1.0);
    // The registered model is ckpt_07, one of the calibration checkpoints: the estimate is anchored there.
    assert_eq!(est["result"]["anchor"], "ckpt_07", "{est}");
    assert!(est["result"]["warnings"].is_array(), "{est}");
    assert!(dice["agreement"].is_number(), "{est}");
    assert_eq!(
        est["result"]["pseudo_per_repetition"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(est["timings"]["total_s"].as_f64().unwrap() > 0.0);
    let sessions_s = est["timings"]["sessions_s"].as_f64().unwrap();
    assert!(
        sessions_s >= 0.0 && sessions_s <= est["timings"]["compute_s"].as_f64().unwrap(),
        "{est}"
    );

    // The same batch as a zip body.
    let entries: Vec<(String, Vec<u8>)> = sorted_files(&synthetic().join("batch"))
        .iter()
        .map(|p| {
            (
                format!("batch/{}", p.file_name().unwrap().to_string_lossy()),
                std::fs::read(p).unwrap(),
            )
        })
        .collect();
    let r = app
        .client
        .post(app.at(&format!("/v1/models/{id}/estimates")))
        .bearer_auth(&app.submitter)
        .header("content-type", "application/zip")
        .body(zip_of(&entries))
        .send()
        .await
        .unwrap();
    let second = wait_succeeded(&app, &accepted_location(&r), Duration::from_secs(120)).await;
    // Same images, same seed: the same numbers.
    assert_eq!(second["result"]["metrics"], est["result"]["metrics"]);

    let page = app
        .get_json(&format!("/v1/models/{id}/estimates?limit=1"), &app.reader)
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["id"], second["id"], "newest first");
    let cursor = page["next_cursor"].as_str().unwrap();
    let page2 = app
        .get_json(
            &format!("/v1/models/{id}/estimates?limit=1&cursor={cursor}"),
            &app.reader,
        )
        .await;
    assert_eq!(page2["items"][0]["id"], est["id"]);
    assert!(page2["next_cursor"].is_null());
    let future = app
        .get_json(
            &format!("/v1/models/{id}/estimates?from=2999-01-01T00:00:00Z"),
            &app.reader,
        )
        .await;
    assert!(future["items"].as_array().unwrap().is_empty());

    let metrics = send(app.client.get(app.at("/metrics"))).await;
    let metrics = metrics.text().await.unwrap();
    assert!(metrics.contains("spe_latest_estimate"), "{metrics}");
    assert!(metrics.contains("spe_queue_depth"));

    // Deleting the model removes every row and blob it owned.
    let path = format!("/v1/models/{id}");
    let r = app.send_empty(Method::DELETE, &path, &app.admin).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.footprint().await, (0, 0));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_calibrate_from_pairs_and_masks() {
    let app = TestApp::start().await;
    let id = &reference_model_id(&app, "pairs").await;
    let point = |name: &str, p: f64, r: f64| {
        let m = |d: f64| serde_json::json!({"dice": d, "jaccard": d * 0.9, "precision": d, "recall": d, "hd95": 30.0 * (1.0 - d), "pearson": d});
        serde_json::json!({"name": name, "pseudo": m(p), "real": m(r)})
    };
    let body = serde_json::json!({
        "points": [point("a", 0.2, 0.3), point("b", 0.4, 0.5), point("c", 0.6, 0.7), point("d", 0.7, 0.85),
                   {"name": "empty", "pseudo": null, "real": {"dice": 0, "jaccard": 0, "precision": 0, "recall": 0, "hd95": 181.0, "pearson": 0}}],
        "params": {"support_size": 8, "repetitions": 2}
    });
    let calibrations = format!("/v1/models/{id}/calibrations");
    let r = app.post_json(&calibrations, &app.admin, &body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let cal: Value = r.json().await.unwrap();
    assert_eq!(cal["status"], "succeeded");
    assert_eq!(cal["source"], "pairs");
    assert_eq!(cal["active"], true);
    assert_eq!(cal["result"]["excluded"], serde_json::json!(["empty"]));
    assert_eq!(cal["params"]["support_size"], 8);

    // Predicted masks per checkpoint: the real model's predictions, encoded as 0/255 PNGs.
    let runtime = spe::inference::Runtime::init(Default::default()).unwrap();
    let spec = spe::inference::ModelSpec::parse(SPEC).unwrap();
    let cal_set =
        spe::engine::image_io::load_labelled_dir(&synthetic().join("calibration"), 1 << 24)
            .unwrap();
    let mut entries = Vec::new();
    for ckpt in ["ckpt_00", "ckpt_03", "ckpt_05", "ckpt_07"] {
        let bytes = std::fs::read(synthetic().join(format!("checkpoints/{ckpt}.onnx"))).unwrap();
        let model = spe::inference::SegModel::load(&runtime, &bytes, ckpt, &spec).unwrap();
        for (name, mask) in cal_set
            .names
            .iter()
            .zip(model.predict(&cal_set.images).unwrap())
        {
            let (h, w) = mask.dim();
            let pixels: Vec<u8> = mask.iter().map(|&v| if v { 255 } else { 0 }).collect();
            let img = image::GrayImage::from_raw(w as u32, h as u32, pixels).unwrap();
            let mut png = std::io::Cursor::new(Vec::new());
            img.write_to(&mut png, image::ImageFormat::Png).unwrap();
            entries.push((format!("{ckpt}/{name}.png"), png.into_inner()));
        }
    }
    let form = labelled_form(
        Form::new().text("params", FAST),
        &synthetic().join("calibration"),
    )
    .part(
        "masks",
        reqwest::multipart::Part::bytes(zip_of(&entries)).file_name("masks.zip"),
    );
    let r = app.post_form(&calibrations, &app.admin, form).await;
    let done = wait_succeeded(&app, &accepted_location(&r), Duration::from_secs(120)).await;
    assert_eq!(done["source"], "masks");
    assert_eq!(done["result"]["excluded"], serde_json::json!(["ckpt_00"]));
    assert_eq!(done["active"], true);
    let list = app.get_json(&calibrations, &app.reader).await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(
        items.iter().filter(|c| c["active"] == true).count(),
        1,
        "one active calibration per model"
    );
    // Re-activate the pairs calibration.
    let activate = format!("/v1/calibrations/{}/activate", cal["id"].as_str().unwrap());
    let r = app.send_empty(Method::POST, &activate, &app.admin).await;
    assert_eq!(r.status(), StatusCode::OK);
    let model = app.get_json(&format!("/v1/models/{id}"), &app.reader).await;
    assert_eq!(model["active_calibration_id"], cal["id"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_with_a_registered_onnx_reverse_segmenter() {
    let app = TestApp::start().await;
    let reverse = register_tiny_reverse(&app, "universeg-tiny").await;
    let rid = reverse["id"].as_str().unwrap();
    let listed = app.get_json("/v1/reverse-segmenters", &app.reader).await;
    assert_eq!(listed["items"][0]["id"], reverse["id"]);
    // A segmentation model is not a UniverSeg-contract model.
    let bad = Form::new()
        .text("name", "not-universeg")
        .part("onnx", file_part(&last_checkpoint()));
    expect_problem(
        app.post_form("/v1/reverse-segmenters", &app.admin, bad)
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;

    let out_of_range = model_form("bad-threshold", SPEC, &last_checkpoint()).text(
        "reverse",
        format!(r#"{{"kind":"onnx","id":"{rid}","threshold":1.5}}"#),
    );
    let problem = expect_problem(
        app.post_form("/v1/models", &app.admin, out_of_range).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("strictly between 0 and 1"),
        "{problem}"
    );

    let form = model_form("with-universeg", SPEC, &last_checkpoint())
        .text("reverse", format!(r#"{{"kind":"onnx","id":"{rid}"}}"#));
    let model = register_model(&app, form).await;
    assert_eq!(
        model["reverse_segmenter"],
        serde_json::json!({"kind": "onnx", "id": rid, "threshold": 0.4}),
        "the default threshold"
    );
    let id = model["id"].as_str().unwrap();
    let model_id = uuid::Uuid::parse_str(id).unwrap();
    let (stored, legacy): (Option<f32>, f32) =
        sqlx::query_as("SELECT onnx_threshold, reverse_threshold FROM models WHERE id = $1")
            .bind(model_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        (stored, legacy),
        (Some(0.4), 0.4),
        "the previous release's column is kept filled for its replicas"
    );
    put_reference_set(&app, id, &synthetic().join("reference")).await;
    let checkpoints: Vec<_> = ["ckpt_03", "ckpt_05", "ckpt_07"]
        .iter()
        .map(|c| synthetic().join(format!("checkpoints/{c}.onnx")))
        .collect();
    let params = r#"{"support_size":4,"repetitions":1}"#;
    let calibration = synthetic().join("calibration");
    let location = queue_calibration(&app, id, Some(params), &checkpoints, &calibration).await;
    let cal = wait_succeeded(&app, &location, Duration::from_secs(300)).await;
    // Named by the digest, as the CLI names it too.
    assert_eq!(
        cal["result"]["reverse"],
        format!(
            "onnx(sha256:{},threshold=0.4)",
            reverse["onnx"]["sha256"].as_str().unwrap()
        ),
        "{cal}"
    );
    let estimates = format!("/v1/models/{id}/estimates");
    let r = app
        .post_form(
            &estimates,
            &app.submitter,
            images_form(&synthetic().join("batch")),
        )
        .await;
    wait_succeeded(&app, &accepted_location(&r), Duration::from_secs(300)).await;
    // A row as a replica of the previous release writes it: only the old column holds the threshold.
    sqlx::query("UPDATE models SET onnx_threshold = NULL, reverse_threshold = 0.3 WHERE id = $1")
        .bind(model_id)
        .execute(&app.pool)
        .await
        .unwrap();
    let model = app.get_json(&format!("/v1/models/{id}"), &app.reader).await;
    assert_eq!(model["reverse_segmenter"]["threshold"], 0.3);
    // Interactive docs and the document they read.
    let docs = app.client.get(app.at("/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    let api = send(app.client.get(app.at("/openapi.json"))).await;
    let api: Value = api.json().await.unwrap();
    assert!(api["paths"]["/v1/models"].is_object());
    app.stop().await;
}
