//! Inverted-file (IVF) index: k-means coarse quantiser, exact search inside the probed lists.
//!
//! - **Train**: k-means (L2, seeded, faiss-like subsampling) gives `nlist` centroids.
//! - **Add**: each vector goes to the list of its nearest centroid (L2). Vectors are stored in
//!   one tensor ordered by (list, id), with list offsets, so a list is a contiguous slice.
//! - **Search** with `nprobe`: every query probes the `nprobe` lists with the nearest centroids
//!   (L2, through the exact search). The (query, list) pairs are grouped by list; for each list
//!   that some query probes, one GEMM scores those queries against the whole list and `topk`
//!   keeps its k best, written into a `(nq, nprobe, k)` candidate buffer. A final pass orders
//!   every query's `nprobe × k` candidates by (score descending, id ascending). The loop is over
//!   lists, never over queries or vectors.
//!
//! Lists are Voronoi cells of L2 centroids whatever the search metric; for L2-normalised data
//! and inner-product search that is the usual choice (faiss `IndexIVFFlat` with an L2-trained
//! quantiser). Queries whose probed lists hold fewer than k vectors get id −1 and score −∞
//! (inner product) or +∞ (L2) in the missing slots.

use tch::{Device, Kind, Tensor};

use crate::assign::nearest_centroids;
use crate::error::{Result, SearchError, check_count, check_matrix, check_pair};
use crate::kmeans::{KMeansConfig, KMeansInit, kmeans};
use crate::metric::Metric;
use crate::tile;
use crate::topk::{DEFAULT_TILE_BYTES, KnnOptions, KnnResult, knn};

/// Options of an IVF index.
#[derive(Debug, Clone)]
pub struct IvfOptions {
    /// Number of inverted lists (k of the coarse k-means).
    pub nlist: usize,
    /// Metric of the search inside the lists.
    pub metric: Metric,
    /// k-means iterations of the quantiser (faiss: 10 for IVF training via `Clustering`'s
    /// `niter` in `IndexIVF::train`, 25 for plain `Kmeans`).
    pub kmeans_iterations: usize,
    /// Train the quantiser on at most `nlist ×` this many vectors (faiss: 256).
    pub max_points_per_centroid: Option<usize>,
    /// Quantiser initialisation.
    pub init: KMeansInit,
    /// Seed of the quantiser's k-means.
    pub seed: u64,
    /// Upper bound on the bytes of one score tile.
    pub tile_bytes: usize,
}

impl Default for IvfOptions {
    fn default() -> Self {
        IvfOptions {
            nlist: 1024,
            metric: Metric::InnerProduct,
            kmeans_iterations: 10,
            max_points_per_centroid: Some(256),
            init: KMeansInit::KMeansPlusPlus,
            seed: 0,
            tile_bytes: DEFAULT_TILE_BYTES,
        }
    }
}

/// An IVF index over f32 vectors.
#[derive(Debug)]
pub struct IvfIndex {
    metric: Metric,
    tile_bytes: usize,
    centroids: Tensor,
    /// Stored vectors ordered by list, (ntotal, d).
    vectors: Tensor,
    /// Their ids, i64 (ntotal,).
    ids: Tensor,
    /// Their lists, i64 (ntotal,).
    lists: Tensor,
    /// `offsets[l]..offsets[l + 1]` is list l.
    offsets: Vec<i64>,
}

impl IvfIndex {
    /// Trains the coarse quantiser on `training` (N × d, N ≥ nlist); the index is empty.
    pub fn train(training: &Tensor, options: &IvfOptions) -> Result<Self> {
        let (n, d) = check_matrix("training vectors", training)?;
        check_count("nlist", options.nlist, n, "training vectors")?;
        let config = KMeansConfig {
            k: options.nlist,
            iterations: options.kmeans_iterations,
            seed: options.seed,
            init: options.init.clone(),
            max_points_per_centroid: options.max_points_per_centroid,
            tile_bytes: options.tile_bytes,
            ..KMeansConfig::default()
        };
        let km = kmeans(training, &config)?;
        Self::with_centroids(km.centroids, options.metric, options.tile_bytes, d)
    }

