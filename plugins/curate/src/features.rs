//! Local-feature verification of candidate copies for `dedup` (photos).
//!
//! A global descriptor ranks a cropped, rotated or captioned copy near its original, but also
//! ranks different shots of one scene (a stereo pair, the next video frame) as high, so no cosine
//! threshold separates them. Each candidate pair is therefore checked on its pixels, and the
//! check can confirm a pair or reject it:
//!
//! 1. ORB keypoints and binary descriptors on both grey images (longer side `side`), matched
//!    by Hamming distance with Lowe's ratio test, one match per keypoint of the second image;
//! 2. a similarity transform (rotation, uniform scale, shift) fitted to the matches by RANSAC,
//!    with at least `min_inliers` inliers; the plain resize of one image onto the other is
//!    tried too, as a second hypothesis, for images whose keypoints repeat (grids, text);
//! 3. one image warped onto the other by each hypothesis, and compared block by block: the
//!    share of textured 16×16 blocks whose normalised cross-correlation exceeds
//!    [`BLOCK_CORRELATION`] is the pair's agreement. A copy agrees almost everywhere (an
//!    overlaid caption costs a few blocks); another shot of the same scene does not, because
//!    parallax and motion move its parts differently.
//!
//! A pair is confirmed when a hypothesis overlaps at least `min_overlap` of both images and its
//! agreement reaches `agreement`, rejected otherwise. Images too small or too plain to have
//! `min_keypoints` keypoints (a gradient, a 28 px product shot) are undecided: for them the
//! descriptor decides alone, as without verification. Mirrored pairs are checked with one image
//! flipped. OpenCV (features2d, calib3d, imgproc) does the keypoints, matching, RANSAC and
//! warps; its RANSAC seeds a fixed generator, so a pair's verdict is the same on every run.

use std::collections::HashMap;

use opencv::core::{
    BORDER_CONSTANT, DMatch, KeyPoint, Mat, NORM_HAMMING, Point2f, Scalar, Size, Vector,
};
use opencv::prelude::*;
use opencv::{calib3d, features2d, imgproc};
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::CurateError;
use crate::grey::GreyImage;

/// Lowe's ratio: a match counts when its distance is below this share of the second best's
/// (0.9 rather than the usual 0.8 keeps enough matches on repeated patterns such as a chessboard;
/// the block comparison, not the matches, decides).
pub const RATIO: f32 = 0.9;
/// RANSAC's inlier distance, in pixels of the compared images.
pub const REPROJECTION: f64 = 3.0;
/// Side of the square blocks compared after warping, in pixels.
pub const BLOCK: usize = 16;
/// Normalised cross-correlation above which a block agrees.
pub const BLOCK_CORRELATION: f64 = 0.8;
/// Grey-level standard deviation below which a block is plain; blocks plain in both images are
/// not counted.
pub const PLAIN_BLOCK: f64 = 4.0;
/// Counted blocks a hypothesis needs for a verdict.
pub const MIN_BLOCKS: usize = 8;
/// Images whose shorter side is below this many pixels are undecided (too small for keypoints).
pub const MIN_SIDE: u32 = 32;

/// Configuration of `dedup`'s local-feature verification (`local_features:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FeaturesConfig {
    /// Descriptor cosine above which a pair in the kNN graph is verified.
    #[serde(default = "default_candidates")]
    pub candidates: f64,
    /// Longer side, in pixels, of the grey images compared (larger images are scaled down).
    #[serde(default = "default_side")]
    pub side: u32,
    /// ORB keypoints kept per image, at most.
    #[serde(default = "default_keypoints")]
    pub keypoints: usize,
    /// Keypoints both images need for a verdict; with fewer the pair is undecided and the
    /// descriptor decides alone.
    #[serde(default = "default_min_keypoints")]
    pub min_keypoints: usize,
    /// RANSAC inliers a fitted transform needs.
    #[serde(default = "default_min_inliers")]
    pub min_inliers: usize,
    /// Share of each image the other must cover under the transform (a crop of 20 % on every
    /// side keeps 0.64 of the original).
    #[serde(default = "default_min_overlap")]
    pub min_overlap: f64,
    /// Share of the textured blocks that must agree after warping.
    #[serde(default = "default_agreement")]
    pub agreement: f64,
}

