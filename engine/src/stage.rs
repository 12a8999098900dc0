//! The `Stage` trait that every stage kind implements, its ports, and the context a run receives.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arrow_schema::SchemaRef;
use async_trait::async_trait;
use dinoflow_storage::{Dataset, DatasetWriter, OutputManifest, ShardLimits, Store};
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::StageError;
use crate::progress::{ProgressBar, ProgressSink};

/// What flows through a port. Ports connect only when their types are equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "name", rename_all = "lowercase")]
pub enum PortType {
    /// A dataset with the named schema (`images`, `embeddings`, `errors`, ...).
    Dataset(&'static str),
    /// An artifact of the named kind (`vit`, ...).
    Artifact(&'static str),
}

impl std::fmt::Display for PortType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortType::Dataset(s) => write!(f, "dataset<{s}>"),
            PortType::Artifact(s) => write!(f, "artifact<{s}>"),
        }
    }
}

/// One input or output of a stage kind.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Port {
    /// The port's name, as used in `inputs:` and `stage.port` references.
    pub name: &'static str,
    /// What flows through it.
    pub ty: PortType,
    /// Whether a workflow may leave this input unconnected.
    pub optional: bool,
    /// Whether the input takes several upstream outputs, each under its own label
    /// (`inputs: {model:teacher: a.model, model:student: b.model}`).
    pub many: bool,
    /// One line saying what it is for.
    pub doc: &'static str,
}

impl Port {
    /// A required port.
    pub const fn new(name: &'static str, ty: PortType, doc: &'static str) -> Self {
        Self {
            name,
            ty,
            optional: false,
            many: false,
            doc,
        }
    }

    /// An input port that may be left unconnected.
    pub const fn optional(name: &'static str, ty: PortType, doc: &'static str) -> Self {
        Self {
            name,
            ty,
            optional: true,
            many: false,
            doc,
        }
    }

    /// A required input port that takes one or more upstream outputs, each connected as
    /// `name:label` (or plain `name`, labelled `name`).
    pub const fn many(name: &'static str, ty: PortType, doc: &'static str) -> Self {
        Self {
            name,
            ty,
            optional: false,
            many: true,
            doc,
        }
    }
}

/// What a stage needs from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Resources {
    /// CPU cores.
    pub cpus: u32,
    /// GPUs.
    pub gpus: u32,
    /// Memory in GiB.
    pub memory_gb: f64,
}

impl Resources {
    /// Nothing: what a stage run by another scheduler (Slurm) takes from this machine.
    pub const NONE: Resources = Resources {
        cpus: 0,
        gpus: 0,
        memory_gb: 0.0,
    };
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            cpus: 1,
            gpus: 0,
            memory_gb: 0.5,
        }
    }
}

/// A byte-stream outside the store that a stage's output depends on (source file listings, plugin
/// bytes, model files). Its digest goes into the fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraInput {
    /// A name, unique within the stage, such as `source listing`.
    pub name: String,
    /// blake3 hex of the stream.
    pub digest: String,
    /// A short human summary (`70000 files, 31 MB`).
    pub summary: String,
}

/// A stage kind. Implement this; the registry erases the config type.
#[async_trait]
pub trait Stage: Send + Sync + 'static {
    /// The typed configuration read from `with:`. Use `#[serde(deny_unknown_fields)]`.
    type Config: DeserializeOwned + Serialize + JsonSchema + Send + Sync + 'static;

    /// The kind's name as written in workflows.
    fn kind(&self) -> &'static str;
    /// Semantic version; bump it whenever the same inputs and config would give other outputs.
    fn version(&self) -> semver::Version;
    /// One line saying what the stage does.
    fn description(&self) -> &'static str;
    /// Input ports.
    fn inputs(&self) -> Vec<Port>;
    /// Output ports; the first is the default when a workflow names the stage without a port.
    fn outputs(&self) -> Vec<Port>;
    /// Checks a parsed config for what its types cannot rule out (ranges, combinations), so that
    /// a bad workflow is refused before anything runs; the message names the field and says what
    /// to do.
    fn check(&self, _config: &Self::Config) -> Result<(), String> {
        Ok(())
    }
    /// Default resources for this config; the workflow's `resources:` overrides them.
    fn resources(&self, _config: &Self::Config) -> Resources {
        Resources::default()
    }
    /// The dataset input this stage maps over row by row, if any: every output row depends on one
    /// row of that input (and on the other inputs, whole). The engine then runs the stage as one
    /// task per shard of that input, in this process or as a Slurm job array, and concatenates
    /// the tasks' outputs in shard order; numeric metrics are summed.
    fn shards_by(&self) -> Option<&'static str> {
        None
    }
    /// For a stage that splits its work by itself rather than by an input's shards (`ingest`
    /// splits its source listing): the number of tasks this config splits into; each task reads
    /// [`StageContext::task`] and does its part. `None`, the default: the stage runs whole. Tasks
    /// run and merge as for [`Stage::shards_by`].
    async fn task_count(&self, _config: &Self::Config) -> Result<Option<usize>, StageError> {
        Ok(None)
    }
    /// The metrics of a run split into tasks, from each task's metrics in task order. The
    /// default is [`sum_task_metrics`].
    fn merge_metrics(&self, tasks: &[serde_json::Value]) -> serde_json::Value {
        sum_task_metrics(tasks)
    }
    /// Digests of everything outside the store that the outputs depend on.
    async fn extra_inputs(&self, _config: &Self::Config) -> Result<Vec<ExtraInput>, StageError> {
        Ok(Vec::new())
    }
    /// Does the work: reads inputs and writes every output port through `ctx`.
    async fn run(&self, config: &Self::Config, ctx: &StageContext) -> Result<(), StageError>;
}

