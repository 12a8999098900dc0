//! An images record batch → the plugin's columnar batch.

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt8Type, UInt32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use dinoflow_storage::schemas::images;
use dinoflow_wasm::{Batch, format_code};

fn u32s(batch: &RecordBatch, name: &str) -> Vec<u32> {
    batch
        .column_by_name(name)
        .map(|c| c.as_primitive::<UInt32Type>().values().to_vec())
        .unwrap_or_default()
}

/// Copies the columns a plugin sees out of an images batch; pixels only when `with_pixels`.
pub fn to_wit_batch(batch: &RecordBatch, with_pixels: bool) -> Batch {
    let col = |name: &str| batch.column_by_name(name);
    let labels = col(images::LABEL)
        .filter(|c| c.null_count() < c.len())
        .map(|c| {
            let l = c.as_primitive::<Int64Type>();
            (0..l.len())
                .map(|i| if l.is_null(i) { -1 } else { l.value(i) })
                .collect()
        })
        .unwrap_or_default();
    let (pixel_offsets, pixels) = match col(images::PIXELS).filter(|_| with_pixels) {
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
    Batch {
        widths: u32s(batch, images::WIDTH),
        heights: u32s(batch, images::HEIGHT),
        channels: col(images::CHANNELS)
            .map(|c| c.as_primitive::<UInt8Type>().values().to_vec())
            .unwrap_or_default(),
        formats: col(images::FORMAT)
            .map(|c| {
                c.as_string::<i32>()
                    .iter()
                    .map(|f| format_code(f.unwrap_or("")))
                    .collect()
            })
            .unwrap_or_default(),
        file_sizes: col(images::FILE_SIZE)
            .map(|c| c.as_primitive::<UInt64Type>().values().to_vec())
            .unwrap_or_default(),
        labels,
        pixel_widths: u32s(batch, images::PIXEL_WIDTH),
        pixel_heights: u32s(batch, images::PIXEL_HEIGHT),
        pixel_offsets,
        pixels,
    }
}
