//! Planning and running a DAG: fingerprints, cache checks, the scheduler, and garbage collection.

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use dinoflow_storage::{CacheState, MANIFEST_FILE, Manifest, Miss, Store, object_dir};
use futures::FutureExt;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::dag::{Dag, Node};
use crate::error::EngineError;
use crate::fingerprint::FingerprintParts;
use crate::job::{StageJob, StageResult};
use crate::lock;
use crate::progress::{ProgressSink, StageEvent};
use crate::rundb::RunDb;
use crate::slurm::SlurmOptions;
use crate::stage::{InputRef, Resources};

/// Whether a stage will run, and why.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum PlanState {
    /// Committed outputs exist for this fingerprint.
    Cached,
    /// The stage will run, for these reasons.
    Run {
        /// What changed, or what is missing.
        reasons: Vec<String>,
    },
}

/// One stage of a plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedStage {
    /// Stage name.
    pub name: String,
    /// Its fingerprint.
    pub fingerprint: String,
    /// What went into the fingerprint.
    pub parts: FingerprintParts,
    /// A human summary of each extra input (`84 file(s), 11.0 MB`), by name.
    pub extra_summaries: BTreeMap<String, String>,
    /// Cached or to run.
    #[serde(flatten)]
    pub state: PlanState,
    #[serde(skip)]
    manifest: Option<Manifest>,
}

/// How a stage ended in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StageStatus {
    /// Ran and committed its outputs.
    Ok,
    /// Its outputs were already committed.
    Cached,
    /// Failed.
    Failed,
    /// Stopped because another stage failed or the run was cancelled.
    Cancelled,
    /// Not started because an input failed.
    Skipped,
}

impl StageStatus {
    fn as_str(self) -> &'static str {
        match self {
            StageStatus::Ok => "ok",
            StageStatus::Cached => "cached",
            StageStatus::Failed => "failed",
            StageStatus::Cancelled => "cancelled",
            StageStatus::Skipped => "skipped",
        }
    }
}

/// The outcome of one stage in a run.
#[derive(Debug, Clone, Serialize)]
pub struct StageOutcome {
    /// Stage name.
    pub name: String,
    /// Fingerprint.
    pub fingerprint: String,
    /// How it ended.
    pub status: StageStatus,
    /// Wall time.
    pub seconds: f64,
    /// The error, when it failed.
    pub error: Option<String>,
    /// Output port → rows, for datasets.
    pub rows: BTreeMap<String, u64>,
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The run's id in the run database.
    pub run_id: i64,
    /// ok, failed or cancelled.
    pub status: String,
    /// Stages in workflow order.
    pub stages: Vec<StageOutcome>,
    /// Wall time of the whole run.
    pub seconds: f64,
}

impl RunReport {
    /// True when every stage ran or was cached.
    pub fn succeeded(&self) -> bool {
        self.status == "ok"
    }
}

/// Options for one run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Keep running independent stages after a failure.
    pub keep_going: bool,
    /// What the machine offers; stages run side by side within it.
    pub limits: Resources,
    /// Cancel cleanly on Ctrl-C.
    pub handle_ctrl_c: bool,
    /// Where stages run.
    pub executor: Executor,
}

/// Where the stages of a run execute.
#[derive(Debug, Clone, Default)]
pub enum Executor {
    /// In this process.
    #[default]
    Local,
    /// Each stage as a Slurm batch job running `dinoflow exec`.
    Slurm(SlurmOptions),
}

/// The store folder where training stages keep checkpoints, one sub-folder per fingerprint.
pub const CHECKPOINTS: &str = "checkpoints";

/// What `gc` removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    /// Object folders removed (incomplete or damaged outputs), and `checkpoints/<fingerprint>`
    /// folders of outputs already committed.
    pub removed: Vec<String>,
    /// Bytes freed.
    pub bytes: u64,
    /// Folders skipped because a process holds their lock.
    pub in_use: Vec<String>,
}

/// What `gc --check` found: the store checked against its manifests, nothing removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreCheck {
    /// Committed outputs whose files are all present with the recorded size and content.
    pub committed: Vec<String>,
    /// Folders without a manifest: left by a crash (`dinoflow gc` removes them) or being written.
    pub incomplete: Vec<String>,
    /// Committed outputs that are not whole: an unreadable manifest, a file missing or cut (a run
    /// writes those again and `dinoflow gc` removes them), or a file whose content changed at the
    /// same size (found only by this check; its problem says how to rebuild it).
    pub damaged: Vec<Damage>,
    /// Bytes of committed files read and checked.
    pub bytes: u64,
}

