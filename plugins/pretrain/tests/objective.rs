//! The objective's building blocks against values computed by hand (plain loops over the same
//! numbers), and the statistics of the masks and schedules.

// The hand computations index their arrays the way the formulas do.
#![allow(clippy::needless_range_loop)]

use dinoflow_pretrain::loss::{
    Center, STUDENT_TEMP, dino_loss, ibot_loss, koleo_loss, sinkhorn_knopp,
};
use dinoflow_pretrain::masking::{BlockMasker, batch_masks};
use dinoflow_pretrain::optim::{AdamW, Param, clip_grad_norm, ema_update};
use dinoflow_pretrain::schedule::{CosineSchedule, OFFICIAL_EPOCH_LENGTH, scaled_lr};
use dinoflow_pretrain::{DinoHead, HeadConfig};
use dinoflow_vision::tch::{Device, Kind, Tensor, nn};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn t(rows: &[&[f64]]) -> Tensor {
    let flat: Vec<f32> = rows
        .iter()
        .flat_map(|r| r.iter().map(|&x| x as f32))
        .collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, rows[0].len() as i64])
}

fn tch_seed(seed: i64) {
    dinoflow_vision::tch::manual_seed(seed);
}

fn value(x: &Tensor) -> f64 {
    x.double_value(&[])
}

fn close(a: f64, b: f64, tol: f64) {
    assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{a} vs {b}");
}

fn softmax(row: &[f64], temp: f64) -> Vec<f64> {
    let m = row.iter().cloned().fold(f64::MIN, f64::max);
    let e: Vec<f64> = row.iter().map(|x| ((x - m) / temp).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

fn log_softmax(row: &[f64], temp: f64) -> Vec<f64> {
    softmax(row, temp).iter().map(|p| p.ln()).collect()
}

#[test]
fn head_names_shapes_and_bounded_logits() {
    let vs = nn::VarStore::new(Device::Cpu);
    let config = HeadConfig {
        prototypes: 50,
        hidden_dim: 32,
        bottleneck_dim: 8,
        layers: 3,
    };
    let head = DinoHead::new(&(vs.root() / "dino_head"), 16, &config).unwrap();
    let mut names: Vec<String> = vs.variables().into_keys().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "dino_head.last_layer.weight_g",
            "dino_head.last_layer.weight_v",
            "dino_head.mlp.0.bias",
            "dino_head.mlp.0.weight",
            "dino_head.mlp.2.bias",
            "dino_head.mlp.2.weight",
            "dino_head.mlp.4.bias",
            "dino_head.mlp.4.weight",
        ]
    );
    let x = Tensor::randn([6, 16], (Kind::Float, Device::Cpu)) * 10.0;
    let logits = head.forward(&x);
    assert_eq!(logits.size(), [6, 50]);
    // Unit bottleneck times prototypes of norm g = 1: every logit is a cosine.
    assert!(value(&logits.abs().max()) <= 1.0 + 1e-5);
    let norms = head
        .prototypes()
        .norm_scalaropt_dim(2, [1i64].as_slice(), false);
    close(value(&norms.min()), 1.0, 1e-5);
    close(value(&norms.max()), 1.0, 1e-5);
    assert!(
        DinoHead::new(
            &vs.root(),
            16,
            &HeadConfig {
                layers: 0,
                ..config
            }
        )
        .is_err()
    );
}

