//! Store faults: an object store that fails calls, answers slowly, refuses writes or keeps only
//! half of a file. Transient errors are retried to the same results as a clean run; a permanent
//! error fails the stage naming the file, keeps earlier outputs and commits nothing partial; and
//! no manifest ever points at a missing or short file (`Engine::check_store`, which
//! `dinoflow gc --check` prints).

mod common;

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::{CHAIN, CHAIN_TOTAL, fp, opts, outcome};
use dinoflow_engine::{Engine, Silent, StageStatus};
use dinoflow_storage::{RetryPolicy, Store};
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// A local folder behind an object store that misbehaves on purpose.
#[derive(Debug)]
struct FaultyStore {
    inner: LocalFileSystem,
    /// Every distinct (operation, path) fails this many times before it is let through.
    transient_failures: u32,
    /// Delay before each call.
    latency: Duration,
    /// Writes to paths containing this text fail with "permission denied".
    refuse_writes_to: Mutex<Option<String>>,
    /// Writes to paths containing this text keep only the first half of the bytes.
    cut_writes_to: Mutex<Option<String>>,
    calls: Mutex<HashMap<String, u32>>,
    injected: AtomicU64,
}

impl FaultyStore {
    fn new(root: &FsPath, transient_failures: u32, latency: Duration) -> Self {
        Self {
            inner: LocalFileSystem::new_with_prefix(root).unwrap(),
            transient_failures,
            latency,
            refuse_writes_to: Mutex::new(None),
            cut_writes_to: Mutex::new(None),
            calls: Mutex::new(HashMap::new()),
            injected: AtomicU64::new(0),
        }
    }

    /// Whether this call of `op` on `path` is one of the failing ones.
    fn fails(&self, op: &str, path: Option<&Path>) -> bool {
        let key = format!("{op} {}", path.map(|p| p.as_ref()).unwrap_or(""));
        let mut calls = self.calls.lock().unwrap();
        let n = calls.entry(key).or_default();
        *n += 1;
        let fails = *n <= self.transient_failures;
        if fails {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        fails
    }

    async fn fault(&self, op: &str, path: Option<&Path>) -> object_store::Result<()> {
        tokio::time::sleep(self.latency).await;
        if self.fails(op, path) {
            return Err(transient(op));
        }
        Ok(())
    }

    fn matches(rule: &Mutex<Option<String>>, path: &Path) -> bool {
        rule.lock()
            .unwrap()
            .as_deref()
            .is_some_and(|needle| path.as_ref().contains(needle))
    }
}

fn transient(op: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "faulty",
        source: format!("injected: connection reset during {op}").into(),
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.fault("put", Some(location)).await?;
        if Self::matches(&self.refuse_writes_to, location) {
            return Err(object_store::Error::PermissionDenied {
                path: location.to_string(),
                source: "injected: write refused".into(),
            });
        }
        let payload = if Self::matches(&self.cut_writes_to, location) {
            let bytes = bytes::Bytes::from(payload);
            PutPayload::from(bytes.slice(..bytes.len() / 2))
        } else {
            payload
        };
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.fault("put_multipart", Some(location)).await?;
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.fault("get", Some(location)).await?;
        self.inner.get_opts(location, options).await
    }
    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.fault("get_ranges", Some(location)).await?;
        self.inner.get_ranges(location, ranges).await
    }
    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.fault("delete", Some(location)).await?;
        self.inner.delete(location).await
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if self.fails("list", prefix) {
            return futures::stream::once(async { Err(transient("list")) }).boxed();
        }
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.fault("list_with_delimiter", prefix).await?;
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.fault("copy", Some(to)).await?;
        self.inner.copy(from, to).await
    }
    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.fault("copy_if_not_exists", Some(to)).await?;
        self.inner.copy_if_not_exists(from, to).await
    }
}

/// An engine on a faulty store in `dir/store` (run database in `dir/state`), retrying quickly.
fn faulty_engine(dir: &FsPath, faults: Arc<FaultyStore>) -> Engine {
    let store = Store::from_object_store(faults, "faulty://test").with_retry_policy(RetryPolicy {
        attempts: 5,
        first_delay: Duration::from_millis(2),
    });
    Engine::open_in(store, &dir.join("state"), Arc::new(Silent)).unwrap()
}

fn setup(transient_failures: u32, latency: Duration) -> (tempfile::TempDir, Arc<FaultyStore>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("store")).unwrap();
    let faults = Arc::new(FaultyStore::new(
        &dir.path().join("store"),
        transient_failures,
        latency,
    ));
    (dir, faults)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_and_latency_are_retried_to_the_results_of_a_clean_run() {
    let clean = common::Env::new();
    let dag = clean.dag(CHAIN);
    let expected = clean.engine.run(&dag, &opts(false)).await.unwrap();
    assert!(expected.succeeded());

    // Every call on every path fails twice (of 5 attempts) and each call waits 2 ms.
    let (dir, faults) = setup(2, Duration::from_millis(2));
    let engine = faulty_engine(dir.path(), Arc::clone(&faults));
    let report = engine.run(&dag, &opts(false)).await.unwrap();
    assert!(report.succeeded(), "{report:?}");
    let injected = faults.injected.load(Ordering::Relaxed);
    assert!(injected >= 40, "only {injected} faults injected");
    for (got, want) in report.stages.iter().zip(&expected.stages) {
        assert_eq!(got.fingerprint, want.fingerprint);
        let got_m = match engine.store().check_cached(&got.fingerprint).await.unwrap() {
            dinoflow_storage::CacheState::Hit(m) => m,
            miss => panic!("{}: {miss:?}", got.name),
        };
        let want_m = clean.manifest(&want.fingerprint).await;
        for (port, out) in &want_m.outputs {
            assert_eq!(
                got_m.outputs[port].digest, out.digest,
                "{} {port}",
                got.name
            );
        }
    }
    let check = engine.check_store().await.unwrap();
    assert_eq!(check.committed.len(), 3);
    assert!(
        check.damaged.is_empty() && check.incomplete.is_empty(),
        "{check:?}"
    );

    // A second run through the same faults is all cache hits.
    let again = engine.run(&dag, &opts(false)).await.unwrap();
    assert!(
        again.stages.iter().all(|s| s.status == StageStatus::Cached),
        "{again:?}"
    );
}

