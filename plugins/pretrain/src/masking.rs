//! iBOT block masks (dinov2 `data/masking.py` and `collate.py`, dinov2.md §2.6).
//!
//! [`BlockMasker`] adds random rectangles (area uniform in [4, remaining budget], log-uniform
//! aspect ratio in [0.3, 1/0.3], up to 10 tries each) to a patch grid until a target count is
//! reached or no rectangle adds anything. [`batch_masks`] masks half of a batch's global crops,
//! with ratios drawn from equal bins of [0.1, 0.5] so the batch spans the whole range, and
//! shuffles them across crops.

use rand::Rng;
use rand::seq::SliceRandom;

use crate::PretrainError;

/// Smallest rectangle area tried.
const MIN_AREA: f64 = 4.0;
/// Tries per rectangle.
const TRIES: usize = 10;

/// The rectangle generator for one `height × width` patch grid.
#[derive(Debug, Clone)]
pub struct BlockMasker {
    height: usize,
    width: usize,
    max_patches: usize,
    log_aspect: (f64, f64),
}

impl BlockMasker {
    /// A masker over a `height × width` grid that adds at most `max_patches` per rectangle
    /// (dinov2: half the grid), with aspect ratios in [0.3, 1/0.3].
    pub fn new(height: usize, width: usize, max_patches: usize) -> Self {
        Self {
            height,
            width,
            max_patches,
            log_aspect: (0.3f64.ln(), (1.0 / 0.3f64).ln()),
        }
    }

    /// A row-major mask (`true` = masked) with about `target` masked patches (never more).
    pub fn mask(&self, target: usize, rng: &mut impl Rng) -> Vec<bool> {
        let mut mask = vec![false; self.height * self.width];
        let mut count = 0;
        while count < target {
            let budget = (target - count).min(self.max_patches);
            let added = self.add_rectangle(&mut mask, budget, rng);
            if added == 0 {
                break;
            }
            count += added;
        }
        mask
    }

    /// Tries up to [`TRIES`] rectangles; the first that adds between 1 and `budget` new patches
    /// is applied. Returns how many patches it added.
    fn add_rectangle(&self, mask: &mut [bool], budget: usize, rng: &mut impl Rng) -> usize {
        let mut added = 0;
        for _ in 0..TRIES {
            // Python's uniform(4, budget), which also accepts budget < 4.
            let (lo, hi) = (MIN_AREA.min(budget as f64), MIN_AREA.max(budget as f64));
            let area = if hi > lo {
                rng.random_range(lo..hi)
            } else {
                lo
            };
            let aspect = rng.random_range(self.log_aspect.0..self.log_aspect.1).exp();
            let h = (area * aspect).sqrt().round() as usize;
            let w = (area / aspect).sqrt().round() as usize;
            if w < self.width && h < self.height {
                let top = rng.random_range(0..=self.height - h);
                let left = rng.random_range(0..=self.width - w);
                let covered = (top..top + h)
                    .flat_map(|i| (left..left + w).map(move |j| (i, j)))
                    .filter(|&(i, j)| mask[i * self.width + j])
                    .count();
                let new = h * w - covered;
                if new > 0 && new <= budget {
                    for i in top..top + h {
                        for cell in &mut mask[i * self.width + left..i * self.width + left + w] {
                            if !*cell {
                                *cell = true;
                                added += 1;
                            }
                        }
                    }
                }
                if added > 0 {
                    break;
                }
            }
        }
        added
    }
}

/// The masks of one batch of global crops.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchMasks {
    /// One row-major mask per crop (`true` = masked), crops in batch order.
    pub masks: Vec<Vec<bool>>,
    /// Upper bound of the masked patches of the batch (Σ over masked crops of
    /// ⌊patches × bin upper edge⌋), the static size of dinov2's gather buffer.
    pub upper_bound: usize,
}

impl BatchMasks {
    /// The iBOT weight of every masked patch, in batch then row-major order: 1 / (masked
    /// patches of its crop).
    pub fn weights(&self) -> Vec<f32> {
        self.masks
            .iter()
            .flat_map(|m| {
                let n = m.iter().filter(|&&x| x).count();
                std::iter::repeat_n(1.0 / n.max(1) as f32, n)
            })
            .collect()
    }

    /// Indices of the masked patches in the flattened `crops × patches` grid.
    pub fn indices(&self) -> Vec<i64> {
        let patches = self.masks.first().map_or(0, Vec::len);
        self.masks
            .iter()
            .enumerate()
            .flat_map(|(c, m)| {
                m.iter()
                    .enumerate()
                    .filter(|(_, x)| **x)
                    .map(move |(p, _)| (c * patches + p) as i64)
            })
            .collect()
    }
}

/// Masks for `crops` global crops on a `grid × grid` patch grid: `⌊crops × probability⌋` of them
/// (dinov2: probability 0.5) get a ratio drawn uniformly from their own equal bin of
/// `ratio` (dinov2: [0.1, 0.5]); the others get none; then the masks are shuffled.
pub fn batch_masks(
    crops: usize,
    grid: usize,
    probability: f64,
    ratio: (f64, f64),
    rng: &mut impl Rng,
) -> Result<BatchMasks, PretrainError> {
    let ordered = 0.0 <= ratio.0 && ratio.0 <= ratio.1 && ratio.1 <= 1.0;
    if !(0.0..=1.0).contains(&probability) || !ordered {
        return Err(PretrainError::Config(format!(
            "mask probability {probability} must be in [0, 1] and the ratio range {ratio:?} \
             ordered within [0, 1]"
        )));
    }
    let patches = grid * grid;
    let masker = BlockMasker::new(grid, grid, patches / 2);
    let masked = (crops as f64 * probability) as usize;
    let edge = |i: usize| ratio.0 + (ratio.1 - ratio.0) * i as f64 / masked.max(1) as f64;
    let mut masks = Vec::with_capacity(crops);
    let mut upper_bound = 0;
    for i in 0..masked {
        let (lo, hi) = (edge(i), edge(i + 1));
        let r = if hi > lo {
            rng.random_range(lo..hi)
        } else {
            lo
        };
        masks.push(masker.mask((patches as f64 * r) as usize, rng));
        upper_bound += (patches as f64 * hi) as usize;
    }
    masks.resize(crops, vec![false; patches]);
    masks.shuffle(rng);
    Ok(BatchMasks { masks, upper_bound })
}
