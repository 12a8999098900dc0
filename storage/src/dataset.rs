//! Datasets: Parquet shards written streaming with bounded memory, and read back batch by batch.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Schema, SchemaRef};
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::{Result, StorageError};
use crate::manifest::{FileEntry, OutputKind, OutputManifest, object_dir};
use crate::store::Store;

/// Bounds on one Parquet shard.
#[derive(Debug, Clone, Copy)]
pub struct ShardLimits {
    /// A shard is closed once it holds this many rows.
    pub max_rows: usize,
    /// A shard is closed once its encoded size reaches this many bytes.
    pub max_bytes: usize,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
}

impl Default for ShardLimits {
    fn default() -> Self {
        Self {
            max_rows: 100_000,
            max_bytes: 128 << 20,
            row_group_rows: 8192,
        }
    }
}

/// zstd level 1, as pyarrow's default for zstd, so files and benchmarks compare like for like.
fn writer_properties(limits: &ShardLimits) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
        .set_max_row_group_size(limits.row_group_rows)
        .build()
}

/// Writes one dataset output as `objects/<fingerprint>/<folder><port>/part-NNNNN.parquet`, one
/// shard in memory at a time (`folder` is empty unless set with [`DatasetWriter::in_folder`]).
pub struct DatasetWriter {
    store: Store,
    fingerprint: String,
    folder: String,
    port: String,
    schema: SchemaRef,
    limits: ShardLimits,
    current: Option<ArrowWriter<Vec<u8>>>,
    current_rows: usize,
    files: Vec<FileEntry>,
}

impl DatasetWriter {
    /// Starts a dataset for output `port` of the stage run `fingerprint`.
    pub fn new(
        store: Store,
        fingerprint: &str,
        port: &str,
        schema: SchemaRef,
        limits: ShardLimits,
    ) -> Self {
        Self {
            store,
            fingerprint: fingerprint.to_string(),
            folder: String::new(),
            port: port.to_string(),
            schema,
            limits,
            current: None,
            current_rows: 0,
            files: Vec::new(),
        }
    }

    /// Replaces the shard bounds (before the first write).
    pub fn with_limits(mut self, limits: ShardLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Puts the shards under `folder` (ending in `/`) inside the object folder, e.g. one task's
    /// `tasks/00003/` of a stage run split into tasks.
    pub fn in_folder(mut self, folder: &str) -> Self {
        self.folder = folder.to_string();
        self
    }

    /// The schema every batch must have.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.files.iter().filter_map(|f| f.rows).sum::<u64>() + self.current_rows as u64
    }

    /// Appends a batch; full shards are uploaded as they fill.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.schema().fields() != self.schema.fields() {
            return Err(StorageError::Invalid(format!(
                "batch for output `{}` has schema {:?}, expected {:?}",
                self.port,
                batch.schema(),
                self.schema
            )));
        }
        let mut offset = 0;
        while offset < batch.num_rows() {
            let room = self.limits.max_rows - self.current_rows;
            let take = room.min(batch.num_rows() - offset);
            let part = batch.slice(offset, take);
            let writer = match &mut self.current {
                Some(w) => w,
                None => {
                    let w = self.new_shard()?;
                    self.current.insert(w)
                }
            };
            writer.write(&part).map_err(|e| StorageError::Parquet {
                path: self.port.clone(),
                source: Box::new(e),
            })?;
            let encoded = writer.bytes_written() + writer.in_progress_size();
            self.current_rows += take;
            offset += take;
            if self.current_rows >= self.limits.max_rows || encoded >= self.limits.max_bytes {
                self.flush_shard().await?;
            }
        }
        Ok(())
    }

    fn new_shard(&self) -> Result<ArrowWriter<Vec<u8>>> {
        ArrowWriter::try_new(
            Vec::new(),
            Arc::clone(&self.schema),
            Some(writer_properties(&self.limits)),
        )
        .map_err(|e| self.parquet_err(e))
    }

    fn parquet_err(&self, e: parquet::errors::ParquetError) -> StorageError {
        StorageError::Parquet {
            path: format!("{}/{}", object_dir(&self.fingerprint), self.port),
            source: Box::new(e),
        }
    }

    async fn flush_shard(&mut self) -> Result<()> {
        let Some(writer) = self.current.take() else {
            return Ok(());
        };
        let data = writer.into_inner().map_err(|e| self.parquet_err(e))?;
        let path = format!(
            "{}{}/part-{:05}.parquet",
            self.folder,
            self.port,
            self.files.len()
        );
        let rows = std::mem::take(&mut self.current_rows) as u64;
        let entry = self
            .store
            .put_output_file(&self.fingerprint, &path, Bytes::from(data), Some(rows))
            .await?;
        self.files.push(entry);
        Ok(())
    }

    /// Uploads the last shard and describes the dataset for the manifest. An empty dataset still
    /// gets one (empty) shard so that readers see its schema.
    pub async fn finish(mut self) -> Result<OutputManifest> {
        if self.current.is_none() && self.files.is_empty() {
            self.current = Some(self.new_shard()?);
        }
        self.flush_shard().await?;
        Ok(OutputManifest::dataset(
            self.schema.as_ref().clone(),
            std::mem::take(&mut self.files),
        ))
    }
}

