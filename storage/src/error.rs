//! The storage crate's error type.

/// Everything that can go wrong reading or writing the store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The store URL could not be understood or opened.
    #[error("cannot open store `{url}`: {reason}")]
    BadUrl {
        /// The URL as the user wrote it.
        url: String,
        /// What is wrong with it and what to do.
        reason: String,
    },
    /// An object-store operation failed (after retries, when the error was transient).
    #[error("{op} `{path}` failed: {source}")]
    ObjectStore {
        /// The operation: get, put, head, list, delete.
        op: &'static str,
        /// The object path inside the store.
        path: String,
        /// The underlying error.
        #[source]
        source: Box<object_store::Error>,
    },
    /// A Parquet shard could not be encoded or decoded.
    #[error("parquet error in `{path}`: {source}")]
    Parquet {
        /// The shard's path.
        path: String,
        /// The underlying error.
        #[source]
        source: Box<parquet::errors::ParquetError>,
    },
    /// A manifest could not be encoded or decoded.
    #[error("manifest `{path}` is invalid: {source}")]
    Manifest {
        /// The manifest's path.
        path: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// The data does not match what the manifest or the caller expects.
    #[error("{0}")]
    Invalid(String),
    /// Local filesystem I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Short alias used throughout the crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
