//! How dinoflow work runs: the workflow spec ([`WorkflowFile`]), the validated DAG ([`Dag`]), stage
//! kinds ([`Stage`], [`Registry`]), fingerprints, the run database and the scheduler ([`Engine`]).
//! It knows nothing about images or tensors.

mod dag;
mod engine;
mod error;
mod fingerprint;
mod job;
mod locate;
mod lock;
mod progress;
mod registry;
mod rundb;
mod schema;
mod slurm;
mod spec;
mod stage;

pub use dag::{Dag, Edge, Node};
pub use engine::{
    CHECKPOINTS, Damage, Engine, Executor, GcReport, PlanState, PlannedStage, RunOptions,
    RunReport, StageOutcome, StageStatus, StoreCheck, error_chain,
};
pub use error::{EngineError, SpecError, StageError};
pub use fingerprint::{FingerprintParts, canonical_json};
pub use locate::{Position, Positions};
pub use progress::{ProgressBar, ProgressSink, Silent, StageEvent};
pub use registry::Registry;
pub use rundb::{RunDb, RunRow, StageRunRow};
pub use schema::workflow_schema;
pub use slurm::SlurmOptions;
pub use spec::{ResourceSpec, StageSpec, WorkflowFile, WorkflowSpec};
pub use stage::{
    ConfigError, DynStage, ExtraInput, InputRef, ParsedConfig, Port, PortType, Resources, Stage,
    StageContext, split_port_key, sum_task_metrics, task_folder,
};

/// Re-exported so stage crates use the same versions.
pub use async_trait::async_trait;
pub use schemars;
pub use semver;
