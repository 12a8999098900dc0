//! The `dinoflow` command line: it only wires the engine, the store and the stage plugins together.

mod commands;
mod funnel;
mod plugin;
mod progress;
mod report;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// dinoflow: declared, cached, resumable data-to-model workflows for vision (DINOv2 style).
#[derive(Debug, Parser)]
#[command(version, about, propagate_version = true)]
pub struct Cli {
    /// Print machine-readable JSON on stdout instead of tables and progress bars.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// Output formats of `dinoflow dag`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DagFormat {
    /// Mermaid flowchart (renders in GitHub markdown).
    Mermaid,
    /// Graphviz dot.
    Dot,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a workflow: every stage whose inputs changed runs; the rest are cache hits.
    Run {
        /// The workflow YAML file.
        workflow: String,
        /// Store URL (overrides the workflow's `store:`; default `.dinoflow`).
        #[arg(long)]
        store: Option<String>,
        /// Where stages run: in this process, or each stage as a Slurm job (`sbatch`; set
        /// SLURM_CONF for a cluster other than the default).
        #[arg(long, value_enum, default_value = "local")]
        executor: ExecutorChoice,
        /// With `--executor slurm`: submissions of a job (or array task) that ends without
        /// committing, e.g. cancelled or lost with its node, before its stage fails (default 3).
        /// A stage that fails by itself is not submitted again.
        #[arg(long)]
        attempts: Option<u32>,
        /// With `--executor slurm`: more `sbatch` arguments, e.g. `--sbatch=--partition=gpu`.
        #[arg(long = "sbatch", allow_hyphen_values = true)]
        sbatch_args: Vec<String>,
        /// Keep running independent stages after a stage fails.
        #[arg(long)]
        keep_going: bool,
        /// CPU cores the run may use (default: all).
        #[arg(long)]
        cpus: Option<u32>,
        /// GPUs the run may use.
        #[arg(long, default_value_t = 0)]
        gpus: u32,
        /// Apply one of the workflow's `presets:` (config overrides such as `cpu` or `gpu`).
        #[arg(long)]
        preset: Option<String>,
    },
    /// Show each stage as cached or to run, and why.
    Plan {
        /// The workflow YAML file.
        workflow: String,
        /// Store URL (overrides the workflow's `store:`).
        #[arg(long)]
        store: Option<String>,
        /// Apply one of the workflow's `presets:`.
        #[arg(long)]
        preset: Option<String>,
    },
    /// List recent runs.
    Runs {
        /// Store URL.
        #[arg(long, default_value = ".dinoflow")]
        store: String,
        /// How many runs to list.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Show one run (by id) or one stage's history and outputs (by name).
    Show {
        /// Run id, `last` (the latest run) or stage name.
        target: String,
        /// Store URL.
        #[arg(long, default_value = ".dinoflow")]
        store: String,
    },
    /// Write one run's report: a self-contained HTML page (DAG, funnel, duplicates, retrieval,
    /// training curves, evaluation, workflow and fingerprints).
    Report {
        /// Run id, or `last` (the latest run).
        run: String,
        /// The HTML file to write (default `reports/run-<id>.html`).
        #[arg(short, long)]
        output: Option<std::path::PathBuf>,
        /// Store URL.
        #[arg(long, default_value = ".dinoflow")]
        store: String,
    },
    /// List stage kinds, or show one kind's ports and config schema.
    Stages {
        /// A kind to show in full.
        kind: Option<String>,
    },
    /// Print the workflow's DAG.
    Dag {
        /// The workflow YAML file.
        workflow: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "mermaid")]
        format: DagFormat,
    },
    /// Print the JSON schema of workflow files (for editors).
    Schema,
    /// Make, build and check WebAssembly filter plugins.
    Plugin {
        #[command(subcommand)]
        action: PluginCommand,
    },
    /// Run one task of one stage of a workflow in this process and record its outputs for the
    /// submitting process to commit (what a Slurm job of `--executor slurm` runs); its inputs
    /// must be committed. Exits 3 when the stage itself fails (not worth submitting again).
    #[command(hide = true)]
    Exec {
        /// The workflow YAML file.
        workflow: String,
        /// The stage to run.
        #[arg(long)]
        stage: String,
        /// Store URL.
        #[arg(long)]
        store: String,
        /// The stage run's fingerprint as the submitting process computed it; the task refuses
        /// to run under another.
        #[arg(long)]
        fingerprint: String,
        /// The task: a shard of the input the stage maps over, or 0 for a stage that runs whole.
        #[arg(long)]
        task: usize,
        /// The preset the run applies.
        #[arg(long)]
        preset: Option<String>,
        /// CPU cores the stage may use (default: all).
        #[arg(long)]
        cpus: Option<u32>,
    },
    /// Remove outputs left incomplete by crashes (and damaged ones).
    Gc {
        /// Store URL.
        #[arg(long, default_value = ".dinoflow")]
        store: String,
        /// Remove nothing: read every committed file and check it against its manifest (size and
        /// content digest); exit 1 when a committed output is damaged.
        #[arg(long)]
        check: bool,
    },
}

/// `dinoflow plugin ...`
#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Create a new filter plugin crate from the template (it builds as is).
    New {
        /// The plugin's name (lower case, digits, `-`).
        name: String,
        /// The folder to create it in.
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
    },
    /// Build a plugin crate for wasm32 (into DIR/dist) and check the result.
    Build {
        /// The plugin crate's folder.
        dir: std::path::PathBuf,
    },
    /// Load a plugin, print describe(), and run it on a sample batch.
    Check {
        /// The .wasm file.
        file: std::path::PathBuf,
        /// Parameters, `name=value`, repeatable.
        #[arg(long = "param", value_parser = parse_param)]
        params: Vec<(String, String)>,
    },
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}`: write parameters as name=value"))
}

/// Where stages run.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum ExecutorChoice {
    /// In this process.
    Local,
    /// As Slurm jobs.
    Slurm,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(commands::exit_code(&e))
        }
    }
}
