//! The collapse guard of the training loop: it watches each iteration's health figures
//! ([`StepLosses::teacher_entropy`], [`StepLosses::feature_std`]) and says when a term of the
//! objective has collapsed, so that a run that learns nothing is reported (or stopped) instead of
//! ending quietly with a useless model.
//!
//! Two conditions are watched:
//!
//! - **uniform DINO targets**: the teacher's targets have an entropy within 1 % of `ln K` (K
//!   prototypes), so they carry no information for the student;
//! - **no feature spread**: the L2-normalised student cls tokens hardly differ across the batch,
//!   `feature_std · sqrt(D) < 0.05` (isotropic random unit vectors in D dimensions give a
//!   `feature_std` of about `1 / sqrt(D)`, so the product is about 1).
//!
//! Both hold for a while at initialisation (LayerScale 1e-5 keeps the residual branches near
//! zero), so a condition counts as a collapse only once it has held for `patience` consecutive
//! iterations. Each such episode is reported once, when it reaches `patience`; the condition must
//! stop holding before a new episode can begin. The guard only reads numbers: it uses no random
//! draws and changes nothing about the training.

use std::fmt;

use crate::PretrainError;
use crate::config::PretrainConfig;
use crate::learner::StepLosses;

/// Targets whose entropy is at least this fraction of `ln K` count as uniform.
pub const UNIFORM_FRACTION: f64 = 0.99;
/// A normalised spread `feature_std · sqrt(D)` below this counts as no spread.
pub const MIN_SPREAD: f64 = 0.05;

/// Which term collapsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollapseKind {
    /// The teacher's DINO targets are (nearly) uniform over the prototypes.
    UniformTargets,
    /// The student's cls tokens (nearly) coincide across the batch.
    NoSpread,
}

impl CollapseKind {
    /// A short name, as written in the stage metric `collapse_first_kind`.
    pub fn name(self) -> &'static str {
        match self {
            Self::UniformTargets => "uniform_targets",
            Self::NoSpread => "no_spread",
        }
    }
}

/// One collapse episode, reported when its condition has held for `patience` iterations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Collapse {
    /// The collapsed term.
    pub kind: CollapseKind,
    /// The first iteration of the episode.
    pub since: usize,
    /// The iteration at which the condition had held for `patience` iterations.
    pub at: usize,
    /// The figure at `at`: the teacher entropy in nats ([`CollapseKind::UniformTargets`]), or
    /// the normalised spread `feature_std · sqrt(D)` ([`CollapseKind::NoSpread`]).
    pub value: f64,
    /// `ln K`, the entropy of uniform targets over the K prototypes.
    pub log_k: f64,
}

impl fmt::Display for Collapse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held = self.at + 1 - self.since;
        match self.kind {
            CollapseKind::UniformTargets => write!(
                f,
                "DINO targets uniform at {:.4} nats of log K = {:.4} for {held} iterations since \
                 iteration {}; try a lower teacher temperature (`teacher_temp`), a larger \
                 LayerScale init (`layerscale`), a smaller head (`objective.head.prototypes`) or \
                 a lower teacher momentum (`momentum`)",
                self.value, self.log_k, self.since
            ),
            CollapseKind::NoSpread => write!(
                f,
                "no feature spread: feature spread {:.4} (feature_std · sqrt(D), below \
                 {MIN_SPREAD}) for {held} iterations since iteration {}; try a lower `base_lr`, \
                 a higher `objective.koleo_weight`, and check that the crops differ (`crops`)",
                self.value, self.since
            ),
        }
    }
}

/// How long one condition has held.
#[derive(Debug, Clone, Copy, Default)]
struct Streak {
    /// First iteration of the current run of iterations where the condition holds.
    since: Option<usize>,
    /// Length of that run.
    length: usize,
}

impl Streak {
    /// Records one iteration; true when the run reaches `patience` exactly now.
    fn record(&mut self, step: usize, holds: bool, patience: usize) -> bool {
        if !holds {
            *self = Self::default();
            return false;
        }
        self.since.get_or_insert(step);
        self.length += 1;
        self.length == patience
    }
}

