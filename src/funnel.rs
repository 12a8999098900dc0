//! The funnel of a run: how many rows went into and came out of each stage, read from the
//! manifests in the store (the workflow's version of the DINOv2 paper's 1.2B → 142M table).

use std::collections::HashMap;

use anyhow::Result;
use dinoflow_engine::StageRunRow;
use dinoflow_storage::{CacheState, Manifest, Store};
use serde::Serialize;

/// Rows on one port (`None`: an artifact, or outputs no longer in the store).
#[derive(Debug, Serialize)]
pub struct PortRows {
    /// Port name.
    pub port: String,
    /// Rows of the dataset on that port.
    pub rows: Option<u64>,
}

/// One stage of the funnel.
#[derive(Debug, Serialize)]
pub struct FunnelStage {
    /// Stage name.
    pub stage: String,
    /// ok, cached, failed, …
    pub status: String,
    /// Rows read, by input port.
    pub inputs: Vec<PortRows>,
    /// Rows written, by output port.
    pub outputs: Vec<PortRows>,
}

/// The funnel of the given stage runs (one run's stages, in order).
pub async fn funnel(store: &Store, stages: &[StageRunRow]) -> Result<Vec<FunnelStage>> {
    let mut manifests: HashMap<String, Option<Manifest>> = HashMap::new();
    let mut result = Vec::with_capacity(stages.len());
    for s in stages {
        let mut inputs = Vec::with_capacity(s.inputs.len());
        for (port, source) in &s.inputs {
            let (fingerprint, upstream_port) = source.split_once('/').unwrap_or((source, ""));
            let rows = manifest(store, &mut manifests, fingerprint)
                .await?
                .and_then(|m| m.outputs.get(upstream_port).and_then(|o| o.rows));
            inputs.push(PortRows {
                port: port.clone(),
                rows,
            });
        }
        let outputs = manifest(store, &mut manifests, &s.fingerprint)
            .await?
            .map(|m| {
                m.outputs
                    .iter()
                    .map(|(port, o)| PortRows {
                        port: port.clone(),
                        rows: o.rows,
                    })
                    .collect()
            })
            .unwrap_or_default();
        result.push(FunnelStage {
            stage: s.stage.clone(),
            status: s.status.clone(),
            inputs,
            outputs,
        });
    }
    Ok(result)
}

/// The manifest committed under `fingerprint`, if it is still whole in the store (memoised).
async fn manifest<'a>(
    store: &Store,
    seen: &'a mut HashMap<String, Option<Manifest>>,
    fingerprint: &str,
) -> Result<Option<&'a Manifest>> {
    if !seen.contains_key(fingerprint) {
        let m = match store.check_cached(fingerprint).await? {
            CacheState::Hit(m) => Some(m),
            CacheState::Miss(_) => None,
        };
        seen.insert(fingerprint.to_string(), m);
    }
    Ok(seen.get(fingerprint).and_then(Option::as_ref))
}

/// `port rows, port rows` (thousands separated), `-` when empty.
pub fn describe(ports: &[PortRows]) -> String {
    if ports.is_empty() {
        return "-".into();
    }
    ports
        .iter()
        .map(|p| match p.rows {
            Some(r) => format!("{} {}", p.port, thousands(r)),
            None => p.port.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn ports_are_listed_with_rows() {
        let ports = [
            PortRows {
                port: "kept".into(),
                rows: Some(14_035),
            },
            PortRows {
                port: "model".into(),
                rows: None,
            },
        ];
        assert_eq!(describe(&ports), "kept 14,035, model");
        assert_eq!(describe(&[]), "-");
    }
}
