//! The filter stage's configuration (`with:`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::FilterError;

/// Configuration of the `filter` stage.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// The plugins, applied in order; a row dropped by one is not shown to the next.
    #[serde(deserialize_with = "at_least_one_plugin")]
    pub plugins: Vec<PluginSpec>,
    /// Rows sent to a plugin per call (split across the workers).
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// Wall-time limit for one plugin call, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Linear-memory cap for each plugin instance, in MiB.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
}

fn at_least_one_plugin<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<PluginSpec>, D::Error> {
    let plugins = Vec::<PluginSpec>::deserialize(d)?;
    if plugins.is_empty() {
        return Err(serde::de::Error::custom(
            "`plugins` is empty, so the stage would keep every row: list at least one, \
             e.g. `[{wasm: plugins/filters/dist/blank.wasm}]`",
        ));
    }
    Ok(plugins)
}

fn default_batch_rows() -> usize {
    16_384
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_memory_mb() -> u64 {
    256
}

/// One plugin of the chain.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginSpec {
    /// Path or URL of the plugin's `.wasm` file.
    pub wasm: String,
    /// Parameters by name (numbers, text, true/false, or lists of those); missing ones take the
    /// plugin's defaults (`dinoflow plugin check FILE` lists them).
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
}

fn scalar_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl PluginSpec {
    /// The parameters as the text the plugin receives (lists joined with commas).
    pub fn text_params(&self, plugin: &str) -> Result<Vec<(String, String)>, FilterError> {
        self.params
            .iter()
            .map(|(name, v)| {
                let text = match v {
                    serde_json::Value::Array(items) => items
                        .iter()
                        .map(scalar_text)
                        .collect::<Option<Vec<_>>>()
                        .map(|v| v.join(",")),
                    other => scalar_text(other),
                };
                text.map(|t| (name.clone(), t))
                    .ok_or_else(|| FilterError::BadParam {
                        plugin: plugin.to_string(),
                        name: name.clone(),
                    })
            })
            .collect()
    }
}
