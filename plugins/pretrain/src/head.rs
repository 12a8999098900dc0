//! The DINO / iBOT projection head (dinov2 `layers/dino_head.py`, dinov2.md §2.2).
//!
//! `Linear(D → hidden) → GELU → … → Linear(hidden → bottleneck)`, L2 normalisation, then a
//! weight-normalised `Linear(bottleneck → K)` without bias whose per-prototype scale `g`
//! (`last_layer.weight_g`, initialised to 1) is trainable. The logits are therefore bounded by
//! `|g|`. Variables are named as in dinov2 (`mlp.0`, `mlp.2`, `mlp.4`, `last_layer.weight_g`,
//! `last_layer.weight_v`).

use dinoflow_vision::tch::{Tensor, nn};
use serde::{Deserialize, Serialize};

use crate::PretrainError;

/// The shape of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HeadConfig {
    /// Prototypes K (the paper: 65,536).
    pub prototypes: i64,
    /// Width of the hidden MLP layers (the paper: 2048).
    pub hidden_dim: i64,
    /// Width of the bottleneck before the prototypes (the paper: 256).
    pub bottleneck_dim: i64,
    /// Linear layers in the MLP, at least 1 (the paper: 3).
    pub layers: usize,
}

impl Default for HeadConfig {
    fn default() -> Self {
        Self::dinov2()
    }
}

impl HeadConfig {
    /// The paper's head: 65,536 prototypes, hidden 2048, bottleneck 256, 3 layers.
    pub fn dinov2() -> Self {
        Self {
            prototypes: 65_536,
            hidden_dim: 2048,
            bottleneck_dim: 256,
            layers: 3,
        }
    }
}

/// A DINO head: see the module doc.
#[derive(Debug)]
pub struct DinoHead {
    mlp: Vec<nn::Linear>,
    weight_g: Tensor,
    weight_v: Tensor,
}

impl DinoHead {
    /// Builds the head for `in_dim`-dimensional features under `p`.
    pub fn new(p: &nn::Path, in_dim: i64, config: &HeadConfig) -> Result<Self, PretrainError> {
        if config.layers == 0 || config.prototypes < 1 || config.hidden_dim < 1 {
            return Err(PretrainError::Config(format!(
                "head needs at least 1 layer, 1 prototype and a positive hidden width, got {config:?}"
            )));
        }
        let init = nn::LinearConfig {
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        };
        let mlp_path = p / "mlp";
        let mut mlp = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let from = if i == 0 { in_dim } else { config.hidden_dim };
            let to = if i + 1 == config.layers {
                config.bottleneck_dim
            } else {
                config.hidden_dim
            };
            mlp.push(nn::linear(&mlp_path / (2 * i), from, to, init));
        }
        // PyTorch's default Linear init for `v`, then weight_norm with g filled with 1.
        let bound = 1.0 / (config.bottleneck_dim as f64).sqrt();
        let last = p / "last_layer";
        let weight_v = last.var(
            "weight_v",
            &[config.prototypes, config.bottleneck_dim],
            nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        );
        let weight_g = last.var("weight_g", &[config.prototypes, 1], nn::Init::Const(1.0));
        Ok(Self {
            mlp,
            weight_g,
            weight_v,
        })
    }

    /// The bottleneck features, L2-normalised (eps 1e-12, as dinov2 in float32).
    pub fn bottleneck(&self, x: &Tensor) -> Tensor {
        let mut x = x.shallow_clone();
        let last = self.mlp.len() - 1;
        for (i, layer) in self.mlp.iter().enumerate() {
            x = x.apply(layer);
            if i < last {
                x = x.gelu("none");
            }
        }
        let norm = x
            .norm_scalaropt_dim(2, [-1i64].as_slice(), true)
            .clamp_min(1e-12);
        x / norm
    }

    /// The prototype weights `g · v / ‖v‖` (K × bottleneck).
    pub fn prototypes(&self) -> Tensor {
        let norm = self.weight_v.norm_scalaropt_dim(2, [1i64].as_slice(), true);
        &self.weight_g * &self.weight_v / norm
    }

    /// Logits over the K prototypes for `x` (N × D → N × K).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let w = self.prototypes().to_kind(x.kind());
        self.bottleneck(x).matmul(&w.tr())
    }
}
