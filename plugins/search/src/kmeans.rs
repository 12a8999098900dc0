//! k-means (Lloyd) on libtorch, seeded and deterministic on CPU.
//!
//! 1. **Training subset.** As faiss, when `N > k × max_points_per_centroid` (default 256) the
//!    centroids are trained on a uniform random subset of `k × max_points_per_centroid` points;
//!    the final assignment still covers every point.
//! 2. **Initialisation.** Greedy k-means++ (see the `init` module) on at most
//!    `k × init_points_per_centroid` training points (default 8 per centroid: k-means++ costs k
//!    passes over its input), or k random training points (faiss's default), or given centroids.
//! 3. **Lloyd iterations.** Each iteration assigns the training points to their nearest centroid
//!    with the tiled GEMM search, records the inertia (sum of squared distances, in f64), and
//!    moves every centroid to the mean of its points. Sums use `index_add_`; with
//!    `f64_accumulation` (default) they are accumulated in f64 from f32 partial sums over blocks
//!    of 8,192 points, which keeps the f64 precision where it matters (millions of points per
//!    centroid) at a fraction of the cost of converting every point to f64.
//! 4. **Empty clusters** are re-seeded as scikit-learn does: each empty cluster takes the
//!    training point farthest from its assigned centroid (taken from a cluster that keeps at
//!    least one point), that point's contribution moves from its old cluster's sum to the empty
//!    one. Unlike faiss's split of a large cluster with a small perturbation, this always lowers
//!    the inertia, so the recorded inertia stays non-increasing.
//! 5. **Spherical** k-means normalises the centroids after every update (for cosine clustering of
//!    normalised embeddings); the inertia is then no longer guaranteed monotone.
//!
//! Every random choice comes from a ChaCha8 generator seeded with `seed`, on the host; on CPU
//! the whole run is bit-for-bit reproducible. On CUDA, `index_add_` sums in a non-deterministic
//! order, so centroids may differ in the last bits (f64 accumulation makes that negligible).

use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use crate::assign::{Assignment, nearest_centroids};
use crate::error::{Result, SearchError, check_count, check_matrix};
use crate::init;
use crate::rng;
use crate::topk::DEFAULT_TILE_BYTES;

/// Rows per f32 partial sum in f64 accumulation.
const ACC_BLOCK: usize = 8192;

/// How k-means chooses its first centroids.
#[derive(Debug, Default)]
pub enum KMeansInit {
    /// Greedy k-means++ (scikit-learn / ssl-data-curation).
    #[default]
    KMeansPlusPlus,
    /// k distinct training points chosen uniformly at random (faiss's default).
    Random,
    /// These centroids, f32 `(k, d)` on the points' device.
    Centroids(Tensor),
}

impl Clone for KMeansInit {
    fn clone(&self) -> Self {
        match self {
            KMeansInit::KMeansPlusPlus => KMeansInit::KMeansPlusPlus,
            KMeansInit::Random => KMeansInit::Random,
            KMeansInit::Centroids(t) => KMeansInit::Centroids(t.shallow_clone()),
        }
    }
}

/// Options of a k-means run.
#[derive(Debug, Clone)]
pub struct KMeansConfig {
    /// Number of clusters (1 ≤ k ≤ N).
    pub k: usize,
    /// Lloyd iterations (assignment + update); 0 returns the initial centroids.
    pub iterations: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Initialisation.
    pub init: KMeansInit,
    /// k-means++ candidates per step; `None` = `2 + ⌊ln k⌋`.
    pub local_trials: Option<usize>,
    /// k-means++ runs on at most `k ×` this many training points; `None` = all of them.
    pub init_points_per_centroid: Option<usize>,
    /// Train on at most `k ×` this many points (faiss: 256); `None` = all points.
    pub max_points_per_centroid: Option<usize>,
    /// Accumulate centroid sums in f64.
    pub f64_accumulation: bool,
    /// Normalise centroids to unit length after each update.
    pub spherical: bool,
    /// Upper bound on the bytes of one score tile.
    pub tile_bytes: usize,
}

