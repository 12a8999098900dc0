//! An images record batch → the plugin's columnar batch.

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt8Type, UInt32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use dinoflow_storage::schemas::images;
use dinoflow_wasm::{Batch, Columns, format_code};

/// Copies the columns a plugin reads (`reads`, its `describe()`) out of an images batch, plus
/// `widths`, which gives the host the row count; the other columns stay empty, so rows a plugin
/// never looks at (pixels above all) are neither gathered nor copied.
pub fn to_wit_batch(batch: &RecordBatch, reads: Columns) -> Batch {
    // `Columns::empty()` stands for "always" (every set contains it).
    let col = |name: &str, wanted: Columns| {
        batch
            .column_by_name(name)
            .filter(|_| reads.contains(wanted))
    };
    let labels = col(images::LABEL, Columns::LABELS)
        .filter(|c| c.null_count() < c.len())
        .map(|c| {
            let l = c.as_primitive::<Int64Type>();
            (0..l.len())
                .map(|i| if l.is_null(i) { -1 } else { l.value(i) })
                .collect()
        })
        .unwrap_or_default();
    let (pixel_offsets, pixels) = match col(images::PIXELS, Columns::PIXELS) {
        Some(c) => {
            let bin = c.as_binary::<i32>();
            let offsets = bin.value_offsets();
            let first = offsets.first().copied().unwrap_or(0);
            let last = offsets.last().copied().unwrap_or(0);
            (
                offsets.iter().map(|&o| (o - first) as u64).collect(),
                bin.value_data()[first as usize..last as usize].to_vec(),
            )
        }
        None => (Vec::new(), Vec::new()),
    };
    let u32s = |name: &str, wanted: Columns| {
        col(name, wanted)
            .map(|c| c.as_primitive::<UInt32Type>().values().to_vec())
            .unwrap_or_default()
    };
    Batch {
        widths: u32s(images::WIDTH, Columns::empty()),
        heights: u32s(images::HEIGHT, Columns::HEIGHTS),
        channels: col(images::CHANNELS, Columns::CHANNELS)
            .map(|c| c.as_primitive::<UInt8Type>().values().to_vec())
            .unwrap_or_default(),
        formats: col(images::FORMAT, Columns::FORMATS)
            .map(|c| {
                c.as_string::<i32>()
                    .iter()
                    .map(|f| format_code(f.unwrap_or("")))
                    .collect()
            })
            .unwrap_or_default(),
        file_sizes: col(images::FILE_SIZE, Columns::FILE_SIZES)
            .map(|c| c.as_primitive::<UInt64Type>().values().to_vec())
            .unwrap_or_default(),
        labels,
        pixel_widths: u32s(images::PIXEL_WIDTH, Columns::PIXEL_WIDTHS),
        pixel_heights: u32s(images::PIXEL_HEIGHT, Columns::PIXEL_HEIGHTS),
        pixel_offsets,
        pixels,
    }
}
