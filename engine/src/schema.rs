//! The JSON schema of workflow files, with each registered kind's `with:` schema, for editors.

use serde_json::{Value, json};

use crate::registry::Registry;
use crate::spec::WorkflowSpec;

/// The workflow schema: the generic structure, with `stages` entries narrowed to one of the
/// registered kinds and that kind's config schema.
pub fn workflow_schema(registry: &Registry) -> Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(WorkflowSpec)).unwrap_or_default();
    let stage_base = schema
        .pointer("/$defs/StageSpec")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut config_defs = serde_json::Map::new();
    let variants: Vec<Value> = registry
        .kinds()
        .map(|k| {
            let mut v = stage_base.clone();
            let major = k.version().major;
            v["properties"]["kind"] = json!({
                "enum": [k.kind(), format!("{}@{major}", k.kind())],
                "description": k.description(),
            });
            let mut cfg = k.config_schema();
            if let Some(obj) = cfg.as_object_mut() {
                obj.remove("$schema");
                if let Some(Value::Object(defs)) = obj.remove("$defs") {
                    config_defs.extend(defs);
                }
            }
            v["properties"]["with"] = cfg;
            v
        })
        .collect();
    if let Some(defs) = schema.pointer_mut("/$defs") {
        defs["StageSpec"] = json!({ "oneOf": variants });
        if let Some(obj) = defs.as_object_mut() {
            obj.extend(config_defs);
        }
    }
    schema
}
