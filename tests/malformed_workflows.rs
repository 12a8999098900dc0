//! Malformed workflows through the CLI: syntax, types, unknown fields, kinds and versions, cycles,
//! dangling inputs, port type mismatches, resources, store URLs, labels, stage settings and
//! presets. Every one exits with code 2 and a message that starts with `FILE:LINE:COLUMN` and says
//! what is wrong, and nothing is written to the store. The expected positions were checked by hand
//! against each case's text: they point at the key or value at fault (for YAML syntax errors, where
//! the parser stopped).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use common::{run, run_ok, write_workflow};

/// A valid first stage that the cases build on.
macro_rules! head {
    () => {
        "name: bad\nstages:\n  a:\n    kind: ingest@1\n    with: {source: {folder: {path: photos}}}\n"
    };
}

/// (name, workflow text, `line:column` the error must point at, words the message must hold).
/// Cases named `preset_*` run with `--preset fast`.
const CASES: &[(&str, &str, &str, &str)] = &[
    (
        "tab_indent",
        "name: bad\nstages:\n\ta:\n    kind: ingest\n",
        "3:1",
        "indent with spaces, not tabs",
    ),
    (
        "unclosed_flow",
        "name: bad\nstages:\n  a:\n    kind: ingest@1\n    with: {source: {idx: {images: x}}\n",
        "6:1",
        "did not find expected ',' or '}'",
    ),
    (
        "bad_indent",
        "name: bad\nstages:\n  a:\n    kind: ingest@1\n   with: {}\n",
        "5:4",
        "did not find expected key",
    ),
    (
        "duplicate_key",
        concat!(
            head!(),
            "  a:\n    kind: ingest@1\n    with: {source: {folder: {path: photos}}}\n"
        ),
        "6:3",
        "duplicate key `a` in `stages` (first written at line 3)",
    ),
    (
        "top_level_list",
        "- name: bad\n- stages: {}\n",
        "1:1",
        "invalid type: sequence",
    ),
    ("empty_file", "", "1:1", "missing field `name`"),
    (
        "unterminated_string",
        "name: \"bad\nstages: {}\n",
        "3:1",
        "while scanning a quoted scalar at line 1 column 7",
    ),
    (
        "name_is_list",
        "name: [a, b]\nstages:\n  a:\n    kind: ingest@1\n    with: {source: {folder: {path: photos}}}\n",
        "1:7",
        "name: invalid type: sequence, expected a string",
    ),
    (
        "stages_is_list",
        "name: bad\nstages:\n  - a\n",
        "3:3",
        "stages: invalid type: sequence, expected a map",
    ),
    (
        "with_is_string",
        "name: bad\nstages:\n  a:\n    kind: ingest@1\n    with: everything\n",
        "5:5",
        "stage `a` (ingest): invalid config: invalid type: string \"everything\"",
    ),
    (
        "negative_limit",
        "name: bad\nstages:\n  a:\n    kind: ingest@1\n    with: {source: {folder: {path: photos}}, limit: -3}\n",
        "5:46",
        "(at `with.limit`): invalid value: integer `-3`",
    ),
    (
        "steps_is_text",
        concat!(
            head!(),
            "  p:\n    kind: pretrain@1\n    inputs: {images: a}\n    with: {preset: tiny-28, steps: many}\n"
        ),
        "9:29",
        "(at `with.steps`): invalid type: string \"many\"",
    ),
    (
        "threshold_is_bool",
        concat!(
            head!(),
            "  v:\n    kind: embed@1\n    inputs: {images: a}\n  d:\n    kind: dedup@1\n    inputs: {images: a, embeddings: v}\n    with: {threshold: yes}\n"
        ),
        "12:12",
        "(at `with.threshold`): invalid type: string \"yes\"",
    ),
    (
        "inputs_is_list",
        concat!(head!(), "  v:\n    kind: embed@1\n    inputs: [a]\n"),
        "8:13",
        "stages.v.inputs: invalid type: sequence, expected a map",
    ),
    (
        "unknown_top_level",
        concat!(head!(), "stagez: {}\n"),
        "6:1",
        "unknown field `stagez`",
    ),
    (
        "unknown_stage_field",
        concat!(head!(), "  v:\n    kind: embed@1\n    input: {images: a}\n"),
        "8:5",
        "stages.v: unknown field `input`",
    ),
    (
        "unknown_config_field",
        "name: bad\nstages:\n  a:\n    kind: ingest@1\n    with: {sourc: {idx: {images: x}}}\n",
        "5:12",
        "unknown field `sourc`, expected one of `source`",
    ),
    (
        "unknown_nested_field",
        "name: bad\nstages:\n  a:\n    kind: ingest@1\n    with: {source: {folder: {pth: /tmp}}}\n",
        "5:30",
        "(at `with.source.folder.pth`): unknown field `pth`",
    ),
    (
        "unknown_resource",
        concat!(head!(), "    resources: {gpu: 1}\n"),
        "6:17",
        "stages.a.resources: unknown field `gpu`",
    ),
    (
        "unknown_source_kind",
        "name: bad\nstages:\n  a:\n    kind: ingest@1\n    with: {source: {ftp: {path: /tmp}}}\n",
        "5:12",
        "unknown variant `ftp`, expected one of `folder`, `idx`, `parquet`",
    ),
    (
        "unknown_kind",
        "name: bad\nstages:\n  a:\n    kind: injest\n",
        "4:5",
        "unknown stage kind `injest`",
    ),
    (
        "unknown_major",
        "name: bad\nstages:\n  a:\n    kind: ingest@2\n",
        "4:5",
        "`ingest@2` is pinned, but this dinoflow has ingest 1.",
    ),
    (
        "bad_version",
        "name: bad\nstages:\n  a:\n    kind: ingest@x.y\n",
        "4:5",
        "invalid version pin `x.y`",
    ),
    (
        "empty_kind",
        "name: bad\nstages:\n  a:\n    kind: \"\"\n",
        "4:5",
        "unknown stage kind ``",
    ),
    (
        "missing_kind",
        "name: bad\nstages:\n  a:\n    with: {}\n",
        "4:5",
        "stages.a: missing field `kind`",
    ),
    (
        "two_cycle",
        concat!(
            head!(),
            "  f:\n    kind: filter@1\n    inputs: {images: g.kept}\n    with: {plugins: [{wasm: plugins/filters/dist/blank.wasm}]}\n  g:\n    kind: filter@1\n    inputs: {images: f.kept}\n    with: {plugins: [{wasm: plugins/filters/dist/blank.wasm}]}\n"
        ),
        "12:5",
        "the workflow has a cycle: f → g → f",
    ),
    (
        "self_cycle",
        concat!(
            head!(),
            "  f:\n    kind: filter@1\n    inputs: {images: f.kept}\n    with: {plugins: [{wasm: plugins/filters/dist/blank.wasm}]}\n"
        ),
        "8:5",
        "the workflow has a cycle: f → f",
    ),
    (
        "three_cycle",
        "name: bad\nstages:\n  x:\n    kind: embed@1\n    inputs: {images: z.kept}\n  y:\n    kind: dedup@1\n    inputs: {images: z.kept, embeddings: x}\n  z:\n    kind: filter@1\n    inputs: {images: y.kept}\n    with: {plugins: [{wasm: plugins/filters/dist/blank.wasm}]}\n",
        "8:5",
        "the workflow has a cycle: z → y → z",
    ),
    (
        "input_from_missing_stage",
        concat!(
            head!(),
            "  v:\n    kind: embed@1\n    inputs: {images: nowhere}\n"
        ),
        "8:14",
        "input `images` refers to a missing stage `nowhere`",
    ),
    (
        "input_from_missing_port",
        concat!(
            head!(),
            "  v:\n    kind: embed@1\n    inputs: {images: a.nope}\n"
        ),
        "8:14",
        "`a` (ingest) has no output `nope`",
    ),
    (
        "unknown_input_port",
        concat!(
            head!(),
            "  v:\n    kind: embed@1\n    inputs: {imagez: a}\n"
        ),
        "8:14",
        "stage `v` (embed) has no input port `imagez`",
    ),
    (
        "required_input_missing",
        concat!(head!(), "  v:\n    kind: embed@1\n"),
        "6:3",
        "required input `images` is not connected",
    ),
    (
        "input_is_number",
        concat!(
            head!(),
            "  v:\n    kind: embed@1\n    inputs: {images: 5}\n"
        ),
        "8:14",
        "refers to a missing stage `5`",
    ),
    (
        "embeddings_into_images",
        concat!(
            head!(),
            "  v:\n    kind: embed@1\n    inputs: {images: a}\n  w:\n    kind: embed@1\n    inputs: {images: v}\n"
        ),
        "11:14",
        "expects dataset<images> but `v.embeddings` is dataset<embeddings>",
    ),
    (
        "images_into_embeddings",
        concat!(
            head!(),
            "  d:\n    kind: dedup@1\n    inputs: {images: a, embeddings: a.images}\n"
        ),
        "8:25",
        "expects dataset<embeddings> but `a.images` is dataset<images>",
    ),
    (
        "dataset_into_model",
        concat!(
            head!(),
            "  e:\n    kind: eval@1\n    inputs: {train: a, test: a, model: a.images}\n"
        ),
        "8:33",
        "expects artifact<vit> but `a.images` is dataset<images>",
    ),
    (
        "negative_cpus",
        concat!(head!(), "    resources: {cpus: -1}\n"),
        "6:23",
        "stages.a.resources.cpus: invalid type: integer `-1`",
    ),
    (
        "memory_text",
        concat!(head!(), "    resources: {memory_gb: lots}\n"),
        "6:28",
        "stages.a.resources.memory_gb: invalid type: string \"lots\"",
    ),
    (
        "fractional_gpus",
        concat!(head!(), "    resources: {gpus: 1.5}\n"),
        "6:23",
        "stages.a.resources.gpus: invalid type: floating point `1.5`",
    ),
    (
        "unknown_store_scheme",
        "name: bad\nstore: nosuch://bucket/x\nstages:\n  a:\n    kind: ingest@1\n    with: {source: {folder: {path: photos}}}\n",
        "2:1",
        "unknown scheme `nosuch://`",
    ),
    (
        "s3_without_bucket",
        "name: bad\nstore: s3:///prefix\nstages:\n  a:\n    kind: ingest@1\n    with: {source: {folder: {path: photos}}}\n",
        "2:1",
        "`s3://` needs a bucket",
    ),
    (
        "empty_store",
        "name: bad\nstore: \"\"\nstages:\n  a:\n    kind: ingest@1\n    with: {source: {folder: {path: photos}}}\n",
        "2:1",
        "cannot open store ``: empty",
    ),
    (
        "store_is_list",
        "name: bad\nstore: [a]\nstages:\n  a:\n    kind: ingest@1\n    with: {source: {folder: {path: photos}}}\n",
        "2:8",
        "store: invalid type: sequence, expected a string",
    ),
    (
        "bad_stage_name",
        "name: bad\nstages:\n  \"a b\":\n    kind: ingest@1\n    with: {source: {folder: {path: photos}}}\n",
        "3:3",
        "invalid stage name `a b`",
    ),
    (
        "label_on_single_port",
        concat!(
            head!(),
            "  v:\n    kind: embed@1\n    inputs: {images:x: a}\n"
        ),
        "8:14",
        "input `images` takes one upstream output, so it has no labels",
    ),
    (
        "empty_label",
        concat!(
            head!(),
            "  p:\n    kind: pretrain@1\n    inputs: {images: a}\n    with: {preset: tiny-28, steps: 2}\n  e:\n    kind: eval@1\n    inputs: {train: a, test: a, \"model:\": p.model}\n"
        ),
        "12:33",
        "`model:` has an empty or invalid label",
    ),
    (
        "filter_without_plugins",
        concat!(
            head!(),
            "  f:\n    kind: filter@1\n    inputs: {images: a}\n    with: {plugins: []}\n"
        ),
        "9:12",
        "`plugins` is empty",
    ),
    (
        "report_k_not_in_ks",
        concat!(
            head!(),
            "  p:\n    kind: pretrain@1\n    inputs: {images: a}\n    with: {preset: tiny-28, steps: 2}\n  e:\n    kind: eval@1\n    inputs: {train: a, test: a, model: p.model}\n    with: {knn: {ks: [5, 10], report_k: 20}}\n"
        ),
        "13:12",
        "`report_k` 20 is not one of `ks` [5, 10]",
    ),
    (
        "dedup_threshold_out_of_range",
        concat!(
            head!(),
            "  v:\n    kind: embed@1\n    inputs: {images: a}\n  d:\n    kind: dedup@1\n    inputs: {images: a, embeddings: v}\n    with: {threshold: 1.5}\n"
        ),
        "12:5",
        "threshold 1.5 is a cosine similarity",
    ),
    (
        "dedup_max_removed_out_of_range",
        concat!(
            head!(),
            "  v:\n    kind: embed@1\n    inputs: {images: a}\n  d:\n    kind: dedup@1\n    inputs: {images: a, embeddings: v}\n    with: {max_removed: 0}\n"
        ),
        "12:5",
        "max_removed 0 is a share of the pool: it must be in (0, 1]",
    ),
    (
        "zero_batch",
        concat!(
            head!(),
            "  p:\n    kind: pretrain@1\n    inputs: {images: a}\n    with: {preset: tiny-28, steps: 2, batch_size: 0}\n"
        ),
        "9:5",
        "`batch_size` is 0; it must be at least 2",
    ),
    (
        "phase_from_out_of_range",
        concat!(
            head!(),
            "  p:\n    kind: pretrain@1\n    inputs: {images: a}\n    with: {preset: tiny-28, steps: 8, phases: [{from: 1.5, global_size: 32}]}\n"
        ),
        "9:5",
        "`phases[0].from`: 1.5 is outside (0, 1)",
    ),
    (
        "phases_out_of_order",
        concat!(
            head!(),
            "  p:\n    kind: pretrain@1\n    inputs: {images: a}\n    with: {preset: tiny-28, steps: 8, phases: [{from: 0.8, global_size: 32}, {from: 0.5, global_size: 36}]}\n"
        ),
        "9:5",
        "`phases[1].from`: 0.5 is not after `phases[0].from` 0.8",
    ),
    (
        "phases_at_the_same_iteration",
        concat!(
            head!(),
            "  p:\n    kind: pretrain@1\n    inputs: {images: a}\n    with: {preset: tiny-28, steps: 10, phases: [{from: 0.51, global_size: 32}, {from: 0.55, global_size: 36}]}\n"
        ),
        "9:5",
        "`phases[1].from`: 0.55 begins at iteration 6 of 10, as `phases[0]` does",
    ),
    (
        "phase_after_the_last_iteration",
        concat!(
            head!(),
            "  p:\n    kind: pretrain@1\n    inputs: {images: a}\n    with: {preset: tiny-28, steps: 8, phases: [{from: 0.9, global_size: 32}]}\n"
        ),
        "9:5",
        "`phases[0].from`: 0.9 begins at iteration 8 of 8, after the last one",
    ),
    (
        "phase_global_size_off_the_patch_grid",
        concat!(
            head!(),
            "  p:\n    kind: pretrain@1\n    inputs: {images: a}\n    with: {preset: tiny-28, steps: 8, phases: [{from: 0.5, global_size: 30}]}\n"
        ),
        "9:5",
        "`phases[0].global_size`: 30 px is not a positive multiple of the patch size 4: use 28 or 32",
    ),
    (
        "phase_global_size_under_the_blur_kernel",
        concat!(
            head!(),
            "  p:\n    kind: pretrain@1\n    inputs: {images: a}\n    with: {preset: tiny-28, steps: 8, phases: [{from: 0.5, global_size: 4}]}\n"
        ),
        "9:5",
        "`phases[0].global_size`: 4 px is too small for the blur kernel of `crops.global[0]` (9",
    ),
    (
        "phase_local_size_off_the_patch_grid",
        concat!(
            head!(),
            "  p:\n    kind: pretrain@1\n    inputs: {images: a}\n    with: {preset: tiny-28, steps: 8, phases: [{from: 0.5, global_size: 32, local_size: 14}]}\n"
        ),
        "9:5",
        "`phases[0].local_size`: 14 px is not a positive multiple of the patch size 4: use 12 or 16",
    ),
    (
        "phase_local_size_under_the_blur_kernel",
        concat!(
            head!(),
            "  p:\n    kind: pretrain@1\n    inputs: {images: a}\n    with: {preset: tiny-28, steps: 8, phases: [{from: 0.5, global_size: 32, local_size: 4}]}\n"
        ),
        "9:5",
        "`phases[0].local_size`: 4 px is too small for the blur kernel of `crops.local` (9",
    ),
    (
        "phase_unknown_field",
        concat!(
            head!(),
            "  p:\n    kind: pretrain@1\n    inputs: {images: a}\n    with: {preset: tiny-28, steps: 8, phases: [{from: 0.5, size: 32}]}\n"
        ),
        "9:5",
        "(at `with.phases[0].size`): unknown field `size`, expected one of `from`, `global_size`, `local_size`",
    ),
    (
        "distill_phase_out_of_range",
        concat!(
            head!(),
            "  d:\n    kind: distill@1\n    inputs: {images: a}\n    with: {student: {preset: tiny-28, steps: 8, phases: [{from: 0, global_size: 32}]}}\n"
        ),
        "9:5",
        "`student`: `phases[0].from`: 0 is outside (0, 1)",
    ),
    (
        "unknown_preset_name",
        concat!(
            head!(),
            "  p:\n    kind: pretrain@1\n    inputs: {images: a}\n    with: {preset: giant-1024, steps: 2}\n"
        ),
        "9:12",
        "unknown variant `giant-1024`",
    ),
    (
        "preset_missing_stage",
        concat!(head!(), "presets:\n  fast:\n    nowhere: {limit: 3}\n"),
        "8:5",
        "preset `fast` overrides `nowhere`, which is not a stage",
    ),
    (
        "preset_bad_value",
        concat!(head!(), "presets:\n  fast:\n    a: {limit: many}\n"),
        "8:9",
        "(at `with.limit`): invalid type: string \"many\"",
    ),
    (
        "preset_unknown",
        concat!(head!(), "presets:\n  slow: {}\n"),
        "6:1",
        "the workflow has no preset `fast`",
    ),
];

