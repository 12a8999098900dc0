//! Ingest on real photos plus a corrupt-file corpus generated here: truncated JPEG, zero bytes,
//! wrong extension, a 50k×50k PNG header, CMYK JPEG, 16-bit PNG, EXIF orientation, non-image.

mod common;

use std::io::Cursor;
use std::path::Path;

use common::{by_name, repo_root, run_ingest};
use image::{ImageBuffer, ImageFormat, Rgb, RgbImage};

fn jpeg_bytes(img: &RgbImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

fn gradient(w: u32, h: u32) -> RgbImage {
    ImageBuffer::from_fn(w, h, |x, y| {
        Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 77])
    })
}

/// A PNG whose header claims 50000×50000 RGB pixels (7.5 GB decoded): a decompression bomb.
fn bomb_png_header() -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&50_000u32.to_be_bytes());
    ihdr.extend_from_slice(&50_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    let mut crc = flate2::Crc::new();
    crc.update(&ihdr);
    png.extend_from_slice(&crc.sum().to_be_bytes());
    // A tiny IDAT: the first rows of zeros, deflated (a real bomb is all zeros and compresses ~1000×).
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut z, &vec![0u8; 1 << 20]).unwrap();
    let mut idat = b"IDAT".to_vec();
    idat.extend_from_slice(&z.finish().unwrap());
    png.extend_from_slice(&((idat.len() - 4) as u32).to_be_bytes());
    png.extend_from_slice(&idat);
    let mut crc = flate2::Crc::new();
    crc.update(&idat);
    png.extend_from_slice(&crc.sum().to_be_bytes());
    png.extend_from_slice(&[0, 0, 0, 0]);
    png.extend_from_slice(b"IEND");
    let mut crc = flate2::Crc::new();
    crc.update(b"IEND");
    png.extend_from_slice(&crc.sum().to_be_bytes());
    png
}

/// Inserts an EXIF APP1 segment with the given orientation right after the JPEG's SOI marker.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut exif = b"Exif\0\0MM\0\x2a\0\0\0\x08".to_vec();
    exif.extend_from_slice(&1u16.to_be_bytes()); // one IFD entry
    exif.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    exif.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    exif.extend_from_slice(&1u32.to_be_bytes()); // count
    exif.extend_from_slice(&orientation.to_be_bytes());
    exif.extend_from_slice(&[0, 0]);
    exif.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((exif.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&exif);
    out.extend_from_slice(&jpeg[2..]);
    out
}

fn cmyk_jpeg(w: u16, h: u16) -> Vec<u8> {
    let data: Vec<u8> = (0..usize::from(w) * usize::from(h))
        .flat_map(|i| [(i % 200) as u8, 30, 60, 0])
        .collect();
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 90)
        .encode(&data, w, h, jpeg_encoder::ColorType::Cmyk)
        .unwrap();
    out
}

fn png16(w: u32, h: u32) -> Vec<u8> {
    let img: ImageBuffer<Rgb<u16>, Vec<u16>> =
        ImageBuffer::from_pixel(w, h, Rgb([65535, 0, 32896]));
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb16(img)
        .write_to(&mut out, ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_and_odd_files_become_error_rows_or_decode_correctly() {
    let src = tempfile::tempdir().unwrap();
    let d = src.path();
    let good = jpeg_bytes(&gradient(300, 200));
    write(d, "good.jpg", &good);
    write(d, "truncated.jpg", &good[..good.len() / 2]);
    write(d, "empty.png", b"");
    let mut png = Cursor::new(Vec::new());
    gradient(64, 48)
        .write_to(&mut png, ImageFormat::Png)
        .unwrap();
    write(d, "png_named.jpg", png.get_ref());
    write(d, "bomb.png", &bomb_png_header());
    write(d, "cmyk.jpg", &cmyk_jpeg(40, 30));
    write(d, "deep.png", &png16(20, 10));
    write(
        d,
        "rotated.jpg",
        &with_exif_orientation(&jpeg_bytes(&gradient(40, 20)), 6),
    );
    write(d, "notes.txt", b"this is not an image\n");
    // Real photos from the package registries (scripts/setup.sh puts them in data/photos).
    let photos = repo_root().join("data/photos");
    for name in ["baboon.jpg", "fruits.jpg"] {
        let p = photos.join(name);
        assert!(
            p.exists(),
            "{} is missing: run scripts/setup.sh",
            p.display()
        );
        std::fs::copy(&p, d.join(name)).unwrap();
    }

    let store = tempfile::tempdir().unwrap();
    let yaml = format!(
        "      source:\n        folder:\n          path: {}\n      max_side: 64\n      max_pixels: 50000000\n",
        d.display()
    );
    let out = run_ingest(store.path(), &yaml).await;
    let rows = by_name(&out.images);
    let errors: std::collections::BTreeMap<String, String> = out
        .errors
        .iter()
        .map(|(s, e)| (s.rsplit('/').next().unwrap().to_string(), e.clone()))
        .collect();

    // Ids are the blake3 of the source bytes; sizes are the file sizes.
    let g = &rows["good.jpg"];
    assert_eq!(g.id, blake3::hash(&good).to_hex().to_string());
    assert_eq!(
        (g.width, g.height, g.file_size),
        (300, 200, good.len() as u64)
    );
    assert_eq!((g.pixel_width, g.pixel_height, g.channels), (64, 43, 3));
    assert_eq!(g.pixels.len(), 64 * 43 * 3);
    assert_eq!(g.format, "jpeg");

    // Format is sniffed from content, not the extension.
    let p = &rows["png_named.jpg"];
    assert_eq!(
        (p.format.as_str(), p.pixel_width, p.pixel_height),
        ("png", 64, 48)
    );

    // CMYK JPEG is converted to RGB.
    let c = &rows["cmyk.jpg"];
    assert_eq!((c.width, c.height, c.channels), (40, 30, 3));

    // 16-bit PNG is reduced to 8 bits: 65535 → 255, 0 → 0, 32896 → 128.
    let deep = &rows["deep.png"];
    assert_eq!((deep.width, deep.height, deep.channels), (20, 10, 3));
    assert_eq!(&deep.pixels[..3], &[255, 0, 128]);

    // EXIF orientation 6 (rotate 90° clockwise) swaps width and height.
    let r = &rows["rotated.jpg"];
    assert_eq!((r.width, r.height), (20, 40));

    // Real photos: baboon.jpg is 512×512 colour.
    let b = &rows["baboon.jpg"];
    assert_eq!(
        (b.width, b.height, b.channels, b.pixel_width),
        (512, 512, 3, 64)
    );

    assert!(
        errors["truncated.jpg"].contains("jpeg"),
        "{}",
        errors["truncated.jpg"]
    );
    assert_eq!(errors["empty.png"], "zero-byte file");
    assert!(
        errors["bomb.png"].contains("50000×50000"),
        "{}",
        errors["bomb.png"]
    );
    assert!(
        errors["bomb.png"].contains("max_pixels"),
        "{}",
        errors["bomb.png"]
    );
    assert!(
        errors["notes.txt"].contains("unrecognised image format"),
        "{}",
        errors["notes.txt"]
    );
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert_eq!(rows.len(), 7, "{:?}", rows.keys());
    assert_eq!(out.report.stages[0].rows["images"], 7);
    assert_eq!(out.report.stages[0].rows["errors"], 4);
}
