//! Near-duplicate retrieval with the built-in DCT descriptor on real photos,
//! plus unit tests of its contract (dimension, normalisation, invariances,
//! errors).
//!
//! The photos come from Debian's opencv-doc and palapeli-data packages and
//! are put in `data/photos` by `make setup` (scripts/setup.sh); the retrieval
//! test fails when they are missing.
//!
//! The photo set has natural near-duplicates, which a global low-frequency
//! descriptor rates about as similar as edited copies; the rank-1 rule counts
//! a query whose top hit is such a sibling as a miss all the same. Descriptor
//! similarity between the originals:
//!
//! * `rubberwhale1.png` / `rubberwhale2.png` (0.9996) and `basketball1.png` /
//!   `basketball2.png` (0.999): consecutive frames of optical-flow sequences;
//! * `left11.jpg` / `left14.jpg` (0.95), `right11.jpg` / `right14.jpg`
//!   (0.93), `left08.jpg` / `left12.jpg` (0.93): stereo-calibration shots of
//!   the same room with the chessboard moved a little;
//! * `aloeL.jpg` / `aloeR.jpg` (0.90): a stereo pair.
//!
//! With the current descriptor the only misses are the two cropped copies
//! (crop 8 %, and crop 5 % + resize + JPEG) of `rubberwhale2.png`, which rank
//! `rubberwhale1.png` first by under 0.005: 418 of 420 queries (99.5 %).

use std::path::{Path, PathBuf};
use std::time::Instant;

use dinoflow_embed::descriptor::{
    DESCRIPTOR_DIM, DctDescriptor, DctParams, DescriptorError, Weighting, dct_descriptor,
};
use dinoflow_embed::shape::ShapeError;
use image::imageops::FilterType;
use image::{DynamicImage, ExtendedColorType, ImageFormat, RgbImage};

/// Where `make setup` puts the test photos.
const PHOTO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/photos");

/// Longest side of the images as the ingest stage stores them.
const MAX_SIDE: u32 = 224;

/// Required share of queries whose true original ranks first.
const MIN_RANK1_RATE: f64 = 0.99;

/// The copy kinds made of every photo, in the order of [`make_copies`].
const KINDS: [&str; 5] = [
    "resize 60% (bilinear)",
    "JPEG quality 50",
    "crop 8% per side",
    "brightness +20",
    "crop 5% + resize 75% + JPEG 70",
];

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn describe_rgb(img: &RgbImage) -> Vec<f32> {
    dct_descriptor(img.as_raw(), img.width(), img.height(), 3)
        .expect("a decoded RGB image is a valid descriptor input")
}

/// The photo files (JPEG and PNG), sorted; fails when setup has not run.
fn photo_paths() -> Vec<PathBuf> {
    let dir = Path::new(PHOTO_DIR);
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| {
        panic!(
            "photo folder {} cannot be read ({e}): run `make setup` first \
             (scripts/setup.sh puts the test photos there)",
            dir.display()
        )
    });
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        })
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 20,
        "only {} photos in {}: run `make setup` first (scripts/setup.sh puts 84 photos there)",
        paths.len(),
        dir.display()
    );
    paths
}

// The image operations below go through `DynamicImage` methods and the
// non-generic JPEG encoder entry point on purpose: those are compiled inside
// the (optimised) `image` crate, while generic `imageops` calls would be
// instantiated in this unoptimised test crate and make it several times slower.

/// Decodes a photo to RGB8, downscaled (Catmull-Rom, like the ingest stage) so
/// its longest side is at most [`MAX_SIDE`].
fn load(path: &Path) -> RgbImage {
    let img = image::open(path).unwrap_or_else(|e| panic!("cannot decode {}: {e}", path.display()));
    let (w, h) = (img.width(), img.height());
    if w.max(h) <= MAX_SIDE {
        return img.to_rgb8();
    }
    let s = f64::from(MAX_SIDE) / f64::from(w.max(h));
    let nw = ((f64::from(w) * s).round() as u32).clamp(1, MAX_SIDE);
    let nh = ((f64::from(h) * s).round() as u32).clamp(1, MAX_SIDE);
    DynamicImage::ImageRgb8(img.to_rgb8())
        .resize_exact(nw, nh, FilterType::CatmullRom)
        .to_rgb8()
}

fn scale(img: &DynamicImage, factor: f64, filter: FilterType) -> DynamicImage {
    let w = ((f64::from(img.width()) * factor).round() as u32).max(1);
    let h = ((f64::from(img.height()) * factor).round() as u32).max(1);
    img.resize_exact(w, h, filter)
}

