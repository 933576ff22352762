//! Alert thresholds of a model (see [`crate::monitor`]).

use super::{existing, AppError, Context};
use crate::engine::metrics::Metric;
use crate::monitor::{self, Baseline, Thresholds};
use crate::store::calibrations;
use crate::store::models::{self, ModelRow};
use crate::store::results::StoredCalibration;
use uuid::Uuid;

/// The model's thresholds (empty when none are set).
pub async fn get(ctx: &Context, id: Uuid) -> Result<Thresholds, AppError> {
    existing(models::thresholds(&ctx.pool, id).await?, "model", id)
}

/// What relative rules resolve against: the model's active calibration, seen from its ONNX.
pub struct ActiveBaseline {
    active: Option<StoredCalibration>,
    onnx_sha256: String,
}

impl ActiveBaseline {
    pub async fn load(ctx: &Context, model: &ModelRow) -> Result<Self, AppError> {
        let active = match model.active_calibration_id {
            Some(cal) => calibrations::get(&ctx.pool, cal)
                .await?
                .and_then(|row| row.result),
            None => None,
        };
        Ok(Self {
            active,
            onnx_sha256: model.onnx_sha256.clone(),
        })
    }

    /// The deployed model's real value of `metric` on the active calibration's split (see
    /// [`Baseline::value`]), or why it is unknown.
    pub fn value(&self, metric: Metric) -> Result<f64, String> {
        match &self.active {
            None => Err("the model has no active calibration".to_string()),
            Some(StoredCalibration::Older { format }) => Err(format!(
                "its active calibration has format {format:?}, which this spe does not read"
            )),
            Some(StoredCalibration::Current(calibration)) => Baseline {
                calibration,
                onnx_sha256: &self.onnx_sha256,
            }
            .value(metric),
        }
    }
}

/// Replaces the model's thresholds (an empty map removes them) after checking every rule. A rule relative
/// to the calibration value needs the deployed model among the active calibration's checkpoints. Stored
/// estimates keep the alerts they were computed with.
pub async fn set(ctx: &Context, id: Uuid, thresholds: Thresholds) -> Result<Thresholds, AppError> {
    let model = super::models::get(ctx, id).await?;
    let baseline = ActiveBaseline::load(ctx, &model).await?;
    monitor::validate(&thresholds, |metric| baseline.value(metric))
        .map_err(|e| AppError::InvalidInput(e.to_string()))?;
    let stored = models::set_thresholds(&ctx.pool, id, &thresholds).await?;
    existing(stored.then_some(thresholds), "model", id)
}
