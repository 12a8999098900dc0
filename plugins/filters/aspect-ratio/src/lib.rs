//! The `aspect-ratio` filter plugin: drops images whose aspect ratio, width / height of the source
//! image, lies outside `[min, max]`.
//!
//! Code 1: below `min` (or a height of 0); code 2: above `max`.
//! The logic lives in `dinoflow_filter_logic::aspect_ratio`.

wit_bindgen::generate!({ path: "../../wit", world: "filter" });

use std::sync::Mutex;

// `Batch`, `Info` and `Param` come from the world's `use types.{...}`; the rest from the interface.
use dinoflow::filter::types::{Columns, ParamKind, ParamSpec, Reason};
use dinoflow_filter_logic::{self as logic, params};

const NAME: &str = "aspect-ratio";

/// (name, kind, default as YAML text, description); the defaults are parsed like any value.
const PARAMS: [(&str, ParamKind, &str, &str); 2] = [
    (
        "min",
        ParamKind::Number,
        "0.25",
        "Smallest allowed aspect ratio, width / height (e.g. 0.25 = four times taller than wide).",
    ),
    (
        "max",
        ParamKind::Number,
        "4.0",
        "Largest allowed aspect ratio, width / height (e.g. 4.0 = four times wider than tall).",
    ),
];

const REASONS: [(u8, &str); 2] = [
    (
        logic::ASPECT_BELOW_MIN,
        "aspect ratio (width/height) below min",
    ),
    (logic::ASPECT_ABOVE_MAX, "aspect ratio above max"),
];

#[derive(Clone, Copy)]
struct Config {
    min: f64,
    max: f64,
}

impl Config {
    fn parse(given: &[Param]) -> Result<Self, String> {
        let values = params::resolve(
            NAME,
            &PARAMS.map(|p| p.0),
            given.iter().map(|p| (p.name.as_str(), p.value.as_str())),
        )?;
        let value = |i: usize| values[i].unwrap_or(PARAMS[i].2);
        let min = params::parse_number(PARAMS[0].0, value(0))?;
        let max = params::parse_number(PARAMS[1].0, value(1))?;
        if min > max {
            // The texts as given (formatting an f64 would add ~40 kB of code to the module).
            return Err(format!(
                "parameters 'min' ({}) and 'max' ({}) of filter '{NAME}': min must not exceed max",
                value(0).trim(),
                value(1).trim()
            ));
        }
        Ok(Config { min, max })
    }
}

/// The configuration; `None` until `configure` succeeds, meaning the defaults.
static CONFIG: Mutex<Option<Config>> = Mutex::new(None);

fn config() -> Config {
    let mut slot = CONFIG.lock().unwrap_or_else(|e| e.into_inner());
    *slot.get_or_insert_with(|| Config::parse(&[]).expect("the defaults parse"))
}

struct AspectRatio;

impl Guest for AspectRatio {
    fn describe() -> Info {
        Info {
            name: NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Drops images whose aspect ratio (source width / height) is below min or \
                          above max; a height of 0 counts as below min."
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
        logic::aspect_ratio(&batch.widths, &batch.heights, c.min, c.max, &mut out);
        out
    }
}

export!(AspectRatio);

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
        let info = AspectRatio::describe();
        assert_eq!(
            (info.name.as_str(), info.version.as_str()),
            ("aspect-ratio", "1.0.0")
        );
        assert_eq!(info.reads, Columns::WIDTHS | Columns::HEIGHTS);
        let params: Vec<_> = info
            .params
            .iter()
            .map(|p| (p.name.as_str(), p.default_value.as_str()))
            .collect();
        assert_eq!(params, [("min", "0.25"), ("max", "4.0")]);
        assert!(info.params.iter().all(|p| p.kind == ParamKind::Number));
        let reasons: Vec<_> = info
            .reasons
            .iter()
            .map(|r| (r.code, r.text.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                (1, "aspect ratio (width/height) below min"),
                (2, "aspect ratio above max")
            ]
        );

        // ratios 1, 0.2, 5, 2, h = 0.
        let rows = || Batch {
            rows: 5,
            widths: vec![10, 10, 50, 20, 5],
            heights: vec![10, 50, 10, 10, 0],
            ..batch()
        };
        assert_eq!(AspectRatio::filter(rows()), [0, 1, 2, 0, 1]);
        AspectRatio::configure(vec![param("max", "1.5"), param("min", "0.1")]).unwrap();
        assert_eq!(AspectRatio::filter(rows()), [0, 0, 2, 2, 1]);

        let err = AspectRatio::configure(vec![param("min", "wide")]).unwrap_err();
        assert!(err.contains("'min'") && err.contains("number"), "{err}");
        let err = AspectRatio::configure(vec![param("min", "5")]).unwrap_err();
        assert!(err.contains("must not exceed"), "{err}");
        let err = AspectRatio::configure(vec![param("ratio", "1")]).unwrap_err();
        assert!(err.contains("'ratio'") && err.contains("min, max"), "{err}");
        assert_eq!(AspectRatio::filter(rows()), [0, 0, 2, 2, 1]);
        AspectRatio::configure(vec![]).unwrap();
        assert_eq!(AspectRatio::filter(rows()), [0, 1, 2, 0, 1]);
    }
}
