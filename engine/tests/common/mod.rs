//! Small but real stage kinds and helpers shared by the engine's integration tests.
//!
//! Every kind records how often it actually ran (per stage name, in a [`Runs`] handle owned by the
//! test), so tests can tell a cache hit from a re-run without looking at the engine's own report.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow_array::{Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use dinoflow_engine::semver::Version;
use dinoflow_engine::{
    Dag, Engine, ExtraInput, PlanState, PlannedStage, Port, PortType, Registry, Resources,
    RunOptions, RunReport, Silent, SpecError, Stage, StageContext, StageError, StageOutcome,
    StageStatus,
};
use dinoflow_storage::{
    CacheState, Dataset, DatasetWriter, Manifest, OutputManifest, ShardLimits, Store,
};
use futures::TryStreamExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The port type every numeric stage reads and writes.
pub const NUMBERS: PortType = PortType::Dataset("numbers");
/// The artifact type written by `blob`.
pub const BLOB: PortType = PortType::Artifact("blob");

/// How many times each stage (by workflow name) really ran its `run`.
#[derive(Clone, Default, Debug)]
pub struct Runs(Arc<Mutex<BTreeMap<String, usize>>>);

impl Runs {
    fn record(&self, stage: &str) {
        *self.0.lock().unwrap().entry(stage.to_string()).or_default() += 1;
    }

    /// Runs of `stage` so far.
    pub fn count(&self, stage: &str) -> usize {
        self.0.lock().unwrap().get(stage).copied().unwrap_or(0)
    }

    /// Every count.
    pub fn snapshot(&self) -> BTreeMap<String, usize> {
        self.0.lock().unwrap().clone()
    }

    /// Runs of all stages together.
    pub fn total(&self) -> usize {
        self.0.lock().unwrap().values().sum()
    }
}

/// The schema of `numbers` datasets: one non-null Int64 column `n`.
pub fn numbers_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]))
}

fn writer(ctx: &StageContext, port: &str, shard_rows: Option<u64>) -> DatasetWriter {
    match shard_rows {
        Some(rows) => DatasetWriter::new(
            ctx.store.clone(),
            &ctx.fingerprint,
            port,
            numbers_schema(),
            ShardLimits {
                max_rows: rows.max(1) as usize,
                ..ShardLimits::default()
            },
        ),
        None => ctx.dataset_writer(port, numbers_schema()),
    }
}

/// Writes `values` as output `port` in batches of at most 7 rows (so shards span several batches).
async fn write_numbers(
    ctx: &StageContext,
    port: &str,
    values: &[i64],
    shard_rows: Option<u64>,
) -> Result<(), StageError> {
    let mut w = writer(ctx, port, shard_rows);
    for chunk in values.chunks(7) {
        let batch = RecordBatch::try_new(
            numbers_schema(),
            vec![Arc::new(Int64Array::from(chunk.to_vec()))],
        )
        .map_err(StageError::failed)?;
        w.write(&batch).await?;
    }
    ctx.finish_dataset(port, w).await?;
    ctx.metric("rows", values.len() as u64);
    Ok(())
}

/// Every value of column `n` of `dataset`, in order.
pub async fn dataset_values(dataset: &Dataset) -> Result<Vec<i64>, StageError> {
    let batches: Vec<RecordBatch> = dataset.batches(5).try_collect().await?;
    let mut out = Vec::new();
    for b in &batches {
        let col = b
            .column_by_name("n")
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
            .ok_or_else(|| StageError::failed(std::io::Error::other("no Int64 column `n`")))?;
        assert_eq!(col.null_count(), 0);
        out.extend(col.values().iter().copied());
    }
    Ok(out)
}

async fn input_values(ctx: &StageContext, port: &str) -> Result<Vec<i64>, StageError> {
    dataset_values(&ctx.input_dataset(port)?).await
}

// ---------------------------------------------------------------------------------------------
// numbers: no inputs; writes start..start+count.

