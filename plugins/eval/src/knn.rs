//! DINOv2's weighted k-NN classifier (`eval/knn.py`, dinov2.md §5): cosine similarity of each
//! test feature to every train feature, the max(ks) nearest, vote weights
//! softmax(similarity / T) over them, and for each k the weighted one-hot labels of the first k
//! neighbours summed; the prediction is the class with the largest sum (the lowest class on a tie).
//!
//! The test rows are processed in chunks so that a chunk's similarity matrix holds at most
//! [`TILE_VALUES`] values (64 MB in float32), whatever the dataset sizes.

use std::collections::BTreeMap;

use dinoflow_vision::tch::{Kind, Tensor};

use crate::EvalError;

/// Most similarity values held at once (chunk rows × train rows).
pub const TILE_VALUES: i64 = 1 << 24;

/// The rows L2-normalised (all-zero rows stay zero).
pub fn l2_normalize(x: &Tensor) -> Tensor {
    let x = x.to_kind(Kind::Float);
    let norm = x
        .norm_scalaropt_dim(2, [1i64].as_slice(), true)
        .clamp_min(1e-12);
    x / norm
}

/// Predictions of the weighted k-NN classifier: for each k of `ks` (capped at the train rows), a
/// (test rows,) int64 tensor of class indices in `[0, classes)`. `train_labels` are class
/// indices. The features need not be normalised: they are L2-normalised here.
pub fn predict(
    train: &Tensor,
    train_labels: &Tensor,
    test: &Tensor,
    classes: i64,
    ks: &[usize],
    temperature: f64,
) -> Result<Vec<Tensor>, EvalError> {
    let (ntr, nte) = (train.size()[0], test.size()[0]);
    if train.dim() != 2 || test.dim() != 2 || train.size()[1] != test.size()[1] {
        return Err(EvalError::Shape(format!(
            "k-NN: train features {:?} and test features {:?} must be (rows, dim) of one dim",
            train.size(),
            test.size()
        )));
    }
    if train_labels.size() != [ntr] || ntr == 0 || classes < 1 {
        return Err(EvalError::Shape(format!(
            "k-NN: {ntr} train rows with labels {:?} and {classes} classes",
            train_labels.size()
        )));
    }
    let ks: Vec<i64> = ks.iter().map(|&k| (k as i64).clamp(1, ntr)).collect();
    let kmax = ks.iter().copied().max().unwrap_or(1);
    let train = l2_normalize(train);
    let test = l2_normalize(test);
    let train_t = train.tr();
    let labels = train_labels.to_kind(Kind::Int64);
    let chunk = (TILE_VALUES / ntr).clamp(1, nte.max(1));
    let mut out: Vec<Vec<Tensor>> = ks.iter().map(|_| Vec::new()).collect();
    let mut start = 0;
    while start < nte {
        let len = chunk.min(nte - start);
        let sims = test.narrow(0, start, len).f_matmul(&train_t)?;
        let (top, idx) = sims.f_topk(kmax, 1, true, true)?;
        let weights = (top / temperature).f_softmax(1, Kind::Float)?;
        let neighbours = labels
            .f_index_select(0, &idx.flatten(0, -1))?
            .view([len, kmax]);
        for (j, &k) in ks.iter().enumerate() {
            let votes = Tensor::zeros([len, classes], (Kind::Float, test.device())).f_scatter_add(
                1,
                &neighbours.narrow(1, 0, k),
                &weights.narrow(1, 0, k),
            )?;
            out[j].push(votes.f_argmax(1, false)?);
        }
        start += len;
    }
    out.into_iter()
        .map(|parts| {
            if parts.is_empty() {
                Ok(Tensor::zeros([0], (Kind::Int64, test.device())))
            } else {
                Ok(Tensor::f_cat(&parts, 0)?)
            }
        })
        .collect()
}

/// Top-1 accuracy of each k of `ks` (same order), as fractions of the test rows.
pub fn accuracies(
    train: &Tensor,
    train_labels: &Tensor,
    test: &Tensor,
    test_labels: &Tensor,
    classes: i64,
    ks: &[usize],
    temperature: f64,
) -> Result<Vec<f64>, EvalError> {
    let rows = test.size()[0];
    if test_labels.size() != [rows] {
        return Err(EvalError::Shape(format!(
            "k-NN: {rows} test rows with labels {:?}",
            test_labels.size()
        )));
    }
    let labels = test_labels.to_kind(Kind::Int64);
    predict(train, train_labels, test, classes, ks, temperature)?
        .iter()
        .map(|p| accuracy(p, &labels))
        .collect()
}

