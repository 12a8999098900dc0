//! Checkpoints of a training stage: `checkpoints/<fingerprint>/step-NNNNNNNN.safetensors` in the
//! store, holding the learner's state ([`Learner::state`]), the optimiser's step count and the
//! output rows so far (`metrics` and `monitor`). Only the newest is kept.

use std::collections::HashMap;

use bytes::Bytes;
use dinoflow_engine::StageError;
use dinoflow_storage::Store;
use dinoflow_vision::weights::{NamedTensors, read_safetensors, safetensors_bytes};

use crate::PretrainError;
use crate::learner::Learner;
use crate::metrics::MetricRow;
use crate::monitor::MonitorRow;

/// The newest checkpoint under `prefix`: its step and bytes.
pub(crate) async fn latest_checkpoint(
    store: &Store,
    prefix: &str,
) -> Result<Option<(usize, Bytes)>, StageError> {
    let newest = store
        .list(prefix)
        .await?
        .into_iter()
        .filter_map(|l| {
            let name = l.key.rsplit('/').next()?.to_string();
            let step = name
                .strip_prefix("step-")?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()?;
            Some((step, l.key))
        })
        .max();
    match newest {
        Some((step, key)) => Ok(Some((step, store.get(&key).await?))),
        None => Ok(None),
    }
}

/// What a checkpoint holds.
pub(crate) struct Checkpoint {
    /// The learner's state, for [`Learner::restore`].
    pub(crate) tensors: NamedTensors,
    /// The optimiser's step count.
    pub(crate) adam_step: i64,
    /// The `metrics` rows of the iterations before it.
    pub(crate) metrics: Vec<MetricRow>,
    /// The `monitor` rows computed before it.
    pub(crate) monitor: Vec<MonitorRow>,
}

impl Checkpoint {
    /// Reads a checkpoint's bytes.
    pub(crate) fn read(bytes: &[u8]) -> Result<Self, PretrainError> {
        let file = read_safetensors(bytes, "checkpoint")
            .map_err(|e| PretrainError::Config(e.to_string()))?;
        let adam_step = file
            .metadata
            .get("adam_step")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let metrics = file
            .metadata
            .get("metrics")
            .and_then(|m| serde_json::from_str(m).ok())
            .unwrap_or_default();
        let monitor = file
            .metadata
            .get("monitor")
            .and_then(|m| serde_json::from_str(m).ok())
            .unwrap_or_default();
        Ok(Self {
            tensors: file.tensors,
            adam_step,
            metrics,
            monitor,
        })
    }
}

/// Where checkpoints go and how to reach the store from the training thread.
pub(crate) struct CheckpointSink {
    /// The store.
    pub(crate) store: Store,
    /// `checkpoints/<fingerprint>/`.
    pub(crate) prefix: String,
    /// The runtime the store's futures run on.
    pub(crate) handle: tokio::runtime::Handle,
}

impl CheckpointSink {
    /// Writes the checkpoint after `step` iterations, with the output rows so far, and deletes
    /// the older ones.
    pub(crate) fn save(
        &self,
        learner: &Learner,
        step: usize,
        (metrics, monitor): (&[MetricRow], &[MonitorRow]),
    ) -> Result<(), PretrainError> {
        let json = |rows: Result<String, serde_json::Error>| {
            rows.map_err(|e| PretrainError::Config(e.to_string()))
        };
        let metadata = HashMap::from([
            ("step".to_string(), step.to_string()),
            ("adam_step".to_string(), learner.optimizer.step.to_string()),
            ("metrics".to_string(), json(serde_json::to_string(metrics))?),
            ("monitor".to_string(), json(serde_json::to_string(monitor))?),
        ]);
        let bytes = safetensors_bytes(&learner.state(), metadata)
            .map_err(|e| PretrainError::Config(e.to_string()))?;
        let key = format!("{}step-{step:08}.safetensors", self.prefix);
        self.handle
            .block_on(async {
                self.store.put(&key, Bytes::from(bytes)).await?;
                for old in self.store.list(&self.prefix).await? {
                    if old.key != key {
                        self.store.delete(&old.key).await?;
                    }
                }
                Ok::<(), dinoflow_storage::StorageError>(())
            })
            .map_err(|e| PretrainError::Config(format!("writing checkpoint {key}: {e}")))?;
        tracing::info!(step, key, "checkpoint written");
        Ok(())
    }
}
