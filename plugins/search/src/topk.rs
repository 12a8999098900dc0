//! Exact k-nearest-neighbour search, streamed over database chunks in memory-bounded tiles.
//!
//! [`TopK`] accumulates, for a fixed set of queries, the k best database vectors seen so far.
//! Each [`TopK::add_chunk`] cuts the (queries × chunk) score matrix into tiles of at most
//! [`KnnOptions::tile_bytes`] (on CPU also at most 16 MiB, to stay cache-resident), computes
//! each tile with one GEMM into a reused buffer, and merges it into the running results:
//!
//! - on CPU ([`Selection::CpuHeap`]), with one bounded heap per query read straight from the
//!   tile (see the `heap` module), rows spread over libtorch's own OpenMP team (the `team`
//!   module): about one vectorised comparison per score. CPU tiles are 4096 queries × 1024
//!   database vectors, faiss's block shape, the fastest GEMM shape measured with MKL;
//! - anywhere ([`Selection::Torch`]), with `topk` on the tile and a sort-based merge.
//!
//! Both give the same answer: the k best by score, ties broken by lower database id, so results
//! do not depend on the tiling, the chunking or the order of the chunks. Memory: the tile, plus
//! `nq × k` results; the database is never held whole.

use tch::{Device, Kind, Tensor};

use crate::error::{Result, SearchError, check_matrix, check_pair};
use crate::heap::Heaps;
use crate::merge::TorchBest;
use crate::metric::Metric;
use crate::tile::{self, TileBuffer, TilePlan};

/// Default tile budget: 256 MiB of f32 scores.
pub const DEFAULT_TILE_BYTES: usize = 256 << 20;

/// Tiles keep at least this many query rows (when there are that many), so GEMMs stay efficient.
const MIN_TILE_ROWS: usize = 1024;

/// CPU tiles are `4096 × 1024` (16 MiB, faiss's block shape): with MKL on 2 cores a
/// `(4096 × d)·(d × 1024)` GEMM runs at 167 GFLOP/s against 145 for `(1024 × d)·(d × 4096)`.
const CPU_MIN_TILE_ROWS: usize = 4096;

/// How the k best of a tile are selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Selection {
    /// [`Selection::CpuHeap`] for CPU tensors, [`Selection::Torch`] elsewhere.
    #[default]
    Auto,
    /// `topk` on the tile and a sort-based merge: libtorch only, runs on any device.
    Torch,
    /// Per-query heaps scanned from the tile in Rust threads: CPU tensors only, fastest there.
    CpuHeap,
}

/// Options of an exact k-nearest-neighbour search.
#[derive(Debug, Clone, PartialEq)]
pub struct KnnOptions {
    /// Neighbours per query (≥ 1).
    pub k: usize,
    /// What "nearest" means.
    pub metric: Metric,
    /// Upper bound on the bytes of one score tile (≥ 4).
    pub tile_bytes: usize,
    /// Skip the pair (query, database vector) when they are the same vector, i.e. when the
    /// database id equals `query_offset + query row`. Use it when the queries are (a slice of)
    /// the database.
    pub exclude_self: bool,
    /// Global id of the first query row, for [`KnnOptions::exclude_self`].
    pub query_offset: i64,
    /// How tiles are reduced to their k best.
    pub selection: Selection,
}

impl Default for KnnOptions {
    fn default() -> Self {
        KnnOptions {
            k: 10,
            metric: Metric::InnerProduct,
            tile_bytes: DEFAULT_TILE_BYTES,
            exclude_self: false,
            query_offset: 0,
            selection: Selection::Auto,
        }
    }
}

impl KnnOptions {
    /// Default options with `k` neighbours.
    pub fn with_k(k: usize) -> Self {
        KnnOptions {
            k,
            ..Self::default()
        }
    }

    fn validate(&self) -> Result<()> {
        if self.k == 0 {
            return Err(SearchError::Zero { what: "k" });
        }
        tile::check_budget(self.tile_bytes)?;
        if self.exclude_self && self.query_offset < 0 {
            return Err(SearchError::InvalidOption {
                name: "query_offset",
                reason: format!("{} is negative; global ids start at 0", self.query_offset),
            });
        }
        Ok(())
    }
}

/// Neighbours of every query, best first.
#[derive(Debug)]
pub struct KnnResult {
    /// Database ids, i64 `(nq, k)`.
    pub indices: Tensor,
    /// f32 `(nq, k)`: inner products (descending) or squared L2 distances (ascending).
    pub scores: Tensor,
}

/// The running state of a query set's k best.
enum Best {
    Heap(Heaps),
    Torch(TorchBest),
}