    /// An empty index whose lists are the Voronoi cells of `centroids` (nlist × d).
    pub fn from_centroids(centroids: &Tensor, metric: Metric, tile_bytes: usize) -> Result<Self> {
        let (_, d) = check_matrix("centroids", centroids)?;
        tile::check_budget(tile_bytes)?;
        Self::with_centroids(centroids.f_detach_copy()?, metric, tile_bytes, d)
    }

    fn with_centroids(
        centroids: Tensor,
        metric: Metric,
        tile_bytes: usize,
        d: usize,
    ) -> Result<Self> {
        let device = centroids.device();
        let nlist = centroids.size()[0] as usize;
        Ok(IvfIndex {
            metric,
            tile_bytes,
            centroids,
            vectors: Tensor::f_empty([0, d as i64], (Kind::Float, device))?,
            ids: Tensor::f_empty([0], (Kind::Int64, device))?,
            lists: Tensor::f_empty([0], (Kind::Int64, device))?,
            offsets: vec![0; nlist + 1],
        })
    }

    /// Trains on `database` and adds it with ids `0..N`.
    pub fn build(database: &Tensor, options: &IvfOptions) -> Result<Self> {
        let mut index = Self::train(database, options)?;
        index.add(database, 0)?;
        Ok(index)
    }

    /// Adds `vectors` (n × d) with ids `first_id..first_id + n`.
    pub fn add(&mut self, vectors: &Tensor, first_id: i64) -> Result<()> {
        let (n, d) = check_matrix("vectors", vectors)?;
        check_pair(
            "centroids",
            &self.centroids,
            self.dim(),
            "vectors",
            vectors,
            d,
        )?;
        if first_id < 0 {
            return Err(SearchError::InvalidOption {
                name: "first_id",
                reason: format!("{first_id} is negative; ids start at 0"),
            });
        }
        let device = vectors.device();
        let assign = nearest_centroids(vectors, &self.centroids, self.tile_bytes)?;
        let new_ids = Tensor::f_arange_start(first_id, first_id + n as i64, (Kind::Int64, device))?;
        let lists = Tensor::f_cat(&[&self.lists, &assign.ids], 0)?;
        let ids = Tensor::f_cat(&[&self.ids, &new_ids], 0)?;
        let vecs = Tensor::f_cat(&[&self.vectors, &vectors.f_contiguous()?], 0)?;
        // Order by (list, id): by id first, then stably by list.
        let by_id = ids.f_argsort_stable(true, 0, false)?;
        let order = by_id.f_index_select(
            0,
            &lists
                .f_index_select(0, &by_id)?
                .f_argsort_stable(true, 0, false)?,
        )?;
        self.lists = lists.f_index_select(0, &order)?;
        self.ids = ids.f_index_select(0, &order)?;
        self.vectors = vecs.f_index_select(0, &order)?;
        let nlist = self.nlist();
        let counts = Vec::<i64>::try_from(&self.lists.f_bincount(None::<Tensor>, nlist as i64)?)?;
        let mut acc = 0;
        self.offsets = std::iter::once(0)
            .chain(counts.iter().map(|c| {
                acc += c;
                acc
            }))
            .collect();
        Ok(())
    }

    /// Number of lists.
    pub fn nlist(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.centroids.size()[1] as usize
    }

    /// Number of stored vectors.
    pub fn ntotal(&self) -> usize {
        self.offsets.last().copied().unwrap_or(0) as usize
    }

    /// The coarse centroids, (nlist × d).
    pub fn centroids(&self) -> &Tensor {
        &self.centroids
    }

    /// Number of vectors in every list.
    pub fn list_sizes(&self) -> Vec<usize> {
        self.offsets
            .windows(2)
            .map(|w| (w[1] - w[0]) as usize)
            .collect()
    }

    /// The ids stored in list `l` (in increasing order), or `None` if there is no such list.
    pub fn list_ids(&self, l: usize) -> Option<Tensor> {
        let (a, b) = (*self.offsets.get(l)?, *self.offsets.get(l + 1)?);
        self.ids.f_narrow(0, a, b - a).ok()
    }