/// One damaged committed output.
#[derive(Debug, Clone, Serialize)]
pub struct Damage {
    /// Its fingerprint (the folder under `objects/`).
    pub fingerprint: String,
    /// What is wrong.
    pub problem: String,
}

/// Where the run database and the locks live: the store's folder for a local store, `.dinoflow/`
/// under the current directory for a remote one.
fn default_state_dir(store: &Store) -> PathBuf {
    store
        .local_root()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".dinoflow"))
}

/// Runs workflows against one store.
pub struct Engine {
    store: Store,
    state_dir: PathBuf,
    db: Arc<RunDb>,
    sink: Arc<dyn ProgressSink>,
}

impl Engine {
    /// Opens the engine on `store`. The run database and locks live in the store's folder for
    /// local stores, and in `.dinoflow/` under the current directory for remote ones.
    pub fn open(store: Store, sink: Arc<dyn ProgressSink>) -> Result<Self, EngineError> {
        let state_dir = default_state_dir(&store);
        Self::open_in(store, &state_dir, sink)
    }

    /// Opens the engine on `store` with its run database and locks in the folder `state_dir`.
    pub fn open_in(
        store: Store,
        state_dir: &Path,
        sink: Arc<dyn ProgressSink>,
    ) -> Result<Self, EngineError> {
        let db = Arc::new(RunDb::open(&state_dir.join("runs.db"))?);
        Ok(Self {
            store,
            state_dir: state_dir.to_path_buf(),
            db,
            sink,
        })
    }

    /// Opens the engine for a worker that runs tasks of stages for another process (a Slurm
    /// job): it keeps no run history, so its run database is in memory, and its locks live where
    /// [`Engine::open`] puts them.
    pub fn worker(store: Store, sink: Arc<dyn ProgressSink>) -> Result<Self, EngineError> {
        Ok(Self {
            state_dir: default_state_dir(&store),
            store,
            db: Arc::new(RunDb::in_memory()?),
            sink,
        })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The run database.
    pub fn db(&self) -> &RunDb {
        &self.db
    }

    /// The folder of the run database and the locks.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    fn locks_dir(&self) -> PathBuf {
        self.state_dir.join("locks")
    }

    /// Fingerprints every stage and checks the cache, saying for each stage that will run why.
    pub async fn plan(&self, dag: &Dag) -> Result<Vec<PlannedStage>, EngineError> {
        let mut planned: Vec<PlannedStage> = Vec::with_capacity(dag.nodes.len());
        let mut by_name: HashMap<&str, usize> = HashMap::new();
        for node in &dag.nodes {
            let mut inputs = BTreeMap::new();
            let mut upstream_runs = Vec::new();
            for e in &node.inputs {
                let up = &planned[by_name[e.from.as_str()]];
                inputs.insert(
                    e.port.clone(),
                    format!("{}/{}", up.fingerprint, e.from_port),
                );
                if matches!(up.state, PlanState::Run { .. }) {
                    upstream_runs.push(e.from.clone());
                }
            }
            let extras = node
                .stage
                .extra_inputs(&node.config)
                .await
                .map_err(|source| EngineError::Stage {
                    stage: node.name.clone(),
                    source: Box::new(source),
                })?;
            let parts = FingerprintParts {
                kind: node.stage.kind().to_string(),
                version: node.stage.version().to_string(),
                config: node.config.canonical.clone(),
                inputs,
                extras: extras
                    .iter()
                    .map(|x| (x.name.clone(), x.digest.clone()))
                    .collect(),
            };
            let extra_summaries = extras.into_iter().map(|x| (x.name, x.summary)).collect();
            let fingerprint = parts.fingerprint();
            let (state, manifest) = match self.store.check_cached(&fingerprint).await? {
                CacheState::Hit(m) => (PlanState::Cached, Some(m)),
                CacheState::Miss(miss) => {
                    let reasons = self.reasons(dag, node, &parts, &miss, &upstream_runs)?;
                    (PlanState::Run { reasons }, None)
                }
            };
            by_name.insert(&node.name, planned.len());
            planned.push(PlannedStage {
                name: node.name.clone(),
                fingerprint,
                parts,
                extra_summaries,
                state,
                manifest,
            });
        }
        Ok(planned)
    }

