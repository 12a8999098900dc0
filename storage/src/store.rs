//! A store: one object-store URL (local folder, memory, S3, GCS, Azure, HTTP) with a root prefix,
//! addressed by relative keys such as `objects/<fingerprint>/manifest.json`.

use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, PutMode, PutOptions, PutPayload};

use crate::error::{Result, StorageError};
use crate::retry::{RetryPolicy, with_retry};

/// A handle on one store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    root: Path,
    url: String,
    local_root: Option<PathBuf>,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("url", &self.url).finish()
    }
}

/// One listed object: its key relative to the store root, size and version tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Key relative to the store root, `/`-separated.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time as RFC 3339, and the e-tag when the store has one: together they
    /// change whenever the content may have changed.
    pub version: String,
}

fn memory_stores() -> &'static Mutex<HashMap<String, Arc<InMemory>>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

fn bad_url(url: &str, reason: impl std::fmt::Display) -> StorageError {
    StorageError::BadUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    }
}

/// Schemes whose URL names a bucket (or container, or host) before the path.
const BUCKET_SCHEMES: [&str; 10] = [
    "memory", "s3", "s3a", "gs", "az", "abfs", "abfss", "azure", "http", "https",
];

/// Checks that `url` is a store URL [`Store::open`] understands (a path, or a known scheme with
/// its bucket), without touching the store: for validating workflows before anything runs.
pub fn check_url(url: &str) -> Result<()> {
    if url.trim().is_empty() {
        return Err(bad_url(
            url,
            "empty; give a folder path or a URL such as s3://bucket/prefix",
        ));
    }
    let Some((scheme, _)) = url.split_once("://") else {
        return Ok(());
    };
    let parsed = url::Url::parse(url).map_err(|e| bad_url(url, e))?;
    match scheme {
        "file" => parsed
            .to_file_path()
            .map(|_| ())
            .map_err(|()| bad_url(url, "not a valid file path")),
        s if BUCKET_SCHEMES.contains(&s) => {
            if parsed.host_str().is_none_or(str::is_empty) {
                Err(bad_url(
                    url,
                    format!("`{s}://` needs a bucket (or host): {s}://NAME/prefix"),
                ))
            } else {
                Ok(())
            }
        }
        other => Err(bad_url(
            url,
            format!(
                "unknown scheme `{other}://`; use a path, file://, memory://, s3://, gs://, az:// or http(s)://"
            ),
        )),
    }
}

impl Store {
    /// Opens an existing store or source folder. Accepts relative and absolute paths, `file://`,
    /// `memory://NAME` (shared within the process), `s3://`, `gs://`, `az://`/`abfs://` and
    /// `http(s)://` (read-only); cloud credentials come from the usual environment variables.
    pub fn open(url: &str) -> Result<Self> {
        Self::open_inner(url, false)
    }

    /// Like [`Store::open`], but creates a local folder that does not exist yet.
    pub fn create(url: &str) -> Result<Self> {
        Self::open_inner(url, true)
    }

