//! Filter throughput through wasm (copy in, filter, copy out) against the same logic compiled
//! natively (`dinoflow-filter-logic`), single-threaded, on the same rows. Run by `make bench`:
//! `cargo bench -p dinoflow-wasm --bench filters`. Prints a table and writes bench/out/filters.json.
//! `cargo bench -p dinoflow-wasm --bench filters -- blank format` runs only the filters named (and
//! writes no JSON). The host copies into the plugin only the columns its `describe()` declares;
//! the batches here hold every column, as the filter stage's would for a chain that reads them all.

use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use dinoflow_filter_logic as logic;
use dinoflow_wasm::{Batch, FilterHost, Limits};

const META_ROWS: usize = 10_000_000;
const PIXEL_ROWS: usize = 100_000;
const BATCH: usize = 65_536;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn metadata_batch(start: usize, rows: usize) -> Batch {
    let mut x = 0x9E37_79B9u32.wrapping_mul(start as u32 + 1);
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let mut b = Batch {
        widths: Vec::with_capacity(rows),
        heights: Vec::with_capacity(rows),
        channels: vec![3; rows],
        formats: Vec::with_capacity(rows),
        file_sizes: Vec::with_capacity(rows),
        labels: Vec::new(),
        pixel_widths: vec![0; rows],
        pixel_heights: vec![0; rows],
        pixel_offsets: Vec::new(),
        pixels: Vec::new(),
    };
    for _ in 0..rows {
        b.widths.push(1 + next() % 2000);
        b.heights.push(1 + next() % 2000);
        b.formats.push((next() % 8) as u8);
        b.file_sizes.push(u64::from(next() % 2_000_000));
    }
    b
}

/// 100,000 real 28×28 Fashion-MNIST images (the 10,000 test images, ten times).
fn pixel_batches() -> Vec<Batch> {
    let gz = std::fs::read("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
        .expect("dataset-fashion-mnist (scripts/setup.sh)");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut raw)
        .expect("gunzip");
    let images = &raw[16..];
    let mut out = Vec::new();
    let mut row = 0;
    while row < PIXEL_ROWS {
        let n = BATCH.min(PIXEL_ROWS - row);
        let mut b = metadata_batch(row, n);
        b.channels = vec![1; n];
        b.pixel_widths = vec![28; n];
        b.pixel_heights = vec![28; n];
        b.pixel_offsets = (0..=n as u64).map(|i| i * 784).collect();
        b.pixels = (0..n)
            .flat_map(|i| {
                let k = (row + i) % 10_000;
                images[k * 784..(k + 1) * 784].iter().copied()
            })
            .collect();
        out.push(b);
        row += n;
    }
    out
}

fn native(name: &str, b: &Batch, out: &mut [u8]) {
    match name {
        "min-size" => logic::min_size(&b.widths, &b.heights, 32, 0, out),
        "aspect-ratio" => logic::aspect_ratio(&b.widths, &b.heights, 0.25, 4.0, out),
        "file-size" => logic::file_size(&b.file_sizes, 0, 1_000_000, out),
        "format" => logic::format(&b.formats, logic::format_mask(&[1, 2, 3, 7]), out),
        "blank" => logic::blank(&b.pixels, &b.pixel_offsets, 4.0, 0.0, out),
        other => unreachable!("{other}"),
    }
}

fn params(name: &str) -> Vec<(String, String)> {
    let p: &[(&str, &str)] = match name {
        "min-size" => &[("min_side", "32")],
        "aspect-ratio" => &[("min", "0.25"), ("max", "4.0")],
        "file-size" => &[("max_bytes", "1000000")],
        "format" => &[("allow", "jpeg,png,webp,idx")],
        _ => &[("min_std", "4.0")],
    };
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn main() {
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let cache = tempfile::tempdir().expect("temp dir");
    let host = FilterHost::new(cache.path()).expect("host");
    let meta: Vec<Batch> = (0..META_ROWS)
        .step_by(BATCH)
        .map(|s| metadata_batch(s, BATCH.min(META_ROWS - s)))
        .collect();
    let pixels = pixel_batches();
    let mut results = Vec::new();
    println!(
        "{:<14} {:>9} {:>16} {:>16} {:>7}",
        "filter", "rows", "wasm rows/s", "native rows/s", "ratio"
    );
    for (name, file, batches) in [
        ("min-size", "min_size.wasm", &meta),
        ("aspect-ratio", "aspect_ratio.wasm", &meta),
        ("file-size", "file_size.wasm", &meta),
        ("format", "format.wasm", &meta),
        ("blank", "blank.wasm", &pixels),
    ] {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        let bytes = std::fs::read(repo().join("plugins/filters/dist").join(file))
            .expect("plugins built (scripts/build-plugins.sh)");
        let plugin = host.load(file, &bytes).expect("load");
        let mut inst = plugin
            .instantiate(&params(name), Limits::default())
            .expect("configure");
        let rows: usize = batches.iter().map(|b| b.widths.len()).sum();
        let best = |f: &mut dyn FnMut() -> usize| {
            (0..3)
                .map(|_| {
                    let t = Instant::now();
                    let dropped = f();
                    (t.elapsed().as_secs_f64(), dropped)
                })
                .fold((f64::MAX, 0), |a, b| if b.0 < a.0 { b } else { a })
        };
        let (wasm_s, wasm_dropped) = best(&mut || {
            batches
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    inst.filter(b, i as u64)
                        .expect("filter")
                        .iter()
                        .filter(|&&c| c != 0)
                        .count()
                })
                .sum()
        });
        let mut out = vec![0u8; BATCH];
        let (native_s, native_dropped) = best(&mut || {
            batches
                .iter()
                .map(|b| {
                    let o = &mut out[..b.widths.len()];
                    native(name, b, o);
                    o.iter().filter(|&&c| c != 0).count()
                })
                .sum()
        });
        assert_eq!(
            wasm_dropped, native_dropped,
            "{name}: wasm and native disagree"
        );
        let (w, n) = (rows as f64 / wasm_s, rows as f64 / native_s);
        println!("{name:<14} {rows:>9} {w:>16.0} {n:>16.0} {:>6.2}x", w / n);
        results.push(format!(
            "{{\"filter\":\"{name}\",\"rows\":{rows},\"wasm_rows_per_s\":{w:.0},\"native_rows_per_s\":{n:.0},\"ratio\":{:.3}}}",
            w / n
        ));
    }
    if !only.is_empty() {
        return;
    }
    let out = repo().join("bench/out");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(
        out.join("filters.json"),
        format!("[{}]\n", results.join(",\n")),
    );
}
