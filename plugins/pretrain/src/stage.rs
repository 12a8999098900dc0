//! The `pretrain` stage: DINOv2 self-supervised training of a ViT on an images dataset, with
//! checkpoints in the store and resumption after a crash.
//!
//! The images are loaded once (resized to the global crop size, or to 8/7 of it above 64 px; again
//! at a resolution phase that needs another size, [`crate::phases`]) and kept on the CPU; every
//! iteration draws its images, crops, masks and drop-path from `(seed, iteration)` alone, so a
//! run resumed from a checkpoint continues exactly as an uninterrupted one. Checkpoints go to `checkpoints/<fingerprint>/step-NNNNNNNN.safetensors` in
//! the store (the newest is kept) and are removed once the outputs are committed. With
//! `monitor:`, the EMA network's k-NN accuracy on a labelled subset is measured as it trains
//! ([`crate::monitor`]).

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use dinoflow_engine::{
    CHECKPOINTS, Port, PortType, ProgressBar, Resources, Stage, StageContext, StageError,
    async_trait, semver,
};
use dinoflow_storage::{Dataset, OutputManifest};
use dinoflow_vision::augment::multi_crop;
use dinoflow_vision::tch::{self, Device, Kind, Tensor};
use dinoflow_vision::weights::safetensors_bytes;
use dinoflow_vision::{CONFIG_METADATA_KEY, DeviceChoice, VitConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::PretrainError;
use crate::checkpoint::{Checkpoint, CheckpointSink, latest_checkpoint};
use crate::collapse::CollapseGuard;
use crate::config::PretrainConfig;
use crate::data::{StoredImages, batch_indices, seed_for};
use crate::learner::{Batch, FrozenTeacher, Learner, StepValues};
use crate::masking::batch_masks;
use crate::metrics::{MetricRow, metrics_batch, metrics_schema};
use crate::monitor::{self, Monitor, MonitorConfig, MonitorRow, monitor_batch, monitor_schema};
use crate::phases::check_phases;

/// The trained backbone (the EMA's: pretraining's teacher, distillation's student EMA; timm key
/// names, config in the metadata): what `embed` and `eval` read.
pub const MODEL_FILE: &str = "model/model.safetensors";
/// The student and its EMA with their heads (`student.*`, `ema.*`), to continue or distil from.
pub const TRAINING_FILE: &str = "model/training.safetensors";
/// The metadata key of [`TRAINING_FILE`]: JSON with the backbone (`vit`) and the objective.
pub const TRAINING_METADATA_KEY: &str = "dinoflow.training";

/// The `pretrain` stage.
pub struct Pretrain;

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
    if let Some(m) = &config.monitor {
        m.check("monitor")?;
    }
    if config.collapse_patience == Some(0) {
        return bad(
            "`collapse_patience` is 0; it must be at least 1 iteration (leave it out for a \
             quarter of `steps`)"
                .into(),
        );
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
    check_phases(&config.phases, &crops, patch, config.steps)
}

#[async_trait]
impl Stage for Pretrain {
    type Config = PretrainConfig;

    fn kind(&self) -> &'static str {
        "pretrain"
    }
    fn version(&self) -> semver::Version {
        semver::Version::new(1, 4, 0)
    }
    fn description(&self) -> &'static str {
        "DINOv2 self-supervised training (DINO + iBOT + KoLeo, multi-crop, EMA teacher) of a ViT"
    }
    fn inputs(&self) -> Vec<Port> {
        let mut ports = vec![Port::new(
            "images",
            PortType::Dataset("images"),
            "the training images (labels unused)",
        )];
        ports.extend(monitor::input_ports());
        ports
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

/// Where a training stage's `monitor` settings are written: `monitor` (pretrain) or
/// `student.monitor` (distill, `distilling`).
pub(crate) fn monitor_field(distilling: bool) -> &'static str {
    if distilling {
        "student.monitor"
    } else {
        "monitor"
    }
}

/// Trains (pretraining, or distillation when `teacher` is given), resuming from the newest
/// checkpoint of this fingerprint, and writes the `model`, `metrics` and `monitor` outputs.
pub(crate) async fn run_training(
    config: &PretrainConfig,
    ctx: &StageContext,
    teacher: Option<FrozenTeacher>,
) -> Result<(), StageError> {
    check(config).map_err(failed)?;
    let field = monitor_field(teacher.is_some());
    let monitor_inputs = monitor::inputs(config.monitor.as_ref(), field, ctx).map_err(failed)?;
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
        checkpoints: CheckpointSink {
            store: ctx.store.clone(),
            prefix: prefix.clone(),
            handle: tokio::runtime::Handle::current(),
        },
        resume,
        monitor: config.monitor.clone().zip(monitor_inputs),
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
    let mut writer = ctx.dataset_writer(monitor::OUTPUT_PORT, monitor_schema());
    writer
        .write(&monitor_batch(&out.monitor).map_err(failed)?)
        .await?;
    ctx.finish_dataset(monitor::OUTPUT_PORT, writer).await?;
    if let Some(last) = out.monitor.last() {
        ctx.metric("monitor_knn_last", last.knn_top1);
        ctx.metric("monitor_seconds", out.monitor_seconds);
    }
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
    ctx.metric("collapse_warnings", out.guard.episodes() as u64);
    if let Some(first) = out.guard.first() {
        ctx.metric("collapse_first_kind", first.kind.name());
        ctx.metric("collapse_first_iteration", first.at as u64);
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
            "one row per iteration: losses, teacher entropy, feature std, schedules, global crop size",
        ),
        monitor::output_port(),
    ]
}

