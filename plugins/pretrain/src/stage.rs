//! The `pretrain` stage: DINOv2 self-supervised training of a ViT on an images dataset, with
//! checkpoints in the store and resumption after a crash.
//!
//! The images are loaded once (resized to the global crop size, or to 8/7 of it above 64 px) and
//! kept on the CPU; every iteration draws its images, crops, masks and drop-path from
//! `(seed, iteration)` alone, so a run resumed from a checkpoint continues exactly as an
//! uninterrupted one. Checkpoints go to `checkpoints/<fingerprint>/step-NNNNNNNN.safetensors` in
//! the store (the newest is kept) and are removed once the outputs are committed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use dinoflow_engine::{
    CHECKPOINTS, Port, PortType, ProgressBar, Resources, Stage, StageContext, StageError,
    async_trait, semver,
};
use dinoflow_storage::{Dataset, OutputManifest, Store};
use dinoflow_vision::augment::multi_crop;
use dinoflow_vision::tch::{self, Device, Kind, Tensor};
use dinoflow_vision::tensor::{ImageTransform, images_to_tensor};
use dinoflow_vision::weights::{read_safetensors, safetensors_bytes};
use dinoflow_vision::{CONFIG_METADATA_KEY, DeviceChoice, VitConfig};
use futures::TryStreamExt;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::PretrainError;
use crate::config::PretrainConfig;
use crate::learner::{Batch, FrozenTeacher, Learner, StepLosses, StepValues};
use crate::masking::batch_masks;

/// The trained backbone (the EMA's: pretraining's teacher, distillation's student EMA; timm key
/// names, config in the metadata): what `embed` and `eval` read.
pub const MODEL_FILE: &str = "model/model.safetensors";
/// The student and its EMA with their heads (`student.*`, `ema.*`), to continue or distil from.
pub const TRAINING_FILE: &str = "model/training.safetensors";
/// The metadata key of [`TRAINING_FILE`]: JSON with the backbone (`vit`) and the objective.
pub const TRAINING_METADATA_KEY: &str = "dinoflow.training";

/// The `pretrain` stage.
pub struct Pretrain;

/// One row of the `metrics` output: an iteration's losses, health figures and schedule values
/// (no timings, so that the output is the same whenever the computation is: throughput goes to
/// the run's metrics).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MetricRow {
    step: u64,
    total: f64,
    dino_local: f64,
    dino_global: f64,
    koleo: f64,
    ibot: f64,
    teacher_entropy: f64,
    feature_std: f64,
    lr: f64,
    weight_decay: f64,
    momentum: f64,
    teacher_temp: f64,
}

impl MetricRow {
    /// The values of [`METRIC_COLUMNS`], in that order.
    fn values(&self) -> [f64; METRIC_COLUMNS.len()] {
        [
            self.total,
            self.dino_local,
            self.dino_global,
            self.koleo,
            self.ibot,
            self.teacher_entropy,
            self.feature_std,
            self.lr,
            self.weight_decay,
            self.momentum,
            self.teacher_temp,
        ]
    }

    fn new(step: usize, l: &StepLosses, v: &StepValues) -> Self {
        Self {
            step: step as u64,
            total: l.total,
            dino_local: l.dino_local,
            dino_global: l.dino_global,
            koleo: l.koleo,
            ibot: l.ibot,
            teacher_entropy: l.teacher_entropy,
            feature_std: l.feature_std,
            lr: v.lr,
            weight_decay: v.weight_decay,
            momentum: v.momentum,
            teacher_temp: v.teacher_temp,
        }
    }
}

/// The float columns of the `metrics` output, in the order of [`MetricRow::values`].
const METRIC_COLUMNS: [&str; 11] = [
    "total",
    "dino_local",
    "dino_global",
    "koleo",
    "ibot",
    "teacher_entropy",
    "feature_std",
    "lr",
    "weight_decay",
    "momentum",
    "teacher_temp",
];

