//! The eval stage through the CLI on real Fashion-MNIST images: two briefly pretrained ViTs (one
//! architecture, so one random-init baseline) and the raw pixels get a row each; the raw-pixel
//! k-NN equals a brute-force numpy computation on the same stored images; a second run is a cache
//! hit; unlabelled data and bad settings fail saying which input or field is wrong.

mod common;

use std::path::Path;

use common::{
    fingerprint, json, python_json, repo_root, run, run_failed, run_ok, stage_report,
    write_workflow,
};
use dinoflow_eval::{LinearConfig, Report, Source, render_table};

const DATA: &str = "/usr/share/datasets/fashion-mnist";

fn ingest(name: &str, split: &str, limit: u32, labels: bool) -> String {
    let labels = if labels {
        format!(", labels: {DATA}/{split}-labels-idx1-ubyte.gz")
    } else {
        String::new()
    };
    format!(
        "  {name}:\n    kind: ingest@1\n    with: {{source: {{idx: {{images: {DATA}/{split}-images-idx3-ubyte.gz{labels}}}}}, limit: {limit}}}\n"
    )
}

fn pretrain(name: &str, seed: u32) -> String {
    format!(
        "  {name}:\n    kind: pretrain@1\n    inputs: {{images: fmnist_train}}\n    with:\n      preset: tiny-28\n      steps: 2\n      batch_size: 8\n      local_crops: 2\n      seed: {seed}\n      objective: {{head: {{prototypes: 256, hidden_dim: 128, bottleneck_dim: 64}}}}\n"
    )
}

const TWO_MODELS: &str = "model:beta: b.model, model:alpha: a.model";

/// Two pretrained models and an eval stage with the model inputs `models` and `with:` `with`.
fn workflow(train_labels: bool, models: &str, with: &str) -> String {
    format!(
        "name: eval-test\nstages:\n{}{}{}{}  scores:\n    kind: eval@1\n    inputs: {{train: fmnist_train, test: fmnist_test, {models}}}\n    with: {with}\n",
        ingest("fmnist_train", "train", 800, train_labels),
        ingest("fmnist_test", "t10k", 200, true),
        pretrain("a", 1),
        pretrain("b", 2),
    )
}

const WITH: &str = "{knn: {ks: [5, 20, 200]}, linear: {epochs: 5}}";

