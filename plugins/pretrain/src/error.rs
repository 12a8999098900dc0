//! Errors of the pretraining crate.

use dinoflow_eval::EvalError;
use dinoflow_vision::tch::TchError;

use crate::collapse::Collapse;

/// Why a pretraining building block refused its input.
#[derive(Debug, thiserror::Error)]
pub enum PretrainError {
    /// A configuration value is out of range.
    #[error("{0}")]
    Config(String),
    /// A resolution phase (`phases[index]`) cannot be used.
    #[error("`phases[{index}].{field}`: {message}")]
    Phase {
        /// The phase's position in `phases`.
        index: usize,
        /// The field at fault (`from`, `global_size`, `local_size`).
        field: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
    /// Tensors of the wrong shape or kind were given.
    #[error("{0}")]
    Shape(String),
    /// A loss or gradient is NaN or infinite (the training diverged).
    #[error("non-finite values: {0}")]
    NonFinite(String),
    /// A term of the objective collapsed and `fail_on_collapse` is set.
    #[error("training collapsed at iteration {iteration}: {collapse}")]
    Collapse {
        /// The iteration at which the collapse was detected (its condition reached the patience).
        iteration: usize,
        /// What collapsed, since when, and what to try.
        collapse: Collapse,
    },
    /// The evaluation monitor's `monitor_train` or `monitor_test` input cannot be used: connected
    /// without `monitor`, missing with it, or empty.
    #[error("input `{port}`: {message}")]
    MonitorInput {
        /// The input port.
        port: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// The evaluation monitor's k-NN refused its input (unlabelled images, shapes).
    #[error("the monitor: {0}")]
    Monitor(#[from] EvalError),
    /// libtorch failed.
    #[error("libtorch: {0}")]
    Torch(#[from] TchError),
}
