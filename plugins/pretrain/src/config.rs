//! The `pretrain` stage's configuration (`with:`).

use dinoflow_vision::augment::MultiCropConfig;
use dinoflow_vision::{DeviceChoice, Ffn, Precision, Preset, VitConfig, swiglu_hidden};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::learner::ObjectiveConfig;
use crate::monitor::MonitorConfig;
use crate::phases::{Phase, PhasePlan};
use crate::schedule::{CosineSchedule, OFFICIAL_EPOCH_LENGTH, scaled_lr};

/// Configuration of the `pretrain` stage. Schedules are in iterations; the defaults are dinov2's,
/// with every warm-up capped at a fraction of a short run (see each field).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PretrainConfig {
    /// The backbone: a preset (`tiny-28` for 28 px grey images; `tiny`, `small`, `base`, `large`).
    pub preset: Preset,
    /// Width of the tokens, overriding the preset's (the MLP widens with it, 4×).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embed_dim: Option<i64>,
    /// Number of blocks, overriding the preset's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<i64>,
    /// Attention heads, overriding the preset's (must divide `embed_dim`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_heads: Option<i64>,
    /// Side of the square patches, overriding the preset's (`tiny-28`: 4, a 7×7 grid at 28 px;
    /// 7 gives a 4×4 grid at about a third of the cost per image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_size: Option<i64>,
    /// Initial LayerScale value, overriding the preset's 1e-5 (larger values let short runs
    /// move the residual branches sooner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layerscale: Option<f64>,
    /// Register tokens.
    #[serde(default)]
    pub registers: i64,
    /// Stochastic depth rate of the student (dinov2: 0.1 for ViT-S/B, 0.3–0.4 for L/g).
    #[serde(default)]
    pub drop_path: f64,
    /// Training iterations.
    pub steps: usize,
    /// Images per iteration (each gives 2 global and `crops.n_local` local crops).
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Local crops per image (default 8, as dinov2); overrides `crops.n_local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_crops: Option<u32>,
    /// The whole multi-crop recipe (sizes, scales, colour, blur). Default: dinov2's, with 28/12 px
    /// crops for `tiny-28`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crops: Option<MultiCropConfig>,
    /// Resolution phases (dinov2's high-resolution end of training): from the fraction `from`
    /// of `steps` on, the global crops are cut at `global_size` (and the local crops at
    /// `local_size`, if given), the position embedding interpolated to the new patch grid.
    /// Default: none, the sizes of `crops` throughout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<Phase>,
    /// Heads, loss weights, centering, clipping, layer decay.
    #[serde(default)]
    pub objective: ObjectiveConfig,
    /// Base learning rate before the `sqrt(batch / 1024)` scaling (dinov2: 4e-3).
    #[serde(default = "default_base_lr")]
    pub base_lr: f64,
    /// Final learning rate (1e-6).
    #[serde(default = "default_min_lr")]
    pub min_lr: f64,
    /// Linear learning-rate warm-up (default: 10 dinov2 epochs, at most a tenth of the run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<usize>,
    /// Weight decay from, to (cosine; 0.04 → 0.4).
    #[serde(default = "default_weight_decay")]
    pub weight_decay: (f64, f64),
    /// Teacher EMA momentum from, to (cosine; 0.992 → 1.0).
    #[serde(default = "default_momentum")]
    pub momentum: (f64, f64),
    /// Teacher temperature from, to (linear warm-up, then constant; 0.04 → 0.07).
    #[serde(default = "default_teacher_temp")]
    pub teacher_temp: (f64, f64),
    /// Teacher temperature warm-up (default: 30 dinov2 epochs, at most 30 % of the run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_temp_warmup_steps: Option<usize>,
    /// Iterations with the prototype layers frozen (default: one dinov2 epoch, at most 1 % of the
    /// run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_last_layer_steps: Option<usize>,
    /// A checkpoint every this many iterations; a rerun after a crash resumes from the newest.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: usize,
    /// Iterations a collapse condition (uniform DINO targets, or no spread of the student's
    /// features) must hold in a row before it is reported (default: a quarter of `steps`, at
    /// least 1). Both hold for a while at initialisation, so short episodes are normal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collapse_patience: Option<usize>,
    /// Stop the stage with an error at the first collapse instead of warning (default false).
    #[serde(default, skip_serializing_if = "is_false")]
    pub fail_on_collapse: bool,
    /// The in-training evaluation monitor: a k-NN of the EMA network on the first rows of the
    /// `monitor_train` and `monitor_test` inputs every `every` iterations (connect both with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<MonitorConfig>,
    /// Seed of the initialisation, the data order, the crops and the masks.
    #[serde(default)]
    pub seed: u64,
    /// Where the training runs (`auto`, `cpu`, `cuda`).
    #[serde(default)]
    pub device: DeviceChoice,
    /// The forward passes' arithmetic: `auto` (bfloat16 autocast on CUDA, float32 on the CPU),
    /// `float32` or `bfloat16`. Parameters, gradients, optimiser state and losses are float32.
    #[serde(default)]
    pub precision: Precision,
}

fn default_batch() -> usize {
    64
}
fn default_base_lr() -> f64 {
    4e-3
}
fn default_min_lr() -> f64 {
    1e-6
}
fn default_weight_decay() -> (f64, f64) {
    (0.04, 0.4)
}
fn default_momentum() -> (f64, f64) {
    (0.992, 1.0)
}
fn default_teacher_temp() -> (f64, f64) {
    (0.04, 0.07)
}
fn default_checkpoint_every() -> usize {
    100
}
/// Leaves `fail_on_collapse: false` out of the canonical config, so that the fingerprints of
/// configurations written before the field existed stay the same.
fn is_false(b: &bool) -> bool {
    !*b
}

/// The schedules of a run, built from a [`PretrainConfig`].
#[derive(Debug, Clone)]
pub struct Schedules {
    /// Learning rate.
    pub lr: CosineSchedule,
    /// Learning rate of the prototype layers.
    pub last_layer_lr: CosineSchedule,
    /// Weight decay.
    pub weight_decay: CosineSchedule,
    /// Teacher momentum.
    pub momentum: CosineSchedule,
    /// Teacher temperature.
    pub teacher_temp: CosineSchedule,
}

impl PretrainConfig {
    /// The backbone's architecture: the preset with the overrides.
    pub fn vit(&self) -> VitConfig {
        let preset = self.preset.config();
        let embed_dim = self.embed_dim.unwrap_or(preset.embed_dim);
        let ffn = match preset.ffn {
            Ffn::Mlp { .. } => Ffn::Mlp {
                hidden: 4 * embed_dim,
            },
            Ffn::Swiglu { .. } => Ffn::Swiglu {
                hidden: swiglu_hidden(embed_dim),
            },
        };
        VitConfig {
            embed_dim,
            depth: self.depth.unwrap_or(preset.depth),
            num_heads: self.num_heads.unwrap_or(preset.num_heads),
            patch_size: self.patch_size.unwrap_or(preset.patch_size),
            ffn,
            layerscale: self.layerscale.unwrap_or(preset.layerscale),
            registers: self.registers,
            drop_path: self.drop_path,
            mask_token: true,
            ..preset
        }
    }

    /// The multi-crop recipe in effect. For `tiny-28` the local crops are the smallest multiple
    /// of the patch size from 12 px (12 px with patch 4, 14 px with patch 7).
    pub fn crops(&self) -> MultiCropConfig {
        let crops = self.crops.clone().unwrap_or_else(|| match self.preset {
            Preset::Tiny28 => {
                let patch = self.vit().patch_size.max(1) as u32;
                MultiCropConfig::small_28().with_sizes(28, 12_u32.div_ceil(patch) * patch)
            }
            _ => MultiCropConfig::dinov2(),
        });
        match self.local_crops {
            Some(n) => crops.with_n_local(n),
            None => crops,
        }
    }

    /// The crops of every stretch of the run: those of [`PretrainConfig::crops`], then those of
    /// each phase.
    pub fn phase_plan(&self) -> PhasePlan {
        PhasePlan::new(&self.crops(), &self.phases, self.steps)
    }

    /// The collapse guard's patience in effect: `collapse_patience`, or a quarter of `steps`
    /// (at least 1).
    pub fn collapse_patience(&self) -> usize {
        self.collapse_patience.unwrap_or((self.steps / 4).max(1))
    }

    /// The schedules in effect.
    pub fn schedules(&self) -> Schedules {
        let total = self.steps;
        let capped = |given: Option<usize>, epochs: usize, fraction: f64| {
            given.unwrap_or_else(|| {
                (epochs * OFFICIAL_EPOCH_LENGTH).min((total as f64 * fraction) as usize)
            })
        };
        let warmup = capped(self.warmup_steps, 10, 0.1);
        let lr = scaled_lr(self.base_lr, self.batch_size);
        let lr_schedule = CosineSchedule::new(lr, self.min_lr, total, warmup, 0.0, 0);
        let mut last_layer_lr = lr_schedule.clone();
        last_layer_lr.zero_first(capped(self.freeze_last_layer_steps, 1, 0.01));
        let temp_warmup = capped(self.teacher_temp_warmup_steps, 30, 0.3);
        Schedules {
            lr: lr_schedule,
            last_layer_lr,
            weight_decay: CosineSchedule::new(
                self.weight_decay.0,
                self.weight_decay.1,
                total,
                0,
                0.0,
                0,
            ),
            momentum: CosineSchedule::new(self.momentum.0, self.momentum.1, total, 0, 0.0, 0),
            teacher_temp: CosineSchedule::new(
                self.teacher_temp.1,
                self.teacher_temp.1,
                temp_warmup,
                temp_warmup,
                self.teacher_temp.0,
                0,
            ),
        }
    }
}
