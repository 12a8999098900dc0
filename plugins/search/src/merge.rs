//! Device-agnostic selection: `topk` on each score tile, then a merge with the running best.
//!
//! This path is pure libtorch, so it runs wherever the tensors live (CUDA included):
//! 1. `topk(k + 1)` per tile row. If the k-th and (k+1)-th scores are equal, a tie straddles the
//!    cut and `topk` may have kept a higher id; those (rare) rows are redone with a stable
//!    descending sort of the full tile row, which orders equal scores by column, i.e. by id.
//! 2. The tile's k best are concatenated with the running k best and ordered by
//!    (score descending, id ascending) with two sorts: by id, then a stable sort by score.

use tch::{Device, Kind, Tensor};

use crate::error::Result;

/// The running k best (scores, ids) of every query, each `nq × k`, rows sorted best first.
pub(crate) struct TorchBest {
    k: usize,
    scores: Tensor,
    ids: Tensor,
}

impl TorchBest {
    /// Empty results: scores −∞ and ids `i64::MAX`, worse than any real pair.
    pub fn new(nq: usize, k: usize, device: Device) -> Result<Self> {
        let shape = [nq as i64, k as i64];
        Ok(TorchBest {
            k,
            scores: Tensor::f_full(shape, f64::NEG_INFINITY, (Kind::Float, device))?,
            ids: Tensor::f_full(shape, i64::MAX, (Kind::Int64, device))?,
        })
    }

    /// Merges a `rows × cols` tile whose rows are queries `first_row..` and whose columns are
    /// database ids `first_id..`.
    pub fn push_tile(&mut self, tile: &Tensor, first_row: usize, first_id: i64) -> Result<()> {
        let size = tile.size();
        let (rows, cols) = (size[0], size[1]);
        let kk = (self.k as i64).min(cols);
        let (values, indices) = tile_topk(tile, kk)?;
        let indices = indices.f_add_scalar(first_id)?;

        let mut best_s = self.scores.f_narrow(0, first_row as i64, rows)?;
        let mut best_i = self.ids.f_narrow(0, first_row as i64, rows)?;
        let all_s = Tensor::f_cat(&[&best_s, &values], 1)?;
        let all_i = Tensor::f_cat(&[&best_i, &indices], 1)?;
        let (by_id, perm) = all_i.f_sort(1, false)?;
        let s_by_id = all_s.f_gather(1, &perm, false)?;
        let (sorted_s, perm2) = s_by_id.f_sort_stable(true, 1, true)?;
        let sorted_i = by_id.f_gather(1, &perm2, false)?;
        let k = self.k as i64;
        best_s.f_copy_(&sorted_s.f_narrow(1, 0, k)?)?;
        best_i.f_copy_(&sorted_i.f_narrow(1, 0, k)?)?;
        Ok(())
    }

    /// The results: (scores, ids), each `nq × k`, best first.
    pub fn into_parts(self) -> (Tensor, Tensor) {
        (self.scores, self.ids)
    }
}

/// The `kk` best columns of every tile row, ties at the cut resolved by lower column.
fn tile_topk(tile: &Tensor, kk: i64) -> Result<(Tensor, Tensor)> {
    let cols = tile.size()[1];
    if kk >= cols {
        // Every column is kept: a stable sort gives the full order directly.
        return Ok(tile.f_sort_stable(true, 1, true)?);
    }
    let (values, indices) = tile.f_topk(kk + 1, 1, true, true)?;
    let kth = values.f_narrow(1, kk - 1, 1)?;
    let next = values.f_narrow(1, kk, 1)?;
    let tied = kth
        .f_eq_tensor(&next)?
        .f_logical_and(&kth.f_gt(f64::NEG_INFINITY)?)?
        .f_squeeze_dim(1)?;
    let mut values = values.f_narrow(1, 0, kk)?;
    let mut indices = indices.f_narrow(1, 0, kk)?;
    let tied_rows = tied.f_nonzero()?.f_squeeze_dim(1)?;
    if tied_rows.size()[0] > 0 {
        let (sv, si) = tile
            .f_index_select(0, &tied_rows)?
            .f_sort_stable(true, 1, true)?;
        values = values.f_contiguous()?;
        indices = indices.f_contiguous()?;
        let _ = values.f_index_copy_(0, &tied_rows, &sv.f_narrow(1, 0, kk)?)?;
        let _ = indices.f_index_copy_(0, &tied_rows, &si.f_narrow(1, 0, kk)?)?;
    }
    Ok((values, indices))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_at_the_cut_prefer_low_ids() {
        let mut best = TorchBest::new(1, 2, Device::Cpu).unwrap();
        let tile = Tensor::from_slice(&[1.0f32, 5.0, 5.0, 5.0, 0.0]).view([1, 5]);
        best.push_tile(&tile, 0, 10).unwrap();
        let tile = Tensor::from_slice(&[5.0f32, 7.0]).view([1, 2]);
        best.push_tile(&tile, 0, 2).unwrap();
        let (s, i) = best.into_parts();
        assert_eq!(Vec::<f32>::try_from(s.view([-1])).unwrap(), vec![7.0, 5.0]);
        assert_eq!(Vec::<i64>::try_from(i.view([-1])).unwrap(), vec![3, 2]);
    }
}
