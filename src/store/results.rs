//! The JSON documents stored in `estimates.result`, `estimates.timings`, `calibrations.result` and
//! `calibrations.params`: typed once here, written and read only through these types. A document that
//! does not decode is [`StoreError::Corrupt`] (a logged 500), never shown as null or as defaults.

use super::StoreError;
use crate::engine::fit::{Calibration, CALIBRATION_FORMAT};
use crate::engine::spe::{Estimate, Hd95Mm, PseudoOutcome};
use crate::monitor::Alert;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Schema version 1 of an estimate document. Rows written before the field existed have none and are
/// version 1; a version this build does not know fails to decode rather than being misread. A later
/// shape gets its own marker and the documents become an enum over them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct V1;

impl TryFrom<u32> for V1 {
    type Error = String;
    fn try_from(v: u32) -> Result<Self, String> {
        match v {
            1 => Ok(V1),
            other => Err(format!(
                "unknown schema version {other}; this spe reads version 1"
            )),
        }
    }
}

impl From<V1> for u32 {
    fn from(_: V1) -> u32 {
        1
    }
}

/// `estimates.result`: what an estimate job computed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EstimateResult {
    #[serde(default)]
    pub version: V1,
    pub estimate: Estimate,
    pub pseudo: PseudoOutcome,
    /// Present when every batch image carried its pixel size.
    #[serde(default)]
    pub hd95_mm: Option<Hd95Mm>,
    /// The thresholds the estimate broke or came near, as they stood when it was computed.
    #[serde(default)]
    pub alerts: Vec<Alert>,
}

/// `estimates.timings`: where an estimate job's time went, in seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    #[serde(default)]
    pub version: V1,
    /// From submission to the start of the (last) attempt.
    pub queued_s: Option<f64>,
    pub load_s: f64,
    pub compute_s: f64,
    /// The part of `compute_s` spent getting ONNX Runtime sessions (building them, or taking idle
    /// ones from the session cache). Absent in rows written before it was recorded.
    #[serde(default)]
    pub sessions_s: Option<f64>,
    pub total_s: f64,
}

/// `calibrations.result`. The document carries its own version (`format`): one of the current format is
/// decoded in full; one an older spe wrote is kept by its format name, so it can still be listed and
/// refused with a reason (calibrate again) instead of failing every read of the model's calibrations.
#[derive(Clone, Debug, PartialEq)]
pub enum StoredCalibration {
    Current(Box<Calibration>),
    Older { format: String },
}

impl StoredCalibration {
    pub fn format(&self) -> &str {
        match self {
            StoredCalibration::Current(c) => &c.format,
            StoredCalibration::Older { format } => format,
        }
    }

    pub fn current(&self) -> Option<&Calibration> {
        match self {
            StoredCalibration::Current(c) => Some(c),
            StoredCalibration::Older { .. } => None,
        }
    }

    fn from_json(v: serde_json::Value) -> Result<Self, String> {
        match v.get("format").and_then(|f| f.as_str()) {
            Some(CALIBRATION_FORMAT) => serde_json::from_value(v)
                .map(|c| StoredCalibration::Current(Box::new(c)))
                .map_err(|e| e.to_string()),
            Some(older) if older.starts_with("spe-calibration/") => Ok(StoredCalibration::Older {
                format: older.to_string(),
            }),
            Some(other) => Err(format!("unknown calibration format {other:?}")),
            None => Err("no calibration format".into()),
        }
    }
}

/// Serialises a document for a jsonb column.
pub fn to_json<T: Serialize>(doc: &T) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(doc).map_err(|e| StoreError::Serialise(e.to_string()))
}

/// Decodes `column` of row `id`; the error names both, for the log.
pub fn decode<T: DeserializeOwned>(
    v: serde_json::Value,
    table: &str,
    id: Uuid,
    column: &str,
) -> Result<T, StoreError> {
    serde_json::from_value(v)
        .map_err(|e| StoreError::Corrupt(format!("{table} {id}: {column}: {e}")))
}

pub fn decode_calibration(v: serde_json::Value, id: Uuid) -> Result<StoredCalibration, StoreError> {
    StoredCalibration::from_json(v)
        .map_err(|e| StoreError::Corrupt(format!("calibration {id}: result: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unversioned_rows_are_version_1_and_unknown_versions_fail() {
        let old = json!({ "queued_s": null, "load_s": 1.0, "compute_s": 2.0, "total_s": 3.0 });
        let t: Timings = serde_json::from_value(old).unwrap();
        assert_eq!(t.version, V1);
        assert_eq!(serde_json::to_value(&t).unwrap()["version"], 1);
        let newer = json!({ "version": 2, "queued_s": null, "load_s": 1.0, "compute_s": 2.0, "total_s": 3.0 });
        let e = serde_json::from_value::<Timings>(newer).unwrap_err();
        assert!(e.to_string().contains("unknown schema version 2"), "{e}");
    }

    #[test]
    fn an_estimate_result_without_version_decodes() {
        // The shape jobs wrote before the version field (an insufficient-support batch).
        let old = json!({
            "estimate": { "status": "insufficient_support", "support": { "used": 0, "rejected": 3 },
                          "message": "no image reached min_area" },
            "pseudo": { "status": "insufficient_support", "support": { "used": 0, "rejected": 3 } },
            "hd95_mm": null,
        });
        let r: EstimateResult = decode(old, "estimate", Uuid::nil(), "result").unwrap();
        assert!(matches!(r.estimate, Estimate::InsufficientSupport { .. }));
        let e =
            decode::<EstimateResult>(json!({ "estimate": 1 }), "estimate", Uuid::nil(), "result")
                .unwrap_err();
        assert!(matches!(e, StoreError::Corrupt(m) if m.starts_with("estimate 00000000")));
    }

    #[test]
    fn older_calibration_formats_are_named_not_decoded() {
        let old = json!({ "format": "spe-calibration/1", "fits": {} });
        let c = decode_calibration(old, Uuid::nil()).unwrap();
        assert_eq!(c.format(), "spe-calibration/1");
        assert!(c.current().is_none());
        let bad = json!({ "format": CALIBRATION_FORMAT, "fits": 3 });
        assert!(decode_calibration(bad, Uuid::nil()).is_err());
        assert!(decode_calibration(json!({}), Uuid::nil()).is_err());
    }
}
