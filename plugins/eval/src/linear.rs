//! The linear probe (dinov2 `eval/linear.py`, dinov2.md §5) on precomputed frozen features:
//! every (input variant × learning rate) head is a `Linear(dim → classes)` (weights N(0, 0.01),
//! bias 0), and all of them are trained at once by SGD (momentum 0.9, no weight decay, learning
//! rate × batch / 256 decayed to 0 by a cosine over every step) on the softmax cross-entropy.
//! Unlike dinov2 there is no augmentation (the features are computed once, from the centre view),
//! and a held-out share of the train rows, not the test set, picks the head that is reported.
//!
//! Each input is centred per feature and divided by one number, the root mean square of the
//! centred values (both computed on the probe's training rows and applied to its validation and
//! test rows), so that the same learning rates suit models whose features have different scales.
//! The relative scale of the features is kept: dinov2 feeds them as they are.
//!
//! The gradients are written out (softmax minus one-hot, times the inputs) rather than taken by
//! autograd, and the heads of one input sit side by side in one (dim, heads × classes) matrix, so a
//! step is two matmuls per input whatever the number of learning rates.
//!
//! On the CPU the probe runs on one libtorch thread (the caller's count is restored after): its
//! steps are small operations that gain little from more threads (2 threads: 0.9 s instead of
//! 1.05 s for 16 heads on 3,600 rows), and when another process shared the 2 cores, OpenMP's
//! thread hand-offs made them 15–20 times slower.

use dinoflow_vision::tch::{self, Device, Kind, Tensor};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::EvalError;
use crate::config::LinearConfig;
use crate::report::LinearResult;

/// SGD momentum (dinov2's).
pub const MOMENTUM: f64 = 0.9;
/// Standard deviation of the initial weights (dinov2's).
pub const INIT_STD: f64 = 0.01;
/// Most logits held at once when heads are scored (heads × rows × classes).
const SCORE_VALUES: i64 = 1 << 24;

/// One classifier input: the features of the train and test rows, and what they are made of.
#[derive(Debug)]
pub struct ProbeInput {
    /// Last blocks whose cls tokens are concatenated (0 for raw pixels).
    pub layers: usize,
    /// Whether the last block's average patch token is appended.
    pub avgpool: bool,
    /// (train rows, dim) features.
    pub train: Tensor,
    /// (test rows, dim) features.
    pub test: Tensor,
}

