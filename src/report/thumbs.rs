//! Thumbnails for the report: the decoded pixels of image rows, found by id in the run's image
//! datasets, as small PNG data URIs (the page embeds every image; it loads nothing).

use std::collections::{BTreeSet, HashMap};
use std::io::Cursor;

use anyhow::{Context, Result, bail};
use arrow_array::cast::AsArray;
use arrow_array::types::{UInt8Type, UInt32Type};
use arrow_array::{Array, RecordBatch};
use base64::Engine as _;
use dinoflow_storage::Dataset;
use dinoflow_storage::schemas::images;
use futures::TryStreamExt;
use image::{DynamicImage, GrayImage, RgbImage};

/// The longest side of a thumbnail, in pixels (the page scales small ones up).
pub const THUMB_SIDE: u32 = 96;

/// One image as the report shows it.
#[derive(Debug, Clone)]
pub struct Thumb {
    /// Where the image came from (its `source` column).
    pub source: String,
    /// `data:image/png;base64,…`.
    pub uri: String,
}

/// A dataset of the images schema, named for error messages.
pub struct ImageDataset {
    /// `stage.port`, for errors.
    pub name: String,
    /// The opened dataset.
    pub dataset: Dataset,
}

/// The thumbnails of the `wanted` ids, read from `datasets` in order until every id is found.
/// Ids found in none of them are missing from the result (the page says so in their place): a
/// dataset that cannot be read, or an image whose pixels do not make a picture, costs its
/// thumbnails and a warning naming it, not the report.
pub async fn find(datasets: &[ImageDataset], wanted: &BTreeSet<String>) -> HashMap<String, Thumb> {
    let mut found: HashMap<String, Thumb> = HashMap::new();
    for d in datasets {
        if found.len() == wanted.len() {
            break;
        }
        if let Err(e) = find_in(d, wanted, &mut found).await {
            tracing::warn!("no thumbnails from {}: {e:#}", d.name);
        }
    }
    found
}

async fn find_in(
    d: &ImageDataset,
    wanted: &BTreeSet<String>,
    found: &mut HashMap<String, Thumb>,
) -> Result<()> {
    let mut batches = std::pin::pin!(d.dataset.batches(4096));
    while let Some(batch) = batches.try_next().await? {
        collect(&batch, &d.name, wanted, found)?;
        if found.len() == wanted.len() {
            break;
        }
    }
    Ok(())
}

/// Adds the thumbnails of the wanted rows of `batch` that are not found yet.
fn collect(
    batch: &RecordBatch,
    dataset: &str,
    wanted: &BTreeSet<String>,
    found: &mut HashMap<String, Thumb>,
) -> Result<()> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .with_context(|| format!("no `{name}` column"))
    };
    let bad = |name: &str| format!("the `{name}` column has an unexpected type");
    let ids = column(images::ID)?
        .as_string_opt::<i32>()
        .with_context(|| bad(images::ID))?;
    let sources = column(images::SOURCE)?
        .as_string_opt::<i32>()
        .with_context(|| bad(images::SOURCE))?;
    let pixels = column(images::PIXELS)?
        .as_binary_opt::<i32>()
        .with_context(|| bad(images::PIXELS))?;
    let channels = column(images::CHANNELS)?
        .as_primitive_opt::<UInt8Type>()
        .with_context(|| bad(images::CHANNELS))?;
    let widths = column(images::PIXEL_WIDTH)?
        .as_primitive_opt::<UInt32Type>()
        .with_context(|| bad(images::PIXEL_WIDTH))?;
    let heights = column(images::PIXEL_HEIGHT)?
        .as_primitive_opt::<UInt32Type>()
        .with_context(|| bad(images::PIXEL_HEIGHT))?;
    for row in 0..batch.num_rows() {
        let id = ids.value(row);
        if !wanted.contains(id) || found.contains_key(id) || pixels.is_null(row) {
            continue;
        }
        let uri = match png_data_uri(
            pixels.value(row),
            widths.value(row),
            heights.value(row),
            channels.value(row),
        ) {
            Ok(uri) => uri,
            Err(e) => {
                tracing::warn!("no thumbnail for image {id} of {dataset}: {e:#}");
                continue;
            }
        };
        found.insert(
            id.to_string(),
            Thumb {
                source: sources.value(row).to_string(),
                uri,
            },
        );
    }
    Ok(())
}

/// Encodes row-major interleaved 8-bit `pixels` (1 or 3 channels) as a PNG data URI whose longest
/// side is at most [`THUMB_SIDE`].
pub fn png_data_uri(pixels: &[u8], width: u32, height: u32, channels: u8) -> Result<String> {
    let short = || {
        format!(
            "{} pixel bytes do not make a {width}×{height}×{channels} image",
            pixels.len()
        )
    };
    let image = match channels {
        1 => DynamicImage::ImageLuma8(
            GrayImage::from_raw(width, height, pixels.to_vec()).with_context(short)?,
        ),
        3 => DynamicImage::ImageRgb8(
            RgbImage::from_raw(width, height, pixels.to_vec()).with_context(short)?,
        ),
        n => bail!("{n} channels: thumbnails are made of 1- or 3-channel images"),
    };
    let image = if width.max(height) > THUMB_SIDE {
        image.thumbnail(THUMB_SIDE, THUMB_SIDE)
    } else {
        image
    };
    let mut png = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .context("encoding a PNG thumbnail")?;
    Ok(format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&png)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(uri: &str) -> DynamicImage {
        let b64 = uri.strip_prefix("data:image/png;base64,").unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        image::load_from_memory_with_format(&png, image::ImageFormat::Png).unwrap()
    }

    #[test]
    fn small_images_keep_their_pixels() {
        let pixels: Vec<u8> = (0..28 * 28).map(|i| (i % 251) as u8).collect();
        let image = decode(&png_data_uri(&pixels, 28, 28, 1).unwrap());
        assert_eq!((image.width(), image.height()), (28, 28));
        assert_eq!(image.to_luma8().into_raw(), pixels);
    }

    #[test]
    fn large_images_shrink_to_the_thumbnail_side_keeping_their_shape() {
        let pixels = vec![200u8; 300 * 150 * 3];
        let image = decode(&png_data_uri(&pixels, 300, 150, 3).unwrap());
        assert_eq!(
            (image.width(), image.height()),
            (THUMB_SIDE, THUMB_SIDE / 2)
        );
    }

    #[test]
    fn wrong_sizes_and_channels_are_errors() {
        let err = png_data_uri(&[0; 10], 4, 4, 1).unwrap_err().to_string();
        assert!(err.contains("10 pixel bytes"), "{err}");
        let err = png_data_uri(&[0; 32], 4, 4, 2).unwrap_err().to_string();
        assert!(err.contains("2 channels"), "{err}");
    }
}
