//! The Slurm executor's jobs: a stage run is one batch job, or a job array with one task per
//! shard (`sbatch --wait`), each running `dinoflow exec` against the store; the task manifests
//! in the store say which tasks finished. A job whose wait is abandoned (the run fails
//! elsewhere, or Ctrl-C) is cancelled with `scancel`.

use std::path::PathBuf;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::stage::Resources;

/// How stages are submitted to Slurm.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    /// The `dinoflow` binary the jobs run (on a path the nodes share).
    pub program: PathBuf,
    /// The workflow file as the jobs open it.
    pub workflow: String,
    /// The preset the run applies.
    pub preset: Option<String>,
    /// The store URL the jobs read and write.
    pub store: String,
    /// Folder for the jobs' logs (on a file system the nodes share).
    pub logs: PathBuf,
    /// Submissions of a task that ends without committing (cancelled, node lost) before the
    /// stage counts as failed.
    pub attempts: u32,
    /// More `sbatch` arguments (`--partition`, `--account`, `--time`, …).
    pub extra_args: Vec<String>,
}

/// `'text'` for a POSIX shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Cancels the job it holds when dropped before [`Scancel::finished`].
struct Scancel(Option<String>);

impl Scancel {
    fn finished(mut self) {
        self.0 = None;
    }
}

impl Drop for Scancel {
    fn drop(&mut self) {
        if let Some(id) = self.0.take() {
            tracing::info!(job = %id, "cancelling the Slurm job");
            let _ = std::process::Command::new("scancel").arg(&id).status();
        }
    }
}

/// The `sbatch` arguments that ask for `resources`, as the workflow states them: the cluster,
/// not the submitting machine, decides whether they fit. A stage that takes every core it finds
/// (the data stages' default) asks for a whole node.
fn resource_args(resources: Resources) -> Vec<String> {
    let mut args = vec![if resources.cpus == u32::MAX {
        "--exclusive".to_string()
    } else {
        format!("--cpus-per-task={}", resources.cpus.max(1))
    }];
    args.push(format!(
        "--mem={}M",
        (resources.memory_gb * 1024.0).ceil().max(1.0) as u64
    ));
    if resources.gpus > 0 {
        args.push(format!("--gres=gpu:{}", resources.gpus));
    }
    args
}

/// One submission: some tasks of one stage run.
pub(crate) struct JobRequest<'a> {
    /// The stage's name in the workflow.
    pub stage: &'a str,
    /// The stage run's fingerprint; the job refuses to run if it computes another.
    pub fingerprint: &'a str,
    /// The tasks to run.
    pub tasks: &'a [usize],
    /// Whether the stage runs as tasks (a job array); else one job runs it whole as task 0.
    pub array: bool,
    /// What each task asks for.
    pub resources: Resources,
}

/// A submission that ended (each task committed, failed or was cancelled).
pub(crate) struct JobEnded {
    /// The Slurm job id.
    pub id: String,
    /// `sbatch --wait`'s exit status (the highest of the tasks').
    pub status: std::process::ExitStatus,
    /// The log file of each task, in the order of the request's tasks.
    pub logs: Vec<PathBuf>,
    tasks: Vec<usize>,
}

impl JobEnded {
    /// The log of task `task`.
    pub fn log(&self, task: usize) -> PathBuf {
        self.tasks
            .iter()
            .position(|&t| t == task)
            .and_then(|i| self.logs.get(i).cloned())
            .unwrap_or_default()
    }

    /// The job, its status and the end of its first log, in one line.
    pub fn summary(&self) -> String {
        let log = self.logs.first().cloned().unwrap_or_default();
        let text = std::fs::read(&log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "Slurm job {} ended with {} without committing every task (log {}): {}",
            self.id,
            self.status,
            log.display(),
            tail.join(" | ")
        )
    }
}

/// A log path for Slurm's `--output`, whose `%` starts a pattern.
fn escape_percent(path: &std::path::Path) -> String {
    path.display().to_string().replace('%', "%%")
}

