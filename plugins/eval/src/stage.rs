//! The `eval` stage: reads the labelled `train` and `test` images once, runs every model (the
//! inputs, their architectures at random init, the raw pixels) on each batch, keeps the frozen
//! features, then scores each model with the k-NN classifier and the linear probe and writes
//! `eval/report.json`.

use std::collections::BTreeMap;
use std::time::Instant;

use arrow_array::RecordBatch;
use bytes::Bytes;
use dinoflow_engine::{
    Port, PortType, Resources, Stage, StageContext, StageError, async_trait, semver,
};
use dinoflow_storage::OutputManifest;
use dinoflow_vision::tch::{self, Device, Kind, Tensor};
use dinoflow_vision::{DeviceChoice, VitConfig, VitModel};
use futures::TryStreamExt;

use crate::config::EvalConfig;
use crate::features::{Extractor, FeatureStore, Features, architecture, describe, labels};
use crate::linear::{ProbeInput, probe};
use crate::report::{KnnResult, REPORT_FILE, Report, ReportRow, Source};
use crate::{EvalError, MODEL_FILE, knn};

/// The `eval` stage kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct Eval;

fn failed(e: impl Into<EvalError>) -> StageError {
    StageError::failed(e.into())
}

#[async_trait]
impl Stage for Eval {
    type Config = EvalConfig;

    fn kind(&self) -> &'static str {
        "eval"
    }
    fn version(&self) -> semver::Version {
        semver::Version::new(1, 1, 0)
    }
    fn description(&self) -> &'static str {
        "DINOv2's k-NN and linear-probe evaluation of frozen ViT features on labelled images, \
         beside raw-pixel and random-init baselines"
    }
    fn inputs(&self) -> Vec<Port> {
        vec![
            Port::new(
                "train",
                PortType::Dataset("images"),
                "labelled images the classifiers learn from",
            ),
            Port::new(
                "test",
                PortType::Dataset("images"),
                "labelled images the classifiers are scored on",
            ),
            Port::many(
                "model",
                PortType::Artifact("vit"),
                "the ViTs to evaluate, one `model:<label>` each (pretrain or distill outputs)",
            ),
        ]
    }
    fn outputs(&self) -> Vec<Port> {
        vec![Port::new(
            "report",
            PortType::Artifact("report"),
            "eval/report.json: k-NN and linear top-1 of every model and baseline",
        )]
    }
    fn resources(&self, config: &EvalConfig) -> Resources {
        Resources {
            cpus: u32::MAX,
            gpus: u32::from(config.device == DeviceChoice::Cuda),
            memory_gb: 4.0,
        }
    }

    async fn run(&self, config: &EvalConfig, ctx: &StageContext) -> Result<(), StageError> {
        config.check().map_err(|e| failed(EvalError::Config(e)))?;
        let device = config
            .device
            .resolve()
            .map_err(|e| failed(EvalError::Config(e.to_string())))?;
        let mut weights = Vec::new();
        for (label, _) in ctx.labelled_inputs("model") {
            let keyed = format!("model:{label}");
            let key = if ctx.input(&keyed).is_some() {
                keyed
            } else {
                "model".to_string()
            };
            let bytes = ctx.input_artifact_file(&key, MODEL_FILE).await?;
            weights.push((label.to_string(), key, bytes));
        }
        if weights.is_empty() {
            return Err(failed(EvalError::Config(
                "connect at least one model: `inputs: {model:<label>: <stage>.model}`".into(),
            )));
        }
        tch::set_num_threads(ctx.cpus.min(i32::MAX as usize) as i32);
        let train = ctx.input_dataset("train")?;
        let test = ctx.input_dataset("test")?;
        let rows = (train.rows(), test.rows());
        for (port, n) in [("train", rows.0), ("test", rows.1)] {
            if n == 0 {
                return Err(failed(EvalError::Input {
                    port: port.to_string(),
                    message: "the dataset has no rows".into(),
                }));
            }
        }
        let cfg = config.clone();
        let mut models = blocking(move || build_models(&cfg, weights, device, rows)).await?;

        let bar = ctx.progress(Some(train.rows() + test.rows()), "images");
        let mut train_labels = Vec::new();
        let mut test_labels = Vec::new();
        for (port, dataset, labels_out) in [
            ("train", &train, &mut train_labels),
            ("test", &test, &mut test_labels),
        ] {
            let mut stream = std::pin::pin!(dataset.batches(config.batch_size));
            while let Some(batch) = stream.try_next().await? {
                labels_out.extend(labels(&batch, port, labels_out.len() as u64).map_err(failed)?);
                if config.baselines.raw_pixels && !models.iter().any(Model::is_pixels) {
                    models.push(Model::pixels(&batch, port, rows).map_err(failed)?);
                }
                let batch_rows = batch.num_rows() as u64;
                let is_train = port == "train";
                models = blocking(move || extract(models, &batch, is_train)).await?;
                bar.inc(batch_rows);
            }
        }
        bar.finish();

        let (classes, train_y, test_y) = knn::class_indices(&train_labels, &test_labels);
        let metric_keys: Vec<String> = models.iter().map(|m| m.metric_key.clone()).collect();
        let cfg = config.clone();
        let rows = blocking(move || {
            models
                .iter()
                .map(|model| score(model, &cfg, classes, &train_y, &test_y, device))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;

        // Timings go to the run's metrics, not into the report: the output is the same
        // whenever the computation is.
        let (rows, seconds): (Vec<ReportRow>, Vec<f64>) = rows.into_iter().unzip();
        let report = Report {
            train_rows: train_labels.len() as u64,
            test_rows: test_labels.len() as u64,
            classes: classes as u64,
            report_k: config.knn.report_k,
            rows,
        };
        let json = serde_json::to_vec_pretty(&report).map_err(failed)?;
        let entry = ctx
            .store
            .put_output_file(&ctx.fingerprint, REPORT_FILE, Bytes::from(json), None)
            .await?;
        ctx.set_output("report", OutputManifest::artifact(vec![entry]));
        ctx.metric("train_rows", report.train_rows);
        ctx.metric("test_rows", report.test_rows);
        ctx.metric("classes", report.classes);
        for ((row, model), secs) in report.rows.iter().zip(&metric_keys).zip(seconds) {
            ctx.metric(&format!("knn_top1.{model}"), row.knn.reported);
            ctx.metric(&format!("linear_top1.{model}"), row.linear.top1);
            ctx.metric(&format!("seconds.{model}"), secs);
        }
        Ok(())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, EvalError> + Send + 'static,
) -> Result<T, StageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| failed(EvalError::Worker(e.to_string())))?
        .map_err(failed)
}

