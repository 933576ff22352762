//! Plots as SVG: a calibration's mapping and a model's estimates over time, loaded here and drawn by
//! [`crate::plot`].

use super::thresholds::ActiveBaseline;
use super::{AppError, Context};
use crate::engine::metrics::Metric;
use crate::engine::spe::Estimate;
use crate::monitor::Severity;
use crate::plot::{self, EstimatePoint, EstimatesPlot};
use crate::store::estimates::{self, EstimateKind, EstimateRow, ListQuery};
use crate::store::models;
use crate::store::results::StoredCalibration;
use crate::store::JobState;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Most estimates one plot shows: the newest in the range (a year of hourly batches would be a
/// megabyte of SVG, and no more readable).
pub const MAX_PLOTTED: usize = 1000;

/// The calibration plot of `metric`: [`AppError::NotReady`] until the calibration has a result this spe
/// reads.
pub async fn calibration(ctx: &Context, id: Uuid, metric: Metric) -> Result<String, AppError> {
    let row = super::calibrations::get(ctx, id).await?;
    let calibration = match &row.result {
        Some(StoredCalibration::Current(calibration)) => calibration,
        Some(StoredCalibration::Older { format }) => {
            return Err(AppError::NotReady(format!(
                "calibration {id} has format {format:?}, made by an older spe that this one does not \
                 plot; calibrate again (POST /v1/models/{}/calibrations)",
                row.model_id
            )))
        }
        None if row.state == JobState::Failed => {
            return Err(AppError::NotReady(format!(
                "calibration {id} failed, so it has no mapping to plot; GET /v1/calibrations/{id} says why"
            )))
        }
        None => {
            return Err(AppError::NotReady(format!(
                "calibration {id} is {} and has no result yet; plot it once it has succeeded (poll GET \
                 /v1/calibrations/{id})",
                row.state
            )))
        }
    };
    let model = super::models::get(ctx, row.model_id).await?;
    plot::calibration_svg(calibration, metric, &model.name)
        .map_err(|e| AppError::InvalidInput(format!("calibration {id}: {e}")))
}

/// Which estimates to plot.
pub struct EstimatesQuery {
    pub model: Uuid,
    pub metric: Metric,
    /// Only batch or only rolling-window estimates; both when None.
    pub kind: Option<EstimateKind>,
    /// Submitted at or after.
    pub from: Option<DateTime<Utc>>,
    /// Submitted before.
    pub to: Option<DateTime<Utc>>,
}

/// The plot of a model's estimates of one metric: the newest [`MAX_PLOTTED`] succeeded ones in the range,
/// the model's thresholds on that metric as they stand now, and the deployed model's real value on its
/// active calibration's split (which relative thresholds resolve against) when known.
pub async fn estimates(ctx: &Context, q: EstimatesQuery) -> Result<String, AppError> {
    let model = super::models::get(ctx, q.model).await?;
    // Failed jobs are left out: a failure says nothing about the model (the estimates list shows them).
    let mut rows = estimates::list(
        &ctx.pool,
        &ListQuery {
            model: q.model,
            from: q.from,
            to: q.to,
            state: Some(JobState::Succeeded),
            kind: q.kind,
            after: None,
            limit: MAX_PLOTTED as i64 + 1,
        },
    )
    .await?;
    let capped = (rows.len() > MAX_PLOTTED).then_some(MAX_PLOTTED);
    rows.truncate(MAX_PLOTTED);
    let points: Vec<EstimatePoint> = rows.iter().filter_map(|r| point(r, q.metric)).collect();
    let thresholds = models::thresholds(&ctx.pool, q.model)
        .await?
        .unwrap_or_default();
    let calibration_value = ActiveBaseline::load(ctx, &model)
        .await?
        .value(q.metric)
        .ok();
    let bounds = thresholds
        .get(&q.metric)
        .map(|rule| rule.bounds(calibration_value))
        .unwrap_or_default();
    Ok(plot::estimates_svg(&EstimatesPlot {
        subject: &model.name,
        metric: q.metric,
        points: &points,
        thresholds: &bounds,
        calibration_value,
        range: (q.from, q.to),
        capped,
    }))
}

/// A stored estimate as a plot point: its value of `metric` and the worst alert it raised on it.
fn point(row: &EstimateRow, metric: Metric) -> Option<EstimatePoint> {
    let result = row.result.as_ref()?;
    let value = match &result.estimate {
        Estimate::Ok { metrics, .. } => {
            let m = metrics.get(&metric)?;
            Some((m.estimate, m.interval))
        }
        Estimate::InsufficientSupport { .. } => None,
    };
    let severities = result.alerts.iter().filter(|a| a.metric == metric);
    let severity = severities
        .map(|a| a.severity)
        .max_by_key(|s| matches!(s, Severity::Alert));
    Some(EstimatePoint {
        at: row.created_at,
        value,
        severity,
    })
}