/// Submits `job` (one batch job, or a job array with one task per requested task) and waits for
/// it to end. `Err` when it could not be submitted at all (no Slurm, options refused): submitting
/// it again would not help.
pub(crate) async fn run_job(opts: &SlurmOptions, job: &JobRequest<'_>) -> Result<JobEnded, String> {
    std::fs::create_dir_all(&opts.logs)
        .map_err(|e| format!("creating the log folder {}: {e}", opts.logs.display()))?;
    let mut command = vec![
        shell_quote(&opts.program.display().to_string()),
        "exec".into(),
        shell_quote(&opts.workflow),
        "--stage".into(),
        shell_quote(job.stage),
        "--store".into(),
        shell_quote(&opts.store),
        "--fingerprint".into(),
        shell_quote(job.fingerprint),
        "--task".into(),
    ];
    command.push(if job.array {
        "\"$SLURM_ARRAY_TASK_ID\"".into()
    } else {
        "0".into()
    });
    if job.resources.cpus != u32::MAX {
        command.extend(["--cpus".into(), job.resources.cpus.max(1).to_string()]);
    }
    if let Some(p) = &opts.preset {
        command.extend(["--preset".into(), shell_quote(p)]);
    }
    let logs = escape_percent(&opts.logs);
    let mut sbatch = tokio::process::Command::new("sbatch");
    sbatch
        .args(["--parsable", "--wait", "--job-name"])
        .arg(format!("dinoflow-{}", job.stage));
    if job.array {
        let list: Vec<String> = job.tasks.iter().map(usize::to_string).collect();
        sbatch
            .arg(format!("--array={}", list.join(",")))
            .arg("--output")
            .arg(format!("{logs}/{}-%A_%a.log", job.stage));
    } else {
        sbatch
            .arg("--output")
            .arg(format!("{logs}/{}-%j.log", job.stage));
    }
    let mut child = sbatch
        .args(resource_args(job.resources))
        .args(&opts.extra_args)
        .arg("--wrap")
        .arg(command.join(" "))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run sbatch ({e}); is Slurm installed and SLURM_CONF set?"))?;
    let stdout = child.stdout.take().ok_or("sbatch has no output")?;
    let first = BufReader::new(stdout)
        .lines()
        .next_line()
        .await
        .map_err(|e| format!("reading sbatch's output: {e}"))?;
    let Some(id) = first.and_then(|l| l.split(';').next().map(|id| id.trim().to_string())) else {
        let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
        return Err(format!(
            "sbatch refused the job: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    };
    let guard = Scancel(Some(id.clone()));
    let status = child
        .wait()
        .await
        .map_err(|e| format!("waiting for job {id}: {e}"))?;
    guard.finished();
    let logs = if job.array {
        job.tasks
            .iter()
            .map(|t| opts.logs.join(format!("{}-{id}_{t}.log", job.stage)))
            .collect()
    } else {
        vec![opts.logs.join(format!("{}-{id}.log", job.stage))]
    };
    Ok(JobEnded {
        id,
        status,
        logs,
        tasks: job.tasks.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_spaces_and_quotes() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn resources_become_sbatch_options() {
        let r = Resources {
            cpus: 4,
            gpus: 0,
            memory_gb: 1.5,
        };
        assert_eq!(resource_args(r), ["--cpus-per-task=4", "--mem=1536M"]);
        let r = Resources {
            cpus: 0,
            gpus: 2,
            memory_gb: 0.0,
        };
        assert_eq!(
            resource_args(r),
            ["--cpus-per-task=1", "--mem=1M", "--gres=gpu:2"]
        );
        let every_core = Resources {
            cpus: u32::MAX,
            gpus: 0,
            memory_gb: 2.0,
        };
        assert_eq!(resource_args(every_core), ["--exclusive", "--mem=2048M"]);
    }

    #[test]
    fn percent_signs_in_log_folders_are_not_patterns() {
        assert_eq!(
            escape_percent(std::path::Path::new("/runs/100%/logs")),
            "/runs/100%%/logs"
        );
    }
}