/// One evaluated model with the features gathered so far.
struct Model {
    name: String,
    /// The row's name in metric keys: the input's label, `random_init_<label>`, `raw_pixels`.
    metric_key: String,
    source: Source,
    architecture: Option<String>,
    extractor: Extractor,
    train: FeatureStore,
    test: FeatureStore,
    seconds: f64,
    images: u64,
}

impl Model {
    fn new(
        (name, metric_key): (String, String),
        source: Source,
        architecture: Option<String>,
        extractor: Extractor,
        (train_rows, test_rows): (u64, u64),
    ) -> Self {
        Self {
            name,
            metric_key,
            source,
            architecture,
            train: extractor.store(train_rows),
            test: extractor.store(test_rows),
            extractor,
            seconds: 0.0,
            images: 0,
        }
    }

    fn pixels(batch: &RecordBatch, port: &str, rows: (u64, u64)) -> Result<Self, EvalError> {
        let e = Extractor::pixels_like(batch, port)?;
        Ok(Self::new(
            ("raw pixels".into(), "raw_pixels".into()),
            Source::RawPixels,
            None,
            e,
            rows,
        ))
    }

    fn is_pixels(&self) -> bool {
        self.source == Source::RawPixels
    }
}

/// Loads the input models and builds one random-init model per distinct architecture, on
/// `device` (in bfloat16 off the CPU).
fn build_models(
    config: &EvalConfig,
    weights: Vec<(String, String, Bytes)>,
    device: Device,
    rows: (u64, u64),
) -> Result<Vec<Model>, EvalError> {
    let layers = config.linear.layers.iter().copied().max().unwrap_or(1);
    let place = |mut model: VitModel| {
        if device != Device::Cpu {
            model.vs.set_device(device);
            model.vs.bfloat16();
        }
        model
    };
    let mut models = Vec::new();
    let mut archs: Vec<(VitConfig, String)> = Vec::new();
    for (label, key, bytes) in weights {
        let source_name = format!("the `{key}` input");
        let model = VitModel::from_safetensors(&bytes, &source_name, None, Device::Cpu)?;
        let arch = architecture(model.config());
        if !archs.iter().any(|(a, _)| *a == arch) {
            archs.push((arch.clone(), label.clone()));
        }
        let extractor = Extractor::vit(place(model), layers, config.image_size, &source_name)?;
        models.push(Model::new(
            (label.clone(), label),
            Source::Input,
            Some(describe(&arch)),
            extractor,
            rows,
        ));
    }
    if config.baselines.random_init {
        for (arch, label) in archs {
            // Built on the CPU so that the weights are the same whatever the device.
            tch::manual_seed(config.seed as i64);
            let model = VitModel::new(&arch, Device::Cpu)?;
            let name = format!("random init ({label})");
            let extractor = Extractor::vit(place(model), layers, config.image_size, &name)?;
            models.push(Model::new(
                (name, format!("random_init_{label}")),
                Source::RandomInit,
                Some(describe(&arch)),
                extractor,
                rows,
            ));
        }
    }
    Ok(models)
}

