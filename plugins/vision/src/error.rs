//! Errors of the vision crate.

/// Why a model could not be built, loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    /// No preset has this name.
    #[error("unknown ViT preset `{name}`; known presets: {known}")]
    UnknownPreset {
        /// The name asked for.
        name: String,
        /// The known names.
        known: String,
    },
    /// The configuration does not describe a valid model.
    #[error("invalid ViT configuration: {0}")]
    Config(String),
    /// An input tensor has the wrong shape or type.
    #[error("input tensor: expected {expected}, got {got}")]
    InputShape {
        /// What the model accepts.
        expected: String,
        /// What it got.
        got: String,
    },
    /// A weights file does not fit the model: the keys are named.
    #[error("weights {source_name} do not fit the model: {details}")]
    WeightsMismatch {
        /// The file or artifact.
        source_name: String,
        /// Missing, unexpected and mis-shaped keys, by name.
        details: String,
    },
    /// A safetensors file could not be parsed.
    #[error("weights {source_name}: not a valid safetensors file: {message}")]
    Safetensors {
        /// The file or artifact.
        source_name: String,
        /// The parser's message.
        message: String,
    },
    /// An images batch could not be turned into a tensor.
    #[error("images batch: {0}")]
    Images(String),
    /// An augmentation or normalisation step failed.
    #[error(transparent)]
    Augment(#[from] crate::augment::AugmentError),
    /// libtorch reported an error.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}
