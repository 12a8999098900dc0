//! The `ingest` stage: reads images from a folder (any store), IDX files or Parquet files; decodes
//! them (format sniffed from content), applies EXIF orientation, resizes, hashes; writes the
//! `images` dataset, and an `errors` dataset with one row per file that could not be used.

mod config;
mod decode;
mod error;
mod idx;
mod sources;

use std::sync::Arc;
use std::time::Instant;

use dinoflow_engine::{
    ExtraInput, Port, PortType, ProgressBar, Resources, Stage, StageContext, StageError,
    async_trait, semver,
};
use dinoflow_storage::schemas::{
    ImageRow, errors_batch, errors_schema, images_batch, images_schema,
};
use dinoflow_storage::{DatasetWriter, Listed};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rayon::prelude::*;

pub use config::{FolderLabels, IngestConfig, Source};
pub use decode::{DecodeOptions, Decoded, decode_image, resize_grey, target_size};
pub use error::IngestError;
pub use idx::{IdxArray, parse_idx};
use sources::Encoded;

/// The `ingest` stage kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ingest;

/// A failed item: (source, file size, reason).
type Failure = (String, u64, String);

fn stage_err(e: IngestError) -> StageError {
    StageError::failed(e)
}

fn listing_digest(files: &[Listed]) -> String {
    let mut h = blake3::Hasher::new();
    for f in files {
        h.update(f.key.as_bytes());
        h.update(&[0]);
        h.update(&f.size.to_le_bytes());
        h.update(f.version.as_bytes());
        h.update(b"\n");
    }
    h.finalize().to_hex().to_string()
}

fn summary(files: &[Listed]) -> String {
    let bytes: u64 = files.iter().map(|f| f.size).sum();
    format!("{} file(s), {:.1} MB", files.len(), bytes as f64 / 1e6)
}

#[async_trait]
impl Stage for Ingest {
    type Config = IngestConfig;