#[test]
fn centered_teacher_targets_and_center_update() {
    let logits = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]];
    let teacher = t(&[&logits[0], &logits[1]]);
    let mut center = Center::new(3, 0.9, Device::Cpu);
    center.set_value(t(&[&[0.5, -0.5, 1.0]]));
    let targets = center.targets(&teacher, 0.04);
    for (r, row) in logits.iter().enumerate() {
        let shifted: Vec<f64> = row
            .iter()
            .zip([0.5, -0.5, 1.0])
            .map(|(a, c)| a - c)
            .collect();
        for (k, p) in softmax(&shifted, 0.04).iter().enumerate() {
            close(targets.double_value(&[r as i64, k as i64]), *p, 1e-5);
        }
    }
    center.update(&teacher);
    for (k, c) in [0.5, -0.5, 1.0].iter().enumerate() {
        let mean = (logits[0][k] + logits[1][k]) / 2.0;
        close(
            center.value().double_value(&[0, k as i64]),
            0.9 * c + 0.1 * mean,
            1e-6,
        );
    }
}

#[test]
fn sinkhorn_knopp_matches_the_loop_and_balances_prototypes() {
    let logits = [
        [0.9, -0.2, 0.4, 0.1],
        [0.3, 0.8, -0.5, 0.0],
        [-0.1, 0.2, 0.7, 0.6],
    ];
    let q = sinkhorn_knopp(&t(&[&logits[0], &logits[1], &logits[2]]), 0.05, 3);
    // The same algorithm written out: Q is K × N.
    let (n, k) = (3usize, 4usize);
    let mut m = vec![vec![0.0f64; n]; k];
    for (i, row) in logits.iter().enumerate() {
        for (j, x) in row.iter().enumerate() {
            m[j][i] = (x / 0.05).exp();
        }
    }
    let total: f64 = m.iter().flatten().sum();
    m.iter_mut().flatten().for_each(|x| *x /= total);
    for _ in 0..3 {
        for row in m.iter_mut() {
            let s: f64 = row.iter().sum();
            row.iter_mut().for_each(|x| *x /= s * k as f64);
        }
        for i in 0..n {
            let s: f64 = (0..k).map(|j| m[j][i]).sum();
            (0..k).for_each(|j| m[j][i] /= s * n as f64);
        }
    }
    for i in 0..n {
        for j in 0..k {
            close(
                q.double_value(&[i as i64, j as i64]),
                m[j][i] * n as f64,
                1e-4,
            );
        }
        close(value(&q.get(i as i64).sum(Kind::Float)), 1.0, 1e-5);
    }
    // On a larger batch, skewed towards the first prototypes, the prototype marginals move close
    // to N / K where a plain softmax leaves them far off.
    tch_seed(3);
    let skew = Tensor::linspace(0.5, -0.5, 16, (Kind::Float, Device::Cpu));
    let big = Tensor::randn([256, 16], (Kind::Float, Device::Cpu)) * 0.1 + skew;
    let imbalance = |q: &Tensor| {
        let m = q.sum_dim_intlist([0i64].as_slice(), false, Kind::Float) / (256.0 / 16.0);
        value(&(m - 1.0).abs().max())
    };
    let plain = imbalance(&(&big / 0.07).softmax(-1, Kind::Float));
    let balanced = imbalance(&sinkhorn_knopp(&big, 0.07, 3));
    eprintln!("prototype marginal error: softmax {plain:.3}, Sinkhorn-Knopp {balanced:.3}");
    assert!(plain > 1.0 && balanced < 0.1, "{plain} {balanced}");
}

#[test]
fn dino_loss_sums_cross_entropies_over_chunk_pairs() {
    let s1 = [[0.2, -0.1, 0.4], [0.0, 0.3, -0.2]];
    let s2 = [[-0.3, 0.1, 0.05], [0.25, 0.25, -0.1]];
    let t1 = [[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]];
    let t2 = [[0.1, 0.1, 0.8], [0.3, 0.3, 0.4]];
    let loss = dino_loss(
        &[t(&[&s1[0], &s1[1]]), t(&[&s2[0], &s2[1]])],
        &[t(&[&t1[0], &t1[1]]), t(&[&t2[0], &t2[1]])],
    )
    .unwrap();
    let mut expected = 0.0;
    for s in [s1, s2] {
        for tt in [t1, t2] {
            let mut ce = 0.0;
            for r in 0..2 {
                let lp = log_softmax(&s[r], STUDENT_TEMP);
                ce -= (0..3).map(|k| tt[r][k] * lp[k]).sum::<f64>();
            }
            expected += ce / 2.0;
        }
    }
    close(value(&loss), expected, 1e-5);
    assert!(dino_loss(&[t(&[&s1[0]])], &[t(&[&t1[0], &t1[1]])]).is_err());
}

