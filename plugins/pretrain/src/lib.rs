//! DINOv2's self-supervised training on libtorch (dinov2.md §2): the `pretrain` stage
//! ([`Pretrain`], configured by [`PretrainConfig`]), the `distill` stage ([`Distill`], dinov2.md
//! §4, the same loop against a frozen teacher) and their building blocks:
//!
//! - [`DinoHead`]: the projection head (MLP, bottleneck, L2 normalisation, weight-normalised
//!   prototypes with a trainable `g`);
//! - [`loss`]: teacher centering and Sinkhorn-Knopp, the DINO loss over crop pairs, the iBOT loss
//!   over masked patches, the KoLeo regulariser;
//! - [`masking`]: iBOT's block masks and their per-batch ratios;
//! - [`schedule`]: the cosine schedules (learning rate, weight decay, teacher temperature, EMA
//!   momentum, frozen prototypes);
//! - [`collapse`]: the collapse guard (uniform DINO targets, no feature spread);
//! - [`monitor`]: the in-training k-NN evaluation of the EMA network (`monitor:`);
//! - [`phases`]: the resolution phases (`phases:`, dinov2's high-resolution end of training);
//! - [`learner`]: one training iteration of student and EMA teacher;
//! - [`optim`]: parameter groups (layer-wise learning-rate decay, no weight decay on biases, norms
//!   and LayerScale), AdamW and per-module gradient clipping.

mod checkpoint;
pub mod collapse;
pub mod config;
mod data;
mod distill;
mod error;
pub mod head;
pub mod learner;
pub mod loss;
pub mod masking;
mod metrics;
pub mod monitor;
pub mod optim;
pub mod phases;
pub mod schedule;
mod stage;

pub use collapse::{Collapse, CollapseGuard, CollapseKind};
pub use config::PretrainConfig;
pub use distill::{Distill, DistillConfig, ExternalTeacher};
pub use error::PretrainError;
pub use head::{DinoHead, HeadConfig};
pub use learner::{
    Batch, Centering, FrozenTeacher, Learner, ObjectiveConfig, StepLosses, StepValues,
};
pub use monitor::MonitorConfig;
pub use phases::{Phase, PhasePlan};
pub use stage::{MODEL_FILE, Pretrain, TRAINING_FILE};
