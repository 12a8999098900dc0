//! Meta's PDQ perceptual hash: 256 bits per image that stay nearly the same under resizing,
//! re-encoding and light edits, compared by Hamming distance.
//!
//! PDQ was published by Facebook (now Meta) in 2017 as part of ThreatExchange
//! (`pdq/cpp/hashing/pdqhashing.cpp` and the paper `pdqhash-2017-10-09.pdf` there). This module is
//! an independent implementation of that algorithm; on the photos in `data/photos` its hashes
//! equal bit for bit those of the reference Python package `pdqhash` (which wraps the C++ code;
//! see `tests/pdq.rs`).
//!
//! # Algorithm
//!
//! 1. **Luminance**: RGB becomes `0.299 R + 0.587 G + 0.114 B` (Rec. 601), computed in `f64` and
//!    rounded to `f32` exactly as `pdqhash.compute` does (the C++ tools compute it in `f32`, which
//!    can differ in the last bit of a value); grey is used as is ([`luma`]).
//! 2. **Jarosz tent filter**: two passes, each a box filter along the rows then along the columns,
//!    of `ceil(side / 128)` samples per side (so the two passes make a tent over about
//!    `side / 64` samples, one output cell), with the reference's running sums in `f32` and its
//!    truncated windows at the edges. An image of exactly 64×64 is not filtered.
//! 3. **Decimation** to 64×64: cell `(i, j)` takes the filtered sample at row
//!    `floor((i + ½)·height / 64)` and column `floor((j + ½)·width / 64)`.
//! 4. **Quality**: the sum over horizontally and vertically adjacent cells of
//!    `|trunc(100·(u − v) / 255)|`, divided by 90 (integer division) and capped at 100. PDQ's
//!    authors suggest ignoring hashes of quality below 50 when matching.
//! 5. **DCT**: `B = D · A · Dᵀ` with `D` the rows 1 to 16 of the 64-point DCT-II matrix
//!    (`√(2/64) · cos(π (k + 1)(2n + 1) / 128)`; the DC row 0 is left out), giving 16×16
//!    coefficients `B[u][v]` for vertical frequency `u + 1` and horizontal frequency `v + 1`.
//! 6. **Bits**: coefficient `k = 16 u + v` gives bit `k`, set when the coefficient is above the
//!    median of the 256 (the 128th smallest, so about half the bits are set).
//!
//! An image narrower or shorter than [`MIN_HASHABLE_SIDE`] pixels gets the all-zero hash of
//! quality 0, as in the reference.
//!
//! # Dihedral variants
//!
//! Mirroring or rotating the 64×64 block only changes the signs of the DCT coefficients and
//! transposes them, so the hashes of the 8 rotations and reflections come from the coefficients of
//! the original at no cost ([`PdqDct::variant`], [`Dihedral`]); each variant thresholds its own
//! coefficients against their median, as the reference does. They are close to, not equal to,
//! the hashes of the transformed images: even filter windows and the decimation grid are not
//! symmetric. On the full-size photos of `data/photos` the mirrored variant is a median of 6 and
//! at most 22 bits from the hash of the mirrored photo; at 224 px (filter windows of 2 samples) a
//! median of 24 and up to 108 bits, which is why the embed stage hashes mirrored pixels instead
//! ([`crate::pdq_vectors`]).
//!
//! # Bit layout and hex
//!
//! [`PdqHash::bits`] and [`PdqHash::to_hex`] use the reference's layout: the first byte holds bits
//! 255 (most significant) down to 248, the last byte bits 7 down to 0, so the hex string equals
//! the one the C++ tools and `pdqhash` print.

use std::sync::OnceLock;

use crate::shape::{ShapeError, check_image};

/// Bits in a PDQ hash: one per kept DCT coefficient.
pub const HASH_BITS: usize = DCT_SIDE * DCT_SIDE;

/// Bytes in a PDQ hash.
pub const HASH_BYTES: usize = HASH_BITS / 8;

/// Side of the downsampled luminance block the DCT runs on.
pub const BLOCK: usize = 64;

/// Side of the kept block of DCT coefficients (frequencies 1 to 16 in each direction).
pub const DCT_SIDE: usize = 16;

/// Images with a side shorter than this get the all-zero hash of quality 0.
pub const MIN_HASHABLE_SIDE: u32 = 5;

/// Passes of the Jarosz tent filter (each a box filter along rows, then along columns).
const JAROSZ_PASSES: usize = 2;