fn metrics_schema() -> SchemaRef {
    let mut fields = vec![Field::new("step", DataType::UInt64, false)];
    fields.extend(
        METRIC_COLUMNS
            .iter()
            .map(|c| Field::new(*c, DataType::Float64, false)),
    );
    Arc::new(Schema::new(fields))
}

fn metrics_batch(rows: &[MetricRow]) -> Result<RecordBatch, PretrainError> {
    let values: Vec<[f64; METRIC_COLUMNS.len()]> = rows.iter().map(MetricRow::values).collect();
    let mut columns: Vec<ArrayRef> = vec![Arc::new(UInt64Array::from_iter_values(
        rows.iter().map(|r| r.step),
    ))];
    for i in 0..METRIC_COLUMNS.len() {
        columns.push(Arc::new(Float64Array::from_iter_values(
            values.iter().map(|v| v[i]),
        )));
    }
    RecordBatch::try_new(metrics_schema(), columns).map_err(|e| PretrainError::Shape(e.to_string()))
}

pub(crate) fn failed(e: PretrainError) -> StageError {
    StageError::failed(e)
}

pub(crate) fn check(config: &PretrainConfig) -> Result<(), PretrainError> {
    let bad = |m: String| Err(PretrainError::Config(m));
    if config.steps == 0 {
        return bad("`steps` must be at least 1".into());
    }
    if config.batch_size < 2 {
        return bad(format!(
            "`batch_size` is {}; it must be at least 2 (KoLeo needs two images per crop)",
            config.batch_size
        ));
    }
    config
        .vit()
        .validate()
        .map_err(|e| PretrainError::Config(format!("the backbone: {e}")))?;
    if config.checkpoint_every == 0 {
        return bad("`checkpoint_every` must be at least 1".into());
    }
    let crops = config.crops();
    crops
        .validate()
        .map_err(|e| PretrainError::Config(format!("crops: {e}")))?;
    let patch = config.vit().patch_size as u32;
    for (name, size) in [
        ("global", crops.global[0].size),
        ("local", crops.local.size),
    ] {
        if size % patch != 0 {
            return bad(format!(
                "{name} crops of {size} px are not a multiple of the patch size {patch}"
            ));
        }
    }
    Ok(())
}

#[async_trait]
impl Stage for Pretrain {
    type Config = PretrainConfig;

    fn kind(&self) -> &'static str {
        "pretrain"
    }
    fn version(&self) -> semver::Version {
        semver::Version::new(1, 3, 0)
    }
    fn description(&self) -> &'static str {
        "DINOv2 self-supervised training (DINO + iBOT + KoLeo, multi-crop, EMA teacher) of a ViT"
    }
    fn inputs(&self) -> Vec<Port> {
        vec![Port::new(
            "images",
            PortType::Dataset("images"),
            "the training images (labels unused)",
        )]
    }
    fn outputs(&self) -> Vec<Port> {
        training_outputs(
            "model.safetensors (the teacher's backbone, timm names) and training.safetensors \
             (student and teacher with heads)",
        )
    }
    fn check(&self, config: &PretrainConfig) -> Result<(), String> {
        check(config).map_err(|e| e.to_string())
    }
    fn resources(&self, config: &PretrainConfig) -> Resources {
        Resources {
            cpus: u32::MAX,
            gpus: u32::from(config.device == DeviceChoice::Cuda),
            memory_gb: 4.0,
        }
    }

    async fn run(&self, config: &PretrainConfig, ctx: &StageContext) -> Result<(), StageError> {
        run_training(config, ctx, None).await
    }
}

