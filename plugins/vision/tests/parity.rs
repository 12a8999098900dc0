//! Parity with timm: tests/vit_parity.py builds timm's `vit_small_patch14_dinov2` and
//! `vit_small_patch14_reg4_dinov2` with random weights and records their outputs at 518 px (the
//! native position grid) and 224 px (interpolated); our ViT loads the same safetensors and must give
//! the same cls, patch and last-four-layer cls tokens within 1e-4 (fp32, CPU).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use dinoflow_vision::tch::{Device, Tensor};
use dinoflow_vision::weights::read_safetensors;
use dinoflow_vision::{Ffn, VitConfig, VitModel, swiglu_hidden};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the Python script once per test process and returns the fixture folder.
fn fixtures() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let python = repo_root().join(".venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run `make setup`",
            python.display()
        );
        let out = std::process::Command::new(python)
            .arg(repo_root().join("tests/vit_parity.py"))
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tests/vit_parity.py failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
    .path()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

fn check(model_name: &str, preset: VitConfig) {
    let weights =
        std::fs::read(fixtures().join(format!("{model_name}.weights.safetensors"))).unwrap();
    let model =
        VitModel::from_safetensors(&weights, model_name, Some(&preset), Device::Cpu).unwrap();
    let expect_registers = if model_name.contains("reg4") { 4 } else { 0 };
    assert_eq!(model.config().registers, expect_registers);
    assert_eq!(model.config().img_size, 518);

    let io_bytes = std::fs::read(fixtures().join(format!("{model_name}.io.safetensors"))).unwrap();
    let io = read_safetensors(&io_bytes, "io").unwrap().tensors;
    for r in [518, 224] {
        let x = &io[&format!("input_{r}")];
        let out = tch_no_grad(|| model.vit.forward(x, None, false).unwrap());
        let cls = max_abs_diff(&out.cls, &io[&format!("cls_{r}")]);
        let patches = max_abs_diff(&out.patches, &io[&format!("patches_{r}")]);
        assert_eq!(
            out.registers.size(),
            [2, expect_registers, model.config().embed_dim]
        );
        let n = model.config().depth.min(4) as usize;
        let last = tch_no_grad(|| model.vit.last_layers(x, n).unwrap());
        let last_cls = Tensor::stack(
            &last
                .iter()
                .map(|o| o.cls.shallow_clone())
                .collect::<Vec<_>>(),
            0,
        );
        let layers = max_abs_diff(&last_cls, &io[&format!("last4_cls_{r}")]);
        eprintln!(
            "{model_name} at {r} px: max |diff| cls {cls:.2e}, patches {patches:.2e}, last-4 cls {layers:.2e}"
        );
        assert!(cls < 1e-4, "{model_name} {r}px cls differs by {cls}");
        assert!(
            patches < 1e-4,
            "{model_name} {r}px patches differ by {patches}"
        );
        assert!(
            layers < 1e-4,
            "{model_name} {r}px last-4 cls differ by {layers}"
        );
    }
}

fn tch_no_grad<T>(f: impl FnOnce() -> T) -> T {
    dinoflow_vision::tch::no_grad(f)
}

#[test]
fn vit_small_matches_timm() {
    check(
        "vit_small_patch14_dinov2",
        VitConfig::preset("small").unwrap(),
    );
}

#[test]
fn vit_small_with_registers_matches_timm() {
    check(
        "vit_small_patch14_reg4_dinov2",
        VitConfig::preset("small").unwrap(),
    );
}

/// ViT-g's SwiGLU block (timm's packed `fc1`/`fc2`, hidden width from DINOv2's formula) at D = 192
/// with 2 blocks: the giant preset's block design without its 1.1B parameters.
#[test]
fn swiglu_blocks_match_timm() {
    let giant = VitConfig::preset("giant").unwrap();
    assert_eq!(giant.ffn, Ffn::Swiglu { hidden: 4096 });
    let small_swiglu = VitConfig {
        embed_dim: 192,
        depth: 2,
        num_heads: 3,
        ffn: Ffn::Swiglu {
            hidden: swiglu_hidden(192),
        },
        ..giant
    };
    check("swiglu_2block", small_swiglu);
}

