//! Plots as SVG: a calibration's mapping and a model's estimates over time, as a browser fetches them.

use crate::common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// GETs a plot; asserts a 200 SVG and returns its text.
async fn svg(app: &TestApp, path: &str, query: &[(&str, &str)]) -> String {
    let r = send(
        app.request(reqwest::Method::GET, path, &app.reader)
            .query(query),
    )
    .await;
    let status = r.status();
    let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
    let body = r.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{path} {query:?}: {body}");
    assert_eq!(content_type, "image/svg+xml");
    assert!(body.starts_with("<svg ") && body.trim_end().ends_with("</svg>"));
    body
}

/// How many elements have exactly this class.
fn count(svg: &str, class: &str) -> usize {
    svg.matches(&format!(r#"class="{class}""#)).count()
}

async fn get_plot(app: &TestApp, path: &str, query: &[(&str, &str)]) -> reqwest::Response {
    send(
        app.request(reqwest::Method::GET, path, &app.reader)
            .query(query),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_plots_show_what_the_calibration_and_the_estimates_hold() {
    let app = TestApp::start().await;
    let (id, cal) = calibrated_model(&app, "plotted").await;
    let cal_id = cal["id"].as_str().unwrap();

    // The calibration: one marker per checkpoint, the excluded ones told apart, the curve and its band.
    let cal_path = format!("/v1/calibrations/{cal_id}/plot.svg");
    let cal_plot = svg(&app, &cal_path, &[("metric", "dice")]).await;
    let checkpoints = cal["result"]["checkpoints"].as_array().unwrap().len();
    let excluded = cal["result"]["excluded"].as_array().unwrap().len();
    assert!(excluded >= 1, "the synthetic ckpt_00 finds nothing: {cal}");
    assert_eq!(count(&cal_plot, "checkpoint"), checkpoints - excluded);
    assert_eq!(count(&cal_plot, "checkpoint excluded"), excluded);
    assert_eq!((count(&cal_plot, "fit"), count(&cal_plot, "band")), (1, 1));
    let mae = cal["result"]["fits"]["dice"]["loo_mae"].as_f64().unwrap();
    assert!(
        cal_plot.contains(&format!("leave-one-out MAE {}", spe::plot::statistic(mae))),
        "{cal_plot}"
    );
    // The metric defaults to dice; another one is plotted on its own axis.
    assert_eq!(svg(&app, &cal_path, &[]).await, cal_plot);
    let hd95 = svg(&app, &cal_path, &[("metric", "hd95")]).await;
    assert!(hd95.contains("real HD95 on the calibration set (px)"));

    // The estimates, before any: an empty plot that says so.
    let est_path = format!("/v1/models/{id}/estimates/plot.svg");
    let empty = svg(&app, &est_path, &[]).await;
    assert!(empty.contains(">no estimates yet<"), "{empty}");
    assert_eq!(count(&empty, "point"), 0);

    // Two estimates, then a threshold no model reaches, then one that breaks it.
    let batch = || images_form(&synthetic().join("batch"));
    let first = estimate_ok(&app, &id, batch()).await;
    let second = estimate_ok(&app, &id, batch()).await;
    let r = send(
        app.request(
            reqwest::Method::PUT,
            &format!("/v1/models/{id}/thresholds"),
            &app.admin,
        )
        .json(&json!({"dice": {"min": 0.99}})),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let third = estimate_ok(&app, &id, batch()).await;
    assert_eq!(third["result"]["alerts"][0]["severity"], "alert", "{third}");

    let plot = svg(&app, &est_path, &[("metric", "dice"), ("kind", "batch")]).await;
    // Kept for a look: target/tmp/plots/.
    let keep = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("plots");
    std::fs::create_dir_all(&keep).unwrap();
    std::fs::write(keep.join("estimates.svg"), &plot).unwrap();
    std::fs::write(keep.join("calibration.svg"), &cal_plot).unwrap();
    assert_eq!(count(&plot, "point"), 3, "{plot}");
    assert_eq!(count(&plot, "band"), 1);
    assert_eq!(count(&plot, "threshold"), 1);
    assert!(plot.contains(">min 0.990<"));
    assert_eq!(count(&plot, "alert"), 1, "the third estimate's alert");
    // The registered model is one of the checkpoints: its real Dice on the calibration split is known.
    assert_eq!(count(&plot, "calibration-reference"), 1);
    let real = cal["result"]["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "ckpt_07")
        .map(|c| c["real"]["dice"].as_f64().unwrap())
        .unwrap();
    assert!(plot.contains(&format!("calibration value {real:.3}")));

    // from/to select on submission time, like the estimates list.
    let at = |e: &Value| e["created_at"].as_str().unwrap().to_string();
    let (from, to) = (at(&second), at(&third));
    let later = svg(&app, &est_path, &[("from", &from)]).await;
    assert_eq!(count(&later, "point"), 2);
    let between = svg(&app, &est_path, &[("from", &at(&first)), ("to", &to)]).await;
    assert_eq!(count(&between, "point"), 2);
    assert_eq!(count(&between, "alert"), 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plot_requests_that_cannot_be_answered_say_why() {
    // No workers: a queued calibration stays without a result.
    let app = TestApp::configured(|a| a.workers = 0).await;
    let model = model_with_reference(&app, "waiting").await;
    let id = model["id"].as_str().unwrap();
    let checkpoints = sorted_files(&synthetic().join("checkpoints"));
    let location = queue_calibration(
        &app,
        id,
        Some(FAST),
        &checkpoints,
        &synthetic().join("calibration"),
    )
    .await;
    let cal_path = format!("{location}/plot.svg");
    let problem = expect_problem(get_plot(&app, &cal_path, &[]).await, StatusCode::CONFLICT).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("no result yet") && detail.contains("poll"),
        "{detail}"
    );

    let est_path = format!("/v1/models/{id}/estimates/plot.svg");
    for (path, query, status, says) in [
        (
            &cal_path,
            ("metric", "dise"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "hd95",
        ),
        (
            &est_path,
            ("metric", "dise"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "one of dice",
        ),
        (
            &est_path,
            ("kind", "windows"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "use batch or window",
        ),
        (
            &est_path,
            ("colour", "red"),
            StatusCode::BAD_REQUEST,
            "colour",
        ),
        (
            &est_path,
            ("from", "yesterday"),
            StatusCode::BAD_REQUEST,
            "from",
        ),
    ] {
        let problem = expect_problem(get_plot(&app, path, &[query]).await, status).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{path} {query:?}: {detail}");
    }
    let unknown = uuid::Uuid::new_v4();
    for path in [
        format!("/v1/calibrations/{unknown}/plot.svg"),
        format!("/v1/models/{unknown}/estimates/plot.svg"),
    ] {
        expect_problem(get_plot(&app, &path, &[]).await, StatusCode::NOT_FOUND).await;
    }
    app.stop().await;
}
