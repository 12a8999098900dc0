//! The subcommands.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use dinoflow_engine::{
    Dag, Engine, EngineError, Executor, PlanState, Registry, Resources, RunOptions, Silent,
    SlurmOptions, workflow_schema,
};
use dinoflow_storage::{CacheState, Store};

use crate::funnel;
use crate::progress::Bars;
use crate::{Cli, Command, DagFormat, ExecutorChoice, PluginCommand};

/// Every stage kind this build knows.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(dinoflow_ingest::Ingest);
    r.register(dinoflow_filter::FilterStage);
    r.register(dinoflow_embed::Embed);
    r.register(dinoflow_curate::Dedup);
    r.register(dinoflow_curate::Retrieval);
    r.register(dinoflow_pretrain::Pretrain);
    r.register(dinoflow_pretrain::Distill);
    r.register(dinoflow_eval::Eval);
    r
}

/// `dinoflow exec`'s exit code when the stage itself failed: the controller does not submit it
/// again.
const EXIT_STAGE_FAILED: u8 = 3;

/// Maps an error to the exit code of design.md §7: 2 for invalid workflows, 130 for Ctrl-C, else 1.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<EngineError>() {
        Some(EngineError::Spec(_) | EngineError::ReadWorkflow { .. }) => 2,
        Some(EngineError::Cancelled) => 130,
        _ => 1,
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// The engine on the store at `store_url`, creating a local store's folder if needed (for
/// commands that write).
fn open_engine(store_url: &str, json: bool) -> Result<Engine> {
    let store = Store::create(store_url).with_context(|| format!("opening store {store_url}"))?;
    engine_on(store, json)
}

/// The engine on the store at `store_url`, which must exist (for commands that only read it or
/// clean it, so that a mistyped path is an error and not a new empty store).
fn open_existing_engine(store_url: &str) -> Result<Engine> {
    let store = Store::open(store_url).with_context(|| format!("opening store {store_url}"))?;
    engine_on(store, true)
}

fn engine_on(store: Store, json: bool) -> Result<Engine> {
    let sink: Arc<dyn dinoflow_engine::ProgressSink> = if json {
        Arc::new(Silent)
    } else {
        Arc::new(Bars::new(false))
    };
    Ok(Engine::open(store, sink)?)
}

/// `path` made absolute against the current directory (Slurm jobs may start elsewhere).
fn absolute(path: &str) -> Result<String> {
    Ok(std::path::absolute(path)
        .with_context(|| format!("resolving {path}"))?
        .display()
        .to_string())
}

/// A local store path made absolute; URLs unchanged.
fn absolute_store(url: &str) -> Result<String> {
    if url.contains("://") {
        Ok(url.to_string())
    } else {
        absolute(url)
    }
}

fn store_for(dag: &Dag, flag: Option<String>) -> String {
    flag.or_else(|| dag.store.clone())
        .unwrap_or_else(|| ".dinoflow".to_string())
}

fn machine_limits(cpus: Option<u32>, gpus: u32) -> Resources {
    let all = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let memory_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(8.0, |kb| kb / 1024.0 / 1024.0);
    Resources {
        cpus: cpus.unwrap_or(all).max(1),
        gpus,
        memory_gb,
    }
}

