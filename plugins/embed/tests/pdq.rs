//! The PDQ hash ([`dinoflow_embed::pdq`]) against the reference, and the embed stage's
//! `model: pdq`.
//!
//! The expected hashes were computed once with the reference Python package `pdqhash` 0.2.8
//! (bindings to Meta's C++ code) on the photos of `data/photos` decoded by Pillow:
//!
//! ```text
//! h, q = pdqhash.compute(numpy.asarray(PIL.Image.open(path).convert('RGB')))
//! hex = numpy.packbits(h.astype(numpy.uint8)).tobytes().hex()
//! ```
//!
//! and `pdqhash.compute_dihedral` for the 8 variants. They are not recomputed here (the tests do
//! not run Python).
//!
//! PNG files decode to the same pixels in Pillow and in the `image` crate, and every PNG photo's
//! hash and quality must equal the reference exactly. JPEG decoders differ a little: on
//! `citrus-fruits.jpg` the `image` crate and Pillow's libjpeg-turbo disagree on 21 % of the values,
//! by up to 7 grey levels, and on `stuff.jpg` on 3 %, by up to 4. Those two photos are the only
//! ones whose hashes differ, by 2 bits each; on the pixels the `image` crate decodes, `pdqhash`
//! gives exactly our hashes (checked once by hashing those pixels with it). So JPEG photos may
//! differ by at most [`JPEG_DECODER_BITS`] bits, and at least 82 of the 84 photos must match
//! exactly. No difference comes from float handling: the implementation follows the reference's
//! `f32` operations in the same order.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use dinoflow_embed::pdq::{
    Dihedral, HASH_BITS, PdqDct, PdqError, PdqHash, luma, pdq_dihedral_hashes, pdq_hash,
};
use dinoflow_embed::pdq_vectors::PdqDescriptor;
use dinoflow_embed::shape::ShapeError;
use dinoflow_embed::{Embed, EmbedConfig, Embedder, ModelSpec, build};
use dinoflow_engine::Stage;
use dinoflow_storage::schemas::{ImageRow, images_batch};
use image::imageops::FilterType;
use image::{DynamicImage, ExtendedColorType, ImageFormat, RgbImage};

/// Where `make setup` puts the test photos.
const PHOTO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/photos");

/// How many bits a JPEG photo's hash may differ from the reference's: the JPEG decoders differ
/// (see the module doc), not the hash.
const JPEG_DECODER_BITS: u32 = 2;

/// PDQ's recommended match threshold in bits.
const MATCH_BITS: u32 = 31;

/// Longest side of the images as the ingest stage stores them.
const STORED_SIDE: u32 = 224;

/// The rows of a tab-separated fixture in `tests/data`, without its `#` comment lines.
fn fixture(text: &'static str) -> Vec<Vec<&'static str>> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| line.split('\t').collect())
        .collect()
}

/// `pdqhash.compute` of every photo (`tests/data/pdq_photos.tsv`): file name, hex hash, quality.
fn reference() -> Vec<(&'static str, &'static str, u32)> {
    fixture(include_str!("data/pdq_photos.tsv"))
        .into_iter()
        .map(|row| (row[0], row[1], row[2].parse().expect("a quality")))
        .collect()
}

/// `pdqhash.compute_dihedral` of 12 PNG photos (`tests/data/pdq_dihedral.tsv`): the hex hashes
/// in the order of [`Dihedral::ALL`].
fn reference_dihedral() -> Vec<(&'static str, Vec<&'static str>)> {
    fixture(include_str!("data/pdq_dihedral.tsv"))
        .into_iter()
        .map(|row| (row[0], row[1..].to_vec()))
        .collect()
}

