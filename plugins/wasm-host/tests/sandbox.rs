//! The sandbox: shipped plugins load; hostile ones (built from source by scripts/build-plugins.sh,
//! or written here in WAT) fail with a clear error naming the plugin.

use std::path::PathBuf;

use dinoflow_wasm::{Batch, Columns, FilterHost, Limits, WasmError, column_names};

fn dist(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../filters/dist")
        .join(name);
    std::fs::read(&p)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/build-plugins.sh", p.display()))
}

fn batch(rows: usize) -> Batch {
    Batch {
        widths: (0..rows as u32).map(|i| 10 + i % 100).collect(),
        heights: vec![50; rows],
        channels: vec![3; rows],
        formats: vec![1; rows],
        file_sizes: vec![1000; rows],
        labels: Vec::new(),
        pixel_widths: vec![0; rows],
        pixel_heights: vec![0; rows],
        pixel_offsets: Vec::new(),
        pixels: Vec::new(),
    }
}

fn host() -> (FilterHost, tempfile::TempDir) {
    let cache = tempfile::tempdir().unwrap();
    (FilterHost::new(cache.path()).unwrap(), cache)
}

fn hostile(mode: &str, limits: Limits) -> WasmError {
    let (host, _cache) = host();
    let plugin = host.load("hostile.wasm", &dist("hostile.wasm")).unwrap();
    let mut inst = plugin
        .instantiate(&[("mode".into(), mode.into())], limits)
        .unwrap();
    inst.filter(&batch(1000), 3).unwrap_err()
}

#[test]
fn shipped_plugins_load_describe_and_filter() {
    let (host, cache) = host();
    for (file, name) in [
        ("min_size.wasm", "min-size"),
        ("aspect_ratio.wasm", "aspect-ratio"),
        ("blank.wasm", "blank"),
        ("file_size.wasm", "file-size"),
        ("format.wasm", "format"),
    ] {
        let plugin = host.load(file, &dist(file)).unwrap();
        assert_eq!(plugin.info().info.name, name);
        assert!(!plugin.info().info.reasons.is_empty());
    }
    // min-size with min_side 50: widths 10..109, height 50 → width < 50 drops (40 of every 100).
    let plugin = host.load("min_size.wasm", &dist("min_size.wasm")).unwrap();
    let mut inst = plugin
        .instantiate(&[("min_side".into(), "50".into())], Limits::default())
        .unwrap();
    let codes = inst.filter(&batch(1000), 0).unwrap();
    assert_eq!(codes.iter().filter(|&&c| c == 1).count(), 400);
    assert_eq!(codes.iter().filter(|&&c| c == 0).count(), 600);
    // Compiled code is cached by digest and reused.
    let cached: Vec<_> = std::fs::read_dir(cache.path()).unwrap().flatten().collect();
    assert_eq!(cached.len(), 5, "one compiled file per distinct plugin");
    host.load("min_size.wasm", &dist("min_size.wasm")).unwrap();
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 5);
}

#[test]
fn endless_loop_stops_at_the_deadline() {
    let started = std::time::Instant::now();
    let e = hostile(
        "loop",
        Limits {
            timeout_ms: 200,
            memory_mb: 64,
        },
    );
    assert!(
        matches!(
            e,
            WasmError::Timeout {
                batch: 3,
                limit_ms: 200,
                ..
            }
        ),
        "{e}"
    );
    assert!(started.elapsed().as_secs_f64() < 5.0);
    assert!(e.to_string().contains("hostile.wasm"), "{e}");
}

