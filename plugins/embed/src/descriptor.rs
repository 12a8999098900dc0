//! A built-in copy-detection image descriptor that needs no training.
//!
//! The `embed` stage uses [`dct_descriptor`] to find near-duplicate images
//! (the dedup step of a DINOv2-style data pipeline) without loading a model.
//! It maps an image to a [`DESCRIPTOR_DIM`]-dimensional, L2-normalised `f32`
//! vector, so the cosine similarity of two images is the dot product of their
//! descriptors: near-copies score close to 1, unrelated images much lower.
//!
//! # Design
//!
//! 1. **Grey.** RGB is converted to luma (`0.299 R + 0.587 G + 0.114 B`,
//!    kept as `f32`); grey input is used as is. The weights sum to 1, so a grey
//!    image gives the same descriptor whether it comes as 1 or 3 channels.
//!    With `trim_borders` (the default), uniform borders are then cut off
//!    ([`crate::borders`]), so framed or padded copies describe like their
//!    originals.
//! 2. **Resize** to a fixed [`GRID`]×[`GRID`] (32×32) square with an
//!    antialiased tent (bilinear) convolution from `fast_image_resize`, whose
//!    support widens with the scale factor so every source pixel contributes
//!    (area-like averaging). The aspect ratio is dropped on purpose: resized
//!    copies of an image share the same square thumbnail.
//! 3. **Centre window.** The window-weighted mean is subtracted and the
//!    thumbnail is multiplied by a separable Gaussian window centred on the
//!    image, with a standard deviation of `window` (0.225) of the side,
//!    so the outermost rows and columns weigh about a tenth of the centre.
//!    Crops remove the border and stretch what is left, which moves content
//!    most far from the centre; damping the border makes the descriptor much
//!    more tolerant of crops (on the test photos the rank-1 rate for 8 %
//!    crops went from 93 % to 99 %) at little cost elsewhere.
//! 4. **DCT.** An orthonormal 2-D DCT-II, computed as two products with a
//!    precomputed cosine matrix, restricted to the lowest `block`×`block`
//!    frequencies (9×9 by default): `Y = C · X · Cᵀ` where `C` holds the
//!    first `block` rows of the 32-point DCT matrix.
//! 5. **Features.** The low-frequency coefficients without the DC term give
//!    the `block² − 1` entries (80 by default), in row-major order of `(u, v)`
//!    (vertical, horizontal frequency) skipping `(0, 0)`. With the default
//!    [`Weighting::Coarse`], coefficient `(u, v)` is scaled by
//!    `(u² + v²)^(-1/4)`, which favours the coarsest structure (the most
//!    stable under crops and re-encoding) without discarding the finer terms
//!    that tell similar scenes apart.
//! 6. **L2 normalisation**, so that cosine similarity is a dot product.
//!
//! The defaults ([`DctParams::default`]: block 9, window 0.225, coarse
//! weighting) were chosen on a sweep over the 84 photos in `data/photos` with
//! the copies of `tests/near_duplicates.rs`. Collections of small, alike
//! images (Fashion-MNIST at 28 px, where hundreds of different products share
//! the same low-frequency silhouette) need more detail: block 16, window 0.3
//! and flat weighting separate re-encoded and resized copies (cosine ≥ 0.995)
//! from the nearest different product (see docs/workflow-reference.md).
//!
//! # Invariances
//!
//! * **Resizing** (any filter): the 32×32 antialiased thumbnail of a resized
//!   copy is nearly the same, and only low frequencies are kept.
//! * **JPEG re-encoding** and other light noise: compression artefacts live
//!   in high frequencies, which are discarded.
//! * **Brightness shifts** are removed exactly by the mean subtraction (up to
//!   the clipping of pixels at 0 or 255), and **contrast** changes (a scale of
//!   the grey levels) by the L2 normalisation.
//! * **Light crops** (up to about 10 % per side) are tolerated thanks to the
//!   centre window and the low frequencies; centred crops much better than
//!   crops taken from one corner, which also shift the content (on the test
//!   photos, rank-1 retrieval is 96 % for a 10 % crop on every side but 77 %
//!   for 10 % cut from the right and bottom only).
//! * **Colour**: only luma is used, so colour changes that keep the luma do
//!   not matter.
//!
//! * **Borders and padding** added around an image are trimmed first.
//! * **Mirroring** is not absorbed by the descriptor itself, but
//!   [`DctDescriptor::mirror`] gives the mirrored image's descriptor exactly
//!   and at no cost; the embed stage writes it beside the descriptor so dedup
//!   compares both orientations.
//!
//! It is *not* invariant to vertical flips, rotations, large crops or heavy overlays,
//! and, being a global low-frequency summary, it rates different photos of
//! the same scene taken a moment apart (video frames, stereo pairs,
//! calibration series) about as similar as true copies.
//!
//! # Featureless images
//!
//! An image without structure (all pixels equal, or so nearly flat that the
//! kept coefficients have an L2 norm below 10⁻³ grey levels) has no direction
//! to normalise: its descriptor is the **all-zero vector**, never NaN. Its dot product with any
//! descriptor, including another zero vector, is 0, so featureless images
//! never count as duplicates of anything; callers that want to dedup blank
//! images must test for the zero vector themselves.

