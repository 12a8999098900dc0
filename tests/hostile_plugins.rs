//! Hostile filter plugins inside a full workflow (photos → filter → embed → dedup) through the CLI:
//! an endless loop, a memory bomb, a wrong-length answer, a trap, an undeclared reason code, bad
//! parameters and a file that is not WebAssembly. Each run fails with exit code 1 and an error that
//! names the plugin and what it did; the stages before it keep their committed outputs, nothing
//! after it runs, and the store stays whole. With the plugin fixed, the next run reuses the ingest
//! and finishes.

mod common;

use common::{fingerprint, json, named, output_digests, repo_root, run, run_ok, write_workflow};

fn workflow(plugin: &str, params: &str) -> String {
    format!(
        "name: hostile-plugins
stages:
  photos:
    kind: ingest@1
    with: {{source: {{folder: {{path: data/photos}}}}, max_side: 64, limit: 24}}
  curated:
    kind: filter@1
    inputs: {{images: photos}}
    with:
      timeout_ms: 500
      memory_mb: 64
      plugins:
        - {{wasm: {plugin}, params: {params}}}
        - {{wasm: plugins/filters/dist/blank.wasm}}
  vectors:
    kind: embed@1
    inputs: {{images: curated.kept}}
  unique:
    kind: dedup@1
    inputs: {{images: curated.kept, embeddings: vectors}}
"
    )
}

#[test]
fn hostile_plugins_fail_their_stage_cleanly_and_a_fixed_plugin_finishes_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let hostile = repo_root().join("plugins/filters/dist/hostile.wasm");
    let hostile = hostile.to_str().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"MZ\x90\x00 this is not WebAssembly").unwrap();
    let junk = junk.to_str().unwrap();

    // A first good run, so that the failures happen next to committed outputs.
    let good = run_ok(
        &write_workflow(dir.path(), "good.yaml", &workflow(hostile, "{mode: keep}")),
        &store,
        &[],
    );
    let photos = fingerprint(&good, "photos");
    let photos_digests = output_digests(&store, &photos);

    let cases = [
        (hostile, "{mode: loop}", vec!["hostile.wasm", "time limit"]),
        (hostile, "{mode: bomb}", vec!["hostile.wasm", "memory"]),
        (hostile, "{mode: short}", vec!["hostile.wasm", "rows"]),
        (hostile, "{mode: trap}", vec!["hostile.wasm", "trap"]),
        (hostile, "{mode: bad-code}", vec!["hostile.wasm", "7"]),
        (
            hostile,
            "{mode: explode}",
            vec!["hostile.wasm", "mode 'explode' is not one of"],
        ),
        (junk, "{}", vec!["junk.wasm"]),
    ];
    for (plugin, params, needles) in cases {
        let wf = write_workflow(dir.path(), "bad.yaml", &workflow(plugin, params));
        let out = run(&["--json", "run", &wf, "--store", store.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{params}: {out:?}");
        let report = json(&out);
        let stage = |name: &str| named(&report["stages"], name).clone();
        assert_eq!(stage("photos")["status"], "cached", "{params}");
        let curated = stage("curated");
        assert_eq!(curated["status"], "failed", "{params}: {curated}");
        let error = curated["error"].as_str().unwrap().to_lowercase();
        for n in &needles {
            assert!(
                error.contains(&n.to_lowercase()),
                "{params}: {error} lacks {n}"
            );
        }
        for later in ["vectors", "unique"] {
            assert_eq!(stage(later)["status"], "skipped", "{params}");
        }
        // Nothing partial committed, nothing earlier touched.
        assert!(
            !store
                .join("objects")
                .join(curated["fingerprint"].as_str().unwrap())
                .join("manifest.json")
                .exists()
        );
        assert_eq!(output_digests(&store, &photos), photos_digests, "{params}");
        let check = run(&["gc", "--check", "--store", store.to_str().unwrap()]);
        assert!(check.status.success(), "{params}: {check:?}");
    }

    // The plugin fixed: the ingest is reused, the rest runs.
    let wf = write_workflow(dir.path(), "fixed.yaml", &workflow(hostile, "{mode: keep}"));
    let fixed = run_ok(&wf, &store, &[]);
    let statuses: Vec<(&str, &str)> = fixed["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("photos", "cached"),
            ("curated", "cached"),
            ("vectors", "cached"),
            ("unique", "cached"),
        ]
    );
    let blank = write_workflow(
        dir.path(),
        "blank.yaml",
        &workflow("plugins/filters/dist/min_size.wasm", "{min_side: 8}"),
    );
    let other = run_ok(&blank, &store, &[]);
    assert_eq!(other["status"], "ok");
    assert_eq!(fingerprint(&other, "photos"), photos);
}
