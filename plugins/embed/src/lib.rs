//! The `embed` stage: one vector per image of an images dataset, from the built-in copy-detection
//! descriptor, Meta's PDQ hash, a ViT from a preset (with a safetensors file or randomly
//! initialised), or the ViT artifact of a training stage. Output: the embeddings dataset (`id`,
//! `embedding`, and `mirrored` when configured).

pub mod borders;
mod config;
pub mod descriptor;
mod embedder;
pub mod pdq;
pub mod pdq_vectors;
pub mod shape;

use std::time::Instant;

use arrow_array::ArrayRef;
use bytes::Bytes;
use dinoflow_engine::{
    ExtraInput, Port, PortType, Resources, Stage, StageContext, StageError, async_trait, semver,
};
use dinoflow_storage::read_url;
use dinoflow_storage::schemas::{embeddings_batch, embeddings_schema, images};
use dinoflow_vision::tch::{self, Device};
use dinoflow_vision::tensor::ImageTransform;
use dinoflow_vision::{DeviceChoice, VisionError, VitModel};
use futures::TryStreamExt;

use crate::descriptor::{DctDescriptor, DctParams};
use crate::pdq_vectors::PdqDescriptor;

pub use config::{EmbedConfig, Features, ModelSpec, VitSpec};
pub use embedder::{Embedded, Embedder, VitEmbedder};

/// The file name of the model inside a ViT artifact (written by pretrain and distill).
pub const MODEL_FILE: &str = "model.safetensors";

/// The `embed` stage kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct Embed;

