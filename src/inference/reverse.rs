//! Which reverse segmenter: one type for the CLI, the service and the calibrations they store.

use super::{
    InferenceError, LabelFusion, LabelFusionParams, OnnxReverse, OnnxReverseParams, Runtime,
};
use crate::engine::ReverseSegmenter;
use std::sync::Arc;

/// The threshold on sigmoid(logits) of an ONNX reverse segmenter when none is given (UniverSeg's
/// reference code uses 0.4).
pub const DEFAULT_ONNX_THRESHOLD: f32 = 0.4;

/// A reverse segmenter, named so that its description is the same in every process and needs nothing
/// loaded: calibrations store [`Reverse::describe`] and estimates compare it.
#[derive(Clone, Debug, PartialEq)]
pub enum Reverse {
    /// The built-in multi-atlas label fusion (pure Rust, CPU), with its default parameters.
    LabelFusion,
    /// A UniverSeg-contract ONNX model, named by the SHA-256 (hex) of its bytes.
    Onnx { sha256: String, threshold: f32 },
}

impl Reverse {
    /// An ONNX reverse segmenter; the threshold must lie strictly between 0 and 1.
    pub fn onnx(sha256: &str, threshold: f32) -> Result<Self, InferenceError> {
        if !(threshold > 0.0 && threshold < 1.0) {
            return Err(InferenceError::Spec(format!(
                "the reverse segmenter's threshold must be strictly between 0 and 1 (got {threshold})"
            )));
        }
        Ok(Reverse::Onnx {
            sha256: sha256.to_string(),
            threshold,
        })
    }

    /// As a model row stores it: the ONNX reverse segmenter's digest and threshold, or neither for label
    /// fusion.
    pub fn from_stored(
        sha256: Option<&str>,
        threshold: Option<f32>,
    ) -> Result<Self, InferenceError> {
        match (sha256, threshold) {
            (None, _) => Ok(Reverse::LabelFusion),
            (Some(sha256), Some(threshold)) => Reverse::onnx(sha256, threshold),
            (Some(sha256), None) => Err(InferenceError::Spec(format!(
                "the ONNX reverse segmenter {sha256} is stored without a threshold"
            ))),
        }
    }

    /// The ONNX model's digest, if it is one.
    pub fn onnx_sha256(&self) -> Option<&str> {
        match self {
            Reverse::LabelFusion => None,
            Reverse::Onnx { sha256, .. } => Some(sha256),
        }
    }

    /// What calibrations record; equal to the built segmenter's `describe()`.
    pub fn describe(&self) -> String {
        match self {
            Reverse::LabelFusion => LabelFusionParams::default().describe(),
            Reverse::Onnx { sha256, threshold } => {
                OnnxReverse::description(&name(sha256), *threshold)
            }
        }
    }

    /// Builds it. An ONNX one needs its model's bytes (the ones its digest names); its session comes
    /// from the runtime's session cache when one is idle.
    pub fn build(
        &self,
        runtime: &Runtime,
        onnx: Option<&[u8]>,
    ) -> Result<Arc<dyn ReverseSegmenter>, InferenceError> {
        Ok(match self {
            Reverse::LabelFusion => Arc::new(LabelFusion::new(LabelFusionParams::default())),
            Reverse::Onnx { sha256, threshold } => {
                let bytes = onnx.ok_or_else(|| {
                    InferenceError::Spec(format!(
                        "the ONNX reverse segmenter {sha256} was built without its model file"
                    ))
                })?;
                Arc::new(OnnxReverse::load(
                    runtime,
                    bytes,
                    &name(sha256),
                    OnnxReverseParams {
                        threshold: *threshold,
                        ..OnnxReverseParams::default()
                    },
                )?)
            }
        })
    }
}

fn name(sha256: &str) -> String {
    format!("sha256:{sha256}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_need_nothing_loaded_and_name_onnx_models_by_digest() {
        assert_eq!(
            Reverse::LabelFusion.describe(),
            LabelFusion::new(LabelFusionParams::default()).describe()
        );
        let onnx = Reverse::onnx("ab12", 0.4).unwrap();
        assert_eq!(onnx.describe(), "onnx(sha256:ab12,threshold=0.4)");
    }

    #[test]
    fn thresholds_outside_the_open_unit_interval_are_refused() {
        for bad in [0.0, 1.0, -0.1, f32::NAN] {
            let e = Reverse::onnx("ab12", bad).unwrap_err().to_string();
            assert!(e.contains("strictly between 0 and 1"), "{e}");
        }
        assert!(Reverse::onnx("ab12", 0.5).is_ok());
    }
}
