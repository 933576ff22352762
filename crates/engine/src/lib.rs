//! The SPE method (Zou et al., MICCAI 2025): preprocessing, metrics, support sampling, pseudo metrics,
//! mapping fit and estimation. Pure Rust: no HTTP, no SQL, no ONNX Runtime. Neural networks enter only
//! through the [`ReverseSegmenter`] trait; segmentation models enter as the masks they predicted.

pub mod align;
pub mod error;
pub mod estimate;
pub mod fit;
pub mod image_io;
pub mod levels;
pub mod metrics;
pub mod shift;
pub mod spe;

pub use error::EngineError;

use ndarray::{Array2, ArrayView2};

/// Working side length: every image and mask is resized to SIDE x SIDE (method.md, preprocessing).
pub const SIDE: usize = 128;

/// A gray image at SIDE x SIDE. Values are 0..=255 after loading; min-max normalised to [0,1] for the
/// reverse segmenter.
pub type Gray = Array2<f32>;
/// A binary mask at SIDE x SIDE (true = foreground).
pub type Mask = Array2<bool>;

/// Support set for the reverse segmenter: min-max normalised images with the masks predicted for them.
pub struct SupportSet<'a> {
    pub images: Vec<ArrayView2<'a, f32>>,
    pub labels: Vec<ArrayView2<'a, bool>>,
}

/// The in-context "reverse" segmenter: given a support set of (image, mask) pairs, segment queries.
/// Implementations: label fusion (pure Rust, CPU default) and any UniverSeg-contract ONNX model.
pub trait ReverseSegmenter: Send + Sync {
    /// Segment every query (min-max normalised, SIDE x SIDE) with the given support set.
    /// One call covers all queries of one repetition, so per-support work is done once per call.
    fn segment(
        &self,
        support: &SupportSet<'_>,
        queries: &[ArrayView2<'_, f32>],
    ) -> Result<Vec<Mask>, EngineError>;

    /// The most supports one call accepts (UniverSeg's published weights: 64); None = any number.
    fn max_supports(&self) -> Option<usize> {
        None
    }

    /// A short stable description (stored with calibrations so estimates use the same segmenter).
    fn describe(&self) -> String;
}
