//! The report's training curves: every `metrics` output with a `step` column, and, beside a
//! training stage's losses, the k-NN accuracy of its evaluation monitor (its `monitor` output)
//! when that has rows.

use anyhow::{Context, Result};
use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, UInt64Type};
use arrow_schema::DataType;
use dinoflow_storage::Dataset;
use futures::TryStreamExt;

/// Points kept per training curve (longer runs are thinned evenly).
const CURVE_POINTS: usize = 400;

/// The `metrics` columns of a training stage that are losses: the monitor's curve follows them.
const LOSSES: [&str; 5] = ["total", "dino_local", "dino_global", "koleo", "ibot"];

/// The title of the monitor's curve (its `knn_top1` column).
pub const MONITOR_SERIES: &str = "monitor_knn_top1";

/// One curve: a float column over the steps of its kept points.
pub struct Series {
    /// The column's name (the chart's title).
    pub name: String,
    /// The steps of the kept points.
    pub x: Vec<f64>,
    /// The values at those steps.
    pub y: Vec<f64>,
}

/// The per-step values of one training stage.
pub struct Curves {
    /// Stage name.
    pub stage: String,
    /// Steps recorded (rows of `metrics`).
    pub steps: u64,
    /// Each float column of `metrics`, with [`MONITOR_SERIES`] after the losses when the
    /// stage's monitor wrote rows.
    pub series: Vec<Series>,
}

/// The curves of `stage`: its `metrics` dataset and, if it has one, its `monitor` dataset.
pub async fn read_curves(
    stage: &str,
    metrics: &Dataset,
    monitor: Option<&Dataset>,
) -> Result<Curves> {
    let (steps, mut series) = read_series(stage, "metrics", metrics).await?;
    if let Some(monitor) = monitor.filter(|d| d.rows() > 0) {
        let (_, found) = read_series(stage, "monitor", monitor).await?;
        let at = series
            .iter()
            .rposition(|s| LOSSES.contains(&s.name.as_str()))
            .map_or(series.len(), |i| i + 1);
        for (i, mut s) in found
            .into_iter()
            .filter(|s| s.name == "knn_top1")
            .enumerate()
        {
            s.name = MONITOR_SERIES.to_string();
            series.insert(at + i, s);
        }
    }
    Ok(Curves {
        stage: stage.to_string(),
        steps,
        series,
    })
}

/// Reads output `port` of `stage`: its rows, and the `step` column with every Float64 column,
/// thinned to [`CURVE_POINTS`] evenly spaced rows (the last row always kept).
async fn read_series(stage: &str, port: &str, d: &Dataset) -> Result<(u64, Vec<Series>)> {
    let batches: Vec<RecordBatch> = d
        .batches(65_536)
        .try_collect()
        .await
        .with_context(|| format!("reading the {port} of `{stage}`"))?;
    let names: Vec<String> = d
        .schema()
        .fields()
        .iter()
        .filter(|f| f.data_type() == &DataType::Float64)
        .map(|f| f.name().clone())
        .collect();
    let mut x = Vec::new();
    let mut columns: Vec<Vec<f64>> = names.iter().map(|_| Vec::new()).collect();
    for batch in &batches {
        let steps = batch
            .column_by_name("step")
            .and_then(|c| c.as_primitive_opt::<UInt64Type>())
            .with_context(|| format!("`{stage}`: the {port}' `step` column is not UInt64"))?;
        x.extend(steps.values().iter().map(|s| *s as f64));
        for (name, values) in names.iter().zip(&mut columns) {
            let column = batch
                .column_by_name(name)
                .and_then(|c| c.as_primitive_opt::<Float64Type>())
                .with_context(|| format!("`{stage}`: no {port} column `{name}`"))?;
            values.extend(column.iter().map(|v| v.unwrap_or(f64::NAN)));
        }
    }
    let keep = thinned(x.len(), CURVE_POINTS);
    let pick = |v: &[f64]| keep.iter().map(|&i| v[i]).collect::<Vec<_>>();
    let kept_x = pick(&x);
    let series = names
        .into_iter()
        .zip(columns)
        .map(|(name, values)| Series {
            name,
            x: kept_x.clone(),
            y: pick(&values),
        })
        .collect();
    Ok((x.len() as u64, series))
}

/// Indices of at most `max` (≥ 2) evenly spaced items out of `len`, first and last included.
fn thinned(len: usize, max: usize) -> Vec<usize> {
    let max = max.max(2);
    if len <= max {
        return (0..len).collect();
    }
    (0..max).map(|i| i * (len - 1) / (max - 1)).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Float64Array, UInt64Array};
    use arrow_schema::{Field, Schema};
    use dinoflow_storage::{DatasetWriter, ShardLimits, Store};

    use super::*;

    #[test]
    fn thinning_keeps_the_ends_and_spaces_evenly() {
        assert_eq!(thinned(3, 400), vec![0, 1, 2]);
        assert_eq!(thinned(0, 400), Vec::<usize>::new());
        assert_eq!(thinned(101, 5), vec![0, 25, 50, 75, 100]);
        let kept = thinned(1000, 400);
        assert_eq!((kept.len(), kept[0], kept[399]), (400, 0, 999));
        assert!(kept.windows(2).all(|w| w[0] < w[1]));
    }

    /// A committed dataset of `step` and the Float64 `columns`, `rows` rows, step `i · every`.
    async fn dataset(store: &Store, fp: &str, columns: &[&str], rows: u64, every: u64) -> Dataset {
        let mut fields = vec![Field::new("step", DataType::UInt64, false)];
        fields.extend(
            columns
                .iter()
                .map(|c| Field::new(*c, DataType::Float64, false)),
        );
        let schema = Arc::new(Schema::new(fields));
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(UInt64Array::from_iter_values(
            (1..=rows).map(|i| i * every),
        ))];
        for _ in columns {
            arrays.push(Arc::new(Float64Array::from_iter_values(
                (1..=rows).map(|i| i as f64 / 10.0),
            )));
        }
        let mut writer = DatasetWriter::new(
            store.clone(),
            fp,
            "data",
            schema.clone(),
            ShardLimits::default(),
        );
        writer
            .write(&RecordBatch::try_new(schema, arrays).unwrap())
            .await
            .unwrap();
        Dataset::open(store.clone(), fp, writer.finish().await.unwrap()).unwrap()
    }

    #[tokio::test]
    async fn the_monitor_curve_follows_the_losses_with_its_own_steps() {
        let store = Store::create("memory://report-curves").unwrap();
        let columns = ["total", "dino_local", "dino_global", "koleo", "ibot", "lr"];
        let metrics = dataset(&store, "m", &columns, 10, 1).await;
        let monitor = dataset(&store, "k", &["knn_top1"], 3, 4).await;
        let curves = read_curves("dino", &metrics, Some(&monitor)).await.unwrap();
        let names: Vec<&str> = curves.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "total",
                "dino_local",
                "dino_global",
                "koleo",
                "ibot",
                MONITOR_SERIES,
                "lr"
            ]
        );
        assert_eq!(curves.steps, 10);
        let knn = &curves.series[5];
        assert_eq!(
            (knn.x.as_slice(), knn.y.as_slice()),
            (&[4.0, 8.0, 12.0][..], &[0.1, 0.2, 0.3][..])
        );
        assert_eq!(curves.series[0].x.len(), 10);
        // An empty monitor output (no `monitor:`) adds nothing.
        let empty = dataset(&store, "e", &["knn_top1"], 0, 1).await;
        let curves = read_curves("dino", &metrics, Some(&empty)).await.unwrap();
        assert_eq!(curves.series.len(), columns.len());
    }
}
