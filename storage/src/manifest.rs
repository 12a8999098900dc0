//! Manifests: the last file written for a stage's outputs. A manifest lists every output (dataset or
//! artifact) with its files, sizes and digests; its presence, with every listed file present at the
//! listed size, is what makes a result visible and a cache hit.

use std::collections::BTreeMap;

use arrow_schema::Schema;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StorageError};
use crate::store::Store;

/// The manifest's file name inside `objects/<fingerprint>/`.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The folder holding the outputs of the stage run with this fingerprint.
pub fn object_dir(fingerprint: &str) -> String {
    format!("objects/{fingerprint}")
}

/// One file of an output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the object folder, e.g. `images/part-00000.parquet`.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// blake3 of the content, hex.
    pub blake3: String,
    /// Rows in this file, for dataset shards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

impl FileEntry {
    /// Describes `data` stored at `path`.
    pub fn describe(path: String, data: &[u8], rows: Option<u64>) -> Self {
        Self {
            path,
            size: data.len() as u64,
            blake3: blake3::hash(data).to_hex().to_string(),
            rows,
        }
    }
}

/// Whether an output is a dataset (Parquet shards with a schema) or an artifact (model files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// Parquet shards sharing one Arrow schema.
    Dataset,
    /// Opaque files such as safetensors checkpoints with a JSON config.
    Artifact,
}

/// One output port's committed content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputManifest {
    /// Dataset or artifact.
    pub kind: OutputKind,
    /// The Arrow schema, for datasets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Schema>,
    /// Total rows, for datasets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// The files, in order.
    pub files: Vec<FileEntry>,
    /// blake3 over the files' paths, sizes and digests: equal digests mean equal content.
    pub digest: String,
}

impl OutputManifest {
    /// Builds a dataset output from its shards.
    pub fn dataset(schema: Schema, files: Vec<FileEntry>) -> Self {
        let rows = files.iter().filter_map(|f| f.rows).sum();
        Self {
            kind: OutputKind::Dataset,
            schema: Some(schema),
            rows: Some(rows),
            digest: files_digest(&files),
            files,
        }
    }

    /// Builds an artifact output from its files.
    pub fn artifact(files: Vec<FileEntry>) -> Self {
        Self {
            kind: OutputKind::Artifact,
            schema: None,
            rows: None,
            digest: files_digest(&files),
            files,
        }
    }

    /// Total bytes of the output's files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

fn files_digest(files: &[FileEntry]) -> String {
    let mut h = blake3::Hasher::new();
    for f in files {
        h.update(f.path.as_bytes());
        h.update(&[0]);
        h.update(&f.size.to_le_bytes());
        h.update(f.blake3.as_bytes());
        h.update(b"\n");
    }
    h.finalize().to_hex().to_string()
}

/// Everything one stage run committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The fingerprint that names the object folder.
    pub fingerprint: String,
    /// The stage kind that produced it.
    pub kind: String,
    /// The stage kind's version.
    pub version: String,
    /// The outputs by port name.
    pub outputs: BTreeMap<String, OutputManifest>,
}

/// Why a fingerprint is not a cache hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    /// Nothing was ever committed under this fingerprint (or a crash came before the manifest).
    NoManifest,
    /// The manifest exists but cannot be read.
    BadManifest(String),
    /// A listed file is gone.
    MissingFile(String),
    /// A listed file has another size than the manifest says.
    WrongSize {
        /// The file.
        path: String,
        /// Size in the manifest.
        expected: u64,
        /// Size in the store.
        actual: u64,
    },
}

impl std::fmt::Display for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Miss::NoManifest => write!(f, "no committed output"),
            Miss::BadManifest(e) => write!(f, "manifest unreadable ({e})"),
            Miss::MissingFile(p) => write!(f, "output file {p} is missing"),
            Miss::WrongSize {
                path,
                expected,
                actual,
            } => write!(
                f,
                "output file {path} has {actual} bytes, manifest says {expected}"
            ),
        }
    }
}

/// The outcome of a cache check.
#[derive(Debug, Clone)]
pub enum CacheState {
    /// Committed and complete.
    Hit(Manifest),
    /// Not usable, and why.
    Miss(Miss),
}

impl Store {
    /// Checks whether the outputs for `fingerprint` are committed and complete: the manifest exists
    /// and every file it lists exists with the listed size.
    pub async fn check_cached(&self, fingerprint: &str) -> Result<CacheState> {
        let dir = object_dir(fingerprint);
        let Some(bytes) = self.get_opt(&format!("{dir}/{MANIFEST_FILE}")).await? else {
            return Ok(CacheState::Miss(Miss::NoManifest));
        };
        let manifest: Manifest = match serde_json::from_slice(&bytes) {
            Ok(m) => m,
            Err(e) => return Ok(CacheState::Miss(Miss::BadManifest(e.to_string()))),
        };
        Ok(match self.files_miss(&manifest).await? {
            Some(miss) => CacheState::Miss(miss),
            None => CacheState::Hit(manifest),
        })
    }

