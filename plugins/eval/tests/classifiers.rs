//! The two classifiers on data whose answer is known: the linear probe separates a linearly
//! separable set, and on raw Fashion-MNIST pixels both reach the published raw-pixel accuracy
//! (about 84 % for a linear classifier, 85 % for k-NN) in seconds.

use std::io::Read;
use std::time::Instant;

use dinoflow_eval::linear::{ProbeInput, probe};
use dinoflow_eval::{LinearConfig, knn};
use dinoflow_vision::tch::{Device, Kind, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const FMNIST: &str = "/usr/share/datasets/fashion-mnist";

/// Rows `(count, 784)` of an IDX image file as floats in [0, 1], and the first `count` labels.
fn fashion_mnist(split: &str, count: usize) -> (Tensor, Tensor) {
    let read = |name: &str| {
        let file = std::fs::File::open(format!("{FMNIST}/{name}"))
            .unwrap_or_else(|e| panic!("{FMNIST}/{name}: {e} (run `make setup`)"));
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(file)
            .read_to_end(&mut bytes)
            .unwrap();
        bytes
    };
    let images = read(&format!("{split}-images-idx3-ubyte.gz"));
    let labels = read(&format!("{split}-labels-idx1-ubyte.gz"));
    let pixels = &images[16..16 + count * 784];
    let x = Tensor::from_slice(pixels)
        .view([count as i64, 784])
        .to_kind(Kind::Float)
        / 255.0;
    let y = Tensor::from_slice(&labels[8..8 + count]).to_kind(Kind::Int64);
    (x, y)
}

#[test]
fn probe_separates_a_linearly_separable_set() {
    // Points in 16-D labelled by the argmax of a fixed random linear map, keeping only those
    // with a margin: a linear head can classify all of them.
    let (dim, classes) = (16usize, 5usize);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let w: Vec<f32> = (0..dim * classes)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let mut points = Vec::new();
    let mut labels = Vec::new();
    while labels.len() < 4000 {
        let x: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut scores: Vec<(f32, i64)> = (0..classes)
            .map(|c| ((0..dim).map(|i| x[i] * w[i * classes + c]).sum(), c as i64))
            .collect();
        scores.sort_by(|a, b| b.0.total_cmp(&a.0));
        if scores[0].0 - scores[1].0 > 0.3 {
            points.extend(x);
            labels.push(scores[0].1);
        }
    }
    let x = Tensor::from_slice(&points).view([4000, dim as i64]);
    let y = Tensor::from_slice(&labels);
    let input = ProbeInput {
        layers: 1,
        avgpool: false,
        train: x.narrow(0, 0, 3000),
        test: x.narrow(0, 3000, 1000),
    };
    let config = LinearConfig::default();
    let result = probe(
        &[input],
        &y.narrow(0, 0, 3000),
        &y.narrow(0, 3000, 1000),
        classes as i64,
        &config,
        0,
    )
    .unwrap();
    assert!(result.top1 >= 0.99, "{result:?}");
    assert!(result.val_top1 >= 0.98, "{result:?}");
    assert!(config.learning_rates.contains(&result.lr));
}

#[test]
fn probe_picks_the_informative_input_and_reports_its_settings() {
    // Two inputs for the same rows: pure noise, and the noise plus a class signal. The head
    // chosen on the held-out rows must be one on the informative input.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let n = 1200usize;
    let labels: Vec<i64> = (0..n).map(|i| (i % 3) as i64).collect();
    let noise: Vec<f32> = (0..n * 8).map(|_| rng.random_range(-1.0..1.0)).collect();
    let mut signal = noise.clone();
    for (i, &l) in labels.iter().enumerate() {
        signal[i * 8 + l as usize] += 3.0;
    }
    let split = |v: &[f32]| {
        let t = Tensor::from_slice(v).view([n as i64, 8]);
        (t.narrow(0, 0, 1000), t.narrow(0, 1000, 200))
    };
    let (noise_train, noise_test) = split(&noise);
    let (signal_train, signal_test) = split(&signal);
    let inputs = [
        ProbeInput {
            layers: 1,
            avgpool: false,
            train: noise_train,
            test: noise_test,
        },
        ProbeInput {
            layers: 4,
            avgpool: true,
            train: signal_train,
            test: signal_test,
        },
    ];
    let y = Tensor::from_slice(&labels);
    let result = probe(
        &inputs,
        &y.narrow(0, 0, 1000),
        &y.narrow(0, 1000, 200),
        3,
        &LinearConfig::default(),
        5,
    )
    .unwrap();
    assert_eq!((result.layers, result.avgpool), (4, true), "{result:?}");
    assert!(result.top1 > 0.95, "{result:?}");
}

#[test]
fn raw_fashion_mnist_pixels_reach_the_published_baselines() {
    let (train_x, train_y) = fashion_mnist("train", 10_000);
    let (test_x, test_y) = fashion_mnist("t10k", 10_000);

    let started = Instant::now();
    let acc = knn::accuracies(&train_x, &train_y, &test_x, &test_y, 10, &[10, 20], 0.07).unwrap();
    let knn_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let input = ProbeInput {
        layers: 0,
        avgpool: false,
        train: train_x,
        test: test_x,
    };
    let linear = probe(&[input], &train_y, &test_y, 10, &LinearConfig::default(), 0).unwrap();
    let probe_s = started.elapsed().as_secs_f64();
    eprintln!(
        "raw pixels, 10k train / 10k test: kNN top-1 {acc:?} in {knn_s:.2} s; linear {linear:?} in \
         {probe_s:.2} s"
    );
    // Cosine k-NN on raw pixels: about 85 % with 60,000 train images, a little less with 10,000.
    assert!((0.80..=0.88).contains(&acc[1]), "kNN top-1 {acc:?}");
    // A linear classifier on raw pixels: about 84 % (Fashion-MNIST's benchmark table).
    assert!((0.80..=0.90).contains(&linear.top1), "{linear:?}");
    assert!(
        linear.val_top1 > 0.75 && linear.lr > 0.0,
        "chosen on held-out rows: {linear:?}"
    );
    assert!(knn_s < 30.0 && probe_s < 30.0, "{knn_s} s, {probe_s} s");
}

#[test]
fn knn_handles_an_empty_test_set_and_one_train_row() {
    let train = Tensor::ones([1, 4], (Kind::Float, Device::Cpu));
    let labels = Tensor::zeros([1], (Kind::Int64, Device::Cpu));
    let test = Tensor::zeros([0, 4], (Kind::Float, Device::Cpu));
    let empty = Tensor::zeros([0], (Kind::Int64, Device::Cpu));
    let acc = knn::accuracies(&train, &labels, &test, &empty, 1, &[20], 0.07).unwrap();
    assert_eq!(acc, vec![0.0]);
}
