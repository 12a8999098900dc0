//! The `filter` stage: runs a chain of WebAssembly filter plugins over the images dataset. Each row
//! goes to `kept`, or to `dropped` with the plugin and reason of the first plugin that dropped it.

mod batch;
mod config;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::{ArrayRef, BooleanArray, RecordBatch, StringArray, UInt8Array, UInt32Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use dinoflow_engine::{
    ExtraInput, Port, PortType, Resources, Stage, StageContext, StageError, async_trait, semver,
};
use dinoflow_storage::read_url;
use dinoflow_storage::schemas::images;
use dinoflow_wasm::{FilterHost, FilterInstance, FilterPlugin, Limits, WasmError};
use futures::TryStreamExt;

pub use batch::to_wit_batch;
pub use config::{FilterConfig, PluginSpec};

/// The `filter` stage kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct FilterStage;

/// Why the filter stage failed.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// A plugin failed to load or run.
    #[error(transparent)]
    Plugin(#[from] WasmError),
    /// A plugin file could not be read.
    #[error("plugin file {path}: {source}")]
    Read {
        /// The configured path.
        path: String,
        /// Why.
        #[source]
        source: dinoflow_storage::StorageError,
    },
    /// A parameter value is not a scalar or a list of scalars.
    #[error(
        "plugin {plugin}: parameter `{name}` must be a number, text, true/false or a list of those"
    )]
    BadParam {
        /// The plugin.
        plugin: String,
        /// The parameter.
        name: String,
    },
    /// Building an output batch failed.
    #[error("building a batch: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// A worker thread failed.
    #[error("worker: {0}")]
    Worker(String),
}

fn failed(e: impl Into<FilterError>) -> StageError {
    StageError::failed(e.into())
}

/// The schema of the `dropped` output.
pub fn dropped_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("plugin", DataType::Utf8, false),
        Field::new("code", DataType::UInt8, false),
        Field::new("reason", DataType::Utf8, false),
    ]))
}

fn file_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_string()
}

#[async_trait]
impl Stage for FilterStage {
    type Config = FilterConfig;

