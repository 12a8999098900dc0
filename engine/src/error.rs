//! The engine's error types.

use crate::locate::Position;

/// A problem in a workflow file, with where it is and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{}:{}: {message}{}", position.line, position.column, hint.as_ref().map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
pub struct SpecError {
    /// The workflow file.
    pub file: String,
    /// Where in the file.
    pub position: Position,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

/// An error raised by a stage while it runs.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// Reading or writing the store failed.
    #[error(transparent)]
    Storage(#[from] dinoflow_storage::StorageError),
    /// The stage's own failure.
    #[error(transparent)]
    Failed(Box<dyn std::error::Error + Send + Sync>),
    /// The stage was asked for an input port it was not given.
    #[error("no input `{0}`")]
    MissingInput(String),
    /// The artifact connected to an input has no file with the expected name.
    #[error("the artifact on input `{port}` has no file `{name}` (it has: {present})")]
    MissingArtifactFile {
        /// The input port.
        port: String,
        /// The file name looked for.
        name: String,
        /// The files it has.
        present: String,
    },
}

impl StageError {
    /// Wraps any error raised by a stage.
    pub fn failed(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Failed(Box::new(e))
    }
}

/// Everything the engine can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The workflow is invalid (exit code 2).
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The workflow file could not be read.
    #[error("cannot read workflow {path}: {source}")]
    ReadWorkflow {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A stage failed while it was being planned (listing its sources, say).
    #[error("stage `{stage}`: {source}")]
    Stage {
        /// The stage's name in the workflow.
        stage: String,
        /// What went wrong.
        #[source]
        source: Box<StageError>,
    },
    /// A stage run by `Engine::execute_stage` failed.
    #[error("stage `{stage}` failed: {message}")]
    StageFailed {
        /// The stage's name in the workflow.
        stage: String,
        /// What went wrong.
        message: String,
    },
    /// The run was cancelled (Ctrl-C).
    #[error("cancelled")]
    Cancelled,
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] dinoflow_storage::StorageError),
    /// The run database failed.
    #[error("run database {path}: {source}")]
    Database {
        /// The database file.
        path: String,
        /// The SQLite error.
        #[source]
        source: Box<rusqlite::Error>,
    },
    /// Local I/O (state folder, locks) failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A stage name or run id that does not exist.
    #[error("{0}")]
    NotFound(String),
}