/// A stage's config after validation: the typed value and its canonical JSON (defaults filled in).
#[derive(Clone)]
pub struct ParsedConfig {
    /// The config re-serialised from the typed value: what the fingerprint hashes.
    pub canonical: serde_json::Value,
    typed: Arc<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for ParsedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.canonical)
    }
}

/// A config error: the dotted path inside `with:` and the message.
#[derive(Debug, Clone)]
pub struct ConfigError {
    /// Path inside `with:` (`.` separated, empty for the whole block).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// The type-erased face of a [`Stage`], used by the registry and the scheduler.
#[async_trait]
pub trait DynStage: Send + Sync {
    /// See [`Stage::kind`].
    fn kind(&self) -> &'static str;
    /// See [`Stage::version`].
    fn version(&self) -> semver::Version;
    /// See [`Stage::description`].
    fn description(&self) -> &'static str;
    /// See [`Stage::inputs`].
    fn inputs(&self) -> Vec<Port>;
    /// See [`Stage::outputs`].
    fn outputs(&self) -> Vec<Port>;
    /// JSON schema of the config.
    fn config_schema(&self) -> serde_json::Value;
    /// Validates `with:`.
    fn parse_config(&self, value: &serde_json::Value) -> Result<ParsedConfig, ConfigError>;
    /// See [`Stage::resources`].
    fn resources(&self, config: &ParsedConfig) -> Resources;
    /// See [`Stage::shards_by`].
    fn shards_by(&self) -> Option<&'static str>;
    /// See [`Stage::task_count`].
    async fn task_count(&self, config: &ParsedConfig) -> Result<Option<usize>, StageError>;
    /// See [`Stage::merge_metrics`].
    fn merge_metrics(&self, tasks: &[serde_json::Value]) -> serde_json::Value;
    /// See [`Stage::extra_inputs`].
    async fn extra_inputs(&self, config: &ParsedConfig) -> Result<Vec<ExtraInput>, StageError>;
    /// See [`Stage::run`].
    async fn run(&self, config: &ParsedConfig, ctx: &StageContext) -> Result<(), StageError>;
}

fn typed<S: Stage>(config: &ParsedConfig) -> &S::Config {
    config
        .typed
        .downcast_ref::<S::Config>()
        .expect("ParsedConfig is only built by parse_config of the same stage")
}

#[async_trait]
impl<S: Stage> DynStage for S {
    fn kind(&self) -> &'static str {
        Stage::kind(self)
    }
    fn version(&self) -> semver::Version {
        Stage::version(self)
    }
    fn description(&self) -> &'static str {
        Stage::description(self)
    }
    fn inputs(&self) -> Vec<Port> {
        Stage::inputs(self)
    }
    fn outputs(&self) -> Vec<Port> {
        Stage::outputs(self)
    }
    fn config_schema(&self) -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(S::Config)).unwrap_or_default()
    }
    fn parse_config(&self, value: &serde_json::Value) -> Result<ParsedConfig, ConfigError> {
        let value = if value.is_null() {
            serde_json::Value::Object(Default::default())
        } else {
            value.clone()
        };
        let cfg: S::Config = serde_path_to_error::deserialize(value).map_err(|e| ConfigError {
            path: e.path().to_string().trim_start_matches('.').to_string(),
            message: e.inner().to_string(),
        })?;
        Stage::check(self, &cfg).map_err(|message| ConfigError {
            path: String::new(),
            message,
        })?;
        let canonical = serde_json::to_value(&cfg).map_err(|e| ConfigError {
            path: String::new(),
            message: e.to_string(),
        })?;
        Ok(ParsedConfig {
            canonical,
            typed: Arc::new(cfg),
        })
    }
    fn resources(&self, config: &ParsedConfig) -> Resources {
        Stage::resources(self, typed::<S>(config))
    }
    fn shards_by(&self) -> Option<&'static str> {
        Stage::shards_by(self)
    }
    async fn task_count(&self, config: &ParsedConfig) -> Result<Option<usize>, StageError> {
        Stage::task_count(self, typed::<S>(config)).await
    }
    fn merge_metrics(&self, tasks: &[serde_json::Value]) -> serde_json::Value {
        Stage::merge_metrics(self, tasks)
    }
    async fn extra_inputs(&self, config: &ParsedConfig) -> Result<Vec<ExtraInput>, StageError> {
        Stage::extra_inputs(self, typed::<S>(config)).await
    }
    async fn run(&self, config: &ParsedConfig, ctx: &StageContext) -> Result<(), StageError> {
        Stage::run(self, typed::<S>(config), ctx).await
    }
}

