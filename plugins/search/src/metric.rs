//! How two vectors are compared.

/// The similarity a search ranks by.
///
/// Scores inside the crate are always "larger is better": the inner product for
/// [`Metric::InnerProduct`], and `x·y − ‖y‖²/2` for [`Metric::L2`], which has the same arg-max
/// as `−‖x − y‖²` for a fixed query `x` (expand `‖x − y‖² = ‖x‖² − 2x·y + ‖y‖²` and drop the
/// query's own norm). Results convert the latter back to squared distances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Metric {
    /// Inner product, highest first. Equals cosine similarity for L2-normalised vectors.
    #[default]
    InnerProduct,
    /// Squared Euclidean distance, lowest first.
    L2,
}
