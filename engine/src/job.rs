//! One stage run: in this process, or as Slurm jobs. A stage that maps over the shards of one
//! input ([`crate::Stage::shards_by`]) runs as one task per shard, one that splits itself
//! ([`crate::Stage::task_count`]) as that many tasks, and both executors split it the same way, so their outputs are the same files: each task writes under `tasks/NNNNN/` and
//! records a task manifest (`tasks/NNNNN.json`); when every task has one, the outputs are
//! concatenated in task order and committed manifest-last. A stage run on Slurm that does not
//! shard is one task writing the usual layout.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use dinoflow_storage::{
    CacheState, MANIFEST_FILE, Manifest, OutputKind, OutputManifest, StorageError, Store,
    object_dir,
};
use serde::{Deserialize, Serialize};

use crate::dag::Node;
use crate::engine::error_chain;
use crate::lock;
use crate::progress::{ProgressSink, StageEvent};
use crate::slurm::{self, SlurmOptions};
use crate::stage::{InputRef, Resources, StageContext, task_folder};

/// What a finished stage job hands back: its manifest, whether it was reused from another
/// process's commit, and its metrics.
pub(crate) type StageResult = (Manifest, bool, serde_json::Value);

/// What one task committed: its outputs and metrics.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TaskManifest {
    outputs: BTreeMap<String, OutputManifest>,
    metrics: serde_json::Value,
}

fn task_manifest_key(fingerprint: &str, task: usize) -> String {
    format!("{}/{}.json", object_dir(fingerprint), task_folder(task))
}

/// Where a task that failed by itself (not cancelled or lost with its node) leaves its error, so
/// that the controller does not submit it again.
fn task_error_key(fingerprint: &str, task: usize) -> String {
    format!("{}/{}.error", object_dir(fingerprint), task_folder(task))
}

fn text(e: StorageError) -> String {
    e.to_string()
}

/// Everything a stage run needs, owned.
pub(crate) struct StageJob {
    pub node: Node,
    pub fingerprint: String,
    pub store: Store,
    pub locks: PathBuf,
    pub sink: Arc<dyn ProgressSink>,
    pub cpus: usize,
    pub inputs: BTreeMap<String, InputRef>,
}

impl StageJob {
    /// The inputs of each task: one task per shard of the input the stage maps over, or as many
    /// as the stage splits itself into (each with every input); `None` when the stage runs whole.
    async fn tasks(&self) -> Result<Option<Vec<BTreeMap<String, InputRef>>>, String> {
        if let Some(port) = self.node.stage.shards_by() {
            let Some(sharded) = self.inputs.get(port) else {
                return Ok(None);
            };
            let Some(schema) = sharded.output.schema.clone() else {
                return Ok(None);
            };
            if sharded.output.files.len() < 2 {
                return Ok(Some(vec![self.inputs.clone()]));
            }
            let tasks = sharded
                .output
                .files
                .iter()
                .map(|file| {
                    let mut inputs = self.inputs.clone();
                    inputs.insert(
                        port.to_string(),
                        InputRef {
                            fingerprint: sharded.fingerprint.clone(),
                            output: OutputManifest::dataset(schema.clone(), vec![file.clone()]),
                        },
                    );
                    inputs
                })
                .collect();
            return Ok(Some(tasks));
        }
        let count = self
            .node
            .stage
            .task_count(&self.node.config)
            .await
            .map_err(|e| error_chain(&e))?;
        Ok(count.map(|n| vec![self.inputs.clone(); n.max(1)]))
    }

    fn context(&self, inputs: BTreeMap<String, InputRef>, task: Option<usize>) -> StageContext {
        let mut ctx = StageContext::new(
            &self.node.name,
            &self.fingerprint,
            self.store.clone(),
            inputs,
            self.cpus,
            Arc::clone(&self.sink),
        );
        ctx.task = task;
        ctx
    }

    /// Runs the stage (all of it, or task `task` of it) and checks that it wrote every output.
    async fn run_stage(
        &self,
        inputs: BTreeMap<String, InputRef>,
        task: Option<usize>,
    ) -> Result<TaskManifest, String> {
        let ctx = self.context(inputs, task);
        self.node
            .stage
            .run(&self.node.config, &ctx)
            .await
            .map_err(|e| error_chain(&e))?;
        let outputs = ctx.outputs();
        for port in self.node.stage.outputs() {
            if !outputs.contains_key(port.name) {
                return Err(format!(
                    "{} {} finished without writing output `{}` (a bug in the stage kind)",
                    self.node.stage.kind(),
                    self.node.stage.version(),
                    port.name
                ));
            }
        }
        Ok(TaskManifest {
            outputs,
            metrics: ctx.metrics(),
        })
    }

