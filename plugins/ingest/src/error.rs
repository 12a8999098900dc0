//! The ingest stage's error type: failures of the whole stage (a single bad image is not one; it
//! becomes a row of the `errors` output).

/// Why the ingest stage failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The source could not be opened or listed.
    #[error("source `{source_url}`: {reason}")]
    Source {
        /// The source URL.
        source_url: String,
        /// What went wrong and what to do.
        reason: String,
    },
    /// Building an Arrow batch failed.
    #[error("building a batch: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// The worker pool could not be built or a worker failed.
    #[error("worker pool: {0}")]
    Workers(String),
}