impl Default for KMeansConfig {
    fn default() -> Self {
        KMeansConfig {
            k: 8,
            iterations: 20,
            seed: 0,
            init: KMeansInit::KMeansPlusPlus,
            local_trials: None,
            init_points_per_centroid: Some(8),
            max_points_per_centroid: Some(256),
            f64_accumulation: true,
            spherical: false,
            tile_bytes: DEFAULT_TILE_BYTES,
        }
    }
}

impl KMeansConfig {
    /// Default options with `k` clusters.
    pub fn with_k(k: usize) -> Self {
        KMeansConfig {
            k,
            ..Self::default()
        }
    }
}

/// The outcome of a k-means run.
#[derive(Debug)]
pub struct KMeans {
    /// Centroids, f32 `(k, d)`.
    pub centroids: Tensor,
    /// Nearest centroid of every input point (not only the training subset), i64 `(N,)`.
    pub assignment: Tensor,
    /// Squared L2 distance of every input point to its centroid, f32 `(N,)`.
    pub sq_distances: Tensor,
    /// Inertia of the training points at each iteration, measured after the assignment step and
    /// before the update (as faiss's `obj`), so `inertia[0]` is that of the initial centroids.
    pub inertia: Vec<f64>,
    /// Inertia of all N points with the final centroids.
    pub final_inertia: f64,
    /// Empty clusters re-seeded over the run.
    pub reseeded: usize,
    /// Number of points the centroids were trained on.
    pub training_points: usize,
}

/// Clusters the rows of `x` (N × d, f32) into `config.k` clusters.
pub fn kmeans(x: &Tensor, config: &KMeansConfig) -> Result<KMeans> {
    let (n, d) = check_matrix("points", x)?;
    check_count("k", config.k, n, "points")?;
    crate::tile::check_budget(config.tile_bytes)?;
    for (name, v) in [
        ("max_points_per_centroid", config.max_points_per_centroid),
        ("init_points_per_centroid", config.init_points_per_centroid),
        ("local_trials", config.local_trials),
    ] {
        if v == Some(0) {
            return Err(SearchError::InvalidOption {
                name,
                reason: "0; use at least 1, or None for no limit".into(),
            });
        }
    }
    let k = config.k;
    let device = x.device();
    let mut rng = rng::generator(config.seed, 0);

    let train = match config.max_points_per_centroid {
        Some(m) if n > k.saturating_mul(m) => {
            let idx = rng::sample_indices(&mut rng, n, k * m, device)?;
            x.f_index_select(0, &idx)?
        }
        _ => x.shallow_clone(),
    };
    let n_train = train.size()[0] as usize;

    let mut centroids = initial_centroids(&train, n_train, d, config, &mut rng)?;
    if config.spherical {
        centroids = normalise(&centroids)?;
    }

    let mut inertia = Vec::with_capacity(config.iterations);
    let mut reseeded = 0;
    for _ in 0..config.iterations {
        let a = nearest_centroids(&train, &centroids, config.tile_bytes)?;
        inertia.push(a.sq_distances.f_sum(Kind::Double)?.f_double_value(&[])?);
        let (c, r) = update(&train, &a, k, config.f64_accumulation)?;
        centroids = if config.spherical { normalise(&c)? } else { c };
        reseeded += r;
    }
    let all = nearest_centroids(x, &centroids, config.tile_bytes)?;
    let final_inertia = all.sq_distances.f_sum(Kind::Double)?.f_double_value(&[])?;
    Ok(KMeans {
        centroids,
        assignment: all.ids,
        sq_distances: all.sq_distances,
        inertia,
        final_inertia,
        reseeded,
        training_points: n_train,
    })
}

