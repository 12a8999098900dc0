//! The run database (SQLite): runs, stage runs, status, timings, fingerprints, errors, metrics.
//! History and lineage only: the store's manifests decide cache hits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::dag::Dag;
use crate::error::EngineError;
use crate::fingerprint::FingerprintParts;

/// A handle on the run database.
pub struct RunDb {
    conn: Mutex<Connection>,
    path: PathBuf,
}

/// One row of the `runs` table.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    /// Run id.
    pub id: i64,
    /// Workflow name.
    pub workflow: String,
    /// Workflow file.
    pub file: String,
    /// Store URL.
    pub store: String,
    /// Start time, RFC 3339.
    pub started: String,
    /// End time, RFC 3339, when finished.
    pub finished: Option<String>,
    /// running, ok, failed, cancelled.
    pub status: String,
    /// The error, when failed.
    pub error: Option<String>,
    /// The workflow file's text when the run started (absent for runs recorded before 0.1.1).
    pub source: Option<String>,
    /// The preset the run applied, if any.
    pub preset: Option<String>,
}

/// One row of the `stage_runs` table.
#[derive(Debug, Clone, Serialize)]
pub struct StageRunRow {
    /// The run it belongs to.
    pub run_id: i64,
    /// Stage name.
    pub stage: String,
    /// Stage kind.
    pub kind: String,
    /// Stage kind version.
    pub version: String,
    /// Fingerprint.
    pub fingerprint: String,
    /// running, ok, cached, failed, cancelled, skipped.
    pub status: String,
    /// Start time, RFC 3339.
    pub started: String,
    /// Wall time in seconds, when finished.
    pub seconds: Option<f64>,
    /// The error, when failed.
    pub error: Option<String>,
    /// Metrics the stage recorded.
    pub metrics: serde_json::Value,
    /// Input port → `<upstream fingerprint>/<upstream port>` (from the fingerprint parts).
    pub inputs: BTreeMap<String, String>,
}