    fn kind(&self) -> &'static str {
        "ingest"
    }
    fn version(&self) -> semver::Version {
        // 1.1.0: folder and IDX sources run as one task per `shard_rows` source images.
        semver::Version::new(1, 1, 0)
    }
    fn description(&self) -> &'static str {
        "reads images (folder, IDX, Parquet) into the images dataset; unusable files go to `errors`"
    }
    fn inputs(&self) -> Vec<Port> {
        Vec::new()
    }
    fn outputs(&self) -> Vec<Port> {
        vec![
            Port::new(
                "images",
                PortType::Dataset("images"),
                "decoded, resized images with ids and labels",
            ),
            Port::new(
                "errors",
                PortType::Dataset("errors"),
                "files that could not be decoded, with the reason",
            ),
        ]
    }
    fn resources(&self, _config: &IngestConfig) -> Resources {
        Resources {
            cpus: u32::MAX,
            gpus: 0,
            memory_gb: 1.0,
        }
    }

    async fn extra_inputs(&self, config: &IngestConfig) -> Result<Vec<ExtraInput>, StageError> {
        let files: Vec<Listed> = match &config.source {
            Source::Folder { path, glob, labels } => {
                let listing = sources::list_folder(path, glob.as_deref(), *labels)
                    .await
                    .map_err(stage_err)?;
                // Unreadable entries are part of the output (as errors), so of the fingerprint.
                let unreadable = listing.unreadable.into_iter().map(|(key, reason)| Listed {
                    key,
                    size: 0,
                    version: reason,
                });
                listing.files.into_iter().chain(unreadable).collect()
            }
            Source::Idx { images, labels } => {
                let mut v = vec![sources::stat_file(images).await.map_err(stage_err)?];
                if let Some(l) = labels {
                    v.push(sources::stat_file(l).await.map_err(stage_err)?);
                }
                v
            }
            Source::Parquet { path, .. } => sources::list_parquet(path)
                .await
                .map_err(stage_err)?
                .into_iter()
                .map(|(_, l)| l)
                .collect(),
        };
        Ok(vec![ExtraInput {
            name: "source listing".into(),
            digest: listing_digest(&files),
            summary: summary(&files),
        }])
    }

    /// Every source splits into one task per `shard_rows` source images (after `limit`), each
    /// writing at most one shard per output; Parquet rows are counted from the files' footers.
    async fn task_count(&self, config: &IngestConfig) -> Result<Option<usize>, StageError> {
        let images = match &config.source {
            Source::Folder { path, glob, labels } => {
                sources::list_folder(path, glob.as_deref(), *labels)
                    .await
                    .map_err(stage_err)?
                    .files
                    .len()
            }
            Source::Idx { images, .. } => {
                let data = sources::read_file(images).await.map_err(stage_err)?;
                let idx = parse_idx(&data).map_err(|reason| {
                    stage_err(IngestError::Source {
                        source_url: images.clone(),
                        reason,
                    })
                })?;
                idx.dims.first().copied().unwrap_or(0)
            }
            Source::Parquet { path, .. } => sources::parquet_files(path)
                .await
                .map_err(stage_err)?
                .iter()
                .map(|f| f.rows)
                .sum(),
        };
        let limit = usize::try_from(config.limit.unwrap_or(u64::MAX)).unwrap_or(usize::MAX);
        Ok(Some(
            images.min(limit).div_ceil(config.shard_rows.max(1)).max(1),
        ))
    }

    async fn run(&self, config: &IngestConfig, ctx: &StageContext) -> Result<(), StageError> {
        let started = Instant::now();
        let part = Part {
            task: ctx.task,
            images: config.shard_rows.max(1),
            limit: usize::try_from(config.limit.unwrap_or(u64::MAX)).unwrap_or(usize::MAX),
        };
        let pool = Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(ctx.cpus)
                .build()
                .map_err(|e| stage_err(IngestError::Workers(e.to_string())))?,
        );
        let mut limits = ctx.shard_limits;
        limits.max_rows = config.shard_rows.max(1);
        let mut out = Output {
            images: ctx
                .dataset_writer("images", images_schema())
                .with_limits(limits),
            errors: ctx
                .dataset_writer("errors", errors_schema())
                .with_limits(limits),
            bar: ctx.progress(None, "images"),
            failed: 0,
        };
        let opts = DecodeOptions {
            max_side: config.max_side.max(1),
            max_pixels: config.max_pixels,
        };
        let batch = config.batch_size.max(1);
        match &config.source {
            Source::Idx { images, labels } => {
                ingest_idx(
                    images,
                    labels.as_deref(),
                    part,
                    batch,
                    opts,
                    &pool,
                    &mut out,
                )
                .await?
            }
            Source::Folder { path, glob, labels } => {
                let listing = sources::list_folder(path, glob.as_deref(), *labels)
                    .await
                    .map_err(stage_err)?;
                // Entries that cannot be read are the first task's errors.
                if ctx.task.unwrap_or(0) == 0 {
                    let unreadable = listing
                        .unreadable
                        .iter()
                        .map(|(source, reason)| Err((source.clone(), 0, reason.clone())))
                        .collect();
                    out.push(unreadable).await?;
                }
                let range = part.of(listing.files.len());
                out.bar.set_total(range.len() as u64);
                for start in range.clone().step_by(batch) {
                    let items = listing
                        .fetch(start..(start + batch).min(range.end))
                        .await
                        .map_err(stage_err)?;
                    let decoded = decode_all(&pool, items, opts).await?;
                    out.push(decoded).await?;
                }
            }
            Source::Parquet {
                path,
                column,
                label_column,
            } => {
                let files = sources::parquet_files(path).await.map_err(stage_err)?;
                let range = part.of(files.iter().map(|f| f.rows).sum());
                out.bar.set_total(range.len() as u64);
                // Source row numbers run on across the files; a task reads only its rows.
                let mut first = 0usize;
                for file in files {
                    let rows = first..first + file.rows;
                    first = rows.end;
                    let (start, end) = (range.start.max(rows.start), range.end.min(rows.end));
                    if start >= end {
                        continue;
                    }
                    let data = sources::read_file(&file.url).await.map_err(stage_err)?;
                    let reader = ParquetRecordBatchReaderBuilder::try_new(data)
                        .and_then(|b| {
                            b.with_batch_size(batch)
                                .with_offset(start - rows.start)
                                .with_limit(end - start)
                                .build()
                        })
                        .map_err(|e| {
                            stage_err(IngestError::Source {
                                source_url: file.url.clone(),
                                reason: e.to_string(),
                            })
                        })?;
                    let mut row = start - rows.start;
                    for b in reader {
                        let b = b.map_err(|e| stage_err(IngestError::Arrow(e)))?;
                        let items = sources::parquet_rows(
                            &file.url,
                            &b,
                            column,
                            label_column.as_deref(),
                            row,
                        )
                        .map_err(stage_err)?;
                        row += b.num_rows();
                        let decoded = decode_all(&pool, items, opts).await?;
                        out.push(decoded).await?;
                    }
                }
            }
        }
        let images = out.images.rows();
        let failed = out.failed;
        out.bar.finish();
        ctx.finish_dataset("images", out.images).await?;
        ctx.finish_dataset("errors", out.errors).await?;
        let secs = started.elapsed().as_secs_f64();
        ctx.metric("images", images);
        ctx.metric("errors", failed);
        ctx.metric("seconds", secs);
        ctx.metric("images_per_s", images as f64 / secs.max(1e-9));
        tracing::info!(stage = %ctx.stage, images, errors = failed, "ingest done in {secs:.2}s");
        Ok(())
    }
}

/// Which source images a task ingests.
#[derive(Debug, Clone, Copy)]
struct Part {
    /// The task, when the stage runs as tasks.
    task: Option<usize>,
    /// Source images per task.
    images: usize,
    /// Source images ingested at most (`limit`).
    limit: usize,
}

impl Part {
    /// This task's images of a source of `n` images.
    fn of(self, n: usize) -> std::ops::Range<usize> {
        let n = n.min(self.limit);
        match self.task {
            Some(task) => {
                task.saturating_mul(self.images).min(n)
                    ..(task + 1).saturating_mul(self.images).min(n)
            }
            None => 0..n,
        }
    }
}

