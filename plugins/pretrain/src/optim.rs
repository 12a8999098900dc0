//! Optimisation as in dinov2 (`utils/param_groups.py`, `train/train.py`, dinov2.md §2.4):
//! per-parameter learning-rate and weight-decay multipliers, AdamW, per-module gradient clipping
//! and the EMA teacher update.

use dinoflow_vision::tch::{Tensor, no_grad};

use crate::PretrainError;

/// How one trainable tensor is optimised.
#[derive(Debug)]
pub struct Param {
    /// Its name, e.g. `backbone.blocks.3.attn.qkv.weight` or `dino_head.last_layer.weight_g`.
    pub name: String,
    /// The variable.
    pub tensor: Tensor,
    /// Multiplies the learning rate (layer-wise decay, patch-embedding factor).
    pub lr_multiplier: f64,
    /// Multiplies the weight decay (0 for biases, norms and LayerScale).
    pub wd_multiplier: f64,
    /// A prototype layer (`last_layer`), whose learning rate follows its own schedule.
    pub is_last_layer: bool,
}

impl Param {
    /// The multipliers dinov2 gives `name` in a model whose backbone has `depth` blocks, with
    /// layer-wise decay `decay` (0.9 by default, 1.0 = off) and `patch_embed_lr` (0.2).
    pub fn new(name: &str, tensor: Tensor, depth: usize, decay: f64, patch_embed_lr: f64) -> Self {
        let mut lr_multiplier = decay.powi((depth + 1 - layer_id(name, depth)) as i32);
        if name.contains("patch_embed") {
            lr_multiplier *= patch_embed_lr;
        }
        let no_decay = name.ends_with(".bias") || name.contains("norm") || name.contains("gamma");
        Self {
            name: name.to_string(),
            tensor,
            lr_multiplier,
            wd_multiplier: if no_decay { 0.0 } else { 1.0 },
            is_last_layer: name.contains("last_layer"),
        }
    }
}

/// dinov2's layer id: 0 for the embeddings and tokens, `i + 1` for block `i`, `depth + 1` for
/// everything else (the final norm, the heads).
fn layer_id(name: &str, depth: usize) -> usize {
    if !name.starts_with("backbone") {
        return depth + 1;
    }
    const EMBEDDINGS: [&str; 6] = [
        ".pos_embed",
        ".patch_embed",
        ".mask_token",
        ".cls_token",
        ".reg_token",
        ".register_tokens",
    ];
    if EMBEDDINGS.iter().any(|e| name.contains(e)) {
        return 0;
    }
    name.find(".blocks.")
        .and_then(|at| name[at + ".blocks.".len()..].split('.').next())
        .and_then(|i| i.parse::<usize>().ok())
        .map_or(depth + 1, |i| (i + 1).min(depth + 1))
}

/// AdamW exactly as `torch.optim.AdamW` (decoupled decay `p ← p·(1 − lr·wd)`, bias-corrected
/// moments, eps added after the square root), with dinov2's per-parameter multipliers.
#[derive(Debug)]
pub struct AdamW {
    /// β1, β2 (dinov2: 0.9, 0.999).
    pub betas: (f64, f64),
    /// ε (1e-8).
    pub eps: f64,
    /// Steps taken.
    pub step: i64,
    /// First and second moments per parameter, in the order of the parameters given to `step`.
    pub moments: Vec<(Tensor, Tensor)>,
    /// One working tensor per parameter, so that an update allocates nothing.
    scratch: Vec<Tensor>,
}

impl AdamW {
    /// A fresh optimiser with zero moments for `params`.
    pub fn new(params: &[Param]) -> Self {
        Self {
            betas: (0.9, 0.999),
            eps: 1e-8,
            step: 0,
            moments: params
                .iter()
                .map(|p| (p.tensor.zeros_like(), p.tensor.zeros_like()))
                .collect(),
            scratch: params.iter().map(|p| p.tensor.empty_like()).collect(),
        }
    }

    /// One update of every parameter that has a gradient, with the iteration's learning rate,
    /// prototype learning rate and weight decay.
    pub fn step(
        &mut self,
        params: &[Param],
        lr: f64,
        last_layer_lr: f64,
        weight_decay: f64,
    ) -> Result<(), PretrainError> {
        if params.len() != self.moments.len() {
            return Err(PretrainError::Shape(format!(
                "optimiser holds {} moments for {} parameters",
                self.moments.len(),
                params.len()
            )));
        }
        self.step += 1;
        let (b1, b2) = self.betas;
        let correction1 = 1.0 - b1.powi(self.step as i32);
        let correction2 = (1.0 - b2.powi(self.step as i32)).sqrt();
        no_grad(|| {
            for ((p, (m, v)), work) in params.iter().zip(&mut self.moments).zip(&mut self.scratch) {
                let grad = p.tensor.grad();
                if !grad.defined() {
                    continue;
                }
                let lr_p = if p.is_last_layer { last_layer_lr } else { lr } * p.lr_multiplier;
                let wd_p = weight_decay * p.wd_multiplier;
                let mut t = p.tensor.shallow_clone();
                // torch.optim.AdamW's single-tensor update, in place.
                _ = t.f_mul_scalar_(1.0 - lr_p * wd_p)?;
                _ = m.f_lerp_(&grad, 1.0 - b1)?;
                work.f_copy_(&grad)?;
                _ = work.f_mul_scalar_(1.0 - b2)?;
                _ = v.f_mul_scalar_(b2)?;
                _ = v.f_addcmul_(&grad, work)?;
                _ = v.f_sqrt_out(work)?;
                _ = work.f_div_scalar_(correction2)?;
                _ = work.f_add_scalar_(self.eps)?;
                _ = m.f_div_out(work, work)?;
                _ = work.f_mul_scalar_(lr_p / correction1)?;
                _ = t.f_sub_(work)?;
            }
            Ok::<(), PretrainError>(())
        })?;
        Ok(())
    }
}

/// Scales the gradients of `params` so that their joint L2 norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_` (factor `max_norm / (norm + 1e-6)`, capped at 1). dinov2
/// clips the backbone and each head separately at 3.0. Returns the norm before clipping.
pub fn clip_grad_norm(params: &[&Param], max_norm: f64) -> f64 {
    no_grad(|| {
        let grads: Vec<Tensor> = params
            .iter()
            .map(|p| p.tensor.grad())
            .filter(Tensor::defined)
            .collect();
        if grads.is_empty() {
            return 0.0;
        }
        // torch.nn.utils.clip_grad_norm_: the norm of the per-tensor norms.
        let norms: Vec<Tensor> = grads.iter().map(Tensor::norm).collect();
        let norm = Tensor::stack(&norms, 0).norm().double_value(&[]);
        let factor = (max_norm / (norm + 1e-6)).min(1.0);
        if factor < 1.0 {
            for g in &grads {
                let mut g = g.shallow_clone();
                let _ = g.g_mul_scalar_(factor);
            }
        }
        norm
    })
}

/// The EMA teacher update `θt ← m·θt + (1 − m)·θs`, pairwise over the two lists.
pub fn ema_update(
    teacher: &[Tensor],
    student: &[Tensor],
    momentum: f64,
) -> Result<(), PretrainError> {
    if teacher.len() != student.len() {
        return Err(PretrainError::Shape(format!(
            "teacher has {} tensors, student {}",
            teacher.len(),
            student.len()
        )));
    }
    no_grad(|| {
        for (t, s) in teacher.iter().zip(student) {
            let mut t = t.shallow_clone();
            _ = t.f_lerp_(s, 1.0 - momentum)?;
        }
        Ok::<(), PretrainError>(())
    })?;
    Ok(())
}
