//! The embed stage's configuration (`with:`).

use dinoflow_vision::{DeviceChoice, Preset};

use crate::descriptor::DctParams;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Configuration of the `embed` stage.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedConfig {
    /// Which model computes the vectors.
    #[serde(default)]
    pub model: ModelSpec,
    /// `model: dct`: the descriptor's parameters (defaults tuned on photos; see
    /// docs/workflow-reference.md for small, alike images such as Fashion-MNIST). `model: pdq`
    /// takes only `trim_borders` from it (the others must keep their defaults).
    #[serde(default)]
    pub descriptor: DctParams,
    /// Images per forward pass (ViT) or per parallel batch (descriptor).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Where the ViT runs: `auto` (CUDA when visible, else CPU), `cpu` or `cuda`. On CUDA the model
    /// runs in bfloat16 and the vectors are written as float32. The device is not part of the
    /// fingerprint: a cached result may come from either. The descriptor always runs on the CPU.
    #[serde(default)]
    pub device: DeviceChoice,
    /// ViT only: L2-normalise each vector (so cosine similarity is a dot product). The vectors of
    /// `dct` and `pdq` are always unit length (all zero for a featureless image).
    #[serde(default = "default_true")]
    pub normalize: bool,
    /// ViT only: the input side in pixels (a multiple of the patch size). Default: the model's
    /// native size when it is at most 224, else 224.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<i64>,
    /// ViT only: the shorter side is resized to `image_size / crop_fraction` before the centre
    /// crop (DINOv2's evaluation uses 0.875; 1.0 keeps the whole shorter side).
    #[serde(default = "default_crop_fraction")]
    pub crop_fraction: f64,
    /// ViT only: which tokens make the vector.
    #[serde(default)]
    pub features: Features,
    /// Also write each image's horizontally mirrored vector (the `mirrored` column), so dedup
    /// finds mirrored copies. Default: on for `dct` (where it costs nothing: mirroring flips the
    /// sign of the odd horizontal frequencies) and `pdq` (a second hash, of the mirrored pixels),
    /// off for a ViT (a second forward pass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirrored: Option<bool>,
}

impl EmbedConfig {
    /// Whether the stage writes the `mirrored` column.
    pub fn writes_mirrored(&self) -> bool {
        self.mirrored.unwrap_or(!self.model.is_vit())
    }
}

fn default_batch_size() -> usize {
    256
}
fn default_true() -> bool {
    true
}
fn default_crop_fraction() -> f64 {
    1.0
}

/// The model of the embed stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum ModelSpec {
    /// The built-in copy-detection descriptor (low-frequency DCT of the grey image); no training.
    #[default]
    Dct,
    /// Meta's PDQ perceptual hash ([`crate::pdq`]): 256 bits as `±1/16` values, so cosine
    /// similarity is `1 − 2·hamming/256` ([`crate::pdq_vectors`]); no training.
    Pdq,
    /// A ViT from a preset, with weights from a safetensors file (timm key names) or, without
    /// `weights`, randomly initialised from `seed` (a baseline).
    Vit(VitSpec),
    /// The ViT artifact connected to the stage's `model` input (from pretrain or distill).
    Input,
}

impl ModelSpec {
    /// Whether the model is a ViT (from a preset or the `model` input), as opposed to a built-in
    /// descriptor computed on the CPU.
    pub fn is_vit(&self) -> bool {
        matches!(self, Self::Vit(_) | Self::Input)
    }
}

/// A ViT named by preset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VitSpec {
    /// `tiny`, `small`, `base`, `large`, `giant` (patch 14) or `tiny-28` (patch 4, 28 px, grey).
    pub preset: Preset,
    /// A safetensors file (path or URL) in timm's DINOv2 key layout. Its bytes are part of the
    /// fingerprint. Without it the model is randomly initialised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
    /// Register tokens for a randomly initialised model (a weights file decides on its own).
    #[serde(default)]
    pub registers: i64,
    /// Seed of the random initialisation.
    #[serde(default)]
    pub seed: i64,
}

/// Which ViT tokens form the vector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Features {
    /// The final-norm cls token (DINOv2's kNN features).
    #[default]
    Cls,
    /// The mean of the final-norm patch tokens.
    MeanPatch,
    /// cls and mean patch token concatenated.
    ClsMeanPatch,
}