/// Luma weights (ITU-R BT.601) for R, G and B.
const LUMA: [f64; 3] = [0.299, 0.587, 0.114];

/// Why a PDQ hash could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PdqError {
    /// The buffer is not an image of the stated shape.
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// A luminance value is NaN or infinite.
    #[error("luminance value {index} is {value}; every value must be finite")]
    NonFinite {
        /// Its position in the row-major buffer.
        index: usize,
        /// The value.
        value: f32,
    },
}

/// A PDQ hash and its quality.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PdqHash {
    /// The 256 bits in the reference's byte order (see the module doc): bit `k` (coefficient
    /// `k = 16 u + v`) is bit `k % 8` of byte `31 − k / 8`.
    pub bits: [u8; HASH_BYTES],
    /// PDQ's quality, an integer from 0 (no significant gradients: a flat image) to 100, as the
    /// reference computes it.
    pub quality: f32,
}

impl PdqHash {
    /// Whether bit `k` (0..256: coefficient `16 u + v`) is set; `false` for `k` out of range.
    pub fn bit(&self, k: usize) -> bool {
        k < HASH_BITS && self.bits[HASH_BYTES - 1 - k / 8] & (1 << (k % 8)) != 0
    }

    /// The hash as 64 lowercase hex digits, as the reference prints it.
    pub fn to_hex(&self) -> String {
        self.bits.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The number of bits in which the two hashes differ (0 to 256; PDQ's authors call 31 or
    /// fewer a match).
    pub fn hamming(&self, other: &Self) -> u32 {
        self.bits
            .iter()
            .zip(&other.bits)
            .map(|(a, b)| (a ^ b).count_ones())
            .sum()
    }

    /// The bits as a unit vector of [`HASH_BITS`] values: entry `k` is `+1/16` when bit `k` is
    /// set, else `−1/16`. The dot product of two such vectors is `1 − 2·hamming/256`.
    pub fn to_vector(&self) -> Vec<f32> {
        let unit = 1.0 / (HASH_BITS as f32).sqrt();
        (0..HASH_BITS)
            .map(|k| if self.bit(k) { unit } else { -unit })
            .collect()
    }
}

/// One of the 8 rotations and reflections of an image, named as in the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dihedral {
    /// The image itself.
    Original,
    /// Rotated 90° anticlockwise (numpy's `rot90(image, 1)`).
    Rotate90,
    /// Rotated 180°.
    Rotate180,
    /// Rotated 270° anticlockwise, i.e. 90° clockwise.
    Rotate270,
    /// Flipped upside down (mirrored across the horizontal axis).
    FlipX,
    /// Mirrored left to right (across the vertical axis): the horizontally mirrored image.
    FlipY,
    /// Transposed (mirrored across the main diagonal).
    FlipPlus1,
    /// Mirrored across the anti-diagonal.
    FlipMinus1,
}

impl Dihedral {
    /// The 8 variants in the reference's order.
    pub const ALL: [Dihedral; 8] = [
        Dihedral::Original,
        Dihedral::Rotate90,
        Dihedral::Rotate180,
        Dihedral::Rotate270,
        Dihedral::FlipX,
        Dihedral::FlipY,
        Dihedral::FlipPlus1,
        Dihedral::FlipMinus1,
    ];

    /// The variant's coefficients from the original's: coefficient `(i, j)` of the original
    /// moves to `(j, i)` when the variant transposes, and changes sign as the variant mirrors the
    /// frequencies `i + 1` (vertical) and `j + 1` (horizontal).
    fn apply(self, a: &[f32; HASH_BITS]) -> [f32; HASH_BITS] {
        let odd = |n: usize| n % 2 == 1;
        let mut b = [0.0f32; HASH_BITS];
        for i in 0..DCT_SIDE {
            for j in 0..DCT_SIDE {
                let (transpose, keep) = match self {
                    Self::Original => (false, true),
                    Self::Rotate90 => (true, odd(j)),
                    Self::Rotate180 => (false, !odd(i + j)),
                    Self::Rotate270 => (true, odd(i)),
                    Self::FlipX => (false, odd(i)),
                    Self::FlipY => (false, odd(j)),
                    Self::FlipPlus1 => (true, true),
                    Self::FlipMinus1 => (true, !odd(i + j)),
                };
                let v = a[i * DCT_SIDE + j];
                let at = if transpose {
                    j * DCT_SIDE + i
                } else {
                    i * DCT_SIDE + j
                };
                b[at] = if keep { v } else { -v };
            }
        }
        b
    }
}

/// The 16×16 DCT coefficients and quality of an image, from which its hash and the hashes of its
/// rotations and reflections follow.
#[derive(Debug, Clone, PartialEq)]
pub struct PdqDct {
    /// Row-major: entry `16 u + v` for vertical frequency `u + 1`, horizontal frequency `v + 1`.
    coefficients: [f32; HASH_BITS],
    /// PDQ's quality, 0 to 100.
    quality: u32,
}

impl PdqDct {
    /// The coefficients of an 8-bit image: `pixels` is row-major with interleaved channels,
    /// `width × height × channels` bytes; `channels` is 1 (grey) or 3 (RGB).
    ///
    /// # Errors
    ///
    /// As [`luma`].
    pub fn from_pixels(
        pixels: &[u8],
        width: u32,
        height: u32,
        channels: u8,
    ) -> Result<Self, PdqError> {
        Self::from_luma(&luma(pixels, width, height, channels)?, width, height)
    }

