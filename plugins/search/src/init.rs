//! k-means initialisation: greedy k-means++ (as scikit-learn and ssl-data-curation) and random.
//!
//! Greedy k-means++: the first centre is a uniformly random point. Each later centre is chosen
//! among `local_trials` candidates (default `2 + ⌊ln k⌋`), each drawn with probability
//! proportional to its squared distance to the nearest centre so far (the "potential"); the
//! candidate whose addition leaves the smallest total potential wins. Distances to candidates
//! are one small GEMM against all points; the potential is accumulated in f64. Candidates are
//! drawn by inverse CDF (`searchsorted` on the cumulative potential) with uniforms from the
//! caller's seeded generator.
//!
//! The cost is k passes over the points, so the caller runs it on a sample when N is large
//! (see `KMeansConfig::init_max_points`).

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use crate::error::Result;
use crate::rng;
use crate::tile;

/// Squared L2 distances, f32 `(m, n)`, from `c` (m × d) to the rows of `x` (n × d) whose
/// squared norms are `x_sq_row` (1 × n): one `addmm` (`‖x‖² − 2c·x`) plus `‖c‖²`, clamped at 0.
fn sq_dist(c: &Tensor, x: &Tensor, x_sq_row: &Tensor) -> Result<Tensor> {
    let c_sq = tile::sq_norms(c)?.f_unsqueeze(1)?;
    let mut d = x_sq_row.f_addmm(&c.f_mul_scalar(-2.0)?, &x.f_tr()?)?;
    let _ = d.f_add_(&c_sq)?;
    let _ = d.f_clamp_min_(0.0)?;
    Ok(d)
}

/// `k` centres from the rows of `x` (n × d, n ≥ k) by greedy k-means++.
pub(crate) fn kmeans_plus_plus(
    x: &Tensor,
    k: usize,
    local_trials: Option<usize>,
    rng: &mut ChaCha8Rng,
) -> Result<Tensor> {
    let n = x.size()[0] as usize;
    let device = x.device();
    let trials = local_trials
        .unwrap_or(2 + (k as f64).ln().floor() as usize)
        .max(1);
    let x_sq = tile::sq_norms(x)?.f_unsqueeze(0)?;
    let mut chosen: Vec<i64> = Vec::with_capacity(k);
    let first = rng.random_range(0..n) as i64;
    chosen.push(first);
    let idx = Tensor::f_from_slice(&[first])?.f_to_device(device)?;
    let c = x.f_index_select(0, &idx)?;
    let mut closest = sq_dist(&c, x, &x_sq)?.f_squeeze_dim(0)?;
    let mut potential = closest.f_sum(Kind::Double)?.f_double_value(&[])?;
    for _ in 1..k {
        let draws: Vec<f64> = (0..trials)
            .map(|_| rng.random::<f64>() * potential)
            .collect();
        let draws = Tensor::f_from_slice(&draws)?.f_to_device(device)?;
        let cumulative = closest.f_cumsum(0, Kind::Double)?;
        let candidates = draws
            .f_searchsorted(&cumulative, false, false, "left", None::<Tensor>)?
            .f_clamp_max(n as i64 - 1)?;
        let c = x.f_index_select(0, &candidates)?;
        let d = sq_dist(&c, x, &x_sq)?.f_minimum(&closest.f_unsqueeze(0)?)?;
        let pots = d.f_sum_dim_intlist([1i64].as_slice(), false, Kind::Double)?;
        let best = pots.f_argmin(0, false)?.f_int64_value(&[])?;
        potential = pots.f_double_value(&[best])?;
        closest = d.f_select(0, best)?;
        chosen.push(candidates.f_int64_value(&[best])?);
    }
    let idx = Tensor::f_from_slice(&chosen)?.f_to_device(device)?;
    Ok(x.f_index_select(0, &idx)?)
}

/// `k` distinct rows of `x` chosen uniformly at random (faiss's default initialisation).
pub(crate) fn random_rows(x: &Tensor, k: usize, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    let n = x.size()[0] as usize;
    let idx = rng::sample_indices(rng, n, k, x.device())?;
    Ok(x.f_index_select(0, &idx)?)
}
