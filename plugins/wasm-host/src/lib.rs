//! The sandboxed WebAssembly host for filter plugins: wasmtime's component model, the WIT world in
//! `plugins/wit/filter.wit`, compiled code cached on disk by digest, no imports linked, an epoch
//! deadline per batch and a memory cap per instance. Each call copies into the plugin only the
//! columns its `describe()` says it reads.

mod batch;
mod error;
mod host;

pub use batch::{Batch, Info};
pub use error::WasmError;
pub use host::{FilterHost, FilterInstance, FilterPlugin, Limits, PluginInfo};

mod bindings {
    wasmtime::component::bindgen!({ path: "../wit", world: "filter" });
}

pub use bindings::dinoflow::filter::types::{Columns, Param, ParamKind, ParamSpec, Reason};

/// Format codes used in [`Batch::formats`], by index.
pub const FORMAT_CODES: [&str; 8] = [
    "unknown", "jpeg", "png", "webp", "gif", "bmp", "tiff", "idx",
];

/// The format code of a format name (0 for unknown names).
pub fn format_code(name: &str) -> u8 {
    FORMAT_CODES
        .iter()
        .position(|f| *f == name)
        .map_or(0, |i| i as u8)
}

/// The WIT name of a parameter kind (`integer`, `text-list`, ...).
pub fn param_kind_name(kind: ParamKind) -> &'static str {
    match kind {
        ParamKind::Integer => "integer",
        ParamKind::Number => "number",
        ParamKind::Text => "text",
        ParamKind::Flag => "flag",
        ParamKind::TextList => "text-list",
    }
}

/// Every column of a batch, with its WIT name, in the order of the `batch` record (`pixels` stands
/// for `pixels` and `pixel-offsets`).
pub const COLUMNS: [(Columns, &str); 9] = [
    (Columns::WIDTHS, "widths"),
    (Columns::HEIGHTS, "heights"),
    (Columns::CHANNELS, "channels"),
    (Columns::FORMATS, "formats"),
    (Columns::FILE_SIZES, "file-sizes"),
    (Columns::LABELS, "labels"),
    (Columns::PIXEL_WIDTHS, "pixel-widths"),
    (Columns::PIXEL_HEIGHTS, "pixel-heights"),
    (Columns::PIXELS, "pixels"),
];

/// The WIT names of the columns in `columns`, in record order (e.g. `["widths", "heights"]`).
pub fn column_names(columns: Columns) -> Vec<&'static str> {
    COLUMNS
        .iter()
        .filter(|(c, _)| columns.contains(*c))
        .map(|&(_, name)| name)
        .collect()
}