    /// The coefficients of a row-major `width × height` luminance image (grey levels, 0 to 255
    /// for 8-bit images).
    ///
    /// # Errors
    ///
    /// [`PdqError::Shape`] if `luma` does not have `width × height` values (or a side is 0),
    /// [`PdqError::NonFinite`] if one is NaN or infinite.
    pub fn from_luma(luma: &[f32], width: u32, height: u32) -> Result<Self, PdqError> {
        check_image(luma.len(), width, height, 1)?;
        if let Some((index, &value)) = luma.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(PdqError::NonFinite { index, value });
        }
        if width < MIN_HASHABLE_SIDE || height < MIN_HASHABLE_SIDE {
            return Ok(Self {
                coefficients: [0.0; HASH_BITS],
                quality: 0,
            });
        }
        let (rows, cols) = (height as usize, width as usize);
        let block = if rows == BLOCK && cols == BLOCK {
            luma.to_vec()
        } else {
            let mut a = luma.to_vec();
            let mut b = vec![0.0f32; a.len()];
            let along_rows = jarosz_window(cols);
            let along_cols = jarosz_window(rows);
            for _ in 0..JAROSZ_PASSES {
                for r in 0..rows {
                    box_filter(&a, &mut b, r * cols, cols, 1, along_rows);
                }
                for c in 0..cols {
                    box_filter(&b, &mut a, c, rows, cols, along_cols);
                }
            }
            decimate(&a, rows, cols)
        };
        Ok(Self {
            coefficients: dct(&block),
            quality: quality(&block),
        })
    }

    /// The coefficients, row-major: entry `16 u + v` for vertical frequency `u + 1` and
    /// horizontal frequency `v + 1` (all zero for an image under [`MIN_HASHABLE_SIDE`]).
    pub fn coefficients(&self) -> &[f32; HASH_BITS] {
        &self.coefficients
    }

    /// PDQ's quality, 0 to 100.
    pub fn quality(&self) -> u32 {
        self.quality
    }

    /// The image's PDQ hash.
    pub fn hash(&self) -> PdqHash {
        self.variant(Dihedral::Original)
    }

    /// The hash of a rotation or reflection of the image (see the module doc).
    pub fn variant(&self, which: Dihedral) -> PdqHash {
        let coefficients = which.apply(&self.coefficients);
        PdqHash {
            bits: bits(&coefficients),
            quality: self.quality as f32,
        }
    }

    /// The hashes of the 8 variants, in the order of [`Dihedral::ALL`].
    pub fn dihedral_hashes(&self) -> [PdqHash; 8] {
        Dihedral::ALL.map(|d| self.variant(d))
    }
}

/// The PDQ hash of an 8-bit image (see [`PdqDct::from_pixels`]).
///
/// # Errors
///
/// As [`luma`].
pub fn pdq_hash(pixels: &[u8], width: u32, height: u32, channels: u8) -> Result<PdqHash, PdqError> {
    Ok(PdqDct::from_pixels(pixels, width, height, channels)?.hash())
}

/// The PDQ hashes of the 8 rotations and reflections of an 8-bit image, in the order of
/// [`Dihedral::ALL`] (the first is [`pdq_hash`]).
///
/// # Errors
///
/// As [`luma`].
pub fn pdq_dihedral_hashes(
    pixels: &[u8],
    width: u32,
    height: u32,
    channels: u8,
) -> Result<[PdqHash; 8], PdqError> {
    Ok(PdqDct::from_pixels(pixels, width, height, channels)?.dihedral_hashes())
}

