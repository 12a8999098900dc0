//! Hierarchical k-means with resampling, as ssl-data-curation (Vo et al. 2024,
//! `hierarchical_kmeans_with_resampling`).
//!
//! Level 1 clusters the points, level ℓ clusters the centroids of level ℓ−1. At each level:
//! 1. run k-means once on the level's inputs;
//! 2. if the level's sample size `s` is > 1, repeat `resampling_steps` times: take from every
//!    cluster the `s` inputs closest to its centroid ([`SampleStrategy::Closest`], the paper's
//!    `c`) or `s` random ones ([`SampleStrategy::Random`], `r`); re-run k-means with the same k
//!    on only those inputs to get new centroids; reassign **all** the level's inputs to them.
//!
//! Resampling moves centroids from the dense regions towards a uniform cover of the support.
//! When fewer than k inputs would be sampled (many tiny clusters), k-means with k clusters is
//! impossible on them and the level keeps its current centroids (ssl-data-curation would lower k
//! instead, which breaks the hierarchy's sizes).
//!
//! The per-cluster selection is vectorised: inputs are ordered by (cluster, key) with two stable
//! argsorts, where the key is the squared distance to the centroid (`c`) or a seeded uniform
//! (`r`), and those with rank < s inside their cluster are kept.

use rand::Rng;
use tch::{Kind, Tensor};

use crate::assign::nearest_centroids;
use crate::error::{Result, SearchError, check_count, check_matrix};
use crate::kmeans::{KMeansConfig, kmeans};
use crate::rng;

/// How points are picked from a cluster: when resampling, and at level 1 of balanced sampling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SampleStrategy {
    /// The points closest to the centroid first (ssl-data-curation's `c`).
    #[default]
    Closest,
    /// Points drawn uniformly at random without replacement (`r`).
    Random,
}

/// Options of hierarchical k-means.
#[derive(Debug, Clone)]
pub struct HierarchicalKMeansConfig {
    /// Number of clusters at each level, bottom (level 1) first; non-increasing in practice.
    pub clusters_per_level: Vec<usize>,
    /// Resampling steps at each level (ssl-data-curation's `n_resampling_steps`, default 10).
    pub resampling_steps: Vec<usize>,
    /// Inputs taken per cluster when resampling at each level; 1 or less disables resampling
    /// there, as in ssl-data-curation.
    pub sample_sizes: Vec<usize>,
    /// How inputs are taken from clusters when resampling.
    pub strategy: SampleStrategy,
    /// Template of every k-means run (its `k` is replaced by the level's; its seed is mixed with
    /// the level and step). ssl-data-curation uses 50 iterations, k-means++, f64 sums and no
    /// subsampling, which is what [`HierarchicalKMeansConfig::new`] sets.
    pub kmeans: KMeansConfig,
}

impl HierarchicalKMeansConfig {
    /// A hierarchy with these clusters per level, `resampling_steps` at every level and these
    /// per-level sample sizes, closest-to-centroid resampling, and ssl-data-curation's k-means
    /// settings (50 iterations, k-means++ on all inputs, f64 sums, no subsampling).
    pub fn new(
        clusters_per_level: Vec<usize>,
        resampling_steps: usize,
        sample_sizes: Vec<usize>,
    ) -> Self {
        let levels = clusters_per_level.len();
        HierarchicalKMeansConfig {
            clusters_per_level,
            resampling_steps: vec![resampling_steps; levels],
            sample_sizes,
            strategy: SampleStrategy::Closest,
            kmeans: KMeansConfig {
                iterations: 50,
                init_points_per_centroid: None,
                max_points_per_centroid: None,
                f64_accumulation: true,
                ..KMeansConfig::default()
            },
        }
    }
}

/// One level of the hierarchy.
#[derive(Debug)]
pub struct Level {
    /// Centroids of this level, f32 `(k_ℓ, d)`.
    pub centroids: Tensor,
    /// Cluster of each input of the level (points at level 1, level ℓ−1 centroids above),
    /// i64 `(k_{ℓ−1},)` (N at level 1).
    pub assignment: Tensor,
    /// Squared L2 distance of each input to its centroid, f32, same length.
    pub sq_distances: Tensor,
}

/// The result of hierarchical k-means: levels bottom (level 1) first.
#[derive(Debug)]
pub struct HierarchicalKMeans {
    /// The levels, `levels[0]` being level 1.
    pub levels: Vec<Level>,
}

impl HierarchicalKMeans {
    /// Number of levels.
    pub fn num_levels(&self) -> usize {
        self.levels.len()
    }

    /// Cluster id of every point at every level, i64 `(N, levels)`: column 0 is the level-1
    /// cluster, column ℓ the level-(ℓ+1) cluster of the point's level-ℓ cluster.
    pub fn point_clusters(&self) -> Result<Tensor> {
        let mut columns = Vec::with_capacity(self.levels.len());
        let Some(first) = self.levels.first() else {
            return Err(SearchError::Empty {
                name: "hierarchy (no level)",
                shape: vec![0],
            });
        };
        let mut current = first.assignment.shallow_clone();
        columns.push(current.shallow_clone());
        for level in &self.levels[1..] {
            current = level.assignment.f_index_select(0, &current)?;
            columns.push(current.shallow_clone());
        }
        Ok(Tensor::f_stack(&columns, 1)?)
    }
}

