//! Seeded randomness. Every random choice in the crate draws from a ChaCha8 stream seeded by the
//! caller, on the host, so results do not depend on the device or on libtorch's generator.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

use crate::error::Result;

/// A generator for `seed`, with `stream` selecting an independent sub-stream (e.g. a level or a
/// resampling step), so that adding a step does not shift the draws of the others.
pub(crate) fn generator(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// `m` distinct indices out of `0..n`, in increasing order, as an i64 tensor on `device`.
pub(crate) fn sample_indices(
    rng: &mut ChaCha8Rng,
    n: usize,
    m: usize,
    device: Device,
) -> Result<Tensor> {
    let mut picked: Vec<i64> = rand::seq::index::sample(rng, n, m.min(n))
        .into_iter()
        .map(|i| i as i64)
        .collect();
    picked.sort_unstable();
    Ok(Tensor::f_from_slice(&picked)?.f_to_device(device)?)
}

/// `n` uniform floats in `[0, 1)` as an f32 tensor on `device`.
pub(crate) fn uniform(rng: &mut ChaCha8Rng, n: usize, device: Device) -> Result<Tensor> {
    use rand::Rng;
    let values: Vec<f32> = (0..n).map(|_| rng.random::<f32>()).collect();
    Ok(Tensor::f_from_slice(&values)?
        .f_to_kind(Kind::Float)?
        .f_to_device(device)?)
}