/// A committed dataset, read shard by shard.
#[derive(Debug, Clone)]
pub struct Dataset {
    store: Store,
    fingerprint: String,
    output: OutputManifest,
}

impl Dataset {
    /// Opens the committed dataset described by `output` (from the manifest of `fingerprint`).
    pub fn open(store: Store, fingerprint: &str, output: OutputManifest) -> Result<Self> {
        if output.kind != OutputKind::Dataset || output.schema.is_none() {
            return Err(StorageError::Invalid(format!(
                "output of {fingerprint} is not a dataset"
            )));
        }
        Ok(Self {
            store,
            fingerprint: fingerprint.to_string(),
            output,
        })
    }

    /// Total rows.
    pub fn rows(&self) -> u64 {
        self.output.rows.unwrap_or(0)
    }

    /// The Arrow schema.
    pub fn schema(&self) -> SchemaRef {
        Arc::new(self.output.schema.clone().unwrap_or_else(Schema::empty))
    }

    /// The manifest entry this dataset was opened from.
    pub fn manifest(&self) -> &OutputManifest {
        &self.output
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.output.files.len()
    }

    /// Reads shard `index` into record batches of up to `batch_rows` rows.
    pub async fn read_shard(&self, index: usize, batch_rows: usize) -> Result<Vec<RecordBatch>> {
        let file = self
            .output
            .files
            .get(index)
            .ok_or_else(|| StorageError::Invalid(format!("dataset has no shard {index}")))?;
        let key = format!("{}/{}", object_dir(&self.fingerprint), file.path);
        let data = self.store.get(&key).await?;
        if data.len() as u64 != file.size {
            return Err(StorageError::Invalid(format!(
                "{key} has {} bytes, the manifest says {}: the store was modified; run `dinoflow run` again to rebuild it",
                data.len(),
                file.size
            )));
        }
        let perr = |e| StorageError::Parquet {
            path: key.clone(),
            source: Box::new(e),
        };
        let reader = ParquetRecordBatchReaderBuilder::try_new(data)
            .map_err(perr)?
            .with_batch_size(batch_rows.max(1))
            .build()
            .map_err(perr)?;
        reader
            .map(|b| {
                b.map_err(|e| StorageError::Parquet {
                    path: key.clone(),
                    source: Box::new(e.into()),
                })
            })
            .collect()
    }

    /// Streams every batch of every shard in order, holding one shard in memory at a time.
    pub fn batches(&self, batch_rows: usize) -> impl Stream<Item = Result<RecordBatch>> + '_ {
        futures::stream::iter(0..self.shard_count())
            .then(move |i| self.read_shard(i, batch_rows))
            .map_ok(|batches| futures::stream::iter(batches.into_iter().map(Ok)))
            .try_flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field};

    fn batch(schema: &SchemaRef, start: i64, n: i64) -> RecordBatch {
        let ids: Vec<i64> = (start..start + n).collect();
        let names: Vec<String> = ids.iter().map(|i| format!("row-{i}")).collect();
        RecordBatch::try_new(
            Arc::clone(schema),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(names)),
            ],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn shards_by_rows_and_reads_back_in_order() {
        let store = Store::create("memory://dataset-test").unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, false),
        ]));
        let limits = ShardLimits {
            max_rows: 250,
            ..Default::default()
        };
        let mut w = DatasetWriter::new(store.clone(), "fp1", "rows", Arc::clone(&schema), limits);
        for start in (0..1000).step_by(100) {
            w.write(&batch(&schema, start, 100)).await.unwrap();
        }
        let out = w.finish().await.unwrap();
        assert_eq!(out.rows, Some(1000));
        assert_eq!(out.files.len(), 4);
        assert!(out.files.iter().all(|f| f.rows == Some(250)));

        let ds = Dataset::open(store, "fp1", out).unwrap();
        let batches: Vec<RecordBatch> = ds.batches(64).try_collect().await.unwrap();
        let ids: Vec<i64> = batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(ids, (0..1000).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn rejects_batches_with_another_schema_and_writes_empty_datasets() {
        let store = Store::create("memory://dataset-test-2").unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let other = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, false),
        ]));
        let mut w = DatasetWriter::new(store.clone(), "fp", "p", schema, ShardLimits::default());
        assert!(w.write(&batch(&other, 0, 3)).await.is_err());
        let out = w.finish().await.unwrap();
        assert_eq!((out.rows, out.files.len()), (Some(0), 1));
        let ds = Dataset::open(store, "fp", out).unwrap();
        let n: usize = ds
            .batches(10)
            .try_fold(0, |acc, b| async move { Ok(acc + b.num_rows()) })
            .await
            .unwrap();
        assert_eq!(n, 0);
    }
}
