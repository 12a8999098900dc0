//! Errors of the pretraining crate.

use dinoflow_vision::tch::TchError;

/// Why a pretraining building block refused its input.
#[derive(Debug, thiserror::Error)]
pub enum PretrainError {
    /// A configuration value is out of range.
    #[error("{0}")]
    Config(String),
    /// Tensors of the wrong shape or kind were given.
    #[error("{0}")]
    Shape(String),
    /// A loss or gradient is NaN or infinite (the training diverged).
    #[error("non-finite values: {0}")]
    NonFinite(String),
    /// libtorch failed.
    #[error("libtorch: {0}")]
    Torch(#[from] TchError),
}
