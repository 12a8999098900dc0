//! Similarity tiles: how a (queries × database) score matrix is cut so that no tile exceeds a byte
//! budget, and how one tile is computed into a reused buffer.
//!
//! A tile is `rows × cols` f32 scores, computed by one GEMM (`matmul_out` for inner products,
//! `addmm_out` with the bias row `−‖y‖²/2` for L2) straight into a preallocated buffer, so the hot
//! loop allocates nothing large. Rows are queries, columns database vectors.

use tch::{Device, Kind, Tensor};

use crate::error::{Result, SearchError};

/// Bytes per score.
const SCORE_BYTES: usize = 4;

/// On CPU, tiles are further capped at this size so that a tile written by the GEMM is still in
/// the last-level cache when the selection reads it (a 2-core EPYC has 32 MiB of L3).
pub const CPU_TILE_BYTES: usize = 16 << 20;

/// The shape of the tiles covering an `nq × nb` score matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TilePlan {
    /// Queries per tile.
    pub rows: usize,
    /// Database vectors per tile.
    pub cols: usize,
}

impl TilePlan {
    /// The widest tile of at most `budget_bytes` that still has `min(nq, min_rows)` rows.
    ///
    /// Wide tiles make fewer merges; `min_rows` keeps the GEMM efficient when the database
    /// is huge. Both sides are at least 1, so any budget of ≥ 4 bytes works.
    pub fn new(nq: usize, nb: usize, budget_bytes: usize, min_rows: usize) -> Self {
        let elems = (budget_bytes / SCORE_BYTES).max(1);
        let want_rows = nq.min(min_rows).max(1);
        let cols = nb.min((elems / want_rows).max(1)).max(1);
        let rows = nq.min((elems / cols).max(1)).max(1);
        TilePlan { rows, cols }
    }

    /// Number of f32 elements of the largest tile.
    pub fn elements(&self) -> usize {
        self.rows * self.cols
    }
}

/// Validates a tile budget.
pub(crate) fn check_budget(tile_bytes: usize) -> Result<()> {
    if tile_bytes < SCORE_BYTES {
        return Err(SearchError::InvalidOption {
            name: "tile_bytes",
            reason: format!(
                "{tile_bytes} bytes cannot hold one f32 score; use at least 4 (default 256 MiB)"
            ),
        });
    }
    Ok(())
}

/// Effective budget on a device: the caller's budget, capped on CPU (see [`CPU_TILE_BYTES`]).
pub(crate) fn device_budget(tile_bytes: usize, device: Device) -> usize {
    match device {
        Device::Cpu => tile_bytes.min(CPU_TILE_BYTES),
        _ => tile_bytes,
    }
}

/// A reusable score buffer large enough for the tiles of a plan.
pub(crate) struct TileBuffer {
    storage: Tensor,
}

impl TileBuffer {
    /// A buffer of `elements` f32 scores on `device`.
    pub fn new(elements: usize, device: Device) -> Result<Self> {
        Ok(TileBuffer {
            storage: Tensor::f_empty([elements as i64], (Kind::Float, device))?,
        })
    }

    /// Number of f32 elements it holds.
    pub fn capacity(&self) -> usize {
        self.storage.size()[0] as usize
    }

    /// A contiguous `rows × cols` view on the front of the buffer.
    pub fn view(&self, rows: usize, cols: usize) -> Result<Tensor> {
        Ok(self
            .storage
            .f_narrow(0, 0, (rows * cols) as i64)?
            .f_view([rows as i64, cols as i64])?)
    }
}

/// Computes the scores of `queries` (r × d) against `database` (c × d) into `out` (r × c):
/// `q·yᵀ`, plus the broadcast row `bias` (1 × c) when given.
pub(crate) fn score_into(
    out: &Tensor,
    queries: &Tensor,
    database: &Tensor,
    bias: Option<&Tensor>,
) -> Result<()> {
    let db_t = database.f_tr()?;
    match bias {
        None => {
            let _ = queries.f_matmul_out(out, &db_t)?;
        }
        Some(b) => {
            let _ = b.f_addmm_out(out, queries, &db_t)?;
        }
    }
    Ok(())
}

/// Sets to −∞ the scores of a tile where the query's global id equals the database vector's
/// global id (`first_query + i == first_db + j`), i.e. one diagonal of the tile.
pub(crate) fn mask_self(tile: &Tensor, first_query: i64, first_db: i64) -> Result<()> {
    let size = tile.size();
    let (rows, cols) = (size[0], size[1]);
    // Element (i, j) is masked when j − i = first_query − first_db.
    let offset = first_query - first_db;
    if offset >= cols || -offset >= rows {
        return Ok(());
    }
    let mut diag = tile.f_diagonal(offset, 0, 1)?;
    let _ = diag.f_fill_(f64::NEG_INFINITY)?;
    Ok(())
}

/// The L2 bias row `−‖y‖²/2` of a database block, shape (1, c).
pub(crate) fn l2_bias(database: &Tensor) -> Result<Tensor> {
    Ok(database
        .f_square()?
        .f_sum_dim_intlist([1i64].as_slice(), false, Kind::Float)?
        .f_mul_scalar(-0.5)?
        .f_unsqueeze(0)?)
}

/// Squared norms of the rows of `x`, shape (n,).
pub(crate) fn sq_norms(x: &Tensor) -> Result<Tensor> {
    // A norm reduction reads `x` once without materialising `x²`.
    Ok(x.f_norm_scalaropt_dim(2.0, [1i64].as_slice(), false)?
        .f_square()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_respect_the_budget() {
        let p = TilePlan::new(100_000, 100_000, 256 << 20, 1024);
        assert!(p.elements() * 4 <= 256 << 20);
        assert_eq!(p.rows, 1024);
        let tiny = TilePlan::new(10, 10, 4, 1024);
        assert_eq!((tiny.rows, tiny.cols), (1, 1));
        let small = TilePlan::new(3, 5, 1 << 20, 1024);
        assert_eq!((small.rows, small.cols), (3, 5));
    }
}