fn reencode_jpeg(img: &DynamicImage, quality: u8) -> DynamicImage {
    let rgb = img.to_rgb8();
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality)
        .encode(
            rgb.as_raw(),
            rgb.width(),
            rgb.height(),
            ExtendedColorType::Rgb8,
        )
        .expect("JPEG encoding to memory");
    image::load_from_memory_with_format(&bytes, ImageFormat::Jpeg).expect("decoding our own JPEG")
}

/// Removes `fraction` of the width and height on every side.
fn crop(img: &DynamicImage, fraction: f64) -> DynamicImage {
    let (w, h) = (img.width(), img.height());
    let x = (f64::from(w) * fraction).round() as u32;
    let y = (f64::from(h) * fraction).round() as u32;
    img.crop_imm(x, y, w - 2 * x, h - 2 * y)
}

/// The copies of one photo, one per entry of [`KINDS`].
fn make_copies(img: &RgbImage) -> [RgbImage; 5] {
    let img = DynamicImage::ImageRgb8(img.clone());
    [
        scale(&img, 0.60, FilterType::Triangle),
        reencode_jpeg(&img, 50),
        crop(&img, 0.08),
        img.brighten(20),
        reencode_jpeg(&scale(&crop(&img, 0.05), 0.75, FilterType::Triangle), 70),
    ]
    .map(|copy| copy.to_rgb8())
}

#[test]
fn copies_retrieve_their_original() {
    let start = Instant::now();
    let paths = photo_paths();
    let names: Vec<String> = paths
        .iter()
        .map(|p| {
            p.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        })
        .collect();

    let mut database = Vec::with_capacity(paths.len());
    let mut queries: Vec<(usize, usize, Vec<f32>)> = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let original = load(path);
        database.push(describe_rgb(&original));
        for (kind, copy) in make_copies(&original).iter().enumerate() {
            queries.push((i, kind, describe_rgb(copy)));
        }
    }

    let mut hits = [0usize; KINDS.len()];
    let mut totals = [0usize; KINDS.len()];
    let mut true_by_kind = [0.0f64; KINDS.len()];
    let (mut true_sum, mut impostor_sum) = (0.0f64, 0.0f64);
    let mut misses = Vec::new();
    for (truth, kind, query) in &queries {
        let sims: Vec<f32> = database.iter().map(|d| dot(d, query)).collect();
        let (best, best_sim) = sims
            .iter()
            .copied()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .expect("the database is not empty");
        let impostor = sims
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != *truth)
            .map(|(_, &s)| s)
            .fold(f32::NEG_INFINITY, f32::max);
        true_sum += f64::from(sims[*truth]);
        impostor_sum += f64::from(impostor);
        totals[*kind] += 1;
        true_by_kind[*kind] += f64::from(sims[*truth]);
        if best == *truth {
            hits[*kind] += 1;
        } else {
            misses.push(format!(
                "{} ({}): true original {:.4}, ranked first {} {:.4}",
                names[*truth], KINDS[*kind], sims[*truth], names[best], best_sim
            ));
        }
    }

    let n = queries.len();
    let rate = hits.iter().sum::<usize>() as f64 / n as f64;
    eprintln!(
        "near-duplicate retrieval: {} originals, {n} queries, descriptor dim {DESCRIPTOR_DIM}",
        database.len()
    );
    for (k, name) in KINDS.iter().enumerate() {
        eprintln!(
            "  {name:32} rank-1 {:>3}/{:<3} = {:5.1}%, mean similarity to original {:.4}",
            hits[k],
            totals[k],
            100.0 * hits[k] as f64 / totals[k] as f64,
            true_by_kind[k] / totals[k] as f64
        );
    }
    eprintln!(
        "  overall rank-1 rate {:.2}% (required {:.0}%)",
        100.0 * rate,
        100.0 * MIN_RANK1_RATE
    );
    eprintln!(
        "  mean cosine similarity, copy vs its original:      {:.4}",
        true_sum / n as f64
    );
    eprintln!(
        "  mean best cosine similarity, copy vs other photos: {:.4}",
        impostor_sum / n as f64
    );
    for miss in &misses {
        eprintln!("  miss: {miss}");
    }
    eprintln!("  took {:.2?}", start.elapsed());

    assert!(
        rate >= MIN_RANK1_RATE,
        "rank-1 rate {:.2}% is below {:.0}%; misses:\n{}",
        100.0 * rate,
        100.0 * MIN_RANK1_RATE,
        misses.join("\n")
    );
}