fn read_report(store: &Path, fp: &str) -> Report {
    let path = store.join("objects").join(fp).join("eval/report.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

#[test]
fn eval_reports_models_and_baselines_and_matches_numpy() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let wf = write_workflow(dir.path(), "wf.yaml", &workflow(true, TWO_MODELS, WITH));
    let first = run_ok(&wf, &store, &[]);
    let scores = stage_report(&first, "scores");
    assert_eq!(scores["status"], "ok", "{scores}");
    let report = read_report(&store, &fingerprint(&first, "scores"));
    println!("{}", render_table(&report));

    assert_eq!((report.train_rows, report.test_rows), (800, 200));
    assert_eq!(report.classes, 10);
    assert_eq!(report.report_k, 20);
    // Inputs in label order, then one random-init baseline (both share an architecture), then pixels.
    let names: Vec<(&str, Source)> = report
        .rows
        .iter()
        .map(|r| (r.name.as_str(), r.source))
        .collect();
    assert_eq!(
        names,
        vec![
            ("alpha", Source::Input),
            ("beta", Source::Input),
            ("random init (alpha)", Source::RandomInit),
            ("raw pixels", Source::RawPixels),
        ]
    );
    for row in &report.rows {
        let ks: Vec<&str> = row.knn.top1.keys().map(String::as_str).collect();
        assert_eq!(ks, vec!["20", "200", "5"], "{row:?}");
        assert_eq!(row.knn.reported, row.knn.top1["20"]);
        for acc in row
            .knn
            .top1
            .values()
            .chain([&row.linear.top1, &row.linear.val_top1])
        {
            assert!((0.0..=1.0).contains(acc), "{row:?}");
        }
        match row.source {
            Source::RawPixels => {
                assert_eq!(row.architecture, None);
                assert_eq!((row.linear.layers, row.linear.avgpool), (0, false));
            }
            _ => {
                assert_eq!(row.architecture.as_deref(), Some("ViT D192×12 p4"));
                assert!([1, 4].contains(&row.linear.layers), "{row:?}");
            }
        }
        assert!(
            LinearConfig::default()
                .learning_rates
                .contains(&row.linear.lr),
            "{row:?}"
        );
    }
    // Raw pixels classify Fashion-MNIST far above chance (10 %) even with 800 train images. (Two
    // iterations of pretraining leave the ViTs' cls tokens nearly constant: LayerScale 1e-5.)
    let pixels = &report.rows[3];
    assert!(
        pixels.knn.reported > 0.6 && pixels.linear.top1 > 0.6,
        "{pixels:?}"
    );
    // The run database has a top-1 metric per row.
    let run_id = first["run_id"].to_string();
    let shown = json(&run(&[
        "--json",
        "show",
        &run_id,
        "--store",
        store.to_str().unwrap(),
    ]));
    let metrics = &shown["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "scores")
        .unwrap()["metrics"];
    assert_eq!(metrics["knn_top1.alpha"], report.rows[0].knn.reported);
    assert_eq!(
        metrics["linear_top1.raw_pixels"],
        report.rows[3].linear.top1
    );
    assert!(
        metrics["knn_top1.random_init_alpha"].is_number(),
        "{metrics}"
    );
    // Each row's time is a run metric (the report holds only what the computation determines).
    for key in ["alpha", "beta", "random_init_alpha", "raw_pixels"] {
        let secs = metrics[format!("seconds.{key}")].as_f64().unwrap_or(0.0);
        assert!(secs > 0.0, "seconds.{key}: {metrics}");
    }

    // The raw-pixel k-NN against brute force in numpy on the same stored images.
    let reference = python_json(&[
        repo_root()
            .join("tests/eval_reference.py")
            .to_str()
            .unwrap(),
        store.to_str().unwrap(),
        &fingerprint(&first, "fmnist_train"),
        &fingerprint(&first, "fmnist_test"),
        "0.07",
        "5",
        "20",
        "200",
    ]);
    println!("numpy reference: {reference}");
    assert_eq!(reference["classes"], 10);
    for k in ["5", "20", "200"] {
        let expected = reference["correct"][k].as_u64().unwrap();
        let fragile = reference["fragile"][k].as_u64().unwrap();
        let got = (pixels.knn.top1[k] * 200.0).round() as u64;
        assert!(
            got.abs_diff(expected) <= fragile,
            "k = {k}: {got} correct, numpy {expected} ({fragile} near-ties)"
        );
        assert!(fragile <= 2, "k = {k}: {fragile} near-ties");
    }

    // Nothing changed: the second run reuses the report.
    let second = run_ok(&wf, &store, &[]);
    assert_eq!(stage_report(&second, "scores")["status"], "cached");
    assert_eq!(
        fingerprint(&second, "scores"),
        fingerprint(&first, "scores")
    );
}

#[test]
fn unlabelled_images_and_bad_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");

    // Train images ingested without labels: the stage fails naming the input and the fix (after
    // loading the model of a plain, unlabelled `model:` input).
    let wf = write_workflow(
        dir.path(),
        "unlabelled.yaml",
        &workflow(false, "model: a.model", WITH),
    );
    let text = run_failed(&wf, &store);
    assert!(
        text.contains("input `train`: row 0 has no label")
            && text.contains("ingest them with labels"),
        "{text}"
    );

    // Bad values are found when the workflow is validated: exit code 2, the field named.
    for (with, needles) in [
        (
            "{knn: {ks: [5, 10]}}",
            &["with.knn", "`report_k` 20 is not one of `ks` [5, 10]"][..],
        ),
        (
            "{knn: {temperature: 0}}",
            &["with.knn", "`temperature` is 0"][..],
        ),
        (
            "{linear: {val_fraction: 1.5}}",
            &["with.linear", "`val_fraction` is 1.5; it must be in (0, 1)"][..],
        ),
        (
            "{linear: {learning_rates: [0.01, 0]}}",
            &["`learning_rates` holds 0"][..],
        ),
        ("{batch_size: 0}", &["with.batch_size", "at least 1"][..]),
    ] {
        let wf = write_workflow(dir.path(), "bad.yaml", &workflow(true, TWO_MODELS, with));
        let out = run(&["--json", "run", &wf, "--store", store.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{with}: {err}");
        assert!(err.contains("scores"), "{with}: {err}");
        for n in needles {
            assert!(err.contains(n), "{with}: lacks {n:?}: {err}");
        }
    }
}