use std::sync::OnceLock;

use crate::borders::{content_window, crop};
use crate::shape::{ShapeError, check_image};

use fast_image_resize::images::{TypedImage, TypedImageRef};
use fast_image_resize::pixels::F32;
use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Side of the square grey thumbnail the DCT runs on.
pub const GRID: usize = 32;

/// Number of entries in a descriptor with the default parameters: the 9×9
/// low-frequency block without its DC term (80).
pub const DESCRIPTOR_DIM: usize = 80;

/// The tunable parameters of the descriptor (the embed stage's `descriptor:`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DctParams {
    /// Side of the low-frequency DCT block kept (frequencies `0..block` in
    /// each direction, 2 to 32): the descriptor has `block² − 1` entries.
    #[serde(default = "default_block")]
    pub block: usize,
    /// Standard deviation of the Gaussian centre window, as a fraction of the
    /// thumbnail side (above 0; 10 or more is practically no window).
    #[serde(default = "default_window")]
    pub window: f32,
    /// How the coefficients are weighted before normalisation.
    #[serde(default)]
    pub weighting: Weighting,
    /// Trim uniform borders (added frames, padding, letterboxing) before describing
    /// ([`crate::borders`]). Off for sets whose images share a plain background on purpose
    /// (Fashion-MNIST's black), where trimming would only magnify the objects.
    #[serde(default = "default_trim_borders")]
    pub trim_borders: bool,
}

fn default_trim_borders() -> bool {
    true
}

fn default_block() -> usize {
    9
}
fn default_window() -> f32 {
    0.225
}

impl Default for DctParams {
    fn default() -> Self {
        Self {
            block: default_block(),
            window: default_window(),
            weighting: Weighting::default(),
            trim_borders: default_trim_borders(),
        }
    }
}

/// Weights of the DCT coefficients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Weighting {
    /// `(u² + v²)^(-1/4)`: coarse structure counts most (tolerates crops).
    #[default]
    Coarse,
    /// Every coefficient as computed (tells apart alike images).
    Flat,
}

/// Below this L2 norm (in grey levels, before normalisation) the image is
/// treated as featureless and gets the zero vector.
const MIN_ENERGY: f32 = 1e-3;

/// Luma weights (ITU-R BT.601) for R, G and B; they sum to 1.
const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

/// Why [`dct_descriptor`] rejected its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    /// The buffer is not an image of the stated shape.
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// A parameter is out of range.
    #[error("descriptor parameter `{name}` {reason}")]
    Parameter {
        /// The parameter (`block` or `window`).
        name: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// The resizer failed on an input that passed validation (not expected
    /// to happen; reported instead of panicking).
    #[error("resizing to the {GRID}x{GRID} thumbnail failed: {0}")]
    Resize(String),
}