/// `pdqhash.compute` of the RGB patterns of [`pattern`] (`tests/data/pdq_patterns.tsv`): width,
/// height, hex, quality. 64×64 is the reference's unfiltered path, sides of 128 or less have box
/// windows of one sample, under 5 the all-zero hash.
fn reference_patterns() -> Vec<(u32, u32, &'static str, u32)> {
    let number = |text: &str| text.parse().expect("a number");
    fixture(include_str!("data/pdq_patterns.tsv"))
        .into_iter()
        .map(|row| (number(row[0]), number(row[1]), row[2], number(row[3])))
        .collect()
}

/// A deterministic RGB test image (the same formula made the reference hashes):
/// channel `c` of pixel `(x, y)` is `(7x + 13y + 50c + (xy mod 31)) mod 256`.
fn pattern(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            for c in 0..3 {
                out.push(((x * 7 + y * 13 + c * 50 + (x * y) % 31) % 256) as u8);
            }
        }
    }
    out
}

/// A decoded photo and its PDQ coefficients.
struct Photo {
    name: String,
    image: RgbImage,
    dct: PdqDct,
}

fn hash_rgb(img: &RgbImage) -> PdqHash {
    pdq_hash(img.as_raw(), img.width(), img.height(), 3).expect("a decoded image is valid")
}

/// Every photo named in [`reference`], decoded at full size and hashed once for all tests.
fn photos() -> &'static [Photo] {
    static PHOTOS: OnceLock<Vec<Photo>> = OnceLock::new();
    PHOTOS.get_or_init(|| {
        reference()
            .iter()
            .map(|(name, _, _)| {
                let path = Path::new(PHOTO_DIR).join(name);
                let image = image::open(&path)
                    .unwrap_or_else(|e| {
                        panic!(
                            "cannot read {} ({e}): run `make setup` first (scripts/setup.sh puts \
                             the test photos there)",
                            path.display()
                        )
                    })
                    .to_rgb8();
                let dct = PdqDct::from_pixels(image.as_raw(), image.width(), image.height(), 3)
                    .expect("a decoded image is valid");
                Photo {
                    name: name.to_string(),
                    image,
                    dct,
                }
            })
            .collect()
    })
}

fn from_hex(hex: &str) -> [u8; 32] {
    assert_eq!(hex.len(), 64, "{hex}");
    let mut bits = [0u8; 32];
    for (i, b) in bits.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex digits");
    }
    bits
}

fn hamming_hex(a: &PdqHash, hex: &str) -> u32 {
    a.hamming(&PdqHash {
        bits: from_hex(hex),
        quality: 0.0,
    })
}

// Image operations go through `DynamicImage` methods and the non-generic JPEG encoder on purpose:
// those are compiled in the optimised `image` crate (see tests/near_duplicates.rs).

fn reencode_jpeg(img: &RgbImage, quality: u8) -> RgbImage {
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality)
        .encode(
            img.as_raw(),
            img.width(),
            img.height(),
            ExtendedColorType::Rgb8,
        )
        .expect("JPEG encoding to memory");
    image::load_from_memory_with_format(&bytes, ImageFormat::Jpeg)
        .expect("decoding our own JPEG")
        .to_rgb8()
}

/// The photo as the ingest stage stores it: longest side at most [`STORED_SIDE`].
fn stored(img: &RgbImage) -> RgbImage {
    DynamicImage::ImageRgb8(img.clone())
        .resize(STORED_SIDE, STORED_SIDE, FilterType::CatmullRom)
        .to_rgb8()
}

fn mirror(img: &RgbImage) -> RgbImage {
    DynamicImage::ImageRgb8(img.clone()).fliph().to_rgb8()
}

