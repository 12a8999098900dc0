//! Hierarchical balanced sampling, as ssl-data-curation's `hierarchical_sampling.py`.
//!
//! **Allocation rule** ([`allocate`]): to draw T items from children of sizes sᵢ, find the
//! largest cap x with Σ min(x, sᵢ) ≤ T, give each child min(x, sᵢ), then give +1 to randomly
//! chosen distinct children with sᵢ > x until the total is exactly T. If Σ sᵢ ≤ T every child
//! gives everything. Small clusters are thus taken whole and large ones are cut to the same cap.
//!
//! **Recursion** ([`hierarchical_sampling`]): the target is split over the top-level clusters by
//! their sizes in points, then each cluster's share over its children, down to level 1, where
//! points are picked at random (`r`, the script's default) or closest to the centroid first
//! (`c`). With `multiplier` m > 1 every cluster counts as m times its size and a level-1 cluster
//! asked for more points than it has is replicated (each point ⌊t/size⌋ times, plus a pick for
//! the remainder), as in the original.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Result, SearchError};
use crate::hierarchical::{HierarchicalKMeans, SampleStrategy};
use crate::rng;

/// The largest cap x with Σ min(x, sᵢ) ≤ `target`, or `None` when Σ sᵢ ≤ `target` (no cap).
pub fn balanced_cap(sizes: &[usize], target: usize) -> Option<usize> {
    let total: usize = sizes.iter().sum();
    if total <= target {
        return None;
    }
    let taken = |x: usize| sizes.iter().map(|&s| s.min(x)).sum::<usize>();
    // taken(lo) ≤ target < taken(hi).
    let (mut lo, mut hi) = (0, sizes.iter().copied().max().unwrap_or(0));
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if taken(mid) <= target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(lo)
}

/// How many items each child gives so that the total is `min(target, Σ sizes)`, by the
/// allocation rule above; ties for the last +1s are broken with `rng`.
pub fn allocate<R: Rng + ?Sized>(sizes: &[usize], target: usize, rng: &mut R) -> Vec<usize> {
    let Some(cap) = balanced_cap(sizes, target) else {
        return sizes.to_vec();
    };
    let mut out: Vec<usize> = sizes.iter().map(|&s| s.min(cap)).collect();
    let remainder = target - out.iter().sum::<usize>();
    let above: Vec<usize> = (0..sizes.len()).filter(|&i| sizes[i] > cap).collect();
    // remainder < above.len(), because the cap cap + 1 would exceed the target.
    for j in rand::seq::index::sample(rng, above.len(), remainder.min(above.len())) {
        out[above[j]] += 1;
    }
    out
}

/// Options of hierarchical balanced sampling.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingOptions {
    /// Number of points to select (at most N × multiplier are available).
    pub target: usize,
    /// How points are picked inside level-1 clusters.
    pub strategy: SampleStrategy,
    /// Every cluster counts as this many times its size (≥ 1); > 1 replicates small clusters.
    pub multiplier: usize,
    /// Seed of the random choices.
    pub seed: u64,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        SamplingOptions {
            target: 0,
            strategy: SampleStrategy::Random,
            multiplier: 1,
            seed: 0,
        }
    }
}

/// Selected points and the level-1 cluster each came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalancedSample {
    /// Point indices (rows of the clustered data); repeated only when `multiplier` > 1.
    pub indices: Vec<i64>,
    /// Level-1 cluster of each selected point.
    pub level1_clusters: Vec<i64>,
}

/// The children of each cluster: `items[offsets[c]..offsets[c + 1]]`, in increasing order.
struct Groups {
    offsets: Vec<usize>,
    items: Vec<usize>,
}

impl Groups {
    fn new(assign: &[i64], k: usize) -> Result<Self> {
        let mut counts = vec![0usize; k + 1];
        for &a in assign {
            let a = usize::try_from(a).ok().filter(|&a| a < k).ok_or_else(|| {
                SearchError::InvalidOption {
                    name: "hierarchy",
                    reason: format!(
                        "cluster id {a} outside 0..{k}; the levels do not fit together"
                    ),
                }
            })?;
            counts[a + 1] += 1;
        }
        for c in 0..k {
            counts[c + 1] += counts[c];
        }
        let mut next = counts.clone();
        let mut items = vec![0; assign.len()];
        for (i, &a) in assign.iter().enumerate() {
            items[next[a as usize]] = i;
            next[a as usize] += 1;
        }
        Ok(Groups {
            offsets: counts,
            items,
        })
    }

    fn get(&self, c: usize) -> &[usize] {
        &self.items[self.offsets[c]..self.offsets[c + 1]]
    }

    fn len(&self) -> usize {
        self.offsets.len() - 1
    }
}

