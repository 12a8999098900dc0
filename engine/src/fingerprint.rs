//! Fingerprints: blake3 over everything that determines a stage's outputs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What goes into a fingerprint. Stored in the run database so `plan` can say what changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FingerprintParts {
    /// Stage kind.
    pub kind: String,
    /// Stage kind version.
    pub version: String,
    /// Canonical config (typed, defaults filled in).
    pub config: serde_json::Value,
    /// Input port → `<upstream fingerprint>/<upstream port>`.
    pub inputs: BTreeMap<String, String>,
    /// Extra byte-stream name → digest.
    pub extras: BTreeMap<String, String>,
}

impl FingerprintParts {
    /// The fingerprint: 32 hex digits of blake3 over the canonical JSON of the parts.
    pub fn fingerprint(&self) -> String {
        let value = serde_json::to_value(self).unwrap_or_default();
        let mut text = String::new();
        canonical_json(&value, &mut text);
        blake3::hash(text.as_bytes()).to_hex()[..32].to_string()
    }

    /// Human-readable reasons why `self` differs from `before` (empty when equal).
    pub fn changes_since(&self, before: &FingerprintParts) -> Vec<String> {
        let mut why = Vec::new();
        if self.kind != before.kind {
            why.push(format!("kind changed: {} → {}", before.kind, self.kind));
        } else if self.version != before.version {
            why.push(format!(
                "{} version changed: {} → {}",
                self.kind, before.version, self.version
            ));
        }
        let mut fields = Vec::new();
        diff_values("", &before.config, &self.config, &mut fields);
        if !fields.is_empty() {
            why.push(format!("config changed: {}", fields.join(", ")));
        }
        for (port, now) in &self.inputs {
            match before.inputs.get(port) {
                Some(old) if old == now => {}
                Some(_) => why.push(format!("input `{port}` changed")),
                None => why.push(format!("input `{port}` added")),
            }
        }
        for port in before
            .inputs
            .keys()
            .filter(|p| !self.inputs.contains_key(*p))
        {
            why.push(format!("input `{port}` removed"));
        }
        for (name, now) in &self.extras {
            if before.extras.get(name) != Some(now) {
                why.push(format!("{name} changed"));
            }
        }
        why
    }
}

/// Serialises JSON with object keys sorted, so equal values always give equal text.
pub fn canonical_json(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical_json(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn diff_values(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => diff_values(&p, va, vb, out),
                    (None, Some(vb)) => out.push(format!("{p} = {vb} (new)")),
                    (Some(_), None) => out.push(format!("{p} removed")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                diff_values(&format!("{path}[{i}]"), va, vb, out);
            }
        }
        _ if a != b => out.push(format!("{path}: {a} → {b}")),
        _ => {}
    }
}
