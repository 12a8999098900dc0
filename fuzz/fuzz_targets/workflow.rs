//! Any text as a workflow file: parsing and validation return a located error or a DAG, never
//! panic, for every preset the text defines.
#![no_main]

use dinoflow_engine::{Dag, Registry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut registry = Registry::new();
    registry.register(dinoflow_ingest::Ingest);
    match Dag::parse("fuzz.yaml", text, &registry) {
        Ok(dag) => assert!(!dag.nodes.is_empty()),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    for preset in ["cpu", "gpu", ""] {
        let _ = Dag::parse_preset("fuzz.yaml", text, &registry, Some(preset));
    }
});
