//! Errors of the eval crate.

use dinoflow_vision::VisionError;
use dinoflow_vision::tch::TchError;

/// Why an evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A model could not be loaded or run, or images could not become tensors.
    #[error(transparent)]
    Vision(#[from] VisionError),
    /// The configuration does not fit a model or the data.
    #[error("{0}")]
    Config(String),
    /// An input dataset cannot be evaluated (no rows, no labels, not an images dataset).
    #[error("input `{port}`: {message}")]
    Input {
        /// The input port (`train` or `test`).
        port: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// Tensors of the wrong shape were given to a classifier.
    #[error("{0}")]
    Shape(String),
    /// libtorch failed.
    #[error("libtorch: {0}")]
    Torch(#[from] TchError),
    /// The report could not be encoded.
    #[error("report: {0}")]
    Report(#[from] serde_json::Error),
    /// A worker thread failed.
    #[error("worker: {0}")]
    Worker(String),
}