/// The initial centroids, f32 `(k, d)`.
fn initial_centroids(
    train: &Tensor,
    n_train: usize,
    d: usize,
    config: &KMeansConfig,
    rng: &mut ChaCha8Rng,
) -> Result<Tensor> {
    let k = config.k;
    match &config.init {
        KMeansInit::KMeansPlusPlus => {
            let pool = match config.init_points_per_centroid {
                Some(p) if n_train > k.saturating_mul(p) => {
                    let idx = rng::sample_indices(rng, n_train, k * p, train.device())?;
                    train.f_index_select(0, &idx)?
                }
                _ => train.shallow_clone(),
            };
            init::kmeans_plus_plus(&pool, k, config.local_trials, rng)
        }
        KMeansInit::Random => init::random_rows(train, k, rng),
        KMeansInit::Centroids(c) => {
            let (kc, dc) = check_matrix("initial centroids", c)?;
            crate::error::check_pair("points", train, d, "initial centroids", c, dc)?;
            if kc != k {
                return Err(SearchError::InvalidOption {
                    name: "init",
                    reason: format!(
                        "{kc} initial centroids given for k = {k}; pass exactly k rows"
                    ),
                });
            }
            Ok(c.f_detach_copy()?)
        }
    }
}

/// Rows scaled to unit L2 norm (zero rows stay zero).
pub(crate) fn normalise(c: &Tensor) -> Result<Tensor> {
    let norms = c
        .f_norm_scalaropt_dim(2.0, [1i64].as_slice(), true)?
        .f_clamp_min(1e-12)?;
    Ok(c.f_div(&norms)?)
}

/// New centroids (means of the assigned points, empty clusters re-seeded) and the number of
/// re-seeded clusters.
fn update(x: &Tensor, a: &Assignment, k: usize, f64_acc: bool) -> Result<(Tensor, usize)> {
    let size = x.size();
    let (n, d) = (size[0] as usize, size[1]);
    let device = x.device();
    let acc = if f64_acc { Kind::Double } else { Kind::Float };
    let mut sums = Tensor::f_zeros([k as i64, d], (acc, device))?;
    if f64_acc {
        let mut part = Tensor::f_zeros([k as i64, d], (Kind::Float, device))?;
        for s in (0..n).step_by(ACC_BLOCK) {
            let len = ACC_BLOCK.min(n - s) as i64;
            let _ = part.f_zero_()?;
            let _ = part.f_index_add_(
                0,
                &a.ids.f_narrow(0, s as i64, len)?,
                &x.f_narrow(0, s as i64, len)?,
            )?;
            let _ = sums.f_add_(&part.f_to_kind(Kind::Double)?)?;
        }
    } else {
        let _ = sums.f_index_add_(0, &a.ids, x)?;
    }
    let counts = a.ids.f_bincount(None::<Tensor>, k as i64)?;
    let mut counts_host = Vec::<i64>::try_from(&counts)?;
    let empty: Vec<usize> = (0..k).filter(|&c| counts_host[c] == 0).collect();
    if !empty.is_empty() {
        reseed(x, a, &mut sums, &mut counts_host, &empty, acc)?;
    }
    let counts = Tensor::f_from_slice(&counts_host)?
        .f_to_device(device)?
        .f_clamp_min(1)?
        .f_to_kind(acc)?
        .f_unsqueeze(1)?;
    Ok((sums.f_div(&counts)?.f_to_kind(Kind::Float)?, empty.len()))
}

/// Moves, for each empty cluster, the farthest point of a cluster with ≥ 2 points into it.
fn reseed(
    x: &Tensor,
    a: &Assignment,
    sums: &mut Tensor,
    counts: &mut [i64],
    empty: &[usize],
    acc: Kind,
) -> Result<()> {
    let order = Vec::<i64>::try_from(&a.sq_distances.f_argsort_stable(true, 0, true)?)?;
    let ids = Vec::<i64>::try_from(&a.ids)?;
    let mut next = 0;
    for &e in empty {
        // The farthest point not yet moved whose cluster keeps at least one point. There is
        // one: n ≥ k and a cluster is empty, so some cluster holds two points or more.
        let Some((pos, p, old)) = order[next..].iter().enumerate().find_map(|(i, &p)| {
            let old = ids[p as usize] as usize;
            (counts[old] > 1).then_some((next + i, p, old))
        }) else {
            break;
        };
        next = pos + 1;
        let row = x.f_select(0, p)?.f_to_kind(acc)?;
        let _ = sums.f_select(0, old as i64)?.f_sub_(&row)?;
        sums.f_select(0, e as i64)?.f_copy_(&row)?;
        counts[old] -= 1;
        counts[e] = 1;
    }
    Ok(())
}