/// A streaming top-k accumulator: feed it database chunks, then [`TopK::finish`].
///
/// ```no_run
/// # use dinoflow_search::{KnnOptions, TopK};
/// # fn demo(queries: &tch::Tensor, chunks: &[tch::Tensor]) -> dinoflow_search::Result<()> {
/// let mut acc = TopK::new(queries.size()[0] as usize, &KnnOptions::with_k(64))?;
/// let mut offset = 0;
/// for chunk in chunks {
///     acc.add_chunk(queries, chunk, offset)?;
///     offset += chunk.size()[0];
/// }
/// let result = acc.finish()?;
/// # Ok(()) }
/// ```
pub struct TopK {
    options: KnnOptions,
    nq: usize,
    dim: Option<usize>,
    device: Option<Device>,
    best: Option<Best>,
    buffer: Option<TileBuffer>,
    query_sq_norms: Option<Tensor>,
    seen: usize,
}

impl TopK {
    /// An accumulator for `num_queries` queries.
    pub fn new(num_queries: usize, options: &KnnOptions) -> Result<Self> {
        options.validate()?;
        if num_queries == 0 {
            return Err(SearchError::Empty {
                name: "queries",
                shape: vec![0],
            });
        }
        Ok(TopK {
            options: options.clone(),
            nq: num_queries,
            dim: None,
            device: None,
            best: None,
            buffer: None,
            query_sq_norms: None,
            seen: 0,
        })
    }

    /// Database rows merged so far.
    pub fn database_rows_seen(&self) -> usize {
        self.seen
    }

    /// Merges the database chunk `chunk` (c × d), whose first row has global id
    /// `global_offset`, into the k best of `queries` (nq × d, the same tensor for every chunk).
    pub fn add_chunk(
        &mut self,
        queries: &Tensor,
        chunk: &Tensor,
        global_offset: i64,
    ) -> Result<()> {
        let (nq, dq) = check_matrix("queries", queries)?;
        let (nb, db) = check_matrix("database chunk", chunk)?;
        check_pair("queries", queries, dq, "database chunk", chunk, db)?;
        if nq != self.nq {
            return Err(SearchError::InvalidOption {
                name: "queries",
                reason: format!(
                    "the accumulator was created for {} queries but add_chunk got {nq}; pass the same queries to every call",
                    self.nq
                ),
            });
        }
        if let Some(d) = self.dim
            && d != dq
        {
            return Err(SearchError::DimMismatch {
                left: "earlier chunks",
                left_dim: d,
                right: "queries",
                right_dim: dq,
            });
        }
        if global_offset < 0 {
            return Err(SearchError::InvalidOption {
                name: "global_offset",
                reason: format!("{global_offset} is negative; global ids start at 0"),
            });
        }
        let device = queries.device();
        if let Some(dev) = self.device
            && dev != device
        {
            return Err(SearchError::DeviceMismatch {
                name: "queries",
                got: device,
                other: "earlier chunks",
                expected: dev,
            });
        }
        self.dim = Some(dq);
        self.device = Some(device);
        let k = self.options.k;
        let cpu_heap = match self.options.selection {
            Selection::Auto => device == Device::Cpu,
            Selection::Torch => false,
            Selection::CpuHeap => {
                if device != Device::Cpu {
                    return Err(SearchError::InvalidOption {
                        name: "selection",
                        reason: format!(
                            "CpuHeap needs CPU tensors, the queries are on {device:?}; use Selection::Auto or Torch"
                        ),
                    });
                }
                true
            }
        };
        if self.best.is_none() {
            self.best = Some(if cpu_heap {
                Best::Heap(Heaps::new(nq, k))
            } else {
                Best::Torch(TorchBest::new(nq, k, device)?)
            });
        }
        if self.options.metric == Metric::L2 && self.query_sq_norms.is_none() {
            self.query_sq_norms = Some(tile::sq_norms(queries)?);
        }

        let budget = if cpu_heap {
            tile::device_budget(self.options.tile_bytes, device)
        } else {
            self.options.tile_bytes
        };
        let min_rows = if cpu_heap {
            CPU_MIN_TILE_ROWS
        } else {
            MIN_TILE_ROWS
        };
        let plan = TilePlan::new(nq, nb, budget, min_rows);
        let buffer = match self.buffer.take() {
            Some(b) if b.capacity() >= plan.elements() => b,
            _ => TileBuffer::new(plan.elements(), device)?,
        };
        let queries = queries.f_contiguous()?;
        let chunk = chunk.f_contiguous()?;
        let bias = match self.options.metric {
            Metric::L2 => Some(tile::l2_bias(&chunk)?),
            Metric::InnerProduct => None,
        };
        // The selection runs on libtorch's own thread team (see the `team` module).
        let threads = tch::get_num_threads().max(1) as usize;
        let best = self.best.as_mut().ok_or(SearchError::InvalidOption {
            name: "accumulator",
            reason: "internal state missing".into(),
        })?;
        for r0 in (0..nq).step_by(plan.rows) {
            let rows = plan.rows.min(nq - r0);
            let q = queries.f_narrow(0, r0 as i64, rows as i64)?;
            for c0 in (0..nb).step_by(plan.cols) {
                let cols = plan.cols.min(nb - c0);
                let y = chunk.f_narrow(0, c0 as i64, cols as i64)?;
                let out = buffer.view(rows, cols)?;
                let b = match &bias {
                    Some(b) => Some(b.f_narrow(1, c0 as i64, cols as i64)?),
                    None => None,
                };
                tile::score_into(&out, &q, &y, b.as_ref())?;
                let first_id = global_offset + c0 as i64;
                if self.options.exclude_self {
                    tile::mask_self(&out, self.options.query_offset + r0 as i64, first_id)?;
                }
                match best {
                    Best::Heap(h) => {
                        // SAFETY: `out` is a contiguous CPU f32 view of `rows * cols` elements
                        // that lives until the end of this block and is not written meanwhile.
                        let data = unsafe {
                            std::slice::from_raw_parts(out.data_ptr() as *const f32, rows * cols)
                        };
                        h.push_tile(data, rows, cols, r0, first_id, threads);
                    }
                    Best::Torch(t) => t.push_tile(&out, r0, first_id)?,
                }
            }
        }
        self.buffer = Some(buffer);
        self.seen += nb;
        Ok(())
    }