    /// Takes the fingerprint's lock, waiting while another process of this machine holds it, or
    /// returns the stage's manifest when it is committed by then.
    async fn lock_uncommitted(&self) -> Result<Result<lock::FingerprintLock, Manifest>, String> {
        let name = &self.node.name;
        let lock = lock::lock(&self.locks, &self.fingerprint, || {
            self.sink.event(name, &StageEvent::Waiting)
        })
        .await
        .map_err(|e| e.to_string())?;
        if let Some(m) = self.committed().await? {
            return Ok(Err(m));
        }
        // A manifest whose files are missing or cut, or that cannot be read: the run that
        // follows commits a new one.
        let manifest = format!("{}/{MANIFEST_FILE}", object_dir(&self.fingerprint));
        if self.store.get_opt(&manifest).await.map_err(text)?.is_some() {
            self.store.delete(&manifest).await.map_err(text)?;
        }
        Ok(Ok(lock))
    }

    /// The stage's manifest, when its outputs are committed and whole.
    async fn committed(&self) -> Result<Option<Manifest>, String> {
        Ok(
            match self
                .store
                .check_cached(&self.fingerprint)
                .await
                .map_err(text)?
            {
                CacheState::Hit(m) => Some(m),
                CacheState::Miss(_) => None,
            },
        )
    }

    /// The manifest task `task` committed, if it did and its files are all there.
    async fn finished_task(&self, task: usize) -> Result<Option<TaskManifest>, String> {
        let key = task_manifest_key(&self.fingerprint, task);
        let Some(bytes) = self.store.get_opt(&key).await.map_err(text)? else {
            return Ok(None);
        };
        let Ok(done) = serde_json::from_slice::<TaskManifest>(&bytes) else {
            return Ok(None);
        };
        let whole = self
            .store
            .files_miss(&self.manifest(done.outputs.clone()))
            .await
            .map_err(text)?
            .is_none();
        Ok(whole.then_some(done))
    }

    /// Runs task `task` (the whole stage when it does not shard) from scratch and records its task
    /// manifest.
    async fn run_task(
        &self,
        task: usize,
        inputs: Option<BTreeMap<String, InputRef>>,
    ) -> Result<TaskManifest, String> {
        let (inputs, folder, shard) = match inputs {
            Some(inputs) => (
                inputs,
                format!("{}/{}", object_dir(&self.fingerprint), task_folder(task)),
                Some(task),
            ),
            None => (self.inputs.clone(), object_dir(&self.fingerprint), None),
        };
        // Files left by an attempt that crashed or was cancelled.
        self.store.delete_prefix(&folder).await.map_err(text)?;
        let done = self.run_stage(inputs, shard).await?;
        let json = serde_json::to_vec(&done).map_err(|e| e.to_string())?;
        self.store
            .put(
                &task_manifest_key(&self.fingerprint, task),
                Bytes::from(json),
            )
            .await
            .map_err(text)?;
        Ok(done)
    }

    fn manifest(&self, outputs: BTreeMap<String, OutputManifest>) -> Manifest {
        Manifest {
            fingerprint: self.fingerprint.clone(),
            kind: self.node.stage.kind().to_string(),
            version: self.node.stage.version().to_string(),
            outputs,
        }
    }

    /// Concatenates the tasks' outputs in task order, commits them and removes the task manifests.
    async fn commit_tasks(&self, tasks: Vec<TaskManifest>) -> Result<StageResult, String> {
        let metrics: Vec<serde_json::Value> = tasks.iter().map(|t| t.metrics.clone()).collect();
        let metrics = self.node.stage.merge_metrics(&metrics);
        let mut outputs: BTreeMap<String, OutputManifest> = BTreeMap::new();
        for port in self.node.stage.outputs() {
            let parts: Vec<&OutputManifest> = tasks
                .iter()
                .filter_map(|t| t.outputs.get(port.name))
                .collect();
            let Some(first) = parts.first() else {
                continue;
            };
            let files = parts.iter().flat_map(|p| p.files.iter().cloned()).collect();
            let merged = match (first.kind, &first.schema) {
                (OutputKind::Dataset, Some(schema)) => {
                    OutputManifest::dataset(schema.clone(), files)
                }
                _ => OutputManifest::artifact(files),
            };
            outputs.insert(port.name.to_string(), merged);
        }
        let manifest = self.manifest(outputs);
        self.store.commit_manifest(&manifest).await.map_err(text)?;
        for task in 0..tasks.len() {
            let _ = self
                .store
                .delete(&task_manifest_key(&self.fingerprint, task))
                .await;
        }
        Ok((manifest, false, metrics))
    }