/// Every file under `dir` with its size and modification time.
fn snapshot(dir: &Path) -> BTreeMap<String, (u64, SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                out.insert(
                    entry.path().display().to_string(),
                    (meta.len(), meta.modified().unwrap()),
                );
            }
        }
    }
    out
}

#[test]
fn malformed_workflows_exit_2_naming_file_line_and_column_and_write_nothing() {
    assert!(CASES.len() >= 40, "{} cases", CASES.len());
    let dir = tempfile::tempdir().unwrap();
    // A store that already holds a run: the malformed workflows must leave it exactly as it is.
    let store = dir.path().join("store");
    let valid = write_workflow(
        dir.path(),
        "valid.yaml",
        "name: valid\nstages:\n  a:\n    kind: ingest@1\n    with: {source: {folder: {path: data/photos}}, limit: 3}\n",
    );
    run_ok(&valid, &store, &[]);
    let before = snapshot(&store);
    let fresh = dir.path().join("fresh-store");

    let mut failures = Vec::new();
    for (name, yaml, position, needle) in CASES {
        let wf = write_workflow(dir.path(), &format!("{name}.yaml"), yaml);
        for target in [&store, &fresh] {
            let mut args = vec!["run", wf.as_str(), "--store", target.to_str().unwrap()];
            if name.starts_with("preset_") {
                args.extend(["--preset", "fast"]);
            }
            let out = run(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let located = format!("error: {wf}:{position}: ");
            if out.status.code() != Some(2)
                || !stderr.starts_with(&located)
                || !stderr.contains(needle)
            {
                failures.push(format!(
                    "{name}: exit {:?}, expected `{located}…{needle}…`, got: {stderr}",
                    out.status.code()
                ));
            }
        }
        if fresh.exists() {
            failures.push(format!("{name}: created the store {}", fresh.display()));
            std::fs::remove_dir_all(&fresh).unwrap();
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        snapshot(&store),
        before,
        "a malformed workflow changed the store"
    );
}