/// Trains every (input × learning rate) head on the train rows minus a held-out share
/// (`val_fraction`, a shuffle seeded by `seed`), picks the head with the best top-1 on the
/// held-out rows (the first in input, then learning-rate order on a tie) and reports its test
/// top-1. Labels are class indices in `[0, classes)`.
pub fn probe(
    inputs: &[ProbeInput],
    train_labels: &Tensor,
    test_labels: &Tensor,
    classes: i64,
    config: &LinearConfig,
    seed: u64,
) -> Result<LinearResult, EvalError> {
    let n = train_labels.size()[0];
    if n < 2 {
        return Err(EvalError::Shape(format!(
            "the linear probe needs at least 2 train rows (one to fit, one to validate), got {n}"
        )));
    }
    if inputs.is_empty() || config.learning_rates.is_empty() || classes < 1 {
        return Err(EvalError::Shape(
            "the linear probe needs an input, a learning rate and a class".into(),
        ));
    }
    for input in inputs {
        let (tr, te) = (input.train.size(), input.test.size());
        if tr.len() != 2
            || te.len() != 2
            || tr[0] != n
            || te[0] != test_labels.size()[0]
            || tr[1] != te[1]
        {
            return Err(EvalError::Shape(format!(
                "linear probe: train features {tr:?} and test features {te:?} do not fit {n} train \
                 labels and {:?} test labels",
                test_labels.size()
            )));
        }
    }
    let device = train_labels.device();
    let _threads = OneThread::on(device);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n_val = ((n as f64 * config.val_fraction).round() as i64).clamp(1, n - 1);
    let mut order: Vec<i64> = (0..n).collect();
    order.shuffle(&mut rng);
    let val_idx = Tensor::from_slice(&order[..n_val as usize]).to_device(device);
    let fit_idx = Tensor::from_slice(&order[n_val as usize..]).to_device(device);
    let labels = train_labels.to_kind(Kind::Int64);
    let fit_labels = labels.f_index_select(0, &fit_idx)?;
    let val_labels = labels.f_index_select(0, &val_idx)?;
    let test_labels = test_labels.to_kind(Kind::Int64);

    let lrs = &config.learning_rates;
    let scale = config.batch_size as f64 / 256.0;
    let per_column: Vec<f32> = lrs
        .iter()
        .flat_map(|lr| std::iter::repeat_n((lr * scale) as f32, classes as usize))
        .collect();
    let lr0 = Tensor::from_slice(&per_column)
        .to_device(device)
        .view([1, -1]);
    let mut heads = Vec::with_capacity(inputs.len());
    for input in inputs {
        let fit = input
            .train
            .f_index_select(0, &fit_idx)?
            .to_kind(Kind::Float);
        let (mean, rms) = centring(&fit)?;
        let prepare = |x: &Tensor| -> Result<Tensor, EvalError> {
            Ok(x.to_kind(Kind::Float).f_sub(&mean)?.f_div_scalar(rms)?)
        };
        let head = Heads::new(fit.size()[1], classes, lrs.len() as i64, &mut rng, device)?;
        heads.push((
            prepare(&fit)?,
            prepare(&input.train.f_index_select(0, &val_idx)?)?,
            prepare(&input.test)?,
            head,
        ));
    }

    let n_fit = n - n_val;
    let batch = (config.batch_size as i64).min(n_fit);
    let per_epoch = (n_fit + batch - 1) / batch;
    let total = (per_epoch * config.epochs as i64) as f64;
    let mut step = 0usize;
    let mut rows: Vec<i64> = (0..n_fit).collect();
    for _ in 0..config.epochs {
        rows.shuffle(&mut rng);
        for chunk in rows.chunks(batch as usize) {
            let idx = Tensor::from_slice(chunk).to_device(device);
            let y = fit_labels.f_index_select(0, &idx)?;
            let target = y.f_one_hot(classes)?.to_kind(Kind::Float).unsqueeze(1);
            let factor = 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / total).cos());
            let lr = &lr0 * factor;
            for (fit, _, _, head) in heads.iter_mut() {
                head.step(&fit.f_index_select(0, &idx)?, &target, &lr)?;
            }
            step += 1;
        }
    }

    let mut best: Option<(f64, usize, usize)> = None;
    for (v, (_, val, _, head)) in heads.iter().enumerate() {
        for (j, acc) in head.accuracies(val, &val_labels)?.into_iter().enumerate() {
            if best.is_none_or(|(b, _, _)| acc > b) {
                best = Some((acc, v, j));
            }
        }
    }
    let (val_top1, v, j) = best.ok_or_else(|| EvalError::Shape("no head was trained".into()))?;
    let (_, _, test, head) = &heads[v];
    let test_top1 = head.accuracies(test, &test_labels)?[j];
    Ok(LinearResult {
        top1: test_top1,
        val_top1,
        layers: inputs[v].layers,
        avgpool: inputs[v].avgpool,
        lr: lrs[j],
    })
}

/// Sets libtorch to one thread on the CPU while it lives, then restores the previous count.
struct OneThread(Option<i32>);

impl OneThread {
    fn on(device: Device) -> Self {
        if device != Device::Cpu {
            return Self(None);
        }
        let before = tch::get_num_threads();
        tch::set_num_threads(1);
        Self(Some(before))
    }
}

impl Drop for OneThread {
    fn drop(&mut self) {
        if let Some(n) = self.0 {
            tch::set_num_threads(n);
        }
    }
}

/// Per-feature mean of `x` and the root mean square of `x − mean` over all values (1 when the
/// features are constant).
fn centring(x: &Tensor) -> Result<(Tensor, f64), EvalError> {
    let mean = x.f_mean_dim([0i64].as_slice(), true, Kind::Float)?;
    let rms = x
        .f_sub(&mean)?
        .f_square()?
        .f_mean(Kind::Double)?
        .double_value(&[])
        .sqrt();
    Ok((mean, if rms > 1e-12 { rms } else { 1.0 }))
}

/// L linear heads on one input, one per learning rate, side by side: weights (dim, L·classes),
/// biases (1, L·classes) and their momentum buffers, so that a step is two plain matmuls.
struct Heads {
    heads: i64,
    classes: i64,
    weight: Tensor,
    bias: Tensor,
    weight_buf: Tensor,
    bias_buf: Tensor,
}

