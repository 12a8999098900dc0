//! The vision core shared by embed, pretrain, distill and eval: a DINOv2-compatible ViT on libtorch
//! whose weights use timm's key names, the image → tensor path, and DINOv2's multi-crop
//! augmentations on batched tensors.

pub mod augment;
mod autocast;
mod config;
mod device;
mod error;
mod grad;
mod model;
pub mod tensor;
mod vit;
pub mod weights;

pub use autocast::{Autocast, Precision, autocast, autocast_enabled};
pub use config::{Ffn, PRESETS, Preset, VitConfig, swiglu_hidden};
pub use device::DeviceChoice;
pub use error::VisionError;
pub use grad::clear_grad;
pub use model::{CONFIG_METADATA_KEY, VitModel};
pub use vit::{SelectedTokens, Vit, VitOutput};

/// libtorch, re-exported so dependants use the exact same version.
pub use tch;