fn default_candidates() -> f64 {
    0.4
}
fn default_side() -> u32 {
    224
}
fn default_keypoints() -> usize {
    1000
}
fn default_min_keypoints() -> usize {
    30
}
fn default_min_inliers() -> usize {
    12
}
fn default_min_overlap() -> f64 {
    0.5
}
fn default_agreement() -> f64 {
    0.5
}

impl Default for FeaturesConfig {
    fn default() -> Self {
        Self {
            candidates: default_candidates(),
            side: default_side(),
            keypoints: default_keypoints(),
            min_keypoints: default_min_keypoints(),
            min_inliers: default_min_inliers(),
            min_overlap: default_min_overlap(),
            agreement: default_agreement(),
        }
    }
}

impl FeaturesConfig {
    /// Checks the values, naming the field at fault.
    pub fn check(&self) -> Result<(), CurateError> {
        let bad = |m: String| Err(CurateError::Config(format!("local_features: {m}")));
        if !(-1.0..=1.0).contains(&self.candidates) {
            return bad(format!(
                "candidates {} is a cosine similarity: it must be in [-1, 1]",
                self.candidates
            ));
        }
        if !(64..=2048).contains(&self.side) {
            return bad(format!("side {} must be from 64 to 2048 pixels", self.side));
        }
        if !(10..=10_000).contains(&self.keypoints) {
            return bad(format!(
                "keypoints {} must be from 10 to 10000",
                self.keypoints
            ));
        }
        if self.min_inliers < 3 || self.min_keypoints < self.min_inliers {
            return bad(format!(
                "min_inliers {} must be at least 3 and at most min_keypoints ({})",
                self.min_inliers, self.min_keypoints
            ));
        }
        for (name, v) in [
            ("min_overlap", self.min_overlap),
            ("agreement", self.agreement),
        ] {
            if !(v > 0.0 && v <= 1.0) {
                return bad(format!("{name} {v} is a share: it must be in (0, 1]"));
            }
        }
        Ok(())
    }
}

/// What verification says of one pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// The images are copies: the share of agreeing blocks under the best transform.
    Confirmed(f32),
    /// Both images have keypoints, and no transform makes them agree.
    Rejected,
    /// Too small or too plain to tell: the descriptor decides.
    Undecided,
}

/// One image's keypoints (pixel positions) and ORB descriptors, in one orientation.
struct Keypoints {
    points: Vec<Point2f>,
    descriptors: Mat,
}

/// A grey image ready for verification: its pixels as an OpenCV matrix and its keypoints, plain
/// and mirrored (`None` when the image is below the size verification needs).
struct Prepared {
    plain: Option<(Mat, Keypoints)>,
    mirrored: Option<(Mat, Keypoints)>,
}

/// Verifies `pairs` (indices into `images`, each already scaled to `side`; `true` to check the second image mirrored first),
/// on up to `threads` threads. Verdicts come in the order of `pairs`.
pub fn verify_pairs(
    images: &[GreyImage],
    pairs: &[(usize, usize, bool)],
    config: &FeaturesConfig,
    threads: usize,
) -> Result<Vec<Verdict>, CurateError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .map_err(|e| CurateError::Worker(e.to_string()))?;
    pool.install(|| {
        // OpenCV's own threads would compete with these.
        opencv::core::set_num_threads(1)?;
        let mut used = vec![false; images.len()];
        for &(a, b, _) in pairs {
            used[a] = true;
            used[b] = true;
        }
        let prepared: Vec<Option<Prepared>> = images
            .par_iter()
            .zip(used.par_iter())
            .map(|(image, &used)| used.then(|| prepare(image, config)).transpose())
            .collect::<Result<_, _>>()?;
        pairs
            .par_iter()
            .map(
                |&(a, b, mirrored_first)| match (&prepared[a], &prepared[b]) {
                    (Some(pa), Some(pb)) => verify_prepared(pa, pb, mirrored_first, config),
                    _ => Ok(Verdict::Undecided),
                },
            )
            .collect()
    })
}

