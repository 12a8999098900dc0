//! The Slurm executor's jobs: one stage run is one batch job (`sbatch --wait`) that runs
//! `dinoflow exec` against the store; the job's exit and the stage's manifest say whether it
//! worked. A job whose wait is abandoned (the run fails elsewhere, or Ctrl-C) is cancelled with
//! `scancel`.

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
    /// Submissions of one stage before it counts as failed.
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

/// The `sbatch` arguments that ask for `resources`.
fn resource_args(resources: Resources) -> Vec<String> {
    let mut args = vec![
        format!("--cpus-per-task={}", resources.cpus.max(1)),
        format!(
            "--mem={}M",
            (resources.memory_gb * 1024.0).ceil().max(1.0) as u64
        ),
    ];
    if resources.gpus > 0 {
        args.push(format!("--gres=gpu:{}", resources.gpus));
    }
    args
}

/// Submits stage `stage` as one job asking for `resources` and waits for it to end. Returns the
/// job's log file; `Err` says why the job failed, with the end of its log.
pub async fn run_job(
    opts: &SlurmOptions,
    stage: &str,
    resources: Resources,
) -> Result<PathBuf, String> {
    std::fs::create_dir_all(&opts.logs)
        .map_err(|e| format!("creating the log folder {}: {e}", opts.logs.display()))?;
    let mut command = vec![
        shell_quote(&opts.program.display().to_string()),
        "exec".into(),
        shell_quote(&opts.workflow),
        "--stage".into(),
        shell_quote(stage),
        "--store".into(),
        shell_quote(&opts.store),
    ];
    if let Some(p) = &opts.preset {
        command.extend(["--preset".into(), shell_quote(p)]);
    }
    let log_pattern = opts.logs.join(format!("{stage}-%j.log"));
    let mut child = tokio::process::Command::new("sbatch")
        .args(["--parsable", "--wait", "--job-name"])
        .arg(format!("dinoflow-{stage}"))
        .arg("--output")
        .arg(&log_pattern)
        .args(resource_args(resources))
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
    let Some(id) = first.and_then(|l| l.split(';').next().map(str::to_string)) else {
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
    let log = PathBuf::from(log_pattern.display().to_string().replace("%j", id.trim()));
    if status.success() {
        return Ok(log);
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(5).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(format!(
        "Slurm job {id} ended with {status} (log {}): {}",
        log.display(),
        tail.join(" | ")
    ))
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
    }
}