    /// The k best of every query, best first.
    ///
    /// Fails with [`SearchError::TooLarge`] when some query has fewer than k candidates (fewer
    /// than k database vectors were added, or k + 1 with self-exclusion).
    pub fn finish(self) -> Result<KnnResult> {
        let k = self.options.k;
        let (best, device) = match (self.best, self.device) {
            (Some(b), Some(d)) => (b, d),
            _ => {
                return Err(SearchError::Empty {
                    name: "database (no chunk was added)",
                    shape: vec![0],
                });
            }
        };
        let shape = [self.nq as i64, k as i64];
        let (scores, ids) = match best {
            Best::Heap(h) => {
                let (s, i) = h.into_sorted();
                (
                    Tensor::f_from_slice(&s)?
                        .f_view(shape)?
                        .f_to_device(device)?,
                    Tensor::f_from_slice(&i)?
                        .f_view(shape)?
                        .f_to_device(device)?,
                )
            }
            Best::Torch(t) => t.into_parts(),
        };
        // A row is complete when its k-th score is a real one.
        let last = scores.f_narrow(1, k as i64 - 1, 1)?;
        let missing = last.f_eq(f64::NEG_INFINITY)?.f_any()?.f_int64_value(&[])? != 0;
        if missing {
            let valid = scores
                .f_gt(f64::NEG_INFINITY)?
                .f_sum_dim_intlist([1i64].as_slice(), false, Kind::Int64)?
                .f_min()?
                .f_int64_value(&[])?;
            return Err(SearchError::TooLarge {
                what: "k",
                requested: k,
                available: valid as usize,
                of: "database vectors for some query (after self-exclusion)",
            });
        }
        let scores = match (self.options.metric, self.query_sq_norms) {
            (Metric::L2, Some(norms)) => norms
                .f_unsqueeze(1)?
                .f_sub(&scores.f_mul_scalar(2.0)?)?
                .f_clamp_min(0.0)?,
            _ => scores,
        };
        Ok(KnnResult {
            indices: ids,
            scores,
        })
    }
}

/// Exact k nearest neighbours of `queries` (nq × d) in `database` (N × d), whose ids are its
/// row numbers.
pub fn knn(queries: &Tensor, database: &Tensor, options: &KnnOptions) -> Result<KnnResult> {
    options.validate()?;
    let (nq, dq) = check_matrix("queries", queries)?;
    let (nb, db) = check_matrix("database", database)?;
    check_pair("queries", queries, dq, "database", database, db)?;
    let available = if options.exclude_self {
        nb.saturating_sub(1)
    } else {
        nb
    };
    crate::error::check_count("k", options.k, available, "database vectors")?;
    let mut acc = TopK::new(nq, options)?;
    acc.add_chunk(queries, database, 0)?;
    acc.finish()
}
