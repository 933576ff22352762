use std::path::PathBuf;

/// Errors of the inference layer (ONNX Runtime and model contracts).
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("{0}")]
    RuntimeMissing(String),
    #[error("the model spec is invalid: {0}")]
    Spec(String),
    #[error("model {model} does not match its spec: {reason}")]
    Signature { model: String, reason: String },
    #[error("cannot load ONNX model {model}: {reason}")]
    Load { model: String, reason: String },
    #[error("inference failed in {model}: {reason}")]
    Run { model: String, reason: String },
    #[error("execution provider {provider} is unavailable: {reason}")]
    Provider { provider: String, reason: String },
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}
