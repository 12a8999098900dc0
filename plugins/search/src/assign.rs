//! Nearest centroid (k = 1, squared L2) for many points: the inner loop of k-means and of IVF.
//!
//! `argmin_c ‖x − c‖² = argmax_c (x·c − ‖c‖²/2)`, so each tile is one `addmm` (GEMM plus the
//! bias row `−‖c‖²/2`) into a reused buffer followed by `max` along the centroids. The squared
//! distance is recovered as `‖x‖² − 2·max`, clamped at 0. Tiles follow the same budget as the
//! exact search; when there are more centroids than fit one tile, column tiles are merged keeping
//! the earlier (lower) centroid on ties.

use tch::{Kind, Tensor};

use crate::error::{Result, check_matrix, check_pair};
use crate::tile::{self, TileBuffer, TilePlan};

/// Points per tile row block at least (when there are that many).
const MIN_TILE_ROWS: usize = 4096;

/// Nearest centroid of every point.
#[derive(Debug)]
pub struct Assignment {
    /// Centroid id of every point, i64 `(N,)`.
    pub ids: Tensor,
    /// Squared L2 distance to that centroid, f32 `(N,)`.
    pub sq_distances: Tensor,
}

/// Assigns every row of `x` (N × d) to its nearest row of `centroids` (k × d) by squared L2,
/// with score tiles of at most `tile_bytes`.
pub fn nearest_centroids(x: &Tensor, centroids: &Tensor, tile_bytes: usize) -> Result<Assignment> {
    let (n, d) = check_matrix("points", x)?;
    let (k, dc) = check_matrix("centroids", centroids)?;
    check_pair("points", x, d, "centroids", centroids, dc)?;
    tile::check_budget(tile_bytes)?;
    let device = x.device();
    let plan = TilePlan::new(n, k, tile::device_budget(tile_bytes, device), MIN_TILE_ROWS);
    let buffer = TileBuffer::new(plan.elements(), device)?;
    let centroids = centroids.f_contiguous()?;
    let x = x.f_contiguous()?;
    let bias = tile::l2_bias(&centroids)?;
    let ids = Tensor::f_empty([n as i64], (Kind::Int64, device))?;
    let dist = Tensor::f_empty([n as i64], (Kind::Float, device))?;
    for r0 in (0..n).step_by(plan.rows) {
        let rows = plan.rows.min(n - r0);
        let q = x.f_narrow(0, r0 as i64, rows as i64)?;
        let mut best: Option<(Tensor, Tensor)> = None;
        for c0 in (0..k).step_by(plan.cols) {
            let cols = plan.cols.min(k - c0);
            let out = buffer.view(rows, cols)?;
            let c = centroids.f_narrow(0, c0 as i64, cols as i64)?;
            let b = bias.f_narrow(1, c0 as i64, cols as i64)?;
            tile::score_into(&out, &q, &c, Some(&b))?;
            let (v, i) = out.f_max_dim(1, false)?;
            let i = i.f_add_scalar(c0 as i64)?;
            best = Some(match best {
                None => (v, i),
                Some((bv, bi)) => {
                    let better = v.f_gt_tensor(&bv)?;
                    (v.f_where_self(&better, &bv)?, i.f_where_self(&better, &bi)?)
                }
            });
        }
        if let Some((v, i)) = best {
            let sq = tile::sq_norms(&q)?
                .f_sub(&v.f_mul_scalar(2.0)?)?
                .f_clamp_min(0.0)?;
            ids.f_narrow(0, r0 as i64, rows as i64)?.f_copy_(&i)?;
            dist.f_narrow(0, r0 as i64, rows as i64)?.f_copy_(&sq)?;
        }
    }
    Ok(Assignment {
        ids,
        sq_distances: dist,
    })
}