/// Why the embed stage failed.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The model could not be built, loaded or run.
    #[error(transparent)]
    Vision(#[from] VisionError),
    /// The descriptor refused a row.
    #[error(transparent)]
    Descriptor(#[from] descriptor::DescriptorError),
    /// The PDQ hash refused a row.
    #[error("pdq: {0}")]
    Pdq(#[from] pdq::PdqError),
    /// The weights file could not be read.
    #[error("weights file {path}: {source}")]
    Read {
        /// The configured path.
        path: String,
        /// Why.
        #[source]
        source: dinoflow_storage::StorageError,
    },
    /// The configuration does not fit the model or the inputs.
    #[error("{0}")]
    Config(String),
    /// The input batch is not an images batch.
    #[error("input: {0}")]
    Input(String),
    /// Building an output batch failed.
    #[error("building a batch: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// A worker thread failed.
    #[error("worker: {0}")]
    Worker(String),
}

fn failed(e: impl Into<EmbedError>) -> StageError {
    StageError::failed(e.into())
}

#[async_trait]
impl Stage for Embed {
    type Config = EmbedConfig;

    fn kind(&self) -> &'static str {
        "embed"
    }
    fn version(&self) -> semver::Version {
        // 1.1.0: one task per input shard, outputs under tasks/NNNNN/.
        // 1.2.0: the descriptor trims uniform borders; the `mirrored` column.
        semver::Version::new(1, 2, 0)
    }
    fn shards_by(&self) -> Option<&'static str> {
        Some("images")
    }
    fn merge_metrics(&self, tasks: &[serde_json::Value]) -> serde_json::Value {
        let mut merged = dinoflow_engine::sum_task_metrics(tasks);
        if let (Some(m), Some(dim)) = (merged.as_object_mut(), tasks.first().map(|t| &t["dim"])) {
            m.insert("dim".into(), dim.clone());
        }
        merged
    }
    fn description(&self) -> &'static str {
        "one vector per image: the built-in copy-detection descriptor, the PDQ hash or a ViT (preset + \
         safetensors, or a pretrain/distill artifact)"
    }
    fn inputs(&self) -> Vec<Port> {
        vec![
            Port::new("images", PortType::Dataset("images"), "the images to embed"),
            Port::optional(
                "model",
                PortType::Artifact("vit"),
                "a ViT artifact from pretrain or distill (with `model: input`)",
            ),
        ]
    }
    fn outputs(&self) -> Vec<Port> {
        vec![Port::new(
            "embeddings",
            PortType::Dataset("embeddings"),
            "id and one vector per image",
        )]
    }
    fn check(&self, config: &EmbedConfig) -> Result<(), String> {
        if config.model == ModelSpec::Pdq {
            pdq_descriptor(&config.descriptor).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
    fn resources(&self, config: &EmbedConfig) -> Resources {
        Resources {
            cpus: u32::MAX,
            gpus: u32::from(config.device == DeviceChoice::Cuda && config.model.is_vit()),
            memory_gb: 2.0,
        }
    }

    async fn extra_inputs(&self, config: &EmbedConfig) -> Result<Vec<ExtraInput>, StageError> {
        let ModelSpec::Vit(VitSpec {
            weights: Some(path),
            ..
        }) = &config.model
        else {
            return Ok(Vec::new());
        };
        let bytes = read_weights(path).await?;
        Ok(vec![ExtraInput {
            name: format!("weights ({})", path.rsplit('/').next().unwrap_or(path)),
            digest: blake3::hash(&bytes).to_hex().to_string(),
            summary: format!("{} bytes", bytes.len()),
        }])
    }

    async fn run(&self, config: &EmbedConfig, ctx: &StageContext) -> Result<(), StageError> {
        let started = Instant::now();
        if config.model == ModelSpec::Input && ctx.input("model").is_none() {
            return Err(failed(EmbedError::Config(
                "`model: input` needs the `model` input connected to a pretrain or distill output"
                    .into(),
            )));
        }
        if config.model != ModelSpec::Input && ctx.input("model").is_some() {
            return Err(failed(EmbedError::Config(
                "the `model` input is connected: set `model: input` to use it".into(),
            )));
        }
        let weights = match &config.model {
            ModelSpec::Vit(VitSpec {
                weights: Some(path),
                ..
            }) => Some((read_weights(path).await?, path.clone())),
            ModelSpec::Input => Some((
                ctx.input_artifact_file("model", MODEL_FILE).await?,
                "the `model` input".to_string(),
            )),
            _ => None,
        };
        tch::set_num_threads(ctx.cpus.min(i32::MAX as usize) as i32);
        let cfg = config.clone();
        let cpus = ctx.cpus;
        let mut embedder = tokio::task::spawn_blocking(move || build(&cfg, weights, cpus))
            .await
            .map_err(|e| failed(EmbedError::Worker(e.to_string())))?
            .map_err(failed)?;
        let dim = embedder.dim();
        let input = ctx.input_dataset("images")?;
        let bar = ctx.progress(Some(input.rows()), "images");
        let mirrored = config.writes_mirrored();
        let mut writer = ctx.dataset_writer("embeddings", embeddings_schema(dim as i32, mirrored));
        let mut stream = std::pin::pin!(input.batches(config.batch_size.max(1)));
        let unit = config.normalize;
        while let Some(batch) = stream.try_next().await? {
            let ids: ArrayRef = batch.column_by_name(images::ID).cloned().ok_or_else(|| {
                failed(EmbedError::Input("the images have no `id` column".into()))
            })?;
            let rows = batch.num_rows() as u64;
            let (back, vectors) = tokio::task::spawn_blocking(move || {
                let v = embedder.embed(&batch, unit, mirrored);
                (embedder, v)
            })
            .await
            .map_err(|e| failed(EmbedError::Worker(e.to_string())))?;
            embedder = back;
            let Embedded { vectors, mirrored } = vectors.map_err(failed)?;
            let out = embeddings_batch(ids, vectors, mirrored, dim as i32).map_err(failed)?;
            writer.write(&out).await?;
            bar.inc(rows);
        }
        bar.finish();
        let rows = writer.rows();
        ctx.finish_dataset("embeddings", writer).await?;
        let secs = started.elapsed().as_secs_f64();
        ctx.metric("images", rows);
        ctx.metric("dim", dim as u64);
        ctx.metric("images_per_s", rows as f64 / secs.max(1e-9));
        Ok(())
    }
}

/// A pool of `cpus` threads (at least 1) for the descriptors.
fn pool(cpus: usize) -> Result<rayon::ThreadPool, EmbedError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(cpus.max(1))
        .build()
        .map_err(|e| EmbedError::Worker(e.to_string()))
}