/// `numbers`: writes the integers `start .. start + count` to `rows`.
pub struct Numbers {
    pub version: Version,
    pub runs: Runs,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NumbersConfig {
    /// How many numbers.
    pub count: u64,
    /// The first number.
    #[serde(default)]
    pub start: i64,
    /// Rows per Parquet shard (engine default when unset).
    #[serde(default)]
    pub shard_rows: Option<u64>,
}

#[async_trait]
impl Stage for Numbers {
    type Config = NumbersConfig;
    fn kind(&self) -> &'static str {
        "numbers"
    }
    fn version(&self) -> Version {
        self.version.clone()
    }
    fn description(&self) -> &'static str {
        "writes a range of integers"
    }
    fn inputs(&self) -> Vec<Port> {
        Vec::new()
    }
    fn outputs(&self) -> Vec<Port> {
        vec![Port::new("rows", NUMBERS, "the numbers")]
    }
    async fn run(&self, config: &NumbersConfig, ctx: &StageContext) -> Result<(), StageError> {
        self.runs.record(&ctx.stage);
        let values: Vec<i64> = (0..config.count as i64).map(|i| config.start + i).collect();
        write_numbers(ctx, "rows", &values, config.shard_rows).await
    }
}

// ---------------------------------------------------------------------------------------------
// square: rows → rows, each value squared.

/// `square`: squares every input value.
pub struct Square {
    pub runs: Runs,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SquareConfig {
    /// Rows per Parquet shard (engine default when unset).
    #[serde(default)]
    pub shard_rows: Option<u64>,
}

#[async_trait]
impl Stage for Square {
    type Config = SquareConfig;
    fn kind(&self) -> &'static str {
        "square"
    }
    fn version(&self) -> Version {
        Version::new(1, 0, 0)
    }
    fn description(&self) -> &'static str {
        "squares each number"
    }
    fn inputs(&self) -> Vec<Port> {
        vec![Port::new("rows", NUMBERS, "numbers to square")]
    }
    fn outputs(&self) -> Vec<Port> {
        vec![Port::new("rows", NUMBERS, "the squares")]
    }
    async fn run(&self, config: &SquareConfig, ctx: &StageContext) -> Result<(), StageError> {
        self.runs.record(&ctx.stage);
        let values: Vec<i64> = input_values(ctx, "rows")
            .await?
            .into_iter()
            .map(|v| v * v)
            .collect();
        write_numbers(ctx, "rows", &values, config.shard_rows).await
    }
}

// ---------------------------------------------------------------------------------------------
// shard-square: square as a stage that maps over the shards of its input.

/// `shard-square`: squares every input value, one task per input shard; fails a task holding
/// `stop_at` while the file `stop_file` exists (a failure from outside the workflow, so that a
/// second run with the same fingerprint can succeed).
pub struct ShardSquare {
    pub runs: Runs,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShardSquareConfig {
    /// A file whose presence fails the task holding `stop_at`.
    #[serde(default)]
    pub stop_file: Option<String>,
    /// The value whose task fails while `stop_file` exists.
    #[serde(default)]
    pub stop_at: i64,
}

#[async_trait]
impl Stage for ShardSquare {
    type Config = ShardSquareConfig;
    fn kind(&self) -> &'static str {
        "shard-square"
    }
    fn version(&self) -> Version {
        Version::new(1, 0, 0)
    }
    fn description(&self) -> &'static str {
        "squares each number, shard by shard"
    }
    fn inputs(&self) -> Vec<Port> {
        vec![Port::new("rows", NUMBERS, "numbers to square")]
    }
    fn outputs(&self) -> Vec<Port> {
        vec![Port::new("rows", NUMBERS, "the squares")]
    }
    fn shards_by(&self) -> Option<&'static str> {
        Some("rows")
    }
    async fn run(&self, config: &ShardSquareConfig, ctx: &StageContext) -> Result<(), StageError> {
        self.runs.record(&ctx.stage);
        let values = input_values(ctx, "rows").await?;
        if let Some(stop) = &config.stop_file
            && Path::new(stop).exists()
            && values.contains(&config.stop_at)
        {
            return Err(StageError::failed(std::io::Error::other(format!(
                "stopped at {}",
                config.stop_at
            ))));
        }
        let squares: Vec<i64> = values.iter().map(|v| v * v).collect();
        write_numbers(ctx, "rows", &squares, None).await
    }
}

// ---------------------------------------------------------------------------------------------
// sum: rows (+ optional more) → one row with the total.

