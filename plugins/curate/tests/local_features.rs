//! Local-feature verification on real photos (data/photos, put there by scripts/setup.sh): the
//! copies the test makes itself are confirmed, different shots of one scene (stereo pairs) and
//! different photos are rejected, images without texture are left to the descriptor, and the
//! verdicts do not depend on the thread count.

use std::path::PathBuf;

use dinoflow_curate::{FeaturesConfig, GreyImage, Verdict, verify_pairs};
use image::imageops::FilterType;
use image::{DynamicImage, GrayImage};

/// Where scripts/setup.sh puts the photos.
const PHOTO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/photos");

fn photo(name: &str) -> DynamicImage {
    let path = PathBuf::from(PHOTO_DIR).join(name);
    image::open(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run scripts/setup.sh to fetch the photos)",
            path.display()
        )
    })
}

/// The image as ingest stores it (longer side 224) in grey.
fn stored(img: &DynamicImage) -> GrayImage {
    img.resize(224, 224, FilterType::Triangle).to_luma8()
}

fn grey(img: &GrayImage) -> GreyImage {
    GreyImage::from_pixels(img.as_raw(), img.width(), img.height(), 1).expect("grey pixels")
}

/// `img` rotated by `degrees` about its centre (bilinear, written out here), with the corners the
/// rotation leaves empty cut off, as a copy made by a user would be.
fn rotated(img: &GrayImage, degrees: f64) -> GrayImage {
    let (w, h) = (f64::from(img.width()), f64::from(img.height()));
    let (s, c) = degrees.to_radians().sin_cos();
    let margin = (w.min(h) * s.abs()).ceil() as u32 + 1;
    let (ow, oh) = (img.width() - 2 * margin, img.height() - 2 * margin);
    GrayImage::from_fn(ow, oh, |x, y| {
        let (u, v) = (
            f64::from(x + margin) - w / 2.0,
            f64::from(y + margin) - h / 2.0,
        );
        let (sx, sy) = (c * u + s * v + w / 2.0, -s * u + c * v + h / 2.0);
        let (x0, y0) = (sx.floor(), sy.floor());
        let (fx, fy) = (sx - x0, sy - y0);
        let at = |x: f64, y: f64| {
            let x = x.clamp(0.0, w - 1.0) as u32;
            let y = y.clamp(0.0, h - 1.0) as u32;
            f64::from(img.get_pixel(x, y).0[0])
        };
        let top = at(x0, y0) * (1.0 - fx) + at(x0 + 1.0, y0) * fx;
        let bottom = at(x0, y0 + 1.0) * (1.0 - fx) + at(x0 + 1.0, y0 + 1.0) * fx;
        image::Luma([(top * (1.0 - fy) + bottom * fy).round() as u8])
    })
}

/// The part of `img` left after cutting `fraction` of its width and height from the left and top.
fn cropped(img: &GrayImage, fraction: f64) -> GrayImage {
    let (x, y) = (
        (f64::from(img.width()) * fraction) as u32,
        (f64::from(img.height()) * fraction) as u32,
    );
    image::imageops::crop_imm(img, x, y, img.width() - x, img.height() - y).to_image()
}

/// `img` with a bright bar (a caption) over a tenth of its height.
fn captioned(img: &GrayImage) -> GrayImage {
    let mut out = img.clone();
    let (top, rows) = (img.height() * 7 / 10, img.height() / 10);
    for y in top..top + rows {
        for x in img.width() / 5..img.width() * 4 / 5 {
            out.put_pixel(
                x,
                y,
                image::Luma([if (x / 6 + y / 6) % 2 == 0 { 250 } else { 20 }]),
            );
        }
    }
    out
}

fn verdicts(images: &[GreyImage], pairs: &[(usize, usize, bool)], threads: usize) -> Vec<Verdict> {
    verify_pairs(images, pairs, &FeaturesConfig::default(), threads).expect("verification runs")
}

fn confirmed(v: Verdict) -> bool {
    matches!(v, Verdict::Confirmed(_))
}

