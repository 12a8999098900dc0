//! Geometric verification of candidate copies for `dedup`.
//!
//! A global descriptor ranks a slightly cropped or shifted copy near its original but, on small
//! and alike images (28 px Fashion-MNIST), below many different products, so no cosine threshold
//! separates them. Verification looks at the pixels of each candidate pair instead: both images
//! are made grey `size`×`size`, one is zoomed about its centre and shifted over a small grid of
//! transforms, and the best mean-centred pixel cosine over the grid decides. A copy reaches
//! nearly 1 at its true transform; a different image stays well below at every one.

use arrow_array::cast::AsArray;
use dinoflow_engine::{StageContext, StageError};
use dinoflow_storage::schemas::images;
use dinoflow_vision::tch::{Device, Kind, Tensor};
use dinoflow_vision::tensor::{ImageTransform, images_to_tensor};
use futures::TryStreamExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::CurateError;

/// `grid_sampler` interpolation mode: bilinear.
const MODE_BILINEAR: i64 = 0;
/// `grid_sampler` padding mode: border.
const PADDING_BORDER: i64 = 1;
/// Anchor images warped at once, at most.
const CHUNK: usize = 256;
/// Bytes of warped images, or of partner rows, held at once.
const CHUNK_BYTES: usize = 64 << 20;

/// Configuration of `dedup`'s geometric verification (`verify:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    /// Descriptor cosine above which a pair in the kNN graph is verified.
    #[serde(default = "default_candidates")]
    pub candidates: f64,
    /// Best aligned pixel cosine above which a verified pair is a copy.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Side of the grey images compared, in pixels.
    #[serde(default = "default_size")]
    pub size: i64,
    /// Zoom factors tried run from `1 / (1 + zoom)` to `1 + zoom`.
    #[serde(default = "default_zoom")]
    pub zoom: f64,
    /// Number of zoom factors tried (odd numbers include 1).
    #[serde(default = "default_zoom_steps")]
    pub zoom_steps: usize,
    /// Shifts tried: every whole number of pixels from `-shift` to `shift`, in each direction.
    #[serde(default = "default_shift")]
    pub shift: i64,
}

fn default_candidates() -> f64 {
    0.8
}
fn default_threshold() -> f64 {
    0.97
}
fn default_size() -> i64 {
    32
}
fn default_zoom() -> f64 {
    0.1
}
fn default_zoom_steps() -> usize {
    5
}
fn default_shift() -> i64 {
    1
}

impl VerifyConfig {
    /// Checks the values, naming the field at fault.
    pub fn check(&self) -> Result<(), CurateError> {
        let bad = |m: String| Err(CurateError::Config(format!("verify: {m}")));
        for (name, v) in [
            ("candidates", self.candidates),
            ("threshold", self.threshold),
        ] {
            if !(-1.0..=1.0).contains(&v) {
                return bad(format!(
                    "{name} {v} is a cosine similarity: it must be in [-1, 1]"
                ));
            }
        }
        if !(4..=256).contains(&self.size) {
            return bad(format!("size {} must be from 4 to 256 pixels", self.size));
        }
        if !(0.0..1.0).contains(&self.zoom) {
            return bad(format!("zoom {} must be in [0, 1)", self.zoom));
        }
        if !(1..=33).contains(&self.zoom_steps) {
            return bad(format!(
                "zoom_steps {} must be from 1 to 33",
                self.zoom_steps
            ));
        }
        if !(0..=self.size / 4).contains(&self.shift) {
            return bad(format!(
                "shift {} must be from 0 to a quarter of size ({})",
                self.shift,
                self.size / 4
            ));
        }
        Ok(())
    }

    /// The (Z, 2, 3) affine matrices of every zoom about the centre, for `affine_grid` without
    /// aligned corners: output point `p` samples the input at `p / zoom`.
    fn zooms(&self) -> Tensor {
        let steps = self.zoom_steps.max(1);
        let (low, high) = ((1.0 / (1.0 + self.zoom)).ln(), (1.0 + self.zoom).ln());
        let mut values = Vec::new();
        for z in 0..steps {
            let t = if steps == 1 {
                0.5
            } else {
                z as f64 / (steps - 1) as f64
            };
            let zoom = (low + t * (high - low)).exp();
            values.extend([1.0 / zoom, 0.0, 0.0, 0.0, 1.0 / zoom, 0.0]);
        }
        let t = values.len() as i64 / 6;
        Tensor::from_slice(&values)
            .to_kind(Kind::Float)
            .view([t, 2, 3])
    }
}

/// Grey `size`×`size` pixels of an images dataset, one row per image, with the image ids.
pub struct Pixels {
    /// The image ids, in dataset order.
    pub ids: Vec<String>,
    /// (N, size · size) floats in [0, 1].
    pub data: Tensor,
}

