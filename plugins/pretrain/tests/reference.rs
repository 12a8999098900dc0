//! Two training iterations against the PyTorch reference (tests/pretrain_reference.py, written
//! from dinov2's code with timm's ViT and torch.optim.AdamW): same initial weights, crops, masks
//! and schedule values; the losses of each iteration and every student and teacher tensor after
//! the second must match, in float32 and with bfloat16 autocast (the reference under
//! `torch.autocast`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use dinoflow_pretrain::masking::BatchMasks;
use dinoflow_pretrain::{Batch, HeadConfig, Learner, ObjectiveConfig, StepValues};
use dinoflow_vision::tch::{Device, Kind, Tensor};
use dinoflow_vision::{Ffn, Precision, VitConfig};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tensors(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .collect()
}

/// The reference's output for `precision` (`float32` or `bfloat16`) in a temporary folder.
fn run_reference(precision: &str) -> tempfile::TempDir {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make setup`",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(&python);
    command
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pretrain_reference.py"))
        .arg(dir.path());
    if precision == "bfloat16" {
        command.arg("bfloat16");
    }
    let out = command.output().expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// The reference's schedule values and losses of each iteration.
fn expected(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap()
}

/// The reference's network with its initial weights, and its batch.
fn learner_and_batch(dir: &Path) -> (Learner, Batch, VitConfig) {
    let vit = VitConfig {
        embed_dim: 48,
        depth: 2,
        num_heads: 3,
        ffn: Ffn::Mlp { hidden: 192 },
        drop_path: 0.0,
        ..VitConfig::preset("tiny-28").unwrap()
    };
    let objective = ObjectiveConfig {
        head: HeadConfig {
            prototypes: 64,
            hidden_dim: 32,
            bottleneck_dim: 16,
            layers: 3,
        },
        ..ObjectiveConfig::default()
    };
    let mut learner = Learner::new(&vit, &objective, Device::Cpu).unwrap();
    learner.load_student(&dir.join("init.safetensors")).unwrap();

    let batch = tensors(&dir.join("batch.safetensors"));
    let masks = batch["masks"].to_kind(Kind::Bool);
    let rows: Vec<Vec<bool>> = (0..masks.size()[0])
        .map(|i| Vec::<bool>::try_from(&masks.get(i)).unwrap())
        .collect();
    let masks = BatchMasks {
        masks: rows,
        upper_bound: 0,
    };
    let batch = Batch::new(
        batch["global"].shallow_clone(),
        Some(batch["local"].shallow_clone()),
        2,
        &masks,
        Device::Cpu,
    )
    .unwrap();
    (learner, batch, vit)
}

/// Runs the reference's iterations; returns, for each, the pairs (dinoflow, reference) of every
/// loss term by name.
fn run_steps(
    learner: &mut Learner,
    batch: &Batch,
    expected: &serde_json::Value,
) -> Vec<Vec<(&'static str, f64, f64)>> {
    let mut out = Vec::new();
    for (step, want) in expected["steps"]
        .as_array()
        .unwrap()
        .iter()
        .zip(expected["losses"].as_array().unwrap())
    {
        let values = StepValues {
            lr: step["lr"].as_f64().unwrap(),
            last_layer_lr: step["last_layer_lr"].as_f64().unwrap(),
            weight_decay: step["weight_decay"].as_f64().unwrap(),
            momentum: step["momentum"].as_f64().unwrap(),
            teacher_temp: step["teacher_temp"].as_f64().unwrap(),
        };
        let got = learner.step(batch, &values).unwrap();
        out.push(
            [
                ("dino_local", got.dino_local),
                ("dino_global", got.dino_global),
                ("koleo", got.koleo),
                ("ibot", got.ibot),
                ("total", got.total),
            ]
            .into_iter()
            .map(|(name, value)| (name, value, want[name].as_f64().unwrap()))
            .collect(),
        );
    }
    out
}

fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

/// Every student and teacher tensor after the iterations equals the reference's.
fn assert_weights_match(learner: &Learner, dir: &Path, vit: &VitConfig) {
    // The key part of each qkv bias gets no gradient in exact arithmetic (attention is invariant
    // to it): its gradient is rounding noise, which AdamW normalises into steps of either sign.
    // There the two implementations may differ by up to the learning rates summed; every other
    // value must agree to 1e-5.
    let d = vit.embed_dim;
    let noise_bound: f64 = expected(dir)["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| 2.0 * s["lr"].as_f64().unwrap())
        .sum();
    let after = tensors(&dir.join("expected.safetensors"));
    let student = learner.student_vs.variables();
    let teacher = learner.teacher_vs.variables();
    assert_eq!(after.len(), student.len() + teacher.len());
    let mut worst = (0.0, String::new());
    for (name, want) in &after {
        let got = match name.strip_prefix("teacher.") {
            Some(n) => &teacher[n],
            None => &student[name.as_str()],
        };
        let diff = (got - want).abs();
        let diff = if name.ends_with("attn.qkv.bias") {
            let key = diff.narrow(0, d, d).max().double_value(&[]);
            assert!(key < noise_bound, "{name}: key bias differs by {key}");
            Tensor::cat(&[diff.narrow(0, 0, d), diff.narrow(0, 2 * d, d)], 0)
        } else {
            diff
        };
        let diff = diff.max().double_value(&[]);
        if diff > worst.0 {
            worst = (diff, name.clone());
        }
    }
    eprintln!(
        "largest weight difference after 2 steps: {:.2e} ({})",
        worst.0, worst.1
    );
    assert!(worst.0 < 1e-5, "{} differs by {}", worst.1, worst.0);
}

#[test]
fn two_steps_match_the_pytorch_reference() {
    let dir = run_reference("float32");
    let expected = expected(dir.path());
    let (mut learner, batch, vit) = learner_and_batch(dir.path());
    for (i, step) in run_steps(&mut learner, &batch, &expected)
        .iter()
        .enumerate()
    {
        for &(name, value, reference) in step {
            let rel = relative(value, reference);
            eprintln!(
                "step {i} {name}: dinoflow {value:.7} reference {reference:.7} rel {rel:.1e}"
            );
            assert!(rel < 1e-4, "step {i} {name}: {value} vs {reference}");
        }
    }

    assert_weights_match(&learner, dir.path(), &vit);
}

/// bfloat16 autocast (on the CPU here; `precision: auto` turns the same mechanism on for CUDA):
/// dinoflow's losses and updated weights equal the reference's under torch.autocast, while the
/// float32 reference's losses are measurably further away (the cast took effect); parameters stay
/// float32.
#[test]
fn bfloat16_autocast_follows_torch_autocast() {
    let float32 = expected(run_reference("float32").path());
    let dir = run_reference("bfloat16");
    let bfloat16 = expected(dir.path());
    let (mut learner, batch, vit) = learner_and_batch(dir.path());
    learner.autocast = Precision::Bfloat16.resolve(Device::Cpu);
    let steps = run_steps(&mut learner, &batch, &bfloat16);
    let mut furthest_from_float32: f64 = 0.0;
    for (i, step) in steps.iter().enumerate() {
        for &(name, value, reference) in step {
            let plain = float32["losses"][i][name].as_f64().unwrap();
            let (rel, rel_plain) = (relative(value, reference), relative(value, plain));
            eprintln!(
                "step {i} {name}: dinoflow {value:.7} torch.autocast {reference:.7} rel {rel:.1e}; \
                 float32 {plain:.7} rel {rel_plain:.1e}"
            );
            furthest_from_float32 = furthest_from_float32.max(rel_plain);
            assert!(rel < 1e-4, "step {i} {name}: {value} vs {reference}");
        }
    }
    assert!(
        furthest_from_float32 > 1e-3,
        "no loss moved: was autocast on?"
    );
    for (name, t) in learner.student_vs.variables() {
        assert_eq!(t.kind(), Kind::Float, "{name}");
    }
    assert_weights_match(&learner, dir.path(), &vit);
}
