//! Where dinoflow data lives: object-store URLs ([`Store`]), datasets as Parquet shards
//! ([`DatasetWriter`], [`Dataset`]), and manifests that make a stage's outputs visible all at once
//! ([`Manifest`], [`CacheState`]).

mod dataset;
mod error;
mod manifest;
mod retry;
pub mod schemas;
mod store;

pub use dataset::{Dataset, DatasetWriter, ShardLimits};
pub use error::{Result, StorageError};
pub use manifest::{
    CacheState, FileEntry, MANIFEST_FILE, Manifest, Miss, OutputKind, OutputManifest, object_dir,
};
pub use retry::{RetryPolicy, is_transient, with_retry};
pub use store::{Listed, Store, check_url, read_url, read_url_range, split_file_url, stat_url};
