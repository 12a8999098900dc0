//! The curation stages of DINOv2's data pipeline (dinov2.md §1): `dedup` (self and against
//! evaluation sets) and `retrieval` (from curated seeds into an uncurated pool).

mod dedup;
mod features;
mod grey;
mod groups;
mod links;
mod retrieval;
mod rows;
mod safety;
mod unionfind;
mod vectors;
mod verify;

use dinoflow_engine::StageError;
use dinoflow_search::{KnnOptions, knn};
use dinoflow_vision::tch::{Device, Kind, Tensor};

pub use dedup::{Dedup, DedupConfig, KeepRule, duplicates_schema};
pub use features::{FeaturesConfig, Verdict, verify_pairs};
pub use grey::{GreyImage, read_grey};
pub use retrieval::{Mode, Retrieval, RetrievalConfig};
pub use unionfind::UnionFind;
pub use vectors::{Vectors, read_vectors};
pub use verify::{Pixels, VerifyConfig, aligned_similarity, read_pixels};

/// Why a curation stage failed.
#[derive(Debug, thiserror::Error)]
pub enum CurateError {
    /// The configuration is not usable.
    #[error("{0}")]
    Config(String),
    /// An input dataset does not have the expected shape.
    #[error("input: {0}")]
    Input(String),
    /// The vector search failed.
    #[error("vector search: {0}")]
    Search(String),
    /// The device could not be used.
    #[error(transparent)]
    Vision(#[from] dinoflow_vision::VisionError),
    /// Building an output batch failed.
    #[error("building a batch: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// A worker thread failed.
    #[error("worker: {0}")]
    Worker(String),
    /// OpenCV failed (local-feature verification).
    #[error("OpenCV: {0}")]
    OpenCv(#[from] opencv::Error),
    /// The embeddings rate a typical pair of images as copies.
    #[error(
        "the embeddings do not tell images apart: the average pair of the {rows} images has cosine \
         similarity {mean:.4}, at or above {limit} (a randomly initialised or collapsed model does \
         this), so dedup would remove nearly everything; embed with the built-in `model: dct` \
         descriptor or a trained model, or set `max_removed: 1.0` if the images really are copies \
         of one another"
    )]
    Indistinct {
        /// Rows with a nonzero vector.
        rows: usize,
        /// Their mean pairwise cosine similarity.
        mean: f64,
        /// The similarity at which the stage refuses.
        limit: f64,
    },
    /// Dedup would remove a larger share of the pool than allowed.
    #[error(
        "dedup would remove {removed} of {rows} images ({percent:.1} %) as copies, more than \
         `max_removed` ({max_percent:.0} %); nothing was written. A threshold too low for the \
         descriptor (the built-in `dct` needs about 0.93) or a model that maps many images to \
         one place does this; raise `threshold`, or set `max_removed` higher if the pool really \
         is mostly copies"
    )]
    RemovesTooMuch {
        /// Rows that would be removed as copies.
        removed: usize,
        /// Rows in the pool.
        rows: usize,
        /// `removed` as a percentage of `rows`.
        percent: f64,
        /// `max_removed` as a percentage.
        max_percent: f64,
    },
}

impl CurateError {
    /// Names the input port in an input error.
    pub fn on_port(self, port: &str) -> Self {
        match self {
            Self::Input(m) => Self::Input(format!("`{port}`: {m}")),
            other => other,
        }
    }
}

fn failed(e: impl Into<CurateError>) -> StageError {
    StageError::failed(e.into())
}

/// The k nearest database rows of every query row by inner product.
pub struct Neighbours {
    /// (queries, k) database row indices, best first.
    pub indices: Vec<i64>,
    /// (queries, k) inner products.
    pub scores: Vec<f32>,
    /// k.
    pub k: usize,
}

impl Neighbours {
    /// Every (query, database row, score) edge.
    pub fn edges(&self) -> impl Iterator<Item = (usize, usize, f32)> + '_ {
        self.indices
            .iter()
            .zip(&self.scores)
            .enumerate()
            .filter(|(_, (j, _))| **j >= 0)
            .map(|(e, (j, s))| (e / self.k, *j as usize, *s))
    }
}

/// Exact kNN of `queries` in `database` by inner product (k clamped to what the database holds);
/// with `exclude_self` (queries are the database) a row is not its own neighbour.
fn neighbours(
    queries: &Tensor,
    database: &Tensor,
    k: usize,
    exclude_self: bool,
) -> Result<Neighbours, CurateError> {
    let rows = database.size()[0] as usize;
    let available = rows.saturating_sub(usize::from(exclude_self));
    if available == 0 || queries.size()[0] == 0 {
        return Ok(Neighbours {
            indices: Vec::new(),
            scores: Vec::new(),
            k: 1,
        });
    }
    let k = k.min(available).max(1);
    let options = KnnOptions {
        exclude_self,
        ..KnnOptions::with_k(k)
    };
    let found = knn(queries, database, &options).map_err(|e| CurateError::Search(e.to_string()))?;
    let flat = |t: &Tensor, kind: Kind| t.to_kind(kind).to_device(Device::Cpu).flatten(0, -1);
    let indices = Vec::<i64>::try_from(flat(&found.indices, Kind::Int64))
        .map_err(|e| CurateError::Search(e.to_string()))?;
    let scores = Vec::<f32>::try_from(flat(&found.scores, Kind::Float))
        .map_err(|e| CurateError::Search(e.to_string()))?;
    Ok(Neighbours { indices, scores, k })
}
