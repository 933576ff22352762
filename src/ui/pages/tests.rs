use super::*;
use crate::engine::spe::{MetricEstimate, PseudoOutcome, SupportCount};
use crate::monitor::Rule;
use crate::store::results::{EstimateResult, V1};
use std::collections::BTreeMap;
use uuid::Uuid;

fn model_row(name: &str) -> ModelRow {
    ModelRow {
        id: Uuid::new_v4(),
        name: name.into(),
        spec: serde_json::json!({}),
        onnx_sha256: "0".repeat(64),
        onnx_size: 1,
        reverse_segmenter_id: None,
        reverse_sha256: None,
        onnx_threshold: None,
        reference_set_id: None,
        reference_size: None,
        active_calibration_id: None,
        created_at: Utc::now(),
    }
}

fn estimate(model: &ModelRow, dice: f64, alerts: Vec<Alert>) -> EstimateRow {
    let support = SupportCount {
        used: 6,
        rejected: 0,
    };
    let metrics = BTreeMap::from([(
        Metric::Dice,
        MetricEstimate {
            estimate: dice,
            interval: [dice - 0.02, dice + 0.02],
            pseudo: dice,
            agreement: None,
        },
    )]);
    EstimateRow {
        id: Uuid::new_v4(),
        model_id: model.id,
        kind: EstimateKind::Batch,
        calibration_id: Uuid::new_v4(),
        batch_set_id: Uuid::new_v4(),
        images: 6,
        result: Some(EstimateResult {
            version: V1,
            estimate: Estimate::Ok {
                metrics,
                support,
                anchor: None,
                warnings: vec![],
            },
            pseudo: PseudoOutcome::InsufficientSupport { support },
            hd95_mm: None,
            alerts,
        }),
        timings: None,
        created_at: Utc::now(),
        state: JobState::Succeeded,
        progress: 1.0,
        stage: "succeeded".into(),
        error: None,
        attempts: 1,
        started_at: None,
        finished_at: None,
        pixels_retained: false,
    }
}

fn alert(severity: Severity) -> Alert {
    Alert {
        metric: Metric::Dice,
        rule: "min".into(),
        threshold: Some(0.95),
        estimate: Some(0.9),
        interval: Some([0.88, 0.92]),
        severity,
    }
}

#[test]
fn text_from_the_database_is_escaped() {
    assert_eq!(
        esc(r#"<script>alert("x")</script> & 'y'"#),
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
    );
    let hostile = model_row("<img src=x onerror=alert(1)>");
    let page = overview(&[(hostile, None)]);
    assert!(!page.contains("<img src=x"), "{page}");
    assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
}

#[test]
fn pages_are_self_contained() {
    for page in [login(None), overview(&[]), error_page(404, "no such model")] {
        assert!(page.starts_with("<!doctype html>"));
        assert!(!page.contains("<script"), "no scripts");
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "nothing fetched from elsewhere"
        );
    }
    let form = login(Some("That API key is unknown or revoked."));
    assert!(form.contains(r#"<form method="post" action="/ui/login">"#));
    assert!(form.contains(r#"name="key" type="password""#));
    assert!(form.contains("unknown or revoked"));
}

#[test]
fn the_overview_shows_each_models_latest_state() {
    let (a, b, c) = (model_row("alpha"), model_row("beta"), model_row("gamma"));
    let alerting = estimate(&a, 0.81, vec![alert(Severity::Alert)]);
    let fine = estimate(&b, 0.93, vec![]);
    let page = overview(&[
        (a.clone(), Some(alerting)),
        (b.clone(), Some(fine)),
        (c, None),
    ]);
    assert!(page.contains(&format!(r#"href="/ui/models/{}">alpha</a>"#, a.id)));
    assert!(page.contains(r#"<span class="badge alert">Alert</span>"#));
    assert!(page.contains(r#"<span class="badge ok">OK</span>"#));
    assert!(page.contains(r#"<span class="badge muted">No estimate</span>"#));
    assert!(page.contains("<strong>0.930</strong>") && page.contains("0.910 – 0.950"));
}

#[test]
fn the_model_page_has_its_plots_thresholds_alerts_and_deliveries() {
    let m = model_row("heart");
    let estimates = vec![
        estimate(&m, 0.84, vec![alert(Severity::Alert)]),
        estimate(&m, 0.93, vec![alert(Severity::Warning)]),
    ];
    let thresholds = Thresholds::from([(
        Metric::Dice,
        Rule {
            min: Some(0.95),
            ..Rule::default()
        },
    )]);
    let window = WindowState {
        images: Some(24),
        pending: 5,
        held: 17,
    };
    let delivery = DeliveryRow {
        id: Uuid::new_v4(),
        event: "estimate.alert".into(),
        estimate_id: estimates[0].id,
        state: "delivered".into(),
        attempts: 2,
        last_status: Some(204),
        last_error: None,
        created_at: Utc::now(),
        next_attempt_at: None,
        delivered_at: Some(Utc::now()),
    };
    let page = model(&ModelPage {
        model: &m,
        estimates: &estimates,
        thresholds: &thresholds,
        window: &window,
        deliveries: std::slice::from_ref(&delivery),
        calibration_dice: Some(0.9123),
        estimates_plot: "<svg id=\"over-time\"></svg>",
        calibration_plot: None,
    });
    assert!(
        page.contains(r#"<div class="plot" id="estimates-plot"><svg id="over-time"></svg></div>"#)
    );
    assert!(page.contains("No active calibration yet"));
    assert!(page.contains("<strong>dice</strong>: min 0.95"));
    assert_eq!(
        page.matches(r#"<span class="badge alert">alert</span>"#)
            .count(),
        1
    );
    assert_eq!(
        page.matches(r#"<span class="badge warning">warning</span>"#)
            .count(),
        1
    );
    assert!(page.contains("0.912"), "calibration value");
    assert!(page.contains("17 of 24"), "window");
    assert!(
        page.contains("estimate.alert") && page.contains("<td class=\"num\">2</td><td>204</td>")
    );
    // The newest estimate decides the page's state.
    assert!(page.contains(r#"<h1>heart</h1><span class="badge alert">Alert</span>"#));
}
