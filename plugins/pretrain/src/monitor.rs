//! The in-training evaluation monitor (`monitor:`): every `every` iterations and after the last,
//! the EMA network (the one `model.safetensors` receives: pretraining's teacher, distillation's
//! student EMA) embeds a small labelled subset, the first rows of the `monitor_train` and
//! `monitor_test` inputs, and the eval crate's weighted k-NN gives its top-1 accuracy: a row of the
//! `monitor` output.
//!
//! The monitor only reads the EMA's weights: its forward pass runs without gradients and in
//! evaluation mode (no drop-path, so it draws nothing from libtorch's generator), and it uses none
//! of the training's random streams, so a run trains exactly as it would without it. The images
//! go through the eval stage's transform for a ViT at the global crop size (the whole shorter
//! side resized, ImageNet normalisation) and are kept in memory as 8-bit copies, loaded once.

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use dinoflow_engine::{Port, PortType, StageContext};
use dinoflow_eval::features::{labels, vit_input, vit_transform};
use dinoflow_eval::knn;
use dinoflow_storage::Dataset;
use dinoflow_vision::tch::{self, Device, Kind, Tensor};
use dinoflow_vision::tensor::images_to_tensor;
use dinoflow_vision::{Autocast, Vit, VitConfig, autocast};
use futures::TryStreamExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::PretrainError;

/// The input port of the k-NN's labelled train images (its first `train_rows` rows).
pub const TRAIN_PORT: &str = "monitor_train";
/// The input port of the labelled images the k-NN is scored on (its first `test_rows` rows).
pub const TEST_PORT: &str = "monitor_test";
/// The output port of the monitor's rows.
pub const OUTPUT_PORT: &str = "monitor";

/// Images per forward pass of the monitor (the eval stage's default batch).
const CHUNK: i64 = 256;

/// The `monitor:` settings of a training stage: a k-NN evaluation of the EMA network on a small
/// labelled subset every `every` iterations and after the last one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// Iterations between two evaluations (also one after the last iteration).
    pub every: usize,
    /// The first rows of `monitor_train` that form the k-NN's bank (default 2000).
    #[serde(default = "default_train_rows")]
    pub train_rows: usize,
    /// The first rows of `monitor_test` the k-NN is scored on (default 1000).
    #[serde(default = "default_test_rows")]
    pub test_rows: usize,
    /// Neighbours that vote (default 20, capped at the bank's rows).
    #[serde(default = "default_k")]
    pub k: usize,
    /// Temperature of the vote weights softmax(similarity / T) (default 0.07, as dinov2).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
}

fn default_train_rows() -> usize {
    2000
}
fn default_test_rows() -> usize {
    1000
}
fn default_k() -> usize {
    20
}
fn default_temperature() -> f64 {
    0.07
}

impl MonitorConfig {
    /// Checks the values; `field` is where the settings are written (`monitor`,
    /// `student.monitor`).
    pub fn check(&self, field: &str) -> Result<(), PretrainError> {
        let at_least_one = |name: &str, value: usize, unit: &str| {
            if value == 0 {
                Err(PretrainError::Config(format!(
                    "`{field}.{name}` is 0; it must be at least 1 {unit}"
                )))
            } else {
                Ok(())
            }
        };
        at_least_one("every", self.every, "iteration")?;
        at_least_one("train_rows", self.train_rows, "row")?;
        at_least_one("test_rows", self.test_rows, "row")?;
        at_least_one("k", self.k, "neighbour")?;
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(PretrainError::Config(format!(
                "`{field}.temperature` is {}; it must be a positive number (dinov2: 0.07)",
                self.temperature
            )));
        }
        Ok(())
    }

    /// Whether the monitor runs once `done` of `steps` iterations are done.
    pub fn due(&self, done: usize, steps: usize) -> bool {
        done == steps || done.is_multiple_of(self.every)
    }
}

/// One row of the `monitor` output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct MonitorRow {
    /// Iterations done when the features were computed.
    pub(crate) step: u64,
    /// Top-1 accuracy of the k-NN on the test rows, in [0, 1].
    pub(crate) knn_top1: f64,
}

/// The schema of the `monitor` output: `step` (UInt64), `knn_top1` (Float64).
pub(crate) fn monitor_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("step", DataType::UInt64, false),
        Field::new("knn_top1", DataType::Float64, false),
    ]))
}

/// `rows` as one batch of [`monitor_schema`].
pub(crate) fn monitor_batch(rows: &[MonitorRow]) -> Result<RecordBatch, PretrainError> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.step))),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.knn_top1),
        )),
    ];
    RecordBatch::try_new(monitor_schema(), columns).map_err(|e| PretrainError::Shape(e.to_string()))
}