fn orb(config: &FeaturesConfig) -> Result<opencv::core::Ptr<features2d::ORB>, CurateError> {
    // Small images: a 15 px patch and border, and a low FAST threshold (5), find enough corners
    // at 224 px, on plain walls and skies too; 8 pyramid levels at 1.2 cover the scale of a crop
    // or a resize.
    Ok(features2d::ORB::create(
        config.keypoints.min(i32::MAX as usize) as i32,
        1.2,
        8,
        15,
        0,
        2,
        features2d::ORB_ScoreType::HARRIS_SCORE,
        15,
        5,
    )?)
}

/// Finds the keypoints of `image` in both orientations.
fn prepare(image: &GreyImage, config: &FeaturesConfig) -> Result<Prepared, CurateError> {
    if image.width.min(image.height) < MIN_SIDE {
        return Ok(Prepared {
            plain: None,
            mirrored: None,
        });
    }
    let mut detector = orb(config)?;
    let plain = image.to_mat()?;
    let mut flipped = Mat::default();
    opencv::core::flip(&plain, &mut flipped, 1)?;
    let plain_points = detect(&mut detector, &plain)?;
    let mirrored_points = detect(&mut detector, &flipped)?;
    Ok(Prepared {
        plain: Some((plain, plain_points)),
        mirrored: Some((flipped, mirrored_points)),
    })
}

fn detect(
    detector: &mut opencv::core::Ptr<features2d::ORB>,
    image: &Mat,
) -> Result<Keypoints, CurateError> {
    let mut keypoints: Vector<KeyPoint> = Vector::new();
    let mut descriptors = Mat::default();
    detector.detect_and_compute(
        image,
        &Mat::default(),
        &mut keypoints,
        &mut descriptors,
        false,
    )?;
    let points = keypoints.iter().map(|k| k.pt()).collect();
    Ok(Keypoints {
        points,
        descriptors,
    })
}

fn verify_prepared(
    a: &Prepared,
    b: &Prepared,
    mirrored_first: bool,
    config: &FeaturesConfig,
) -> Result<Verdict, CurateError> {
    let Some(first) = &a.plain else {
        return Ok(Verdict::Undecided);
    };
    let orientations = if mirrored_first {
        [&b.mirrored, &b.plain]
    } else {
        [&b.plain, &b.mirrored]
    };
    let mut verdict = Verdict::Undecided;
    for second in orientations.into_iter().flatten() {
        match verify_oriented(first, second, config)? {
            Verdict::Confirmed(share) => return Ok(Verdict::Confirmed(share)),
            Verdict::Rejected => verdict = Verdict::Rejected,
            Verdict::Undecided => {}
        }
    }
    Ok(verdict)
}

/// Verifies image `a` against image `b` as given (one orientation).
fn verify_oriented(
    (a, ka): &(Mat, Keypoints),
    (b, kb): &(Mat, Keypoints),
    config: &FeaturesConfig,
) -> Result<Verdict, CurateError> {
    if ka.points.len() < config.min_keypoints || kb.points.len() < config.min_keypoints {
        return Ok(Verdict::Undecided);
    }
    let mut hypotheses = Vec::with_capacity(2);
    if let Some(m) = fit_similarity(ka, kb, config)? {
        hypotheses.push(m);
    }
    hypotheses.push(resize_transform(a, b)?);
    let mut best: Option<f32> = None;
    for m in &hypotheses {
        if let Some(share) = agreement(a, b, m, config)? {
            best = Some(best.map_or(share, |s| s.max(share)));
        }
    }
    Ok(match best {
        Some(share) if f64::from(share) >= config.agreement => Verdict::Confirmed(share),
        _ => Verdict::Rejected,
    })
}