/// Trains (pretraining, or distillation when `teacher` is given), resuming from the newest
/// checkpoint of this fingerprint, and writes the `model` and `metrics` outputs.
pub(crate) async fn run_training(
    config: &PretrainConfig,
    ctx: &StageContext,
    teacher: Option<FrozenTeacher>,
) -> Result<(), StageError> {
    check(config).map_err(failed)?;
    let device = config
        .device
        .resolve()
        .map_err(|e| failed(PretrainError::Config(e.to_string())))?;
    tch::set_num_threads(ctx.cpus.min(i32::MAX as usize) as i32);
    let images = ctx.input_dataset("images")?;
    if images.rows() < config.batch_size as u64 {
        return Err(failed(PretrainError::Config(format!(
            "the images input has {} rows, fewer than batch_size {}",
            images.rows(),
            config.batch_size
        ))));
    }
    let prefix = format!("{CHECKPOINTS}/{}/", ctx.fingerprint);
    let resume = latest_checkpoint(&ctx.store, &prefix).await?;
    let job = Job {
        config: config.clone(),
        teacher,
        images,
        device,
        store: ctx.store.clone(),
        prefix: prefix.clone(),
        resume,
        bar: ctx.progress(Some(config.steps as u64), "steps"),
        handle: tokio::runtime::Handle::current(),
    };
    let out = tokio::task::spawn_blocking(move || train(job))
        .await
        .map_err(|e| failed(PretrainError::Config(format!("training thread: {e}"))))?
        .map_err(failed)?;

    let mut entries = Vec::new();
    for (path, bytes) in [(MODEL_FILE, out.model), (TRAINING_FILE, out.training)] {
        entries.push(
            ctx.store
                .put_output_file(&ctx.fingerprint, path, Bytes::from(bytes), None)
                .await?,
        );
    }
    ctx.set_output("model", OutputManifest::artifact(entries));
    let mut writer = ctx.dataset_writer("metrics", metrics_schema());
    writer
        .write(&metrics_batch(&out.metrics).map_err(failed)?)
        .await?;
    ctx.finish_dataset("metrics", writer).await?;
    if let (Some(first), Some(last)) = (out.metrics.first(), out.metrics.last()) {
        ctx.metric("steps", config.steps as u64);
        ctx.metric("loss_first", first.total);
        ctx.metric("loss_last", last.total);
        ctx.metric("feature_std_last", last.feature_std);
        ctx.metric("images_per_s", out.images_per_s);
    }
    if let Some(step) = out.resumed_from {
        ctx.metric("resumed_from_step", step as u64);
    }
    ctx.store.delete_prefix(&prefix).await?;
    Ok(())
}

/// The outputs of a training stage; `model_doc` says what its model artifact holds.
pub(crate) fn training_outputs(model_doc: &'static str) -> Vec<Port> {
    vec![
        Port::new("model", PortType::Artifact("vit"), model_doc),
        Port::new(
            "metrics",
            PortType::Dataset("metrics"),
            "one row per iteration: losses, teacher entropy, feature std, schedules, images/s",
        ),
    ]
}

/// Side of the stored copies the crops are cut from.
fn base_size(config: &PretrainConfig) -> i64 {
    let global = i64::from(config.crops().global[0].size);
    if global <= 64 { global } else { global * 8 / 7 }
}

/// The images as one 8-bit `(N, C, S, S)` CPU tensor at [`base_size`]. Called on the training
/// thread: libtorch work started from a second thread gets its own OpenMP pool, and with more
/// pooled threads than cores libgomp stops spinning between parallel regions, which made every
/// iteration about 10 % slower.
async fn load_images(images: &Dataset, config: &PretrainConfig) -> Result<Tensor, PretrainError> {
    let transform = ImageTransform {
        size: base_size(config),
        channels: config.vit().in_chans,
        crop_fraction: 1.0,
    };
    let mut stream = std::pin::pin!(images.batches(1024));
    let mut parts = Vec::new();
    while let Some(batch) = stream
        .try_next()
        .await
        .map_err(|e| PretrainError::Config(format!("reading the images input: {e}")))?
    {
        let t = images_to_tensor(&batch, &transform, Device::Cpu)
            .map_err(|e| PretrainError::Config(e.to_string()))?;
        parts.push((t * 255.0).round().to_kind(Kind::Uint8));
    }
    Ok(Tensor::cat(&parts, 0))
}

/// The newest checkpoint under `prefix`: its step and bytes.
async fn latest_checkpoint(
    store: &Store,
    prefix: &str,
) -> Result<Option<(usize, Bytes)>, StageError> {
    let newest = store
        .list(prefix)
        .await?
        .into_iter()
        .filter_map(|l| {
            let name = l.key.rsplit('/').next()?.to_string();
            let step = name
                .strip_prefix("step-")?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()?;
            Some((step, l.key))
        })
        .max();
    match newest {
        Some((step, key)) => Ok(Some((step, store.get(&key).await?))),
        None => Ok(None),
    }
}

