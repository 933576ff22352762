//! What the dashboard pages show, gathered in one place (the pages themselves are `ui::pages`).

use super::{AppError, Context};
use crate::engine::metrics::Metric;
use crate::monitor::Thresholds;
use crate::store::estimates::{self, EstimateRow, ListQuery};
use crate::store::models::{self, ModelRow};
use crate::store::webhooks::{self, DeliveryRow};
use crate::store::windows::WindowState;
use uuid::Uuid;

/// Estimates listed on a model's page (and in its plot).
pub const PAGE_ESTIMATES: i64 = 100;

/// Every model with its latest estimate, by name.
pub async fn overview(ctx: &Context) -> Result<Vec<(ModelRow, Option<EstimateRow>)>, AppError> {
    let models = models::list(&ctx.pool).await?;
    let mut latest = estimates::latest(&ctx.pool).await?;
    let mut out: Vec<_> = models
        .into_iter()
        .map(|m| {
            let row = latest
                .iter()
                .position(|e| e.model_id == m.id)
                .map(|i| latest.swap_remove(i));
            (m, row)
        })
        .collect();
    out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    Ok(out)
}

pub struct ModelData {
    pub model: ModelRow,
    /// Newest first.
    pub estimates: Vec<EstimateRow>,
    pub thresholds: Thresholds,
    pub window: WindowState,
    pub deliveries: Vec<DeliveryRow>,
    pub calibration_dice: Option<f64>,
    /// Inline SVG: the Dice estimate over time, and the active calibration's fit.
    pub estimates_plot: String,
    pub calibration_plot: Option<String>,
}

pub async fn model(ctx: &Context, id: Uuid) -> Result<ModelData, AppError> {
    let model = super::models::get(ctx, id).await?;
    let estimates = estimates::list(
        &ctx.pool,
        &ListQuery {
            model: id,
            from: None,
            to: None,
            state: None,
            kind: None,
            after: None,
            limit: PAGE_ESTIMATES,
        },
    )
    .await?;
    let thresholds = super::thresholds::get(ctx, id).await?;
    let window = super::windows::get(ctx, id).await?;
    let deliveries = webhooks::for_model(&ctx.pool, id, 20).await?;
    let calibration_dice = super::thresholds::ActiveBaseline::load(ctx, &model)
        .await?
        .value(Metric::Dice)
        .ok();
    let estimates_plot = super::plots::estimates(
        ctx,
        super::plots::EstimatesQuery {
            model: id,
            metric: Metric::Dice,
            kind: None,
            from: None,
            to: None,
        },
    )
    .await?;
    // A calibration still running (or one an older spe made) has nothing to plot yet: the page says so.
    let calibration_plot = match model.active_calibration_id {
        Some(cal) => match super::plots::calibration(ctx, cal, Metric::Dice).await {
            Ok(svg) => Some(svg),
            Err(AppError::NotReady(_) | AppError::InvalidInput(_)) => None,
            Err(e) => return Err(e),
        },
        None => None,
    };
    Ok(ModelData {
        model,
        estimates,
        thresholds,
        window,
        deliveries,
        calibration_dice,
        estimates_plot,
        calibration_plot,
    })
}