/// Reads the images dataset on input `port` as grey `size`×`size` pixels on `device`.
pub async fn read_pixels(
    ctx: &StageContext,
    port: &str,
    size: i64,
    device: Device,
) -> Result<Pixels, StageError> {
    let dataset = ctx.input_dataset(port)?;
    let transform = ImageTransform {
        size,
        channels: 1,
        crop_fraction: 1.0,
    };
    let mut ids = Vec::with_capacity(dataset.rows() as usize);
    let mut parts = Vec::new();
    let mut stream = std::pin::pin!(dataset.batches(4_096));
    while let Some(batch) = stream.try_next().await? {
        let id = batch
            .column_by_name(images::ID)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| {
                StageError::failed(CurateError::Input(format!(
                    "`{port}`: the images have no text `id` column"
                )))
            })?;
        ids.extend(id.iter().map(|v| v.unwrap_or_default().to_string()));
        let x = images_to_tensor(&batch, &transform, device)
            .map_err(|e| StageError::failed(CurateError::Input(format!("`{port}`: {e}"))))?;
        parts.push(x.flatten(1, -1));
    }
    let data = if parts.is_empty() {
        Tensor::zeros([0, size * size], (Kind::Float, device))
    } else {
        Tensor::cat(&parts, 0)
    };
    Ok(Pixels { ids, data })
}

/// Mean-centred, unit-length rows (a constant row stays all zero).
fn centred_unit(x: &Tensor) -> Tensor {
    let centred = x - x.mean_dim(-1, true, Kind::Float);
    let norm = centred
        .norm_scalaropt_dim(2, [-1i64].as_slice(), true)
        .clamp_min(1e-6);
    centred / norm
}

/// Splits the anchors (sorted by partner count) into runs whose warps (`transforms` images of
/// `pixels` each per anchor) and padded partner rows take at most [`CHUNK_BYTES`] (a single
/// anchor may take more), and at most [`CHUNK`] anchors.
fn chunks<'a>(
    anchors: &'a [usize],
    partners: &'a [Vec<(i64, usize)>],
    transforms: usize,
    pixels: usize,
) -> impl Iterator<Item = &'a [usize]> + 'a {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= anchors.len() {
            return None;
        }
        let mut end = start + 1;
        while end < anchors.len() && end - start < CHUNK {
            let rows = end + 1 - start;
            let widest = partners[anchors[end]].len();
            let bytes = 4 * rows * (transforms + widest) * pixels;
            if bytes > CHUNK_BYTES {
                break;
            }
            end += 1;
        }
        let chunk = &anchors[start..end];
        start = end;
        Some(chunk)
    })
}

