//! k-means against faiss and planted clusters; hierarchical k-means and balanced sampling.

mod common;

use std::collections::{HashMap, HashSet};

use dinoflow_search::tch::{self, Kind, Tensor};
use dinoflow_search::{
    HierarchicalKMeansConfig, KMeansConfig, KMeansInit, SampleStrategy, SamplingOptions, allocate,
    balanced_cap, hierarchical_kmeans, hierarchical_sampling, kmeans,
};
use rand::SeedableRng;

/// `per` points around each of `centres` (rows of a tensor), spread `sigma`; with labels.
fn blobs(centres: &Tensor, per: i64, sigma: f64, seed: i64) -> (Tensor, Vec<i64>) {
    tch::manual_seed(seed);
    let (c, d) = (centres.size()[0], centres.size()[1]);
    let labels =
        Tensor::arange(c, (Kind::Int64, tch::Device::Cpu)).repeat_interleave_self_int(per, 0, None);
    let x = centres.index_select(0, &labels)
        + Tensor::randn([c * per, d], (Kind::Float, tch::Device::Cpu)) * sigma;
    (x, Vec::<i64>::try_from(&labels).unwrap())
}

fn assert_non_increasing(v: &[f64]) {
    for w in v.windows(2) {
        assert!(w[1] <= w[0] * (1.0 + 1e-6), "inertia went up: {v:?}");
    }
}

#[test]
fn kmeans_inertia_decreases_and_matches_faiss() {
    let x = common::load("kmeans_points");
    let facts = common::facts();
    let mut faiss: Vec<f64> = ["1", "2", "3"]
        .iter()
        .map(|s| facts["faiss_kmeans_inertia"][s].as_f64().unwrap())
        .collect();
    faiss.sort_by(f64::total_cmp);
    let faiss_median = faiss[1];
    for init in [KMeansInit::KMeansPlusPlus, KMeansInit::Random] {
        let mut ours = Vec::new();
        for seed in 1..=3 {
            let km = kmeans(
                &x,
                &KMeansConfig {
                    seed,
                    iterations: 20,
                    init: init.clone(),
                    ..KMeansConfig::with_k(50)
                },
            )
            .unwrap();
            assert_eq!(km.inertia.len(), 20);
            let mut all = km.inertia.clone();
            all.push(km.final_inertia);
            assert_non_increasing(&all);
            ours.push(km.final_inertia);
        }
        ours.sort_by(f64::total_cmp);
        eprintln!("{init:?}: ours {ours:?}, faiss {faiss:?}");
        assert!(
            ours[1] <= faiss_median * 1.01,
            "{init:?}: median inertia {} vs faiss {faiss_median}",
            ours[1]
        );
    }
}

#[test]
fn kmeans_recovers_planted_clusters() {
    tch::manual_seed(11);
    let centres = Tensor::randn([8, 16], (Kind::Float, tch::Device::Cpu)) * 10.0;
    let (x, labels) = blobs(&centres, 150, 0.5, 12);
    let km = kmeans(
        &x,
        &KMeansConfig {
            seed: 3,
            ..KMeansConfig::with_k(8)
        },
    )
    .unwrap();
    let assign = Vec::<i64>::try_from(&km.assignment).unwrap();
    let mut pairs: HashMap<i64, HashSet<i64>> = HashMap::new();
    for (a, l) in assign.iter().zip(&labels) {
        pairs.entry(*a).or_default().insert(*l);
    }
    assert_eq!(pairs.len(), 8, "some cluster is empty");
    assert!(
        pairs.values().all(|s| s.len() == 1),
        "a cluster mixes planted clusters"
    );
    // Centroids sit on the planted centres.
    let d = common::pairwise_sq(&km.centroids, &centres);
    let nearest = d.min_dim(1, false).0.sqrt().max().double_value(&[]);
    assert!(
        nearest < 0.5,
        "centroid {nearest} away from its planted centre"
    );
}

#[test]
fn empty_clusters_are_reseeded() {
    let centres = Tensor::from_slice(&[0.0f32, 0.0, 10.0, 0.0, 0.0, 10.0, 10.0, 10.0]).view([4, 2]);
    let (x, _) = blobs(&centres, 50, 0.3, 5);
    // Three starting centroids on blobs, the fourth far from every point: it is empty after the
    // first assignment and must be re-seeded from the farthest point.
    let init =
        Tensor::from_slice(&[0.0f32, 0.0, 10.0, 0.0, 5.0, 10.0, 1000.0, 1000.0]).view([4, 2]);
    let km = kmeans(
        &x,
        &KMeansConfig {
            init: KMeansInit::Centroids(init),
            iterations: 10,
            ..KMeansConfig::with_k(4)
        },
    )
    .unwrap();
    assert!(km.reseeded >= 1);
    let counts = Vec::<i64>::try_from(km.assignment.bincount(None::<Tensor>, 4)).unwrap();
    assert!(
        counts.iter().all(|&c| c > 0),
        "empty cluster left: {counts:?}"
    );
    let mut all = km.inertia.clone();
    all.push(km.final_inertia);
    assert_non_increasing(&all);
    assert!(
        km.final_inertia < 200.0 * 0.3 * 0.3 * 2.0 * 1.5,
        "four blobs not found: {}",
        km.final_inertia
    );
}