/// Selects `options.target` points from a hierarchy, balanced over clusters at every level.
pub fn hierarchical_sampling(
    h: &HierarchicalKMeans,
    options: &SamplingOptions,
) -> Result<BalancedSample> {
    if options.target == 0 {
        return Err(SearchError::Zero { what: "target" });
    }
    if options.multiplier == 0 {
        return Err(SearchError::Zero { what: "multiplier" });
    }
    if h.levels.is_empty() {
        return Err(SearchError::Empty {
            name: "hierarchy (no level)",
            shape: vec![0],
        });
    }
    // Children of every cluster at every level; level 1's children are points.
    let mut groups: Vec<Groups> = Vec::with_capacity(h.levels.len());
    for (l, level) in h.levels.iter().enumerate() {
        let k = level.centroids.size().first().copied().unwrap_or(0) as usize;
        let assign = Vec::<i64>::try_from(&level.assignment)?;
        if let Some(below) = groups.last()
            && assign.len() != below.len()
        {
            return Err(SearchError::InvalidOption {
                name: "hierarchy",
                reason: format!(
                    "level {} assigns {} inputs but level {l} has {} clusters; the levels do not fit together",
                    l + 1,
                    assign.len(),
                    below.len()
                ),
            });
        }
        groups.push(Groups::new(&assign, k)?);
    }
    // Level-1 points ordered by distance to their centroid (ties by index) for `Closest`.
    if options.strategy == SampleStrategy::Closest {
        let d = Vec::<f32>::try_from(&h.levels[0].sq_distances)?;
        let g = &mut groups[0];
        if d.len() != g.items.len() {
            return Err(SearchError::InvalidOption {
                name: "hierarchy",
                reason: format!(
                    "level 1 has {} distances for {} points; pass the distances of its assignment",
                    d.len(),
                    g.items.len()
                ),
            });
        }
        for c in 0..g.len() {
            let (a, b) = (g.offsets[c], g.offsets[c + 1]);
            g.items[a..b].sort_by(|&i, &j| d[i].total_cmp(&d[j]).then(i.cmp(&j)));
        }
    }
    // Size in points of every cluster at every level.
    let mut sizes: Vec<Vec<usize>> = Vec::with_capacity(groups.len());
    for (l, g) in groups.iter().enumerate() {
        let s: Vec<usize> = (0..g.len())
            .map(|c| match l {
                0 => g.get(c).len(),
                _ => g.get(c).iter().map(|&child| sizes[l - 1][child]).sum(),
            })
            .collect();
        sizes.push(s);
    }

    let mut rng = rng::generator(options.seed, 0);
    let m = options.multiplier;
    let mut out = BalancedSample {
        indices: Vec::with_capacity(options.target),
        level1_clusters: Vec::with_capacity(options.target),
    };
    let top = groups.len() - 1;
    let top_sizes: Vec<usize> = sizes[top].iter().map(|&s| s * m).collect();
    let shares = allocate(&top_sizes, options.target, &mut rng);
    for (c, &t) in shares.iter().enumerate() {
        sample_cluster(&groups, &sizes, top, c, t, options, &mut rng, &mut out);
    }
    Ok(out)
}

/// Appends `target` points of cluster `c` of `level` (0-based) to `out`.
#[allow(clippy::too_many_arguments)]
fn sample_cluster(
    groups: &[Groups],
    sizes: &[Vec<usize>],
    level: usize,
    c: usize,
    target: usize,
    options: &SamplingOptions,
    rng: &mut ChaCha8Rng,
    out: &mut BalancedSample,
) {
    if target == 0 {
        return;
    }
    let children = groups[level].get(c);
    let m = options.multiplier;
    if level == 0 {
        let size = children.len();
        if size == 0 {
            return;
        }
        // Whole copies first (only with multiplier > 1), then a pick for the remainder.
        let replicas = if size * m <= target { m } else { target / size };
        for _ in 0..replicas {
            out.indices.extend(children.iter().map(|&p| p as i64));
        }
        let rest = if size * m <= target {
            0
        } else {
            target - replicas * size
        };
        match options.strategy {
            SampleStrategy::Closest => out
                .indices
                .extend(children[..rest].iter().map(|&p| p as i64)),
            SampleStrategy::Random => {
                for j in rand::seq::index::sample(rng, size, rest) {
                    out.indices.push(children[j] as i64);
                }
            }
        }
        out.level1_clusters.resize(out.indices.len(), c as i64);
        return;
    }
    let child_sizes: Vec<usize> = children
        .iter()
        .map(|&ch| sizes[level - 1][ch] * m)
        .collect();
    let shares = allocate(&child_sizes, target, rng);
    for (&ch, &t) in children.iter().zip(&shares) {
        sample_cluster(groups, sizes, level - 1, ch, t, options, rng, out);
    }
}