#[test]
fn memory_bomb_stops_at_the_cap() {
    let e = hostile(
        "bomb",
        Limits {
            timeout_ms: 10_000,
            memory_mb: 64,
        },
    );
    assert!(
        matches!(
            e,
            WasmError::MemoryLimit {
                batch: 3,
                limit_mb: 64,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("hostile.wasm"), "{e}");
}

#[test]
fn wrong_length_trap_and_undeclared_codes_are_errors() {
    let e = hostile("short", Limits::default());
    assert!(
        matches!(
            e,
            WasmError::WrongLength {
                rows: 1000,
                got: 999,
                ..
            }
        ),
        "{e}"
    );
    let e = hostile("trap", Limits::default());
    assert!(
        matches!(
            e,
            WasmError::Trap {
                call: "filter",
                batch: 3,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("hostile.wasm"), "{e}");
    let e = hostile("bad-code", Limits::default());
    assert!(matches!(e, WasmError::UnknownCode { code: 7, .. }), "{e}");
}

#[test]
fn bad_parameters_are_refused_with_the_plugins_message() {
    let (host, _cache) = host();
    let plugin = host.load("min_size.wasm", &dist("min_size.wasm")).unwrap();
    let e = plugin
        .instantiate(&[("min_side".into(), "big".into())], Limits::default())
        .err()
        .unwrap();
    let text = e.to_string();
    assert!(matches!(e, WasmError::Config { .. }), "{text}");
    assert!(
        text.contains("min_size.wasm") && text.contains("min_side"),
        "{text}"
    );
}

#[test]
fn imports_are_refused_and_named() {
    let (host, _cache) = host();
    let wasi_module = wat::parse_str(
        r#"(module
             (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
             (memory (export "memory") 1))"#,
    )
    .unwrap();
    let e = host.load("wasi.wasm", &wasi_module).err().unwrap();
    assert!(matches!(e, WasmError::ForbiddenImport { .. }), "{e}");
    assert!(
        e.to_string().contains("wasi_snapshot_preview1::fd_write"),
        "{e}"
    );
    assert!(e.to_string().contains("wasi.wasm"), "{e}");

    let host_fn_component = wat::parse_str(
        r#"(component
             (import "wasi:clocks/wall-clock@0.2.0" (instance
               (export "now" (func (result u64))))))"#,
    )
    .unwrap();
    let e = host.load("clock.wasm", &host_fn_component).err().unwrap();
    assert!(matches!(e, WasmError::ForbiddenImport { .. }), "{e}");
    assert!(
        e.to_string().contains("wasi:clocks/wall-clock@0.2.0"),
        "{e}"
    );
}

#[test]
fn plugins_built_against_another_major_version_are_refused() {
    let (host, _cache) = host();
    // 1.0.0 is the contract before `info.reads` and `batch.rows`; 3.0.0 a future one.
    for version in ["1.0.0", "3.0.0"] {
        let other = wat::parse_str(format!(
            r#"(component (import "dinoflow:filter/types@{version}" (instance)))"#
        ))
        .unwrap();
        let e = host.load("other.wasm", &other).err().unwrap();
        assert!(matches!(e, WasmError::Invalid { .. }), "{e}");
        assert!(
            e.to_string()
                .contains(&format!("dinoflow:filter@{version}"))
                && e.to_string().contains("dinoflow:filter@2.x"),
            "{e}"
        );
    }
    // The shipped plugins are built against this host's contract.
    host.load("min_size.wasm", &dist("min_size.wasm")).unwrap();
}

#[test]
fn plugins_declare_the_columns_they_read() {
    let (host, _cache) = host();
    for (file, reads) in [
        ("min_size.wasm", vec!["widths", "heights"]),
        ("aspect_ratio.wasm", vec!["widths", "heights"]),
        ("blank.wasm", vec!["pixels"]),
        ("file_size.wasm", vec!["file-sizes"]),
        ("format.wasm", vec!["formats"]),
        ("hostile.wasm", vec![]),
    ] {
        let plugin = host.load(file, &dist(file)).unwrap();
        let info = &plugin.info().info;
        assert_eq!(column_names(info.reads), reads, "{file}");
        assert_eq!(info.needs_pixels, info.reads.contains(Columns::PIXELS));
    }
}

#[test]
fn columns_a_plugin_does_not_read_arrive_empty() {
    // hostile's `peek` mode drops every row if any column arrived non-empty; it declares none.
    let (host, _cache) = host();
    let plugin = host.load("hostile.wasm", &dist("hostile.wasm")).unwrap();
    let mut inst = plugin
        .instantiate(&[("mode".into(), "peek".into())], Limits::default())
        .unwrap();
    let mut b = batch(1000);
    b.labels = vec![3; 1000];
    b.pixel_offsets = (0..=1000).map(|i| i * 4).collect();
    b.pixels = vec![7; 4000];
    assert_eq!(inst.filter(&b, 0).unwrap(), vec![0; 1000]);
    // An empty batch is a call like any other.
    assert_eq!(inst.filter(&batch(0), 1).unwrap(), Vec::<u8>::new());
}

#[test]
fn corrupt_files_are_refused() {
    let (host, _cache) = host();
    let e = host
        .load("junk.wasm", b"MZ\x90\x00 not wasm at all")
        .err()
        .unwrap();
    assert!(
        matches!(e, WasmError::Invalid { .. }) && e.to_string().contains("junk.wasm"),
        "{e}"
    );
    let real = dist("min_size.wasm");
    let e = host
        .load("cut.wasm", &real[..real.len() / 2])
        .err()
        .unwrap();
    assert!(
        matches!(e, WasmError::Invalid { .. }) && e.to_string().contains("cut.wasm"),
        "{e}"
    );
    let e = host
        .load("empty-module.wasm", &wat::parse_str("(module)").unwrap())
        .err()
        .unwrap();
    assert!(matches!(e, WasmError::Invalid { .. }), "{e}");
}

#[test]
fn the_c_guest_honours_the_same_contract() {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../filters-c/dist/grey.wasm");
    let bytes = std::fs::read(&p)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/build-c-plugins.sh", p.display()));
    let (host, _cache) = host();
    let plugin = host.load("grey.wasm", &bytes).unwrap();
    assert_eq!(plugin.info().info.name, "grey");
    assert_eq!(plugin.info().info.reads, Columns::CHANNELS);
    let mut b = batch(1000);
    b.channels = (0..1000).map(|i| if i % 4 == 0 { 1 } else { 3 }).collect();
    let mut inst = plugin
        .instantiate(&[("keep".into(), "grey".into())], Limits::default())
        .unwrap();
    let codes = inst.filter(&b, 0).unwrap();
    assert_eq!(
        codes.iter().filter(|&&c| c == 1).count(),
        750,
        "colour rows dropped"
    );
    assert_eq!(codes.iter().filter(|&&c| c == 0).count(), 250);
    let e = plugin
        .instantiate(&[("keep".into(), "blue".into())], Limits::default())
        .err()
        .unwrap();
    assert!(
        matches!(e, WasmError::Config { .. }) && e.to_string().contains("keep"),
        "{e}"
    );
}

/// Population standard deviation from exact integer sums taken one byte at a time (independent of
/// `dinoflow-filter-logic`, whose `pixel_std` runs explicit wasm SIMD code inside `blank.wasm`).
fn exact_std(row: &[u8]) -> f64 {
    let n = row.len() as u128;
    let sum: u128 = row.iter().map(|&b| b as u128).sum();
    let sum_sq: u128 = row.iter().map(|&b| (b as u128) * (b as u128)).sum();
    ((n * sum_sq - sum * sum) as f64 / (n * n) as f64).sqrt()
}

/// Real Fashion-MNIST test images and crafted rows around the edges of blank's SIMD code (16-byte
/// vectors, 2,048-byte blocks, tails, all-255 rows that fill every lane to its limit, unaligned
/// starts). For every distinct standard deviation `s` among the rows, the plugin is configured
/// with `min_std = s` and with the next larger f64: each row must be kept exactly when its std is
/// not below the threshold, so every row's std as computed in wasm is pinned to the last bit of
/// the independent computation, and a sum off by one anywhere fails.
#[test]
fn blank_plugin_pins_every_std() {
    use std::io::Read;
    let gz = std::fs::read("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
        .expect("dataset-fashion-mnist (scripts/setup.sh)");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut raw)
        .unwrap();
    let images = &raw[16..];
    let mut rows: Vec<Vec<u8>> = (0..10_000)
        .step_by(97)
        .map(|k| images[k * 784..(k + 1) * 784].to_vec())
        .collect();
    let mut x = 0x2545_F491u32;
    let mut noise = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 24) as u8
            })
            .collect()
    };
    for len in [
        1, 2, 15, 16, 17, 31, 33, 783, 784, 785, 2047, 2048, 2049, 2063, 4096, 4111, 65537,
    ] {
        rows.push(noise(len));
        rows.push(vec![255; len]);
        // All 255 but one 0 at the end (in the tail, or the last lane of the last vector).
        let mut r = vec![255u8; len];
        r[len - 1] = 0;
        rows.push(r);
        // A 0/255 ramp with one dim byte in front, so the rest starts off a 16-byte boundary.
        rows.push((0..len).map(|k| if k % 3 == 0 { 1 } else { 250 }).collect());
    }
    rows.push(Vec::new()); // empty: always code 1
    // One odd-length row first, so every later row starts at an unaligned offset.
    rows.insert(0, noise(7));

    let mut offsets = vec![0u64];
    let mut pixels = Vec::new();
    for r in &rows {
        pixels.extend_from_slice(r);
        offsets.push(pixels.len() as u64);
    }
    let n = rows.len();
    let b = Batch {
        pixel_offsets: offsets,
        pixels,
        pixel_widths: vec![0; n],
        pixel_heights: vec![0; n],
        ..batch(n)
    };
    let stds: Vec<Option<f64>> = rows
        .iter()
        .map(|r| (!r.is_empty()).then(|| exact_std(r)))
        .collect();
    // The native logic crate agrees to the bit, and the exact std is sane against a two-pass f64.
    for (r, s) in rows.iter().zip(&stds) {
        let Some(s) = *s else { continue };
        assert_eq!(dinoflow_filter_logic::pixel_std(r).to_bits(), s.to_bits());
        let mean = r.iter().map(|&b| b as f64).sum::<f64>() / r.len() as f64;
        let var = r.iter().map(|&b| (b as f64 - mean).powi(2)).sum::<f64>() / r.len() as f64;
        assert!(
            (var.sqrt() - s).abs() <= 1e-9 * s.max(1.0),
            "{} vs {s}",
            var.sqrt()
        );
    }
    let mut thresholds: Vec<f64> = stds
        .iter()
        .flatten()
        .flat_map(|&s| [s, s.next_up()])
        .collect();
    thresholds.sort_by(f64::total_cmp);
    thresholds.dedup();
    assert!(thresholds.len() > 150, "{} thresholds", thresholds.len());

    let (host, _cache) = host();
    let plugin = host.load("blank.wasm", &dist("blank.wasm")).unwrap();
    for t in thresholds {
        // `{t}` prints the shortest text that parses back to the same f64.
        let mut inst = plugin
            .instantiate(&[("min_std".into(), format!("{t}"))], Limits::default())
            .unwrap();
        let codes = inst.filter(&b, 0).unwrap();
        for (i, (&code, s)) in codes.iter().zip(&stds).enumerate() {
            let expected = match s {
                Some(s) if *s >= t => 0,
                _ => 1,
            };
            assert_eq!(
                code,
                expected,
                "row {i} ({} bytes, std {s:?}) with min_std {t:e}",
                rows[i].len()
            );
        }
    }
}

