//! The distill stage through the CLI: a student distilled from a pretrained teacher learns (its
//! loss falls and its k-NN accuracy beats the same student at random init, measured by `eval`),
//! an external checkpoint can be the teacher, and bad settings fail naming the stage and saying
//! what to do.

mod common;

use common::{run, run_failed, run_ok, stage_report, write_workflow};

const TRAIN: &str = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz";

/// A small teacher (tiny-28 cut to 4 blocks) pretrained on 2,000 Fashion-MNIST images, and a
/// narrower student distilled from it.
fn workflow(teacher_steps: u32, student: &str, teacher_input: bool) -> String {
    let teacher = if teacher_input {
        "\n    inputs: {images: train, teacher: teacher.model}"
    } else {
        "\n    inputs: {images: train}"
    };
    format!(
        "name: distill-test
stages:
  train:
    kind: ingest@1
    with: {{source: {{idx: {{images: {TRAIN}}}}}, limit: 2000}}
  teacher:
    kind: pretrain@1
    inputs: {{images: train}}
    with:
      preset: tiny-28
      depth: 4
      steps: {teacher_steps}
      batch_size: 32
      local_crops: 2
      objective: {{head: {{prototypes: 512, hidden_dim: 256, bottleneck_dim: 64}}}}
  student:
    kind: distill@1{teacher}
    with:
{student}
"
    )
}

const STUDENT: &str = "      student:
        preset: tiny-28
        embed_dim: 96
        depth: 4
        steps: 60
        batch_size: 32
        local_crops: 2
        objective: {head: {prototypes: 512, hidden_dim: 256, bottleneck_dim: 64}}";

/// Runs `yaml` expecting the stage `student` to fail with every one of `needles` in the output.
#[track_caller]
fn expect_failure(dir: &std::path::Path, yaml: &str, needles: &[&str]) {
    let wf = write_workflow(dir, "bad.yaml", yaml);
    let text = run_failed(&wf, &dir.join("store"));
    assert!(text.contains("student"), "{text}");
    for n in needles {
        assert!(text.contains(n), "lacks {n:?}: {text}");
    }
}

#[test]
fn settings_distillation_cannot_use_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    for (student, needles) in [
        (
            STUDENT.replace("depth: 4", "depth: 4\n        drop_path: 0.1"),
            ["`student.drop_path` is 0.1", "remove it"],
        ),
        (
            STUDENT.replace("batch_size: 32", "batch_size: 1"),
            ["`student`: `batch_size` is 1", "at least 2"],
        ),
    ] {
        let wf = write_workflow(dir.path(), "bad.yaml", &workflow(2, &student, true));
        let out = run(&["run", &wf, "--store", store.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}");
        assert!(
            text.contains("bad.yaml:") && text.contains("stage `student`"),
            "{text}"
        );
        for n in needles {
            assert!(text.contains(n), "lacks {n:?}: {text}");
        }
        assert!(!store.exists(), "an invalid workflow wrote to the store");
    }
}

#[test]
fn bad_distill_settings_name_the_stage_and_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    expect_failure(
        dir.path(),
        &workflow(2, STUDENT, false),
        &["no teacher: connect the `teacher` input"],
    );
    expect_failure(
        dir.path(),
        &workflow(
            2,
            &STUDENT.replace("prototypes: 512", "prototypes: 256"),
            true,
        ),
        &[
            "the teacher's head has 512 prototypes",
            "`objective.head.prototypes: 512`",
        ],
    );
    expect_failure(
        dir.path(),
        &workflow(
            2,
            &format!(
                "{STUDENT}\n      teacher: {{weights: /nonexistent/teacher.safetensors, preset: tiny-28}}"
            ),
            true,
        ),
        &["/nonexistent/teacher.safetensors"],
    );
}

#[test]
fn an_external_checkpoint_can_be_the_teacher() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // A pretrained backbone copied out of the store stands for a downloaded checkpoint.
    let first = run_ok(
        &write_workflow(dir.path(), "teacher.yaml", &workflow(2, STUDENT, true)),
        &store,
        &[],
    );
    let teacher_fp = stage_report(&first, "teacher")["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    let weights = dir.path().join("teacher.safetensors");
    std::fs::copy(
        store
            .join("objects")
            .join(&teacher_fp)
            .join("model/model.safetensors"),
        &weights,
    )
    .unwrap();
    let external = format!(
        "{STUDENT}\n      teacher: {{weights: {}, preset: tiny-28}}",
        weights.display()
    );
    let wf = write_workflow(dir.path(), "external.yaml", &workflow(2, &external, false));
    let report = run_ok(&wf, &store, &[]);
    let student = stage_report(&report, "student");
    assert_eq!(student["status"], "ok", "{student}");
    assert_eq!(student["rows"]["metrics"], 60);
    // The checkpoint's bytes are part of the fingerprint: another file re-runs the stage.
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&weights, bytes).unwrap();
    let again = run_ok(&wf, &store, &[]);
    assert_ne!(
        stage_report(&again, "student")["fingerprint"],
        student["fingerprint"]
    );
}

#[test]
fn a_distilled_student_learns_from_its_teacher() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let labelled = |name: &str, split: &str, limit: u32| {
        format!(
            "  {name}:\n    kind: ingest@1\n    with: {{source: {{idx: {{images: /usr/share/datasets/fashion-mnist/{split}-images-idx3-ubyte.gz, labels: /usr/share/datasets/fashion-mnist/{split}-labels-idx1-ubyte.gz}}}}, limit: {limit}}}\n"
        )
    };
    let yaml = format!(
        "{}{}{}  scores:\n    kind: eval@1\n    inputs: {{train: knn_train, test: knn_test, model:student: student.model}}\n    with: {{baselines: {{raw_pixels: false}}, linear: {{epochs: 5}}}}\n",
        workflow(60, STUDENT, true),
        labelled("knn_train", "train", 1000),
        labelled("knn_test", "t10k", 500),
    );
    let wf = write_workflow(dir.path(), "wf.yaml", &yaml);
    let report = run_ok(&wf, &store, &[]);

    // The loss falls: the student moves towards the teacher's targets.
    let shown = common::json(&run(&[
        "--json",
        "show",
        &report["run_id"].to_string(),
        "--store",
        store.to_str().unwrap(),
    ]));
    let metrics = |stage: &str| {
        shown["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == stage)
            .unwrap()["metrics"]
            .clone()
    };
    let distill = metrics("student");
    let (first, last) = (
        distill["loss_first"].as_f64().unwrap(),
        distill["loss_last"].as_f64().unwrap(),
    );
    assert!(last < first - 1.0, "distill loss {first} -> {last}");
    assert_eq!(distill["teacher_depth"], 4);
    assert_eq!(distill["teacher_embed_dim"], 192);

    // Its k-NN accuracy beats the same architecture at random init, measured by the eval stage.
    let evaluation = &shown["evaluations"]["scores"];
    let rows = evaluation["rows"].as_array().unwrap();
    let knn = |name: &str| {
        rows.iter().find(|r| r["name"] == name).unwrap()["knn"]["reported"]
            .as_f64()
            .unwrap()
    };
    let (student, random) = (knn("student"), knn("random init (student)"));
    eprintln!("distill loss {first:.3} -> {last:.3}; k-NN student {student}, random init {random}");
    assert!(
        student > random + 0.15,
        "student k-NN {student} vs random init {random}"
    );
    assert_eq!(
        rows.iter().find(|r| r["name"] == "student").unwrap()["architecture"],
        "ViT D96×4 p4"
    );
}
