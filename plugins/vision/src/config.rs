//! ViT shapes and the named presets (dinov2.md §3, timm's `vit_*_patch14_dinov2`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::VisionError;

/// The feed-forward network inside each block.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Ffn {
    /// Linear → GELU (exact) → Linear with `hidden` units (4·D in ViT-S/B/L).
    Mlp {
        /// Hidden units.
        hidden: i64,
    },
    /// SwiGLU packed as timm stores it: `fc1` D → 2H, silu(first half) · second half, `fc2` H → D.
    Swiglu {
        /// H, the gated hidden width (4096 for ViT-g).
        hidden: i64,
    },
}

/// Everything that fixes a ViT's parameter shapes and forward pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VitConfig {
    /// Token width D.
    pub embed_dim: i64,
    /// Number of blocks.
    pub depth: i64,
    /// Attention heads (D must be a multiple).
    pub num_heads: i64,
    /// Side of the square patches, in pixels.
    pub patch_size: i64,
    /// Input channels: 1 (grey) or 3 (RGB).
    pub in_chans: i64,
    /// The image side the position embedding is built for; other sides interpolate it (bicubic).
    pub img_size: i64,
    /// Register tokens (0 or 4 in the released models). With registers the position embedding
    /// covers only the patches (timm's `no_embed_class` layout).
    pub registers: i64,
    /// The feed-forward network.
    pub ffn: Ffn,
    /// LayerScale initial value (1e-5 in DINOv2).
    pub layerscale: f64,
    /// Stochastic-depth rate, uniform over blocks (training only).
    pub drop_path: f64,
    /// Whether the model has the iBOT `mask_token` (needed for masked training, absent in timm).
    pub mask_token: bool,
}

/// The preset names [`VitConfig::preset`] knows.
pub const PRESETS: &[&str] = &["tiny", "small", "base", "large", "giant", "tiny-28"];

/// A preset name as written in workflows, checked when the workflow is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Preset {
    /// ViT-Ti/14 (D 192, 12 blocks, 3 heads), 224 px.
    #[serde(rename = "tiny")]
    Tiny,
    /// ViT-S/14 (D 384, 12 blocks, 6 heads), 518 px.
    #[serde(rename = "small")]
    Small,
    /// ViT-B/14 (D 768, 12 blocks, 12 heads), 518 px.
    #[serde(rename = "base")]
    Base,
    /// ViT-L/14 (D 1024, 24 blocks, 16 heads), 518 px.
    #[serde(rename = "large")]
    Large,
    /// ViT-g/14 (D 1536, 40 blocks, 24 heads, SwiGLU), 518 px.
    #[serde(rename = "giant")]
    Giant,
    /// ViT-Ti with patch 4 for 28 px single-channel images.
    #[serde(rename = "tiny-28")]
    Tiny28,
}

impl Preset {
    /// The name as written in workflows.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tiny => "tiny",
            Self::Small => "small",
            Self::Base => "base",
            Self::Large => "large",
            Self::Giant => "giant",
            Self::Tiny28 => "tiny-28",
        }
    }

    /// The preset's configuration.
    pub fn config(self) -> VitConfig {
        VitConfig::preset(self.name()).expect("every Preset names a known preset")
    }
}

impl VitConfig {
    /// A named preset: `tiny`, `small`, `base`, `large`, `giant` (patch 14, 3 channels, position
    /// embedding at 518 px as the released DINOv2 models; `tiny` at 224 px) or `tiny-28` (patch 4 for
    /// 28 px single-channel images such as Fashion-MNIST).
    pub fn preset(name: &str) -> Result<Self, VisionError> {
        let (embed_dim, depth, num_heads) = match name {
            "tiny" | "tiny-28" => (192, 12, 3),
            "small" => (384, 12, 6),
            "base" => (768, 12, 12),
            "large" => (1024, 24, 16),
            "giant" => (1536, 40, 24),
            _ => {
                return Err(VisionError::UnknownPreset {
                    name: name.to_string(),
                    known: PRESETS.join(", "),
                });
            }
        };
        let ffn = if name == "giant" {
            Ffn::Swiglu {
                hidden: swiglu_hidden(embed_dim),
            }
        } else {
            Ffn::Mlp {
                hidden: 4 * embed_dim,
            }
        };
        let (patch_size, in_chans, img_size) = match name {
            "tiny-28" => (4, 1, 28),
            "tiny" => (14, 3, 224),
            _ => (14, 3, 518),
        };
        Ok(Self {
            embed_dim,
            depth,
            num_heads,
            patch_size,
            in_chans,
            img_size,
            registers: 0,
            ffn,
            layerscale: 1e-5,
            drop_path: 0.0,
            mask_token: false,
        })
    }

    /// Patches per side at [`Self::img_size`].
    pub fn grid(&self) -> i64 {
        self.img_size / self.patch_size
    }

    /// Checks the shapes fit together.
    pub fn validate(&self) -> Result<(), VisionError> {
        let bad = |m: String| Err(VisionError::Config(m));
        if self.embed_dim <= 0 || self.depth <= 0 || self.num_heads <= 0 || self.patch_size <= 0 {
            return bad("embed_dim, depth, num_heads and patch_size must be positive".into());
        }
        if self.embed_dim % self.num_heads != 0 {
            return bad(format!(
                "embed_dim {} is not a multiple of num_heads {}",
                self.embed_dim, self.num_heads
            ));
        }
        if self.in_chans != 1 && self.in_chans != 3 {
            return bad(format!("in_chans must be 1 or 3, not {}", self.in_chans));
        }
        if self.img_size < self.patch_size || self.img_size % self.patch_size != 0 {
            return bad(format!(
                "img_size {} must be a positive multiple of patch_size {}",
                self.img_size, self.patch_size
            ));
        }
        if self.registers < 0 {
            return bad("registers must be 0 or more".into());
        }
        if !(0.0..1.0).contains(&self.drop_path) {
            return bad(format!("drop_path {} must be in [0, 1)", self.drop_path));
        }
        Ok(())
    }
}

/// DINOv2's SwiGLU hidden width: ((int(4D·2/3) + 7) // 8) · 8, 4096 for D = 1536.
pub fn swiglu_hidden(embed_dim: i64) -> i64 {
    ((4 * embed_dim * 2 / 3) + 7) / 8 * 8
}
