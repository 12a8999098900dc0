//! Refusals that keep `dedup` from deleting distinct images silently: embeddings that cannot
//! tell images apart (a randomly initialised or collapsed model) are refused before any search,
//! and a result that would remove more than `max_removed` of the pool fails instead of being
//! written.

use dinoflow_vision::tch::{Kind, Tensor};

use crate::CurateError;

/// Fewer rows than this are too few to judge a descriptor by its average pair.
const MIN_ROWS_TO_JUDGE: usize = 8;

/// A descriptor whose average pair is at least this similar is refused whatever the threshold.
const NEARLY_IDENTICAL: f64 = 0.99;

/// The mean cosine similarity over all pairs of distinct rows with a nonzero vector, and how many
/// such rows there are. Computed from the sum of the unit vectors: `(|Σ v|² − m) / (m (m − 1))`.
pub fn mean_pair_similarity(vectors: &Tensor) -> (f64, usize) {
    if vectors.size().first().copied().unwrap_or(0) == 0 {
        return (0.0, 0);
    }
    let v = vectors.to_kind(Kind::Double);
    let norms = v.norm_scalaropt_dim(2, [1i64].as_slice(), true);
    let nonzero = norms.gt(1e-9);
    let rows = nonzero.sum(Kind::Int64).int64_value(&[]).max(0) as usize;
    if rows < 2 {
        return (0.0, rows);
    }
    let unit = (v / norms.clamp_min(1e-9)) * nonzero.to_kind(Kind::Double);
    let sum = unit.sum_dim_intlist([0i64].as_slice(), false, Kind::Double);
    let squared = sum.dot(&sum).double_value(&[]);
    let m = rows as f64;
    ((squared - m) / (m * (m - 1.0)), rows)
}

/// Refuses embeddings whose average pair of images is as similar as a copy (at least `threshold`,
/// or [`NEARLY_IDENTICAL`]): dedup would remove nearly everything. Skipped when `max_removed` is 1
/// (the user accepts removing every row) or with fewer than [`MIN_ROWS_TO_JUDGE`] rows.
pub fn check_distinct(
    vectors: &Tensor,
    threshold: f64,
    max_removed: f64,
) -> Result<(), CurateError> {
    if max_removed >= 1.0 {
        return Ok(());
    }
    let (mean, rows) = mean_pair_similarity(vectors);
    let limit = threshold.min(NEARLY_IDENTICAL);
    if rows >= MIN_ROWS_TO_JUDGE && mean >= limit {
        return Err(CurateError::Indistinct { rows, mean, limit });
    }
    Ok(())
}

/// Fails when `removed` of `rows` is a larger share than `max_removed`.
pub fn check_share(removed: usize, rows: usize, max_removed: f64) -> Result<(), CurateError> {
    if rows > 0 && removed as f64 > max_removed * rows as f64 {
        return Err(CurateError::RemovesTooMuch {
            removed,
            rows,
            percent: 100.0 * removed as f64 / rows as f64,
            max_percent: 100.0 * max_removed,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mean_pair_similarity_matches_a_pairwise_count() {
        let v = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 2.0, 3.0, 4.0, 0.0, 0.0]).view([4, 2]);
        // Unit vectors (1,0), (0,1), (0.6,0.8); the zero row is left out. Pairs: 0, 0.6, 0.8.
        let (mean, rows) = mean_pair_similarity(&v);
        assert_eq!(rows, 3);
        assert!((mean - 1.4 / 3.0).abs() < 1e-9, "{mean}");
    }

    #[test]
    fn identical_vectors_are_refused_and_spread_ones_are_not() {
        let same = Tensor::ones([20, 16], (Kind::Float, dinoflow_vision::tch::Device::Cpu));
        let err = check_distinct(&same, 0.93, 0.5).unwrap_err();
        assert!(
            err.to_string().contains("do not tell images apart"),
            "{err}"
        );
        assert!(
            check_distinct(&same, 0.93, 1.0).is_ok(),
            "max_removed 1 accepts it"
        );
        let spread = Tensor::eye(20, (Kind::Float, dinoflow_vision::tch::Device::Cpu));
        assert!(check_distinct(&spread, 0.93, 0.5).is_ok());
        assert!(
            check_distinct(&same.narrow(0, 0, 7), 0.93, 0.5).is_ok(),
            "too few rows"
        );
    }

    #[test]
    fn more_than_the_share_fails() {
        assert!(check_share(50, 100, 0.5).is_ok());
        let err = check_share(51, 100, 0.5).unwrap_err().to_string();
        assert!(
            err.contains("51 of 100") && err.contains("max_removed"),
            "{err}"
        );
    }
}
