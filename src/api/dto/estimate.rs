//! Estimates: what GET /v1/estimates/{id} and the lists return.

use super::{per_metric, JobStatus, Metrics, Progress, Support};
use crate::engine::spe::{self, Estimate, PseudoOutcome};
use crate::store::estimates::{EstimateKind, EstimateRow};
use crate::store::results;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Serialize, ToSchema)]
pub struct MetricEstimate {
    pub estimate: f64,
    /// About 95%: calibration residuals for batches of this size (within the anchor checkpoint, or
    /// leave-one-checkpoint-out) combined with the spread over repetitions, clamped to the metric's range.
    #[schema(min_items = 2, max_items = 2)]
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
#[derive(Serialize, ToSchema)]
pub struct Hd95Mm {
    /// Mean size of a 128x128-grid pixel over the batch, in mm.
    pub pixel_mm: f64,
    pub estimate: f64,
    #[schema(min_items = 2, max_items = 2)]
    pub interval: [f64; 2],
}

per_metric! {
    /// The estimate of each metric; every metric when `status` is ok, none when it is
    /// insufficient_support.
    MetricEstimates(MetricEstimate)
}

#[derive(Serialize, ToSchema)]
pub struct EstimateResult {
    pub status: EstimateOutcome,
    pub metrics: MetricEstimates,
    /// Present when every batch image carried its pixel spacing (DICOM Pixel Spacing, NIfTI pixdim).
    pub hd95_mm: Option<Hd95Mm>,
    pub support: Support,
    pub message: Option<String>,
    /// The calibration checkpoint the model is (same ONNX digest), when it is one.
    pub anchor: Option<String>,
    pub warnings: Vec<EstimateWarning>,
    /// Pseudo metrics of each repetition (their spread enters the interval).
    pub pseudo_per_repetition: Vec<Metrics>,
    /// The model's thresholds this estimate broke (`severity: alert`) or whose interval it crossed
    /// (`warning`), as the thresholds stood when it was computed; empty when none.
    pub alerts: Vec<crate::monitor::Alert>,
}

impl From<spe::Hd95Mm> for Hd95Mm {
    fn from(h: spe::Hd95Mm) -> Self {
        Hd95Mm {
            pixel_mm: h.pixel_mm,
            estimate: h.estimate,
            interval: h.interval,
        }
    }
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

#[derive(Serialize, ToSchema)]
pub struct Timings {
    /// From submission to the start of the (last) attempt.
    pub queued_s: Option<f64>,
    /// Fetching inputs from the database and blob store.
    pub load_s: f64,
    /// Decoding, segmentation, reverse segmentation and mapping.
    pub compute_s: f64,
    /// The part of `compute_s` spent getting ONNX Runtime sessions (built, or reused from the session
    /// cache); null for estimates made before it was recorded.
    pub sessions_s: Option<f64>,
    pub total_s: f64,
}

impl From<results::Timings> for Timings {
    fn from(t: results::Timings) -> Self {
        Timings {
            queued_s: t.queued_s,
            load_s: t.load_s,
            compute_s: t.compute_s,
            sessions_s: t.sessions_s,
            total_s: t.total_s,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct EstimateView {
    pub id: Uuid,
    pub model_id: Uuid,
    pub kind: EstimateKindView,
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
        // The store decoded it (a corrupt document is an error there, never None here).
        let result = e.result.map(|s| {
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
                    hd95_mm: s.hd95_mm.map(Into::into),
                    metrics: metrics
                        .into_iter()
                        .map(|(m, v)| {
                            let v = MetricEstimate {
                                estimate: v.estimate,
                                interval: v.interval,
                                pseudo: v.pseudo,
                                agreement: v.agreement,
                            };
                            (m, v)
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
                    alerts: s.alerts,
                },
                Estimate::InsufficientSupport { support, message } => EstimateResult {
                    status: EstimateOutcome::InsufficientSupport,
                    hd95_mm: None,
                    metrics: MetricEstimates::default(),
                    support: support.into(),
                    message: Some(message),
                    anchor: None,
                    warnings: Vec::new(),
                    pseudo_per_repetition: per_repetition,
                    alerts: s.alerts,
                },
            }
        });
        EstimateView {
            id: e.id,
            model_id: e.model_id,
            kind: e.kind.into(),
            calibration_id: e.calibration_id,
            status: e.state.into(),
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
            timings: e.timings.map(Into::into),
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

/// `batch`: a batch as posted; `window`: the model's rolling window of recent batch images.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EstimateKindView {
    Batch,
    Window,
}

impl From<EstimateKind> for EstimateKindView {
    fn from(k: EstimateKind) -> Self {
        match k {
            EstimateKind::Batch => EstimateKindView::Batch,
            EstimateKind::Window => EstimateKindView::Window,
        }
    }
}

impl From<EstimateKindView> for EstimateKind {
    fn from(k: EstimateKindView) -> Self {
        match k {
            EstimateKindView::Batch => EstimateKind::Batch,
            EstimateKindView::Window => EstimateKind::Window,
        }
    }
}