#[test]
fn ibot_loss_weights_patches_by_their_crop() {
    let s = [[0.1, 0.4], [0.3, -0.2], [0.0, 0.5]];
    let tt = [[0.7, 0.3], [0.2, 0.8], [0.5, 0.5]];
    let w = [0.5f32, 0.5, 1.0];
    let loss = ibot_loss(
        &t(&[&s[0], &s[1], &s[2]]),
        &t(&[&tt[0], &tt[1], &tt[2]]),
        &Tensor::from_slice(&w),
        4,
    )
    .unwrap();
    let mut expected = 0.0;
    for p in 0..3 {
        let lp = log_softmax(&s[p], STUDENT_TEMP);
        expected -= w[p] as f64 * (0..2).map(|k| tt[p][k] * lp[k]).sum::<f64>();
    }
    close(value(&loss), expected / 4.0, 1e-5);
    assert!(ibot_loss(&t(&[&s[0]]), &t(&[&tt[0]]), &Tensor::from_slice(&w), 4).is_err());
}

#[test]
fn koleo_uses_each_points_nearest_neighbour() {
    // After normalisation: a = (1, 0), b = (0.6, 0.8), c = (0, 1) (c given at length 2).
    let x = t(&[&[1.0, 0.0], &[0.6, 0.8], &[0.0, 2.0]]);
    let loss = koleo_loss(&x).unwrap();
    let d = |p: [f64; 2], q: [f64; 2]| {
        ((p[0] - q[0] + 1e-8).powi(2) + (p[1] - q[1] + 1e-8).powi(2)).sqrt()
    };
    let (a, b, c) = ([1.0, 0.0], [0.6, 0.8], [0.0, 1.0]);
    // Nearest by inner product: a → b (0.6), b → c (0.8), c → b (0.8).
    let expected = -((d(a, b) + 1e-8).ln() + (d(b, c) + 1e-8).ln() + (d(c, b) + 1e-8).ln()) / 3.0;
    close(value(&loss), expected, 1e-5);
    assert!(koleo_loss(&t(&[&[1.0, 0.0]])).is_err());
}

#[test]
fn block_masks_reach_their_target_without_exceeding_it() {
    let masker = BlockMasker::new(16, 16, 128);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut reached = 0.0;
    for target in [26usize, 50, 77, 100, 128] {
        for _ in 0..50 {
            let n = masker.mask(target, &mut rng).iter().filter(|&&m| m).count();
            assert!(n <= target, "{n} > {target}");
            reached += n as f64 / target as f64 / 250.0;
        }
    }
    assert!(
        reached > 0.9,
        "masks reach {reached:.3} of their target on average"
    );
    assert_eq!(masker.mask(0, &mut rng).iter().filter(|&&m| m).count(), 0);
}