    fn open_inner(url: &str, create: bool) -> Result<Self> {
        check_url(url)?;
        let Some((scheme, _)) = url.split_once("://") else {
            return Self::local(url, PathBuf::from(url), create);
        };
        let parsed = url::Url::parse(url).map_err(|e| bad_url(url, e))?;
        let root = Path::from(parsed.path().trim_matches('/'));
        let inner: Arc<dyn ObjectStore> = match scheme {
            "file" => {
                let path = parsed
                    .to_file_path()
                    .map_err(|()| bad_url(url, "not a valid file path"))?;
                return Self::local(url, path, create);
            }
            "memory" => {
                let name = parsed.host_str().unwrap_or_default().to_string();
                let mut stores = memory_stores()
                    .lock()
                    .map_err(|_| bad_url(url, "poisoned"))?;
                let store = stores
                    .entry(name)
                    .or_insert_with(|| Arc::new(InMemory::new()));
                Arc::clone(store) as Arc<dyn ObjectStore>
            }
            "s3" | "s3a" => Arc::new(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| bad_url(url, e))?,
            ),
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| bad_url(url, e))?,
            ),
            "az" | "abfs" | "abfss" | "azure" => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| bad_url(url, e))?,
            ),
            "http" | "https" => {
                let origin = parsed.origin().ascii_serialization();
                Arc::new(
                    object_store::http::HttpBuilder::new()
                        .with_url(origin)
                        .build()
                        .map_err(|e| bad_url(url, e))?,
                )
            }
            other => return Err(bad_url(url, format!("unknown scheme `{other}://`"))),
        };
        // Bucket-style URLs: the host is the bucket, the path the prefix inside it.
        let root = if BUCKET_SCHEMES.contains(&scheme) {
            root
        } else {
            Path::default()
        };
        Ok(Self {
            inner,
            root,
            url: url.to_string(),
            local_root: None,
            retry: RetryPolicy::default(),
        })
    }

    fn local(url: &str, path: PathBuf, create: bool) -> Result<Self> {
        if create {
            std::fs::create_dir_all(&path).map_err(|e| StorageError::Io {
                path: path.display().to_string(),
                source: e,
            })?;
        }
        if !path.is_dir() {
            return Err(bad_url(
                url,
                "no such folder; check the path (relative paths are relative to the current directory)",
            ));
        }
        let path = std::fs::canonicalize(&path).map_err(|e| StorageError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        let fs = LocalFileSystem::new_with_prefix(&path).map_err(|e| bad_url(url, e))?;
        Ok(Self {
            inner: Arc::new(fs),
            root: Path::default(),
            url: url.to_string(),
            local_root: Some(path),
            retry: RetryPolicy::default(),
        })
    }

    /// Wraps any `ObjectStore` (used to inject faults in tests, or to plug in custom stores).
    pub fn from_object_store(inner: Arc<dyn ObjectStore>, url: &str) -> Self {
        Self {
            inner,
            root: Path::default(),
            url: url.to_string(),
            local_root: None,
            retry: RetryPolicy::default(),
        }
    }

    /// Replaces the retry policy for transient errors.
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The URL this store was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The local folder behind this store, when it is a local store.
    pub fn local_root(&self) -> Option<&FsPath> {
        self.local_root.as_deref()
    }

    fn path(&self, key: &str) -> Path {
        let key = key.trim_matches('/');
        if self.root.as_ref().is_empty() {
            Path::from(key)
        } else if key.is_empty() {
            self.root.clone()
        } else {
            Path::from(format!("{}/{key}", self.root))
        }
    }

    fn relative(&self, path: &Path) -> String {
        let full = path.as_ref();
        let root = self.root.as_ref();
        if root.is_empty() {
            full.to_string()
        } else {
            full.strip_prefix(root)
                .map(|k| k.trim_start_matches('/'))
                .unwrap_or(full)
                .to_string()
        }
    }

    fn err(op: &'static str, key: &str, source: object_store::Error) -> StorageError {
        StorageError::ObjectStore {
            op,
            path: key.to_string(),
            source: Box::new(source),
        }
    }

    /// Writes `data` at `key`, replacing what was there. Local writes are atomic (temp file + rename).
    pub async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let path = self.path(key);
        with_retry(self.retry, key, || {
            self.inner.put(&path, PutPayload::from_bytes(data.clone()))
        })
        .await
        .map_err(|e| Self::err("put", key, e))?;
        Ok(())
    }

    /// Writes `data` at `key` unless an object is there already: `Ok(true)` when this call wrote
    /// it, `Ok(false)` when one existed. Stores without conditional writes (S3 unless
    /// `AWS_CONDITIONAL_PUT=etag` is set, HTTP) write unconditionally and answer `Ok(true)`.
    pub async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        let path = self.path(key);
        let written = with_retry(self.retry, key, || {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            self.inner
                .put_opts(&path, PutPayload::from_bytes(data.clone()), opts)
        })
        .await;
        match written {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(object_store::Error::NotImplemented) => self.put(key, data).await.map(|()| true),
            Err(e) => Err(Self::err("put", key, e)),
        }
    }

    /// Reads the whole object at `key`.
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        let path = self.path(key);
        with_retry(self.retry, key, || async {
            self.inner.get(&path).await?.bytes().await
        })
        .await
        .map_err(|e| Self::err("get", key, e))
    }

    /// Reads the bytes `range` of the object at `key` (only those travel from a remote store).
    pub async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Bytes> {
        let path = self.path(key);
        with_retry(self.retry, key, || {
            self.inner.get_range(&path, range.clone())
        })
        .await
        .map_err(|e| Self::err("get", key, e))
    }

    /// Reads the object at `key`, or `None` when it does not exist.
    pub async fn get_opt(&self, key: &str) -> Result<Option<Bytes>> {
        match self.get(key).await {
            Ok(b) => Ok(Some(b)),
            Err(StorageError::ObjectStore { source, .. })
                if matches!(*source, object_store::Error::NotFound { .. }) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Size and version of the object at `key`, or `None` when it does not exist.
    pub async fn head(&self, key: &str) -> Result<Option<Listed>> {
        let path = self.path(key);
        match with_retry(self.retry, key, || self.inner.head(&path)).await {
            Ok(meta) => Ok(Some(self.listed(meta))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Self::err("head", key, e)),
        }
    }

    fn listed(&self, meta: ObjectMeta) -> Listed {
        let mut version = meta.last_modified.to_rfc3339();
        if let Some(tag) = meta.e_tag {
            version.push(' ');
            version.push_str(&tag);
        }
        Listed {
            key: self.relative(&meta.location),
            size: meta.size,
            version,
        }
    }

    /// Every object under `prefix` (recursively), sorted by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let path = self.path(prefix);
        let prefix_path = (!path.as_ref().is_empty()).then_some(&path);
        let metas: Vec<ObjectMeta> = with_retry(self.retry, prefix, || {
            self.inner.list(prefix_path).try_collect()
        })
        .await
        .map_err(|e| Self::err("list", prefix, e))?;
        let mut out: Vec<Listed> = metas.into_iter().map(|m| self.listed(m)).collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// The immediate sub-folders of `prefix` (keys relative to the store root).
    pub async fn list_folders(&self, prefix: &str) -> Result<Vec<String>> {
        let path = self.path(prefix);
        let prefix_path = (!path.as_ref().is_empty()).then_some(&path);
        let listing = with_retry(self.retry, prefix, || {
            self.inner.list_with_delimiter(prefix_path)
        })
        .await
        .map_err(|e| Self::err("list", prefix, e))?;
        let mut out: Vec<String> = listing
            .common_prefixes
            .iter()
            .map(|p| self.relative(p))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Deletes the object at `key`; deleting a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key);
        match with_retry(self.retry, key, || self.inner.delete(&path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Self::err("delete", key, e)),
        }
    }

    /// Deletes every object under `prefix`, and the emptied local folders.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        for obj in self.list(prefix).await? {
            self.delete(&obj.key).await?;
        }
        if let Some(root) = &self.local_root {
            let dir = root.join(prefix.trim_matches('/'));
            if dir.is_dir() {
                std::fs::remove_dir_all(&dir).map_err(|e| StorageError::Io {
                    path: dir.display().to_string(),
                    source: e,
                })?;
            }
        }
        Ok(())
    }
}

