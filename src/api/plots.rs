//! Plots as SVG (image/svg+xml), drawn on the server: a calibration's mapping and a model's estimates over
//! time, for an `<img>` or a browser without JavaScript.

use super::auth::Reader;
use super::dto::Binary;
use super::error::Problem;
use super::problems::{Busy, NotFound, Unauthorized};
use super::{ApiError, AppState, IdPath};
use crate::app::plots::{self as app, EstimatesQuery};
use crate::engine::metrics::Metric;
use crate::store::estimates::EstimateKind;
use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(calibration_plot))
        .routes(routes!(estimates_plot))
}

/// An SVG document as the response body.
pub struct Svg(pub String);

impl IntoResponse for Svg {
    fn into_response(self) -> Response {
        let mut response = self.0.into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("image/svg+xml"),
        );
        // The plots hold no script; should text ever smuggle markup in, the browser runs none of it.
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'"),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        // New estimates change the plot: revalidate rather than show a stale one.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    }
}

/// A metric the service estimates.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[expect(dead_code, reason = "only its schema is used")]
enum PlotMetric {
    Dice,
    Jaccard,
    Precision,
    Recall,
    Hd95,
    Pearson,
}

/// A kind of estimate.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[expect(dead_code, reason = "only its schema is used")]
enum PlotKind {
    Batch,
    Window,
}

/// `metric`, default dice; an unknown name is a 422 that lists the known ones.
fn metric(name: Option<&str>) -> Result<Metric, ApiError> {
    let Some(name) = name else {
        return Ok(Metric::Dice);
    };
    Metric::parse(name).ok_or_else(|| {
        let known: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
        ApiError::Unprocessable(format!(
            "metric {name:?} is not one this service estimates; use one of {}",
            known.join(", ")
        ))
    })
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CalibrationPlotParams {
    /// The metric to plot (default dice).
    #[param(inline, value_type = Option<PlotMetric>)]
    metric: Option<String>,
}

/// A calibration's mapping of one metric, as SVG (the paper's Figure 3).
///
/// Per checkpoint, the score the mapping reads (the pseudo metric, or its mix with the atlas agreement) against the real metric on the
/// calibration set, the fitted curve with the 95% interval of an estimate read off it, checkpoints left
/// out for want of support (at the left edge), and the fit's leave-one-out MAE and Pearson r.
#[utoipa::path(get, path = "/v1/calibrations/{id}/plot.svg", operation_id = "plotCalibration", tag = "calibrations",
    params(("id" = Uuid, Path, description = "Calibration id"), CalibrationPlotParams),
    responses(
        (status = 200, description = "The plot (an SVG document)", body = Binary, content_type = "image/svg+xml"),
        Unauthorized, NotFound, Busy,
        (status = 400, description = "An unknown query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The calibration has not succeeded (yet), or an older spe made it", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An unknown metric", body = Problem, content_type = "application/problem+json"),
    ))]
async fn calibration_plot(
    state: Reader,
    IdPath(id): IdPath,
    query: Result<Query<CalibrationPlotParams>, QueryRejection>,
) -> Result<Svg, ApiError> {
    let Query(params) = query?;
    let metric = metric(params.metric.as_deref())?;
    Ok(Svg(app::calibration(&state, id, metric).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EstimatesPlotParams {
    /// The metric to plot (default dice).
    #[param(inline, value_type = Option<PlotMetric>)]
    metric: Option<String>,
    /// Only estimates submitted at or after this time (RFC 3339); the time axis starts here.
    from: Option<DateTime<Utc>>,
    /// Only estimates submitted before this time (RFC 3339); the time axis ends here.
    to: Option<DateTime<Utc>>,
    /// Only batch estimates (`batch`) or rolling-window ones (`window`); both when absent.
    #[param(inline, value_type = Option<PlotKind>)]
    kind: Option<String>,
}

/// A model's estimates of one metric over time, as SVG.
///
/// Each succeeded estimate with its 95% interval as a band, the model's thresholds on the metric as they stand now, markers on estimates whose result
/// raised an alert or a warning, batches without an estimate (insufficient support) marked along the
/// time axis, and the deployed model's real value on its active calibration's split when known. At most
/// the newest 1000 estimates in the range are drawn (the subtitle says so when more matched); failed
/// jobs are left out.
#[utoipa::path(get, path = "/v1/models/{id}/estimates/plot.svg", operation_id = "plotEstimates", tag = "estimates",
    params(("id" = Uuid, Path, description = "Model id"), EstimatesPlotParams),
    responses(
        (status = 200, description = "The plot (an SVG document)", body = Binary, content_type = "image/svg+xml"),
        Unauthorized, NotFound, Busy,
        (status = 400, description = "An unknown or malformed query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An unknown metric or kind", body = Problem, content_type = "application/problem+json"),
    ))]
async fn estimates_plot(
    state: Reader,
    IdPath(id): IdPath,
    query: Result<Query<EstimatesPlotParams>, QueryRejection>,
) -> Result<Svg, ApiError> {
    let Query(params) = query?;
    let kind = match params.kind.as_deref() {
        None => None,
        Some("batch") => Some(EstimateKind::Batch),
        Some("window") => Some(EstimateKind::Window),
        Some(other) => {
            return Err(ApiError::Unprocessable(format!(
                "unknown kind {other:?}: use batch or window (or leave it out for both)"
            )))
        }
    };
    let query = EstimatesQuery {
        model: id,
        kind,
        metric: metric(params.metric.as_deref())?,
        from: params.from,
        to: params.to,
    };
    Ok(Svg(app::estimates(&state, query).await?))
}
