//! Request and response bodies. They mirror the engine's types (which know nothing of HTTP or OpenAPI)
//! and are built from the stored rows.

mod calibration;
mod estimate;

pub use calibration::*;
pub use estimate::*;

use crate::engine::metrics::MetricSet;
use crate::engine::spe::{SpeParams, SupportCount};
use crate::store::{models::ModelRow, models::ReverseRow, JobState};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Raw bytes: a request body (a zip, a multipart/related stream) or a response (an SVG plot): `type: string,
/// format: binary`.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Binary(pub Vec<u8>);

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
        #[schema(exclusive_minimum = 0.0, exclusive_maximum = 1.0, default = documented_threshold)]
        threshold: f32,
    },
}

fn default_threshold() -> f32 {
    crate::inference::DEFAULT_ONNX_THRESHOLD
}

/// The default as written: widening the f32 would document 0.4000000059604645.
fn documented_threshold() -> f64 {
    default_threshold()
        .to_string()
        .parse()
        .expect("a float's display parses")
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
    #[schema(value_type = crate::inference::ModelSpec)]
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
            reverse_segmenter: match (m.reverse_segmenter_id, m.onnx_threshold) {
                (Some(id), Some(threshold)) => ReverseSpec::Onnx { id, threshold },
                _ => ReverseSpec::LabelFusion,
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
    /// Foreground pixels a predicted mask needs for its image to be a support.
    #[schema(minimum = 0, maximum = 18446744073709551615_u64)]
    pub min_area: usize,
    /// Supports drawn per repetition (at most 1024: no set or batch holds more images by default).
    #[schema(minimum = 1, maximum = 1024)]
    pub support_size: usize,
    /// Support subsets drawn (at most 100; each costs a full pass of the reverse segmenter).
    #[schema(minimum = 1, maximum = 100)]
    pub repetitions: usize,
    /// Seed of the support draws (at most 2^63 - 1, the largest int64).
    #[schema(minimum = 0, maximum = 9223372036854775807_u64)]
    pub seed: u64,
}

/// The largest `support_size` and `repetitions` the API accepts (declared in the document too).
pub const MAX_SUPPORT_SIZE: usize = 1024;
pub const MAX_REPETITIONS: usize = 100;

impl Params {
    /// The protocol parameters, if within the bounds the document declares (422 otherwise).
    pub fn checked(self) -> Result<SpeParams, crate::api::ApiError> {
        let bound = |field: &str, value: usize, max: usize| {
            if (1..=max).contains(&value) {
                Ok(())
            } else {
                Err(crate::api::ApiError::Unprocessable(format!(
                    "params.{field} is {value}; it must be between 1 and {max}"
                )))
            }
        };
        bound("support_size", self.support_size, MAX_SUPPORT_SIZE)?;
        bound("repetitions", self.repetitions, MAX_REPETITIONS)?;
        if i64::try_from(self.seed).is_err() {
            return Err(crate::api::ApiError::Unprocessable(format!(
                "params.seed is {}; it must be at most {} (the largest int64)",
                self.seed,
                i64::MAX
            )));
        }
        let params: SpeParams = self.into();
        params.validate()?;
        Ok(params)
    }
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

impl From<JobState> for JobStatus {
    fn from(s: JobState) -> Self {
        match s {
            JobState::Queued => JobStatus::Queued,
            JobState::Running => JobStatus::Running,
            JobState::Succeeded => JobStatus::Succeeded,
            JobState::Failed => JobStatus::Failed,
        }
    }
}

impl From<JobStatus> for JobState {
    fn from(s: JobStatus) -> Self {
        match s {
            JobStatus::Queued => JobState::Queued,
            JobStatus::Running => JobState::Running,
            JobStatus::Succeeded => JobState::Succeeded,
            JobStatus::Failed => JobState::Failed,
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
pub struct Health {
    /// ok (liveness); ready or not ready (readiness).
    pub status: String,
    /// Per dependency: "ok" or what is wrong (readiness only).
    pub checks: HealthChecks,
}

/// Readiness checks; each "ok" (ONNX Runtime: "ok (<provider>)") or what is wrong.
#[derive(Default, Serialize, ToSchema)]
pub struct HealthChecks {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    pub database: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    pub onnxruntime: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    pub blob_store: Option<String>,
    /// Present while the process shuts down.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    pub shutdown: Option<String>,
}

impl HealthChecks {
    /// Whether every check present passed.
    pub fn all_ok(&self) -> bool {
        [
            &self.database,
            &self.onnxruntime,
            &self.blob_store,
            &self.shutdown,
        ]
        .into_iter()
        .flatten()
        .all(|v| v.starts_with("ok"))
    }
}

/// Declares a struct with one optional field per metric (the six of method.md), so that clients get
/// `metrics.dice` rather than a map; an absent field is a metric without a number.
macro_rules! per_metric {
    ($(#[doc = $doc:literal])* $name:ident($t:ty)) => {
        $crate::api::dto::per_metric!(@fields $(#[doc = $doc])* $name($t) {
            dice: Dice,
            jaccard: Jaccard,
            precision: Precision,
            recall: Recall,
            #[doc = "In pixels of the 128x128 working grid."]
            hd95: Hd95,
            pearson: Pearson,
        });
    };
    (@fields $(#[doc = $doc:literal])* $name:ident($t:ty) {
        $($(#[doc = $field_doc:literal])* $field:ident: $metric:ident,)*
    }) => {
        $(#[doc = $doc])*
        #[derive(Default, Serialize, ToSchema)]
        pub struct $name {
            $(
                $(#[doc = $field_doc])*
                #[serde(skip_serializing_if = "Option::is_none")]
                #[schema(value_type = $t, required = false)]
                pub $field: Option<$t>,
            )*
        }

        impl FromIterator<($crate::engine::metrics::Metric, $t)> for $name {
            fn from_iter<I: IntoIterator<Item = ($crate::engine::metrics::Metric, $t)>>(iter: I) -> Self {
                let mut out = Self::default();
                for (metric, value) in iter {
                    match metric {
                        $($crate::engine::metrics::Metric::$metric => out.$field = Some(value),)*
                    }
                }
                out
            }
        }
    };
}
pub(crate) use per_metric;
