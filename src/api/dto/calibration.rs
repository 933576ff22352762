//! Calibrations: what GET /v1/calibrations/{id} returns, and the pairs a calibration can be fitted from.

use super::{per_metric, JobStatus, Metrics, Params, Progress, Support};
use crate::engine::fit::{Calibration, Fit, Mapping};
use crate::engine::spe::PseudoOutcome;
use crate::store::calibrations::CalibrationRow;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;
use uuid::Uuid;

/// A fitted mapping's parameters, by form (`kind`); mirrors the engine's mapping.
#[derive(Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MappingParameters {
    /// real = intercept + slope * pseudo
    Linear { intercept: f64, slope: f64 },
    /// real = c0 + c1 p + c2 p^2 on the fitted range [lo, hi], continued linearly outside.
    Quadratic {
        #[schema(min_items = 3, max_items = 3)]
        coefficients: [f64; 3],
        #[schema(min_items = 2, max_items = 2)]
        range: [f64; 2],
    },
    /// real = intercept + slope * ln(1 + pseudo)
    Log { intercept: f64, slope: f64 },
    /// Monotone interpolation through the points (x, y); flat outside.
    Isotonic { x: Vec<f64>, y: Vec<f64> },
}

impl From<&Mapping> for MappingParameters {
    fn from(m: &Mapping) -> Self {
        match m.clone() {
            Mapping::Linear { intercept, slope } => MappingParameters::Linear { intercept, slope },
            Mapping::Quadratic {
                coefficients,
                range,
            } => MappingParameters::Quadratic {
                coefficients,
                range,
            },
            Mapping::Log { intercept, slope } => MappingParameters::Log { intercept, slope },
            Mapping::Isotonic { x, y } => MappingParameters::Isotonic { x, y },
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct FitSummary {
    /// linear, quadratic, log or isotonic: the form with the lowest leave-one-out MAE.
    pub mapping: String,
    /// The fitted mapping's parameters.
    pub parameters: MappingParameters,
    /// Weight w of the atlas agreement in the mapping's input `(1 - w) pseudo + w agreement`.
    pub agreement_weight: f64,
    pub loo_mae: f64,
    pub loo_rmse: f64,
    pub pearson_r: f64,
    pub loo_pearson_r: f64,
    pub n_points: usize,
    /// Leave-one-out MAE of every form tried, by form (`linear`, `log`, `quadratic`, `isotonic`) and,
    /// when the atlas agreement was mixed in, its weight (`linear@0.25`).
    #[schema(schema_with = candidates_schema)]
    pub candidates: BTreeMap<String, f64>,
}

/// The candidate names the fit writes: a form, then `@` and a non-zero agreement weight if one was used.
pub const CANDIDATE_PATTERN: &str = r"^(linear|log|quadratic|isotonic)(@(0\.25|0\.5|0\.75|1))?$";

fn candidates_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "Leave-one-out MAE of every form tried, by form (`linear`, `log`, `quadratic`, `isotonic`) and, \
             when the atlas agreement was mixed in, its weight (`linear@0.25`).",
        ))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(CANDIDATE_PATTERN)),
        ))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                    utoipa::openapi::KnownFormat::Double,
                ))),
        ))
        .build()
}

impl From<&Fit> for FitSummary {
    fn from(f: &Fit) -> Self {
        FitSummary {
            mapping: f.mapping.name().to_string(),
            parameters: (&f.mapping).into(),
            agreement_weight: f.agreement_weight,
            loo_mae: f.loo_mae,
            loo_rmse: f.loo_rmse,
            pearson_r: f.pearson_r,
            loo_pearson_r: f.loo_pearson_r,
            n_points: f.n_points,
            candidates: f.candidates.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct CheckpointSummary {
    pub name: String,
    pub real: Metrics,
    /// Null when the checkpoint had no support set (then it is left out of the fit).
    pub pseudo: Option<Metrics>,
    pub support: Support,
}

per_metric! {
    /// The chosen fit of each metric.
    MetricFits(FitSummary)
}

#[derive(Serialize, ToSchema)]
pub struct CalibrationResult {
    /// The reverse segmenter the pseudo metrics came from.
    pub reverse: String,
    /// Per metric: the chosen fit with its leave-one-out MAE and Pearson r.
    pub fits: MetricFits,
    /// The (pseudo, real) points, one per checkpoint.
    pub checkpoints: Vec<CheckpointSummary>,
    /// Checkpoints left out of the fit (no support set).
    pub excluded: Vec<String>,
    /// Batch sizes (images per calibration draw) with a mapping of their own; estimates interpolate.
    pub level_sizes: Vec<usize>,
}

impl From<&Calibration> for CalibrationResult {
    fn from(c: &Calibration) -> Self {
        CalibrationResult {
            reverse: c.reverse.clone(),
            fits: c.fits.iter().map(|(m, f)| (*m, f.into())).collect(),
            checkpoints: c
                .checkpoints
                .iter()
                .map(|p| {
                    let (pseudo, support) = match &p.outcome {
                        PseudoOutcome::Ok {
                            pseudo, support, ..
                        } => (Some((*pseudo).into()), *support),
                        PseudoOutcome::InsufficientSupport { support } => (None, *support),
                    };
                    CheckpointSummary {
                        name: p.name.clone(),
                        real: p.real.into(),
                        pseudo,
                        support: support.into(),
                    }
                })
                .collect(),
            excluded: c.excluded.clone(),
            level_sizes: c.levels.iter().map(|l| l.size).collect(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct CalibrationView {
    pub id: Uuid,
    pub model_id: Uuid,
    /// checkpoints, masks or pairs.
    pub source: String,
    pub status: JobStatus,
    pub progress: Progress,
    pub attempts: i32,
    /// Whether estimates of the model use this calibration now.
    pub active: bool,
    pub params: Params,
    /// Why it failed (status failed).
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub result: Option<CalibrationResult>,
}

impl From<CalibrationRow> for CalibrationView {
    fn from(c: CalibrationRow) -> Self {
        // The store decoded both (a corrupt document is an error there). A calibration in an older
        // format has no result this spe can show; it is listed, and refused when used.
        let params: Params = c.params.into();
        let result = c.result.as_ref().and_then(|r| r.current()).map(Into::into);
        CalibrationView {
            id: c.id,
            model_id: c.model_id,
            source: c.source,
            status: c.state.into(),
            progress: Progress {
                fraction: c.progress,
                stage: c.stage,
            },
            attempts: c.attempts,
            active: c.active,
            params,
            error: c.error,
            created_at: c.created_at,
            started_at: c.started_at,
            finished_at: c.finished_at,
            result,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct CalibrationList {
    pub items: Vec<CalibrationView>,
}

/// One (pseudo, real) pair computed elsewhere, e.g. by `spe calibrate` on another machine.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PairPoint {
    /// The checkpoint's name (any text without NUL characters).
    #[schema(pattern = r"^[^\x00]*$")]
    pub name: String,
    /// Null when this checkpoint had no support set (it is reported and left out of the fit).
    pub pseudo: Option<Metrics>,
    pub real: Metrics,
}

/// Calibration from (pseudo, real) pairs: fitted synchronously.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PairsRequest {
    /// One per checkpoint; at least 3 with pseudo metrics are needed to fit and validate a mapping.
    #[schema(min_items = 3)]
    pub points: Vec<PairPoint>,
    /// The parameters the pseudo metrics were computed with; estimates will use them.
    #[serde(default)]
    pub params: Params,
    /// Make it the model's active calibration (default true).
    #[serde(default = "yes")]
    pub activate: bool,
}

fn yes() -> bool {
    true
}
