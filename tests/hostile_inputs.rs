//! Hostile inputs: a folder of 43 malformed or adversarial files (truncated, empty, header-only,
//! noise, HTML and text under image names, PNG/JPEG/GIF decompression bombs, a 64-megapixel
//! all-zero PNG, a zero-width PNG, wrong and missing extensions, animated GIF, CMYK, 16-bit,
//! palette, bilevel, alpha, all EXIF orientations, extreme aspect ratios, a broken symbolic link)
//! is ingested in one run. Every file is either an image row whose size, channels and format are
//! what Pillow (an independent decoder) says, or an `errors` row with a reason; the process exits
//! cleanly and its peak memory stays bounded.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use common::{dinoflow, python_json, repo_root, write_workflow};

/// The peak resident memory (VmHWM) of process `pid` in MiB, if it is still running.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// The file name at the end of a source URL.
fn file_name(source: &str) -> String {
    source.rsplit('/').next().unwrap_or(source).to_string()
}

#[test]
fn every_hostile_file_is_an_image_or_an_error_with_a_reason_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    let script = repo_root().join("tests/hostile_corpus.py");
    let expected: BTreeMap<String, serde_json::Value> = serde_json::from_value(python_json(&[
        script.as_os_str(),
        "make".as_ref(),
        corpus.as_os_str(),
    ]))
    .unwrap();
    assert!(expected.len() >= 30, "{} files", expected.len());

    let wf = write_workflow(
        dir.path(),
        "wf.yaml",
        &format!(
            "name: hostile\nstages:\n  files:\n    kind: ingest@1\n    with: {{source: {{folder: {{path: {}}}}}, max_side: 64}}\n",
            corpus.display()
        ),
    );
    let store = dir.path().join("store");
    let mut child = dinoflow()
        .args(["--json", "run", &wf, "--store", store.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut peak = 0.0f64;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if let Some(mib) = peak_rss_mib(child.id()) {
            peak = peak.max(mib);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{status}: {stdout}{stderr}");
    eprintln!("peak resident memory of the ingest run: {peak:.0} MiB");
    assert!(
        (1.0..1024.0).contains(&peak),
        "peak resident memory {peak:.0} MiB"
    );

    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let fp = report["stages"][0]["fingerprint"].as_str().unwrap();
    let out = python_json(&[
        script.as_os_str(),
        "read".as_ref(),
        store.as_os_str(),
        fp.as_ref(),
    ]);
    let mut images: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for row in out["images"].as_array().unwrap() {
        let name = file_name(row["source"].as_str().unwrap());
        assert!(
            images.insert(name.clone(), row.clone()).is_none(),
            "{name} twice"
        );
    }
    let mut errors: BTreeMap<String, String> = BTreeMap::new();
    for row in out["errors"].as_array().unwrap() {
        let name = file_name(row["source"].as_str().unwrap());
        let reason = row["error"].as_str().unwrap().to_string();
        assert!(!reason.is_empty(), "{name}: no reason");
        assert!(
            errors.insert(name.clone(), reason).is_none(),
            "{name} twice"
        );
    }

    let mut failures = Vec::new();
    for (name, want) in &expected {
        let (image, error) = (images.get(name), errors.get(name));
        match want["expect"].as_str().unwrap() {
            "image" => match image {
                None => failures.push(format!("{name}: not ingested ({error:?})")),
                Some(row) => {
                    for key in ["width", "height", "channels", "format"] {
                        if row[key] != want[key] {
                            failures.push(format!(
                                "{name}: {key} {} (Pillow: {})",
                                row[key], want[key]
                            ));
                        }
                    }
                    let (pw, ph) = (
                        row["pixel_width"].as_u64().unwrap(),
                        row["pixel_height"].as_u64().unwrap(),
                    );
                    if !(1..=64).contains(&pw) || !(1..=64).contains(&ph) {
                        failures.push(format!("{name}: stored pixels {pw}×{ph}, not within 64"));
                    }
                }
            },
            "error" => match error {
                None => failures.push(format!(
                    "{name}: no error row (ingested: {})",
                    image.is_some()
                )),
                Some(reason) => {
                    let needle = want["reason"].as_str().unwrap();
                    if !reason.contains(needle) {
                        failures.push(format!("{name}: reason {reason:?} lacks {needle:?}"));
                    }
                }
            },
            _ => {
                if image.is_some() == error.is_some() {
                    failures.push(format!(
                        "{name}: in images {} and errors {}",
                        image.is_some(),
                        error.is_some()
                    ));
                }
            }
        }
    }
    // Nothing is dropped silently and nothing appears that was not in the folder.
    let seen: Vec<&String> = images.keys().chain(errors.keys()).collect();
    assert_eq!(seen.len(), expected.len(), "{seen:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(report["stages"][0]["rows"]["images"], images.len());
    assert_eq!(report["stages"][0]["rows"]["errors"], errors.len());
}