/// Runs one subcommand.
pub async fn dispatch(cli: Cli) -> Result<ExitCode> {
    let json = cli.json;
    let registry = registry();
    match cli.command {
        Command::Run {
            workflow,
            store,
            executor,
            attempts,
            sbatch_args,
            keep_going,
            cpus,
            gpus,
            preset,
        } => {
            let dag = Dag::load_preset(&workflow, &registry, preset.as_deref())?;
            let store = store_for(&dag, store);
            let executor = match executor {
                ExecutorChoice::Local if attempts.is_some() || !sbatch_args.is_empty() => {
                    bail!("--attempts and --sbatch apply to `--executor slurm` only")
                }
                ExecutorChoice::Slurm if store.starts_with("memory://") => bail!(
                    "the store {store} lives in this process, where Slurm jobs cannot reach it; \
                     give a folder on a shared file system or an s3:// URL"
                ),
                other => other,
            };
            let engine = open_engine(&store, json)?;
            let executor = match executor {
                ExecutorChoice::Local => Executor::Local,
                ExecutorChoice::Slurm => Executor::Slurm(SlurmOptions {
                    program: std::env::current_exe()
                        .context("finding the dinoflow binary for the Slurm jobs")?,
                    workflow: absolute(&workflow)?,
                    preset: preset.clone(),
                    store: absolute_store(&store)?,
                    logs: engine.state_dir().join("slurm-logs"),
                    attempts: attempts.unwrap_or(3),
                    extra_args: sbatch_args,
                }),
            };
            let opts = RunOptions {
                keep_going,
                limits: machine_limits(cpus, gpus),
                handle_ctrl_c: true,
                executor,
            };
            let report = engine.run(&dag, &opts).await?;
            if json {
                print_json(&report)?;
            } else {
                println!(
                    "run {} {} in {:.2}s",
                    report.run_id, report.status, report.seconds
                );
                for s in &report.stages {
                    let rows: Vec<String> =
                        s.rows.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    println!(
                        "  {:<20} {:<9} {:>8.2}s  {}",
                        s.name,
                        format!("{:?}", s.status).to_lowercase(),
                        s.seconds,
                        rows.join(" ")
                    );
                }
            }
            Ok(ExitCode::from(if report.succeeded() { 0 } else { 1 }))
        }
        Command::Plan {
            workflow,
            store,
            preset,
        } => {
            let dag = Dag::load_preset(&workflow, &registry, preset.as_deref())?;
            let engine = open_engine(&store_for(&dag, store), true)?;
            let plan = engine.plan(&dag).await?;
            if json {
                print_json(&plan)?;
            } else {
                for p in &plan {
                    match &p.state {
                        PlanState::Cached => println!("  cached  {:<20} {}", p.name, p.fingerprint),
                        PlanState::Run { reasons } => {
                            println!(
                                "     run  {:<20} {} ({})",
                                p.name,
                                p.fingerprint,
                                reasons.join("; ")
                            )
                        }
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Runs { store, limit } => {
            let engine = open_existing_engine(&store)?;
            let runs = engine.db().runs(limit)?;
            if json {
                print_json(&runs)?;
            } else {
                for r in runs {
                    println!(
                        "{:>5}  {:<10} {:<24} {}  {}",
                        r.id,
                        r.status,
                        r.workflow,
                        r.started,
                        r.error.unwrap_or_default()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { target, store } => show(&target, &store, json).await,
        Command::Report { run, output, store } => {
            let engine = open_existing_engine(&store)?;
            let id = match run.as_str() {
                "last" => None,
                n => Some(n.parse::<i64>().with_context(|| {
                    format!("`{n}` is not a run id; give a number from `dinoflow runs`, or `last`")
                })?),
            };
            let written = crate::report::write(&engine, id, output.as_deref()).await?;
            if json {
                print_json(&written)?;
            } else {
                println!(
                    "report of run {} written to {} ({:.1} MB)",
                    written.run,
                    written.path.display(),
                    written.bytes as f64 / 1e6
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Stages { kind } => stages(&registry, kind.as_deref(), json),
        Command::Dag { workflow, format } => {
            let dag = Dag::load(&workflow, &registry)?;
            println!("{}", render_dag(&dag, format));
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema => {
            print_json(&workflow_schema(&registry))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugin { action } => match action {
            PluginCommand::New { name, dir } => crate::plugin::new(&name, &dir),
            PluginCommand::Build { dir } => crate::plugin::build(&dir, json),
            PluginCommand::Check { file, params } => crate::plugin::check(&file, &params, json),
        },
        Command::Exec {
            workflow,
            stage,
            store,
            fingerprint,
            task,
            preset,
            cpus,
        } => {
            let dag = Dag::load_preset(&workflow, &registry, preset.as_deref())?;
            let store = Store::open(&store).with_context(|| format!("opening store {store}"))?;
            let engine = Engine::worker(store, Arc::new(Silent))?;
            let cpus = machine_limits(cpus, 0).cpus;
            match engine
                .execute_task(&dag, &stage, &fingerprint, task, cpus)
                .await
            {
                Err(e @ EngineError::StageFailed { .. }) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(EXIT_STAGE_FAILED))
                }
                other => other.map(|()| ExitCode::SUCCESS).map_err(Into::into),
            }
        }
        Command::Gc { store, check: true } => {
            let engine = open_existing_engine(&store)?;
            let check = engine.check_store().await?;
            if json {
                print_json(&check)?;
            } else {
                println!(
                    "{} committed output(s) whole ({:.1} MB read), {} incomplete folder(s) (`dinoflow gc` removes them), {} damaged",
                    check.committed.len(),
                    check.bytes as f64 / 1e6,
                    check.incomplete.len(),
                    check.damaged.len()
                );
                for d in &check.damaged {
                    println!("  damaged {}: {}", d.fingerprint, d.problem);
                }
            }
            Ok(ExitCode::from(if check.damaged.is_empty() { 0 } else { 1 }))
        }
        Command::Gc {
            store,
            check: false,
        } => {
            let engine = open_existing_engine(&store)?;
            let report = engine.gc().await?;
            if json {
                print_json(&report)?;
            } else {
                println!(
                    "removed {} incomplete output folder(s), {:.1} MB freed; {} in use and kept",
                    report.removed.len(),
                    report.bytes as f64 / 1e6,
                    report.in_use.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn show(target: &str, store_url: &str, json: bool) -> Result<ExitCode> {
    let engine = open_existing_engine(store_url)?;
    let db = engine.db();
    let run_id = if target == "last" {
        db.runs(1)?.first().map(|r| r.id)
    } else {
        target.parse::<i64>().ok()
    };
    if let Some(id) = run_id {
        let run = db.run(id)?.ok_or_else(|| {
            EngineError::NotFound(format!(
                "no run {id} in {store_url}; `dinoflow runs` lists them"
            ))
        })?;
        let stages = db.stages_of_run(id)?;
        let funnel = funnel::funnel(engine.store(), &stages).await?;
        let evaluations = crate::report::evaluations(engine.store(), &stages).await?;
        if json {
            print_json(&serde_json::json!({
                "run": run,
                "stages": stages,
                "funnel": funnel,
                "evaluations": evaluations,
            }))?;
        } else {
            println!(
                "run {} of {} ({}): {}",
                run.id, run.workflow, run.file, run.status
            );
            println!(
                "  started {}  finished {}",
                run.started,
                run.finished.unwrap_or_default()
            );
            if let Some(e) = run.error {
                println!("  error: {e}");
            }
            println!(
                "  {:<20} {:<9} {:>9}  rows in → rows out",
                "stage", "status", "time"
            );
            for (s, f) in stages.iter().zip(&funnel) {
                println!(
                    "  {:<20} {:<9} {:>8.2}s  {} → {}",
                    s.stage,
                    s.status,
                    s.seconds.unwrap_or(0.0),
                    funnel::describe(&f.inputs),
                    funnel::describe(&f.outputs),
                );
                if !s.metrics.is_null() && s.metrics != serde_json::json!({}) {
                    println!("  {:<20} {}", "", s.metrics);
                }
            }
            for (stage, report) in &evaluations {
                println!(
                    "\nevaluation `{stage}`: top-1 on {} test images, {} train images, {} classes",
                    report.test_rows, report.train_rows, report.classes
                );
                for line in dinoflow_eval::render_table(report).lines() {
                    println!("  {line}");
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let history = db.history_of_stage(target)?;
    let Some(last) = history.last() else {
        bail!(EngineError::NotFound(format!(
            "no stage or run `{target}` in {store_url}; `dinoflow runs` lists runs"
        )));
    };
    let manifest = match engine.store().check_cached(&last.fingerprint).await? {
        CacheState::Hit(m) => Some(m),
        CacheState::Miss(_) => None,
    };
    if json {
        print_json(&serde_json::json!({ "history": history, "outputs": manifest }))?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("stage {target} ({}@{})", last.kind, last.version);
    for s in &history {
        println!(
            "  run {:>4}  {:<9} {:>8.2}s  {}",
            s.run_id,
            s.status,
            s.seconds.unwrap_or(0.0),
            s.fingerprint
        );
    }
    match manifest {
        Some(m) => {
            println!("outputs in {store_url}/objects/{}:", m.fingerprint);
            for (port, o) in &m.outputs {
                println!(
                    "  {port:<10} {:?} rows={} files={} {:.1} MB digest={}",
                    o.kind,
                    o.rows.map(|r| r.to_string()).unwrap_or_else(|| "-".into()),
                    o.files.len(),
                    o.bytes() as f64 / 1e6,
                    &o.digest[..16]
                );
            }
        }
        None => {
            println!("outputs of the last run are not in the store (removed or never committed)")
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn stages(registry: &Registry, kind: Option<&str>, json: bool) -> Result<ExitCode> {
    let list: Vec<serde_json::Value> = registry
        .kinds()
        .filter(|k| kind.is_none_or(|want| k.kind() == want))
        .map(|k| {
            serde_json::json!({
                "kind": k.kind(),
                "version": k.version().to_string(),
                "description": k.description(),
                "inputs": k.inputs(),
                "outputs": k.outputs(),
                "config": k.config_schema(),
            })
        })
        .collect();
    if let Some(want) = kind
        && list.is_empty()
    {
        bail!(
            "unknown stage kind `{want}`; known kinds: {}",
            registry.names().join(", ")
        );
    }
    if json || kind.is_some() {
        print_json(&if kind.is_some() {
            list[0].clone()
        } else {
            serde_json::Value::Array(list)
        })?;
    } else {
        for k in registry.kinds() {
            println!("{:<12} {:<8} {}", k.kind(), k.version(), k.description());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn render_dag(dag: &Dag, format: DagFormat) -> String {
    let mut out = String::new();
    match format {
        DagFormat::Mermaid => {
            out.push_str("flowchart LR\n");
            for n in &dag.nodes {
                out.push_str(&format!(
                    "  {}[\"{}<br/><i>{}</i>\"]\n",
                    n.name,
                    n.name,
                    n.stage.kind()
                ));
            }
            for n in &dag.nodes {
                for e in &n.inputs {
                    out.push_str(&format!(
                        "  {} -->|{}→{}| {}\n",
                        e.from, e.from_port, e.port, n.name
                    ));
                }
            }
        }
        DagFormat::Dot => {
            out.push_str(&format!("digraph \"{}\" {{\n  rankdir=LR;\n", dag.name));
            for n in &dag.nodes {
                out.push_str(&format!(
                    "  \"{}\" [shape=box, label=\"{}\\n{}\"];\n",
                    n.name,
                    n.name,
                    n.stage.kind()
                ));
            }
            for n in &dag.nodes {
                for e in &n.inputs {
                    out.push_str(&format!(
                        "  \"{}\" -> \"{}\" [label=\"{}→{}\"];\n",
                        e.from, n.name, e.from_port, e.port
                    ));
                }
            }
            out.push('}');
        }
    }
    out
}
