//! Listing and reading the three source kinds: folders (any store), IDX files, Parquet files.

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use bytes::Bytes;
use dinoflow_storage::{Listed, Store};
use futures::{StreamExt, TryStreamExt};
use parquet::file::FOOTER_SIZE;
use parquet::file::metadata::{FooterTail, ParquetMetaDataReader};

use crate::config::FolderLabels;
use crate::error::IngestError;

/// One encoded image waiting to be decoded.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// Where it came from (`url`, or `url#index` inside a container file).
    pub source: String,
    /// The encoded bytes.
    pub bytes: Bytes,
    /// Its label, if the source has labels.
    pub label: Option<i64>,
}

fn source_err(url: &str, reason: impl std::fmt::Display) -> IngestError {
    IngestError::Source {
        source_url: url.to_string(),
        reason: reason.to_string(),
    }
}

/// Joins a folder URL and a relative key.
fn join_url(folder: &str, key: &str) -> String {
    format!("{}/{key}", folder.trim_end_matches('/'))
}

/// Size and version of one file, for the fingerprint; a clear error when it is missing.
pub async fn stat_file(url: &str) -> Result<Listed, IngestError> {
    dinoflow_storage::stat_url(url)
        .await
        .map_err(|e| source_err(url, e))?
        .ok_or_else(|| {
            source_err(
                url,
                "no such file; check the path (relative paths are relative to the current directory)",
            )
        })
}

/// Reads a whole file.
pub async fn read_file(url: &str) -> Result<Bytes, IngestError> {
    dinoflow_storage::read_url(url)
        .await
        .map_err(|e| source_err(url, e))
}

/// The files of a folder source, sorted, with their labels.
pub struct FolderListing {
    /// The folder's store.
    pub store: Store,
    /// The folder URL as configured.
    pub url: String,
    /// Matching files.
    pub files: Vec<Listed>,
    /// One label per file (all `None` without labels).
    pub labels: Vec<Option<i64>>,
    /// Entries that match but cannot be read (broken symbolic links in a local folder): their
    /// source URL and why, for the `errors` output.
    pub unreadable: Vec<(String, String)>,
}

/// Lists the files of `url` that match `glob` (default: every file that is not hidden).
pub async fn list_folder(
    url: &str,
    glob: Option<&str>,
    labels: FolderLabels,
) -> Result<FolderListing, IngestError> {
    let store = Store::open(url).map_err(|e| source_err(url, e))?;
    let pattern = glob
        .map(glob::Pattern::new)
        .transpose()
        .map_err(|e| source_err(url, format!("invalid glob: {e}")))?;
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let wanted = |key: &str| {
        !key.split('/').any(|part| part.starts_with('.'))
            && pattern
                .as_ref()
                .is_none_or(|p| p.matches_with(key, options))
    };
    let files: Vec<Listed> = store
        .list("")
        .await
        .map_err(|e| source_err(url, e))?
        .into_iter()
        .filter(|f| wanted(&f.key))
        .collect();
    let unreadable: Vec<(String, String)> = match store.local_root() {
        Some(root) => broken_links(root, root)
            .into_iter()
            .filter(|(key, _)| wanted(key))
            .map(|(key, reason)| (join_url(url, &key), reason))
            .collect(),
        None => Vec::new(),
    };
    if files.is_empty() && unreadable.is_empty() {
        return Err(source_err(url, "no files match; check `path` and `glob`"));
    }
    let labels = match labels {
        FolderLabels::None => vec![None; files.len()],
        FolderLabels::ParentDir => {
            let parent = |k: &str| k.rsplit('/').nth(1).unwrap_or("").to_string();
            let mut classes: Vec<String> = files.iter().map(|f| parent(&f.key)).collect();
            classes.sort();
            classes.dedup();
            files
                .iter()
                .map(|f| {
                    classes
                        .binary_search(&parent(&f.key))
                        .ok()
                        .map(|i| i as i64)
                })
                .collect()
        }
    };
    Ok(FolderListing {
        store,
        url: url.to_string(),
        files,
        labels,
        unreadable,
    })
}

/// Symbolic links under `dir` whose target cannot be read (the store's listing leaves them out):
/// their keys relative to `root`, and why.
fn broken_links(root: &std::path::Path, dir: &std::path::Path) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() && !kind.is_symlink() => {
                out.extend(broken_links(root, &path));
            }
            Err(e) if kind.is_symlink() => {
                let key = path.strip_prefix(root).unwrap_or(&path);
                let target = std::fs::read_link(&path)
                    .map(|t| t.display().to_string())
                    .unwrap_or_default();
                out.push((
                    key.to_string_lossy().to_string(),
                    format!("broken symbolic link to {target}: {e}"),
                ));
            }
            _ => {}
        }
    }
    out.sort();
    out
}

