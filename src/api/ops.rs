//! Operations: liveness, readiness, Prometheus metrics.

use super::auth::authenticate;
use super::dto::{Health, HealthChecks};
use super::error::Problem;
use super::problems::Unauthorized;
use super::{ApiError, AppState};
use crate::engine::metrics::Metric;
use crate::engine::spe::Estimate;
use crate::monitor::Severity;
use crate::store::estimates;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use utoipa_axum::{router::OpenApiRouter, routes};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics_text))
}

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use (`metrics` has one global recorder per
/// process; None if something else installed one first).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok().map(|()| handle)
        })
        .as_ref()
}

async fn guard(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    // Any valid key (every role can read) opens them when they are not public.
    if !state.open_ops {
        authenticate(headers, state).await?;
    }
    Ok(())
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", operation_id = "getLiveness", tag = "operations", security(()),
    responses((status = 200, body = Health), (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn healthz(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Health>, ApiError> {
    guard(&state, &headers).await?;
    Ok(Json(Health {
        status: "ok".into(),
        checks: HealthChecks::default(),
    }))
}

/// Readiness: the database and the blob store answer, ONNX Runtime is loaded, and the process is not
/// shutting down.
#[utoipa::path(get, path = "/readyz", operation_id = "getReadiness", tag = "operations", security(()),
    responses(
        (status = 200, body = Health),
        (status = 503, description = "Not ready; `checks` says why", body = Health),
        Unauthorized,
    ))]
async fn readyz(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<Health>), ApiError> {
    guard(&state, &headers).await?;
    let mut checks = HealthChecks {
        database: Some(reachable("database", crate::store::ping(&state.pool).await)),
        onnxruntime: Some(match &state.runtime {
            Ok(rt) => format!("ok ({})", rt.provider()),
            Err(e) => e.clone(),
        }),
        blob_store: Some(reachable("blob store", state.blobs.check().await)),
        ..HealthChecks::default()
    };
    if state.draining.load(std::sync::atomic::Ordering::SeqCst) {
        checks.shutdown = Some("draining: shutting down".to_string());
    }
    let ready = checks.all_ok();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let health = Health {
        status: if ready { "ready" } else { "not ready" }.into(),
        checks,
    };
    Ok((status, Json(health)))
}

/// A readiness check's answer; why it failed goes to the log only.
fn reachable<T, E: std::fmt::Display>(what: &str, result: Result<T, E>) -> String {
    match result {
        Ok(_) => "ok".to_string(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: {what} unreachable");
            "unreachable".to_string()
        }
    }
}

/// Prometheus metrics: requests, job durations, queue depth, and per model and metric its latest estimate
/// with interval (`spe_estimate{bound}`) and whether it raised an alert (`spe_alert_active`).
#[utoipa::path(get, path = "/metrics", operation_id = "getMetrics", tag = "operations", security(()),
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"), Unauthorized))]
async fn metrics_text(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    guard(&state, &headers).await?;
    // Gauges that describe shared state are read from the database at scrape time, so every API replica
    // reports the same numbers however the workers are spread.
    for (kind, st, n) in crate::jobs::queue::depth_by_kind(&state.pool).await? {
        metrics::gauge!("spe_queue_depth", "kind" => kind.as_str(), "state" => st.as_str())
            .set(n as f64);
    }
    for (model, result) in estimates::latest_per_model(&state.pool).await? {
        let estimated = match &result.estimate {
            Estimate::Ok { metrics, .. } => Some(metrics),
            Estimate::InsufficientSupport { .. } => None,
        };
        for metric in Metric::ALL {
            let name = metric.name();
            let value = estimated.and_then(|m| m.get(&metric));
            if let Some(value) = value {
                metrics::gauge!("spe_latest_estimate", "model" => model.clone(), "metric" => name)
                    .set(value.estimate);
                let [lower, upper] = value.interval;
                for (bound, v) in [
                    ("estimate", value.estimate),
                    ("lower", lower),
                    ("upper", upper),
                ] {
                    metrics::gauge!("spe_estimate", "model" => model.clone(), "metric" => name, "bound" => bound)
                        .set(v);
                }
            }
            let mut alerts = result
                .alerts
                .iter()
                .filter(|a| a.metric == metric)
                .peekable();
            if value.is_some() || alerts.peek().is_some() {
                let active = alerts.any(|a| a.severity == Severity::Alert);
                metrics::gauge!("spe_alert_active", "model" => model.clone(), "metric" => name)
                    .set(if active { 1.0 } else { 0.0 });
            }
        }
    }
    let body = prometheus().map(|h| h.render()).unwrap_or_default();
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body))
}