#[test]
fn kmeans_is_deterministic_under_a_seed() {
    let x = common::load("kmeans_points");
    let cfg = KMeansConfig {
        seed: 42,
        iterations: 5,
        max_points_per_centroid: Some(40),
        ..KMeansConfig::with_k(30)
    };
    let a = kmeans(&x, &cfg).unwrap();
    let b = kmeans(&x, &cfg).unwrap();
    assert!(a.centroids.equal(&b.centroids));
    assert!(a.assignment.equal(&b.assignment));
    assert_eq!(a.inertia, b.inertia);
    assert_eq!(a.training_points, 1200);
    assert_eq!(a.assignment.size(), vec![10_000]);
    let c = kmeans(&x, &KMeansConfig { seed: 43, ..cfg }).unwrap();
    assert!(!a.centroids.equal(&c.centroids));
}

#[test]
fn spherical_and_f32_options() {
    let x = common::load("kmeans_points");
    let sph = kmeans(
        &x,
        &KMeansConfig {
            spherical: true,
            iterations: 5,
            ..KMeansConfig::with_k(10)
        },
    )
    .unwrap();
    let norms = sph
        .centroids
        .norm_scalaropt_dim(2.0, [1i64].as_slice(), false);
    assert!((norms - 1.0).abs().max().double_value(&[]) < 1e-5);
    let f64_run = kmeans(
        &x,
        &KMeansConfig {
            iterations: 5,
            ..KMeansConfig::with_k(10)
        },
    )
    .unwrap();
    let f32_run = kmeans(
        &x,
        &KMeansConfig {
            iterations: 5,
            f64_accumulation: false,
            ..KMeansConfig::with_k(10)
        },
    )
    .unwrap();
    let rel = (f64_run.final_inertia - f32_run.final_inertia).abs() / f64_run.final_inertia;
    assert!(rel < 1e-4, "f32 and f64 sums differ by {rel}");
}

#[test]
fn allocation_rule_by_hand() {
    // sizes [1, 5, 10, 100], target 20: Σmin(7, s) = 1 + 5 + 7 + 7 = 20 and Σmin(8, s) = 22,
    // so the cap is 7 and the allocation [1, 5, 7, 7] is exact.
    let sizes = [1, 5, 10, 100];
    assert_eq!(balanced_cap(&sizes, 20), Some(7));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    assert_eq!(allocate(&sizes, 20, &mut rng), vec![1, 5, 7, 7]);
    // Target 21: cap 7 (20 taken), one +1 to a child larger than 7 (10 or 100).
    assert_eq!(balanced_cap(&sizes, 21), Some(7));
    for seed in 0..20 {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let a = allocate(&sizes, 21, &mut rng);
        assert!(a == vec![1, 5, 8, 7] || a == vec![1, 5, 7, 8], "{a:?}");
    }
    // Target 3: cap 0 gives 0; cap 1 gives 4 > 3, so three of the four children give 1.
    assert_eq!(balanced_cap(&sizes, 3), Some(0));
    let a = allocate(&sizes, 3, &mut rng);
    assert_eq!(a.iter().sum::<usize>(), 3);
    assert!(a.iter().all(|&v| v <= 1));
    // Everything fits: every child gives all.
    assert_eq!(balanced_cap(&sizes, 116), None);
    assert_eq!(allocate(&sizes, 500, &mut rng), sizes.to_vec());
    // Sizes [3, 3, 3], target 7: cap 2 (6), one child gives 3.
    let a = allocate(&[3, 3, 3], 7, &mut rng);
    let mut s = a.clone();
    s.sort();
    assert_eq!(s, vec![2, 2, 3]);
}

fn hierarchy_points() -> Tensor {
    tch::manual_seed(21);
    let centres = Tensor::randn([30, 16], (Kind::Float, tch::Device::Cpu)) * 3.0;
    // Unbalanced: cluster i has 10 + 7·i points.
    let sizes: Vec<i64> = (0..30).map(|i| 10 + 7 * i).collect();
    let labels = Tensor::arange(30, (Kind::Int64, tch::Device::Cpu)).repeat_interleave_self_tensor(
        &Tensor::from_slice(&sizes),
        0,
        None,
    );
    let n = labels.size()[0];
    centres.index_select(0, &labels) + Tensor::randn([n, 16], (Kind::Float, tch::Device::Cpu))
}

