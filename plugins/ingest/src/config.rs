//! The ingest stage's configuration (`with:`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Configuration of the `ingest` stage.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Where the images come from.
    pub source: Source,
    /// Longest side of the stored pixels; larger images are scaled down (aspect kept, never up).
    #[serde(default = "default_max_side")]
    pub max_side: u32,
    /// Images with more pixels are refused before decoding (decompression-bomb guard).
    #[serde(default = "default_max_pixels")]
    pub max_pixels: u64,
    /// Ingest only the first `limit` images of the source (in source order).
    #[serde(default)]
    pub limit: Option<u64>,
    /// Images decoded per batch.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Rows per output Parquet shard.
    #[serde(default = "default_shard_rows")]
    pub shard_rows: usize,
}

fn default_max_side() -> u32 {
    256
}
fn default_max_pixels() -> u64 {
    100_000_000
}
fn default_batch_size() -> usize {
    1024
}
fn default_shard_rows() -> usize {
    50_000
}

/// A source of images; exactly one of the keys.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Source {
    /// Image files in a folder (any store URL), recursively, format sniffed from content.
    Folder {
        /// Folder path or URL.
        path: String,
        /// Glob over paths relative to the folder, e.g. `**/*.jpg` (default: every file that is
        /// not hidden).
        #[serde(default)]
        glob: Option<String>,
        /// Where labels come from.
        #[serde(default)]
        labels: FolderLabels,
    },
    /// IDX files (MNIST family), raw or gzipped.
    Idx {
        /// The images file (`*-images-idx3-ubyte[.gz]`).
        images: String,
        /// The labels file (`*-labels-idx1-ubyte[.gz]`), optional.
        #[serde(default)]
        labels: Option<String>,
    },
    /// A Parquet file, or a folder of them, with encoded image bytes in a binary column.
    Parquet {
        /// File or folder path or URL.
        path: String,
        /// The column with the encoded image bytes.
        #[serde(default = "default_image_column")]
        column: String,
        /// An integer column with labels, optional.
        #[serde(default)]
        label_column: Option<String>,
    },
}

fn default_image_column() -> String {
    "image".into()
}

/// How a folder source assigns labels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FolderLabels {
    /// No labels.
    #[default]
    None,
    /// The immediate parent folder's name, numbered in sorted order (as torchvision's ImageFolder).
    ParentDir,
}