/// Reads the whole file at `url` (a path or any store URL).
pub async fn read_url(url: &str) -> Result<Bytes> {
    let (dir, name) = split_file_url(url);
    Store::open(&dir)?.get(&name).await
}

/// Reads the bytes `range` of the file at `url` (a path or any store URL).
pub async fn read_url_range(url: &str, range: std::ops::Range<u64>) -> Result<Bytes> {
    let (dir, name) = split_file_url(url);
    Store::open(&dir)?.get_range(&name, range).await
}

/// Size and version of the file at `url`, or `None` when it does not exist.
pub async fn stat_url(url: &str) -> Result<Option<Listed>> {
    let (dir, name) = split_file_url(url);
    Store::open(&dir)?.head(&name).await
}

/// Splits a file URL or path into the folder's URL and the file's name:
/// `s3://b/x/y.gz` → (`s3://b/x`, `y.gz`), `data/a.png` → (`data`, `a.png`), `a.png` → (`.`, `a.png`).
pub fn split_file_url(url: &str) -> (String, String) {
    let trimmed = url.trim_end_matches('/');
    let scheme_end = trimmed.find("://").map(|i| i + 3).unwrap_or(0);
    match trimmed[scheme_end..].rfind('/') {
        Some(i) if i == 0 && scheme_end == 0 => ("/".to_string(), trimmed[1..].to_string()),
        Some(i) => (
            trimmed[..scheme_end + i].to_string(),
            trimmed[scheme_end + i + 1..].to_string(),
        ),
        None if scheme_end == 0 => (".".to_string(), trimmed.to_string()),
        None => (trimmed.to_string(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_file_urls() {
        assert_eq!(
            split_file_url("s3://b/x/y.gz"),
            ("s3://b/x".into(), "y.gz".into())
        );
        assert_eq!(
            split_file_url("data/a.png"),
            ("data".into(), "a.png".into())
        );
        assert_eq!(split_file_url("a.png"), (".".into(), "a.png".into()));
        assert_eq!(split_file_url("/a.png"), ("/".into(), "a.png".into()));
    }

    #[tokio::test]
    async fn memory_store_round_trip_and_listing() {
        let s = Store::create("memory://unit-test/prefix").unwrap();
        s.put("a/b.txt", Bytes::from_static(b"hello"))
            .await
            .unwrap();
        s.put("a/c/d.txt", Bytes::from_static(b"xy")).await.unwrap();
        assert_eq!(
            s.get("a/b.txt").await.unwrap(),
            Bytes::from_static(b"hello")
        );
        assert_eq!(s.get_opt("missing").await.unwrap(), None);
        let keys: Vec<_> = s
            .list("a")
            .await
            .unwrap()
            .into_iter()
            .map(|l| (l.key, l.size))
            .collect();
        assert_eq!(keys, vec![("a/b.txt".into(), 5), ("a/c/d.txt".into(), 2)]);
        assert_eq!(s.list_folders("a").await.unwrap(), vec!["a/c".to_string()]);
        // The same URL in the same process is the same store.
        let again = Store::open("memory://unit-test/prefix").unwrap();
        assert!(again.head("a/b.txt").await.unwrap().is_some());
        s.delete_prefix("a").await.unwrap();
        assert!(again.list("a").await.unwrap().is_empty());
    }

    #[test]
    fn unknown_scheme_and_missing_folder_are_clear_errors() {
        let e = Store::open("ftp://host/x").unwrap_err().to_string();
        assert!(e.contains("unknown scheme `ftp://`"), "{e}");
        let e = Store::open("/definitely/not/here").unwrap_err().to_string();
        assert!(e.contains("no such folder"), "{e}");
    }
}
