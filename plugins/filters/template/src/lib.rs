//! # The `__NAME__` filter plugin for dinoflow
//!
//! Made by `dinoflow plugin new __NAME__` from plugins/filters/template. As it stands it keeps every
//! row; edit:
//! 1. `describe`: the description, the parameters (`PARAMS`: name, kind, default written as in YAML,
//!    description), the drop reasons (`REASONS`: every non-zero code `filter` may return) and
//!    `READS`, the columns `filter` reads (e.g. `Columns::WIDTHS | Columns::HEIGHTS`): the host
//!    sends every other column empty, so a column you forget to declare arrives empty. Declare
//!    `Columns::PIXELS` only if you need them: they are most of a row's bytes.
//! 2. `Config` and `Config::parse`: one field per parameter; parse each value and return an error
//!    that names the parameter and the kind of value it expects.
//! 3. `filter`: one code per row, `batch.rows` in all (0 keeps, any other code drops with that
//!    code's reason). Loop over the column slices of `batch` that `READS` names (see
//!    plugins/wit/filter.wit for every column) and allocate nothing per row: the host sends
//!    batches of thousands of rows.
//!
//! The plugin may import nothing (no files, network, clocks or randomness): the host refuses it
//! otherwise. Build it with `dinoflow plugin build DIR`.

// `__WIT__` is replaced by `wit`, the plugin's own copy of the contract (package
// dinoflow:filter@2.0.0), when the template is copied.
wit_bindgen::generate!({ path: "__WIT__", world: "filter" });

use std::sync::Mutex;

// `Batch`, `Info` and `Param` come from the world's `use types.{...}`; the rest from the interface.
use dinoflow::filter::types::{Columns, ParamKind, ParamSpec, Reason};

const NAME: &str = "__NAME__";

/// (name, kind, default written as in YAML, description); the defaults are parsed like any value.
const PARAMS: [(&str, ParamKind, &str, &str); 1] = [(
    "example",
    ParamKind::Integer,
    "0",
    "An example parameter (a whole number); replace it by your own.",
)];

/// Every non-zero code `filter` may return, with the text the host records for it.
const REASONS: [(u8, &str); 0] = [];

/// The columns `filter` reads; the others arrive empty. This template reads none (it only needs
/// the row count, `batch.rows`).
const READS: Columns = Columns::empty();

#[derive(Clone, Copy)]
struct Config {
    example: u64,
}

impl Config {
    /// Parses the parameters; a missing one takes its default, an unknown one is an error.
    fn parse(given: &[Param]) -> Result<Self, String> {
        let mut values: Vec<&str> = PARAMS.iter().map(|p| p.2).collect();
        for p in given {
            match PARAMS.iter().position(|known| known.0 == p.name) {
                Some(i) => values[i] = &p.value,
                None => {
                    let names: Vec<&str> = PARAMS.iter().map(|known| known.0).collect();
                    return Err(format!(
                        "unknown parameter '{}' for filter '{NAME}' (its parameters: {})",
                        p.name,
                        names.join(", ")
                    ));
                }
            }
        }
        let example = values[0].trim().parse::<u64>().map_err(|_| {
            format!(
                "parameter 'example' expects an integer (a whole number), got \"{}\"",
                values[0]
            )
        })?;
        Ok(Config { example })
    }
}

/// The configuration; `None` until `configure` succeeds, meaning the defaults.
static CONFIG: Mutex<Option<Config>> = Mutex::new(None);

fn config() -> Config {
    let mut slot = CONFIG.lock().unwrap_or_else(|e| e.into_inner());
    *slot.get_or_insert_with(|| Config::parse(&[]).expect("the defaults parse"))
}

struct Plugin;

impl Guest for Plugin {
    fn describe() -> Info {
        Info {
            name: NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Keeps every row (a template: describe what your filter drops).".into(),
            params: PARAMS
                .iter()
                .map(|&(name, kind, default, description)| ParamSpec {
                    name: name.into(),
                    kind,
                    default_value: default.into(),
                    description: description.into(),
                })
                .collect(),
            reasons: REASONS
                .iter()
                .map(|&(code, text)| Reason {
                    code,
                    text: text.into(),
                })
                .collect(),
            reads: READS,
        }
    }

    fn configure(params: Vec<Param>) -> Result<(), String> {
        let parsed = Config::parse(&params)?;
        *CONFIG.lock().unwrap_or_else(|e| e.into_inner()) = Some(parsed);
        Ok(())
    }

    fn filter(batch: Batch) -> Vec<u8> {
        let Config { example } = config();
        let _ = example; // use the parameters here
        // One code per row (here: keep all). A real filter allocates this vector once and fills it
        // in a loop over the columns it declared in READS (`batch.widths`, `batch.file_sizes`, ...).
        vec![0u8; batch.rows as usize]
    }
}

export!(Plugin);
