use std::path::PathBuf;

/// Errors of the engine layer. Every variant carries a message a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot read image {path}: {reason}")]
    Image { path: PathBuf, reason: String },
    #[error("invalid image data ({name}): {reason}")]
    ImageData { name: String, reason: String },
    #[error(
        "image {name} is too large: {width}x{height} exceeds the limit of {max_pixels} pixels"
    )]
    ImageTooLarge {
        name: String,
        width: u32,
        height: u32,
        max_pixels: u64,
    },
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("calibration is unusable: {0}")]
    Calibration(String),
    #[error("reverse segmenter failed: {0}")]
    Reverse(String),
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}