/// The two writers and the progress bar.
struct Output {
    images: DatasetWriter,
    errors: DatasetWriter,
    bar: Box<dyn ProgressBar>,
    failed: u64,
}

impl Output {
    async fn push(&mut self, rows: Vec<Result<ImageRow, Failure>>) -> Result<(), StageError> {
        let n = rows.len() as u64;
        let (ok, bad): (Vec<_>, Vec<_>) = rows.into_iter().partition(Result::is_ok);
        let ok: Vec<ImageRow> = ok.into_iter().filter_map(Result::ok).collect();
        let bad: Vec<Failure> = bad.into_iter().filter_map(Result::err).collect();
        if !ok.is_empty() {
            let b = images_batch(&ok).map_err(|e| stage_err(e.into()))?;
            self.images.write(&b).await?;
        }
        if !bad.is_empty() {
            for (source, _, reason) in &bad {
                tracing::debug!(%source, "skipped: {reason}");
            }
            self.failed += bad.len() as u64;
            let b = errors_batch(&bad).map_err(|e| stage_err(e.into()))?;
            self.errors.write(&b).await?;
        }
        self.bar.inc(n);
        Ok(())
    }
}

fn image_row(item: &Encoded, opts: &DecodeOptions) -> Result<ImageRow, Failure> {
    let size = item.bytes.len() as u64;
    let d = decode_image(&item.bytes, opts).map_err(|e| (item.source.clone(), size, e))?;
    Ok(ImageRow {
        id: blake3::hash(&item.bytes).to_hex().to_string(),
        source: item.source.clone(),
        width: d.width,
        height: d.height,
        format: d.format,
        file_size: size,
        label: item.label,
        pixels: d.pixels,
        channels: d.channels,
        pixel_width: d.pixel_width,
        pixel_height: d.pixel_height,
    })
}

/// Decodes a batch on the stage's worker pool, keeping the order.
async fn decode_all(
    pool: &Arc<rayon::ThreadPool>,
    items: Vec<Encoded>,
    opts: DecodeOptions,
) -> Result<Vec<Result<ImageRow, Failure>>, StageError> {
    let pool = Arc::clone(pool);
    tokio::task::spawn_blocking(move || {
        pool.install(|| items.par_iter().map(|it| image_row(it, &opts)).collect())
    })
    .await
    .map_err(|e| stage_err(IngestError::Workers(e.to_string())))
}

async fn ingest_idx(
    images_url: &str,
    labels_url: Option<&str>,
    part: Part,
    batch: usize,
    opts: DecodeOptions,
    pool: &Arc<rayon::ThreadPool>,
    out: &mut Output,
) -> Result<(), StageError> {
    let bad = |url: &str, reason: String| {
        stage_err(IngestError::Source {
            source_url: url.to_string(),
            reason,
        })
    };
    let images = parse_idx(&sources::read_file(images_url).await.map_err(stage_err)?)
        .map_err(|e| bad(images_url, e))?;
    let [n, h, w] = images.dims[..] else {
        return Err(bad(
            images_url,
            format!(
                "expected 3 dimensions (n, rows, cols), found {:?}",
                images.dims
            ),
        ));
    };
    let labels = match labels_url {
        Some(url) => {
            let l = parse_idx(&sources::read_file(url).await.map_err(stage_err)?)
                .map_err(|e| bad(url, e))?;
            if l.dims != [n] {
                return Err(bad(
                    url,
                    format!("has {:?} labels but the images file has {n} images", l.dims),
                ));
            }
            Some(l.data)
        }
        None => None,
    };
    let images = Arc::new(images);
    let labels = Arc::new(labels);
    let range = part.of(n);
    out.bar.set_total(range.len() as u64);
    let (w, h) = (w as u32, h as u32);
    let url = images_url.to_string();
    for start in range.clone().step_by(batch) {
        let end = (start + batch).min(range.end);
        let (images, labels, pool, url) = (
            Arc::clone(&images),
            Arc::clone(&labels),
            Arc::clone(pool),
            url.clone(),
        );
        let rows = tokio::task::spawn_blocking(move || {
            let plane = (w * h) as usize;
            pool.install(|| {
                (start..end)
                    .into_par_iter()
                    .map(|i| {
                        let raw = &images.data[i * plane..(i + 1) * plane];
                        let source = format!("{url}#{i}");
                        let (pw, ph, pixels) = resize_grey(raw, w, h, opts.max_side)
                            .map_err(|e| (source.clone(), plane as u64, e))?;
                        Ok(ImageRow {
                            id: blake3::hash(raw).to_hex().to_string(),
                            source,
                            width: w,
                            height: h,
                            format: "idx".into(),
                            file_size: plane as u64,
                            label: labels.as_ref().as_ref().map(|l| i64::from(l[i])),
                            pixels,
                            channels: 1,
                            pixel_width: pw,
                            pixel_height: ph,
                        })
                    })
                    .collect::<Vec<_>>()
            })
        })
        .await
        .map_err(|e| stage_err(IngestError::Workers(e.to_string())))?;
        out.push(rows).await?;
    }
    Ok(())
}
