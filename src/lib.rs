//! spe: performance estimation for segmentation models on unlabeled data (SPE, MICCAI 2025).

pub mod api;
pub mod app;
pub mod background;
pub mod cli;
pub mod digest;
/// The method is its own crate (crates/engine, no HTTP, SQL or ONNX Runtime); `spe::engine` names it.
pub use spe_engine as engine;
pub mod inference;
pub mod ingest;
pub mod jobs;
pub mod monitor;
pub mod pipeline;
pub mod plot;
pub mod service;
pub mod store;
pub mod ui;
pub mod webhooks;