#[test]
fn batch_masks_cover_the_ratio_range_on_half_the_crops() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let crops = 64;
    let batch = batch_masks(crops, 16, 0.5, (0.1, 0.5), &mut rng).unwrap();
    assert_eq!(batch.masks.len(), crops);
    let mut counts: Vec<usize> = batch
        .masks
        .iter()
        .map(|m| m.iter().filter(|&&x| x).count())
        .collect();
    assert_eq!(counts.iter().filter(|&&c| c == 0).count(), crops / 2);
    counts.sort_unstable();
    let masked = &counts[crops / 2..];
    // Bin i of 32 targets ⌊256 · U(0.1 + 0.4 i/32, 0.1 + 0.4 (i+1)/32)⌋ patches.
    assert!(masked[0] <= (256.0 * (0.1 + 0.4 / 32.0)) as usize);
    assert!(*masked.last().unwrap() >= (256.0 * 0.4) as usize);
    let expected_bound: usize = (1..=32)
        .map(|i| (256.0 * (0.1 + 0.4 * i as f64 / 32.0)) as usize)
        .sum();
    assert_eq!(batch.upper_bound, expected_bound);
    let total: usize = counts.iter().sum();
    assert!(total <= batch.upper_bound);
    let weights = batch.weights();
    assert_eq!(weights.len(), total);
    close(
        weights.iter().map(|&w| w as f64).sum(),
        (crops / 2) as f64,
        1e-4,
    );
    assert_eq!(batch.indices().len(), total);
    assert!(batch_masks(4, 16, 1.5, (0.1, 0.5), &mut rng).is_err());
}

#[test]
fn schedules_at_chosen_iterations() {
    // lr: warm-up 0 → base over 10, then cosine to 1e-6 over 90.
    let lr = CosineSchedule::new(4e-3, 1e-6, 100, 10, 0.0, 0);
    close(lr.at(0), 0.0, 1e-12);
    close(lr.at(9), 4e-3, 1e-12);
    close(lr.at(10), 4e-3, 1e-12);
    close(lr.at(55), 1e-6 + 0.5 * (4e-3 - 1e-6), 1e-9);
    assert!(lr.at(99) < 1e-5 && lr.at(99) > 1e-6);
    close(lr.at(100), 1e-6, 1e-12);
    // Teacher temperature: 0.04 → 0.07 linearly over 30 epochs, then 0.07.
    let warm = 30 * OFFICIAL_EPOCH_LENGTH;
    let temp = CosineSchedule::new(0.07, 0.07, warm, warm, 0.04, 0);
    close(temp.at(0), 0.04, 1e-12);
    close(
        temp.at((warm - 1) / 2),
        0.04 + 0.03 * ((warm - 1) / 2) as f64 / (warm - 1) as f64,
        1e-12,
    );
    close(temp.at(warm + 5), 0.07, 1e-12);
    // Momentum 0.992 → 1 over the run; weight decay 0.04 → 0.4.
    let momentum = CosineSchedule::new(0.992, 1.0, 1000, 0, 0.0, 0);
    close(momentum.at(0), 0.992, 1e-12);
    close(momentum.at(500), 0.996, 1e-12);
    let wd = CosineSchedule::new(0.04, 0.4, 1000, 0, 0.0, 0);
    close(wd.at(500), 0.22, 1e-12);
    // Prototypes frozen for the first epoch.
    let mut last = CosineSchedule::new(4e-3, 1e-6, 3000, 100, 0.0, 0);
    last.zero_first(OFFICIAL_EPOCH_LENGTH);
    assert_eq!(last.at(OFFICIAL_EPOCH_LENGTH - 1), 0.0);
    assert!(last.at(OFFICIAL_EPOCH_LENGTH) > 0.0);
    let frozen = CosineSchedule::new(1.0, 1.0, 20, 0, 0.0, 5);
    assert_eq!((frozen.at(4), frozen.at(5)), (0.0, 1.0));
    close(scaled_lr(4e-3, 256), 2e-3, 1e-12);
}

fn param(name: &str) -> Param {
    Param::new(
        name,
        Tensor::zeros([1], (Kind::Float, Device::Cpu)),
        12,
        0.9,
        0.2,
    )
}