fn median(mut values: Vec<u32>) -> u32 {
    values.sort_unstable();
    values[values.len() / 2]
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn photo_hashes_equal_the_reference() {
    let mut exact = 0;
    let mut report = Vec::new();
    let reference = reference();
    for (photo, &(name, hex, quality)) in photos().iter().zip(&reference) {
        let hash = photo.dct.hash();
        let bits = hamming_hex(&hash, hex);
        let allowed = if name.ends_with(".png") {
            0
        } else {
            JPEG_DECODER_BITS
        };
        assert!(
            bits <= allowed,
            "{name}: {} differs from the reference {hex} in {bits} bits (allowed {allowed})",
            hash.to_hex()
        );
        assert_eq!(hash.quality, quality as f32, "{name}: quality");
        assert_eq!(photo.dct.quality(), quality, "{name}: quality");
        if bits == 0 {
            assert_eq!(hash.to_hex(), hex, "{name}");
            exact += 1;
        } else {
            report.push(format!("{name}: {bits} bits"));
        }
    }
    eprintln!(
        "{exact} of {} photo hashes equal the reference exactly; others: {report:?}",
        reference.len()
    );
    assert!(exact >= 82, "only {exact} of {} exact", reference.len());
}

#[test]
fn dihedral_hashes_equal_the_reference() {
    let by_name: HashMap<&str, &Photo> = photos().iter().map(|p| (p.name.as_str(), p)).collect();
    for (name, hexes) in reference_dihedral() {
        let photo = by_name[name];
        let hashes = photo.dct.dihedral_hashes();
        for ((which, hash), hex) in Dihedral::ALL.iter().zip(&hashes).zip(hexes) {
            assert_eq!(hash.to_hex(), hex, "{name} {which:?}");
            assert_eq!(*hash, photo.dct.variant(*which));
        }
        let img = &photo.image;
        let direct = pdq_dihedral_hashes(img.as_raw(), img.width(), img.height(), 3).unwrap();
        assert_eq!(direct, hashes, "{name}");
        assert_eq!(hashes[0], photo.dct.hash());
    }
}

#[test]
fn pattern_hashes_equal_the_reference_at_every_size_path() {
    for (width, height, hex, quality) in reference_patterns() {
        let pixels = pattern(width, height);
        let hash = pdq_hash(&pixels, width, height, 3).expect("valid input");
        assert_eq!(hash.to_hex(), hex, "{width}x{height}");
        assert_eq!(hash.quality, quality as f32, "{width}x{height}");
    }
}

/// Mirroring through the DCT signs is close to hashing the mirrored photo, but not equal: even
/// filter windows and the decimation grid are not symmetric (see the `pdq` module doc).
#[test]
fn the_mirrored_variant_is_close_to_the_hash_of_the_mirrored_photo() {
    let mut bits = Vec::new();
    for photo in photos() {
        let flipped = hash_rgb(&mirror(&photo.image));
        let variant = photo.dct.variant(Dihedral::FlipY);
        let d = variant.hamming(&flipped);
        assert!(
            d <= 24,
            "{}: mirrored variant {d} bits from the mirrored photo",
            photo.name
        );
        // Not trivial: mirroring changes the hash of every photo.
        assert!(photo.dct.hash().hamming(&flipped) > 60, "{}", photo.name);
        bits.push(d);
    }
    let (m, max) = (
        median(bits.clone()),
        bits.iter().copied().max().unwrap_or(0),
    );
    eprintln!("mirrored variant vs mirrored photo: median {m} bits, max {max}");
    assert!(m <= 8, "median {m} bits");
    // The other variants, on one photo whose hashes change under each of them.
    let photo = &photos()[0];
    let dyn_img = DynamicImage::ImageRgb8(photo.image.clone());
    for (which, transformed) in [
        (Dihedral::Rotate90, dyn_img.rotate270()),
        (Dihedral::Rotate180, dyn_img.rotate180()),
        (Dihedral::Rotate270, dyn_img.rotate90()),
        (Dihedral::FlipX, dyn_img.flipv()),
    ] {
        let d = photo
            .dct
            .variant(which)
            .hamming(&hash_rgb(&transformed.to_rgb8()));
        assert!(d <= 24, "{} {which:?}: {d} bits", photo.name);
    }
}

#[test]
fn jpeg_recompressed_copies_stay_within_the_match_threshold() {
    let mut bits = Vec::new();
    for photo in photos() {
        let d = photo
            .dct
            .hash()
            .hamming(&hash_rgb(&reencode_jpeg(&photo.image, 70)));
        if photo.dct.quality() < 50 {
            // PDQ's advice: ignore hashes under quality 50. gradient.png (a smooth ramp, quality
            // 44) is one: its bits are unstable (over 100 bits change).
            assert_eq!(photo.name, "gradient.png");
            continue;
        }
        assert!(
            d <= MATCH_BITS,
            "{}: JPEG 70 copy {d} bits away",
            photo.name
        );
        bits.push(d);
    }
    eprintln!(
        "JPEG quality 70 copies: median {} bits, max {}",
        median(bits.clone()),
        bits.iter().max().unwrap_or(&0)
    );
}

/// Pairs of different photos are far apart; photos of one series (names equal but for digits:
/// video frames, calibration shots of one room) are left out, being near-copies.
#[test]
fn different_photos_are_far_apart() {
    let series = |name: &str| -> String {
        name.split('.')
            .next()
            .unwrap_or(name)
            .trim_end_matches(|c: char| c.is_ascii_digit())
            .to_string()
    };
    let photos = photos();
    let mut closest = (u32::MAX, "", "");
    let mut pairs = 0;
    for (i, a) in photos.iter().enumerate() {
        for b in &photos[i + 1..] {
            if series(&a.name) == series(&b.name) {
                continue;
            }
            let d = a.dct.hash().hamming(&b.dct.hash());
            pairs += 1;
            if d < closest.0 {
                closest = (d, &a.name, &b.name);
            }
        }
    }
    eprintln!("{pairs} pairs of different photos; closest {closest:?}");
    assert!(pairs > 3000, "{pairs}");
    assert!(closest.0 > 80, "closest different photos {closest:?}");
}

#[test]
fn vectors_are_unit_and_their_cosine_is_one_minus_twice_the_hamming_share() {
    let photos = photos();
    for pair in photos.windows(2).take(20) {
        let (a, b) = (pair[0].dct.hash(), pair[1].dct.hash());
        let (va, vb) = (a.to_vector(), b.to_vector());
        assert_eq!(va.len(), HASH_BITS);
        assert!(va.iter().all(|&v| v.abs() == 1.0 / 16.0));
        assert!((dot(&va, &va) - 1.0).abs() < 1e-6);
        let want = 1.0 - 2.0 * a.hamming(&b) as f32 / 256.0;
        assert!(
            (dot(&va, &vb) - want).abs() < 1e-5,
            "{} {want}",
            dot(&va, &vb)
        );
        for (k, &v) in va.iter().enumerate() {
            assert_eq!(v > 0.0, a.bit(k), "bit {k}");
        }
    }
    // About half the bits are set.
    let set: u32 = photos[0]
        .dct
        .hash()
        .bits
        .iter()
        .map(|b| b.count_ones())
        .sum();
    assert!((120..=128).contains(&set), "{set}");
}

#[test]
fn bad_inputs_are_rejected_with_typed_errors() {
    assert_eq!(
        pdq_hash(&[], 0, 7, 3).unwrap_err(),
        PdqError::Shape(ShapeError::ZeroDimension {
            width: 0,
            height: 7
        })
    );
    for channels in [0u8, 2, 4] {
        let err = pdq_hash(&[0; 64], 4, 4, channels).unwrap_err();
        assert_eq!(
            err,
            PdqError::Shape(ShapeError::UnsupportedChannels(channels))
        );
        assert!(err.to_string().contains("1 (grey) or 3"), "{err}");
    }
    let err = pdq_hash(&[0; 11], 2, 2, 3).unwrap_err();
    assert!(
        matches!(
            err,
            PdqError::Shape(ShapeError::BufferLength {
                expected: 12,
                actual: 11,
                ..
            })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("needs exactly 12"), "{err}");
    // A size whose product overflows 64 bits is a length error, not a panic.
    assert!(matches!(
        pdq_hash(&[0; 3], u32::MAX, u32::MAX, 3).unwrap_err(),
        PdqError::Shape(ShapeError::BufferLength { actual: 3, .. })
    ));
    let mut grey = vec![10.0f32; 36];
    grey[7] = f32::NAN;
    let err = PdqDct::from_luma(&grey, 6, 6).unwrap_err();
    assert!(matches!(err, PdqError::NonFinite { index: 7, .. }), "{err}");
    assert!(matches!(
        PdqDct::from_luma(&grey[..35], 6, 6).unwrap_err(),
        PdqError::Shape(ShapeError::BufferLength {
            channels: 1,
            expected: 36,
            actual: 35,
            ..
        })
    ));
    // Grey given as one channel or replicated to three hashes the same.
    let (w, h) = (70, 90);
    let one: Vec<u8> = pattern(w, h).chunks_exact(3).map(|p| p[0]).collect();
    let three: Vec<u8> = one.iter().flat_map(|&g| [g, g, g]).collect();
    assert_eq!(luma(&one, w, h, 1).unwrap(), luma(&three, w, h, 3).unwrap());
    assert_eq!(
        pdq_hash(&one, w, h, 1).unwrap(),
        pdq_hash(&three, w, h, 3).unwrap()
    );
}

fn row(id: usize, img: &RgbImage) -> ImageRow {
    ImageRow {
        id: format!("{id:064x}"),
        source: format!("test://{id}"),
        width: img.width(),
        height: img.height(),
        format: "png".into(),
        file_size: 0,
        label: None,
        pixels: img.as_raw().clone(),
        channels: 3,
        pixel_width: img.width(),
        pixel_height: img.height(),
    }
}

fn config(with: serde_json::Value) -> EmbedConfig {
    serde_json::from_value(with).expect("a valid embed config")
}

/// `model: pdq` parses, builds the PDQ embedder, writes unit `±1/16` vectors and mirrored ones by
/// default (zero vectors for blank images), and with `trim_borders: false` exactly the hashes of
/// the stored pixels and of the mirrored pixels.
#[test]
fn the_stage_config_model_pdq_embeds_unit_vectors() {
    let default = config(serde_json::json!({"model": "pdq"}));
    assert_eq!(default.model, ModelSpec::Pdq);
    assert!(default.writes_mirrored());
    assert_eq!(serde_json::to_value(&default.model).unwrap(), "pdq");

    let mut images: Vec<RgbImage> = photos()
        .iter()
        .step_by(9)
        .map(|p| stored(&p.image))
        .collect();
    let photo_rows = images.len();
    images.push(RgbImage::from_pixel(50, 40, image::Rgb([90, 90, 90])));
    images.push(RgbImage::from_pixel(3, 3, image::Rgb([1, 2, 3])));
    let rows: Vec<ImageRow> = images
        .iter()
        .enumerate()
        .map(|(i, img)| row(i, img))
        .collect();
    let batch = images_batch(&rows).expect("an images batch");

    let embedder = build(&default, None, 2).expect("the pdq embedder");
    assert!(matches!(embedder, Embedder::Pdq(..)));
    assert_eq!(embedder.dim(), HASH_BITS);
    let out = embedder.embed(&batch, true, true).expect("embedding");
    let mirrored = out.mirrored.as_ref().expect("mirrored vectors by default");
    assert_eq!(out.vectors.len(), images.len() * HASH_BITS);
    assert_eq!(mirrored.len(), out.vectors.len());
    for (i, (v, m)) in out
        .vectors
        .chunks_exact(HASH_BITS)
        .zip(mirrored.chunks_exact(HASH_BITS))
        .enumerate()
    {
        if i < photo_rows {
            for x in [v, m] {
                assert!(x.iter().all(|&e| e.abs() == 1.0 / 16.0), "row {i}");
                assert!((dot(x, x) - 1.0).abs() < 1e-6, "row {i}");
            }
            assert!(dot(v, m) < 0.75, "row {i}: mirroring changes the hash");
        } else {
            assert!(
                v.iter().chain(m).all(|&e| e == 0.0),
                "blank row {i}: zero vectors"
            );
        }
    }

    let exact = config(serde_json::json!({"model": "pdq", "descriptor": {"trim_borders": false}}));
    let out = build(&exact, None, 1)
        .unwrap()
        .embed(&batch, true, true)
        .unwrap();
    let mirrored = out.mirrored.expect("mirrored vectors");
    for (i, img) in images.iter().enumerate().take(photo_rows) {
        let at = i * HASH_BITS..(i + 1) * HASH_BITS;
        assert_eq!(
            out.vectors[at.clone()],
            hash_rgb(img).to_vector()[..],
            "row {i}"
        );
        assert_eq!(
            mirrored[at],
            hash_rgb(&mirror(img)).to_vector()[..],
            "row {i}"
        );
    }

    let single = config(serde_json::json!({"model": "pdq", "mirrored": false}));
    assert!(!single.writes_mirrored());
    let out = build(&single, None, 1)
        .unwrap()
        .embed(&batch, true, false)
        .unwrap();
    assert!(out.mirrored.is_none());

    for (field, value) in [
        ("block", serde_json::json!(16)),
        ("window", serde_json::json!(0.3)),
        ("weighting", serde_json::json!("flat")),
    ] {
        let bad = config(serde_json::json!({"model": "pdq", "descriptor": {field: value}}));
        let Err(err) = build(&bad, None, 1) else {
            panic!("`descriptor.{field}` with `model: pdq` must be refused");
        };
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("`descriptor.{field}`")) && msg.contains("trim_borders"),
            "{msg}"
        );
        // The same refusal when the workflow is checked, before anything runs.
        assert_eq!(Embed.check(&bad), Err(msg));
        assert_eq!(
            Embed.check(&config(serde_json::json!({"descriptor": {field: value}}))),
            Ok(())
        );
    }
    assert_eq!(Embed.check(&exact), Ok(()));
}

