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