/// The 2×3 similarity mapping points of `a` to points of `b`, fitted by RANSAC to the ratio-test
/// matches, when it has enough inliers.
fn fit_similarity(
    ka: &Keypoints,
    kb: &Keypoints,
    config: &FeaturesConfig,
) -> Result<Option<[f64; 6]>, CurateError> {
    let matcher = features2d::BFMatcher::new(NORM_HAMMING, false)?;
    let mut matches: Vector<Vector<DMatch>> = Vector::new();
    matcher.knn_train_match(
        &ka.descriptors,
        &kb.descriptors,
        &mut matches,
        2,
        &Mat::default(),
        false,
    )?;
    // One match per point of `b`, the closest: many points of a repeated pattern matched to one
    // point would let RANSAC fit a transform that shrinks the image to that point.
    let mut best_for: HashMap<i32, DMatch> = HashMap::new();
    for pair in &matches {
        if pair.len() < 2 {
            continue;
        }
        let (best, second) = (pair.get(0)?, pair.get(1)?);
        if best.distance < RATIO * second.distance {
            let kept = best_for.entry(best.train_idx).or_insert(best);
            if best.distance < kept.distance {
                *kept = best;
            }
        }
    }
    let mut kept: Vec<DMatch> = best_for.into_values().collect();
    kept.sort_unstable_by_key(|m| (m.query_idx, m.train_idx));
    let from: Vector<Point2f> = kept
        .iter()
        .map(|m| ka.points[m.query_idx as usize])
        .collect();
    let to: Vector<Point2f> = kept
        .iter()
        .map(|m| kb.points[m.train_idx as usize])
        .collect();
    if from.len() < config.min_inliers {
        return Ok(None);
    }
    let mut inliers = Mat::default();
    let m = calib3d::estimate_affine_partial_2d(
        &from,
        &to,
        &mut inliers,
        calib3d::RANSAC,
        REPROJECTION,
        2000,
        0.995,
        10,
    )?;
    if m.empty() || opencv::core::count_non_zero(&inliers)? < config.min_inliers as i32 {
        return Ok(None);
    }
    let mut out = [0.0; 6];
    for (i, v) in out.iter_mut().enumerate() {
        *v = *m.at_2d::<f64>((i / 3) as i32, (i % 3) as i32)?;
    }
    Ok(Some(out))
}

/// The plain resize of `a`'s frame onto `b`'s (each axis scaled on its own).
fn resize_transform(a: &Mat, b: &Mat) -> Result<[f64; 6], CurateError> {
    let (sa, sb) = (a.size()?, b.size()?);
    Ok([
        f64::from(sb.width) / f64::from(sa.width),
        0.0,
        0.0,
        0.0,
        f64::from(sb.height) / f64::from(sa.height),
        0.0,
    ])
}