struct Job {
    config: PretrainConfig,
    teacher: Option<FrozenTeacher>,
    images: Dataset,
    device: Device,
    store: Store,
    prefix: String,
    resume: Option<(usize, Bytes)>,
    bar: Box<dyn ProgressBar>,
    handle: tokio::runtime::Handle,
}

struct Trained {
    model: Vec<u8>,
    training: Vec<u8>,
    metrics: Vec<MetricRow>,
    images_per_s: f64,
    resumed_from: Option<usize>,
}

/// Mixes the run seed with an iteration and a purpose, so each draw has its own stream.
fn seed_for(seed: u64, step: usize, purpose: u64) -> u64 {
    let mut x = seed
        ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ purpose.wrapping_mul(0xD1B5_4A32_D192_ED03);
    x ^= x >> 31;
    x.wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

/// The image indices of iteration `step`: consecutive slices of one shuffled order per epoch.
fn batch_indices(n: usize, batch: usize, seed: u64, step: usize) -> Vec<i64> {
    let order = |epoch: usize| {
        let mut o: Vec<i64> = (0..n as i64).collect();
        o.shuffle(&mut ChaCha8Rng::seed_from_u64(seed_for(seed, epoch, 1)));
        o
    };
    let first = step * batch;
    let mut out = Vec::with_capacity(batch);
    let mut epoch = first / n;
    let mut current = order(epoch);
    for i in first..first + batch {
        if i / n != epoch {
            epoch = i / n;
            current = order(epoch);
        }
        out.push(current[i % n]);
    }
    out
}

fn train(job: Job) -> Result<Trained, PretrainError> {
    let config = &job.config;
    let vit = VitConfig {
        // A distilled student is never masked.
        mask_token: job.teacher.is_none(),
        ..config.vit()
    };
    let crops = config.crops();
    let schedules = config.schedules();
    tch::manual_seed(config.seed as i64);
    let mut learner = match &job.teacher {
        None => Learner::new(&vit, &config.objective, job.device)?,
        Some(teacher) => Learner::distill(&vit, &config.objective, teacher, job.device)?,
    };
    learner.autocast = config.precision.resolve(job.device);
    let mut metrics: Vec<MetricRow> = Vec::new();
    let mut start = 0;
    if let Some((step, bytes)) = &job.resume {
        let file = read_safetensors(bytes, "checkpoint")
            .map_err(|e| PretrainError::Config(e.to_string()))?;
        let adam_step = file
            .metadata
            .get("adam_step")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        learner.restore(&file.tensors, adam_step)?;
        metrics = file
            .metadata
            .get("metrics")
            .and_then(|m| serde_json::from_str(m).ok())
            .unwrap_or_default();
        start = *step;
        tracing::info!(step, "resuming from checkpoint");
        job.bar.inc(start as u64);
    }
    let data = job.handle.block_on(load_images(&job.images, config))?;
    let n = data.size()[0] as usize;
    let b = config.batch_size;
    let grid = (crops.global[0].size as i64 / vit.patch_size) as usize;
    // Throughput is timed from the end of the first iteration when more follow: the first pays
    // for allocations and kernel selection.
    let mut timed_from = (start, Instant::now());
    for step in start..config.steps {
        // Every draw of this iteration (libtorch's generator included) depends on (seed, step)
        // alone, so a resumed run repeats it exactly.
        tch::manual_seed(seed_for(config.seed, step, 4) as i64);
        let idx = Tensor::from_slice(&batch_indices(n, b, config.seed, step));
        let images = data
            .index_select(0, &idx)
            .to_device(job.device)
            .to_kind(Kind::Float)
            / 255.0;
        let crop = multi_crop(&images, &crops, seed_for(config.seed, step, 2))
            .map_err(|e| PretrainError::Config(e.to_string()))?;
        let local = (crops.n_local > 0).then_some(crop.local);
        let batch = if job.teacher.is_some() {
            let patches = (grid * grid) as i64;
            Batch::unmasked(
                crop.global,
                local,
                crops.n_local as usize,
                patches,
                job.device,
            )
        } else {
            let mut rng = ChaCha8Rng::seed_from_u64(seed_for(config.seed, step, 3));
            let masks = batch_masks(2 * b, grid, 0.5, (0.1, 0.5), &mut rng)?;
            Batch::new(
                crop.global,
                local,
                crops.n_local as usize,
                &masks,
                job.device,
            )?
        };
        tch::manual_seed(seed_for(config.seed, step, 4) as i64);
        let values = StepValues {
            lr: schedules.lr.at(step),
            last_layer_lr: schedules.last_layer_lr.at(step),
            weight_decay: schedules.weight_decay.at(step),
            momentum: schedules.momentum.at(step),
            teacher_temp: schedules.teacher_temp.at(step),
        };
        let losses = learner.step(&batch, &values).map_err(|e| match e {
            PretrainError::NonFinite(m) => PretrainError::NonFinite(format!(
                "at iteration {step}: {m}; lower `base_lr` or raise `warmup_steps`"
            )),
            other => other,
        })?;
        metrics.push(MetricRow::new(step, &losses, &values));
        job.bar.inc(1);
        let done = step + 1;
        if step == start && done < config.steps {
            timed_from = (done, Instant::now());
        }
        if done % config.checkpoint_every == 0 && done < config.steps {
            save_checkpoint(&job, &learner, done, &metrics)?;
        }
    }
    job.bar.finish();
    let timed = config.steps - timed_from.0;
    let images_per_s = (timed * b) as f64 / timed_from.1.elapsed().as_secs_f64().max(1e-9);
    let vit_json = serde_json::to_string(&vit).map_err(|e| PretrainError::Config(e.to_string()))?;
    let model = safetensors_bytes(
        &learner.model_backbone(),
        HashMap::from([(CONFIG_METADATA_KEY.to_string(), vit_json)]),
    )
    .map_err(|e| PretrainError::Config(e.to_string()))?;
    let weights = learner
        .state()
        .into_iter()
        .filter(|(k, _)| k.starts_with("student.") || k.starts_with("ema."))
        .collect();
    // One metadata entry: a file with several would list them in hash-map order, so equal
    // weights could give different bytes.
    let about = serde_json::json!({ "vit": vit, "objective": config.objective }).to_string();
    let training = safetensors_bytes(
        &weights,
        HashMap::from([(TRAINING_METADATA_KEY.to_string(), about)]),
    )
    .map_err(|e| PretrainError::Config(e.to_string()))?;
    Ok(Trained {
        model,
        training,
        metrics,
        images_per_s,
        resumed_from: job.resume.as_ref().map(|(s, _)| *s),
    })
}

fn save_checkpoint(
    job: &Job,
    learner: &Learner,
    step: usize,
    metrics: &[MetricRow],
) -> Result<(), PretrainError> {
    let metadata = HashMap::from([
        ("step".to_string(), step.to_string()),
        ("adam_step".to_string(), learner.optimizer.step.to_string()),
        (
            "metrics".to_string(),
            serde_json::to_string(metrics).map_err(|e| PretrainError::Config(e.to_string()))?,
        ),
    ]);
    let bytes = safetensors_bytes(&learner.state(), metadata)
        .map_err(|e| PretrainError::Config(e.to_string()))?;
    let key = format!("{}step-{step:08}.safetensors", job.prefix);
    job.handle
        .block_on(async {
            job.store.put(&key, Bytes::from(bytes)).await?;
            for old in job.store.list(&job.prefix).await? {
                if old.key != key {
                    job.store.delete(&old.key).await?;
                }
            }
            Ok::<(), dinoflow_storage::StorageError>(())
        })
        .map_err(|e| PretrainError::Config(format!("writing checkpoint {key}: {e}")))?;
    tracing::info!(step, key, "checkpoint written");
    Ok(())
}