/// `min_size.wasm` with `min_pixels = 0` runs explicit wasm SIMD code (16 rows per step, the rest
/// one at a time): every row's code must equal `min(width, height) < min_side`, computed here, for
/// sides around the threshold and beyond 2³¹ (an unsigned compare), row counts that are not a
/// multiple of 16, and thresholds from 0 to `u32::MAX`.
#[test]
fn min_size_plugin_matches_every_row() {
    let (host, _cache) = host();
    let plugin = host.load("min_size.wasm", &dist("min_size.wasm")).unwrap();
    let mut x = 0x9E37_79B9u32;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    for min_side in [0u32, 1, 32, 1000, 1 << 31, u32::MAX] {
        let near = [
            0,
            1,
            min_side.saturating_sub(1),
            min_side,
            min_side.saturating_add(1),
            1 << 31,
            u32::MAX,
        ];
        for rows in [0usize, 1, 15, 16, 17, 1007] {
            let mut pick = || match next() % 3 {
                0 => near[(next() % near.len() as u32) as usize],
                1 => next(),
                _ => next() % 2000,
            };
            let mut b = batch(rows);
            b.widths = (0..rows).map(|_| pick()).collect();
            b.heights = (0..rows).map(|_| pick()).collect();
            let mut inst = plugin
                .instantiate(
                    &[("min_side".into(), min_side.to_string())],
                    Limits::default(),
                )
                .unwrap();
            let codes = inst.filter(&b, 0).unwrap();
            let expected: Vec<u8> = b
                .widths
                .iter()
                .zip(&b.heights)
                .map(|(&w, &h)| (w.min(h) < min_side) as u8)
                .collect();
            assert_eq!(codes, expected, "min_side {min_side}, {rows} rows");
        }
    }
}