struct Job {
    config: PretrainConfig,
    teacher: Option<FrozenTeacher>,
    images: Dataset,
    device: Device,
    checkpoints: CheckpointSink,
    resume: Option<(usize, Bytes)>,
    /// The monitor's settings and its train and test datasets.
    monitor: Option<(MonitorConfig, (Dataset, Dataset))>,
    bar: Box<dyn ProgressBar>,
    handle: tokio::runtime::Handle,
}

struct Trained {
    model: Vec<u8>,
    training: Vec<u8>,
    metrics: Vec<MetricRow>,
    images_per_s: f64,
    resumed_from: Option<usize>,
    /// The collapse guard after the last iteration (episodes before a resume included).
    guard: CollapseGuard,
    /// The monitor's rows (those before a resume included).
    monitor: Vec<MonitorRow>,
    /// Time the monitor took in this process.
    monitor_seconds: f64,
}

fn train(job: Job) -> Result<Trained, PretrainError> {
    let config = &job.config;
    let vit = VitConfig {
        // A distilled student is never masked.
        mask_token: job.teacher.is_none(),
        ..config.vit()
    };
    let plan = config.phase_plan();
    let schedules = config.schedules();
    tch::manual_seed(config.seed as i64);
    let mut learner = match &job.teacher {
        None => Learner::new(&vit, &config.objective, job.device)?,
        Some(teacher) => Learner::distill(&vit, &config.objective, teacher, job.device)?,
    };
    learner.autocast = config.precision.resolve(job.device);
    let mut guard = CollapseGuard::for_config(config)?;
    let mut metrics: Vec<MetricRow> = Vec::new();
    let mut monitor_rows: Vec<MonitorRow> = Vec::new();
    let mut start = 0;
    if let Some((step, bytes)) = &job.resume {
        let checkpoint = Checkpoint::read(bytes)?;
        learner.restore(&checkpoint.tensors, checkpoint.adam_step)?;
        metrics = checkpoint.metrics;
        monitor_rows = checkpoint.monitor;
        start = *step;
        // The guard sees the iterations before the checkpoint again, so that its episodes and
        // streaks are those of an uninterrupted run.
        for row in &metrics {
            guard.step(row.step as usize, &row.losses(), config.fail_on_collapse)?;
        }
        tracing::info!(step, "resuming from checkpoint");
        job.bar.inc(start as u64);
    }
    let mut stored = StoredImages::new(&job.images, vit.in_chans, &job.handle);
    stored.for_global(plan.crops_at(start).global[0].size)?;
    // The monitor embeds at the global crop size of `crops` throughout, phases or not, so that
    // its rows stay comparable.
    let crop_size = i64::from(plan.crops(0).global[0].size);
    let monitor = match &job.monitor {
        Some((settings, (train, test))) => {
            let m = job
                .handle
                .block_on(Monitor::load(settings, (train, test), &vit, crop_size))?;
            tracing::info!(rows = ?m.rows(), "monitor subsets loaded");
            Some((settings, m))
        }
        None => None,
    };
    // Time spent in the monitor, and in reading the images again for a phase, inside the
    // throughput's window.
    let mut monitor_seconds = 0.0;
    let mut untimed = 0.0;
    let b = config.batch_size;
    // Throughput is timed from the end of the first iteration when more follow: the first pays
    // for allocations and kernel selection.
    let mut timed_from = (start, Instant::now());
    for step in start..config.steps {
        // The crops of the iteration's phase, and their patch grid for the iBOT masks.
        let crops = plan.crops_at(step);
        let global_size = crops.global[0].size;
        let grid = (i64::from(global_size) / vit.patch_size) as usize;
        let began = Instant::now();
        let data = stored.for_global(global_size)?;
        if step > start && plan.index_at(step) != plan.index_at(step - 1) {
            tracing::info!(step, global_size, "resolution phase begins");
            untimed += began.elapsed().as_secs_f64();
        }
        let n = data.size()[0] as usize;
        // Every draw of this iteration (libtorch's generator included) depends on (seed, step)
        // alone, so a resumed run repeats it exactly.
        tch::manual_seed(seed_for(config.seed, step, 4) as i64);
        let idx = Tensor::from_slice(&batch_indices(n, b, config.seed, step));
        let images = data
            .index_select(0, &idx)
            .to_device(job.device)
            .to_kind(Kind::Float)
            / 255.0;
        let crop = multi_crop(&images, crops, seed_for(config.seed, step, 2))
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
        guard.step(step, &losses, config.fail_on_collapse)?;
        metrics.push(MetricRow::new(step, &losses, &values, global_size));
        job.bar.inc(1);
        let done = step + 1;
        if step == start && done < config.steps {
            timed_from = (done, Instant::now());
            untimed = 0.0;
        }
        if let Some((settings, m)) = &monitor
            && settings.due(done, config.steps)
        {
            // Reads the EMA's weights only; the next iteration reseeds libtorch's generator.
            let began = Instant::now();
            let knn_top1 = m.measure(learner.ema_backbone(), job.device, learner.autocast)?;
            monitor_rows.push(MonitorRow {
                step: done as u64,
                knn_top1,
            });
            let secs = began.elapsed().as_secs_f64();
            monitor_seconds += secs;
            untimed += secs;
        }
        if done % config.checkpoint_every == 0 && done < config.steps {
            job.checkpoints
                .save(&learner, done, (&metrics, &monitor_rows))?;
        }
    }
    job.bar.finish();
    let timed = config.steps - timed_from.0;
    let training_seconds = timed_from.1.elapsed().as_secs_f64() - untimed;
    let images_per_s = (timed * b) as f64 / training_seconds.max(1e-9);
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
        guard,
        monitor: monitor_rows,
        monitor_seconds,
    })
}