    fn kind(&self) -> &'static str {
        "filter"
    }
    fn version(&self) -> semver::Version {
        // 1.1.0: one task per input shard, outputs under tasks/NNNNN/.
        semver::Version::new(1, 1, 0)
    }
    fn shards_by(&self) -> Option<&'static str> {
        Some("images")
    }
    fn description(&self) -> &'static str {
        "runs a chain of WebAssembly filter plugins; rows go to `kept` or to `dropped` with the reason"
    }
    fn inputs(&self) -> Vec<Port> {
        vec![Port::new(
            "images",
            PortType::Dataset("images"),
            "the images to filter",
        )]
    }
    fn outputs(&self) -> Vec<Port> {
        vec![
            Port::new(
                "kept",
                PortType::Dataset("images"),
                "rows every plugin kept",
            ),
            Port::new(
                "dropped",
                PortType::Dataset("dropped"),
                "id, source, plugin, code and reason of each dropped row",
            ),
        ]
    }
    fn resources(&self, _config: &FilterConfig) -> Resources {
        Resources {
            cpus: u32::MAX,
            gpus: 0,
            memory_gb: 1.0,
        }
    }

    async fn extra_inputs(&self, config: &FilterConfig) -> Result<Vec<ExtraInput>, StageError> {
        let mut out = Vec::new();
        for (i, p) in config.plugins.iter().enumerate() {
            let bytes = read_url(&p.wasm).await.map_err(|source| {
                failed(FilterError::Read {
                    path: p.wasm.clone(),
                    source,
                })
            })?;
            out.push(ExtraInput {
                name: format!("plugin {i} ({})", file_name(&p.wasm)),
                digest: blake3::hash(&bytes).to_hex().to_string(),
                summary: format!("{} bytes", bytes.len()),
            });
        }
        Ok(out)
    }

    async fn run(&self, config: &FilterConfig, ctx: &StageContext) -> Result<(), StageError> {
        let started = Instant::now();
        let limits = Limits {
            timeout_ms: config.timeout_ms,
            memory_mb: config.memory_mb,
        };
        let mut plugins = Vec::new();
        for spec in &config.plugins {
            let bytes = read_url(&spec.wasm).await.map_err(|source| {
                failed(FilterError::Read {
                    path: spec.wasm.clone(),
                    source,
                })
            })?;
            let params = spec.text_params(&file_name(&spec.wasm)).map_err(failed)?;
            plugins.push(PluginFile {
                name: file_name(&spec.wasm),
                bytes,
                params,
            });
        }
        let workers = ctx.cpus.max(1);
        let loaded = tokio::task::spawn_blocking(move || load_all(plugins, workers, limits))
            .await
            .map_err(|e| failed(FilterError::Worker(e.to_string())))?
            .map_err(failed)?;
        let Loaded {
            plugins,
            instances,
            _host,
        } = loaded;
        let plugins = Arc::new(plugins);
        let instances = Arc::new(instances);
        let labels: Arc<Vec<String>> = Arc::new(
            plugins
                .iter()
                .map(|p| format!("{}@{}", p.info().info.name, p.info().info.version))
                .collect(),
        );

        let input = ctx.input_dataset("images")?;
        let bar = ctx.progress(Some(input.rows()), "rows");
        let mut kept = ctx.dataset_writer("kept", input.schema());
        let mut dropped = ctx.dataset_writer("dropped", dropped_schema());
        let mut per_plugin = vec![0u64; labels.len()];
        let mut stream = std::pin::pin!(input.batches(config.batch_rows.max(1)));
        let mut index = 0u64;
        while let Some(batch) = stream.try_next().await? {
            let (p, inst, l) = (
                Arc::clone(&plugins),
                Arc::clone(&instances),
                Arc::clone(&labels),
            );
            let b = batch.clone();
            let verdicts = tokio::task::spawn_blocking(move || judge(&b, &p, &inst, index))
                .await
                .map_err(|e| failed(FilterError::Worker(e.to_string())))?
                .map_err(failed)?;
            let keep: BooleanArray = verdicts.iter().map(|v| Some(v.is_none())).collect();
            kept.write(&arrow_select::filter::filter_record_batch(&batch, &keep).map_err(failed)?)
                .await?;
            for (p, _) in verdicts.iter().flatten() {
                per_plugin[*p] += 1;
            }
            let out = dropped_batch(&batch, &verdicts, &l, &plugins).map_err(failed)?;
            if out.num_rows() > 0 {
                dropped.write(&out).await?;
            }
            bar.inc(batch.num_rows() as u64);
            index += 1;
        }
        bar.finish();
        let (rows_in, rows_kept) = (input.rows(), kept.rows());
        ctx.finish_dataset("kept", kept).await?;
        ctx.finish_dataset("dropped", dropped).await?;
        let secs = started.elapsed().as_secs_f64();
        ctx.metric("rows", rows_in);
        ctx.metric("kept", rows_kept);
        for (label, n) in labels.iter().zip(&per_plugin) {
            ctx.metric(&format!("dropped by {label}"), *n);
        }
        ctx.metric("rows_per_s", rows_in as f64 / secs.max(1e-9));
        Ok(())
    }
}

/// A row's fate: `None` when kept, else (index of the plugin that dropped it, its code).
type Verdict = Option<(usize, u8)>;

/// A plugin file to load: its name for errors, its bytes and its parameters as text.
struct PluginFile {
    name: String,
    bytes: Bytes,
    params: Vec<(String, String)>,
}

/// The loaded plugins and one instance chain per worker.
struct Loaded {
    plugins: Vec<FilterPlugin>,
    instances: Vec<Mutex<Vec<FilterInstance>>>,
    _host: FilterHost,
}