    /// Locks the fingerprint, reuses a result another process committed meanwhile, or runs the
    /// stage in this process (task by task when it shards, keeping the tasks an interrupted run
    /// finished) and commits its outputs manifest-last.
    pub(crate) async fn execute(self) -> Result<StageResult, String> {
        let _lock = match self.lock_uncommitted().await? {
            Ok(lock) => lock,
            Err(m) => return Ok((m, true, serde_json::Value::Null)),
        };
        let Some(task_inputs) = self.tasks().await? else {
            // Files left by a run that crashed before its commit.
            self.store
                .delete_prefix(&object_dir(&self.fingerprint))
                .await
                .map_err(text)?;
            let done = self.run_stage(self.inputs.clone(), None).await?;
            let manifest = self.manifest(done.outputs);
            self.store.commit_manifest(&manifest).await.map_err(text)?;
            return Ok((manifest, false, done.metrics));
        };
        let mut tasks = Vec::with_capacity(task_inputs.len());
        for (task, inputs) in task_inputs.into_iter().enumerate() {
            let done = match self.finished_task(task).await? {
                Some(done) => done,
                None => self.run_task(task, Some(inputs)).await?,
            };
            tasks.push(done);
        }
        self.commit_tasks(tasks).await
    }

    /// Runs task `task` of the stage in this process as a Slurm job does, unless it is finished
    /// already; a failure of the stage itself is recorded next to the task so that the controller
    /// does not submit it again.
    pub(crate) async fn execute_task(self, task: usize) -> Result<(), String> {
        let _lock = lock::lock(
            &self.locks,
            &format!(
                "{}.{}",
                self.fingerprint,
                task_folder(task).replace('/', "-")
            ),
            || {},
        )
        .await
        .map_err(|e| e.to_string())?;
        // Another controller may have committed the stage since this job was submitted.
        if self.committed().await?.is_some() || self.finished_task(task).await?.is_some() {
            return Ok(());
        }
        let inputs = match self.tasks().await? {
            Some(mut all) if task < all.len() => Some(all.swap_remove(task)),
            Some(all) => {
                return Err(format!(
                    "task {task} does not exist: the stage runs as {} task(s)",
                    all.len()
                ));
            }
            None if task == 0 => None,
            None => return Err(format!("task {task} does not exist: the stage runs whole")),
        };
        let result = self.run_task(task, inputs).await;
        if let Err(error) = &result {
            let _ = self
                .store
                .put(
                    &task_error_key(&self.fingerprint, task),
                    Bytes::from(error.clone()),
                )
                .await;
        }
        result.map(|_| ())
    }

    /// Runs the stage as Slurm jobs: one job, or a job array with a task per shard. Tasks that end
    /// without committing (cancelled, or lost with their node) are submitted again, up to
    /// `opts.attempts` times in all; a task whose stage fails ends the run at once. The
    /// controller then concatenates and commits the tasks' outputs.
    pub(crate) async fn submit(
        self,
        opts: &SlurmOptions,
        resources: Resources,
    ) -> Result<StageResult, String> {
        let _lock = match self.lock_uncommitted().await? {
            Ok(lock) => lock,
            Err(m) => return Ok((m, true, serde_json::Value::Null)),
        };
        let tasks = self.tasks().await?;
        let count = tasks.as_ref().map_or(1, Vec::len);
        let array = tasks.is_some();
        let mut logs = Vec::new();
        let mut last_error = String::new();
        for attempt in 1..=opts.attempts.max(1) {
            if attempt > 1
                && let Some(m) = self.committed().await?
            {
                return Ok((m, true, serde_json::Value::Null));
            }
            let mut pending = Vec::new();
            for task in 0..count {
                if self.finished_task(task).await?.is_none() {
                    pending.push(task);
                }
            }
            if pending.is_empty() {
                break;
            }
            for &task in &pending {
                let _ = self
                    .store
                    .delete(&task_error_key(&self.fingerprint, task))
                    .await;
            }
            let job = slurm::JobRequest {
                stage: &self.node.name,
                fingerprint: &self.fingerprint,
                tasks: &pending,
                array,
                resources,
            };
            let ended = slurm::run_job(opts, &job).await?;
            logs.extend(ended.logs.iter().map(|l| l.display().to_string()));
            for &task in &pending {
                if let Some(error) = self
                    .store
                    .get_opt(&task_error_key(&self.fingerprint, task))
                    .await
                    .map_err(text)?
                {
                    return Err(format!(
                        "{} (Slurm job {}, log {})",
                        String::from_utf8_lossy(&error),
                        ended.id,
                        ended.log(task).display()
                    ));
                }
            }
            last_error = ended.summary();
            tracing::warn!(stage = %self.node.name, attempt, "Slurm job ended: {last_error}");
        }
        let mut tasks = Vec::with_capacity(count);
        for task in 0..count {
            match self.finished_task(task).await? {
                Some(done) => tasks.push(done),
                None => {
                    return Err(format!(
                        "task {task} of {count} did not finish in {} submission(s); the last: {last_error}",
                        opts.attempts.max(1)
                    ));
                }
            }
        }
        let (manifest, reused, mut metrics) = self.commit_tasks(tasks).await?;
        if let serde_json::Value::Object(m) = &mut metrics {
            m.insert("slurm_logs".into(), logs.into());
        }
        Ok((manifest, reused, metrics))
    }
}