/// Watches the health figures of consecutive iterations and reports collapse episodes.
#[derive(Debug, Clone)]
pub struct CollapseGuard {
    patience: usize,
    log_k: f64,
    sqrt_d: f64,
    uniform: Streak,
    spread: Streak,
    episodes: usize,
    first: Option<Collapse>,
}

impl CollapseGuard {
    /// A guard for a head of `prototypes` (K) outputs on a backbone of width `embed_dim` (D),
    /// reporting conditions that hold for `patience` consecutive iterations.
    pub fn new(patience: usize, prototypes: i64, embed_dim: i64) -> Result<Self, PretrainError> {
        if patience == 0 {
            return Err(PretrainError::Config(
                "the collapse patience must be at least 1 iteration".into(),
            ));
        }
        if prototypes < 1 || embed_dim < 1 {
            return Err(PretrainError::Config(format!(
                "the collapse guard needs at least 1 prototype and 1 dimension (got {prototypes} \
                 prototypes, embed_dim {embed_dim})"
            )));
        }
        Ok(Self {
            patience,
            log_k: (prototypes as f64).ln(),
            sqrt_d: (embed_dim as f64).sqrt(),
            uniform: Streak::default(),
            spread: Streak::default(),
            episodes: 0,
            first: None,
        })
    }

    /// The guard of a training run: [`PretrainConfig::collapse_patience`], the head's
    /// prototypes and the backbone's width.
    pub fn for_config(config: &PretrainConfig) -> Result<Self, PretrainError> {
        Self::new(
            config.collapse_patience(),
            config.objective.head.prototypes,
            config.vit().embed_dim,
        )
    }

    /// Feeds iteration `step`'s figures (iterations are taken as consecutive in the order fed);
    /// returns the episodes that reach `patience` at this iteration (none, one, or both terms,
    /// uniform targets first).
    pub fn observe(&mut self, step: usize, losses: &StepLosses) -> Vec<Collapse> {
        let spread = losses.feature_std * self.sqrt_d;
        let checks = [
            (
                CollapseKind::UniformTargets,
                losses.teacher_entropy,
                losses.teacher_entropy >= UNIFORM_FRACTION * self.log_k,
            ),
            (CollapseKind::NoSpread, spread, spread < MIN_SPREAD),
        ];
        let mut out = Vec::new();
        for (kind, value, holds) in checks {
            let streak = match kind {
                CollapseKind::UniformTargets => &mut self.uniform,
                CollapseKind::NoSpread => &mut self.spread,
            };
            if streak.record(step, holds, self.patience) {
                out.push(Collapse {
                    kind,
                    since: streak.since.unwrap_or(step),
                    at: step,
                    value,
                    log_k: self.log_k,
                });
            }
        }
        self.episodes += out.len();
        if self.first.is_none() {
            self.first = out.first().copied();
        }
        out
    }

    /// [`observe`](Self::observe) for the training loop: warns (`tracing`) about each episode
    /// reported at `step`, or, with `fail`, returns the first as [`PretrainError::Collapse`].
    pub fn step(
        &mut self,
        step: usize,
        losses: &StepLosses,
        fail: bool,
    ) -> Result<(), PretrainError> {
        for collapse in self.observe(step, losses) {
            if fail {
                return Err(PretrainError::Collapse {
                    iteration: step,
                    collapse,
                });
            }
            tracing::warn!(
                iteration = step,
                kind = collapse.kind.name(),
                "training collapsed at iteration {step}: {collapse}"
            );
        }
        Ok(())
    }

    /// The number of episodes reported so far.
    pub fn episodes(&self) -> usize {
        self.episodes
    }

    /// The first episode reported, if any.
    pub fn first(&self) -> Option<&Collapse> {
        self.first.as_ref()
    }

    /// The patience in iterations.
    pub fn patience(&self) -> usize {
        self.patience
    }
}
