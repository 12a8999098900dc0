//! `dinoflow plugin new|build|check`: make, build and check WebAssembly filter plugins.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use dinoflow_wasm::{Batch, FilterHost, Limits, param_kind_name};

/// The template crate of `plugin new`, with `__NAME__` for the plugin name.
const TEMPLATE: [(&str, &str); 2] = [
    (
        "Cargo.toml",
        include_str!("../plugins/filters/template/Cargo.toml"),
    ),
    (
        "src/lib.rs",
        include_str!("../plugins/filters/template/src/lib.rs"),
    ),
];
const WIT: &str = include_str!("../plugins/wit/filter.wit");

/// Creates a new guest crate `DIR/NAME` from the template; it builds as is.
pub fn new(name: &str, dir: &Path) -> Result<ExitCode> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_lowercase());
    if !valid {
        bail!(
            "plugin name `{name}`: use lower-case letters, digits and `-`, starting with a letter"
        );
    }
    let root = dir.join(name);
    if root.exists() {
        bail!(
            "{} already exists; choose another name or remove it",
            root.display()
        );
    }
    for (file, text) in TEMPLATE {
        let path = root.join(file);
        std::fs::create_dir_all(path.parent().unwrap_or(&root))
            .with_context(|| format!("creating {}", path.display()))?;
        let text = text.replace("__NAME__", name).replace("__WIT__", "wit");
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    std::fs::create_dir_all(root.join("wit"))?;
    std::fs::write(root.join("wit/filter.wit"), WIT)?;
    println!(
        "created {}; edit src/lib.rs, then: dinoflow plugin build {}",
        root.display(),
        root.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Builds the guest crate in `dir` with `scripts/build-plugins.sh` (sharing the shipped guests'
/// target folder, so the standard library is compiled once) into `dir/dist`, and checks the result.
pub fn build(dir: &Path, json: bool) -> Result<ExitCode> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/build-plugins.sh");
    if !script.exists() {
        bail!(
            "{} not found: `plugin build` needs the dinoflow source tree it was built from",
            script.display()
        );
    }
    let dist = dir.join("dist");
    // Only this build's output is checked below.
    if dist.is_dir() {
        std::fs::remove_dir_all(&dist).with_context(|| format!("clearing {}", dist.display()))?;
    }
    let status = std::process::Command::new("bash")
        .arg(&script)
        .arg(dir)
        .env("DINOFLOW_PLUGIN_DIST", &dist)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        bail!(
            "building {} failed (see the compiler output above)",
            dir.display()
        );
    }
    let built: Vec<PathBuf> = std::fs::read_dir(&dist)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    for wasm in &built {
        check(wasm, &[], json)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A varied sample: sizes from tiny to huge, every format, labels, and 16×16 pixels (flat or noisy).
fn sample_batch(rows: usize, with_pixels: bool) -> Batch {
    let mut b = Batch {
        widths: Vec::with_capacity(rows),
        heights: Vec::with_capacity(rows),
        channels: Vec::with_capacity(rows),
        formats: Vec::with_capacity(rows),
        file_sizes: Vec::with_capacity(rows),
        labels: Vec::with_capacity(rows),
        pixel_widths: vec![16; rows],
        pixel_heights: vec![16; rows],
        pixel_offsets: Vec::new(),
        pixels: Vec::new(),
    };
    let mut x: u32 = 12345;
    for i in 0..rows {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        b.widths.push(1 + x % 2000);
        b.heights.push(1 + (x >> 11) % 2000);
        b.channels.push(if i % 3 == 0 { 1 } else { 3 });
        b.formats.push((i % 8) as u8);
        b.file_sizes.push(u64::from(x % 5_000_000));
        b.labels.push((i % 10) as i64);
        if with_pixels {
            b.pixel_offsets.push(b.pixels.len() as u64);
            let n = 16 * 16 * usize::from(b.channels[i]);
            let flat = i % 4 == 0;
            b.pixels.extend((0..n).map(|k| {
                if flat {
                    128
                } else {
                    ((k as u32).wrapping_mul(2_654_435_761) >> 24) as u8
                }
            }));
        }
    }
    if with_pixels {
        b.pixel_offsets.push(b.pixels.len() as u64);
    }
    b
}

/// Loads `file` (refusing imports), prints describe(), configures it with `params` and runs it on
/// a sample batch, checking the result's length and codes.
pub fn check(file: &Path, params: &[(String, String)], json: bool) -> Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let name = file.file_name().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let host = FilterHost::new(&FilterHost::default_cache_dir())?;
    let plugin = host.load(&name, &bytes)?;
    let mut inst = plugin.instantiate(params, Limits::default())?;
    let info = &plugin.info().info;
    let batch = sample_batch(10_000, info.needs_pixels);
    let started = std::time::Instant::now();
    let codes = inst.filter(&batch, 0)?;
    let secs = started.elapsed().as_secs_f64();
    let mut counts = std::collections::BTreeMap::new();
    for c in codes {
        *counts.entry(c).or_insert(0u64) += 1;
    }
    if json {
        let params: Vec<_> = info
            .params
            .iter()
            .map(|p| serde_json::json!({"name": p.name, "kind": param_kind_name(p.kind), "default": p.default_value, "description": p.description}))
            .collect();
        let reasons: Vec<_> = info
            .reasons
            .iter()
            .map(|r| serde_json::json!({"code": r.code, "text": r.text}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "file": file.display().to_string(), "digest": plugin.info().digest,
                "name": info.name, "version": info.version, "description": info.description,
                "needs_pixels": info.needs_pixels, "params": params, "reasons": reasons,
                "sample": {"rows": batch.widths.len(), "codes": counts, "seconds": secs},
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("{} {}: {}", info.name, info.version, info.description);
    println!(
        "  file {} ({} bytes, blake3 {})",
        file.display(),
        bytes.len(),
        &plugin.info().digest[..16]
    );
    println!("  reads pixels: {}", info.needs_pixels);
    for p in &info.params {
        println!(
            "  param {:<14} {:<10} default {:<12} {}",
            p.name,
            param_kind_name(p.kind),
            p.default_value,
            p.description
        );
    }
    for r in &info.reasons {
        println!("  code {:>3}  {}", r.code, r.text);
    }
    println!(
        "  sample of {} rows in {:.2} ms: {}",
        batch.widths.len(),
        secs * 1e3,
        counts
            .iter()
            .map(|(c, n)| format!("code {c}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  contract ok: no imports, describe/configure/filter work, one declared code per row"
    );
    Ok(ExitCode::SUCCESS)
}