impl Heads {
    fn new(
        dim: i64,
        classes: i64,
        heads: i64,
        rng: &mut ChaCha8Rng,
        device: Device,
    ) -> Result<Self, EvalError> {
        let values = (heads * dim * classes) as usize;
        let weight = Tensor::from_slice(&normal(rng, values, INIT_STD))
            .view([dim, heads * classes])
            .to_device(device);
        let bias = Tensor::zeros([1, heads * classes], (Kind::Float, device));
        Ok(Self {
            heads,
            classes,
            weight_buf: weight.zeros_like(),
            bias_buf: bias.zeros_like(),
            weight,
            bias,
        })
    }

    /// Logits of every head: (rows, L, classes).
    fn logits(&self, x: &Tensor) -> Result<Tensor, EvalError> {
        Ok(x.f_matmul(&self.weight)?
            .f_add(&self.bias)?
            .view([-1, self.heads, self.classes]))
    }

    /// One SGD step with momentum on the mean cross-entropy of the batch `x` (B, dim) with one-hot
    /// `target` (B, 1, classes); `lr` is (1, L·classes), each head's rate repeated per class.
    fn step(&mut self, x: &Tensor, target: &Tensor, lr: &Tensor) -> Result<(), EvalError> {
        let b = x.size()[0];
        let p = self.logits(x)?.f_softmax(-1, Kind::Float)?;
        let g = p
            .f_sub(target)?
            .f_div_scalar(b as f64)?
            .view([b, self.heads * self.classes]);
        let grad_w = x.tr().f_matmul(&g)?;
        let grad_b = g.f_sum_dim_intlist([0i64].as_slice(), true, Kind::Float)?;
        self.weight_buf = self.weight_buf.f_mul_scalar(MOMENTUM)?.f_add(&grad_w)?;
        self.bias_buf = self.bias_buf.f_mul_scalar(MOMENTUM)?.f_add(&grad_b)?;
        self.weight = self.weight.f_sub(&self.weight_buf.f_mul(lr)?)?;
        self.bias = self.bias.f_sub(&self.bias_buf.f_mul(lr)?)?;
        Ok(())
    }

    /// Top-1 accuracy of each head on `x` with class-index `labels`.
    fn accuracies(&self, x: &Tensor, labels: &Tensor) -> Result<Vec<f64>, EvalError> {
        let rows = x.size()[0];
        if rows == 0 {
            return Ok(vec![0.0; self.heads as usize]);
        }
        let chunk = (SCORE_VALUES / (self.heads * self.classes)).clamp(1, rows);
        let mut correct = Tensor::zeros([self.heads], (Kind::Int64, x.device()));
        let mut start = 0;
        while start < rows {
            let len = chunk.min(rows - start);
            let predicted = self.logits(&x.narrow(0, start, len))?.f_argmax(-1, false)?;
            let hits = predicted
                .f_eq_tensor(&labels.narrow(0, start, len).unsqueeze(1))?
                .f_sum_dim_intlist([0i64].as_slice(), false, Kind::Int64)?;
            correct = correct.f_add(&hits)?;
            start += len;
        }
        Ok(Vec::<i64>::try_from(&correct.to_device(Device::Cpu))?
            .into_iter()
            .map(|c| c as f64 / rows as f64)
            .collect())
    }
}

/// `count` values of N(0, std²) (Box–Muller on the seeded generator, so the probe does not touch
/// libtorch's global random state).
fn normal(rng: &mut ChaCha8Rng, count: usize, std: f64) -> Vec<f32> {
    let mut out = Vec::with_capacity(count + 1);
    while out.len() < count {
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt() * std;
        let t = 2.0 * std::f64::consts::PI * u2;
        out.push((r * t.cos()) as f32);
        out.push((r * t.sin()) as f32);
    }
    out.truncate(count);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_values_have_the_asked_spread() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let v = normal(&mut rng, 100_001, 0.01);
        assert_eq!(v.len(), 100_001);
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / v.len() as f64;
        assert!(mean.abs() < 1e-4, "{mean}");
        assert!((var.sqrt() - 0.01).abs() < 2e-4, "{}", var.sqrt());
    }

    #[test]
    fn centring_gives_unit_mean_square() {
        let x = Tensor::from_slice(&[1.0f32, 10.0, 3.0, 30.0]).view([2, 2]);
        let (mean, rms) = centring(&x).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(mean.view([-1])).unwrap(),
            vec![2.0, 20.0]
        );
        // centred values ±1 and ±10: mean square 50.5.
        assert!((rms - 50.5f64.sqrt()).abs() < 1e-9);
        let (_, rms) = centring(&Tensor::ones([3, 2], (Kind::Float, Device::Cpu))).unwrap();
        assert_eq!(rms, 1.0);
    }
}