/// `sum`: one row holding the sum of `rows` and, when connected, `more`.
pub struct Sum {
    pub runs: Runs,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SumConfig {}

#[async_trait]
impl Stage for Sum {
    type Config = SumConfig;
    fn kind(&self) -> &'static str {
        "sum"
    }
    fn version(&self) -> Version {
        Version::new(1, 0, 0)
    }
    fn description(&self) -> &'static str {
        "adds numbers up"
    }
    fn inputs(&self) -> Vec<Port> {
        vec![
            Port::new("rows", NUMBERS, "numbers to add"),
            Port::optional("more", NUMBERS, "more numbers to add"),
        ]
    }
    fn outputs(&self) -> Vec<Port> {
        vec![Port::new("rows", NUMBERS, "one row: the total")]
    }
    async fn run(&self, _config: &SumConfig, ctx: &StageContext) -> Result<(), StageError> {
        self.runs.record(&ctx.stage);
        let mut total: i64 = input_values(ctx, "rows").await?.iter().sum();
        if ctx.input("more").is_some() {
            total += input_values(ctx, "more").await?.iter().sum::<i64>();
        }
        write_numbers(ctx, "rows", &[total], None).await
    }
}

// ---------------------------------------------------------------------------------------------
// gather: several labelled inputs on one port.

/// `gather`: writes, for each input connected to `rows` in label order, the sum of its numbers.
pub struct Gather {
    pub runs: Runs,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatherConfig {}

#[async_trait]
impl Stage for Gather {
    type Config = GatherConfig;
    fn kind(&self) -> &'static str {
        "gather"
    }
    fn version(&self) -> Version {
        Version::new(1, 0, 0)
    }
    fn description(&self) -> &'static str {
        "sums each labelled input"
    }
    fn inputs(&self) -> Vec<Port> {
        vec![Port::many("rows", NUMBERS, "numbers, one input per label")]
    }
    fn outputs(&self) -> Vec<Port> {
        vec![Port::new("rows", NUMBERS, "one row per input: its total")]
    }
    async fn run(&self, _config: &GatherConfig, ctx: &StageContext) -> Result<(), StageError> {
        self.runs.record(&ctx.stage);
        let mut totals = Vec::new();
        let mut labels = Vec::new();
        for (label, input) in ctx.labelled_inputs("rows") {
            let ds = Dataset::open(ctx.store.clone(), &input.fingerprint, input.output.clone())?;
            totals.push(dataset_values(&ds).await?.iter().sum());
            labels.push(label.to_string());
        }
        ctx.metric("labels", labels);
        write_numbers(ctx, "rows", &totals, None).await
    }
}

// ---------------------------------------------------------------------------------------------
// blob: writes an artifact.

