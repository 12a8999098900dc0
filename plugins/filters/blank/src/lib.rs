//! The `blank` filter plugin: drops blank or low-information images, from their stored pixels.
//!
//! Code 1: the population standard deviation of the row's pixel bytes is below `min_std` (or the row
//! has no pixels); code 2: the Shannon entropy (bits) of the row's 256-bin byte histogram is below
//! `min_entropy` (0 turns this test off). The logic lives in `dinoflow_filter_logic::blank`.

wit_bindgen::generate!({ path: "../../wit", world: "filter" });

use std::sync::Mutex;

// `Batch`, `Info` and `Param` come from the world's `use types.{...}`; the rest from the interface.
use dinoflow::filter::types::{Columns, ParamKind, ParamSpec, Reason};
use dinoflow_filter_logic::{self as logic, params};

const NAME: &str = "blank";

/// (name, kind, default as YAML text, description); the defaults are parsed like any value.
const PARAMS: [(&str, ParamKind, &str, &str); 2] = [
    (
        "min_std",
        ParamKind::Number,
        "4.0",
        "Smallest allowed standard deviation of the image's pixel values (0-255 scale).",
    ),
    (
        "min_entropy",
        ParamKind::Number,
        "0.0",
        "Smallest allowed entropy of the pixel-value histogram, in bits (0-8; 0 turns the test off).",
    ),
];

const REASONS: [(u8, &str); 2] = [
    (
        logic::BLANK_LOW_STD,
        "low information: pixel standard deviation below min_std",
    ),
    (
        logic::BLANK_LOW_ENTROPY,
        "low information: entropy below min_entropy",
    ),
];

#[derive(Clone, Copy)]
struct Config {
    min_std: f64,
    min_entropy: f64,
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
            min_std: params::parse_number(PARAMS[0].0, value(0))?,
            min_entropy: params::parse_number(PARAMS[1].0, value(1))?,
        })
    }
}

/// The configuration; `None` until `configure` succeeds, meaning the defaults.
static CONFIG: Mutex<Option<Config>> = Mutex::new(None);

fn config() -> Config {
    let mut slot = CONFIG.lock().unwrap_or_else(|e| e.into_inner());
    *slot.get_or_insert_with(|| Config::parse(&[]).expect("the defaults parse"))
}

struct Blank;

impl Guest for Blank {
    fn describe() -> Info {
        Info {
            name: NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Drops blank or low-information images: pixel standard deviation below \
                          min_std, or histogram entropy below min_entropy."
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
            reads: Columns::PIXELS,
        }
    }

    fn configure(params: Vec<Param>) -> Result<(), String> {
        let parsed = Config::parse(&params)?;
        *CONFIG.lock().unwrap_or_else(|e| e.into_inner()) = Some(parsed);
        Ok(())
    }

    /// `pixel-offsets` must hold `rows + 1` entries (the host sends them because `reads` names
    /// the pixels). Offsets that do not match the rows trap.
    fn filter(batch: Batch) -> Vec<u8> {
        let c = config();
        let mut out = vec![0u8; batch.rows as usize];
        logic::blank(
            &batch.pixels,
            &batch.pixel_offsets,
            c.min_std,
            c.min_entropy,
            &mut out,
        );
        out
    }
}

export!(Blank);

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
        let info = Blank::describe();
        assert_eq!(
            (info.name.as_str(), info.version.as_str()),
            ("blank", "1.0.0")
        );
        assert_eq!(info.reads, Columns::PIXELS);
        let params: Vec<_> = info
            .params
            .iter()
            .map(|p| (p.name.as_str(), p.default_value.as_str()))
            .collect();
        assert_eq!(params, [("min_std", "4.0"), ("min_entropy", "0.0")]);
        assert!(info.params.iter().all(|p| p.kind == ParamKind::Number));
        let reasons: Vec<_> = info
            .reasons
            .iter()
            .map(|r| (r.code, r.text.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                (1, "low information: pixel standard deviation below min_std"),
                (2, "low information: entropy below min_entropy")
            ]
        );

        // Rows: flat grey 2×2; 0/255 checker 2×2 (std 127.5, 1 bit); empty.
        let rows = || Batch {
            rows: 3,
            pixel_offsets: vec![0, 4, 8, 8],
            pixels: vec![9, 9, 9, 9, 0, 255, 255, 0],
            ..batch()
        };
        assert_eq!(Blank::filter(rows()), [1, 0, 1]);
        Blank::configure(vec![param("min_entropy", "1.5")]).unwrap();
        assert_eq!(Blank::filter(rows()), [1, 2, 1]);

        let err = Blank::configure(vec![param("min_std", "-1")]).unwrap_err();
        assert!(err.contains("'min_std'") && err.contains("number"), "{err}");
        let err = Blank::configure(vec![param("threshold", "1")]).unwrap_err();
        assert!(
            err.contains("'threshold'") && err.contains("min_std, min_entropy"),
            "{err}"
        );
        Blank::configure(vec![param("min_std", "200")]).unwrap();
        assert_eq!(Blank::filter(rows()), [1, 1, 1]);
        assert_eq!(Blank::filter(batch()), Vec::<u8>::new());
    }
}