#[test]
fn hierarchical_kmeans_levels_fit_together() {
    let x = hierarchy_points();
    let n = x.size()[0];
    let mut cfg = HierarchicalKMeansConfig::new(vec![60, 12, 3], 3, vec![5, 3, 2]);
    cfg.kmeans.iterations = 10;
    cfg.kmeans.seed = 5;
    let h = hierarchical_kmeans(&x, &cfg).unwrap();
    assert_eq!(h.num_levels(), 3);
    let ks = [60i64, 12, 3];
    let inputs = [n, 60, 12];
    for (l, level) in h.levels.iter().enumerate() {
        assert_eq!(level.centroids.size(), vec![ks[l], 16]);
        assert_eq!(level.assignment.size(), vec![inputs[l]]);
        assert_eq!(level.sq_distances.size(), vec![inputs[l]]);
    }
    let pc = h.point_clusters().unwrap();
    assert_eq!(pc.size(), vec![n, 3]);
    // Independently: the nearest level-(ℓ+1) centroid of each level-ℓ centroid, by brute force.
    for l in 0..2 {
        let lower = &h.levels[l].centroids;
        let upper = &h.levels[l + 1].centroids;
        let nearest = common::pairwise_sq(lower, upper).argmin(1, false);
        let expected = nearest.index_select(0, &pc.select(1, l as i64));
        assert!(
            expected.equal(&pc.select(1, l as i64 + 1)),
            "level {} does not fit level {}",
            l + 2,
            l + 1
        );
    }
    // Level-1 clusters are nearest-centroid cells of the points.
    let nearest = common::pairwise_sq(&x, &h.levels[0].centroids).argmin(1, false);
    let agree = nearest
        .eq_tensor(&pc.select(1, 0))
        .sum(Kind::Int64)
        .int64_value(&[]);
    assert!(
        agree >= n - 2,
        "{agree} of {n} points in their nearest level-1 cell"
    );
    // Same seed, same hierarchy.
    let again = hierarchical_kmeans(&x, &cfg).unwrap();
    assert!(again.point_clusters().unwrap().equal(&pc));
}

#[test]
fn hierarchical_sampling_is_exact_and_balanced() {
    let x = hierarchy_points();
    let mut cfg = HierarchicalKMeansConfig::new(vec![40, 8], 2, vec![4, 2]);
    cfg.kmeans.iterations = 10;
    let h = hierarchical_kmeans(&x, &cfg).unwrap();
    let pc = h.point_clusters().unwrap();
    let level1 = Vec::<i64>::try_from(pc.select(1, 0)).unwrap();
    let level2 = Vec::<i64>::try_from(pc.select(1, 1)).unwrap();
    let n = level1.len();
    let top_sizes: Vec<usize> = (0..8)
        .map(|c| level2.iter().filter(|&&v| v == c).count())
        .collect();

    for strategy in [SampleStrategy::Random, SampleStrategy::Closest] {
        let target = 400;
        let s = hierarchical_sampling(
            &h,
            &SamplingOptions {
                target,
                strategy,
                multiplier: 1,
                seed: 9,
            },
        )
        .unwrap();
        assert_eq!(s.indices.len(), target);
        assert_eq!(s.level1_clusters.len(), target);
        let unique: HashSet<i64> = s.indices.iter().copied().collect();
        assert_eq!(unique.len(), target, "a point was selected twice");
        for (&i, &c) in s.indices.iter().zip(&s.level1_clusters) {
            assert_eq!(level1[i as usize], c);
        }
        // Top level: every cluster gives all its points or a common cap (or cap + 1).
        let taken: Vec<usize> = (0..8)
            .map(|c| {
                s.indices
                    .iter()
                    .filter(|&&i| level2[i as usize] == c)
                    .count()
            })
            .collect();
        let cap = balanced_cap(&top_sizes, target).unwrap();
        for c in 0..8 {
            let expect_low = top_sizes[c].min(cap);
            assert!(
                taken[c] == expect_low || (taken[c] == cap + 1 && top_sizes[c] > cap),
                "cluster {c}: {} taken of {} (cap {cap})",
                taken[c],
                top_sizes[c]
            );
        }
        if strategy == SampleStrategy::Closest {
            // Inside a level-1 cluster, the selected points are the closest to its centroid.
            let d = Vec::<f32>::try_from(&h.levels[0].sq_distances).unwrap();
            let selected: HashSet<usize> = s.indices.iter().map(|&i| i as usize).collect();
            for c in 0..40 {
                let members: Vec<usize> = (0..n).filter(|&i| level1[i] == c as i64).collect();
                let worst_in = members
                    .iter()
                    .filter(|i| selected.contains(i))
                    .map(|&i| d[i])
                    .fold(f32::MIN, f32::max);
                let best_out = members
                    .iter()
                    .filter(|i| !selected.contains(i))
                    .map(|&i| d[i])
                    .fold(f32::MAX, f32::min);
                assert!(worst_in <= best_out, "cluster {c}");
            }
        }
    }
    // A target above N returns every point once; with multiplier 2 points repeat up to twice.
    let all = hierarchical_sampling(
        &h,
        &SamplingOptions {
            target: n + 100,
            ..SamplingOptions::default()
        },
    )
    .unwrap();
    assert_eq!(all.indices.len(), n);
    let doubled = hierarchical_sampling(
        &h,
        &SamplingOptions {
            target: n + 100,
            multiplier: 2,
            ..SamplingOptions::default()
        },
    )
    .unwrap();
    assert_eq!(doubled.indices.len(), n + 100);
    let mut counts = HashMap::new();
    for i in &doubled.indices {
        *counts.entry(*i).or_insert(0) += 1;
    }
    assert!(counts.values().all(|&c| c <= 2));
}
