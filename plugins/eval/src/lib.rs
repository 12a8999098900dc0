//! The `eval` stage: DINOv2's evaluation protocols (dinov2.md §5) on frozen features of every
//! connected ViT, beside two baselines (the raw pixels and each input architecture at random
//! init), written as `eval/report.json`.
//!
//! - [`knn`]: the weighted k-NN classifier of dinov2's `eval/knn.py`;
//! - [`linear`]: the linear probe of `eval/linear.py` on precomputed features (no augmentation),
//!   every (layers, avgpool, learning rate) head trained at once;
//! - [`features`]: what each model makes of a batch of images;
//! - [`report`]: the report's types (deserialisable) and [`render_table`];
//! - [`EvalConfig`]: the stage's `with:`, checked when the workflow is validated.

pub mod config;
mod error;
pub mod features;
pub mod knn;
pub mod linear;
pub mod report;
mod stage;

pub use config::{Baselines, EvalConfig, KnnConfig, LinearConfig};
pub use error::EvalError;
pub use report::{KnnResult, LinearResult, REPORT_FILE, Report, ReportRow, Source, render_table};
pub use stage::Eval;

/// The file name of the model inside a ViT artifact (pretrain writes `model/model.safetensors`;
/// files are found by their last path component).
pub const MODEL_FILE: &str = "model.safetensors";