/// Runs every model on one batch and keeps its features.
fn extract(
    mut models: Vec<Model>,
    batch: &RecordBatch,
    train: bool,
) -> Result<Vec<Model>, EvalError> {
    for model in &mut models {
        let started = Instant::now();
        let features = model.extractor.extract(batch)?;
        if model.extractor.device() != Device::Cpu {
            tch::Cuda::synchronize(0);
        }
        model.seconds += started.elapsed().as_secs_f64();
        model.images += batch.num_rows() as u64;
        if train {
            model.train.push(&features)?;
        } else {
            model.test.push(&features)?;
        }
    }
    Ok(models)
}

/// Scores one model: the k-NN classifier on the last block's cls token (the pixels for the
/// baseline) and the linear probe over every configured input variant.
fn score(
    model: &Model,
    config: &EvalConfig,
    classes: i64,
    train_y: &[i64],
    test_y: &[i64],
    device: Device,
) -> Result<(ReportRow, f64), EvalError> {
    let started = Instant::now();
    let Features {
        cls: train_cls,
        patch_mean: train_patch,
    } = model.train.features();
    let Features {
        cls: test_cls,
        patch_mean: test_patch,
    } = model.test.features();
    let to = |t: &Tensor| t.to_device(device).to_kind(Kind::Float);
    let (train_cls, test_cls) = (to(&train_cls), to(&test_cls));
    let train_y = Tensor::from_slice(train_y).to_device(device);
    let test_y = Tensor::from_slice(test_y).to_device(device);
    let d = model.extractor.dim();
    let (inputs, knn_train, knn_test) = match &model.extractor {
        Extractor::Pixels { .. } => {
            let inputs = vec![ProbeInput {
                layers: 0,
                avgpool: false,
                train: train_cls.shallow_clone(),
                test: test_cls.shallow_clone(),
            }];
            (inputs, train_cls, test_cls)
        }
        Extractor::Vit { layers, .. } => {
            let (Some(train_patch), Some(test_patch)) = (train_patch, test_patch) else {
                return Err(EvalError::Shape("a ViT without patch features".into()));
            };
            let (train_patch, test_patch) = (to(&train_patch), to(&test_patch));
            let total = *layers as i64;
            let last = |x: &Tensor, n: i64| x.narrow(1, (total - n) * d, n * d);
            let mut counts: Vec<usize> = Vec::new();
            for &n in &config.linear.layers {
                let n = n.min(*layers);
                if !counts.contains(&n) {
                    counts.push(n);
                }
            }
            let mut inputs = Vec::new();
            for n in counts {
                for &avgpool in &config.linear.avgpool {
                    let variant = |cls: &Tensor, patch: &Tensor| -> Result<Tensor, EvalError> {
                        let c = last(cls, n as i64);
                        Ok(if avgpool {
                            Tensor::f_cat(&[c, patch.shallow_clone()], 1)?
                        } else {
                            c.contiguous()
                        })
                    };
                    inputs.push(ProbeInput {
                        layers: n,
                        avgpool,
                        train: variant(&train_cls, &train_patch)?,
                        test: variant(&test_cls, &test_patch)?,
                    });
                }
            }
            (inputs, last(&train_cls, 1), last(&test_cls, 1))
        }
    };
    let knn_started = Instant::now();
    let ks = &config.knn.ks;
    let acc = knn::accuracies(
        &knn_train,
        &train_y,
        &knn_test,
        &test_y,
        classes,
        ks,
        config.knn.temperature,
    )?;
    let knn_seconds = knn_started.elapsed().as_secs_f64();
    let top1: BTreeMap<String, f64> = ks.iter().map(|k| k.to_string()).zip(acc).collect();
    let reported = top1
        .get(&config.knn.report_k.to_string())
        .copied()
        .unwrap_or(0.0);
    let probe_started = Instant::now();
    let linear = probe(
        &inputs,
        &train_y,
        &test_y,
        classes,
        &config.linear,
        config.seed,
    )?;
    let probe_seconds = probe_started.elapsed().as_secs_f64();
    tracing::info!(
        model = %model.name,
        images_per_s = model.images as f64 / model.seconds.max(1e-9),
        extract_s = model.seconds,
        knn_s = knn_seconds,
        probe_s = probe_seconds,
        knn_top1 = reported,
        linear_top1 = linear.top1,
        "evaluated"
    );
    let row = ReportRow {
        name: model.name.clone(),
        source: model.source,
        architecture: model.architecture.clone(),
        knn: KnnResult { top1, reported },
        linear,
    };
    Ok((row, model.seconds + started.elapsed().as_secs_f64()))
}