/// The share of `a`'s textured blocks that agree with `b` sampled at `m · p`, or `None` when the
/// two images overlap less than `min_overlap` of either under `m`, or too few blocks count.
fn agreement(
    a: &Mat,
    b: &Mat,
    m: &[f64; 6],
    config: &FeaturesConfig,
) -> Result<Option<f32>, CurateError> {
    let (sa, sb) = (a.size()?, b.size()?);
    let (wa, ha) = (sa.width as usize, sa.height as usize);
    let (bx, by) = (wa / BLOCK, ha / BLOCK);
    let Some(inverse) = invert(m) else {
        return Ok(None);
    };
    if bx == 0 || by == 0 {
        return Ok(None);
    }
    let of_a = covered_share(m, (sa.width, sa.height), (sb.width, sb.height));
    let of_b = covered_share(&inverse, (sb.width, sb.height), (sa.width, sa.height));
    if of_a.min(of_b) < config.min_overlap {
        return Ok(None);
    }
    let (wb, hb) = (f64::from(sb.width), f64::from(sb.height));
    let inside = |x: f64, y: f64| {
        let (u, v) = apply(m, x, y);
        (0.0..=wb - 1.0).contains(&u) && (0.0..=hb - 1.0).contains(&v)
    };
    let covered: Vec<bool> = (0..bx * by)
        .map(|i| {
            let (x0, y0) = (((i % bx) * BLOCK) as f64, ((i / bx) * BLOCK) as f64);
            let x1 = x0 + (BLOCK - 1) as f64;
            let y1 = y0 + (BLOCK - 1) as f64;
            inside(x0, y0) && inside(x1, y0) && inside(x0, y1) && inside(x1, y1)
        })
        .collect();
    let matrix = Mat::from_slice_2d(&[&m[0..3], &m[3..6]])?;
    let mut warped = Mat::default();
    imgproc::warp_affine(
        b,
        &mut warped,
        &matrix,
        Size::new(sa.width, sa.height),
        imgproc::INTER_LINEAR | imgproc::WARP_INVERSE_MAP,
        BORDER_CONSTANT,
        Scalar::all(0.0),
    )?;
    let (pa, pw) = (a.data_bytes()?, warped.data_bytes()?);
    let (mut counted, mut agreeing) = (0usize, 0usize);
    for (i, _) in covered.iter().enumerate().filter(|(_, c)| **c) {
        let (x0, y0) = ((i % bx) * BLOCK, (i / bx) * BLOCK);
        match block_correlation(pa, pw, wa, x0, y0) {
            None => {}
            Some(r) => {
                counted += 1;
                if r > BLOCK_CORRELATION {
                    agreeing += 1;
                }
            }
        }
    }
    if counted < MIN_BLOCKS {
        return Ok(None);
    }
    Ok(Some(agreeing as f32 / counted as f32))
}

/// `m · (x, y)` for a 2×3 affine matrix in row-major order.
fn apply(m: &[f64; 6], x: f64, y: f64) -> (f64, f64) {
    (m[0] * x + m[1] * y + m[2], m[3] * x + m[4] * y + m[5])
}

/// The inverse of a 2×3 affine matrix, unless it is singular.
fn invert(m: &[f64; 6]) -> Option<[f64; 6]> {
    let det = m[0] * m[4] - m[1] * m[3];
    if det.abs() < 1e-9 || !det.is_finite() {
        return None;
    }
    let (a, b, c, d) = (m[4] / det, -m[1] / det, -m[3] / det, m[0] / det);
    Some([a, b, -(a * m[2] + b * m[5]), c, d, -(c * m[2] + d * m[5])])
}

/// The share of a `from`-sized image (sampled every 4 pixels) that `m` maps inside a `to`-sized
/// one.
fn covered_share(m: &[f64; 6], from: (i32, i32), to: (i32, i32)) -> f64 {
    let (w, h) = (f64::from(to.0), f64::from(to.1));
    let (mut inside, mut all) = (0usize, 0usize);
    for y in (0..from.1).step_by(4) {
        for x in (0..from.0).step_by(4) {
            let (u, v) = apply(m, f64::from(x), f64::from(y));
            all += 1;
            inside += usize::from((0.0..w).contains(&u) && (0.0..h).contains(&v));
        }
    }
    inside as f64 / all.max(1) as f64
}

/// The normalised cross-correlation of the block at (`x0`, `y0`) of two row-major grey images of
/// width `width`, or `None` when the block is plain in both; 0 when plain in one only.
fn block_correlation(a: &[u8], b: &[u8], width: usize, x0: usize, y0: usize) -> Option<f64> {
    let n = (BLOCK * BLOCK) as f64;
    let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for y in y0..y0 + BLOCK {
        let row = y * width;
        for x in x0..x0 + BLOCK {
            let (u, v) = (f64::from(a[row + x]), f64::from(b[row + x]));
            sa += u;
            sb += v;
            saa += u * u;
            sbb += v * v;
            sab += u * v;
        }
    }
    let var_a = (saa - sa * sa / n) / n;
    let var_b = (sbb - sb * sb / n) / n;
    let plain = PLAIN_BLOCK * PLAIN_BLOCK;
    match (var_a < plain, var_b < plain) {
        (true, true) => None,
        (true, false) | (false, true) => Some(0.0),
        (false, false) => Some((sab - sa * sb / n) / n / (var_a * var_b).sqrt()),
    }
}
