//! DINOv2's losses (dinov2 `loss/`, dinov2.md §2.3), on logits from [`crate::DinoHead`].
//!
//! Teacher targets come from [`Center::targets`] (softmax after subtracting an EMA centre) or
//! [`sinkhorn_knopp`]; student log-probabilities use temperature [`STUDENT_TEMP`]. The DINO and
//! iBOT losses return the *sum* the caller scales (see the functions); KoLeo runs in float32.

use dinoflow_vision::tch::{Device, Kind, Tensor};

use crate::PretrainError;

/// The student temperature τs (DINO and iBOT).
pub const STUDENT_TEMP: f64 = 0.1;

/// An exponential moving average of the teacher's batch-mean logits, subtracted before the
/// teacher softmax (DINO's centering; momentum 0.9 in dinov2).
#[derive(Debug)]
pub struct Center {
    value: Tensor,
    momentum: f64,
}

impl Center {
    /// A zero centre of `k` logits on `device`.
    pub fn new(k: i64, momentum: f64, device: Device) -> Self {
        Self {
            value: Tensor::zeros([1, k], (Kind::Float, device)),
            momentum,
        }
    }

    /// The centre (1 × K).
    pub fn value(&self) -> &Tensor {
        &self.value
    }

    /// Replaces the centre (when resuming from a checkpoint).
    pub fn set_value(&mut self, value: Tensor) {
        self.value = value;
    }

    /// Teacher targets: `softmax((t − c) / temp)` over the last dimension, in float32.
    pub fn targets(&self, teacher_logits: &Tensor, temp: f64) -> Tensor {
        ((teacher_logits.to_kind(Kind::Float) - &self.value) / temp).softmax(-1, Kind::Float)
    }

    /// Moves the centre towards the mean of `teacher_logits` (N × K) over its rows; call after
    /// [`Center::targets`] (dinov2 applies the update at the next step).
    pub fn update(&mut self, teacher_logits: &Tensor) {
        let batch = teacher_logits
            .to_kind(Kind::Float)
            .mean_dim([0i64].as_slice(), true, Kind::Float)
            .detach();
        self.value = &self.value * self.momentum + batch * (1.0 - self.momentum);
    }
}

/// Sinkhorn-Knopp teacher targets (N × K → N × K, each row summing to 1), in float32:
/// `Q = exp(t / temp)ᵀ`, normalised to sum 1, then `iterations` rounds of rows (prototypes) to
/// 1/K and columns (samples) to 1/N, finally scaled by N. dinov2 uses 3 iterations.
pub fn sinkhorn_knopp(teacher_logits: &Tensor, temp: f64, iterations: usize) -> Tensor {
    let t = teacher_logits.to_kind(Kind::Float);
    let (n, k) = (t.size()[0] as f64, t.size()[1] as f64);
    let mut q = (t / temp).exp().tr();
    q = &q / q.sum(Kind::Float);
    for _ in 0..iterations {
        q = &q / q.sum_dim_intlist([1i64].as_slice(), true, Kind::Float) / k;
        q = &q / q.sum_dim_intlist([0i64].as_slice(), true, Kind::Float) / n;
    }
    (q * n).tr()
}

/// The DINO cross-entropy summed over every (student chunk, teacher chunk) pair:
/// `−Σ_s Σ_t mean_rows(Σ_k t_k · log_softmax(s / τs)_k)`. Every chunk has the same rows
/// (images). dinov2 divides the local-crop sum by the number of pairs (n_local·n_global +
/// n_global·(n_global − 1), 18 with 8 local crops) and, for the global crops, calls it with the
/// student's global cls logits and the swapped teacher targets as one chunk each, times 2, over
/// the same number.
pub fn dino_loss(students: &[Tensor], teachers: &[Tensor]) -> Result<Tensor, PretrainError> {
    let Some(first) = students.first().or(teachers.first()) else {
        return Err(PretrainError::Shape(
            "dino_loss needs at least one chunk".into(),
        ));
    };
    let mut total = Tensor::zeros([], (Kind::Float, first.device()));
    for s in students {
        let log_p = (s.to_kind(Kind::Float) / STUDENT_TEMP).log_softmax(-1, Kind::Float);
        for t in teachers {
            if t.size() != s.size() {
                return Err(PretrainError::Shape(format!(
                    "student chunk {:?} and teacher chunk {:?} differ",
                    s.size(),
                    t.size()
                )));
            }
            let ce = (t * &log_p).sum_dim_intlist([-1i64].as_slice(), false, Kind::Float);
            total -= ce.mean(Kind::Float);
        }
    }
    Ok(total)
}

/// The iBOT loss over masked patch tokens: `−Σ_p w_p Σ_k t_pk · log_softmax(s_p / τs)_k / n_crops`
/// where `student` and `teacher` hold one row per masked patch (M × K), `weights` is 1 / (masked
/// patches of that patch's crop) (M) and `n_crops` is the number of global crops, masked or not.
/// With dinov2's scaling (×2 loss scale × ½ per global crop) this is the loss as trained.
pub fn ibot_loss(
    student: &Tensor,
    teacher: &Tensor,
    weights: &Tensor,
    n_crops: i64,
) -> Result<Tensor, PretrainError> {
    if student.size() != teacher.size() || weights.size() != [student.size()[0]] {
        return Err(PretrainError::Shape(format!(
            "ibot_loss: student {:?}, teacher {:?} and weights {:?} do not agree",
            student.size(),
            teacher.size(),
            weights.size()
        )));
    }
    if n_crops < 1 {
        return Err(PretrainError::Shape(
            "ibot_loss needs at least one crop".into(),
        ));
    }
    let log_p = (student.to_kind(Kind::Float) / STUDENT_TEMP).log_softmax(-1, Kind::Float);
    let ce = (teacher * log_p).sum_dim_intlist([-1i64].as_slice(), false, Kind::Float);
    Ok(-(ce * weights.to_kind(Kind::Float)).sum(Kind::Float) / n_crops as f64)
}

/// The KoLeo regulariser on one chunk of backbone cls features (N × D, N ≥ 2), in float32:
/// L2-normalise (eps 1e-8), find each row's nearest other row by inner product, and return
/// `−mean log(‖x_i − x_j + 1e-8‖ + 1e-8)` (PyTorch's `PairwiseDistance` adds its eps to the
/// difference). dinov2 weights it 0.1 per global crop.
pub fn koleo_loss(features: &Tensor) -> Result<Tensor, PretrainError> {
    let n = features.size()[0];
    if features.dim() != 2 || n < 2 {
        return Err(PretrainError::Shape(format!(
            "koleo_loss needs at least 2 feature rows, got {:?}",
            features.size()
        )));
    }
    let eps = 1e-8;
    let x = features.to_kind(Kind::Float);
    let x = &x
        / x.norm_scalaropt_dim(2, [-1i64].as_slice(), true)
            .clamp_min(eps);
    let dots = x.matmul(&x.tr()).detach();
    let _ = dots.diagonal(0, 0, 1).fill_(-1.0);
    let nearest = dots.argmax(1, false);
    let distances =
        (&x - x.index_select(0, &nearest) + eps).norm_scalaropt_dim(2, [-1i64].as_slice(), false);
    Ok(-(distances + eps).log().mean(Kind::Float))
}