/// A seed for level `level`, k-means run `step` (0 = the initial run), derived from `seed`.
fn derive_seed(seed: u64, level: usize, step: usize) -> u64 {
    let mut g = rng::generator(seed, 1 + level as u64);
    let mut s = 0;
    for _ in 0..=step {
        s = g.random::<u64>();
    }
    s
}

/// Runs hierarchical k-means with resampling on the rows of `x` (N × d, f32).
pub fn hierarchical_kmeans(
    x: &Tensor,
    config: &HierarchicalKMeansConfig,
) -> Result<HierarchicalKMeans> {
    let (n, _) = check_matrix("points", x)?;
    let levels = config.clusters_per_level.len();
    if levels == 0 {
        return Err(SearchError::InvalidOption {
            name: "clusters_per_level",
            reason: "no level given; pass at least one cluster count".into(),
        });
    }
    if config.resampling_steps.len() != levels || config.sample_sizes.len() != levels {
        return Err(SearchError::InvalidOption {
            name: "resampling_steps / sample_sizes",
            reason: format!(
                "{} levels but {} resampling step counts and {} sample sizes; give one per level",
                levels,
                config.resampling_steps.len(),
                config.sample_sizes.len()
            ),
        });
    }
    let mut inputs_count = n;
    for (l, &k) in config.clusters_per_level.iter().enumerate() {
        if l == 0 {
            check_count("clusters_per_level[0]", k, n, "points")?;
        } else if k == 0 || k > inputs_count {
            return Err(SearchError::InvalidOption {
                name: "clusters_per_level",
                reason: format!(
                    "level {} asks for {k} clusters of the {inputs_count} level-{l} centroids; use 1..={inputs_count}",
                    l + 1
                ),
            });
        }
        inputs_count = k;
    }

    let mut out: Vec<Level> = Vec::with_capacity(levels);
    for l in 0..levels {
        let k = config.clusters_per_level[l];
        let inputs = match out.last() {
            None => x.shallow_clone(),
            Some(prev) => prev.centroids.shallow_clone(),
        };
        let mut cfg = config.kmeans.clone();
        cfg.k = k;
        cfg.seed = derive_seed(config.kmeans.seed, l, 0);
        let km = kmeans(&inputs, &cfg)?;
        let (mut centroids, mut ids, mut dists) = (km.centroids, km.assignment, km.sq_distances);
        let s = config.sample_sizes[l];
        if s > 1 {
            let mut key_rng = rng::generator(config.kmeans.seed, 1000 + l as u64);
            for step in 0..config.resampling_steps[l] {
                let sample = take_per_cluster(&ids, &dists, k, s, config.strategy, &mut key_rng)?;
                if (sample.size()[0] as usize) < k {
                    break;
                }
                let points = inputs.f_index_select(0, &sample)?;
                cfg.seed = derive_seed(config.kmeans.seed, l, step + 1);
                cfg.init = config.kmeans.init.clone();
                centroids = kmeans(&points, &cfg)?.centroids;
                let a = nearest_centroids(&inputs, &centroids, cfg.tile_bytes)?;
                ids = a.ids;
                dists = a.sq_distances;
            }
        }
        out.push(Level {
            centroids,
            assignment: ids,
            sq_distances: dists,
        });
    }
    Ok(HierarchicalKMeans { levels: out })
}

/// Indices (ascending within each cluster's key order) of up to `s` inputs per cluster.
pub(crate) fn take_per_cluster(
    ids: &Tensor,
    sq_distances: &Tensor,
    k: usize,
    s: usize,
    strategy: SampleStrategy,
    key_rng: &mut rand_chacha::ChaCha8Rng,
) -> Result<Tensor> {
    let n = ids.size()[0] as usize;
    let device = ids.device();
    let key = match strategy {
        SampleStrategy::Closest => sq_distances.shallow_clone(),
        SampleStrategy::Random => rng::uniform(key_rng, n, device)?,
    };
    let by_key = key.f_argsort_stable(true, 0, false)?;
    let cluster_by_key = ids.f_index_select(0, &by_key)?;
    let by_cluster = cluster_by_key.f_argsort_stable(true, 0, false)?;
    let order = by_key.f_index_select(0, &by_cluster)?;
    let sorted_clusters = cluster_by_key.f_index_select(0, &by_cluster)?;
    let counts = ids.f_bincount(None::<Tensor>, k as i64)?;
    let starts = counts.f_cumsum(0, Kind::Int64)?.f_sub(&counts)?;
    let rank = Tensor::f_arange(n as i64, (Kind::Int64, device))?
        .f_sub(&starts.f_index_select(0, &sorted_clusters)?)?;
    let keep = rank.f_lt(s as i64)?;
    Ok(order.f_masked_select(&keep)?)
}