/// The metrics of a run split into tasks as counts: integer metrics reported by every task are
/// summed, other values kept where every task reported the same, the rest (rates and timings of
/// single tasks) left out.
pub fn sum_task_metrics(tasks: &[serde_json::Value]) -> serde_json::Value {
    let tasks: Vec<&serde_json::Map<String, serde_json::Value>> =
        tasks.iter().filter_map(|t| t.as_object()).collect();
    let Some(first) = tasks.first() else {
        return serde_json::Value::Null;
    };
    let mut merged = serde_json::Map::new();
    for key in first.keys() {
        let values: Vec<&serde_json::Value> = tasks.iter().filter_map(|t| t.get(key)).collect();
        if values.len() != tasks.len() {
            continue;
        }
        if let Some(counts) = values
            .iter()
            .map(|v| v.as_u64())
            .collect::<Option<Vec<u64>>>()
        {
            merged.insert(key.clone(), counts.iter().sum::<u64>().into());
        } else if values.iter().all(|v| *v == values[0]) {
            merged.insert(key.clone(), values[0].clone());
        }
    }
    serde_json::Value::Object(merged)
}

/// The folder inside the object folder where task `task` of a stage run split into tasks writes
/// its datasets; its task manifest is this name plus `.json`.
pub fn task_folder(task: usize) -> String {
    format!("tasks/{task:05}")
}

/// A committed upstream output connected to one input port.
#[derive(Debug, Clone)]
pub struct InputRef {
    /// Fingerprint of the upstream stage run.
    pub fingerprint: String,
    /// The upstream output's manifest entry.
    pub output: OutputManifest,
}

/// Splits an `inputs:` key into its port and, for ports that take several inputs, its label:
/// `model:teacher` → (`model`, `teacher`).
pub fn split_port_key(key: &str) -> (&str, Option<&str>) {
    match key.split_once(':') {
        Some((port, label)) => (port, Some(label)),
        None => (key, None),
    }
}

/// What a running stage gets: its inputs, a place to write outputs, progress and metrics.
pub struct StageContext {
    /// The stage's name in the workflow.
    pub stage: String,
    /// This run's fingerprint (names the output folder).
    pub fingerprint: String,
    /// The store outputs go to.
    pub store: Store,
    /// Cores this stage may use.
    pub cpus: usize,
    /// Bounds on output shards.
    pub shard_limits: ShardLimits,
    /// The task this context runs when the stage runs as tasks (see [`Stage::shards_by`] and
    /// [`Stage::task_count`]): its datasets go under `tasks/NNNNN/`.
    pub task: Option<usize>,
    inputs: BTreeMap<String, InputRef>,
    outputs: Mutex<BTreeMap<String, OutputManifest>>,
    metrics: Mutex<serde_json::Map<String, serde_json::Value>>,
    progress: Arc<dyn ProgressSink>,
}

impl StageContext {
    /// Builds a context (the scheduler does this; tests may too).
    pub fn new(
        stage: &str,
        fingerprint: &str,
        store: Store,
        inputs: BTreeMap<String, InputRef>,
        cpus: usize,
        progress: Arc<dyn ProgressSink>,
    ) -> Self {
        Self {
            stage: stage.to_string(),
            fingerprint: fingerprint.to_string(),
            store,
            cpus: cpus.max(1),
            shard_limits: ShardLimits::default(),
            task: None,
            inputs,
            outputs: Mutex::default(),
            metrics: Mutex::default(),
            progress,
        }
    }