    /// The k best stored vectors of every query among the `nprobe` nearest lists.
    pub fn search(&self, queries: &Tensor, k: usize, nprobe: usize) -> Result<KnnResult> {
        let (nq, d) = check_matrix("queries", queries)?;
        check_pair(
            "centroids",
            &self.centroids,
            self.dim(),
            "queries",
            queries,
            d,
        )?;
        check_count("nprobe", nprobe, self.nlist(), "lists")?;
        check_count("k", k, self.ntotal(), "indexed vectors")?;
        let device = queries.device();
        let queries = queries.f_contiguous()?;

        // 1. The nprobe nearest lists of every query.
        let probe = knn(
            &queries,
            &self.centroids,
            &KnnOptions {
                k: nprobe,
                metric: Metric::L2,
                tile_bytes: self.tile_bytes,
                ..KnnOptions::default()
            },
        )?
        .indices;

        // 2. (query, slot) pairs grouped by list.
        let flat = probe.f_reshape([-1])?;
        let order = flat.f_argsort_stable(true, 0, false)?;
        let pair_rows = order.shallow_clone(); // row of the (nq·nprobe, k) buffer = q·nprobe + slot
        let pair_queries = order.f_floor_divide_scalar(nprobe as i64)?;
        let per_list =
            Vec::<i64>::try_from(&flat.f_bincount(None::<Tensor>, self.nlist() as i64)?)?;

        // Internal scores are "larger is better" for both metrics, −∞ = no candidate.
        let shape = [(nq * nprobe) as i64, k as i64];
        let cand_s = Tensor::f_full(shape, f64::NEG_INFINITY, (Kind::Float, device))?;
        let cand_i = Tensor::f_full(shape, -1i64, (Kind::Int64, device))?;
        let mut start = 0i64;
        for (l, &m) in per_list.iter().enumerate() {
            let (a, b) = (self.offsets[l], self.offsets[l + 1]);
            let len = b - a;
            if m == 0 {
                continue;
            }
            let rows = pair_rows.f_narrow(0, start, m)?;
            start += m;
            if len == 0 {
                continue;
            }
            let q = queries.f_index_select(0, &pair_queries.f_narrow(0, start - m, m)?)?;
            let v = self.vectors.f_narrow(0, a, len)?;
            let mut scores = q.f_matmul(&v.f_tr()?)?;
            if self.metric == Metric::L2 {
                scores = scores.f_add(&tile::l2_bias(&v)?)?;
            }
            let kk = (k as i64).min(len);
            let (s, i) = scores.f_topk(kk, 1, true, true)?;
            let ids = self
                .ids
                .f_narrow(0, a, len)?
                .f_index_select(0, &i.f_reshape([-1])?)?
                .f_view([m, kk])?;
            let _ = cand_s.f_narrow(1, 0, kk)?.f_index_copy_(0, &rows, &s)?;
            let _ = cand_i.f_narrow(1, 0, kk)?.f_index_copy_(0, &rows, &ids)?;
        }

        // 3. Merge the candidates of each query: by id, then stably by score.
        let all_s = cand_s.f_view([nq as i64, (nprobe * k) as i64])?;
        let all_i = cand_i.f_view([nq as i64, (nprobe * k) as i64])?;
        let big = all_i.f_where_scalarother(&all_i.f_ge(0)?, i64::MAX)?;
        let (by_id, p1) = big.f_sort(1, false)?;
        let s1 = all_s.f_gather(1, &p1, false)?;
        let (s2, p2) = s1.f_sort_stable(true, 1, true)?;
        let i2 = by_id.f_gather(1, &p2, false)?;
        let scores = s2.f_narrow(1, 0, k as i64)?;
        let ids = i2.f_narrow(1, 0, k as i64)?;
        let valid = scores.f_gt(f64::NEG_INFINITY)?;
        let ids = ids.f_where_scalarother(&valid, -1i64)?;
        let scores = match self.metric {
            Metric::InnerProduct => scores,
            Metric::L2 => {
                let d2 = tile::sq_norms(&queries)?
                    .f_unsqueeze(1)?
                    .f_sub(&scores.f_mul_scalar(2.0)?)?
                    .f_clamp_min(0.0)?;
                d2.f_where_scalarother(&valid, f64::INFINITY)?
            }
        };
        Ok(KnnResult {
            indices: ids,
            scores,
        })
    }

    /// The device of the index.
    pub fn device(&self) -> Device {
        self.centroids.device()
    }
}
