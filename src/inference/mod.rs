//! ONNX Runtime sessions and the reverse-segmenter implementations.

pub mod error;
pub mod label_fusion;
pub mod onnx_reverse;
pub mod runtime;
pub mod seg_model;

pub use error::InferenceError;
pub use label_fusion::{LabelFusion, LabelFusionParams};
pub use onnx_reverse::{OnnxReverse, OnnxReverseParams};
pub use runtime::{ExecutionProvider, Runtime, RuntimeConfig};
pub use seg_model::{ModelSpec, SegModel};

use crate::engine::ReverseSegmenter;
use std::path::PathBuf;
use std::sync::Arc;

/// Which reverse segmenter to use: `label-fusion` or `onnx:PATH`.
#[derive(Clone, Debug, PartialEq)]
pub enum ReverseChoice {
    LabelFusion,
    Onnx(PathBuf),
}

impl std::str::FromStr for ReverseChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "label-fusion" => Ok(ReverseChoice::LabelFusion),
            _ => match s.strip_prefix("onnx:") {
                Some(path) if !path.is_empty() => Ok(ReverseChoice::Onnx(PathBuf::from(path))),
                _ => Err(format!(
                    "unknown reverse segmenter {s:?}: use `label-fusion` or `onnx:PATH` (a UniverSeg-contract ONNX)"
                )),
            },
        }
    }
}

/// Builds the chosen reverse segmenter.
pub fn build_reverse(
    choice: &ReverseChoice,
    runtime: &Runtime,
    threshold: f32,
) -> Result<Arc<dyn ReverseSegmenter>, InferenceError> {
    Ok(match choice {
        ReverseChoice::LabelFusion => Arc::new(LabelFusion::new(LabelFusionParams::default())),
        ReverseChoice::Onnx(path) => {
            let bytes = std::fs::read(path).map_err(|e| InferenceError::Io {
                path: path.clone(),
                source: e,
            })?;
            Arc::new(OnnxReverse::load(
                runtime,
                &bytes,
                &path.display().to_string(),
                OnnxReverseParams {
                    threshold,
                    ..OnnxReverseParams::default()
                },
            )?)
        }
    })
}