/// The monitor's input ports (both optional; connected together with `monitor:` set).
pub(crate) fn input_ports() -> [Port; 2] {
    [
        Port::optional(
            TRAIN_PORT,
            PortType::Dataset("images"),
            "labelled images: the monitor's k-NN bank (its first `monitor.train_rows`)",
        ),
        Port::optional(
            TEST_PORT,
            PortType::Dataset("images"),
            "labelled images the monitor's k-NN is scored on (its first `monitor.test_rows`)",
        ),
    ]
}

/// The monitor's output port.
pub(crate) fn output_port() -> Port {
    Port::new(
        OUTPUT_PORT,
        PortType::Dataset("metrics"),
        "the monitor's k-NN top-1 of the EMA network: `step`, `knn_top1` (empty without `monitor`)",
    )
}

/// The monitor's two datasets when `monitor` (written at `field`) is set, after checking that the
/// ports are connected exactly when it is.
pub(crate) fn inputs(
    monitor: Option<&MonitorConfig>,
    field: &str,
    ctx: &StageContext,
) -> Result<Option<(Dataset, Dataset)>, PretrainError> {
    let connected = |port: &str| ctx.input(port).is_some();
    let error = |port: &str, message: String| PretrainError::MonitorInput {
        port: port.to_string(),
        message,
    };
    if monitor.is_none() {
        if let Some(port) = [TRAIN_PORT, TEST_PORT].into_iter().find(|p| connected(p)) {
            return Err(error(
                port,
                format!(
                    "connected, but `{field}` is not set: set `{field}: {{every: N}}` to evaluate \
                     the model every N iterations, or remove the input"
                ),
            ));
        }
        return Ok(None);
    }
    if let Some(port) = [TRAIN_PORT, TEST_PORT].into_iter().find(|p| !connected(p)) {
        return Err(error(
            port,
            format!(
                "not connected, but `{field}` is set: connect both monitor inputs to labelled \
                 images datasets (`inputs: {{{TRAIN_PORT}: <stage>, {TEST_PORT}: <stage>}}`), or \
                 remove `{field}`"
            ),
        ));
    }
    let open = |port: &str| {
        ctx.input_dataset(port)
            .map_err(|e| error(port, e.to_string()))
    };
    Ok(Some((open(TRAIN_PORT)?, open(TEST_PORT)?)))
}

/// The first rows of a labelled images dataset, ready for the monitor.
struct Subset {
    /// (rows, C, S, S) 8-bit images on the CPU, as the eval transform leaves them.
    images: Tensor,
    /// Their labels.
    labels: Vec<i64>,
}

/// Reads the first `rows` rows of `dataset` (input `port`) at `size` pixels for `vit`.
async fn load_subset(
    dataset: &Dataset,
    port: &str,
    rows: usize,
    vit: &VitConfig,
    size: i64,
) -> Result<Subset, PretrainError> {
    let input = |message: String| PretrainError::MonitorInput {
        port: port.to_string(),
        message,
    };
    if dataset.rows() == 0 {
        return Err(input("the dataset has no rows".into()));
    }
    let transform = vit_transform(vit, size);
    let mut stream = std::pin::pin!(dataset.batches(rows.min(1024)));
    let (mut parts, mut all_labels) = (Vec::new(), Vec::new());
    while all_labels.len() < rows
        && let Some(batch) = stream
            .try_next()
            .await
            .map_err(|e| input(format!("reading the dataset: {e}")))?
    {
        let batch = batch.slice(0, batch.num_rows().min(rows - all_labels.len()));
        all_labels.extend(labels(&batch, port, all_labels.len() as u64)?);
        let x =
            images_to_tensor(&batch, &transform, Device::Cpu).map_err(|e| input(e.to_string()))?;
        parts.push((x * 255.0).round().to_kind(Kind::Uint8));
    }
    Ok(Subset {
        images: Tensor::f_cat(&parts, 0)?,
        labels: all_labels,
    })
}

/// The loaded subsets and the k-NN settings.
pub(crate) struct Monitor {
    config: MonitorConfig,
    train: Tensor,
    test: Tensor,
    /// Class indices of the train and test rows (the eval stage's numbering).
    train_y: Tensor,
    test_y: Tensor,
    classes: i64,
}

impl Monitor {
    /// Loads the first rows of both datasets at the global crop side `size` for `vit`.
    pub(crate) async fn load(
        config: &MonitorConfig,
        (train, test): (&Dataset, &Dataset),
        vit: &VitConfig,
        size: i64,
    ) -> Result<Self, PretrainError> {
        let train = load_subset(train, TRAIN_PORT, config.train_rows, vit, size).await?;
        let test = load_subset(test, TEST_PORT, config.test_rows, vit, size).await?;
        let (classes, train_y, test_y) = knn::class_indices(&train.labels, &test.labels);
        Ok(Self {
            config: config.clone(),
            train: train.images,
            test: test.images,
            train_y: Tensor::from_slice(&train_y),
            test_y: Tensor::from_slice(&test_y),
            classes,
        })
    }

