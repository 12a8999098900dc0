//! The `metrics` output of the training stages: one row per iteration with its losses, health
//! figures, schedule values and global crop size, its Arrow schema and batch.

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::PretrainError;
use crate::learner::{StepLosses, StepValues};

/// One row of the `metrics` output: an iteration's losses, health figures and schedule values
/// (no timings, so that the output is the same whenever the computation is: throughput goes to
/// the run's metrics).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MetricRow {
    pub(crate) step: u64,
    pub(crate) total: f64,
    pub(crate) dino_local: f64,
    pub(crate) dino_global: f64,
    pub(crate) koleo: f64,
    pub(crate) ibot: f64,
    pub(crate) teacher_entropy: f64,
    pub(crate) feature_std: f64,
    pub(crate) lr: f64,
    pub(crate) weight_decay: f64,
    pub(crate) momentum: f64,
    pub(crate) teacher_temp: f64,
    /// Side of the global crops of the iteration (its resolution phase's).
    pub(crate) global_size: u64,
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

    /// The losses and health figures of the row (what the collapse guard reads).
    pub(crate) fn losses(&self) -> StepLosses {
        StepLosses {
            dino_local: self.dino_local,
            dino_global: self.dino_global,
            koleo: self.koleo,
            ibot: self.ibot,
            total: self.total,
            teacher_entropy: self.teacher_entropy,
            feature_std: self.feature_std,
        }
    }

    /// The row of iteration `step`, whose global crops had side `global_size`.
    pub(crate) fn new(step: usize, l: &StepLosses, v: &StepValues, global_size: u32) -> Self {
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
            global_size: u64::from(global_size),
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

/// The schema of the `metrics` output: `step` (UInt64), then [`METRIC_COLUMNS`] (Float64), then
/// `global_size` (UInt64, the side of the iteration's global crops).
pub(crate) fn metrics_schema() -> SchemaRef {
    let mut fields = vec![Field::new("step", DataType::UInt64, false)];
    fields.extend(
        METRIC_COLUMNS
            .iter()
            .map(|c| Field::new(*c, DataType::Float64, false)),
    );
    fields.push(Field::new("global_size", DataType::UInt64, false));
    Arc::new(Schema::new(fields))
}

/// `rows` as one batch of [`metrics_schema`].
pub(crate) fn metrics_batch(rows: &[MetricRow]) -> Result<RecordBatch, PretrainError> {
    let values: Vec<[f64; METRIC_COLUMNS.len()]> = rows.iter().map(MetricRow::values).collect();
    let mut columns: Vec<ArrayRef> = vec![Arc::new(UInt64Array::from_iter_values(
        rows.iter().map(|r| r.step),
    ))];
    for i in 0..METRIC_COLUMNS.len() {
        columns.push(Arc::new(Float64Array::from_iter_values(
            values.iter().map(|v| v[i]),
        )));
    }
    columns.push(Arc::new(UInt64Array::from_iter_values(
        rows.iter().map(|r| r.global_size),
    )));
    RecordBatch::try_new(metrics_schema(), columns).map_err(|e| PretrainError::Shape(e.to_string()))
}
