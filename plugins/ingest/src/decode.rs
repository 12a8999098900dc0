//! One image's bytes → oriented, resized 8-bit pixels, or the reason it cannot be used.

use std::io::Cursor;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, IntoImageView, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, ImageDecoder, ImageReader, Limits};

/// How images are decoded and resized.
#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    /// The longer side of the stored pixels is at most this (no upscaling).
    pub max_side: u32,
    /// Images with more pixels than this are refused before decoding (decompression bombs).
    pub max_pixels: u64,
}

/// A decoded image ready for the images schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Source width after EXIF orientation.
    pub width: u32,
    /// Source height after EXIF orientation.
    pub height: u32,
    /// Source format, lower case.
    pub format: String,
    /// 1 (grey) or 3 (RGB).
    pub channels: u8,
    /// Stored width.
    pub pixel_width: u32,
    /// Stored height.
    pub pixel_height: u32,
    /// Stored pixels, row-major, interleaved.
    pub pixels: Vec<u8>,
}

/// The size of the stored pixels: the longer side scaled down to `max_side`, aspect kept.
pub fn target_size(width: u32, height: u32, max_side: u32) -> (u32, u32) {
    let longer = width.max(height);
    if longer <= max_side || longer == 0 {
        return (width, height);
    }
    let scale = f64::from(max_side) / f64::from(longer);
    let w = ((f64::from(width) * scale).round() as u32).clamp(1, max_side);
    let h = ((f64::from(height) * scale).round() as u32).clamp(1, max_side);
    (w, h)
}

/// Decodes `bytes` (format sniffed from the content, not the file name), applies EXIF orientation,
/// converts to grey or RGB 8-bit and resizes. Errors are one-line reasons for the `errors` output.
pub fn decode_image(bytes: &[u8], opts: &DecodeOptions) -> Result<Decoded, String> {
    if bytes.is_empty() {
        return Err("zero-byte file".into());
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("cannot read: {e}"))?;
    let Some(format) = reader.format() else {
        return Err(
            "unrecognised image format (supported: JPEG, PNG, WebP, GIF, BMP, TIFF)".into(),
        );
    };
    let format_name = format!("{format:?}").to_lowercase();
    // The JPEG decoder fills a cut-off scan with grey instead of failing; refuse such files.
    if format == image::ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err("truncated jpeg: no end-of-image marker after the last scan".into());
    }
    let mut reader = reader;
    // Headers first, without limits, so that an oversized image is refused with our own message.
    reader.no_limits();
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| format!("corrupt {format_name}: {e}"))?;
    let (w, h) = decoder.dimensions();
    let pixels = u64::from(w) * u64::from(h);
    if pixels > opts.max_pixels {
        return Err(format!(
            "{w}×{h} = {pixels} pixels exceeds max_pixels = {} (decompression-bomb guard); raise `max_pixels` to accept it",
            opts.max_pixels
        ));
    }
    // The decoder's own guard against huge allocations (16-bit RGBA is 8 bytes a pixel).
    let mut limits = Limits::default();
    limits.max_alloc = Some(opts.max_pixels.saturating_mul(8));
    decoder
        .set_limits(limits)
        .map_err(|e| format!("{format_name}: {e}"))?;
    if pixels == 0 {
        return Err(format!("{format_name} has no pixels ({w}×{h})"));
    }
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder)
        .map_err(|e| format!("corrupt or truncated {format_name}: {e}"))?;
    img.apply_orientation(orientation);
    let (width, height) = (img.width(), img.height());
    let grey = !img.color().has_color();
    let img = if grey {
        DynamicImage::ImageLuma8(img.into_luma8())
    } else {
        DynamicImage::ImageRgb8(img.into_rgb8())
    };
    let (channels, pixel_type) = if grey {
        (1u8, PixelType::U8)
    } else {
        (3u8, PixelType::U8x3)
    };
    let (pw, ph) = target_size(width, height, opts.max_side);
    let pixels = if (pw, ph) == (width, height) {
        img.into_bytes()
    } else {
        resize(&img, pw, ph, pixel_type)?
    };
    Ok(Decoded {
        width,
        height,
        format: format_name,
        channels,
        pixel_width: pw,
        pixel_height: ph,
        pixels,
    })
}

/// True when the JPEG's last scan is followed by an end-of-image marker. Scan data escapes 0xFF as
/// `FF 00`, so `FF D9` after the last start-of-scan can only be the real end marker.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_sos {
        Some(i) => bytes[i..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => false,
    }
}

/// Resizes grey pixels (IDX images) to fit `max_side`.
pub fn resize_grey(
    pixels: &[u8],
    width: u32,
    height: u32,
    max_side: u32,
) -> Result<(u32, u32, Vec<u8>), String> {
    let (pw, ph) = target_size(width, height, max_side);
    if (pw, ph) == (width, height) {
        return Ok((width, height, pixels.to_vec()));
    }
    let src = ImageRef::new(width, height, pixels, PixelType::U8)
        .map_err(|e| format!("bad pixel buffer: {e}"))?;
    Ok((pw, ph, resize(&src, pw, ph, PixelType::U8)?))
}

/// Catmull-Rom (bicubic) resize of `src` to `width`×`height`.
fn resize(
    src: &impl IntoImageView,
    width: u32,
    height: u32,
    pixel_type: PixelType,
) -> Result<Vec<u8>, String> {
    let mut dst = Image::new(width, height, pixel_type);
    Resizer::new()
        .resize(
            src,
            &mut dst,
            &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom)),
        )
        .map_err(|e| format!("resize failed: {e}"))?;
    Ok(dst.into_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_size_keeps_aspect_and_never_upscales() {
        assert_eq!(target_size(1000, 500, 100), (100, 50));
        assert_eq!(target_size(500, 1000, 100), (50, 100));
        assert_eq!(target_size(28, 28, 64), (28, 28));
        assert_eq!(target_size(10_000, 1, 100), (100, 1));
    }
}