/// A descriptor with fixed parameters and its precomputed tables; shared by
/// every thread that describes images.
#[derive(Debug, Clone)]
pub struct DctDescriptor {
    /// Side of the kept block.
    block: usize,
    /// First `block` rows of the orthonormal `GRID`-point DCT-II matrix,
    /// row-major (`block × GRID`).
    dct: Vec<f32>,
    /// The 1-D Gaussian centre window (`GRID` entries).
    window: Vec<f32>,
    /// Weight of each kept coefficient, in output order (`block² − 1`).
    weights: Vec<f32>,
    /// Whether uniform borders are trimmed first.
    trim_borders: bool,
}

impl DctDescriptor {
    /// Builds the tables for `params`.
    ///
    /// # Errors
    ///
    /// [`DescriptorError::Parameter`] if `block` is outside 2..=32 or
    /// `window` is not a positive number.
    pub fn new(params: &DctParams) -> Result<Self, DescriptorError> {
        let block = params.block;
        if !(2..=GRID).contains(&block) {
            return Err(DescriptorError::Parameter {
                name: "block",
                reason: format!("is {block}; it must be between 2 and {GRID}"),
            });
        }
        if !(params.window.is_finite() && params.window > 0.0) {
            return Err(DescriptorError::Parameter {
                name: "window",
                reason: format!(
                    "is {}; it must be a positive fraction of the side (default 0.225)",
                    params.window
                ),
            });
        }
        let n = GRID as f64;
        let mut dct = Vec::with_capacity(block * GRID);
        for k in 0..block {
            let scale = if k == 0 {
                (1.0 / n).sqrt()
            } else {
                (2.0 / n).sqrt()
            };
            for i in 0..GRID {
                let angle = std::f64::consts::PI * (2 * i + 1) as f64 * k as f64 / (2.0 * n);
                dct.push((scale * angle.cos()) as f32);
            }
        }
        let sigma = f64::from(params.window);
        let window = (0..GRID)
            .map(|i| {
                let t = (i as f64 + 0.5) / n - 0.5;
                (-t * t / (2.0 * sigma * sigma)).exp() as f32
            })
            .collect();
        let mut weights = Vec::with_capacity(block * block - 1);
        for u in 0..block {
            for v in 0..block {
                if u == 0 && v == 0 {
                    continue;
                }
                weights.push(match params.weighting {
                    Weighting::Coarse => ((u * u + v * v) as f64).powf(-0.25) as f32,
                    Weighting::Flat => 1.0,
                });
            }
        }
        Ok(Self {
            block,
            dct,
            window,
            weights,
            trim_borders: params.trim_borders,
        })
    }

    /// The descriptor of the horizontally mirrored image, from the descriptor `desc` of the image:
    /// mirroring multiplies DCT coefficient `(u, v)` by `(−1)^v`, and the window, the mean and
    /// the weights are symmetric, so this equals describing the mirrored pixels (up to rounding in
    /// the resize).
    pub fn mirror(&self, desc: &[f32]) -> Vec<f32> {
        (0..self.block)
            .flat_map(|u| (0..self.block).map(move |v| (u, v)))
            .filter(|&uv| uv != (0, 0))
            .zip(desc)
            .map(|((_, v), &x)| if v % 2 == 1 { -x } else { x })
            .collect()
    }

    /// Number of entries in a descriptor (`block² − 1`).
    pub fn dim(&self) -> usize {
        self.block * self.block - 1
    }

    /// Computes the copy-detection descriptor of an 8-bit image.
    ///
    /// `pixels` is row-major with interleaved channels, `width × height ×
    /// channels` bytes long; `channels` is 1 (grey) or 3 (RGB). The result has
    /// [`Self::dim`] entries and unit L2 norm, so the cosine similarity of
    /// two images is the dot product of their descriptors. A featureless
    /// (constant) image gives the all-zero vector instead (see the module doc).
    ///
    /// # Errors
    ///
    /// [`DescriptorError::Shape`] if `pixels` is not a `width × height` image of `channels` (1 or
    /// 3) channels ([`check_image`]).
    pub fn describe(
        &self,
        pixels: &[u8],
        width: u32,
        height: u32,
        channels: u8,
    ) -> Result<Vec<f32>, DescriptorError> {
        check_image(pixels.len(), width, height, channels)?;
        let grey: Vec<F32> = if channels == 1 {
            pixels.iter().map(|&p| F32::new(f32::from(p))).collect()
        } else {
            pixels
                .chunks_exact(3)
                .map(|rgb| {
                    F32::new(
                        LUMA[0] * f32::from(rgb[0])
                            + LUMA[1] * f32::from(rgb[1])
                            + LUMA[2] * f32::from(rgb[2]),
                    )
                })
                .collect()
        };
        let thumb = if self.trim_borders {
            let window = content_window(&grey, width, height);
            if window.width == width && window.height == height {
                thumbnail(&grey, width, height)?
            } else {
                thumbnail(&crop(&grey, width, window), window.width, window.height)?
            }
        } else {
            thumbnail(&grey, width, height)?
        };
        Ok(self.describe_thumbnail(&thumb))
    }