impl FolderListing {
    /// Reads files `range` concurrently, in order.
    pub async fn fetch(&self, range: std::ops::Range<usize>) -> Result<Vec<Encoded>, IngestError> {
        futures::stream::iter(range)
            .map(|i| async move {
                let f = &self.files[i];
                let bytes = self
                    .store
                    .get(&f.key)
                    .await
                    .map_err(|e| source_err(&self.url, e))?;
                Ok::<_, IngestError>(Encoded {
                    source: join_url(&self.url, &f.key),
                    bytes,
                    label: self.labels[i],
                })
            })
            .buffered(32)
            .try_collect()
            .await
    }
}

/// The Parquet files of a Parquet source (one file, or every `*.parquet` in a folder), sorted.
pub async fn list_parquet(url: &str) -> Result<Vec<(String, Listed)>, IngestError> {
    if url.ends_with(".parquet") {
        return Ok(vec![(url.to_string(), stat_file(url).await?)]);
    }
    let store = Store::open(url).map_err(|e| source_err(url, e))?;
    let files: Vec<(String, Listed)> = store
        .list("")
        .await
        .map_err(|e| source_err(url, e))?
        .into_iter()
        .filter(|f| f.key.ends_with(".parquet"))
        .map(|f| (join_url(url, &f.key), f))
        .collect();
    if files.is_empty() {
        return Err(source_err(url, "no *.parquet files in this folder"));
    }
    Ok(files)
}

/// A Parquet file of a source and its number of rows.
#[derive(Debug, Clone)]
pub struct ParquetFile {
    /// The file's URL.
    pub url: String,
    /// Rows, from the file's footer.
    pub rows: usize,
}

/// The Parquet files of a source with their row counts, read from the footers alone (two ranged
/// reads a file), so that the source can be split into tasks without reading it.
pub async fn parquet_files(url: &str) -> Result<Vec<ParquetFile>, IngestError> {
    let mut files = Vec::new();
    for (file, listed) in list_parquet(url).await? {
        let rows = parquet_row_count(&file, listed.size).await?;
        files.push(ParquetFile { url: file, rows });
    }
    Ok(files)
}

async fn parquet_row_count(url: &str, size: u64) -> Result<usize, IngestError> {
    let bad = |reason: &dyn std::fmt::Display| {
        source_err(url, format!("not a readable Parquet file: {reason}"))
    };
    let footer = FOOTER_SIZE as u64;
    if size < footer + 4 {
        return Err(bad(&format!("{size} bytes is too short")));
    }
    let read = |range: std::ops::Range<u64>| async move {
        dinoflow_storage::read_url_range(url, range)
            .await
            .map_err(|e| source_err(url, e))
    };
    let tail = read(size - footer..size).await?;
    let length = FooterTail::try_from(tail.as_ref())
        .map_err(|e| bad(&e))?
        .metadata_length() as u64;
    if length + footer + 4 > size {
        return Err(bad(&format!(
            "its footer claims {length} bytes of metadata in a file of {size}"
        )));
    }
    let metadata = read(size - footer - length..size - footer).await?;
    let metadata = ParquetMetaDataReader::decode_metadata(&metadata).map_err(|e| bad(&e))?;
    usize::try_from(metadata.file_metadata().num_rows()).map_err(|_| bad(&"a negative row count"))
}

/// Turns a batch of a Parquet source into encoded images; `first_row` numbers the sources.
pub fn parquet_rows(
    url: &str,
    batch: &RecordBatch,
    column: &str,
    label_column: Option<&str>,
    first_row: usize,
) -> Result<Vec<Encoded>, IngestError> {
    let images = batch.column_by_name(column).ok_or_else(|| {
        let names: Vec<_> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        source_err(
            url,
            format!("no column `{column}`; columns are: {}", names.join(", ")),
        )
    })?;
    let values: Vec<Option<Bytes>> = match images.data_type() {
        DataType::Binary => images
            .as_binary::<i32>()
            .iter()
            .map(|v| v.map(Bytes::copy_from_slice))
            .collect(),
        DataType::LargeBinary => images
            .as_binary::<i64>()
            .iter()
            .map(|v| v.map(Bytes::copy_from_slice))
            .collect(),
        DataType::BinaryView => images
            .as_binary_view()
            .iter()
            .map(|v| v.map(Bytes::copy_from_slice))
            .collect(),
        other => {
            return Err(source_err(
                url,
                format!("column `{column}` is {other}, expected binary image bytes"),
            ));
        }
    };
    let labels: Vec<Option<i64>> = match label_column {
        None => vec![None; batch.num_rows()],
        Some(name) => {
            let col = batch
                .column_by_name(name)
                .ok_or_else(|| source_err(url, format!("no label column `{name}`")))?;
            let cast = arrow_cast::cast(col, &DataType::Int64)
                .map_err(|e| source_err(url, format!("label column `{name}`: {e}")))?;
            let ints = cast.as_primitive::<arrow_array::types::Int64Type>();
            (0..ints.len())
                .map(|i| (!ints.is_null(i)).then(|| ints.value(i)))
                .collect()
        }
    };
    Ok(values
        .into_iter()
        .zip(labels)
        .enumerate()
        .map(|(i, (bytes, label))| Encoded {
            source: format!("{url}#{}", first_row + i),
            bytes: bytes.unwrap_or_default(),
            label,
        })
        .collect())
}