    /// The first file `manifest` lists that is not in the store at its listed size, if any.
    pub async fn files_miss(&self, manifest: &Manifest) -> Result<Option<Miss>> {
        let dir = object_dir(&manifest.fingerprint);
        let listed: BTreeMap<String, u64> = self
            .list(&dir)
            .await?
            .into_iter()
            .map(|l| (l.key, l.size))
            .collect();
        for out in manifest.outputs.values() {
            for file in &out.files {
                let key = format!("{dir}/{}", file.path);
                match listed.get(&key) {
                    None => return Ok(Some(Miss::MissingFile(key))),
                    Some(&size) if size != file.size => {
                        return Ok(Some(Miss::WrongSize {
                            path: key,
                            expected: file.size,
                            actual: size,
                        }));
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(None)
    }

    /// Reads every file `manifest` lists and compares its size and content with the manifest's:
    /// `None` when all match, else what is wrong.
    pub async fn verify_content(&self, manifest: &Manifest) -> Result<Option<String>> {
        if let Some(miss) = self.files_miss(manifest).await? {
            return Ok(Some(format!(
                "{miss}; `dinoflow gc` removes this output and the next run writes it again"
            )));
        }
        let dir = object_dir(&manifest.fingerprint);
        for out in manifest.outputs.values() {
            for file in &out.files {
                let key = format!("{dir}/{}", file.path);
                let data = self.get(&key).await?;
                if blake3::hash(&data).to_hex().as_str() != file.blake3 {
                    return Ok(Some(format!(
                        "output file {key} does not have the content its manifest records; \
                         delete the folder {dir} and run the workflow again to rebuild it"
                    )));
                }
            }
        }
        Ok(None)
    }

    /// Writes the manifest, which makes the outputs visible. Call it after every file is written:
    /// it checks first that each listed file is in the store at its size, so a manifest never
    /// points at a missing or short file even when the store lost or cut a write. The manifest is
    /// written only if none is there (a conditional put where the store has one); when another
    /// process committed the same fingerprint first, its outputs must equal these, else the
    /// stage is not deterministic and the commit fails saying so.
    pub async fn commit_manifest(&self, manifest: &Manifest) -> Result<()> {
        let key = format!("{}/{MANIFEST_FILE}", object_dir(&manifest.fingerprint));
        if let Some(miss) = self.files_miss(manifest).await? {
            return Err(StorageError::Invalid(format!(
                "not committing {key}: {miss} after upload; the stage's outputs stay invisible \
                 and the next run writes them again"
            )));
        }
        let json = serde_json::to_vec_pretty(manifest).map_err(|e| StorageError::Manifest {
            path: key.clone(),
            source: e,
        })?;
        if self.put_if_absent(&key, Bytes::from(json)).await? {
            return Ok(());
        }
        let theirs = self.get(&key).await?;
        match serde_json::from_slice::<Manifest>(&theirs) {
            Ok(theirs) if theirs.outputs == manifest.outputs => Ok(()),
            _ => Err(StorageError::Invalid(format!(
                "{key} was committed meanwhile by another process with other outputs: the stage \
                 did not compute the same bytes twice (is it deterministic?); delete the folder \
                 {} and run again",
                object_dir(&manifest.fingerprint)
            ))),
        }
    }

    /// Writes one file of an output under `objects/<fingerprint>/` and describes it for the manifest.
    pub async fn put_output_file(
        &self,
        fingerprint: &str,
        path: &str,
        data: Bytes,
        rows: Option<u64>,
    ) -> Result<FileEntry> {
        let entry = FileEntry::describe(path.to_string(), &data, rows);
        self.put(&format!("{}/{path}", object_dir(fingerprint)), data)
            .await?;
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-file artifact `model` under `fingerprint`, written to `store`.
    async fn commit_of(store: &Store, fingerprint: &str, content: &'static [u8]) -> Manifest {
        let file = store
            .put_output_file(
                fingerprint,
                "model/w.bin",
                Bytes::from_static(content),
                None,
            )
            .await
            .unwrap();
        Manifest {
            fingerprint: fingerprint.to_string(),
            kind: "test".into(),
            version: "1.0.0".into(),
            outputs: BTreeMap::from([("model".to_string(), OutputManifest::artifact(vec![file]))]),
        }
    }

    #[tokio::test]
    async fn a_second_commit_must_match_the_first() {
        let dir = tempfile::tempdir().unwrap();
        for url in [
            "memory://second-commit".to_string(),
            dir.path().display().to_string(),
        ] {
            let store = Store::open(&url).unwrap();
            let first = commit_of(&store, "f1", b"same bytes").await;
            store.commit_manifest(&first).await.unwrap();
            // The same outputs again (a race between two processes): fine.
            store.commit_manifest(&first).await.unwrap();
            // Other bytes under the same fingerprint: refused, the first commit stays.
            let other = commit_of(&store, "f1", b"other bytes").await;
            let err = store.commit_manifest(&other).await.unwrap_err().to_string();
            assert!(err.contains("deterministic"), "{url}: {err}");
            let kept: Manifest =
                serde_json::from_slice(&store.get("objects/f1/manifest.json").await.unwrap())
                    .unwrap();
            assert_eq!(kept, first, "{url}");
        }
    }
}
