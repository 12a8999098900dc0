//! Bad inputs give the documented, typed errors with a hint at the fix.

use dinoflow_search::tch::{Device, Kind, Tensor};
use dinoflow_search::{
    HierarchicalKMeansConfig, IvfIndex, IvfOptions, KMeansConfig, KMeansInit, KnnOptions,
    SamplingOptions, SearchError, TopK, hierarchical_kmeans, kmeans, knn, nearest_centroids,
};

fn randn(n: i64, d: i64) -> Tensor {
    Tensor::randn([n, d], (Kind::Float, Device::Cpu))
}

#[test]
fn knn_rejects_bad_inputs() {
    let (q, x) = (randn(4, 8), randn(20, 8));
    let e = knn(&q, &x, &KnnOptions::with_k(0)).unwrap_err();
    assert!(matches!(e, SearchError::Zero { what: "k" }), "{e}");
    assert!(e.to_string().contains("at least 1"));

    let e = knn(&q, &x, &KnnOptions::with_k(21)).unwrap_err();
    assert!(
        matches!(
            e,
            SearchError::TooLarge {
                requested: 21,
                available: 20,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("lower k"));

    let e = knn(&q, &randn(20, 9), &KnnOptions::with_k(3)).unwrap_err();
    assert!(
        matches!(
            e,
            SearchError::DimMismatch {
                left_dim: 8,
                right_dim: 9,
                ..
            }
        ),
        "{e}"
    );

    let e = knn(&randn(0, 8), &x, &KnnOptions::with_k(3)).unwrap_err();
    assert!(
        matches!(
            e,
            SearchError::Empty {
                name: "queries",
                ..
            }
        ),
        "{e}"
    );

    let ints = Tensor::zeros([4, 8], (Kind::Int64, Device::Cpu));
    let e = knn(&ints, &x, &KnnOptions::with_k(3)).unwrap_err();
    assert!(
        matches!(
            e,
            SearchError::NotFloat {
                name: "queries",
                kind: Kind::Int64
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("to_kind(Kind::Float)"));
    let e = knn(&q, &x.to_kind(Kind::Double), &KnnOptions::with_k(3)).unwrap_err();
    assert!(matches!(e, SearchError::NotFloat { .. }), "{e}");

    let e = knn(&randn(4, 8).view([32]), &x, &KnnOptions::with_k(3)).unwrap_err();
    assert!(matches!(e, SearchError::NotMatrix { .. }), "{e}");

    let e = knn(
        &q,
        &x,
        &KnnOptions {
            tile_bytes: 2,
            ..KnnOptions::with_k(3)
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            SearchError::InvalidOption {
                name: "tile_bytes",
                ..
            }
        ),
        "{e}"
    );

    let mut acc = TopK::new(4, &KnnOptions::with_k(3)).unwrap();
    let e = acc.add_chunk(&randn(5, 8), &x, 0).unwrap_err();
    assert!(
        matches!(
            e,
            SearchError::InvalidOption {
                name: "queries",
                ..
            }
        ),
        "{e}"
    );
    let e = acc.add_chunk(&q, &x, -1).unwrap_err();
    assert!(
        matches!(
            e,
            SearchError::InvalidOption {
                name: "global_offset",
                ..
            }
        ),
        "{e}"
    );
    let e = TopK::new(4, &KnnOptions::with_k(3))
        .unwrap()
        .finish()
        .unwrap_err();
    assert!(matches!(e, SearchError::Empty { .. }), "{e}");
}

#[test]
fn kmeans_rejects_bad_inputs() {
    let x = randn(30, 4);
    let e = kmeans(&x, &KMeansConfig::with_k(0)).unwrap_err();
    assert!(matches!(e, SearchError::Zero { what: "k" }), "{e}");
    let e = kmeans(&x, &KMeansConfig::with_k(31)).unwrap_err();
    assert!(
        matches!(
            e,
            SearchError::TooLarge {
                requested: 31,
                available: 30,
                ..
            }
        ),
        "{e}"
    );
    let e = kmeans(&randn(0, 4), &KMeansConfig::with_k(1)).unwrap_err();
    assert!(matches!(e, SearchError::Empty { .. }), "{e}");
    let e = kmeans(
        &x,
        &KMeansConfig {
            init: KMeansInit::Centroids(randn(3, 5)),
            ..KMeansConfig::with_k(3)
        },
    )
    .unwrap_err();
    assert!(matches!(e, SearchError::DimMismatch { .. }), "{e}");
    let e = kmeans(
        &x,
        &KMeansConfig {
            init: KMeansInit::Centroids(randn(2, 4)),
            ..KMeansConfig::with_k(3)
        },
    )
    .unwrap_err();
    assert!(
        matches!(e, SearchError::InvalidOption { name: "init", .. }),
        "{e}"
    );
    let e = kmeans(
        &x,
        &KMeansConfig {
            max_points_per_centroid: Some(0),
            ..KMeansConfig::with_k(3)
        },
    )
    .unwrap_err();
    assert!(matches!(e, SearchError::InvalidOption { .. }), "{e}");
    let e = nearest_centroids(&x, &randn(3, 5), 1 << 20).unwrap_err();
    assert!(matches!(e, SearchError::DimMismatch { .. }), "{e}");
}

#[test]
fn ivf_rejects_bad_inputs() {
    let x = randn(50, 4);
    let e = IvfIndex::build(
        &x,
        &IvfOptions {
            nlist: 51,
            ..IvfOptions::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            SearchError::TooLarge {
                what: "nlist",
                requested: 51,
                available: 50,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("lower nlist"));
    let e = IvfIndex::build(
        &x,
        &IvfOptions {
            nlist: 0,
            ..IvfOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(e, SearchError::Zero { what: "nlist" }), "{e}");
    let index = IvfIndex::build(
        &x,
        &IvfOptions {
            nlist: 5,
            ..IvfOptions::default()
        },
    )
    .unwrap();
    let e = index.search(&randn(3, 4), 5, 6).unwrap_err();
    assert!(
        matches!(e, SearchError::TooLarge { what: "nprobe", .. }),
        "{e}"
    );
    let e = index.search(&randn(3, 4), 0, 2).unwrap_err();
    assert!(matches!(e, SearchError::Zero { what: "k" }), "{e}");
    let e = index.search(&randn(3, 7), 2, 2).unwrap_err();
    assert!(matches!(e, SearchError::DimMismatch { .. }), "{e}");
}

#[test]
fn hierarchy_rejects_bad_inputs() {
    let x = randn(40, 4);
    let e = hierarchical_kmeans(&x, &HierarchicalKMeansConfig::new(vec![], 1, vec![])).unwrap_err();
    assert!(
        matches!(
            e,
            SearchError::InvalidOption {
                name: "clusters_per_level",
                ..
            }
        ),
        "{e}"
    );
    let e = hierarchical_kmeans(
        &x,
        &HierarchicalKMeansConfig::new(vec![10, 20], 1, vec![2, 2]),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            SearchError::InvalidOption {
                name: "clusters_per_level",
                ..
            }
        ),
        "{e}"
    );
    let e = hierarchical_kmeans(&x, &HierarchicalKMeansConfig::new(vec![10, 2], 1, vec![2]))
        .unwrap_err();
    assert!(matches!(e, SearchError::InvalidOption { .. }), "{e}");
    let e =
        hierarchical_kmeans(&x, &HierarchicalKMeansConfig::new(vec![41], 1, vec![2])).unwrap_err();
    assert!(matches!(e, SearchError::TooLarge { .. }), "{e}");
    let h = hierarchical_kmeans(&x, &HierarchicalKMeansConfig::new(vec![5], 1, vec![2])).unwrap();
    let e = dinoflow_search::hierarchical_sampling(&h, &SamplingOptions::default()).unwrap_err();
    assert!(matches!(e, SearchError::Zero { what: "target" }), "{e}");
}