    /// Window, DCT, weighting and normalisation of a `GRID`×`GRID` thumbnail.
    fn describe_thumbnail(&self, thumb: &[f32]) -> Vec<f32> {
        let t = self;
        let block = self.block;

        // Subtract the window-weighted mean, then apply the window: the result
        // sums to zero (no DC) and ignores additive brightness shifts.
        let (mut weighted, mut total) = (0.0f64, 0.0f64);
        for (i, row) in thumb.chunks_exact(GRID).enumerate() {
            for (j, &p) in row.iter().enumerate() {
                let w = f64::from(t.window[i] * t.window[j]);
                weighted += w * f64::from(p);
                total += w;
            }
        }
        let mean = (weighted / total) as f32;
        let x: Vec<f32> = thumb
            .iter()
            .enumerate()
            .map(|(k, &p)| (p - mean) * t.window[k / GRID] * t.window[k % GRID])
            .collect();

        // First product: rows = C · X (block × GRID).
        let mut rows = vec![0.0f32; block * GRID];
        for u in 0..block {
            let c = &t.dct[u * GRID..(u + 1) * GRID];
            let out = &mut rows[u * GRID..(u + 1) * GRID];
            for (i, &ci) in c.iter().enumerate() {
                let xi = &x[i * GRID..(i + 1) * GRID];
                for (o, &xv) in out.iter_mut().zip(xi) {
                    *o += ci * xv;
                }
            }
        }

        // Second product: Y = rows · Cᵀ, keeping the block without (0, 0).
        let mut desc = Vec::with_capacity(self.dim());
        for u in 0..block {
            let r = &rows[u * GRID..(u + 1) * GRID];
            for v in 0..block {
                if u == 0 && v == 0 {
                    continue;
                }
                let c = &t.dct[v * GRID..(v + 1) * GRID];
                let y: f32 = r.iter().zip(c).map(|(a, b)| a * b).sum();
                desc.push(y * t.weights[desc.len()]);
            }
        }

        let norm = desc.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm.is_finite() && norm >= MIN_ENERGY {
            for v in &mut desc {
                *v /= norm;
            }
        } else {
            desc.fill(0.0);
        }
        desc
    }
}

/// Resizes the grey image to the `GRID`×`GRID` thumbnail (row-major).
fn thumbnail(grey: &[F32], width: u32, height: u32) -> Result<Vec<f32>, DescriptorError> {
    let src = TypedImageRef::new(width, height, grey)
        .map_err(|e| DescriptorError::Resize(format!("source view: {e}")))?;
    let mut dst = TypedImage::<F32>::new(GRID as u32, GRID as u32);
    Resizer::new()
        .resize_typed(
            &src,
            &mut dst,
            &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
        )
        .map_err(|e| DescriptorError::Resize(e.to_string()))?;
    Ok(dst.pixels().iter().map(|p| p.0).collect())
}

/// The descriptor with the default parameters ([`DctParams::default`]), as
/// one call: see [`DctDescriptor::describe`].
///
/// # Errors
///
/// As [`DctDescriptor::describe`].
pub fn dct_descriptor(
    pixels: &[u8],
    width: u32,
    height: u32,
    channels: u8,
) -> Result<Vec<f32>, DescriptorError> {
    static DEFAULT: OnceLock<DctDescriptor> = OnceLock::new();
    DEFAULT
        .get_or_init(|| DctDescriptor::new(&DctParams::default()).expect("defaults are valid"))
        .describe(pixels, width, height, channels)
}
