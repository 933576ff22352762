//! ONNX Runtime sessions and the reverse-segmenter implementations.

pub mod error;
pub mod label_fusion;
pub mod onnx_reverse;
pub mod reverse;
pub mod runtime;
pub mod seg_model;
pub mod session_cache;

pub use error::InferenceError;
pub use label_fusion::{LabelFusion, LabelFusionParams};
pub use onnx_reverse::{OnnxReverse, OnnxReverseParams};
pub use reverse::{Reverse, DEFAULT_ONNX_THRESHOLD};
pub use runtime::{ExecutionProvider, Runtime, RuntimeConfig};
pub use seg_model::{ModelSpec, SegModel};
