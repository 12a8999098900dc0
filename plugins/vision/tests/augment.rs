//! Tests of the DINOv2 multi-crop augmentations (`dinoflow_vision::augment`).

use dinoflow_vision::augment::{
    AugmentError, BlurBehaviour, CropBox, CropParams, CropSpec, ImageParams, JitterFactors,
    JitterOp, MultiCropConfig, adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation,
    apply_crop, augment_crop, denormalize, gaussian_blur, multi_crop, rgb_to_grayscale,
    sample_boxes, sample_crop_params, sample_multi_crop_params, solarize,
};
use tch::{Device, Kind, Tensor};

fn rand_images(shape: [i64; 4], kind: Kind) -> Tensor {
    Tensor::rand(shape, (kind, Device::Cpu))
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// A crop spec that takes the whole (square) image and does nothing else.
fn whole_image(size: u32) -> CropSpec {
    CropSpec {
        ratio: (1.0, 1.0),
        ..CropSpec::crop_only(size, (1.0, 1.0))
    }
}

/// Parameters for `n` whole-image crops of a `side × side` image with the given extras.
fn whole_params(n: usize, side: i64, jitter: Option<JitterFactors>) -> CropParams {
    CropParams {
        jitter_order: [
            JitterOp::Brightness,
            JitterOp::Contrast,
            JitterOp::Saturation,
            JitterOp::Hue,
        ],
        images: (0..n)
            .map(|_| ImageParams {
                crop: CropBox {
                    top: 0,
                    left: 0,
                    height: side,
                    width: side,
                },
                flip: false,
                jitter,
                grayscale: false,
                blur_sigma: None,
                solarize: false,
            })
            .collect(),
    }
}

#[test]
fn shapes_dtype_and_device_for_one_and_three_channels() {
    for c in [1i64, 3] {
        let images = rand_images([5, c, 96, 128], Kind::Float);
        let out = multi_crop(&images, &MultiCropConfig::dinov2(), 7).unwrap();
        assert_eq!(out.global.size(), vec![10, c, 224, 224], "global, C={c}");
        assert_eq!(out.local.size(), vec![40, c, 98, 98], "local, C={c}");
        for t in [&out.global, &out.local] {
            assert_eq!(t.kind(), Kind::Float);
            assert_eq!(t.device(), Device::Cpu);
        }
        assert_eq!(out.params.global[0].images.len(), 5);
        assert_eq!(out.params.local.images.len(), 40);
    }
    // The 28 px preset on 32 px images, in double precision.
    let images = rand_images([5, 3, 32, 32], Kind::Double);
    let out = multi_crop(&images, &MultiCropConfig::small_28(), 1).unwrap();
    assert_eq!(out.global.size(), vec![10, 3, 28, 28]);
    assert_eq!(out.local.size(), vec![40, 3, 12, 12]);
    assert_eq!(out.global.kind(), Kind::Double);
    assert_eq!(out.local.kind(), Kind::Double);
    // Half precision in, half precision out (computed in f32 internally).
    let half = rand_images([5, 1, 32, 32], Kind::Half);
    let out = multi_crop(&half, &MultiCropConfig::small_28(), 1).unwrap();
    assert_eq!(
        (out.global.kind(), out.local.kind()),
        (Kind::Half, Kind::Half)
    );
    assert_eq!(out.local.size(), vec![40, 1, 12, 12]);
    // No local crops gives an empty local tensor of the right shape.
    let out = multi_crop(&images, &MultiCropConfig::small_28().with_n_local(0), 1).unwrap();
    assert_eq!(out.local.size(), vec![0, 3, 12, 12]);
}

#[test]
fn denormalised_outputs_lie_in_unit_range() {
    let config = MultiCropConfig::small_28();
    for c in [1i64, 3] {
        let images = rand_images([6, c, 40, 36], Kind::Float);
        let out = multi_crop(&images, &config, 3).unwrap();
        let (mean, std) = config.normalization(c);
        for t in [&out.global, &out.local] {
            let x = denormalize(t, &mean, &std).unwrap();
            let (lo, hi) = (x.min().double_value(&[]), x.max().double_value(&[]));
            assert!(lo >= -1e-5 && hi <= 1.0 + 1e-5, "C={c}: range [{lo}, {hi}]");
        }
    }
    // 1-channel normalisation uses the mean of the ImageNet statistics.
    let (m1, s1) = config.normalization(1);
    assert!((m1[0] - (0.485 + 0.456 + 0.406) / 3.0).abs() < 1e-12);
    assert!((s1[0] - (0.229 + 0.224 + 0.225) / 3.0).abs() < 1e-12);
}

#[test]
fn same_seed_is_bit_identical_and_different_seeds_differ() {
    let images = rand_images([4, 3, 48, 48], Kind::Float);
    let config = MultiCropConfig::small_28();
    let a = multi_crop(&images, &config, 42).unwrap();
    let b = multi_crop(&images, &config, 42).unwrap();
    let c = multi_crop(&images, &config, 43).unwrap();
    assert!(a.global.equal(&b.global) && a.local.equal(&b.local));
    assert_eq!(a.params, b.params);
    assert!(!a.global.equal(&c.global) && !a.local.equal(&c.local));
    assert_ne!(a.params, c.params);
}

#[test]
fn crop_boxes_follow_torchvision_statistics() {
    let (h, w) = (224i64, 224i64);
    let ratio = (3.0 / 4.0, 4.0 / 3.0);
    // Expected mean area fractions of torchvision's algorithm on a square image (10^6-sample
    // Python simulation of `get_params`): 0.601 for (0.32, 1), below the uniform mean 0.66
    // because large boxes with a non-square ratio do not fit and are re-drawn; 0.185 for
    // (0.05, 0.32), where every box fits.
    for (scale, expected_mean, seed) in [((0.32, 1.0), 0.601, 1u64), ((0.05, 0.32), 0.185, 2)] {
        let boxes = sample_boxes(h, w, 4000, scale, ratio, seed).unwrap();
        assert_eq!(boxes.len(), 4000);
        let area = (h * w) as f64;
        let mut sum = 0.0;
        for b in &boxes {
            assert!(
                b.top >= 0 && b.left >= 0 && b.height >= 1 && b.width >= 1,
                "{b:?}"
            );
            assert!(
                b.top + b.height <= h && b.left + b.width <= w,
                "{b:?} outside the image"
            );
            let (bh, bw) = (b.height as f64, b.width as f64);
            // Width and height are rounded to whole pixels: allow ±0.5 px on each.
            assert!(
                (bw + 0.5) * (bh + 0.5) / area >= scale.0,
                "{b:?} area below {scale:?}"
            );
            assert!(
                (bw - 0.5) * (bh - 0.5) / area <= scale.1,
                "{b:?} area above {scale:?}"
            );
            assert!(
                (bw + 0.5) / (bh - 0.5) >= ratio.0,
                "{b:?} ratio below range"
            );
            assert!(
                (bw - 0.5) / (bh + 0.5) <= ratio.1,
                "{b:?} ratio above range"
            );
            sum += bh * bw / area;
        }
        let mean = sum / boxes.len() as f64;
        assert!(
            (mean - expected_mean).abs() < 0.015,
            "scale {scale:?}: mean area {mean}"
        );
    }
    // The fallback centre crop: a whole-image square crop cannot fit a 100×50 image, so all 10
    // attempts fail and the centre crop is clamped to the ratio range (50×50 at row 25).
    let boxes = sample_boxes(100, 50, 20, (1.0, 1.0), (1.0, 1.0), 3).unwrap();
    for b in boxes {
        assert_eq!(
            b,
            CropBox {
                top: 25,
                left: 0,
                height: 50,
                width: 50
            }
        );
    }
}

#[test]
fn flip_probability_one_mirrors_and_zero_keeps_the_image() {
    let images = rand_images([3, 3, 32, 32], Kind::Float);
    let flipped = augment_crop(
        &images,
        &CropSpec {
            flip_p: 1.0,
            ..whole_image(32)
        },
        5,
    )
    .unwrap();
    let diff = max_abs_diff(&flipped, &images.flip([3]));
    assert!(diff < 1e-5, "flip_p = 1: max diff {diff}");
    let kept = augment_crop(&images, &whole_image(32), 5).unwrap();
    let diff = max_abs_diff(&kept, &images);
    assert!(diff < 1e-5, "flip_p = 0: max diff {diff}");
    assert!(
        max_abs_diff(&flipped, &images) > 0.1,
        "the flip must change a noise image"
    );
}

#[test]
fn grayscale_probability_one_makes_channels_equal() {
    let images = rand_images([4, 3, 32, 32], Kind::Float);
    let out = augment_crop(
        &images,
        &CropSpec {
            grayscale_p: 1.0,
            ..whole_image(32)
        },
        9,
    )
    .unwrap();
    assert_eq!(out.size(), vec![4, 3, 32, 32]);
    assert!(out.select(1, 0).equal(&out.select(1, 1)));
    assert!(out.select(1, 0).equal(&out.select(1, 2)));
    // The luma weights: pure red, green and blue pixels.
    let rgb =
        Tensor::from_slice(&[1.0f32, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]).view([3, 3, 1, 1]);
    let gray = rgb_to_grayscale(&rgb).unwrap().view([3]);
    let expected = Tensor::from_slice(&[0.299f32, 0.587, 0.114]);
    assert!(max_abs_diff(&gray, &expected) < 1e-6);
}

#[test]
fn solarize_inverts_values_above_the_threshold() {
    // A ramp k / 31, k = 0..31, along the width; threshold 128/255 ≈ 0.502 lies between 15/31
    // and 16/31.
    let ramp = Tensor::arange(32, (Kind::Float, Device::Cpu)) / 31.0;
    let images = ramp
        .view([1, 1, 1, 32])
        .expand([2, 3, 32, 32], false)
        .contiguous();
    let expected_row: Vec<f32> = (0..32)
        .map(|k| {
            let x = k as f32 / 31.0;
            if k >= 16 { 1.0 - x } else { x }
        })
        .collect();
    let expected = Tensor::from_slice(&expected_row)
        .view([1, 1, 1, 32])
        .expand([2, 3, 32, 32], false);
    let direct = solarize(&images, 128.0 / 255.0).unwrap();
    assert!(max_abs_diff(&direct, &expected) < 1e-7);
    let spec = CropSpec {
        solarize_p: 1.0,
        ..whole_image(32)
    };
    let out = augment_crop(&images, &spec, 1).unwrap();
    let diff = max_abs_diff(&out, &expected);
    assert!(diff < 1e-5, "solarize_p = 1: max diff {diff}");
}

#[test]
fn blur_reduces_variance_and_preserves_mean() {
    let images = rand_images([2, 3, 64, 64], Kind::Float);
    let spec = CropSpec {
        blur_p: 1.0,
        blur_sigma: (1.0, 2.0),
        ..whole_image(64)
    };
    let out = augment_crop(&images, &spec, 11).unwrap();
    let params = sample_crop_params(&spec, 2, 1, 64, 64, 11).unwrap();
    for p in &params.images {
        let s = p.blur_sigma.expect("blur_p = 1 blurs every image");
        assert!((1.0..2.0).contains(&s));
    }
    let (v_in, v_out) = (
        images.var(true).double_value(&[]),
        out.var(true).double_value(&[]),
    );
    assert!(v_out < 0.5 * v_in, "variance {v_in} -> {v_out}");
    let (m_in, m_out) = (
        images.mean(Kind::Float).double_value(&[]),
        out.mean(Kind::Float).double_value(&[]),
    );
    assert!((m_in - m_out).abs() < 0.01, "mean {m_in} -> {m_out}");
}

#[test]
fn blur_kernel_matches_a_hand_computed_gaussian() {
    // A unit impulse at the centre of a 21×21 image blurred with σ = 1 gives the outer product of
    // the normalised 9-tap kernel exp(−x²/2), x = −4..4.
    let mut img = vec![0f32; 21 * 21];
    img[10 * 21 + 10] = 1.0;
    let images = Tensor::from_slice(&img).view([1, 1, 21, 21]);
    let out = gaussian_blur(&images, &[1.0], 9).unwrap();
    let taps: Vec<f64> = (-4..=4)
        .map(|x: i32| (-0.5 * f64::from(x * x)).exp())
        .collect();
    let sum: f64 = taps.iter().sum();
    for (dy, ty) in (-4i64..=4).zip(&taps) {
        for (dx, tx) in (-4i64..=4).zip(&taps) {
            let got = out.double_value(&[0, 0, 10 + dy, 10 + dx]);
            let want = ty * tx / (sum * sum);
            assert!((got - want).abs() < 1e-6, "({dy}, {dx}): {got} vs {want}");
        }
    }
    assert_eq!(
        out.double_value(&[0, 0, 10, 15]),
        0.0,
        "outside the 9-tap support"
    );
    // Per-image sigmas: a constant image stays constant, σ = 0.1 is (almost) the identity.
    let flat = Tensor::full([2, 3, 16, 16], 0.25, (Kind::Float, Device::Cpu));
    assert!(max_abs_diff(&gaussian_blur(&flat, &[0.5, 2.0], 9).unwrap(), &flat) < 1e-6);
    let noise = rand_images([2, 3, 16, 16], Kind::Float);
    let out = gaussian_blur(&noise, &[0.1, 2.0], 9).unwrap();
    assert!(max_abs_diff(&out.get(0), &noise.get(0)) < 1e-6);
    assert!(max_abs_diff(&out.get(1), &noise.get(1)) > 0.05);
}

#[test]
fn colour_jitter_ops_match_hand_computations() {
    let images = rand_images([2, 3, 8, 8], Kind::Float);
    // Brightness: clamp(x · f, 0, 1), one factor per image.
    let out = adjust_brightness(&images, &[1.3, 0.5]).unwrap();
    let want = Tensor::cat(
        &[
            (images.get(0) * 1.3).clamp(0.0, 1.0).unsqueeze(0),
            (images.get(1) * 0.5).unsqueeze(0),
        ],
        0,
    );
    assert!(max_abs_diff(&out, &want) < 1e-6);
    // The same through apply_crop with explicit parameters (contrast / saturation 1, hue 0).
    let jitter = JitterFactors {
        brightness: 1.3,
        contrast: 1.0,
        saturation: 1.0,
        hue: 0.0,
    };
    let out = apply_crop(&images, &whole_image(8), &whole_params(2, 8, Some(jitter))).unwrap();
    let want = (&images * 1.3).clamp(0.0, 1.0);
    let diff = max_abs_diff(&out, &want);
    assert!(diff < 1e-5, "apply_crop brightness: {diff}");
    // Contrast: blend with the mean luma.
    let out = adjust_contrast(&images, &[0.6, 1.4]).unwrap();
    for (i, f) in [(0i64, 0.6), (1, 1.4)] {
        let x = images.get(i);
        let luma = (x.get(0) * 0.299 + x.get(1) * 0.587 + x.get(2) * 0.114).mean(Kind::Float);
        let want = (&x * f + luma * (1.0 - f)).clamp(0.0, 1.0);
        assert!(max_abs_diff(&out.get(i), &want) < 1e-6);
    }
    // Saturation 0 gives the grayscale image; 1-channel images are unchanged.
    let out = adjust_saturation(&images, &[0.0, 0.0]).unwrap();
    let gray = rgb_to_grayscale(&images)
        .unwrap()
        .expand([2, 3, 8, 8], false);
    assert!(max_abs_diff(&out, &gray) < 1e-6);
    let one = rand_images([2, 1, 8, 8], Kind::Float);
    assert!(adjust_saturation(&one, &[0.0, 2.0]).unwrap().equal(&one));
    assert!(adjust_hue(&one, &[0.3, -0.3]).unwrap().equal(&one));
    // Hue: +1/3 of the circle takes red to green, −1/3 takes red to blue; shift 0 round-trips.
    let red = Tensor::from_slice(&[1.0f32, 0.2, 0.0, 0.5, 0.0, 0.9]).view([1, 3, 1, 2]);
    let red = Tensor::cat(&[&red, &red, &red], 0);
    let out = adjust_hue(&red, &[1.0 / 3.0, -1.0 / 3.0, 0.0]).unwrap();
    let px = |i: i64| -> Vec<f64> { (0..3).map(|c| out.double_value(&[i, c, 0, 0])).collect() };
    let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
    assert!(close(&px(0), &[0.0, 1.0, 0.0]), "red + 1/3 = {:?}", px(0));
    assert!(close(&px(1), &[0.0, 0.0, 1.0]), "red - 1/3 = {:?}", px(1));
    assert!(
        max_abs_diff(&out.get(2), &red.get(2)) < 1e-6,
        "hue 0 round trip"
    );
}

#[test]
fn as_released_blur_inverts_the_probabilities() {
    let n = 4000usize;
    let frac = |p: &CropParams, f: fn(&ImageParams) -> bool| {
        p.images.iter().filter(|ip| f(ip)).count() as f64 / p.images.len() as f64
    };
    let blurred = |ip: &ImageParams| ip.blur_sigma.is_some();
    let solarized = |ip: &ImageParams| ip.solarize;

    let released = MultiCropConfig::dinov2().with_blur(BlurBehaviour::AsReleased);
    let p = sample_multi_crop_params(&released, n, 224, 224, 17).unwrap();
    assert_eq!(
        frac(&p.global[0], blurred),
        0.0,
        "global 1 is never blurred as released"
    );
    let g2 = frac(&p.global[1], blurred);
    assert!((g2 - 0.9).abs() < 0.02, "global 2 blurred {g2}");
    let loc = frac(&p.local, blurred);
    assert!((loc - 0.5).abs() < 0.02, "local blurred {loc}");
    assert_eq!(p.local.images.len(), 8 * n);

    let intended = MultiCropConfig::dinov2();
    assert_eq!(
        intended.blur,
        BlurBehaviour::Intended,
        "the default follows the paper"
    );
    let p = sample_multi_crop_params(&intended, n, 224, 224, 17).unwrap();
    assert_eq!(
        frac(&p.global[0], blurred),
        1.0,
        "global 1 is always blurred as intended"
    );
    let g2 = frac(&p.global[1], blurred);
    assert!((g2 - 0.1).abs() < 0.02, "global 2 blurred {g2}");
    let sol = frac(&p.global[1], solarized);
    assert!((sol - 0.2).abs() < 0.02, "global 2 solarised {sol}");
    assert_eq!(frac(&p.global[0], solarized), 0.0);
    assert_eq!(frac(&p.local, solarized), 0.0);
    let jit = frac(&p.local, |ip| ip.jitter.is_some());
    assert!((jit - 0.8).abs() < 0.02, "local jittered {jit}");
    let gray = frac(&p.global[0], |ip| ip.grayscale);
    assert!((gray - 0.2).abs() < 0.02, "global 1 grayscale {gray}");
    let flip = frac(&p.local, |ip| ip.flip);
    assert!((flip - 0.5).abs() < 0.02, "local flipped {flip}");
    for ip in p.local.images.iter().filter_map(|ip| ip.jitter) {
        assert!((0.6..=1.4).contains(&ip.brightness) && (0.6..=1.4).contains(&ip.contrast));
        assert!((0.8..=1.2).contains(&ip.saturation) && (-0.1..=0.1).contains(&ip.hue));
    }
}

#[test]
fn outputs_are_crop_major() {
    // Image b is constant b / 10 and only geometry is applied, so output crop i must be
    // constant (i mod B) / 10: all images' crop 1, then all images' crop 2, and so on.
    let b = 4i64;
    let values: Vec<f32> = (0..b).map(|i| i as f32 / 10.0).collect();
    let images = Tensor::from_slice(&values)
        .view([b, 1, 1, 1])
        .expand([b, 3, 40, 40], false)
        .contiguous();
    let config = MultiCropConfig {
        global: [
            CropSpec::crop_only(28, (0.32, 1.0)),
            CropSpec::crop_only(28, (0.32, 1.0)),
        ],
        local: CropSpec::crop_only(12, (0.05, 0.32)),
        n_local: 3,
        mean: [0.0; 3],
        std: [1.0; 3],
        ..MultiCropConfig::dinov2()
    };
    let out = multi_crop(&images, &config, 5).unwrap();
    for (t, n) in [(&out.global, 2 * b), (&out.local, 3 * b)] {
        assert_eq!(t.size()[0], n);
        for i in 0..n {
            let want = (i % b) as f64 / 10.0;
            let crop = t.get(i);
            let (lo, hi) = (crop.min().double_value(&[]), crop.max().double_value(&[]));
            assert!(
                (lo - want).abs() < 1e-5 && (hi - want).abs() < 1e-5,
                "crop {i}: [{lo}, {hi}]"
            );
        }
    }
}

#[test]
fn config_serde_defaults_and_unknown_fields() {
    let config: MultiCropConfig =
        serde_json::from_str(r#"{"n_local": 6, "blur": "as_released"}"#).unwrap();
    assert_eq!(config.n_local, 6);
    assert_eq!(config.blur, BlurBehaviour::AsReleased);
    assert_eq!(config.global, MultiCropConfig::dinov2().global);
    assert_eq!(MultiCropConfig::default(), MultiCropConfig::dinov2());
    let err = serde_json::from_str::<MultiCropConfig>(r#"{"n_locals": 6}"#).unwrap_err();
    assert!(err.to_string().contains("n_locals"), "{err}");
    let err = serde_json::from_str::<CropSpec>(r#"{"blur_prob": 0.5}"#).unwrap_err();
    assert!(err.to_string().contains("blur_prob"), "{err}");
    let schema = serde_json::to_string(&schemars::schema_for!(MultiCropConfig)).unwrap();
    assert!(schema.contains("as_released") && schema.contains("solarize_threshold"));
}

#[test]
fn bad_inputs_give_documented_errors() {
    let config = MultiCropConfig::small_28();
    let cpu = (Kind::Float, Device::Cpu);
    let err = multi_crop(&Tensor::rand([3, 32, 32], cpu), &config, 0).unwrap_err();
    assert!(
        matches!(err, AugmentError::WrongRank { rank: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("unsqueeze"), "{err}");
    let err = multi_crop(&Tensor::rand([2, 4, 32, 32], cpu), &config, 0).unwrap_err();
    assert!(
        matches!(err, AugmentError::BadChannels { channels: 4, .. }),
        "{err}"
    );
    let ints = Tensor::zeros([2, 3, 32, 32], (Kind::Uint8, Device::Cpu));
    let err = multi_crop(&ints, &config, 0).unwrap_err();
    assert!(
        matches!(err, AugmentError::NotFloat { kind: Kind::Uint8 }),
        "{err}"
    );
    assert!(err.to_string().contains("/ 255"), "{err}");
    let err = multi_crop(&Tensor::rand([0, 3, 32, 32], cpu), &config, 0).unwrap_err();
    assert!(matches!(err, AugmentError::EmptyBatch { .. }), "{err}");

    let images = Tensor::rand([2, 3, 32, 32], cpu);
    let invalid_field = |config: MultiCropConfig| match multi_crop(&images, &config, 0) {
        Err(AugmentError::InvalidConfig { field, message }) => (field, message),
        other => panic!("expected InvalidConfig, got {other:?}"),
    };
    let (field, message) = invalid_field(config.clone().with_scales((1.0, 0.32), (0.05, 0.32)));
    assert_eq!(field, "global[0].scale");
    assert!(message.contains("min ≤ max"), "{message}");
    let (field, _) = invalid_field(config.clone().with_sizes(28, 0));
    assert_eq!(field, "local.size");
    let mut bad = config.clone();
    bad.global[1].solarize_p = 1.5;
    let (field, message) = invalid_field(bad);
    assert_eq!(field, "global[1].solarize_p");
    assert!(message.contains("[0, 1]"), "{message}");
    let mut bad = config.clone();
    bad.local.ratio = (4.0 / 3.0, 3.0 / 4.0);
    assert_eq!(invalid_field(bad).0, "local.ratio");
    let mut bad = config.clone();
    bad.local.blur_kernel = 8;
    assert_eq!(invalid_field(bad).0, "local.blur_kernel");
    let mut bad = config.clone();
    bad.std[2] = 0.0;
    assert_eq!(invalid_field(bad).0, "std[2]");
    assert!(matches!(
        sample_boxes(32, 32, 4, (0.5, 0.1), (0.75, 1.33), 0),
        Err(AugmentError::InvalidConfig { .. })
    ));
    // Hand-built parameters that do not fit the images.
    let mut params = whole_params(2, 8, None);
    params.images[1].crop.width = 40;
    let err = apply_crop(&Tensor::rand([2, 3, 8, 8], cpu), &whole_image(8), &params).unwrap_err();
    assert!(matches!(err, AugmentError::InvalidParams(_)), "{err}");
}

#[test]
fn cuda_matches_cpu_when_available() {
    if !tch::Cuda::is_available() {
        eprintln!("skipped: no CUDA device");
        return;
    }
    let images = rand_images([3, 3, 64, 64], Kind::Float);
    let config = MultiCropConfig::small_28();
    let cpu = multi_crop(&images, &config, 21).unwrap();
    let gpu = multi_crop(&images.to_device(Device::Cuda(0)), &config, 21).unwrap();
    assert_eq!(gpu.global.device(), Device::Cuda(0));
    assert_eq!(cpu.params, gpu.params);
    let dg = max_abs_diff(&cpu.global, &gpu.global.to_device(Device::Cpu));
    let dl = max_abs_diff(&cpu.local, &gpu.local.to_device(Device::Cpu));
    assert!(
        dg < 1e-3 && dl < 1e-3,
        "CPU vs CUDA: global {dg}, local {dl}"
    );
}