/// `blob`: writes an artifact `model` made of `size` bytes.
pub struct Blob {
    pub runs: Runs,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlobConfig {
    /// Bytes in the artifact.
    pub size: u64,
}

#[async_trait]
impl Stage for Blob {
    type Config = BlobConfig;
    fn kind(&self) -> &'static str {
        "blob"
    }
    fn version(&self) -> Version {
        Version::new(0, 3, 1)
    }
    fn description(&self) -> &'static str {
        "writes an artifact"
    }
    fn inputs(&self) -> Vec<Port> {
        Vec::new()
    }
    fn outputs(&self) -> Vec<Port> {
        vec![Port::new("model", BLOB, "the artifact")]
    }
    async fn run(&self, config: &BlobConfig, ctx: &StageContext) -> Result<(), StageError> {
        self.runs.record(&ctx.stage);
        let data: Vec<u8> = (0..config.size).map(|i| (i % 251) as u8).collect();
        let entry = ctx
            .store
            .put_output_file(&ctx.fingerprint, "model/weights.bin", data.into(), None)
            .await?;
        ctx.set_output("model", OutputManifest::artifact(vec![entry]));
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// check: passes its (optional) input through, or fails on demand after writing a partial shard.

/// `check`: copies `rows` (or `[1, 2, 3]` when unconnected) to `rows`; with `fail: true` it writes
/// a shard and then fails, like a stage that crashes half-way. `delay_ms` keeps it running after
/// its files are written (but before the engine commits them).
pub struct Check {
    pub runs: Runs,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// Fail after writing part of the output.
    #[serde(default)]
    pub fail: bool,
    /// Panic instead of returning an error.
    #[serde(default)]
    pub panic: bool,
    /// Sleep this long after writing the output, before returning.
    #[serde(default)]
    pub delay_ms: u64,
}

#[async_trait]
impl Stage for Check {
    type Config = CheckConfig;
    fn kind(&self) -> &'static str {
        "check"
    }
    fn version(&self) -> Version {
        Version::new(1, 0, 0)
    }
    fn description(&self) -> &'static str {
        "passes numbers through, or fails on demand"
    }
    fn inputs(&self) -> Vec<Port> {
        vec![Port::optional("rows", NUMBERS, "numbers to pass on")]
    }
    fn outputs(&self) -> Vec<Port> {
        vec![Port::new("rows", NUMBERS, "the same numbers")]
    }
    async fn run(&self, config: &CheckConfig, ctx: &StageContext) -> Result<(), StageError> {
        self.runs.record(&ctx.stage);
        let values = if ctx.input("rows").is_some() {
            input_values(ctx, "rows").await?
        } else {
            vec![1, 2, 3]
        };
        if config.fail || config.panic {
            // Leave a real shard behind, as a stage that dies mid-way would.
            let mut w = writer(ctx, "rows", None);
            let batch = RecordBatch::try_new(
                numbers_schema(),
                vec![Arc::new(Int64Array::from(values.clone()))],
            )
            .map_err(StageError::failed)?;
            w.write(&batch).await?;
            w.finish().await?;
        } else {
            write_numbers(ctx, "rows", &values, None).await?;
        }
        tokio::time::sleep(std::time::Duration::from_millis(config.delay_ms)).await;
        if config.panic {
            panic!("check was asked to panic");
        }
        if config.fail {
            return Err(StageError::failed(std::io::Error::other(
                "check was asked to fail",
            )));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// lines: reads integers from a local file; the file's content is an extra input.

/// `lines`: one integer per line of a local file; the file's bytes are an extra input of the
/// fingerprint, so editing the file re-runs the stage.
pub struct Lines {
    pub runs: Runs,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinesConfig {
    /// The file.
    pub path: String,
}

/// FNV-1a, 64 bits, hex: a stable digest that does not depend on the engine's hashing.
pub fn fnv1a_hex(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[async_trait]
impl Stage for Lines {
    type Config = LinesConfig;
    fn kind(&self) -> &'static str {
        "lines"
    }
    fn version(&self) -> Version {
        Version::new(1, 0, 0)
    }
    fn description(&self) -> &'static str {
        "reads integers from a file"
    }
    fn inputs(&self) -> Vec<Port> {
        Vec::new()
    }
    fn outputs(&self) -> Vec<Port> {
        vec![Port::new("rows", NUMBERS, "the numbers in the file")]
    }
    async fn extra_inputs(&self, config: &LinesConfig) -> Result<Vec<ExtraInput>, StageError> {
        let data = std::fs::read(&config.path).map_err(StageError::failed)?;
        Ok(vec![ExtraInput {
            name: "source file".into(),
            digest: fnv1a_hex(&data),
            summary: format!("{} bytes", data.len()),
        }])
    }
    async fn run(&self, config: &LinesConfig, ctx: &StageContext) -> Result<(), StageError> {
        self.runs.record(&ctx.stage);
        let text = std::fs::read_to_string(&config.path).map_err(StageError::failed)?;
        let values = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.trim().parse::<i64>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(StageError::failed)?;
        write_numbers(ctx, "rows", &values, None).await
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// The version `numbers` has in [`registry`].
pub fn numbers_version() -> Version {
    Version::new(1, 2, 0)
}

/// A registry with every test kind, counting runs in `runs`.
pub fn registry(runs: &Runs) -> Registry {
    let mut r = Registry::new();
    r.register(Numbers {
        version: numbers_version(),
        runs: runs.clone(),
    })
    .register(Square { runs: runs.clone() })
    .register(ShardSquare { runs: runs.clone() })
    .register(Sum { runs: runs.clone() })
    .register(Gather { runs: runs.clone() })
    .register(Blob { runs: runs.clone() })
    .register(Check { runs: runs.clone() })
    .register(Lines { runs: runs.clone() });
    r
}

/// Parses `yaml` as `wf.yaml`, panicking with the error if it is invalid.
pub fn dag(registry: &Registry, yaml: &str) -> Dag {
    Dag::parse("wf.yaml", yaml, registry).unwrap_or_else(|e| panic!("{e}"))
}

/// Parses `yaml` as `wf.yaml` and returns its error, panicking if it is valid.
pub fn spec_error(registry: &Registry, yaml: &str) -> SpecError {
    match Dag::parse("wf.yaml", yaml, registry) {
        Ok(d) => panic!(
            "expected an error, but the workflow parsed into stages {:?}",
            d.nodes.iter().map(|n| &n.name).collect::<Vec<_>>()
        ),
        Err(e) => e,
    }
}

/// Run options with room for several stages side by side.
pub fn opts(keep_going: bool) -> RunOptions {
    RunOptions {
        keep_going,
        limits: Resources {
            cpus: 4,
            gpus: 0,
            memory_gb: 16.0,
        },
        handle_ctrl_c: false,
        executor: Default::default(),
    }
}

/// Run options that run one stage at a time, in workflow order.
pub fn serial_opts(keep_going: bool) -> RunOptions {
    RunOptions {
        limits: Resources {
            cpus: 1,
            gpus: 0,
            memory_gb: 16.0,
        },
        ..opts(keep_going)
    }
}

/// A local store in a temporary folder, an engine on it, and a registry counting runs.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub runs: Runs,
    pub registry: Registry,
    pub engine: Engine,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let runs = Runs::default();
        let registry = registry(&runs);
        let engine = Self::open_engine(dir.path());
        Self {
            dir,
            runs,
            registry,
            engine,
        }
    }

    /// A fresh engine on the store at `root`.
    pub fn open_engine(root: &Path) -> Engine {
        let store = Store::create(root.to_str().unwrap()).unwrap();
        Engine::open(store, Arc::new(Silent)).unwrap()
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn store(&self) -> &Store {
        self.engine.store()
    }

    pub fn dag(&self, yaml: &str) -> Dag {
        dag(&self.registry, yaml)
    }

    /// The folder of the outputs of `fingerprint`, on disk.
    pub fn object_path(&self, fingerprint: &str) -> PathBuf {
        self.root().join("objects").join(fingerprint)
    }

    /// The committed manifest of `fingerprint` (panics on a miss).
    pub async fn manifest(&self, fingerprint: &str) -> Manifest {
        match self.store().check_cached(fingerprint).await.unwrap() {
            CacheState::Hit(m) => m,
            CacheState::Miss(why) => panic!("{fingerprint} is not committed: {why}"),
        }
    }

    /// The values of dataset output `port` committed under `fingerprint`.
    pub async fn values(&self, fingerprint: &str, port: &str) -> Vec<i64> {
        read_values(self.store(), fingerprint, port).await
    }
}

/// The values of dataset output `port` committed under `fingerprint` in `store` (panics on a miss).
pub async fn read_values(store: &Store, fingerprint: &str, port: &str) -> Vec<i64> {
    let m = match store.check_cached(fingerprint).await.unwrap() {
        CacheState::Hit(m) => m,
        CacheState::Miss(why) => panic!("{fingerprint} is not committed: {why}"),
    };
    let out = m
        .outputs
        .get(port)
        .unwrap_or_else(|| panic!("no output {port}"))
        .clone();
    let ds = Dataset::open(store.clone(), fingerprint, out).unwrap();
    dataset_values(&ds).await.unwrap()
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

/// The planned stage called `name`.
pub fn planned<'a>(plan: &'a [PlannedStage], name: &str) -> &'a PlannedStage {
    plan.iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no stage {name} in the plan"))
}

/// The fingerprint of `name` in `plan`.
pub fn fp(plan: &[PlannedStage], name: &str) -> String {
    planned(plan, name).fingerprint.clone()
}

/// The reasons `name` will run; panics if it is cached.
pub fn reasons(plan: &[PlannedStage], name: &str) -> Vec<String> {
    match &planned(plan, name).state {
        PlanState::Run { reasons } => reasons.clone(),
        PlanState::Cached => panic!("{name} is cached, expected it to run"),
    }
}

/// Whether `name` is cached in `plan`.
pub fn is_cached(plan: &[PlannedStage], name: &str) -> bool {
    matches!(planned(plan, name).state, PlanState::Cached)
}

/// The outcome of `name` in a run.
pub fn outcome<'a>(report: &'a RunReport, name: &str) -> &'a StageOutcome {
    report
        .stages
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no stage {name} in the report"))
}

/// The status of `name` in a run.
pub fn status(report: &RunReport, name: &str) -> StageStatus {
    outcome(report, name).status
}

/// numbers (-3 .. 17, 4-row shards) → square (6-row shards) → sum.
pub const CHAIN: &str = "\
name: chain
stages:
  nums:
    kind: numbers
    with: {count: 20, start: -3, shard_rows: 4}
  squares:
    kind: square
    inputs: {rows: nums}
    with: {shard_rows: 6}
  total:
    kind: sum
    inputs: {rows: squares}
";

/// (-3)² + … + 16² = (1² + 2² + 3²) + (1² + … + 16²) = 14 + 16·17·33/6 = 14 + 1496.
pub const CHAIN_TOTAL: i64 = 1510;