#[test]
fn loading_names_missing_unexpected_and_misshaped_keys() {
    let weights =
        std::fs::read(fixtures().join("vit_small_patch14_dinov2.weights.safetensors")).unwrap();
    let mut file = read_safetensors(&weights, "w").unwrap();
    file.tensors.remove("blocks.3.attn.qkv.bias");
    file.tensors.insert(
        "head.weight".into(),
        Tensor::zeros([10, 384], (dinoflow_vision::tch::Kind::Float, Device::Cpu)),
    );
    file.tensors.insert(
        "norm.weight".into(),
        Tensor::zeros([383], (dinoflow_vision::tch::Kind::Float, Device::Cpu)),
    );
    let bytes =
        dinoflow_vision::weights::safetensors_bytes(&file.tensors, Default::default()).unwrap();
    let preset = VitConfig::preset("small").unwrap();
    let err = VitModel::from_safetensors(&bytes, "edited.safetensors", Some(&preset), Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("edited.safetensors"), "{err}");
    assert!(
        err.contains("missing keys: blocks.3.attn.qkv.bias"),
        "{err}"
    );
    assert!(err.contains("unexpected keys: head.weight"), "{err}");
    assert!(
        err.contains("norm.weight (model [384], file [383])"),
        "{err}"
    );
}

#[test]
fn a_saved_model_loads_back_with_its_config_and_same_outputs() {
    let mut config = VitConfig::preset("tiny-28").unwrap();
    config.registers = 4;
    config.depth = 2;
    let model = VitModel::new(&config, Device::Cpu).unwrap();
    let bytes = model.to_safetensors().unwrap();
    let back = VitModel::from_safetensors(&bytes, "artifact", None, Device::Cpu).unwrap();
    assert_eq!(back.config(), &config);
    let x = Tensor::rand(
        [3, 1, 28, 28],
        (dinoflow_vision::tch::Kind::Float, Device::Cpu),
    );
    let (a, b) = tch_no_grad(|| {
        (
            model.vit.forward(&x, None, false).unwrap(),
            back.vit.forward(&x, None, false).unwrap(),
        )
    });
    assert_eq!(a.patches.size(), [3, 49, 192]);
    assert_eq!(max_abs_diff(&a.cls, &b.cls), 0.0);
    assert_eq!(max_abs_diff(&a.patches, &b.patches), 0.0);
}

#[test]
fn bad_inputs_are_refused_with_the_expected_shape() {
    let config = VitConfig {
        depth: 1,
        ..VitConfig::preset("tiny-28").unwrap()
    };
    let model = VitModel::new(&config, Device::Cpu).unwrap();
    let wrong_channels = Tensor::rand(
        [2, 3, 28, 28],
        (dinoflow_vision::tch::Kind::Float, Device::Cpu),
    );
    let err = model
        .vit
        .forward(&wrong_channels, None, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("(batch, 1, H, W)") && err.contains("[2, 3, 28, 28]"),
        "{err}"
    );
    let not_multiple = Tensor::rand(
        [2, 1, 30, 28],
        (dinoflow_vision::tch::Kind::Float, Device::Cpu),
    );
    let err = model
        .vit
        .forward(&not_multiple, None, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("multiples of the patch size 4"), "{err}");
    let masks = Tensor::ones([2, 49], (dinoflow_vision::tch::Kind::Bool, Device::Cpu));
    let x = Tensor::rand(
        [2, 1, 28, 28],
        (dinoflow_vision::tch::Kind::Float, Device::Cpu),
    );
    let err = model
        .vit
        .forward(&x, Some(&masks), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("mask_token"), "{err}");
    assert!(
        VitConfig::preset("huge")
            .unwrap_err()
            .to_string()
            .contains("tiny, small")
    );
}