    fn reasons(
        &self,
        dag: &Dag,
        node: &Node,
        parts: &FingerprintParts,
        miss: &Miss,
        upstream_runs: &[String],
    ) -> Result<Vec<String>, EngineError> {
        let mut why = match self.db.last_parts(&dag.name, &node.name)? {
            None => vec!["not run before".to_string()],
            Some(before) if before.fingerprint() == parts.fingerprint() => vec![miss.to_string()],
            Some(before) => parts.changes_since(&before),
        };
        for up in upstream_runs {
            why.push(format!("upstream `{up}` will run"));
        }
        if why.is_empty() {
            why.push(miss.to_string());
        }
        Ok(why)
    }

    /// Runs the DAG: every stage whose inputs are ready runs, side by side within the resource
    /// limits; cached stages are skipped; outputs are committed manifest-last.
    pub async fn run(&self, dag: &Dag, opts: &RunOptions) -> Result<RunReport, EngineError> {
        let started = Instant::now();
        let plan = self.plan(dag).await?;
        let run_id = self.db.start_run(dag, self.store.url())?;
        let mut status: Vec<Option<StageStatus>> = vec![None; dag.nodes.len()];
        let mut outcomes: Vec<Option<StageOutcome>> = vec![None; dag.nodes.len()];
        let mut manifests: HashMap<String, Manifest> = HashMap::new();
        let index: HashMap<&str, usize> = dag
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_str(), i))
            .collect();
        let mut free = opts.limits;
        let mut running: HashMap<usize, (Resources, i64)> = HashMap::new();
        let mut tasks: JoinSet<(usize, f64, Result<StageResult, String>)> = JoinSet::new();
        let mut stopping = false;
        let mut cancelled = false;
        let ctrl_c = async {
            if opts.handle_ctrl_c {
                let _ = tokio::signal::ctrl_c().await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::pin!(ctrl_c);

        loop {
            // Start or settle every stage that can move now.
            for (i, node) in dag.nodes.iter().enumerate() {
                if status[i].is_some() || running.contains_key(&i) {
                    continue;
                }
                let p = &plan[i];
                let ups: Vec<Option<StageStatus>> = node
                    .inputs
                    .iter()
                    .map(|e| status[index[e.from.as_str()]])
                    .collect();
                let blocked = ups.iter().any(|s| {
                    matches!(
                        s,
                        Some(StageStatus::Failed | StageStatus::Skipped | StageStatus::Cancelled)
                    )
                });
                if stopping || blocked {
                    let input_failed = ups.iter().any(|s| matches!(s, Some(StageStatus::Failed)));
                    let reason = if stopping && !input_failed {
                        "the run stopped"
                    } else {
                        "an input failed"
                    };
                    self.sink.event(
                        &node.name,
                        &StageEvent::Skipped {
                            reason: reason.into(),
                        },
                    );
                    let row = self.db.start_stage(
                        run_id,
                        &node.name,
                        &p.fingerprint,
                        &p.parts,
                        "skipped",
                    )?;
                    self.db.finish_stage(
                        row,
                        "skipped",
                        0.0,
                        Some(reason),
                        &serde_json::Value::Null,
                    )?;
                    status[i] = Some(StageStatus::Skipped);
                    outcomes[i] = Some(outcome(
                        node,
                        p,
                        StageStatus::Skipped,
                        0.0,
                        Some(reason.into()),
                        None,
                    ));
                    continue;
                }
                if !ups
                    .iter()
                    .all(|s| matches!(s, Some(StageStatus::Ok | StageStatus::Cached)))
                {
                    continue;
                }
                if let Some(m) = &p.manifest {
                    self.sink.event(&node.name, &StageEvent::Cached);
                    let row = self.db.start_stage(
                        run_id,
                        &node.name,
                        &p.fingerprint,
                        &p.parts,
                        "cached",
                    )?;
                    self.db
                        .finish_stage(row, "cached", 0.0, None, &serde_json::Value::Null)?;
                    status[i] = Some(StageStatus::Cached);
                    outcomes[i] = Some(outcome(node, p, StageStatus::Cached, 0.0, None, Some(m)));
                    manifests.insert(node.name.clone(), m.clone());
                    continue;
                }
                // Slurm sizes and queues jobs itself: a stage asks for what its workflow says.
                let on_slurm = matches!(opts.executor, Executor::Slurm(_));
                let need = if on_slurm {
                    node.resources
                } else {
                    clamp(node.resources, opts.limits)
                };
                if !on_slurm && need.gpus > opts.limits.gpus {
                    let msg = format!(
                        "needs {} GPU(s) but {} are available; set `resources.gpus` or run on a GPU machine",
                        need.gpus, opts.limits.gpus
                    );
                    self.sink
                        .event(&node.name, &StageEvent::Failed { error: msg.clone() });
                    let row = self.db.start_stage(
                        run_id,
                        &node.name,
                        &p.fingerprint,
                        &p.parts,
                        "failed",
                    )?;
                    self.db.finish_stage(
                        row,
                        "failed",
                        0.0,
                        Some(&msg),
                        &serde_json::Value::Null,
                    )?;
                    status[i] = Some(StageStatus::Failed);
                    outcomes[i] = Some(outcome(node, p, StageStatus::Failed, 0.0, Some(msg), None));
                    stopping |= !opts.keep_going;
                    continue;
                }
                let held = if on_slurm {
                    Resources::NONE
                } else if fits(need, free) {
                    need
                } else {
                    continue;
                };
                free = sub(free, held);
                let row =
                    self.db
                        .start_stage(run_id, &node.name, &p.fingerprint, &p.parts, "running")?;
                running.insert(i, (held, row));
                let job = self.stage_job(node, &p.fingerprint, &manifests, need.cpus);
                self.sink.event(&node.name, &StageEvent::Started);
                let executor = opts.executor.clone();
                tasks.spawn(async move {
                    let t = Instant::now();
                    let r = match executor {
                        Executor::Local => AssertUnwindSafe(job.execute())
                            .catch_unwind()
                            .await
                            .unwrap_or_else(|panic| {
                                Err(format!("the stage panicked: {}", panic_message(&*panic)))
                            }),
                        Executor::Slurm(slurm) => job.submit(&slurm, need).await,
                    };
                    (i, t.elapsed().as_secs_f64(), r)
                });
            }
            if tasks.is_empty() {
                break;
            }
            tokio::select! {
                joined = tasks.join_next() => {
                    // Aborted tasks come back as join errors; they are settled below.
                    if let Some(Ok((i, seconds, result))) = joined {
                        let node = &dag.nodes[i];
                        let p = &plan[i];
                        let (need, row) = running.remove(&i).unwrap_or((Resources::default(), 0));
                        free = add(free, need);
                        match result {
                            Ok((manifest, reused, metrics)) => {
                                let st = if reused { StageStatus::Cached } else { StageStatus::Ok };
                                self.sink.event(&node.name, &if reused { StageEvent::Cached } else { StageEvent::Done { seconds } });
                                self.db.finish_stage(row, st.as_str(), seconds, None, &metrics)?;
                                status[i] = Some(st);
                                outcomes[i] = Some(outcome(node, p, st, seconds, None, Some(&manifest)));
                                manifests.insert(node.name.clone(), manifest);
                            }
                            Err(error) => {
                                self.sink.event(&node.name, &StageEvent::Failed { error: error.clone() });
                                self.db.finish_stage(row, "failed", seconds, Some(&error), &serde_json::Value::Null)?;
                                status[i] = Some(StageStatus::Failed);
                                outcomes[i] = Some(outcome(node, p, StageStatus::Failed, seconds, Some(error), None));
                                if !opts.keep_going {
                                    stopping = true;
                                    tasks.abort_all();
                                }
                            }
                        }
                    }
                }
                _ = &mut ctrl_c, if !cancelled => {
                    cancelled = true;
                    stopping = true;
                    tasks.abort_all();
                }
            }
            // Aborted tasks come back as cancelled join errors; account for them here.
            if stopping && tasks.is_empty() {
                for (i, (_, row)) in running.drain() {
                    let node = &dag.nodes[i];
                    self.sink.event(
                        &node.name,
                        &StageEvent::Skipped {
                            reason: "cancelled".into(),
                        },
                    );
                    self.db.finish_stage(
                        row,
                        "cancelled",
                        0.0,
                        Some("cancelled"),
                        &serde_json::Value::Null,
                    )?;
                    status[i] = Some(StageStatus::Cancelled);
                    outcomes[i] = Some(outcome(
                        node,
                        &plan[i],
                        StageStatus::Cancelled,
                        0.0,
                        Some("cancelled".into()),
                        None,
                    ));
                }
            }
        }

        let stages: Vec<StageOutcome> = outcomes.into_iter().flatten().collect();
        let failed: Vec<&StageOutcome> = stages
            .iter()
            .filter(|s| s.status == StageStatus::Failed)
            .collect();
        let (run_status, error) = if cancelled {
            ("cancelled", Some("cancelled by the user".to_string()))
        } else if let Some(first) = failed.first() {
            (
                "failed",
                Some(format!(
                    "stage `{}`: {}",
                    first.name,
                    first.error.clone().unwrap_or_default()
                )),
            )
        } else {
            ("ok", None)
        };
        self.db.finish_run(run_id, run_status, error.as_deref())?;
        if cancelled {
            return Err(EngineError::Cancelled);
        }
        Ok(RunReport {
            run_id,
            status: run_status.to_string(),
            stages,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// The job that runs `node` under `fingerprint`, its inputs taken from the committed
    /// `manifests` of its upstream stages (by stage name).
    fn stage_job(
        &self,
        node: &Node,
        fingerprint: &str,
        manifests: &HashMap<String, Manifest>,
        cpus: u32,
    ) -> StageJob {
        let inputs: BTreeMap<String, InputRef> = node
            .inputs
            .iter()
            .filter_map(|e| {
                let m = manifests.get(&e.from)?;
                Some((
                    e.port.clone(),
                    InputRef {
                        fingerprint: m.fingerprint.clone(),
                        output: m.outputs.get(&e.from_port)?.clone(),
                    },
                ))
            })
            .collect();
        StageJob {
            node: node.clone(),
            fingerprint: fingerprint.to_string(),
            store: self.store.clone(),
            locks: self.locks_dir(),
            sink: Arc::clone(&self.sink),
            cpus: cpus as usize,
            inputs,
        }
    }

    /// Runs task `task` of stage `name` of `dag` in this process, as a Slurm job does: the task
    /// of a stage that shards, or the whole stage as task 0. Its inputs must be committed already
    /// and its fingerprint must be `fingerprint` (else the workflow, a file it reads or the binary
    /// differs from the submitting machine's). It records its outputs in a task manifest for the
    /// submitting process to commit, and nothing in the run database.
    pub async fn execute_task(
        &self,
        dag: &Dag,
        name: &str,
        fingerprint: &str,
        task: usize,
        cpus: u32,
    ) -> Result<(), EngineError> {
        let failed = |message: String| EngineError::StageFailed {
            stage: name.to_string(),
            message,
        };
        let plan = self.plan(dag).await?;
        let Some(i) = dag.nodes.iter().position(|n| n.name == name) else {
            return Err(EngineError::NotFound(format!(
                "no stage `{name}` in {}",
                dag.file
            )));
        };
        if plan[i].fingerprint != fingerprint {
            return Err(failed(format!(
                "its fingerprint here is {}, not the submitted {fingerprint}: the workflow, a \
                 file it reads or the dinoflow binary differs between the submitting machine and \
                 this node; make them the same (a shared file system) and run again",
                plan[i].fingerprint
            )));
        }
        let node = &dag.nodes[i];
        let mut manifests = HashMap::new();
        for e in &node.inputs {
            let upstream = plan.iter().find(|p| p.name == e.from);
            match upstream.and_then(|p| p.manifest.clone()) {
                Some(m) => {
                    manifests.insert(e.from.clone(), m);
                }
                None => {
                    return Err(failed(format!(
                        "its input `{}` (stage `{}`) is not committed; run that stage first",
                        e.port, e.from
                    )));
                }
            }
        }
        self.stage_job(node, fingerprint, &manifests, cpus)
            .execute_task(task)
            .await
            .map_err(failed)
    }

    /// Removes object folders without a complete commit (left by crashes or damaged by hand),
    /// except those a running process has locked.
    pub async fn gc(&self) -> Result<GcReport, EngineError> {
        let mut report = GcReport::default();
        for folder in self.store.list_folders("objects").await? {
            let fp = folder.rsplit('/').next().unwrap_or_default().to_string();
            let Some(_lock) = lock::try_lock(&self.locks_dir(), &fp)? else {
                report.in_use.push(fp);
                continue;
            };
            if let CacheState::Miss(_) = self.store.check_cached(&fp).await? {
                let bytes: u64 = self
                    .store
                    .list(&object_dir(&fp))
                    .await?
                    .iter()
                    .map(|l| l.size)
                    .sum();
                self.store.delete_prefix(&object_dir(&fp)).await?;
                report.bytes += bytes;
                report.removed.push(fp);
            }
        }
        // Checkpoints of outputs that are committed (a crash came between the commit and their
        // removal); those of uncommitted outputs are how a stopped run resumes, so they stay.
        for folder in self.store.list_folders(CHECKPOINTS).await? {
            let fp = folder.rsplit('/').next().unwrap_or_default().to_string();
            let Some(_lock) = lock::try_lock(&self.locks_dir(), &fp)? else {
                continue;
            };
            if let CacheState::Hit(_) = self.store.check_cached(&fp).await? {
                let prefix = format!("{CHECKPOINTS}/{fp}");
                let bytes: u64 = self.store.list(&prefix).await?.iter().map(|l| l.size).sum();
                self.store.delete_prefix(&prefix).await?;
                report.bytes += bytes;
                report.removed.push(prefix);
            }
        }
        Ok(report)
    }

    /// Checks every object folder against its manifest, reading every committed file to compare
    /// its size and content digest; removes nothing.
    pub async fn check_store(&self) -> Result<StoreCheck, EngineError> {
        let mut check = StoreCheck::default();
        for folder in self.store.list_folders("objects").await? {
            let fp = folder.rsplit('/').next().unwrap_or_default().to_string();
            let key = format!("{}/{MANIFEST_FILE}", object_dir(&fp));
            let Some(bytes) = self.store.get_opt(&key).await? else {
                check.incomplete.push(fp);
                continue;
            };
            let problem = match serde_json::from_slice::<Manifest>(&bytes) {
                Err(e) => Some(format!("manifest unreadable ({e})")),
                Ok(m) if m.fingerprint != fp => Some(format!(
                    "the manifest belongs to {}, not to its folder",
                    m.fingerprint
                )),
                Ok(m) => match self.store.verify_content(&m).await? {
                    None => {
                        check.bytes += m.outputs.values().map(|o| o.bytes()).sum::<u64>();
                        None
                    }
                    problem => problem,
                },
            };
            match problem {
                None => check.committed.push(fp),
                Some(problem) => check.damaged.push(Damage {
                    fingerprint: fp,
                    problem,
                }),
            }
        }
        Ok(check)
    }
}

/// The error and its causes, joined with `: `.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

fn outcome(
    node: &Node,
    p: &PlannedStage,
    status: StageStatus,
    seconds: f64,
    error: Option<String>,
    manifest: Option<&Manifest>,
) -> StageOutcome {
    let rows = manifest
        .map(|m| {
            m.outputs
                .iter()
                .filter_map(|(k, o)| Some((k.clone(), o.rows?)))
                .collect()
        })
        .unwrap_or_default();
    StageOutcome {
        name: node.name.clone(),
        fingerprint: p.fingerprint.clone(),
        status,
        seconds,
        error,
        rows,
    }
}

fn clamp(need: Resources, limits: Resources) -> Resources {
    Resources {
        cpus: need.cpus.clamp(1, limits.cpus.max(1)),
        gpus: need.gpus,
        memory_gb: need.memory_gb.min(limits.memory_gb),
    }
}

fn fits(need: Resources, free: Resources) -> bool {
    need.cpus <= free.cpus && need.gpus <= free.gpus && need.memory_gb <= free.memory_gb + 1e-9
}

fn sub(a: Resources, b: Resources) -> Resources {
    Resources {
        cpus: a.cpus - b.cpus,
        gpus: a.gpus - b.gpus,
        memory_gb: a.memory_gb - b.memory_gb,
    }
}

fn add(a: Resources, b: Resources) -> Resources {
    Resources {
        cpus: a.cpus + b.cpus,
        gpus: a.gpus + b.gpus,
        memory_gb: a.memory_gb + b.memory_gb,
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}