fn load_all(specs: Vec<PluginFile>, workers: usize, limits: Limits) -> Result<Loaded, FilterError> {
    let host = FilterHost::new(&FilterHost::default_cache_dir())?;
    let mut plugins = Vec::new();
    let mut params = Vec::new();
    for spec in specs {
        plugins.push(host.load(&spec.name, &spec.bytes)?);
        params.push(spec.params);
    }
    let mut instances = Vec::with_capacity(workers);
    for _ in 0..workers {
        let chain = plugins
            .iter()
            .zip(&params)
            .map(|(p, params)| p.instantiate(params, limits))
            .collect::<Result<Vec<_>, _>>()?;
        instances.push(Mutex::new(chain));
    }
    Ok(Loaded {
        plugins,
        instances,
        _host: host,
    })
}

/// For each row: `None` when kept, else (plugin index, code) of the first plugin that dropped it.
/// The batch is split across the workers; each worker runs its own instance chain.
fn judge(
    batch: &RecordBatch,
    plugins: &[FilterPlugin],
    instances: &[Mutex<Vec<FilterInstance>>],
    index: u64,
) -> Result<Vec<Verdict>, FilterError> {
    let n = batch.num_rows();
    let chunk = n.div_ceil(instances.len()).max(1);
    let results: Vec<Result<Vec<Verdict>, FilterError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .zip(instances)
            .map(|(start, slot)| {
                let part = batch.slice(start, chunk.min(n - start));
                s.spawn(move || {
                    let mut chain = slot
                        .lock()
                        .map_err(|_| FilterError::Worker("poisoned".into()))?;
                    run_chain(&part, plugins, &mut chain, index)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(FilterError::Worker("worker panicked".into())))
            })
            .collect()
    });
    let mut out = Vec::with_capacity(n);
    for r in results {
        out.extend(r?);
    }
    Ok(out)
}

fn run_chain(
    part: &RecordBatch,
    plugins: &[FilterPlugin],
    chain: &mut [FilterInstance],
    index: u64,
) -> Result<Vec<Verdict>, FilterError> {
    let n = part.num_rows();
    let mut verdicts = vec![None; n];
    let mut alive: Vec<u32> = (0..n as u32).collect();
    for (p, (plugin, inst)) in plugins.iter().zip(chain.iter_mut()).enumerate() {
        if alive.is_empty() {
            break;
        }
        let sub = if alive.len() == n {
            part.clone()
        } else {
            arrow_select::take::take_record_batch(part, &UInt32Array::from(alive.clone()))?
        };
        let codes = inst.filter(&to_wit_batch(&sub, plugin.info().info.reads), index)?;
        alive = alive
            .into_iter()
            .zip(codes)
            .filter_map(|(row, code)| {
                if code == 0 {
                    Some(row)
                } else {
                    verdicts[row as usize] = Some((p, code));
                    None
                }
            })
            .collect();
    }
    Ok(verdicts)
}

fn dropped_batch(
    batch: &RecordBatch,
    verdicts: &[Option<(usize, u8)>],
    labels: &[String],
    plugins: &[FilterPlugin],
) -> Result<RecordBatch, FilterError> {
    let ids = batch
        .column_by_name(images::ID)
        .map(|c| c.as_string::<i32>().clone());
    let sources = batch
        .column_by_name(images::SOURCE)
        .map(|c| c.as_string::<i32>().clone());
    let (Some(ids), Some(sources)) = (ids, sources) else {
        return Err(FilterError::Worker("input is not an images dataset".into()));
    };
    let rows: Vec<(usize, usize, u8)> = verdicts
        .iter()
        .enumerate()
        .filter_map(|(row, v)| v.map(|(p, code)| (row, p, code)))
        .collect();
    let reason = |p: usize, code: u8| {
        plugins[p]
            .info()
            .reason(code)
            .unwrap_or("undeclared reason")
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|&(r, _, _)| ids.value(r)),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|&(r, _, _)| sources.value(r)),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|&(_, p, _)| labels[p].as_str()),
        )),
        Arc::new(UInt8Array::from_iter_values(
            rows.iter().map(|&(_, _, c)| c),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|&(_, p, c)| reason(p, c)),
        )),
    ];
    Ok(RecordBatch::try_new(dropped_schema(), columns)?)
}
