//! The candidate pairs of `dedup` and the evidence that makes a pair a copy.
//!
//! The kNN graph of the descriptor proposes pairs. When the embeddings carry mirrored vectors,
//! each image is also compared with the other images' mirrored vectors, so a horizontally flipped
//! copy scores as high as an unflipped one. With `verify`, the pairs above the candidate cosine
//! are compared on their aligned pixels ([`crate::verify`]). With `local_features` (the default),
//! the pairs above its candidate cosine are checked by local features ([`crate::features`]),
//! which confirm or reject them. A pair is linked when local features confirmed it; never when
//! they rejected it; otherwise (undecided, or not checked) when its best descriptor score is above
//! the threshold, or when its pixels aligned.

use std::collections::HashMap;

use dinoflow_vision::tch::Tensor;

use crate::features::{FeaturesConfig, Verdict, verify_pairs};
use crate::grey::GreyImage;
use crate::verify::{VerifyConfig, aligned_similarity};
use crate::{CurateError, Vectors, neighbours};

/// What made two images copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// Their descriptors are closer than the threshold.
    Descriptor,
    /// One image's descriptor is closer than the threshold to the other's mirrored descriptor.
    Mirrored,
    /// Their pixels align under a small zoom and shift (`verify`).
    Aligned,
    /// Their local features fit one transform under which the images agree (`local_features`).
    LocalFeatures,
    /// Not linked directly: in the same connected component as an evaluation image.
    Component,
}

impl Basis {
    /// The name written in the `duplicates` output's `basis` column.
    pub fn name(self) -> &'static str {
        match self {
            Self::Descriptor => "descriptor",
            Self::Mirrored => "mirrored",
            Self::Aligned => "aligned pixels",
            Self::LocalFeatures => "local features",
            Self::Component => "component",
        }
    }
}

/// Why one pair counts as copies: the similarity that decided and on what basis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evidence {
    /// The descriptor cosine, the aligned pixel cosine for [`Basis::Aligned`], or the share of
    /// agreeing blocks for [`Basis::LocalFeatures`].
    pub score: f32,
    /// What the score measures.
    pub basis: Basis,
}

/// What is known of one candidate pair.
#[derive(Debug, Clone, Copy)]
struct PairScores {
    /// The best descriptor cosine over both orientations.
    descriptor: f32,
    /// Whether that best cosine came from a mirrored vector.
    mirrored: bool,
    /// The aligned pixel cosine, when verified and above `verify.threshold`.
    aligned: Option<f32>,
    /// The verdict of local features, when checked.
    local: Option<Verdict>,
}

/// What local-feature verification did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocalCounts {
    /// Pairs checked.
    pub pairs: usize,
    /// Pairs confirmed as copies.
    pub confirmed: usize,
    /// Pairs rejected (no longer links, whatever their descriptor score).
    pub rejected: usize,
}

/// The candidate pairs among `n` pool rows (vertices `0..n`) and, with an evaluation set, its
/// images (vertices `n..n + m`).
pub struct Candidates {
    pairs: HashMap<(usize, usize), PairScores>,
    /// Pairs whose pixels were compared (with `verify`).
    pub verified_pairs: usize,
    /// Those whose pixels aligned.
    pub aligned_pairs: usize,
    /// What local-feature verification did (with `local_features`).
    pub local: LocalCounts,
}

impl Candidates {
    /// Collects the candidates of the pool's kNN graph (`k` neighbours per row, both orientations
    /// when mirrored vectors exist) and of each evaluation image's `k` nearest pool rows.
    pub fn collect(
        pool: &Vectors,
        against: Option<&Vectors>,
        k: usize,
    ) -> Result<Self, CurateError> {
        let n = pool.len();
        let mut found = Self {
            pairs: HashMap::new(),
            verified_pairs: 0,
            aligned_pairs: 0,
            local: LocalCounts::default(),
        };
        found.add(
            neighbours(&pool.data, &pool.data, k, true)?.edges(),
            0,
            false,
        );
        if let Some(mirrored) = &pool.mirrored {
            // One more neighbour: a row's own mirrored vector is among them and is skipped.
            found.add(
                neighbours(mirrored, &pool.data, k + 1, false)?.edges(),
                0,
                true,
            );
        }
        if let Some(eval) = against.filter(|a| !a.is_empty()) {
            found.add(
                neighbours(&eval.data, &pool.data, k, false)?.edges(),
                n,
                false,
            );
            if let Some(mirrored) = &eval.mirrored {
                found.add(neighbours(mirrored, &pool.data, k, false)?.edges(), n, true);
            }
        }
        Ok(found)
    }