/// The luminance of an 8-bit image as PDQ reads it: `pixels` is row-major with interleaved
/// channels, `width × height × channels` bytes; `channels` is 1 (grey, used as is) or 3 (RGB:
/// `0.299 R + 0.587 G + 0.114 B` in `f64`, rounded to `f32`).
///
/// # Errors
///
/// [`PdqError::Shape`] if `pixels` is not a `width × height` image of `channels` (1 or 3) channels.
pub fn luma(pixels: &[u8], width: u32, height: u32, channels: u8) -> Result<Vec<f32>, PdqError> {
    check_image(pixels.len(), width, height, channels)?;
    Ok(if channels == 1 {
        pixels.iter().map(|&p| f32::from(p)).collect()
    } else {
        pixels
            .chunks_exact(3)
            .map(|p| {
                (LUMA[0] * f64::from(p[0]) + LUMA[1] * f64::from(p[1]) + LUMA[2] * f64::from(p[2]))
                    as f32
            })
            .collect()
    })
}

/// Samples per box-filter window along a side of `side` samples: `ceil(side / 128)`, half of the
/// `side / 64` samples of one output cell (two passes make the full tent).
fn jarosz_window(side: usize) -> usize {
    side.div_ceil(2 * BLOCK)
}

/// One 1-D box filter of `window` samples over the `len` samples of `input` that start at `start`
/// and lie `stride` apart, written at the same places of `output`. The window covers samples
/// `i − (window − half) ..= i + half − 1` with `half = (window + 2) / 2` and is cut short at the
/// ends; the mean is kept as a running `f32` sum in the reference's order of additions.
fn box_filter(
    input: &[f32],
    output: &mut [f32],
    start: usize,
    len: usize,
    stride: usize,
    window: usize,
) {
    let window = window.clamp(1, len.max(1));
    let half = (window + 2) / 2;
    let at = |i: usize| start + i * stride;
    let mut sum = 0.0f32;
    let mut count = 0usize;
    // Before the first output: the first `half − 1` samples.
    for r in 0..half - 1 {
        sum += input[at(r)];
        count += 1;
    }
    // Growing window at the start.
    let mut out = 0;
    for r in half - 1..window {
        sum += input[at(r)];
        count += 1;
        output[at(out)] = sum / count as f32;
        out += 1;
    }
    // Full window.
    let mut left = 0;
    for r in window..len {
        sum += input[at(r)];
        sum -= input[at(left)];
        output[at(out)] = sum / count as f32;
        left += 1;
        out += 1;
    }
    // Shrinking window at the end.
    for _ in 0..half - 1 {
        sum -= input[at(left)];
        count -= 1;
        output[at(out)] = sum / count as f32;
        left += 1;
        out += 1;
    }
}

/// The 64×64 block (row-major) sampled at the cell centres of the filtered `rows × cols` image.
fn decimate(filtered: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut block = Vec::with_capacity(BLOCK * BLOCK);
    for i in 0..BLOCK {
        let r = (2 * i + 1) * rows / (2 * BLOCK);
        for j in 0..BLOCK {
            let c = (2 * j + 1) * cols / (2 * BLOCK);
            block.push(filtered[r * cols + c]);
        }
    }
    block
}

/// PDQ's quality of the 64×64 block: the sum of the truncated gradients in percent of 255,
/// divided by 90, at most 100.
fn quality(block: &[f32]) -> u32 {
    let step = |u: f32, v: f32| i64::from((((u - v) * 100.0) / 255.0) as i32).abs();
    let mut sum = 0i64;
    for i in 0..BLOCK - 1 {
        for j in 0..BLOCK {
            sum += step(block[i * BLOCK + j], block[(i + 1) * BLOCK + j]);
        }
    }
    for i in 0..BLOCK {
        for j in 0..BLOCK - 1 {
            sum += step(block[i * BLOCK + j], block[i * BLOCK + j + 1]);
        }
    }
    (sum / 90).min(100) as u32
}

/// Rows 1 to 16 of the 64-point DCT-II matrix, row-major (16 × 64), in `f32` as the reference
/// builds it (the scale `√(2/64)` rounded to `f32`, the product in `f64`).
fn dct_matrix() -> &'static [f32; DCT_SIDE * BLOCK] {
    static MATRIX: OnceLock<[f32; DCT_SIDE * BLOCK]> = OnceLock::new();
    MATRIX.get_or_init(|| {
        let scale = f64::from((2.0 / BLOCK as f64).sqrt() as f32);
        let mut d = [0.0f32; DCT_SIDE * BLOCK];
        for i in 0..DCT_SIDE {
            for j in 0..BLOCK {
                let angle = (std::f64::consts::PI / 2.0 / BLOCK as f64)
                    * (i + 1) as f64
                    * (2 * j + 1) as f64;
                d[i * BLOCK + j] = (scale * angle.cos()) as f32;
            }
        }
        d
    })
}

