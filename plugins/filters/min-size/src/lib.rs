//! The `min-size` filter plugin: drops images whose source size is too small.
//!
//! Code 1: the shorter side is below `min_side`; code 2: fewer pixels than `min_pixels`.
//! The logic lives in `dinoflow_filter_logic::min_size`.

wit_bindgen::generate!({ path: "../../wit", world: "filter" });

use std::sync::Mutex;

// `Batch`, `Info` and `Param` come from the world's `use types.{...}`; the rest from the interface.
use dinoflow::filter::types::{Columns, ParamKind, ParamSpec, Reason};
use dinoflow_filter_logic::{self as logic, params};

const NAME: &str = "min-size";

/// (name, kind, default as YAML text, description); the defaults are parsed like any value.
const PARAMS: [(&str, ParamKind, &str, &str); 2] = [
    (
        "min_side",
        ParamKind::Integer,
        "32",
        "Smallest allowed shorter side of the source image, in pixels (0 turns the test off).",
    ),
    (
        "min_pixels",
        ParamKind::Integer,
        "0",
        "Smallest allowed source pixel count, width × height (0 turns the test off).",
    ),
];

const REASONS: [(u8, &str); 2] = [
    (logic::MIN_SIZE_SHORT_SIDE, "shorter side below min_side"),
    (logic::MIN_SIZE_FEW_PIXELS, "fewer pixels than min_pixels"),
];

#[derive(Clone, Copy)]
struct Config {
    min_side: u32,
    min_pixels: u64,
}

impl Config {
    fn parse(given: &[Param]) -> Result<Self, String> {
        let values = params::resolve(
            NAME,
            &PARAMS.map(|p| p.0),
            given.iter().map(|p| (p.name.as_str(), p.value.as_str())),
        )?;
        let value = |i: usize| values[i].unwrap_or(PARAMS[i].2);
        Ok(Config {
            min_side: params::parse_u32(PARAMS[0].0, value(0))?,
            min_pixels: params::parse_u64(PARAMS[1].0, value(1))?,
        })
    }
}

/// The configuration; `None` until `configure` succeeds, meaning the defaults.
static CONFIG: Mutex<Option<Config>> = Mutex::new(None);

fn config() -> Config {
    let mut slot = CONFIG.lock().unwrap_or_else(|e| e.into_inner());
    *slot.get_or_insert_with(|| Config::parse(&[]).expect("the defaults parse"))
}

struct MinSize;

impl Guest for MinSize {
    fn describe() -> Info {
        Info {
            name: NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Drops images whose source size is too small: the shorter side below \
                          min_side, or fewer than min_pixels pixels."
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
            reads: Columns::WIDTHS | Columns::HEIGHTS,
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
        logic::min_size(
            &batch.widths,
            &batch.heights,
            c.min_side,
            c.min_pixels,
            &mut out,
        );
        out
    }
}

export!(MinSize);

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(widths: Vec<u32>, heights: Vec<u32>) -> Batch {
        Batch {
            rows: widths.len() as u32,
            widths,
            heights,
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
        let info = MinSize::describe();
        assert_eq!(
            (info.name.as_str(), info.version.as_str()),
            ("min-size", "1.0.0")
        );
        assert_eq!(info.reads, Columns::WIDTHS | Columns::HEIGHTS);
        let params: Vec<_> = info
            .params
            .iter()
            .map(|p| (p.name.as_str(), p.default_value.as_str()))
            .collect();
        assert_eq!(params, [("min_side", "32"), ("min_pixels", "0")]);
        assert!(info.params.iter().all(|p| p.kind == ParamKind::Integer));
        let reasons: Vec<_> = info
            .reasons
            .iter()
            .map(|r| (r.code, r.text.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                (1, "shorter side below min_side"),
                (2, "fewer pixels than min_pixels")
            ]
        );

        // Defaults before any configure: min_side 32, min_pixels off.
        let rows = || batch(vec![31, 32, 40, 100], vec![100, 32, 40, 100]);
        assert_eq!(MinSize::filter(rows()), [1, 0, 0, 0]);

        MinSize::configure(vec![param("min_pixels", "2000")]).unwrap();
        assert_eq!(MinSize::filter(rows()), [1, 2, 2, 0]);

        let err = MinSize::configure(vec![param("min_side", "big")]).unwrap_err();
        assert!(
            err.contains("'min_side'") && err.contains("integer"),
            "{err}"
        );
        let err = MinSize::configure(vec![param("max_side", "3")]).unwrap_err();
        assert!(
            err.contains("'max_side'") && err.contains("min_side, min_pixels"),
            "{err}"
        );
        // A failed configure keeps the previous configuration.
        assert_eq!(MinSize::filter(rows()), [1, 2, 2, 0]);

        // Missing parameters take their defaults again.
        MinSize::configure(vec![]).unwrap();
        assert_eq!(MinSize::filter(rows()), [1, 0, 0, 0]);
        assert_eq!(MinSize::filter(batch(vec![], vec![])), Vec::<u8>::new());
    }
}