    /// Adds edges (query, pool row, score); query vertices are offset by `offset`.
    fn add(
        &mut self,
        edges: impl Iterator<Item = (usize, usize, f32)>,
        offset: usize,
        mirrored: bool,
    ) {
        for (q, j, score) in edges {
            let q = q + offset;
            if q == j {
                continue;
            }
            let entry = self
                .pairs
                .entry((q.min(j), q.max(j)))
                .or_insert(PairScores {
                    descriptor: score,
                    mirrored,
                    aligned: None,
                    local: None,
                });
            if score > entry.descriptor {
                entry.descriptor = score;
                entry.mirrored = mirrored;
            }
        }
    }

    /// Compares the pixels of every pair above `verify.candidates`; `pixels` holds one row per
    /// vertex.
    pub fn verify(&mut self, pixels: &Tensor, verify: &VerifyConfig) -> Result<(), CurateError> {
        let mut pairs: Vec<(usize, usize)> = self
            .pairs
            .iter()
            .filter(|(_, p)| f64::from(p.descriptor) > verify.candidates)
            .map(|(pair, _)| *pair)
            .collect();
        pairs.sort_unstable();
        let scores = aligned_similarity(pixels, &pairs, verify)?;
        self.verified_pairs = pairs.len();
        self.aligned_pairs = 0;
        for (pair, score) in pairs.iter().zip(scores) {
            if f64::from(score) > verify.threshold
                && let Some(p) = self.pairs.get_mut(pair)
            {
                p.aligned = Some(score);
                self.aligned_pairs += 1;
            }
        }
        Ok(())
    }

    /// Checks every pair above `config.candidates` by local features, on `threads` threads;
    /// `images` holds one grey image per vertex from 0 (pairs beyond it are not checked).
    pub fn verify_local(
        &mut self,
        images: &[GreyImage],
        config: &FeaturesConfig,
        threads: usize,
    ) -> Result<(), CurateError> {
        let mut pairs: Vec<(usize, usize, bool)> = self
            .pairs
            .iter()
            .filter(|((a, b), p)| {
                f64::from(p.descriptor) > config.candidates
                    && *a < images.len()
                    && *b < images.len()
            })
            .map(|(&(a, b), p)| (a, b, p.mirrored))
            .collect();
        pairs.sort_unstable();
        let verdicts = verify_pairs(images, &pairs, config, threads)?;
        let mut counts = LocalCounts {
            pairs: pairs.len(),
            ..LocalCounts::default()
        };
        for (&(a, b, _), verdict) in pairs.iter().zip(verdicts) {
            match verdict {
                Verdict::Confirmed(_) => counts.confirmed += 1,
                Verdict::Rejected => counts.rejected += 1,
                Verdict::Undecided => {}
            }
            if let Some(p) = self.pairs.get_mut(&(a, b)) {
                p.local = Some(verdict);
            }
        }
        self.local = counts;
        Ok(())
    }

    /// Every pair `(a, b)` with `a < b` that is linked at `threshold`, with its evidence; in a
    /// fixed order.
    pub fn linked(&self, threshold: f64) -> Vec<(usize, usize, Evidence)> {
        let mut out: Vec<(usize, usize, Evidence)> = self
            .pairs
            .iter()
            .filter_map(|(&(a, b), p)| link(p, threshold).map(|e| (a, b, e)))
            .collect();
        out.sort_unstable_by_key(|&(a, b, _)| (a, b));
        out
    }
}

fn link(p: &PairScores, threshold: f64) -> Option<Evidence> {
    match p.local {
        Some(Verdict::Confirmed(share)) => {
            return Some(Evidence {
                score: share,
                basis: Basis::LocalFeatures,
            });
        }
        Some(Verdict::Rejected) => return None,
        Some(Verdict::Undecided) | None => {}
    }
    if f64::from(p.descriptor) > threshold {
        let basis = if p.mirrored {
            Basis::Mirrored
        } else {
            Basis::Descriptor
        };
        return Some(Evidence {
            score: p.descriptor,
            basis,
        });
    }
    p.aligned.map(|score| Evidence {
        score,
        basis: Basis::Aligned,
    })
}
