//! `dinoflow report` on a small real run (photos with injected copies → embed → dedup →
//! retrieval; Fashion-MNIST → pretrain → eval), checked in headless Chromium: the page loads
//! without console messages, every section is visible with its tables, thumbnails and charts, and
//! a full-page screenshot is written to `target/tmp/report-screenshot.png` (a test artifact, not
//! committed). Also: the page loads nothing from outside, outputs removed from the store leave
//! their section empty instead of failing, and bad run ids fail clearly without touching an
//! existing report.

mod common;

use std::path::Path;

use common::{
    FMNIST, fingerprint, json, open_rgb, photos, python_json, repo_root, run, run_workflow,
    small_training_stages,
};
use image::{ImageFormat, imageops::FilterType};

/// 20 photos plus a JPEG re-encode and a 70 % resize of the first 3 (three duplicate groups), and
/// seeds: 80 % resized JPEGs of 3 other pool photos.
fn make_data(pool: &Path, seeds: &Path) {
    std::fs::create_dir_all(pool).unwrap();
    std::fs::create_dir_all(seeds).unwrap();
    for (i, path) in photos().iter().take(20).enumerate() {
        let name = path.file_name().unwrap().to_str().unwrap();
        std::fs::copy(path, pool.join(name)).unwrap();
        let stem = name.split('.').next().unwrap();
        let img = open_rgb(path);
        let (w, h) = (img.width(), img.height());
        if i < 3 {
            img.save_with_format(
                pool.join(format!("copy-jpeg-{stem}.jpg")),
                ImageFormat::Jpeg,
            )
            .unwrap();
            img.resize_exact(w * 7 / 10, h * 7 / 10, FilterType::Triangle)
                .save_with_format(
                    pool.join(format!("copy-resize-{stem}.png")),
                    ImageFormat::Png,
                )
                .unwrap();
        } else if i < 6 {
            img.resize_exact(w * 8 / 10, h * 8 / 10, FilterType::Triangle)
                .save_with_format(seeds.join(format!("seed-{stem}.jpg")), ImageFormat::Jpeg)
                .unwrap();
        }
    }
}

fn workflow(pool: &Path, seeds: &Path) -> String {
    format!(
        "name: report-test
stages:
  pool:
    kind: ingest@1
    with: {{source: {{folder: {{path: {pool}}}}}, max_side: 224}}
  seeds:
    kind: ingest@1
    with: {{source: {{folder: {{path: {seeds}}}}}, max_side: 224}}
  pool_vectors:
    kind: embed@1
    inputs: {{images: pool}}
  seed_vectors:
    kind: embed@1
    inputs: {{images: seeds}}
  deduplicated:
    kind: dedup@1
    inputs: {{images: pool, embeddings: pool_vectors}}
    with: {{threshold: 0.93}}
  kept_vectors:
    kind: embed@1
    inputs: {{images: deduplicated.kept}}
  retrieved:
    kind: retrieval@1
    inputs: {{images: deduplicated.kept, pool: kept_vectors, seeds: seed_vectors}}
    with: {{mode: {{sample: {{per_seed: 3}}}}}}
{training}",
        pool = pool.display(),
        seeds = seeds.display(),
        // With the evaluation monitor: its k-NN curve is drawn beside the losses.
        training = small_training_stages(6, "      monitor: {every: 3}\n").replacen(
            "inputs: {images: train}",
            "inputs: {images: train, monitor_train: train, monitor_test: test}",
            1
        ),
    )
}