#[test]
fn parameter_multipliers_follow_dinov2() {
    let cases = [
        (
            "backbone.patch_embed.proj.weight",
            0.9f64.powi(13) * 0.2,
            1.0,
            false,
        ),
        (
            "backbone.patch_embed.proj.bias",
            0.9f64.powi(13) * 0.2,
            0.0,
            false,
        ),
        ("backbone.cls_token", 0.9f64.powi(13), 1.0, false),
        ("backbone.pos_embed", 0.9f64.powi(13), 1.0, false),
        (
            "backbone.blocks.0.attn.qkv.weight",
            0.9f64.powi(12),
            1.0,
            false,
        ),
        ("backbone.blocks.11.mlp.fc2.weight", 0.9, 1.0, false),
        ("backbone.blocks.3.norm1.weight", 0.9f64.powi(9), 0.0, false),
        ("backbone.blocks.3.ls1.gamma", 0.9f64.powi(9), 0.0, false),
        ("backbone.norm.weight", 1.0, 0.0, false),
        ("dino_head.mlp.0.weight", 1.0, 1.0, false),
        ("dino_head.last_layer.weight_g", 1.0, 1.0, true),
    ];
    for (name, lr, wd, last) in cases {
        let p = param(name);
        close(p.lr_multiplier, lr, 1e-12);
        assert_eq!((p.wd_multiplier, p.is_last_layer), (wd, last), "{name}");
    }
}

#[test]
fn adamw_matches_the_update_written_out() {
    let mut w = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
    let params = vec![Param {
        name: "w".into(),
        tensor: w.shallow_clone(),
        lr_multiplier: 0.5,
        wd_multiplier: 1.0,
        is_last_layer: false,
    }];
    let mut opt = AdamW::new(&params);
    let (lr, wd) = (0.1, 0.04);
    let (mut p, mut m, mut v) = ([1.0f64, -2.0], [0.0f64; 2], [0.0f64; 2]);
    for step in 1..=3 {
        w.zero_grad();
        let loss = (&w * &w * 3.0).sum(Kind::Float); // gradient 6w
        loss.backward();
        opt.step(&params, lr, 0.0, wd).unwrap();
        let lr_p = lr * 0.5;
        for i in 0..2 {
            let g = 6.0 * p[i];
            p[i] *= 1.0 - lr_p * wd;
            m[i] = 0.9 * m[i] + 0.1 * g;
            v[i] = 0.999 * v[i] + 0.001 * g * g;
            let mhat = m[i] / (1.0 - 0.9f64.powi(step));
            let denom = v[i].sqrt() / (1.0 - 0.999f64.powi(step)).sqrt() + 1e-8;
            p[i] -= lr_p * mhat / denom;
        }
        for (i, expected) in p.iter().enumerate() {
            close(w.double_value(&[i as i64]), *expected, 1e-6);
        }
    }
}

#[test]
fn clipping_and_ema() {
    let a = Tensor::from_slice(&[3.0f32]).set_requires_grad(true);
    let b = Tensor::from_slice(&[4.0f32]).set_requires_grad(true);
    ((&a * 1.0).sum(Kind::Float) * 3.0 + (&b * 1.0).sum(Kind::Float) * 4.0).backward();
    let pa = Param::new("backbone.x", a.shallow_clone(), 1, 1.0, 1.0);
    let pb = Param::new("backbone.y", b.shallow_clone(), 1, 1.0, 1.0);
    let norm = clip_grad_norm(&[&pa, &pb], 1.0);
    close(norm, 5.0, 1e-6);
    close(a.grad().double_value(&[0]), 3.0 / (5.0 + 1e-6), 1e-6);
    close(b.grad().double_value(&[0]), 4.0 / (5.0 + 1e-6), 1e-6);
    assert!((clip_grad_norm(&[&pa, &pb], 10.0) - 1.0).abs() < 1e-5);

    let teacher = [Tensor::from_slice(&[1.0f32, 2.0])];
    let student = [Tensor::from_slice(&[3.0f32, 0.0])];
    ema_update(&teacher, &student, 0.99).unwrap();
    close(teacher[0].double_value(&[0]), 0.99 + 0.03, 1e-6);
    close(teacher[0].double_value(&[1]), 1.98, 1e-6);
}
