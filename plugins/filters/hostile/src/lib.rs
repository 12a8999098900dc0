//! A deliberately misbehaving filter for the sandbox tests of the host. Its `mode` parameter picks
//! the misbehaviour in `filter`:
//! `keep` (behaves), `loop` (never returns), `bomb` (allocates without bound), `short` (returns one
//! code too few), `trap` (panics), `bad-code` (returns a code describe() does not declare), `peek`
//! (drops every row, code 1, if any column arrived non-empty: it declares none, so the host must
//! send them all empty).

wit_bindgen::generate!({ path: "../../wit", world: "filter" });

use std::sync::Mutex;

use dinoflow::filter::types::{Columns, ParamKind, ParamSpec, Reason};

const MODES: [&str; 7] = ["keep", "loop", "bomb", "short", "trap", "bad-code", "peek"];

static MODE: Mutex<&'static str> = Mutex::new("keep");

struct Hostile;

impl Guest for Hostile {
    fn describe() -> Info {
        Info {
            name: "hostile".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Misbehaves on purpose, for sandbox tests.".into(),
            params: vec![ParamSpec {
                name: "mode".into(),
                kind: ParamKind::Text,
                default_value: "keep".into(),
                description: format!("one of: {}", MODES.join(", ")),
            }],
            reasons: vec![Reason {
                code: 1,
                text: "dropped on purpose".into(),
            }],
            // Only the row count: every column arrives empty.
            reads: Columns::empty(),
        }
    }

    fn configure(params: Vec<Param>) -> Result<(), String> {
        for p in params {
            if p.name != "mode" {
                return Err(format!(
                    "unknown parameter '{}'; the only one is 'mode'",
                    p.name
                ));
            }
            let Some(mode) = MODES.iter().find(|m| **m == p.value) else {
                return Err(format!(
                    "mode '{}' is not one of: {}",
                    p.value,
                    MODES.join(", ")
                ));
            };
            *MODE.lock().unwrap_or_else(|e| e.into_inner()) = mode;
        }
        Ok(())
    }

    fn filter(batch: Batch) -> Vec<u8> {
        let n = batch.rows as usize;
        let mode = *MODE.lock().unwrap_or_else(|e| e.into_inner());
        match mode {
            "loop" => {
                let mut x = 0u64;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 16 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "short" => vec![0; n.saturating_sub(1)],
            "trap" => panic!("hostile plugin panics on purpose"),
            "bad-code" => vec![7; n],
            "peek" => {
                let sent = [
                    batch.widths.len(),
                    batch.heights.len(),
                    batch.channels.len(),
                    batch.formats.len(),
                    batch.file_sizes.len(),
                    batch.labels.len(),
                    batch.pixel_widths.len(),
                    batch.pixel_heights.len(),
                    batch.pixel_offsets.len(),
                    batch.pixels.len(),
                ];
                vec![u8::from(sent.iter().any(|&len| len > 0)); n]
            }
            _ => vec![0; n],
        }
    }
}

export!(Hostile);