/// A deterministic grey test pattern with structure at several scales.
fn grey_pattern(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity((width * height) as usize);
    for y in 0..height {
        for x in 0..width {
            let (fx, fy) = (
                f64::from(x) / f64::from(width),
                f64::from(y) / f64::from(height),
            );
            let v = 100.0
                + 60.0 * fx
                + 40.0 * (fy * 7.0).sin()
                + 30.0 * ((fx * 3.0 + fy * 5.0) * std::f64::consts::PI).cos();
            out.push(v.round().clamp(0.0, 255.0) as u8);
        }
    }
    out
}

fn replicate_to_rgb(grey: &[u8]) -> Vec<u8> {
    grey.iter().flat_map(|&g| [g, g, g]).collect()
}

#[test]
fn descriptor_has_declared_dim_and_unit_norm() {
    assert!((64..=256).contains(&DESCRIPTOR_DIM));
    for (w, h) in [(97, 61), (224, 224), (5, 300), (3, 2)] {
        let d = dct_descriptor(&grey_pattern(w, h), w, h, 1).expect("valid input");
        assert_eq!(d.len(), DESCRIPTOR_DIM, "{w}x{h}");
        assert!(d.iter().all(|v| v.is_finite()), "{w}x{h}: non-finite entry");
        let norm = d.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{w}x{h}: norm {norm}");
    }
}

#[test]
fn grey_given_as_one_or_three_channels_agrees() {
    let (w, h) = (120, 80);
    let grey = grey_pattern(w, h);
    let one = dct_descriptor(&grey, w, h, 1).expect("valid grey input");
    let three = dct_descriptor(&replicate_to_rgb(&grey), w, h, 3).expect("valid RGB input");
    let cos = dot(&one, &three);
    assert!(
        cos >= 0.99,
        "cosine between 1- and 3-channel versions is {cos}"
    );
}

#[test]
fn brightness_shift_does_not_change_descriptor() {
    let (w, h) = (64, 48);
    let grey = grey_pattern(w, h);
    // The pattern stays within 0..=235, so +20 does not clip.
    assert!(grey.iter().all(|&g| g <= 235));
    let brighter: Vec<u8> = grey.iter().map(|&g| g + 20).collect();
    let a = dct_descriptor(&grey, w, h, 1).expect("valid input");
    let b = dct_descriptor(&brighter, w, h, 1).expect("valid input");
    let cos = dot(&a, &b);
    assert!(cos >= 0.999, "cosine after +20 brightness is {cos}");
}

#[test]
fn constant_image_gives_zero_vector_without_nan() {
    for value in [0u8, 1, 128, 255] {
        for (w, h) in [(1, 1), (7, 13), (300, 200)] {
            for channels in [1u8, 3] {
                let pixels = vec![value; (w * h) as usize * usize::from(channels)];
                let d = dct_descriptor(&pixels, w, h, channels).expect("valid input");
                assert_eq!(d.len(), DESCRIPTOR_DIM);
                assert!(
                    d.iter().all(|&v| v == 0.0),
                    "constant {value} at {w}x{h}x{channels} must give the zero vector"
                );
            }
        }
    }
}

#[test]
fn bad_inputs_are_rejected_with_clear_errors() {
    let err = dct_descriptor(&[], 0, 10, 1).expect_err("zero width");
    assert_eq!(
        err,
        DescriptorError::Shape(ShapeError::ZeroDimension {
            width: 0,
            height: 10
        })
    );
    assert!(err.to_string().contains("zero width or height"), "{err}");

    let err = dct_descriptor(&[], 10, 0, 3).expect_err("zero height");
    assert_eq!(
        err,
        DescriptorError::Shape(ShapeError::ZeroDimension {
            width: 10,
            height: 0
        })
    );

    for channels in [0u8, 2, 4] {
        let err = dct_descriptor(&vec![0; 4 * usize::from(channels)], 2, 2, channels)
            .expect_err("bad channel count");
        assert_eq!(
            err,
            DescriptorError::Shape(ShapeError::UnsupportedChannels(channels))
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("channel count {channels}")) && msg.contains("1 (grey) or 3"),
            "{msg}"
        );
    }

    for len in [0usize, 11, 13, 36] {
        let err = dct_descriptor(&vec![0; len], 2, 2, 3).expect_err("wrong buffer length");
        assert_eq!(
            err,
            DescriptorError::Shape(ShapeError::BufferLength {
                width: 2,
                height: 2,
                channels: 3,
                expected: 12,
                actual: len
            })
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("has {len} values")) && msg.contains("needs exactly 12"),
            "{msg}"
        );
    }

    // A length that would overflow 32-bit arithmetic is still reported, not a panic.
    let err = dct_descriptor(&[0; 3], u32::MAX, u32::MAX, 3).expect_err("huge image");
    assert!(
        matches!(
            err,
            DescriptorError::Shape(ShapeError::BufferLength { actual: 3, .. })
        ),
        "{err}"
    );
}

