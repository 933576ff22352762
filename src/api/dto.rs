//! Request and response bodies. They mirror the engine's types (which know nothing of HTTP or OpenAPI)
//! and are built from the stored rows.

use crate::engine::fit::{Calibration, Fit};
use crate::engine::metrics::MetricSet;
use crate::engine::spe::{Estimate, PseudoOutcome, SpeParams, SupportCount};
use crate::store::{
    calibrations::CalibrationRow, estimates::EstimateRow, models::ModelRow, models::ReverseRow,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Serialize, ToSchema)]
pub struct BlobRef {
    pub sha256: String,
    pub size: i64,
}

/// Which reverse segmenter a model uses (sent as the `reverse` form part at registration).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReverseSpec {
    /// Multi-atlas label fusion, pure Rust on the CPU (the default).
    LabelFusion,
    /// A registered UniverSeg-contract ONNX model (see /v1/reverse-segmenters).
    Onnx {
        id: Uuid,
        /// Foreground where sigmoid(logits) > threshold.
        #[serde(default = "default_threshold")]
        threshold: f32,
    },
}

fn default_threshold() -> f32 {
    0.4
}

#[derive(Serialize, ToSchema)]
pub struct SetSummary {
    pub id: Uuid,
    pub images: i32,
}

#[derive(Serialize, ToSchema)]
pub struct Model {
    pub id: Uuid,
    pub name: String,
    /// The model spec as registered (see the README).
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    pub onnx: BlobRef,
    pub reverse_segmenter: ReverseSpec,
    /// The labelled reference set (training images), once attached.
    pub reference_set: Option<SetSummary>,
    /// The calibration estimates use; null until one succeeded.
    pub active_calibration_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

impl From<ModelRow> for Model {
    fn from(m: ModelRow) -> Self {
        Model {
            id: m.id,
            name: m.name,
            spec: m.spec,
            onnx: BlobRef {
                sha256: m.onnx_sha256,
                size: m.onnx_size,
            },
            reverse_segmenter: match m.reverse_segmenter_id {
                None => ReverseSpec::LabelFusion,
                Some(id) => ReverseSpec::Onnx {
                    id,
                    threshold: m.reverse_threshold,
                },
            },
            reference_set: m.reference_set_id.map(|id| SetSummary {
                id,
                images: m.reference_size.unwrap_or(0),
            }),
            active_calibration_id: m.active_calibration_id,
            created_at: m.created_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ModelList {
    pub items: Vec<Model>,
}

#[derive(Serialize, ToSchema)]
pub struct ReferenceSet {
    pub id: Uuid,
    pub images: usize,
    /// Image names (file names without extension), sorted.
    pub names: Vec<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct ReverseSegmenter {
    pub id: Uuid,
    pub name: String,
    pub onnx: BlobRef,
    pub created_at: DateTime<Utc>,
}

impl From<ReverseRow> for ReverseSegmenter {
    fn from(r: ReverseRow) -> Self {
        ReverseSegmenter {
            id: r.id,
            name: r.name,
            onnx: BlobRef {
                sha256: r.onnx_sha256,
                size: r.onnx_size,
            },
            created_at: r.created_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ReverseSegmenterList {
    pub items: Vec<ReverseSegmenter>,
}

/// The six metrics (method.md definitions).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub dice: f64,
    pub jaccard: f64,
    pub precision: f64,
    pub recall: f64,
    pub hd95: f64,
    pub pearson: f64,
}

impl From<MetricSet> for Metrics {
    fn from(m: MetricSet) -> Self {
        Metrics {
            dice: m.dice,
            jaccard: m.jaccard,
            precision: m.precision,
            recall: m.recall,
            hd95: m.hd95,
            pearson: m.pearson,
        }
    }
}

impl From<Metrics> for MetricSet {
    fn from(m: Metrics) -> Self {
        MetricSet {
            dice: m.dice,
            jaccard: m.jaccard,
            precision: m.precision,
            recall: m.recall,
            hd95: m.hd95,
            pearson: m.pearson,
        }
    }
}

/// Protocol parameters; omitted fields take method.md's defaults (min_area 20, support_size 64,
/// repetitions 6, seed 0).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    pub min_area: usize,
    pub support_size: usize,
    pub repetitions: usize,
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Self {
        SpeParams::default().into()
    }
}

impl From<SpeParams> for Params {
    fn from(p: SpeParams) -> Self {
        Params {
            min_area: p.min_area,
            support_size: p.support_size,
            repetitions: p.repetitions,
            seed: p.seed,
        }
    }
}

impl From<Params> for SpeParams {
    fn from(p: Params) -> Self {
        SpeParams {
            min_area: p.min_area,
            support_size: p.support_size,
            repetitions: p.repetitions,
            seed: p.seed,
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl JobStatus {
    fn parse(s: &str) -> Self {
        match s {
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            _ => JobStatus::Queued,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Progress {
    /// 0..1
    pub fraction: f32,
    pub stage: String,
}

#[derive(Serialize, ToSchema)]
pub struct Support {
    /// Supports used per repetition.
    pub used: usize,
    /// Images whose predicted mask had fewer than min_area foreground pixels.
    pub rejected: usize,
}

impl From<SupportCount> for Support {
    fn from(s: SupportCount) -> Self {
        Support {
            used: s.used,
            rejected: s.rejected,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct FitSummary {
    /// linear, quadratic, log or isotonic: the form with the lowest leave-one-out MAE.
    pub mapping: String,
    /// The fitted mapping's parameters.
    #[schema(value_type = Object)]
    pub parameters: serde_json::Value,
    /// Weight w of the atlas agreement in the mapping's input `(1 - w) pseudo + w agreement`.
    pub agreement_weight: f64,
    pub loo_mae: f64,
    pub loo_rmse: f64,
    pub pearson_r: f64,
    pub loo_pearson_r: f64,
    pub n_points: usize,
    /// Leave-one-out MAE of every form tried.
    pub candidates: BTreeMap<String, f64>,
}

impl From<&Fit> for FitSummary {
    fn from(f: &Fit) -> Self {
        FitSummary {
            mapping: f.mapping.name().to_string(),
            parameters: serde_json::to_value(&f.mapping).unwrap_or_default(),
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

#[derive(Serialize, ToSchema)]
pub struct CalibrationResult {
    /// The reverse segmenter the pseudo metrics came from.
    pub reverse: String,
    /// Per metric: the chosen fit with its leave-one-out MAE and Pearson r.
    pub fits: BTreeMap<String, FitSummary>,
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
            fits: c
                .fits
                .iter()
                .map(|(m, f)| (m.name().to_string(), f.into()))
                .collect(),
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
        let params: Params = serde_json::from_value::<SpeParams>(c.params)
            .map(Into::into)
            .unwrap_or_default();
        let result = c
            .result
            .and_then(|v| serde_json::from_value::<Calibration>(v).ok())
            .map(|cal| (&cal).into());
        CalibrationView {
            id: c.id,
            model_id: c.model_id,
            source: c.source,
            status: JobStatus::parse(&c.state),
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
    pub name: String,
    /// Null when this checkpoint had no support set (it is reported and left out of the fit).
    pub pseudo: Option<Metrics>,
    pub real: Metrics,
}

/// Calibration from (pseudo, real) pairs: fitted synchronously.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PairsRequest {
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

#[derive(Serialize, ToSchema)]
pub struct MetricEstimate {
    pub estimate: f64,
    /// About 95%: calibration residuals for batches of this size (within the anchor checkpoint, or
    /// leave-one-checkpoint-out) combined with the spread over repetitions, clamped to the metric's range.
    pub interval: [f64; 2],
    pub pseudo: f64,
    /// Mean agreement of the model's masks with the reference set's label fusion of the same images.
    pub agreement: Option<f64>,
}

/// Something about the batch a person should know beside the number.
#[derive(Serialize, ToSchema)]
pub struct EstimateWarning {
    /// empty_predictions, predicted_area, extrapolation or unanchored.
    pub code: String,
    pub message: String,
}

#[derive(Serialize, ToSchema, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum EstimateOutcome {
    Ok,
    /// No image's predicted mask reached min_area: there is no number, see `message`.
    InsufficientSupport,
}

/// HD95 in millimetres: the HD95 estimate (working-grid pixels) times the batch's mean pixel size.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Hd95Mm {
    /// Mean size of a 128x128-grid pixel over the batch, in mm.
    pub pixel_mm: f64,
    pub estimate: f64,
    pub interval: [f64; 2],
}

#[derive(Serialize, ToSchema)]
pub struct EstimateResult {
    pub status: EstimateOutcome,
    pub metrics: BTreeMap<String, MetricEstimate>,
    /// Present when every batch image carried its pixel spacing (DICOM Pixel Spacing, NIfTI pixdim).
    pub hd95_mm: Option<Hd95Mm>,
    pub support: Support,
    pub message: Option<String>,
    /// The calibration checkpoint the model is (same ONNX digest), when it is one.
    pub anchor: Option<String>,
    pub warnings: Vec<EstimateWarning>,
    /// Pseudo metrics of each repetition (their spread enters the interval).
    pub pseudo_per_repetition: Vec<Metrics>,
}

#[derive(Deserialize)]
struct StoredEstimate {
    estimate: Estimate,
    pseudo: PseudoOutcome,
    #[serde(default)]
    hd95_mm: Option<Hd95Mm>,
}

/// One uploaded file of a batch, by digest (an estimate is traced to its input this way even after the
/// pixels are dropped).
#[derive(Serialize, ToSchema)]
pub struct InputFileView {
    /// SHA-256 of the file as uploaded (for DICOM and NIfTI the file, not the images taken from it).
    pub sha256: String,
    /// png, jpeg, dicom or nifti.
    pub format: String,
    /// Images taken from it (frames, slices).
    pub images: i64,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Timings {
    /// From submission to the start of the (last) attempt.
    pub queued_s: Option<f64>,
    /// Fetching inputs from the database and blob store.
    pub load_s: f64,
    /// Decoding, segmentation, reverse segmentation and mapping.
    pub compute_s: f64,
    pub total_s: f64,
}

#[derive(Serialize, ToSchema)]
pub struct EstimateView {
    pub id: Uuid,
    pub model_id: Uuid,
    pub calibration_id: Uuid,
    pub status: JobStatus,
    pub progress: Progress,
    pub attempts: i32,
    /// Images in the batch.
    pub images: i32,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub result: Option<EstimateResult>,
    pub timings: Option<Timings>,
    /// Whether the batch's pixels are still stored (by default they are dropped when the estimate is
    /// finished; see SPE_RETAIN_BATCH_PIXELS).
    pub pixels_retained: bool,
    /// The batch's files (only on GET /v1/estimates/{id}).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Vec<InputFileView>>,
}

impl From<EstimateRow> for EstimateView {
    fn from(e: EstimateRow) -> Self {
        let result = e
            .result
            .and_then(|v| serde_json::from_value::<StoredEstimate>(v).ok())
            .map(|s| {
                let per_repetition = match s.pseudo {
                    PseudoOutcome::Ok { per_repetition, .. } => {
                        per_repetition.into_iter().map(Into::into).collect()
                    }
                    PseudoOutcome::InsufficientSupport { .. } => Vec::new(),
                };
                match s.estimate {
                    Estimate::Ok {
                        metrics,
                        support,
                        anchor,
                        warnings,
                    } => EstimateResult {
                        status: EstimateOutcome::Ok,
                        hd95_mm: s.hd95_mm,
                        metrics: metrics
                            .into_iter()
                            .map(|(m, v)| {
                                let v = MetricEstimate {
                                    estimate: v.estimate,
                                    interval: v.interval,
                                    pseudo: v.pseudo,
                                    agreement: v.agreement,
                                };
                                (m.name().to_string(), v)
                            })
                            .collect(),
                        support: support.into(),
                        message: None,
                        anchor,
                        warnings: warnings
                            .into_iter()
                            .map(|w| EstimateWarning {
                                code: w.code,
                                message: w.message,
                            })
                            .collect(),
                        pseudo_per_repetition: per_repetition,
                    },
                    Estimate::InsufficientSupport { support, message } => EstimateResult {
                        status: EstimateOutcome::InsufficientSupport,
                        hd95_mm: None,
                        metrics: BTreeMap::new(),
                        support: support.into(),
                        message: Some(message),
                        anchor: None,
                        warnings: Vec::new(),
                        pseudo_per_repetition: per_repetition,
                    },
                }
            });
        EstimateView {
            id: e.id,
            model_id: e.model_id,
            calibration_id: e.calibration_id,
            status: JobStatus::parse(&e.state),
            progress: Progress {
                fraction: e.progress,
                stage: e.stage,
            },
            attempts: e.attempts,
            images: e.images,
            error: e.error,
            created_at: e.created_at,
            started_at: e.started_at,
            finished_at: e.finished_at,
            result,
            timings: e.timings.and_then(|t| serde_json::from_value(t).ok()),
            pixels_retained: e.pixels_retained,
            inputs: None,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct EstimatePage {
    pub items: Vec<EstimateView>,
    /// Pass as `cursor` to get the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: String,
    /// Per dependency: "ok" or what is wrong.
    pub checks: BTreeMap<String, String>,
}