/// The share of `predicted` equal to `labels` (0 for no rows).
pub(crate) fn accuracy(predicted: &Tensor, labels: &Tensor) -> Result<f64, EvalError> {
    let rows = labels.size()[0];
    if rows == 0 {
        return Ok(0.0);
    }
    let correct = predicted
        .f_eq_tensor(labels)?
        .f_sum(Kind::Int64)?
        .int64_value(&[]);
    Ok(correct as f64 / rows as f64)
}

/// Dense class indices for the labels of both splits, as [`predict`] takes them: the number of
/// distinct labels and the train and test labels as indices into their sorted list.
pub fn class_indices(train: &[i64], test: &[i64]) -> (i64, Vec<i64>, Vec<i64>) {
    let mut index = BTreeMap::new();
    for &l in train.iter().chain(test) {
        index.insert(l, 0i64);
    }
    for (i, v) in index.values_mut().enumerate() {
        *v = i as i64;
    }
    let map = |ls: &[i64]| ls.iter().map(|l| index[l]).collect::<Vec<_>>();
    (index.len() as i64, map(train), map(test))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_become_dense_sorted_indices() {
        let (classes, train, test) = class_indices(&[7, 3, 7, 100], &[3, -1]);
        assert_eq!(classes, 4);
        assert_eq!(train, vec![2, 1, 2, 3]);
        assert_eq!(test, vec![1, 0]);
    }

    #[test]
    fn votes_follow_the_weighted_neighbours() {
        // Train: three of class 0 near (1, 0), two of class 1 near (0, 1).
        let train = Tensor::from_slice(&[
            1.0f32, 0.0, 0.9, 0.1, 0.8, 0.2, //
            0.0, 1.0, 0.1, 0.9,
        ])
        .view([5, 2]);
        let labels = Tensor::from_slice(&[0i64, 0, 0, 1, 1]);
        // Test: one near each cluster, and one exactly on the diagonal.
        let test = Tensor::from_slice(&[1.0f32, 0.05, 0.05, 1.0, 0.3, 0.7]).view([3, 2]);
        let pred = predict(&train, &labels, &test, 2, &[1, 5], 0.07).unwrap();
        assert_eq!(Vec::<i64>::try_from(&pred[0]).unwrap(), vec![0, 1, 1]);
        assert_eq!(Vec::<i64>::try_from(&pred[1]).unwrap(), vec![0, 1, 1]);
        // With a huge temperature the votes are counts: 3 of class 0 beat 2 of class 1.
        let pred = predict(&train, &labels, &test, 2, &[5], 1e6).unwrap();
        assert_eq!(Vec::<i64>::try_from(&pred[0]).unwrap(), vec![0, 0, 0]);
        let acc = accuracies(
            &train,
            &labels,
            &test,
            &Tensor::from_slice(&[0i64, 1, 1]),
            2,
            &[1, 200],
            0.07,
        )
        .unwrap();
        assert_eq!(acc[0], 1.0);
        // k = 200 is capped at the 5 train rows: every vote, but weighted towards the nearest.
        assert_eq!(acc[1], 1.0);
    }

    #[test]
    fn chunks_do_not_change_the_result() {
        let train = Tensor::randn([3000, 8], (Kind::Float, dinoflow_vision::tch::Device::Cpu));
        let labels = Tensor::randint(4, [3000], (Kind::Int64, dinoflow_vision::tch::Device::Cpu));
        // 6000 test rows: more than one chunk of TILE_VALUES / 3000 rows.
        let test = Tensor::randn([6000, 8], (Kind::Float, dinoflow_vision::tch::Device::Cpu));
        let all = predict(&train, &labels, &test, 4, &[10], 0.07).unwrap();
        let half = predict(&train, &labels, &test.narrow(0, 3000, 3000), 4, &[10], 0.07).unwrap();
        assert!(all[0].narrow(0, 3000, 3000).equal(&half[0]));
    }
}
