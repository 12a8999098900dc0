//! The `file-size` filter plugin: drops images whose source file is too small or too large.
//!
//! Code 1: smaller than `min_bytes`; code 2: larger than `max_bytes` (0 = no maximum).
//! The logic lives in `dinoflow_filter_logic::file_size`.

wit_bindgen::generate!({ path: "../../wit", world: "filter" });

use std::sync::Mutex;

// `Batch`, `Info` and `Param` come from the world's `use types.{...}`; the rest from the interface.
use dinoflow::filter::types::{Columns, ParamKind, ParamSpec, Reason};
use dinoflow_filter_logic::{self as logic, params};

const NAME: &str = "file-size";

/// (name, kind, default as YAML text, description); the defaults are parsed like any value.
const PARAMS: [(&str, ParamKind, &str, &str); 2] = [
    (
        "min_bytes",
        ParamKind::Integer,
        "0",
        "Smallest allowed source file size, in bytes (0 turns the test off).",
    ),
    (
        "max_bytes",
        ParamKind::Integer,
        "0",
        "Largest allowed source file size, in bytes (0 means no maximum).",
    ),
];

const REASONS: [(u8, &str); 2] = [
    (logic::FILE_TOO_SMALL, "file smaller than min_bytes"),
    (logic::FILE_TOO_LARGE, "file larger than max_bytes"),
];

#[derive(Clone, Copy)]
struct Config {
    min_bytes: u64,
    max_bytes: u64,
}

impl Config {
    fn parse(given: &[Param]) -> Result<Self, String> {
        let values = params::resolve(
            NAME,
            &PARAMS.map(|p| p.0),
            given.iter().map(|p| (p.name.as_str(), p.value.as_str())),
        )?;
        let value = |i: usize| values[i].unwrap_or(PARAMS[i].2);
        let min_bytes = params::parse_u64(PARAMS[0].0, value(0))?;
        let max_bytes = params::parse_u64(PARAMS[1].0, value(1))?;
        if max_bytes != 0 && min_bytes > max_bytes {
            return Err(format!(
                "parameters 'min_bytes' ({min_bytes}) and 'max_bytes' ({max_bytes}) of filter \
                 '{NAME}': min_bytes must not exceed max_bytes (or set max_bytes to 0 for no maximum)"
            ));
        }
        Ok(Config {
            min_bytes,
            max_bytes,
        })
    }
}

/// The configuration; `None` until `configure` succeeds, meaning the defaults.
static CONFIG: Mutex<Option<Config>> = Mutex::new(None);

fn config() -> Config {
    let mut slot = CONFIG.lock().unwrap_or_else(|e| e.into_inner());
    *slot.get_or_insert_with(|| Config::parse(&[]).expect("the defaults parse"))
}

struct FileSize;

impl Guest for FileSize {
    fn describe() -> Info {
        Info {
            name: NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Drops images whose source file is smaller than min_bytes or larger than \
                          max_bytes."
                .into(),
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
            reads: Columns::FILE_SIZES,
        }
    }

    fn configure(params: Vec<Param>) -> Result<(), String> {
        let parsed = Config::parse(&params)?;
        *CONFIG.lock().unwrap_or_else(|e| e.into_inner()) = Some(parsed);
        Ok(())
    }

    fn filter(batch: Batch) -> Vec<u8> {
        let c = config();
        let mut out = vec![0u8; batch.rows as usize];
        logic::file_size(&batch.file_sizes, c.min_bytes, c.max_bytes, &mut out);
        out
    }
}

export!(FileSize);

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> Batch {
        Batch {
            rows: 0,
            widths: vec![],
            heights: vec![],
            channels: vec![],
            formats: vec![],
            file_sizes: vec![],
            labels: vec![],
            pixel_widths: vec![],
            pixel_heights: vec![],
            pixel_offsets: vec![],
            pixels: vec![],
        }
    }

    fn param(name: &str, value: &str) -> Param {
        Param {
            name: name.into(),
            value: value.into(),
        }
    }

    // One test: the configuration is a process-wide static.
    #[test]
    fn describe_configure_filter() {
        let info = FileSize::describe();
        assert_eq!(
            (info.name.as_str(), info.version.as_str()),
            ("file-size", "1.0.0")
        );
        assert_eq!(info.reads, Columns::FILE_SIZES);
        let params: Vec<_> = info
            .params
            .iter()
            .map(|p| (p.name.as_str(), p.default_value.as_str()))
            .collect();
        assert_eq!(params, [("min_bytes", "0"), ("max_bytes", "0")]);
        assert!(info.params.iter().all(|p| p.kind == ParamKind::Integer));
        let reasons: Vec<_> = info
            .reasons
            .iter()
            .map(|r| (r.code, r.text.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                (1, "file smaller than min_bytes"),
                (2, "file larger than max_bytes")
            ]
        );

        let rows = || Batch {
            rows: 4,
            file_sizes: vec![0, 100, 5000, 1 << 40],
            ..batch()
        };
        assert_eq!(FileSize::filter(rows()), [0, 0, 0, 0]);
        FileSize::configure(vec![param("min_bytes", "100"), param("max_bytes", "5000")]).unwrap();
        assert_eq!(FileSize::filter(rows()), [1, 0, 0, 2]);
        FileSize::configure(vec![param("min_bytes", "101")]).unwrap();
        assert_eq!(FileSize::filter(rows()), [1, 1, 0, 0]);

        let err = FileSize::configure(vec![param("max_bytes", "1.5")]).unwrap_err();
        assert!(
            err.contains("'max_bytes'") && err.contains("integer"),
            "{err}"
        );
        let err = FileSize::configure(vec![param("min_bytes", "10"), param("max_bytes", "5")])
            .unwrap_err();
        assert!(err.contains("must not exceed"), "{err}");
        let err = FileSize::configure(vec![param("size", "1")]).unwrap_err();
        assert!(
            err.contains("'size'") && err.contains("min_bytes, max_bytes"),
            "{err}"
        );
        assert_eq!(FileSize::filter(rows()), [1, 1, 0, 0]);
    }
}