#[test]
fn edited_copies_of_a_photo_are_confirmed() {
    for name in ["building.jpg", "baboon.jpg", "home.jpg"] {
        let original = stored(&photo(name));
        let copies = [
            ("crop 15 %", cropped(&original, 0.15)),
            ("rotation 5°", rotated(&original, 5.0)),
            (
                "rotation −6° and crop 5 %",
                cropped(&rotated(&original, -6.0), 0.05),
            ),
            ("caption", captioned(&original)),
            (
                "resize to 60 %",
                image::imageops::resize(
                    &original,
                    original.width() * 3 / 5,
                    original.height() * 3 / 5,
                    FilterType::Triangle,
                ),
            ),
        ];
        let mut images = vec![grey(&original)];
        images.extend(copies.iter().map(|(_, c)| grey(c)));
        let pairs: Vec<_> = (1..images.len()).map(|i| (0, i, false)).collect();
        for ((what, _), v) in copies.iter().zip(verdicts(&images, &pairs, 2)) {
            assert!(confirmed(v), "{name}, {what}: {v:?}");
        }
    }
}

#[test]
fn a_mirrored_copy_is_confirmed_whichever_orientation_is_tried_first() {
    let original = stored(&photo("building.jpg"));
    let mirrored = image::imageops::flip_horizontal(&original);
    let images = [grey(&original), grey(&mirrored)];
    for first in [true, false] {
        let v = verdicts(&images, &[(0, 1, first)], 1)[0];
        assert!(confirmed(v), "mirrored first: {first}: {v:?}");
    }
}

#[test]
fn different_shots_of_one_scene_and_different_photos_are_rejected() {
    // Stereo pairs: the same scene from two viewpoints, which a global descriptor rates alike.
    let pairs = [
        ("aloeL.jpg", "aloeR.jpg"),
        ("left.jpg", "right.jpg"),
        ("building.jpg", "home.jpg"),
        ("baboon.jpg", "building.jpg"),
    ];
    for (a, b) in pairs {
        let images = [grey(&stored(&photo(a))), grey(&stored(&photo(b)))];
        let v = verdicts(&images, &[(0, 1, false)], 1)[0];
        assert_eq!(v, Verdict::Rejected, "{a} / {b}");
    }
}

#[test]
fn images_without_texture_are_left_to_the_descriptor() {
    let gradient = GrayImage::from_fn(224, 168, |x, y| image::Luma([((x + y) / 2) as u8]));
    let small = stored(&photo("building.jpg"));
    let small = image::imageops::resize(&small, 28, 21, FilterType::Triangle);
    let images = [
        grey(&gradient),
        grey(&cropped(&gradient, 0.1)),
        grey(&small),
        grey(&small),
    ];
    let v = verdicts(&images, &[(0, 1, false), (2, 3, false)], 1);
    assert_eq!(v, vec![Verdict::Undecided, Verdict::Undecided]);
}

#[test]
fn verdicts_do_not_depend_on_the_thread_count() {
    let names = ["building.jpg", "aloeL.jpg", "aloeR.jpg", "baboon.jpg"];
    let mut images: Vec<GreyImage> = names.iter().map(|n| grey(&stored(&photo(n)))).collect();
    images.push(grey(&cropped(&stored(&photo("building.jpg")), 0.12)));
    let pairs: Vec<_> = (0..images.len())
        .flat_map(|a| (a + 1..images.len()).map(move |b| (a, b, false)))
        .collect();
    let one = verdicts(&images, &pairs, 1);
    assert_eq!(one, verdicts(&images, &pairs, 2));
    assert!(confirmed(one[3]), "building / its crop: {:?}", one[3]);
}

#[test]
fn bad_values_name_their_field() {
    let base = FeaturesConfig::default();
    let cases = [
        (
            FeaturesConfig {
                candidates: 1.5,
                ..base.clone()
            },
            "candidates 1.5",
        ),
        (
            FeaturesConfig {
                side: 16,
                ..base.clone()
            },
            "side 16",
        ),
        (
            FeaturesConfig {
                keypoints: 0,
                ..base.clone()
            },
            "keypoints 0",
        ),
        (
            FeaturesConfig {
                min_inliers: 2,
                ..base.clone()
            },
            "min_inliers 2",
        ),
        (
            FeaturesConfig {
                min_overlap: 0.0,
                ..base.clone()
            },
            "min_overlap 0",
        ),
        (
            FeaturesConfig {
                agreement: 1.5,
                ..base.clone()
            },
            "agreement 1.5",
        ),
    ];
    for (config, needle) in cases {
        let err = config.check().expect_err(needle).to_string();
        assert!(
            err.contains("local_features") && err.contains(needle),
            "{err}"
        );
    }
    assert!(base.check().is_ok());
}

#[test]
fn pixel_bytes_that_do_not_match_the_size_are_an_error() {
    let err = GreyImage::from_pixels(&[0; 10], 4, 4, 3).expect_err("10 bytes for 4×4×3");
    assert!(err.to_string().contains("4×4×3"), "{err}");
}