/// The `pdq` model from the `descriptor:` block, of which only `trim_borders` applies to it.
fn pdq_descriptor(params: &DctParams) -> Result<PdqDescriptor, EmbedError> {
    let defaults = DctParams::default();
    let ignored = [
        ("block", params.block != defaults.block),
        ("window", params.window != defaults.window),
        ("weighting", params.weighting != defaults.weighting),
    ];
    if let Some((name, _)) = ignored.iter().find(|(_, set)| *set) {
        return Err(EmbedError::Config(format!(
            "`descriptor.{name}` applies to `model: dct` only; `model: pdq` takes only \
             `descriptor.trim_borders`"
        )));
    }
    Ok(PdqDescriptor {
        trim_borders: params.trim_borders,
    })
}

async fn read_weights(path: &str) -> Result<Bytes, StageError> {
    read_url(path).await.map_err(|source| {
        failed(EmbedError::Read {
            path: path.to_string(),
            source,
        })
    })
}

/// Builds the model named by `config` (weights given as bytes and a name for errors), using at
/// most `cpus` threads for the descriptor.
pub fn build(
    config: &EmbedConfig,
    weights: Option<(Bytes, String)>,
    cpus: usize,
) -> Result<Embedder, EmbedError> {
    let device = || config.device.resolve();
    let model = match (&config.model, weights) {
        (ModelSpec::Dct, _) => {
            return Ok(Embedder::Dct(
                DctDescriptor::new(&config.descriptor)?,
                pool(cpus)?,
            ));
        }
        (ModelSpec::Pdq, _) => {
            let descriptor = pdq_descriptor(&config.descriptor)?;
            return Ok(Embedder::Pdq(descriptor, pool(cpus)?));
        }
        (ModelSpec::Vit(spec), None) => {
            let mut vit = spec.preset.config();
            vit.registers = spec.registers;
            tch::manual_seed(spec.seed);
            VitModel::new(&vit, device()?)?
        }
        (ModelSpec::Vit(spec), Some((bytes, name))) => {
            VitModel::from_safetensors(&bytes, &name, Some(&spec.preset.config()), device()?)?
        }
        (ModelSpec::Input, Some((bytes, name))) => {
            VitModel::from_safetensors(&bytes, &name, None, device()?)?
        }
        (ModelSpec::Input, None) => {
            return Err(EmbedError::Config("`model: input` without a model".into()));
        }
    };
    let mut model = model;
    // On a GPU the model runs in bfloat16; the vectors are converted back to float32.
    if model.vs.device() != Device::Cpu {
        model.vs.bfloat16();
    }
    let vit = model.config();
    let size = config.image_size.unwrap_or(if vit.img_size <= 224 {
        vit.img_size
    } else {
        224
    });
    if size < vit.patch_size || size % vit.patch_size != 0 {
        return Err(EmbedError::Config(format!(
            "image_size {size} must be a positive multiple of the model's patch size {}",
            vit.patch_size
        )));
    }
    if !(config.crop_fraction > 0.0 && config.crop_fraction <= 1.0) {
        return Err(EmbedError::Config(format!(
            "crop_fraction {} must be in (0, 1]",
            config.crop_fraction
        )));
    }
    let transform = ImageTransform {
        size,
        channels: vit.in_chans,
        crop_fraction: config.crop_fraction,
    };
    Ok(Embedder::Vit(Box::new(VitEmbedder {
        model,
        transform,
        features: config.features,
    })))
}