/// Photos framed in white (as stored, then JPEG 85) hash like their originals only because
/// uniform borders are trimmed.
#[test]
fn framed_copies_match_their_originals_through_border_trimming() {
    let trim = PdqDescriptor { trim_borders: true };
    let keep = PdqDescriptor {
        trim_borders: false,
    };
    let vector = |d: &PdqDescriptor, img: &RgbImage| {
        d.describe(img.as_raw(), img.width(), img.height(), 3, false)
            .expect("valid input")
            .vector
    };
    let (mut matched, mut matched_untrimmed, mut total) = (0, 0, 0);
    for photo in photos() {
        let img = stored(&photo.image);
        let (w, h) = (img.width(), img.height());
        let mut framed = RgbImage::from_pixel(w + w / 4, h + h / 3, image::Rgb([255, 255, 255]));
        image::imageops::overlay(&mut framed, &img, i64::from(w / 8), i64::from(h / 6));
        let framed = reencode_jpeg(&framed, 85);
        total += 1;
        matched += usize::from(dot(&vector(&trim, &img), &vector(&trim, &framed)) >= 0.75);
        matched_untrimmed +=
            usize::from(dot(&vector(&keep, &img), &vector(&keep, &framed)) >= 0.75);
    }
    eprintln!(
        "framed copies at cosine ≥ 0.75: {matched}/{total} trimmed, {matched_untrimmed} untrimmed"
    );
    assert!(
        matched as f64 >= 0.95 * total as f64,
        "{matched} of {total}"
    );
    assert!(
        matched_untrimmed as f64 <= 0.05 * total as f64,
        "{matched_untrimmed} of {total}"
    );
}
