//! `Vit::forward_selected` (the last block on the tokens a loss reads) against the full forward
//! pass: same cls and patch tokens, same drop-path draws, same gradients.

use std::sync::{Mutex, MutexGuard};

use dinoflow_vision::tch::{Device, Kind, Tensor, nn};
use dinoflow_vision::{Ffn, Vit, VitConfig};

const BATCH: i64 = 3;
const PATCHES: i64 = 16;

/// libtorch has one global generator: tests that replay its draws must not interleave.
fn seeded(seed: i64) -> MutexGuard<'static, ()> {
    static GENERATOR: Mutex<()> = Mutex::new(());
    let guard = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed);
    guard
}

fn config(registers: i64, drop_path: f64) -> VitConfig {
    VitConfig {
        embed_dim: 32,
        depth: 3,
        num_heads: 2,
        patch_size: 4,
        in_chans: 1,
        img_size: 16,
        registers,
        ffn: Ffn::Mlp { hidden: 64 },
        // Large enough that every residual branch moves the tokens.
        layerscale: 0.5,
        drop_path,
        mask_token: true,
    }
}

/// A model of `config` with weights drawn from `seed`; the guard keeps the generator to the caller.
fn model(seed: i64, config: VitConfig) -> (MutexGuard<'static, ()>, nn::VarStore, Vit) {
    let generator = seeded(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let vit = Vit::new(&vs.root(), &config).unwrap();
    (generator, vs, vit)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Images, masks on some patches, and patch indices in no particular order (one repeated).
fn inputs() -> (Tensor, Tensor, Tensor) {
    let images = Tensor::randn([BATCH, 1, 16, 16], (Kind::Float, Device::Cpu));
    let masks = Tensor::rand([BATCH, PATCHES], (Kind::Float, Device::Cpu)).lt(0.4);
    let chosen = Tensor::from_slice(&[17i64, 0, 47, 5, 33, 17, 20]);
    (images, masks, chosen)
}

/// The full forward pass's cls tokens and the patch tokens at the flat indices `chosen`.
fn full(vit: &Vit, images: &Tensor, masks: &Tensor, chosen: &Tensor, train: bool) -> [Tensor; 2] {
    let out = vit.forward(images, Some(masks), train).unwrap();
    [out.cls, out.patches.flatten(0, 1).index_select(0, chosen)]
}

fn selected(
    vit: &Vit,
    images: &Tensor,
    masks: &Tensor,
    chosen: &Tensor,
    train: bool,
) -> [Tensor; 2] {
    let out = vit
        .forward_selected(images, Some(masks), Some(chosen), train)
        .unwrap();
    [out.cls, out.patches]
}

#[test]
fn selected_tokens_equal_the_full_forward_pass_with_and_without_registers() {
    for registers in [0, 2] {
        let (_generator, _vs, vit) = model(1, config(registers, 0.0));
        let (images, masks, chosen) = inputs();
        let [cls, patches] = full(&vit, &images, &masks, &chosen, false);
        let [s_cls, s_patches] = selected(&vit, &images, &masks, &chosen, false);
        assert_eq!(s_cls.size(), [BATCH, 32]);
        assert_eq!(s_patches.size(), [7, 32]);
        assert!(max_abs_diff(&cls, &s_cls) < 1e-5, "registers {registers}");
        assert!(
            max_abs_diff(&patches, &s_patches) < 1e-5,
            "registers {registers}"
        );
        let cls_only = vit.forward_selected(&images, None, None, false).unwrap();
        let unmasked = vit.forward(&images, None, false).unwrap();
        assert_eq!(cls_only.patches.size(), [0, 32]);
        assert!(max_abs_diff(&cls_only.cls, &unmasked.cls) < 1e-5);
    }
}

#[test]
fn drop_path_drops_the_same_samples_as_the_full_forward_pass() {
    let (_generator, _vs, vit) = model(2, config(1, 0.5));
    let (images, masks, chosen) = inputs();
    tch::manual_seed(9);
    let [cls, patches] = full(&vit, &images, &masks, &chosen, true);
    tch::manual_seed(9);
    let [s_cls, s_patches] = selected(&vit, &images, &masks, &chosen, true);
    assert!(max_abs_diff(&cls, &s_cls) < 1e-5);
    assert!(max_abs_diff(&patches, &s_patches) < 1e-5);
    let [eval_cls, _] = full(&vit, &images, &masks, &chosen, false);
    assert!(
        max_abs_diff(&cls, &eval_cls) > 1e-3,
        "drop-path at rate 0.5 left every residual in place"
    );
}

#[test]
fn gradients_equal_those_of_the_full_forward_pass() {
    let (_generator, vs, vit) = model(3, config(0, 0.0));
    let (images, masks, chosen) = inputs();
    let weights = [
        Tensor::randn([BATCH, 32], (Kind::Float, Device::Cpu)),
        Tensor::randn([7, 32], (Kind::Float, Device::Cpu)),
    ];
    let grads = |outputs: [Tensor; 2]| {
        let loss = (&outputs[0] * &weights[0]).sum(Kind::Float)
            + (&outputs[1] * &weights[1]).sum(Kind::Float);
        let vars = vs.trainable_variables();
        Tensor::run_backward(&[loss], &vars, false, false)
    };
    let expected = grads(full(&vit, &images, &masks, &chosen, true));
    let got = grads(selected(&vit, &images, &masks, &chosen, true));
    assert_eq!(expected.len(), got.len());
    for (e, g) in expected.iter().zip(&got) {
        let scale = e.abs().max().double_value(&[]).max(1e-6);
        assert!(max_abs_diff(e, g) / scale < 1e-4);
    }
}

#[test]
fn patch_indices_outside_the_batch_are_an_error() {
    let (_generator, _vs, vit) = model(4, config(0, 0.0));
    let (images, masks, _) = inputs();
    for bad in [BATCH * PATCHES, -1] {
        let chosen = Tensor::from_slice(&[0i64, bad]);
        assert!(
            vit.forward_selected(&images, Some(&masks), Some(&chosen), false)
                .is_err(),
            "index {bad}"
        );
    }
}