    /// Rows of the bank and of the test set.
    pub(crate) fn rows(&self) -> (i64, i64) {
        (self.train.size()[0], self.test.size()[0])
    }

    /// The k-NN top-1 accuracy of `backbone` (run on `device` under `cast`), in [0, 1].
    pub(crate) fn measure(
        &self,
        backbone: &Vit,
        device: Device,
        cast: Option<Autocast>,
    ) -> Result<f64, PretrainError> {
        let train = embed(backbone, &self.train, device, cast)?;
        let test = embed(backbone, &self.test, device, cast)?;
        let accuracies = tch::no_grad(|| {
            knn::accuracies(
                &train,
                &self.train_y.to_device(device),
                &test,
                &self.test_y.to_device(device),
                self.classes,
                &[self.config.k],
                self.config.temperature,
            )
        })?;
        accuracies
            .first()
            .copied()
            .ok_or_else(|| PretrainError::Shape("the k-NN returned no accuracy".into()))
    }
}

/// The final-norm cls tokens (rows, D) of 8-bit `images` through `backbone`, float32 on `device`:
/// without gradients and in evaluation mode (no drop-path), so nothing is drawn from any
/// generator.
pub(crate) fn embed(
    backbone: &Vit,
    images: &Tensor,
    device: Device,
    cast: Option<Autocast>,
) -> Result<Tensor, PretrainError> {
    let rows = images.size()[0];
    let mut parts = Vec::new();
    let mut start = 0;
    while start < rows {
        let len = CHUNK.min(rows - start);
        let x = images
            .narrow(0, start, len)
            .to_device(device)
            .to_kind(Kind::Float)
            / 255.0;
        let x = vit_input(&x, Kind::Float)?;
        let out = tch::no_grad(|| autocast(cast, || backbone.last_layers(&x, 1)))
            .map_err(|e| PretrainError::Config(e.to_string()))?
            .map_err(|e| PretrainError::Shape(e.to_string()))?;
        let last = out
            .last()
            .ok_or_else(|| PretrainError::Shape("the backbone returned no layers".into()))?;
        parts.push(last.cls.to_kind(Kind::Float));
        start += len;
    }
    Ok(Tensor::f_cat(&parts, 0)?)
}

#[cfg(test)]
mod tests {
    use dinoflow_vision::Precision;

    use super::*;
    use crate::{Learner, PretrainConfig};

    #[test]
    fn embedding_draws_nothing_and_leaves_the_learner_alone() {
        let config: PretrainConfig = serde_json::from_value(serde_json::json!({
            "preset": "tiny-28", "embed_dim": 32, "depth": 2, "num_heads": 2, "drop_path": 0.5,
            "steps": 1, "objective": {"head": {"prototypes": 16, "hidden_dim": 16, "bottleneck_dim": 8}}
        }))
        .unwrap();
        tch::manual_seed(3);
        let learner = Learner::new(&config.vit(), &config.objective, Device::Cpu).unwrap();
        let before = learner.state();
        let images =
            (Tensor::rand([5, 1, 28, 28], (Kind::Float, Device::Cpu)) * 255.0).to_kind(Kind::Uint8);
        for cast in [None, Precision::Bfloat16.resolve(Device::Cpu)] {
            tch::manual_seed(7);
            let features = embed(learner.ema_backbone(), &images, Device::Cpu, cast).unwrap();
            // libtorch's generator is where a drop-path would have drawn from.
            let next = Tensor::rand([8], (Kind::Float, Device::Cpu));
            tch::manual_seed(7);
            assert!(next.equal(&Tensor::rand([8], (Kind::Float, Device::Cpu))));
            assert_eq!(features.size(), [5, 32]);
            assert_eq!(features.kind(), Kind::Float);
            assert!(!features.requires_grad());
            let again = embed(learner.ema_backbone(), &images, Device::Cpu, cast).unwrap();
            assert!(
                features.equal(&again),
                "the forward pass is not deterministic"
            );
        }
        for (name, t) in learner.state() {
            assert!(t.equal(&before[&name]), "{name} changed");
        }
        for p in &learner.params {
            assert!(!p.tensor.grad().defined(), "{} has a gradient", p.name);
        }
    }

    #[test]
    fn the_monitor_is_due_every_n_iterations_and_after_the_last() {
        let config: MonitorConfig =
            serde_json::from_value(serde_json::json!({"every": 3})).unwrap();
        assert_eq!(
            (
                config.train_rows,
                config.test_rows,
                config.k,
                config.temperature
            ),
            (2000, 1000, 20, 0.07)
        );
        let due: Vec<usize> = (1..=10).filter(|&d| config.due(d, 10)).collect();
        assert_eq!(due, [3, 6, 9, 10]);
        let due: Vec<usize> = (1..=9).filter(|&d| config.due(d, 9)).collect();
        assert_eq!(due, [3, 6, 9]);
        assert!(config.check("monitor").is_ok());
    }
}