    /// The upstream output connected to input `port`, if any.
    pub fn input(&self, port: &str) -> Option<&InputRef> {
        self.inputs.get(port)
    }

    /// The upstream outputs connected to a port declared with [`Port::many`], with their labels,
    /// in label order.
    pub fn labelled_inputs(&self, port: &str) -> Vec<(&str, &InputRef)> {
        self.inputs
            .iter()
            .filter_map(|(key, input)| match split_port_key(key) {
                (base, label) if base == port => Some((label.unwrap_or(base), input)),
                _ => None,
            })
            .collect()
    }

    /// Opens the dataset connected to input `port`.
    pub fn input_dataset(&self, port: &str) -> Result<Dataset, StageError> {
        let input = self
            .inputs
            .get(port)
            .ok_or_else(|| StageError::MissingInput(port.to_string()))?;
        Ok(Dataset::open(
            self.store.clone(),
            &input.fingerprint,
            input.output.clone(),
        )?)
    }

    /// Reads the file named `name` (its last path component) of the artifact on input `port`.
    pub async fn input_artifact_file(
        &self,
        port: &str,
        name: &str,
    ) -> Result<bytes::Bytes, StageError> {
        let input = self
            .inputs
            .get(port)
            .ok_or_else(|| StageError::MissingInput(port.to_string()))?;
        let file = input
            .output
            .files
            .iter()
            .find(|f| f.path.rsplit('/').next() == Some(name))
            .ok_or_else(|| StageError::MissingArtifactFile {
                port: port.to_string(),
                name: name.to_string(),
                present: input
                    .output
                    .files
                    .iter()
                    .map(|f| f.path.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let key = format!(
            "{}/{}",
            dinoflow_storage::object_dir(&input.fingerprint),
            file.path
        );
        Ok(self.store.get(&key).await?)
    }

    /// Starts writing the dataset for output `port`; hand the finished writer to [`Self::finish_dataset`].
    pub fn dataset_writer(&self, port: &str, schema: SchemaRef) -> DatasetWriter {
        let writer = DatasetWriter::new(
            self.store.clone(),
            &self.fingerprint,
            port,
            schema,
            self.shard_limits,
        );
        match self.task {
            Some(task) => writer.in_folder(&format!("{}/", task_folder(task))),
            None => writer,
        }
    }

    /// Uploads the last shard of `writer` and records the dataset as output `port`.
    pub async fn finish_dataset(
        &self,
        port: &str,
        writer: DatasetWriter,
    ) -> Result<(), StageError> {
        let out = writer.finish().await?;
        self.set_output(port, out);
        Ok(())
    }

    /// Records output `port` (written with the store's output helpers).
    pub fn set_output(&self, port: &str, output: OutputManifest) {
        if let Ok(mut outs) = self.outputs.lock() {
            outs.insert(port.to_string(), output);
        }
    }

    /// The outputs recorded so far.
    pub fn outputs(&self) -> BTreeMap<String, OutputManifest> {
        self.outputs.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Records a metric for the run history and reports.
    pub fn metric(&self, key: &str, value: impl Into<serde_json::Value>) {
        if let Ok(mut m) = self.metrics.lock() {
            m.insert(key.to_string(), value.into());
        }
    }

    /// The metrics recorded so far.
    pub fn metrics(&self) -> serde_json::Value {
        serde_json::Value::Object(self.metrics.lock().map(|m| m.clone()).unwrap_or_default())
    }

    /// A progress bar for this stage counting `unit`s (`images`, `rows`).
    pub fn progress(&self, total: Option<u64>, unit: &str) -> Box<dyn ProgressBar> {
        self.progress.bar(&self.stage, total, unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn task_metrics_sum_counts_and_leave_out_what_does_not_add_up() {
        let a = json!({"rows": 10, "kept": 7, "model": "vit", "rows_per_s": 1.5, "only_a": 1});
        let b = json!({"rows": 5, "kept": 0, "model": "vit", "rows_per_s": 2.5});
        assert_eq!(
            sum_task_metrics(&[a, b]),
            json!({"rows": 15, "kept": 7, "model": "vit"})
        );
        assert_eq!(sum_task_metrics(&[]), serde_json::Value::Null);
    }
}
