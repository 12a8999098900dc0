//! The workflow file: typed structs parsed with serde_yaml, with every error located in the file.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::SpecError;
use crate::locate::{Position, Positions};

/// A workflow: named stages whose inputs connect them into a DAG.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSpec {
    /// Name of the workflow, used in the run history.
    pub name: String,
    /// Object-store URL for outputs (a local folder by default: `.dinoflow`).
    #[serde(default)]
    pub store: Option<String>,
    /// Stages by name. Names use letters, digits, `_` and `-`.
    pub stages: IndexMap<String, StageSpec>,
    /// Named sets of config overrides (`--preset NAME`): preset → stage → fields merged into that
    /// stage's `with:` (mappings merge key by key; other values replace).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub presets: IndexMap<String, IndexMap<String, serde_json::Value>>,
}

/// One stage of a workflow.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// The stage kind (see `dinoflow stages`), optionally pinned to a major version: `ingest@1`.
    pub kind: String,
    /// Input port → `other_stage` or `other_stage.port`.
    #[serde(default)]
    pub inputs: IndexMap<String, String>,
    /// The stage kind's configuration.
    #[serde(default, rename = "with")]
    pub config: serde_json::Value,
    /// What the stage needs from the machine; the scheduler runs stages side by side within these.
    #[serde(default)]
    pub resources: ResourceSpec,
}

/// Resource requests in the workflow; unset fields take the stage kind's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    /// CPU cores.
    #[serde(default)]
    pub cpus: Option<u32>,
    /// GPUs.
    #[serde(default)]
    pub gpus: Option<u32>,
    /// Memory in GiB.
    #[serde(default)]
    pub memory_gb: Option<f64>,
}

/// A parsed workflow file with the positions of its keys.
#[derive(Debug, Clone)]
pub struct WorkflowFile {
    /// The file's path as given (used in error messages).
    pub file: String,
    /// The parsed content.
    pub spec: WorkflowSpec,
    /// Where each key is.
    pub positions: Positions,
}

impl WorkflowFile {
    /// Parses `source`, read from `file`.
    pub fn parse(file: &str, source: &str) -> Result<Self, SpecError> {
        let positions = Positions::index(source);
        // serde keeps one value of a repeated key (or, for struct fields, reports it without its
        // position), so repeated keys are found here.
        if let Some(d) = positions.first_duplicate() {
            let within = if d.parent.is_empty() {
                String::new()
            } else {
                format!(" in `{}`", d.parent)
            };
            return Err(SpecError {
                file: file.to_string(),
                position: d.again,
                message: format!(
                    "duplicate key `{}`{within} (first written at line {})",
                    d.key, d.first.line
                ),
                hint: Some("each key may appear once; rename or merge the duplicates".into()),
            });
        }
        let spec: WorkflowSpec = serde_yaml::from_str(source).map_err(|e| {
            let position = e
                .location()
                .map(|l| Position {
                    line: l.line(),
                    column: l.column(),
                })
                .unwrap_or_default();
            let message = strip_location(&e.to_string(), position);
            let hint = yaml_hint(&message);
            SpecError {
                file: file.to_string(),
                position,
                message,
                hint,
            }
        })?;
        let wf = Self {
            file: file.to_string(),
            spec,
            positions,
        };
        for name in wf.spec.stages.keys() {
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return Err(wf.error(
                    &format!("stages.{name}"),
                    format!("invalid stage name `{name}`"),
                    Some("stage names use letters, digits, `_` and `-` only".into()),
                ));
            }
        }
        if wf.spec.stages.is_empty() {
            return Err(wf.error(
                "stages",
                "the workflow has no stages".into(),
                Some("add at least one stage under `stages:`".into()),
            ));
        }
        Ok(wf)
    }

    /// Merges preset `name`'s overrides into the stages' `with:`.
    pub fn apply_preset(&mut self, name: &str) -> Result<(), SpecError> {
        let Some(preset) = self.spec.presets.get(name).cloned() else {
            let known: Vec<&str> = self.spec.presets.keys().map(String::as_str).collect();
            return Err(self.error(
                "presets",
                format!("the workflow has no preset `{name}`"),
                Some(if known.is_empty() {
                    "it defines no presets; run it without `--preset`".into()
                } else {
                    format!("its presets are: {}", known.join(", "))
                }),
            ));
        };
        for (stage, overrides) in preset {
            let Some(spec) = self.spec.stages.get_mut(&stage) else {
                return Err(self.error(
                    &format!("presets.{name}.{stage}"),
                    format!("preset `{name}` overrides `{stage}`, which is not a stage"),
                    Some("name a stage of this workflow".into()),
                ));
            };
            if !overrides.is_object() {
                return Err(self.error(
                    &format!("presets.{name}.{stage}"),
                    format!("preset `{name}`: the overrides of `{stage}` are not a mapping"),
                    Some(format!(
                        "write the fields to change, as under `with:`: `{stage}: {{steps: 100}}`"
                    )),
                ));
            }
            merge(&mut spec.config, overrides);
        }
        Ok(())
    }

    /// An error located at the key `path` (dotted), or at its closest existing parent.
    pub fn error(&self, path: &str, message: String, hint: Option<String>) -> SpecError {
        SpecError {
            file: self.file.clone(),
            position: self.positions.find(path),
            message,
            hint,
        }
    }
}

/// Merges `over` into `base`: mappings key by key, recursively; any other value replaces.
fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

/// serde_yaml writes the error's own position (" at line L column C") into its messages; it is
/// reported separately. Syntax errors also name where the enclosing construct starts (", while
/// parsing a flow mapping at line L column C"): that one is kept, it is where to look.
fn strip_location(msg: &str, at: Position) -> String {
    let mark = format!(" at line {} column {}", at.line, at.column);
    match msg.find(&mark) {
        Some(i) => format!("{}{}", &msg[..i], &msg[i + mark.len()..]),
        None => msg.to_string(),
    }
}

fn yaml_hint(message: &str) -> Option<String> {
    if message.contains("unknown field") {
        Some("remove or rename the field; the valid ones are listed above".into())
    } else if message.contains("missing field") {
        Some("add the field; `dinoflow schema` prints the full workflow schema".into())
    } else if message.contains("duplicate entry") {
        Some("each key may appear once; rename or merge the duplicates".into())
    } else if message.contains("cannot start any token") {
        Some("indent with spaces, not tabs; quote values that start with `@` or `` ` ``".into())
    } else if message.contains("invalid type") {
        Some("check the value's type against docs/workflow-reference.md".into())
    } else {
        None
    }
}