/// Runs `dinoflow --json report RUN --store STORE -o OUT` and returns (success, stdout+stderr).
fn report(store: &Path, run_id: &str, out: &Path) -> (bool, String, serde_json::Value) {
    let output = run(&[
        "--json",
        "report",
        run_id,
        "--store",
        store.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let value = if output.status.success() {
        json(&output)
    } else {
        serde_json::Value::Null
    };
    (output.status.success(), text, value)
}

/// Every `attr="…"` value in `html`.
fn attribute_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let needle = format!(" {attr}=\"");
    html.split(needle.as_str())
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect()
}

#[test]
fn report_of_a_real_run_renders_in_chromium_with_every_section() {
    let dir = tempfile::tempdir().unwrap();
    let (pool, seeds) = (dir.path().join("pool"), dir.path().join("seeds"));
    make_data(&pool, &seeds);
    let run_report = run_workflow(dir.path(), &workflow(&pool, &seeds));
    let store = dir.path().join("store");
    let stages = run_report["stages"].as_array().unwrap().len();
    assert_eq!(stages, 11);

    let html_path = dir.path().join("out/report.html");
    let (ok, text, written) = report(&store, "last", &html_path);
    assert!(ok, "{text}");
    assert_eq!(written["run"], run_report["run_id"], "{written}");
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert_eq!(written["bytes"].as_u64(), Some(html.len() as u64));

    // Self-contained: every image is inline, every link stays in the page, nothing is fetched.
    let sources = attribute_values(&html, "src");
    assert!(sources.len() >= 15, "{} images", sources.len());
    assert!(
        sources
            .iter()
            .all(|s| s.starts_with("data:image/png;base64,"))
    );
    assert!(
        attribute_values(&html, "href")
            .iter()
            .all(|h| h.starts_with('#'))
    );
    for banned in ["<script", "<link", "@import", "url(http"] {
        assert!(!html.contains(banned), "the page has {banned}");
    }
    // Reproduction: the exact workflow text and every fingerprint.
    let yaml = std::fs::read_to_string(dir.path().join("wf.yaml")).unwrap();
    let escaped = yaml
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    assert!(
        html.contains(&escaped),
        "the workflow text is not in the page"
    );
    for s in run_report["stages"].as_array().unwrap() {
        assert!(html.contains(s["fingerprint"].as_str().unwrap()));
    }

    // In the browser.
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-screenshot.png");
    let _ = std::fs::remove_file(&screenshot);
    let page = python_json(&[
        repo_root().join("tests/report_browser.py").as_os_str(),
        html_path.as_os_str(),
        screenshot.as_os_str(),
    ]);
    let console = page["console"].as_array().unwrap();
    assert!(console.is_empty(), "console messages: {console:?}");
    assert!(
        page["title"].as_str().unwrap().contains("report-test"),
        "{}",
        page["title"]
    );
    let section = |id: &str| {
        let s = &page["sections"][id];
        assert_eq!(s["present"], true, "no section {id}");
        assert_eq!(s["visible"], true, "section {id} is not visible");
        s.clone()
    };
    let count = |s: &serde_json::Value, key: &str| s[key].as_u64().unwrap();
    let text_of = |s: &serde_json::Value| s["text"].as_str().unwrap().to_string();

    let dag = section("dag");
    assert_eq!(count(&dag, "dag_nodes"), stages as u64);
    assert_eq!(count(&dag, "table_rows"), stages as u64 + 1);

    let metrics = section("metrics");
    assert!(count(&metrics, "tables") >= 5, "{metrics}");
    assert!(text_of(&metrics).contains("images_per_s"), "{metrics}");

    let funnel = section("funnel");
    assert_eq!(count(&funnel, "table_rows"), stages as u64 + 1);
    assert!(text_of(&funnel).contains("kept"), "{funnel}");

    // Thumbnails are decoded images, shown: 3 groups of representative + 2 copies, and 3 seeds
    // with their results.
    for (id, least) in [("duplicates", 9), ("retrieval", 6)] {
        let s = section(id);
        let images = count(&s, "images");
        assert!(images >= least, "{id}: {images} images");
        assert_eq!(count(&s, "images_loaded"), images, "{id}: broken images");
        assert_eq!(count(&s, "images_visible"), images, "{id}: hidden images");
    }
    let duplicates = text_of(&section("duplicates"));
    assert!(duplicates.contains("kept"), "{duplicates}");
    // Each of the 6 removed copies says why: its similarity and the basis (JPEG and resized
    // copies: the descriptor, or the mirrored vector for a nearly symmetric photo).
    let reasons =
        duplicates.matches(" descriptor").count() + duplicates.matches(" mirrored").count();
    assert!(reasons >= 6, "{duplicates}");
    assert!(text_of(&section("retrieval")).contains("seed"));

    let training = section("training");
    let charts: Vec<&str> = training["charts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for curve in [
        "total",
        "dino_local",
        "dino_global",
        "koleo",
        "ibot",
        "lr",
        "teacher_entropy",
    ] {
        assert!(charts.contains(&curve), "no {curve} chart in {charts:?}");
    }
    let after_losses = charts
        .iter()
        .position(|c| *c == "ibot")
        .map(|i| charts[i + 1]);
    assert_eq!(after_losses, Some("monitor_knn_top1"), "{charts:?}");

    let evaluation = section("evaluation");
    assert_eq!(count(&evaluation, "table_rows"), 4, "{evaluation}");
    for row in ["model", "random init (model)", "raw pixels"] {
        assert!(text_of(&evaluation).contains(row), "{evaluation}");
    }
    assert!(text_of(&section("reproduce")).contains("name: report-test"));

    let shot = image::open(&screenshot).expect("a PNG screenshot");
    assert!(shot.width() > 1000, "{} px wide", shot.width());
    assert!(shot.height() > 2000, "{} px high", shot.height());

    // Outputs removed from the store: the report still renders, saying what is gone.
    let retrieved = store
        .join("objects")
        .join(fingerprint(&run_report, "retrieved"));
    std::fs::remove_dir_all(retrieved).unwrap();
    let again = dir.path().join("again.html");
    let (ok, text, _) = report(&store, "last", &again);
    assert!(ok, "{text}");
    let html = std::fs::read_to_string(&again).unwrap();
    assert!(
        html.contains(
            "No retrieval stage in this run (or its outputs are no longer in the store)."
        )
    );
    assert!(
        html.contains("data:image/png;base64,"),
        "the duplicates lost their thumbnails"
    );
}

#[test]
fn bad_run_ids_fail_clearly_and_leave_an_existing_report_alone() {
    let dir = tempfile::tempdir().unwrap();
    // An empty store: no runs yet.
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let existing = dir.path().join("report.html");
    std::fs::write(&existing, "an earlier report").unwrap();

    let (ok, text, _) = report(&store, "424242", &existing);
    assert!(!ok);
    assert!(
        text.contains("no run 424242") && text.contains("dinoflow runs"),
        "{text}"
    );
    let (ok, text, _) = report(&store, "yesterday", &existing);
    assert!(!ok);
    assert!(text.contains("`yesterday` is not a run id"), "{text}");
    let (ok, text, _) = report(&store, "last", &existing);
    assert!(!ok);
    assert!(text.contains("no runs in"), "{text}");
    assert_eq!(
        std::fs::read_to_string(&existing).unwrap(),
        "an earlier report"
    );

    // A failed run has a report too, with the stage's error in it.
    let wf = common::write_workflow(
        dir.path(),
        "broken.yaml",
        &format!(
            "name: broken\nstages:\n  train:\n    kind: ingest@1\n    with: {{source: {{idx: {{images: {FMNIST}/train-images-idx3-ubyte.gz}}}}, limit: 50}}\n  student:\n    kind: distill@1\n    inputs: {{images: train}}\n    with: {{student: {{preset: tiny-28, steps: 1, batch_size: 8}}}}\n"
        ),
    );
    let failed = common::run_failed(&wf, &store);
    let (ok, text, _) = report(&store, "last", &existing);
    assert!(ok, "{text}");
    let html = std::fs::read_to_string(&existing).unwrap();
    assert!(html.contains("badge st-failed"), "{failed}");
    assert!(
        html.contains("no teacher: connect the `teacher` input"),
        "the error is not in the page: {failed}"
    );
}
