//! `dinoflow report RUN`: one self-contained HTML page per run (no external assets, no network),
//! generated from the run database and the store only.

mod curves;
mod gather;
mod html;
mod svg;
mod thumbs;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use dinoflow_engine::Engine;
use serde::Serialize;

pub use gather::evaluations;

/// What `dinoflow report` wrote.
#[derive(Debug, Serialize)]
pub struct Written {
    /// The run reported.
    pub run: i64,
    /// The HTML file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
}

/// The default file of run `id`'s report: `reports/run-<id>.html` under the current directory.
pub fn default_path(id: i64) -> PathBuf {
    PathBuf::from("reports").join(format!("run-{id}.html"))
}

/// Renders the report of run `id` (the latest for `None`) into `out` (default [`default_path`]);
/// the file is replaced whole or not at all.
pub async fn write(engine: &Engine, id: Option<i64>, out: Option<&Path>) -> Result<Written> {
    let data = gather::gather(engine, id).await?;
    let generated = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let page = html::page(&data, env!("CARGO_PKG_VERSION"), &generated).into_string();
    let path = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| default_path(data.run.id));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("html.partial");
    std::fs::write(&tmp, &page).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(Written {
        run: data.run.id,
        path,
        bytes: page.len() as u64,
    })
}
