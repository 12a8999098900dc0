//! Vector search for data curation, on libtorch (CPU or CUDA, chosen by where the caller's
//! tensors live): the building blocks of DINOv2's LVD-142M pipeline and of ssl-data-curation.
//!
//! - [`knn`] / [`TopK`]: exact k-nearest-neighbour search by inner product or L2, streamed over
//!   database chunks in memory-bounded tiles, deterministic (ties go to the lower id).
//! - [`nearest_centroids`]: k = 1 L2 assignment, the inner loop of k-means and IVF.
//! - [`kmeans`]: k-means++ (greedy) or random initialisation, Lloyd iterations, f64 sums,
//!   empty-cluster re-seeding, faiss-style subsampling, spherical option.
//! - [`IvfIndex`]: inverted lists over a k-means quantiser, searched with `nprobe`.
//! - [`hierarchical_kmeans`] and [`hierarchical_sampling`]: ssl-data-curation's hierarchical
//!   k-means with resampling and its balanced sampling ([`allocate`]).
//!
//! All inputs are f32 `(N, D)` tensors; vectors are used as given (normalise them first for
//! cosine similarity). Errors are [`SearchError`]s naming the argument to fix.

mod assign;
mod error;
mod heap;
mod hierarchical;
mod init;
mod ivf;
mod kmeans;
mod merge;
mod metric;
mod rng;
mod sampling;
mod team;
mod tile;
mod topk;

pub use assign::{Assignment, nearest_centroids};
pub use error::{Result, SearchError};
pub use hierarchical::{
    HierarchicalKMeans, HierarchicalKMeansConfig, Level, SampleStrategy, hierarchical_kmeans,
};
pub use ivf::{IvfIndex, IvfOptions};
pub use kmeans::{KMeans, KMeansConfig, KMeansInit, kmeans};
pub use metric::Metric;
pub use sampling::{
    BalancedSample, SamplingOptions, allocate, balanced_cap, hierarchical_sampling,
};
pub use tile::CPU_TILE_BYTES;
pub use topk::{DEFAULT_TILE_BYTES, KnnOptions, KnnResult, Selection, TopK, knn};

/// libtorch, re-exported so dependants use the exact same version.
pub use tch;