/// The parameters set the length, `flat` weighting changes the vector, the defaults are the
/// one-call descriptor, and out-of-range parameters are refused with what is allowed.
#[test]
fn descriptor_parameters() {
    let (w, h) = (40, 30);
    let grey = grey_pattern(w, h);
    let default = DctDescriptor::new(&DctParams::default()).expect("defaults are valid");
    assert_eq!(default.dim(), DESCRIPTOR_DIM);
    assert_eq!(
        default.describe(&grey, w, h, 1).unwrap(),
        dct_descriptor(&grey, w, h, 1).unwrap()
    );
    let fine = DctParams {
        block: 16,
        window: 0.3,
        weighting: Weighting::Flat,
        ..DctParams::default()
    };
    let fine = DctDescriptor::new(&fine).expect("valid");
    let v = fine.describe(&grey, w, h, 1).unwrap();
    assert_eq!(v.len(), 255);
    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    let coarse = DctDescriptor::new(&DctParams {
        block: 16,
        window: 0.3,
        weighting: Weighting::Coarse,
        ..DctParams::default()
    })
    .unwrap()
    .describe(&grey, w, h, 1)
    .unwrap();
    assert!(coarse.iter().zip(&v).any(|(a, b)| (a - b).abs() > 1e-3));

    for (block, window, what) in [
        (1, 0.2, "block"),
        (33, 0.2, "block"),
        (9, 0.0, "window"),
        (9, f32::NAN, "window"),
    ] {
        let err = DctDescriptor::new(&DctParams {
            block,
            window,
            weighting: Weighting::Coarse,
            ..DctParams::default()
        })
        .expect_err("out of range");
        let msg = err.to_string();
        assert!(msg.contains(&format!("`{what}`")), "{msg}");
    }
}

#[test]
fn the_mirrored_descriptor_equals_describing_the_mirrored_photo() {
    let descriptor = DctDescriptor::new(&DctParams::default()).expect("defaults are valid");
    let mut asymmetric = 0;
    for path in photo_paths().iter().take(20) {
        let img = load(path);
        let mirrored = image::imageops::flip_horizontal(&img);
        let describe = |im: &RgbImage| {
            descriptor
                .describe(im.as_raw(), im.width(), im.height(), 3)
                .unwrap()
        };
        let (v, m) = (describe(&img), describe(&mirrored));
        let from_v = descriptor.mirror(&v);
        assert!(
            dot(&from_v, &m) > 0.999,
            "{}: {}",
            path.display(),
            dot(&from_v, &m)
        );
        asymmetric += usize::from(dot(&v, &m) < 0.9);
    }
    // Not a trivial equality: for most photos mirroring changes the descriptor.
    assert!(
        asymmetric >= 10,
        "only {asymmetric} of 20 photos change when mirrored"
    );
}

#[test]
fn photos_with_added_borders_describe_like_their_originals() {
    let photos = photo_paths();
    let mut scores = Vec::new();
    for (i, path) in photos.iter().enumerate() {
        let img = load(path);
        let (w, h) = (img.width(), img.height());
        let colour = [[255u8, 255, 255], [0, 0, 0], [90, 140, 200]][i % 3];
        let (bx, by) = (w / 8, h / 6);
        let mut framed = RgbImage::from_pixel(w + 2 * bx, h + 2 * by, image::Rgb(colour));
        image::imageops::overlay(&mut framed, &img, i64::from(bx), i64::from(by));
        let framed = reencode_jpeg(&DynamicImage::ImageRgb8(framed), 85).to_rgb8();
        scores.push((
            dot(&describe_rgb(&img), &describe_rgb(&framed)),
            path.clone(),
        ));
    }
    scores.sort_by(|a, b| a.0.total_cmp(&b.0));
    eprintln!("lowest bordered-copy cosines: {:?}", &scores[..5]);
    // The default dedup threshold is 0.93.
    let found = scores.iter().filter(|(s, _)| *s > 0.93).count();
    assert!(
        found as f64 >= 0.95 * scores.len() as f64,
        "{found} of {} bordered copies above 0.93",
        scores.len()
    );
}
