//! Errors of the search crate, and the input checks every public entry point runs first.

use tch::{Device, Kind, Tensor};

/// Why a search, clustering or sampling call refused its inputs or failed.
///
/// Every message names the offending argument and says what to change.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// A tensor is not 2-D `(rows, dim)`.
    #[error("{name}: expected a 2-D tensor (rows, dim), got shape {shape:?}; reshape it to (N, D)")]
    NotMatrix {
        /// The argument.
        name: &'static str,
        /// Its shape.
        shape: Vec<i64>,
    },
    /// A tensor does not hold f32 values.
    #[error(
        "{name}: expected f32 values (Kind::Float), got {kind:?}; convert it with `.to_kind(Kind::Float)`"
    )]
    NotFloat {
        /// The argument.
        name: &'static str,
        /// Its element kind.
        kind: Kind,
    },
    /// A tensor has no rows or no columns.
    #[error("{name} is empty (shape {shape:?}); pass at least one vector of dimension ≥ 1")]
    Empty {
        /// The argument.
        name: &'static str,
        /// Its shape.
        shape: Vec<i64>,
    },
    /// Two tensors that must share their dimension do not.
    #[error(
        "dimension mismatch: {left} has dimension {left_dim} but {right} has {right_dim}; embed both with the same model"
    )]
    DimMismatch {
        /// The first argument.
        left: &'static str,
        /// Its dimension.
        left_dim: usize,
        /// The second argument.
        right: &'static str,
        /// Its dimension.
        right_dim: usize,
    },
    /// Two tensors that must share a device do not.
    #[error("{name} is on {got:?} but {other} is on {expected:?}; move both to the same device")]
    DeviceMismatch {
        /// The argument on the wrong device.
        name: &'static str,
        /// Where it is.
        got: Device,
        /// The argument it must match.
        other: &'static str,
        /// Where that one is.
        expected: Device,
    },
    /// A count (`k`, `nlist`, `nprobe`, a sample size…) is zero.
    #[error("{what} = 0; it must be at least 1")]
    Zero {
        /// The parameter.
        what: &'static str,
    },
    /// A count asks for more items than there are.
    #[error(
        "{what} = {requested} but only {available} {of} are available; lower {what} or supply more data"
    )]
    TooLarge {
        /// The parameter (`k`, `nlist`, `nprobe`…).
        what: &'static str,
        /// Its value.
        requested: usize,
        /// How many there are.
        available: usize,
        /// What they are ("database vectors", "points", "lists"…).
        of: &'static str,
    },
    /// An option has a value outside its domain.
    #[error("invalid option {name}: {reason}")]
    InvalidOption {
        /// The option.
        name: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// libtorch reported an error (out of memory, a device problem…).
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, SearchError>;

/// Checks that `t` is a non-empty 2-D f32 tensor and returns `(rows, dim)`.
pub(crate) fn check_matrix(name: &'static str, t: &Tensor) -> Result<(usize, usize)> {
    let shape = t.size();
    if shape.len() != 2 {
        return Err(SearchError::NotMatrix { name, shape });
    }
    let kind = t.f_kind()?;
    if kind != Kind::Float {
        return Err(SearchError::NotFloat { name, kind });
    }
    if shape[0] == 0 || shape[1] == 0 {
        return Err(SearchError::Empty { name, shape });
    }
    Ok((shape[0] as usize, shape[1] as usize))
}

/// Checks that two matrices share their dimension and device.
pub(crate) fn check_pair(
    left: &'static str,
    a: &Tensor,
    left_dim: usize,
    right: &'static str,
    b: &Tensor,
    right_dim: usize,
) -> Result<()> {
    if left_dim != right_dim {
        return Err(SearchError::DimMismatch {
            left,
            left_dim,
            right,
            right_dim,
        });
    }
    let (da, db) = (a.device(), b.device());
    if da != db {
        return Err(SearchError::DeviceMismatch {
            name: right,
            got: db,
            other: left,
            expected: da,
        });
    }
    Ok(())
}

/// Checks `1 ≤ value ≤ available`.
pub(crate) fn check_count(
    what: &'static str,
    value: usize,
    available: usize,
    of: &'static str,
) -> Result<()> {
    if value == 0 {
        return Err(SearchError::Zero { what });
    }
    if value > available {
        return Err(SearchError::TooLarge {
            what,
            requested: value,
            available,
            of,
        });
    }
    Ok(())
}