/// The best aligned pixel cosine of every pair `(a, b)` of rows of `pixels` ((N, size²) grey):
/// the maximum over the configured zooms and shifts of either image against the other, plain.
pub fn aligned_similarity(
    pixels: &Tensor,
    pairs: &[(usize, usize)],
    config: &VerifyConfig,
) -> Result<Vec<f32>, CurateError> {
    let mut best = vec![f32::NEG_INFINITY; pairs.len()];
    let n = pixels.size()[0] as usize;
    if pairs.is_empty() {
        return Ok(best);
    }
    if let Some(&(a, b)) = pairs.iter().find(|(a, b)| *a >= n || *b >= n) {
        return Err(CurateError::Input(format!(
            "pair ({a}, {b}) names a row beyond the {n} images"
        )));
    }
    // Every pair is scored from both ends: row a's warps against row b, and b's against a.
    let mut partners: Vec<Vec<(i64, usize)>> = vec![Vec::new(); n];
    for (p, &(a, b)) in pairs.iter().enumerate() {
        partners[a].push((b as i64, p));
        partners[b].push((a as i64, p));
    }
    let size = config.size;
    let device = pixels.device();
    let plain = centred_unit(pixels);
    let zooms = config.zooms().to_device(device);
    let z = zooms.size()[0];
    let shift = config.shift;
    let t = z * (2 * shift + 1) * (2 * shift + 1);
    // Anchors with alike partner counts share a chunk, so little of it is padding.
    let mut anchors: Vec<usize> = (0..n).filter(|&i| !partners[i].is_empty()).collect();
    anchors.sort_by_key(|&i| partners[i].len());
    for chunk in chunks(&anchors, &partners, t as usize, (size * size) as usize) {
        let c = chunk.len() as i64;
        let index = Tensor::from_slice(&chunk.iter().map(|&i| i as i64).collect::<Vec<_>>())
            .to_device(device);
        // Centred first, so that the warps' means are small and their centred lengths below
        // lose no precision.
        let picked = pixels.index_select(0, &index);
        let images = (&picked - picked.mean_dim(-1, true, Kind::Float))
            .view([c, 1, size, size])
            .repeat_interleave_self_int(z, 0, None);
        let theta = zooms.repeat([c, 1, 1]);
        let grid = Tensor::f_affine_grid_generator(&theta, [c * z, 1, size, size], false)
            .map_err(|e| CurateError::Search(e.to_string()))?;
        let zoomed = images
            .f_grid_sampler(&grid, MODE_BILINEAR, PADDING_BORDER, false)
            .map_err(|e| CurateError::Search(e.to_string()))?;
        // Whole-pixel shifts are windows of the edge-padded zoom (the content moves by dx, dy).
        let padded = zoomed.replication_pad2d([shift, shift, shift, shift]);
        let mut shifted = Vec::with_capacity((t / z) as usize);
        for dy in -shift..=shift {
            for dx in -shift..=shift {
                shifted.push(
                    padded
                        .narrow(2, shift - dy, size)
                        .narrow(3, shift - dx, size),
                );
            }
        }
        let warped = Tensor::stack(&shifted, 1).view([c, t, size * size]);
        // Against a mean-centred partner the warp's mean drops out of the dot product; only the
        // length of the centred warp is needed: |w - mean|² = |w|² - mean² · size² (warping
        // keeps constants, so warps of centred images have means near 0).
        let pixels_per_image = (size * size) as f64;
        let mean = warped.mean_dim(-1, true, Kind::Float);
        let centred_norm = (warped.square().sum_dim_intlist(-1, true, Kind::Float)
            - mean.square() * pixels_per_image)
            .clamp_min(1e-12)
            .sqrt();
        // Each anchor's partners, padded with row 0 to the longest list of the chunk.
        let width = chunk.iter().map(|&a| partners[a].len()).max().unwrap_or(0);
        let mut rows = Vec::with_capacity(chunk.len() * width);
        for &anchor in chunk {
            let list = &partners[anchor];
            rows.extend(list.iter().map(|&(row, _)| row));
            rows.extend(std::iter::repeat_n(0, width - list.len()));
        }
        let others = plain
            .index_select(0, &Tensor::from_slice(&rows).to_device(device))
            .view([c, width as i64, size * size]);
        let scores = (warped.bmm(&others.transpose(1, 2)) / centred_norm)
            .amax([1i64].as_slice(), false)
            .to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .flatten(0, -1);
        let scores =
            Vec::<f32>::try_from(scores).map_err(|e| CurateError::Search(e.to_string()))?;
        for (k, &anchor) in chunk.iter().enumerate() {
            for (j, &(_, slot)) in partners[anchor].iter().enumerate() {
                best[slot] = best[slot].max(scores[k * width + j]);
            }
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> VerifyConfig {
        VerifyConfig {
            candidates: 0.8,
            threshold: 0.97,
            size: 28,
            zoom: 0.1,
            zoom_steps: 5,
            shift: 1,
        }
    }

    /// A 28×28 image: a bright ellipse with a notch, off centre, on a dark background.
    fn shape(cx: f64, cy: f64, rx: f64, ry: f64) -> Vec<f32> {
        let mut v = Vec::with_capacity(28 * 28);
        for y in 0..28 {
            for x in 0..28 {
                let (u, w) = ((x as f64 + 0.5 - cx) / rx, (y as f64 + 0.5 - cy) / ry);
                let inside = u * u + w * w <= 1.0 && !(u > 0.3 && w.abs() < 0.2);
                v.push(if inside { 0.9 } else { 0.05 });
            }
        }
        v
    }

    /// The centre 26×26 of `img` (28×28) enlarged back to 28×28 by bilinear interpolation,
    /// written out here (pixel centres, edges clamped) rather than with the code under test.
    fn crop_one_pixel(img: &[f32]) -> Vec<f32> {
        let at = |x: i64, y: i64| img[(y.clamp(0, 27) * 28 + x.clamp(0, 27)) as usize];
        let mut out = Vec::with_capacity(28 * 28);
        for y in 0..28 {
            for x in 0..28 {
                let sx = 1.0 + (x as f64 + 0.5) * 26.0 / 28.0 - 0.5;
                let sy = 1.0 + (y as f64 + 0.5) * 26.0 / 28.0 - 0.5;
                let (x0, y0) = (sx.floor() as i64, sy.floor() as i64);
                let (fx, fy) = ((sx - x0 as f64) as f32, (sy - y0 as f64) as f32);
                out.push(
                    at(x0, y0) * (1.0 - fx) * (1.0 - fy)
                        + at(x0 + 1, y0) * fx * (1.0 - fy)
                        + at(x0, y0 + 1) * (1.0 - fx) * fy
                        + at(x0 + 1, y0 + 1) * fx * fy,
                );
            }
        }
        out
    }

    fn plain_cosine(a: &[f32], b: &[f32]) -> f32 {
        let centre = |v: &[f32]| {
            let m = v.iter().sum::<f32>() / v.len() as f32;
            v.iter().map(|x| x - m).collect::<Vec<_>>()
        };
        let (a, b) = (centre(a), centre(b));
        let dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (norm(&a) * norm(&b))
    }

    #[test]
    fn a_cropped_copy_aligns_and_a_different_shape_does_not() {
        let original = shape(13.0, 15.0, 9.0, 6.0);
        let cropped = crop_one_pixel(&original);
        let other = shape(15.0, 13.0, 6.0, 9.0);
        let shifted: Vec<f32> = (0..28 * 28usize)
            .map(|i| original[(i / 28) * 28 + (i % 28).saturating_sub(1)])
            .collect();
        let rows: Vec<f32> = [
            original.as_slice(),
            cropped.as_slice(),
            other.as_slice(),
            shifted.as_slice(),
        ]
        .concat();
        let pixels = Tensor::from_slice(&rows).view([4, 28 * 28]);
        let pairs = [(0, 1), (1, 0), (0, 2), (0, 3), (2, 2)];
        let s = aligned_similarity(&pixels, &pairs, &config()).unwrap();
        // Unaligned, the crop is clearly less alike than its aligned score.
        assert!(plain_cosine(&original, &cropped) < 0.95);
        assert!(s[0] > 0.99, "crop aligned {}", s[0]);
        assert_eq!(s[0], s[1], "a pair scores the same from either end");
        assert!(s[2] < 0.9, "a different shape aligned {}", s[2]);
        assert!(s[3] > 0.99, "a one-pixel shift aligned {}", s[3]);
        assert!(s[4] > 0.999, "an image with itself {}", s[4]);
        // Cosines do not depend on contrast: faint versions of the images score the same.
        let faint = |v: &[f32]| v.iter().map(|x| 0.5 + 0.002 * x).collect::<Vec<f32>>();
        let faint_rows = [faint(&original), faint(&other)].concat();
        let faint_pixels = Tensor::from_slice(&faint_rows).view([2, 28 * 28]);
        let f = aligned_similarity(&faint_pixels, &[(0, 1)], &config()).unwrap();
        assert!((f[0] - s[2]).abs() < 1e-3, "faint {} vs {}", f[0], s[2]);
        // Without zoom the crop is no longer matched as well.
        let no_zoom = VerifyConfig {
            zoom: 0.0,
            zoom_steps: 1,
            ..config()
        };
        let s0 = aligned_similarity(&pixels, &pairs[..1], &no_zoom).unwrap();
        assert!(s0[0] < s[0] - 0.01, "without zoom {} vs {}", s0[0], s[0]);
    }

    #[test]
    fn scores_do_not_depend_on_how_the_pairs_are_batched() {
        // 600 distinct shapes: more anchors than one chunk holds.
        let rows: Vec<f32> = (0..600)
            .flat_map(|i| {
                let f = i as f64;
                shape(
                    10.0 + (f * 0.37) % 8.0,
                    10.0 + (f * 0.61) % 8.0,
                    4.0 + f % 7.0,
                    4.0 + (f * 1.3) % 6.0,
                )
            })
            .collect();
        let pixels = Tensor::from_slice(&rows).view([600, 28 * 28]);
        let pairs: Vec<(usize, usize)> = (0..600).map(|i| (i, (i * 7 + 3) % 600)).collect();
        let together = aligned_similarity(&pixels, &pairs, &config()).unwrap();
        for (p, pair) in pairs.iter().enumerate().step_by(37) {
            let alone = aligned_similarity(&pixels, &[*pair], &config()).unwrap();
            assert!(
                (alone[0] - together[p]).abs() < 1e-5,
                "pair {pair:?}: {} alone, {} together",
                alone[0],
                together[p]
            );
        }
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (
                VerifyConfig {
                    threshold: 1.5,
                    ..config()
                },
                "threshold",
            ),
            (
                VerifyConfig {
                    size: 2,
                    ..config()
                },
                "size",
            ),
            (
                VerifyConfig {
                    zoom: 1.0,
                    ..config()
                },
                "zoom",
            ),
            (
                VerifyConfig {
                    zoom_steps: 0,
                    ..config()
                },
                "zoom_steps",
            ),
            (
                VerifyConfig {
                    shift: 9,
                    ..config()
                },
                "shift",
            ),
        ];
        for (c, field) in cases {
            let e = c.check().unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
        assert!(config().check().is_ok());
    }

    #[test]
    fn a_pair_beyond_the_rows_is_an_error() {
        let pixels = Tensor::zeros([2, 28 * 28], (Kind::Float, Device::Cpu));
        let e = aligned_similarity(&pixels, &[(0, 5)], &config()).unwrap_err();
        assert!(e.to_string().contains("beyond the 2 images"), "{e}");
    }
}
