//! The `format` filter plugin: keeps only images whose source format is in an allow list.
//!
//! Code 1: the format is not in `allow`. Format names: unknown, jpeg, png, webp, gif, bmp, tiff,
//! idx (`jpg` and `tif` are accepted too). The logic lives in `dinoflow_filter_logic::format`.

wit_bindgen::generate!({ path: "../../wit", world: "filter" });

use std::sync::Mutex;

// `Batch`, `Info` and `Param` come from the world's `use types.{...}`; the rest from the interface.
use dinoflow::filter::types::{Columns, ParamKind, ParamSpec, Reason};
use dinoflow_filter_logic::{self as logic, params};

const NAME: &str = "format";

/// (name, kind, default as YAML text, description); the defaults are parsed like any value.
const PARAMS: [(&str, ParamKind, &str, &str); 1] = [(
    "allow",
    ParamKind::TextList,
    "jpeg,png,webp,idx",
    "Source formats to keep, comma-separated, from: unknown, jpeg, png, webp, gif, bmp, tiff, idx.",
)];

const REASONS: [(u8, &str); 1] = [(logic::FORMAT_NOT_ALLOWED, "format not in the allow list")];

#[derive(Clone, Copy)]
struct Config {
    /// Bit `c` set when format code `c` is allowed.
    allow_mask: u32,
}

impl Config {
    fn parse(given: &[Param]) -> Result<Self, String> {
        let values = params::resolve(
            NAME,
            &PARAMS.map(|p| p.0),
            given.iter().map(|p| (p.name.as_str(), p.value.as_str())),
        )?;
        let allow = values[0].unwrap_or(PARAMS[0].2);
        let allow_mask = logic::parse_format_list(allow)
            .map_err(|e| format!("parameter 'allow' expects a text-list of format names: {e}"))?;
        Ok(Config { allow_mask })
    }
}

/// The configuration; `None` until `configure` succeeds, meaning the defaults.
static CONFIG: Mutex<Option<Config>> = Mutex::new(None);

fn config() -> Config {
    let mut slot = CONFIG.lock().unwrap_or_else(|e| e.into_inner());
    *slot.get_or_insert_with(|| Config::parse(&[]).expect("the defaults parse"))
}

struct Format;

impl Guest for Format {
    fn describe() -> Info {
        Info {
            name: NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Keeps only images whose source format is in the allow list.".into(),
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
            reads: Columns::FORMATS,
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
        logic::format(&batch.formats, c.allow_mask, &mut out);
        out
    }
}

export!(Format);

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
        let info = Format::describe();
        assert_eq!(
            (info.name.as_str(), info.version.as_str()),
            ("format", "1.0.0")
        );
        assert_eq!(info.reads, Columns::FORMATS);
        assert_eq!(info.params.len(), 1);
        assert_eq!(info.params[0].name, "allow");
        assert_eq!(info.params[0].kind, ParamKind::TextList);
        assert_eq!(info.params[0].default_value, "jpeg,png,webp,idx");
        let reasons: Vec<_> = info
            .reasons
            .iter()
            .map(|r| (r.code, r.text.as_str()))
            .collect();
        assert_eq!(reasons, [(1, "format not in the allow list")]);

        // unknown, jpeg, png, webp, gif, bmp, tiff, idx, 99
        let rows = || Batch {
            rows: 9,
            formats: vec![0, 1, 2, 3, 4, 5, 6, 7, 99],
            ..batch()
        };
        assert_eq!(Format::filter(rows()), [1, 0, 0, 0, 1, 1, 1, 0, 1]);
        Format::configure(vec![param("allow", "gif, JPG")]).unwrap();
        assert_eq!(Format::filter(rows()), [1, 0, 1, 1, 0, 1, 1, 1, 1]);

        let err = Format::configure(vec![param("allow", "png,heic")]).unwrap_err();
        assert!(err.contains("'allow'") && err.contains("heic"), "{err}");
        assert!(
            err.contains("unknown, jpeg, png, webp, gif, bmp, tiff, idx"),
            "{err}"
        );
        let err = Format::configure(vec![param("allow", "")]).unwrap_err();
        assert!(err.contains("'allow'"), "{err}");
        let err = Format::configure(vec![param("deny", "png")]).unwrap_err();
        assert!(err.contains("'deny'") && err.contains("allow"), "{err}");
        assert_eq!(Format::filter(rows()), [1, 0, 1, 1, 0, 1, 1, 1, 1]);
    }
}