/// The chain workflow, planned on a faulty store that injects no transient errors.
async fn chain_on_faulty_store() -> (
    tempfile::TempDir,
    Arc<FaultyStore>,
    Engine,
    dinoflow_engine::Dag,
    Vec<dinoflow_engine::PlannedStage>,
) {
    let (dir, faults) = setup(0, Duration::ZERO);
    let engine = faulty_engine(dir.path(), Arc::clone(&faults));
    let registry = common::registry(&common::Runs::default());
    let dag = common::dag(&registry, CHAIN);
    let plan = engine.plan(&dag).await.unwrap();
    (dir, faults, engine, dag, plan)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_fails_the_stage_naming_the_file_and_commits_nothing() {
    let (_dir, faults, engine, dag, plan) = chain_on_faulty_store().await;
    let squares = fp(&plan, "squares");
    *faults.refuse_writes_to.lock().unwrap() = Some(squares.clone());

    let report = engine.run(&dag, &opts(false)).await.unwrap();
    assert!(!report.succeeded());
    assert_eq!(outcome(&report, "nums").status, StageStatus::Ok);
    assert_eq!(outcome(&report, "squares").status, StageStatus::Failed);
    assert_eq!(outcome(&report, "total").status, StageStatus::Skipped);
    let error = outcome(&report, "squares")
        .error
        .clone()
        .unwrap_or_default();
    assert!(
        error.contains(&format!("objects/{squares}/")) && error.contains("write refused"),
        "{error}"
    );
    let check = engine.check_store().await.unwrap();
    assert_eq!(check.committed, vec![fp(&plan, "nums")], "{check:?}");
    assert!(check.damaged.is_empty(), "{check:?}");

    // The store accepts writes again: only the failed stage and its consumer run.
    *faults.refuse_writes_to.lock().unwrap() = None;
    let report = engine.run(&dag, &opts(false)).await.unwrap();
    assert!(report.succeeded(), "{report:?}");
    assert_eq!(outcome(&report, "nums").status, StageStatus::Cached);
    assert_eq!(outcome(&report, "squares").status, StageStatus::Ok);
    let total = common::read_values(engine.store(), &fp(&plan, "total"), "rows").await;
    assert_eq!(total, vec![CHAIN_TOTAL]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_write_is_never_committed() {
    let (_dir, faults, engine, dag, plan) = chain_on_faulty_store().await;
    let squares = fp(&plan, "squares");
    // The store reports success but keeps half of each shard of `squares`.
    *faults.cut_writes_to.lock().unwrap() = Some(format!("{squares}/rows/"));

    let report = engine.run(&dag, &opts(false)).await.unwrap();
    assert_eq!(outcome(&report, "squares").status, StageStatus::Failed);
    let error = outcome(&report, "squares")
        .error
        .clone()
        .unwrap_or_default();
    assert!(
        error.contains("not committing") && error.contains("after upload"),
        "{error}"
    );
    let check = engine.check_store().await.unwrap();
    assert!(check.damaged.is_empty(), "{check:?}");
    assert_eq!(check.incomplete, vec![squares.clone()], "{check:?}");

    *faults.cut_writes_to.lock().unwrap() = None;
    let report = engine.run(&dag, &opts(false)).await.unwrap();
    assert!(report.succeeded(), "{report:?}");
    let total = common::read_values(engine.store(), &fp(&plan, "total"), "rows").await;
    assert_eq!(total, vec![CHAIN_TOTAL]);
    let check = engine.check_store().await.unwrap();
    assert_eq!(check.committed.len(), 3, "{check:?}");
    assert!(
        check.damaged.is_empty() && check.incomplete.is_empty(),
        "{check:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_finds_files_changed_behind_the_manifest() {
    let env = common::Env::new();
    let dag = env.dag(CHAIN);
    let plan = env.engine.plan(&dag).await.unwrap();
    assert!(
        env.engine
            .run(&dag, &opts(false))
            .await
            .unwrap()
            .succeeded()
    );
    let squares = env.manifest(&fp(&plan, "squares")).await;
    let file = &squares.outputs["rows"].files[0];
    let path = env.object_path(&squares.fingerprint).join(&file.path);
    // Same size, other content: no size check can see it.
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();

    let check = env.engine.check_store().await.unwrap();
    assert_eq!(check.damaged.len(), 1, "{check:?}");
    assert_eq!(check.damaged[0].fingerprint, squares.fingerprint);
    assert!(
        check.damaged[0].problem.contains(&file.path)
            && check.damaged[0].problem.contains("delete the folder"),
        "{check:?}"
    );
    assert_eq!(check.committed.len(), 2);
}