/// `D · A · Dᵀ` for the 64×64 block `A`, in `f32` with the reference's order of additions.
fn dct(block: &[f32]) -> [f32; HASH_BITS] {
    let d = dct_matrix();
    let mut t = vec![0.0f32; DCT_SIDE * BLOCK];
    for i in 0..DCT_SIDE {
        let di = &d[i * BLOCK..(i + 1) * BLOCK];
        for j in 0..BLOCK {
            let mut sum = 0.0f32;
            for (k, &dik) in di.iter().enumerate() {
                sum += dik * block[k * BLOCK + j];
            }
            t[i * BLOCK + j] = sum;
        }
    }
    let mut out = [0.0f32; HASH_BITS];
    for i in 0..DCT_SIDE {
        let ti = &t[i * BLOCK..(i + 1) * BLOCK];
        for j in 0..DCT_SIDE {
            let dj = &d[j * BLOCK..(j + 1) * BLOCK];
            let mut sum = 0.0f32;
            for (&a, &b) in ti.iter().zip(dj) {
                sum += a * b;
            }
            out[i * DCT_SIDE + j] = sum;
        }
    }
    out
}

/// The hash bits of coefficients: bit `k` set when coefficient `k` is above their median (the
/// 128th smallest, the value the reference's Torben median returns for 256 values).
fn bits(coefficients: &[f32; HASH_BITS]) -> [u8; HASH_BYTES] {
    let mut sorted = *coefficients;
    sorted.sort_unstable_by(f32::total_cmp);
    let median = sorted[HASH_BITS / 2 - 1];
    let mut bits = [0u8; HASH_BYTES];
    for (k, &c) in coefficients.iter().enumerate() {
        if c > median {
            bits[HASH_BYTES - 1 - k / 8] |= 1 << (k % 8);
        }
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_box_filter_matches_the_reference_worked_examples() {
        // The reference's comments work out windows 7 and 8 over 0..16: sums of the covered
        // samples, here divided by the number of samples covered.
        let input: Vec<f32> = (0..16).map(|i| i as f32).collect();
        for (window, sums, counts) in [
            (
                7,
                [
                    6, 10, 15, 21, 28, 35, 42, 49, 56, 63, 70, 77, 84, 75, 65, 54,
                ],
                [4, 5, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 5, 4],
            ),
            (
                8,
                [
                    10, 15, 21, 28, 36, 44, 52, 60, 68, 76, 84, 92, 84, 75, 65, 54,
                ],
                [5, 6, 7, 8, 8, 8, 8, 8, 8, 8, 8, 8, 7, 6, 5, 4],
            ),
        ] {
            let mut out = vec![0.0; 16];
            box_filter(&input, &mut out, 0, 16, 1, window);
            let want: Vec<f32> = sums
                .iter()
                .zip(counts)
                .map(|(&s, c)| s as f32 / c as f32)
                .collect();
            assert_eq!(out, want, "window {window}");
        }
    }

    #[test]
    fn the_median_splits_the_coefficients_in_half() {
        let mut c = [0.0f32; HASH_BITS];
        for (k, v) in c.iter_mut().enumerate() {
            *v = ((k * 97) % 256) as f32 - 100.0;
        }
        let b = bits(&c);
        let set: u32 = b.iter().map(|x| x.count_ones()).sum();
        assert_eq!(set, 128);
        let hash = PdqHash {
            bits: b,
            quality: 0.0,
        };
        for (k, &v) in c.iter().enumerate() {
            // The 128th smallest value is 127 − 100 = 27.
            assert_eq!(hash.bit(k), v > 27.0, "bit {k}");
        }
    }

    #[test]
    fn the_dct_rows_are_orthonormal() {
        let d = dct_matrix();
        for a in 0..DCT_SIDE {
            for b in 0..DCT_SIDE {
                let dot: f64 = (0..BLOCK)
                    .map(|k| f64::from(d[a * BLOCK + k]) * f64::from(d[b * BLOCK + k]))
                    .sum();
                let want = if a == b { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-6, "rows {a}, {b}: {dot}");
            }
        }
    }
}