/// Adds the `columns` (name, SQL type) that `table` lacks: databases written by older versions
/// gain them empty. One write transaction, so processes opening the database at once agree.
fn add_missing_columns(
    conn: &mut Connection,
    table: &str,
    columns: &[(&str, &str)],
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let existing: Vec<String> = tx
        .prepare(&format!("PRAGMA table_info({table})"))?
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<rusqlite::Result<_>>()?;
    for (name, sql_type) in columns {
        if !existing.iter().any(|c| c == name) {
            tx.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {name} {sql_type}"))?;
        }
    }
    tx.commit()
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl RunDb {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, EngineError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| EngineError::Io {
                path: dir.display().to_string(),
                source: e,
            })?;
        }
        let conn = Connection::open(path).map_err(|e| EngineError::Database {
            path: path.display().to_string(),
            source: Box::new(e),
        })?;
        Self::set_up(conn, path)
    }

    /// A database in memory, for a process that keeps no run history (a Slurm job's worker).
    pub fn in_memory() -> Result<Self, EngineError> {
        let path = Path::new(":memory:");
        let conn = Connection::open_in_memory().map_err(|e| EngineError::Database {
            path: path.display().to_string(),
            source: Box::new(e),
        })?;
        Self::set_up(conn, path)
    }

    /// Creates the tables (and columns added since) that are missing.
    fn set_up(mut conn: Connection, path: &Path) -> Result<Self, EngineError> {
        let db_err = |e| EngineError::Database {
            path: path.display().to_string(),
            source: Box::new(e),
        };
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(db_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE IF NOT EXISTS runs (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                workflow TEXT NOT NULL, file TEXT NOT NULL, store TEXT NOT NULL,
                started TEXT NOT NULL, finished TEXT, status TEXT NOT NULL, error TEXT);
             CREATE TABLE IF NOT EXISTS stage_runs (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                run_id INTEGER NOT NULL REFERENCES runs(id),
                stage TEXT NOT NULL, kind TEXT NOT NULL, version TEXT NOT NULL,
                fingerprint TEXT NOT NULL, parts TEXT NOT NULL,
                status TEXT NOT NULL, started TEXT NOT NULL, seconds REAL,
                error TEXT, metrics TEXT NOT NULL DEFAULT '{}');
             CREATE INDEX IF NOT EXISTS stage_runs_by_stage ON stage_runs(stage, id);
             CREATE INDEX IF NOT EXISTS stage_runs_by_fingerprint ON stage_runs(fingerprint, id);",
        )
        .map_err(db_err)?;
        add_missing_columns(&mut conn, "runs", &[("source", "TEXT"), ("preset", "TEXT")])
            .map_err(db_err)?;
        Ok(Self {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, EngineError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(|e| EngineError::Database {
            path: self.path.display().to_string(),
            source: Box::new(e),
        })
    }

    /// Records the start of a run of `dag` against the store at `store` and returns its id.
    pub fn start_run(&self, dag: &Dag, store: &str) -> Result<i64, EngineError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO runs (workflow, file, store, started, status, source, preset)
                 VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6)",
                params![dag.name, dag.file, store, now(), dag.source, dag.preset],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    /// Records the end of a run.
    pub fn finish_run(
        &self,
        id: i64,
        status: &str,
        error: Option<&str>,
    ) -> Result<(), EngineError> {
        self.with(|c| {
            c.execute(
                "UPDATE runs SET finished = ?2, status = ?3, error = ?4 WHERE id = ?1",
                params![id, now(), status, error],
            )
            .map(|_| ())
        })
    }

    /// Records the start of a stage run and returns its row id.
    pub fn start_stage(
        &self,
        run_id: i64,
        stage: &str,
        fingerprint: &str,
        parts: &FingerprintParts,
        status: &str,
    ) -> Result<i64, EngineError> {
        let parts_json = serde_json::to_string(parts).unwrap_or_default();
        self.with(|c| {
            c.execute(
                "INSERT INTO stage_runs (run_id, stage, kind, version, fingerprint, parts, status, started)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![run_id, stage, parts.kind, parts.version, fingerprint, parts_json, status, now()],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    /// Records the end of a stage run.
    pub fn finish_stage(
        &self,
        row: i64,
        status: &str,
        seconds: f64,
        error: Option<&str>,
        metrics: &serde_json::Value,
    ) -> Result<(), EngineError> {
        self.with(|c| {
            c.execute(
                "UPDATE stage_runs SET status = ?2, seconds = ?3, error = ?4, metrics = ?5 WHERE id = ?1",
                params![row, status, seconds, error, metrics.to_string()],
            )
            .map(|_| ())
        })
    }

    /// The fingerprint parts of the last successful (ok or cached) run of `stage` in `workflow`.
    pub fn last_parts(
        &self,
        workflow: &str,
        stage: &str,
    ) -> Result<Option<FingerprintParts>, EngineError> {
        let json: Option<String> = self.with(|c| {
            c.query_row(
                "SELECT s.parts FROM stage_runs s JOIN runs r ON r.id = s.run_id
                 WHERE r.workflow = ?1 AND s.stage = ?2 AND s.status IN ('ok', 'cached')
                 ORDER BY s.id DESC LIMIT 1",
                params![workflow, stage],
                |r| r.get(0),
            )
            .optional()
        })?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// The most recent runs, newest first.
    pub fn runs(&self, limit: usize) -> Result<Vec<RunRow>, EngineError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, workflow, file, store, started, finished, status, error, source, preset
                 FROM runs ORDER BY id DESC LIMIT ?1",
            )?;
            st.query_map(params![limit as i64], |r| {
                Ok(RunRow {
                    id: r.get(0)?,
                    workflow: r.get(1)?,
                    file: r.get(2)?,
                    store: r.get(3)?,
                    started: r.get(4)?,
                    finished: r.get(5)?,
                    status: r.get(6)?,
                    error: r.get(7)?,
                    source: r.get(8)?,
                    preset: r.get(9)?,
                })
            })?
            .collect()
        })
    }

    /// One run.
    pub fn run(&self, id: i64) -> Result<Option<RunRow>, EngineError> {
        Ok(self
            .runs(i64::MAX as usize)?
            .into_iter()
            .find(|r| r.id == id))
    }

    /// Stage runs matching `filter` (`run_id = ?` or `stage = ?`), newest last.
    fn stage_rows(
        &self,
        filter: &str,
        value: &dyn rusqlite::ToSql,
    ) -> Result<Vec<StageRunRow>, EngineError> {
        let sql = format!(
            "SELECT run_id, stage, kind, version, fingerprint, status, started, seconds, error, metrics,
             parts FROM stage_runs WHERE {filter} = ?1 ORDER BY id"
        );
        self.with(|c| {
            let mut st = c.prepare(&sql)?;
            st.query_map([value], |r| {
                let metrics: String = r.get(9)?;
                let parts: String = r.get(10)?;
                Ok(StageRunRow {
                    run_id: r.get(0)?,
                    stage: r.get(1)?,
                    kind: r.get(2)?,
                    version: r.get(3)?,
                    fingerprint: r.get(4)?,
                    status: r.get(5)?,
                    started: r.get(6)?,
                    seconds: r.get(7)?,
                    error: r.get(8)?,
                    metrics: serde_json::from_str(&metrics).unwrap_or_default(),
                    inputs: serde_json::from_str::<FingerprintParts>(&parts)
                        .map(|p| p.inputs)
                        .unwrap_or_default(),
                })
            })?
            .collect()
        })
    }

    /// The stage runs of run `id`.
    pub fn stages_of_run(&self, id: i64) -> Result<Vec<StageRunRow>, EngineError> {
        self.stage_rows("run_id", &id)
    }

    /// The latest stage run that computed (rather than reused) the outputs of `fingerprint`.
    pub fn computed(&self, fingerprint: &str) -> Result<Option<StageRunRow>, EngineError> {
        Ok(self
            .stage_rows("fingerprint", &fingerprint)?
            .into_iter()
            .rfind(|s| s.status == "ok"))
    }

    /// Every recorded run of the stage called `stage`, oldest first.
    pub fn history_of_stage(&self, stage: &str) -> Result<Vec<StageRunRow>, EngineError> {
        self.stage_rows("stage", &stage)
    }
}
