//! Image → tensor: rows of the images dataset (8-bit interleaved pixels) to float tensors in [0, 1]
//! (normalise them with [`crate::augment::normalize`]).

use arrow_array::cast::AsArray;
use arrow_array::types::{UInt8Type, UInt32Type};
use arrow_array::{Array, RecordBatch};
use dinoflow_storage::schemas::images;
use tch::{Device, Kind, Tensor};

use crate::augment::rgb_to_grayscale;
use crate::error::VisionError;

/// How a stored image becomes a `size`×`size` input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageTransform {
    /// Output side in pixels.
    pub size: i64,
    /// Output channels: 1 (RGB is converted with the ITU-R 601 luma weights) or 3 (grey is
    /// replicated).
    pub channels: i64,
    /// The shorter side is first resized to `size / crop_fraction` (bicubic, antialiased), then
    /// the centre `size`×`size` is cut: 224/256 = 0.875 is DINOv2's evaluation transform; 1.0 keeps
    /// the whole shorter side.
    pub crop_fraction: f64,
}

/// One image as a float (1, C, H, W) tensor in [0, 1] with `channels` channels.
fn pixels_to_tensor(
    pixels: &[u8],
    c: i64,
    h: i64,
    w: i64,
    channels: i64,
) -> Result<Tensor, VisionError> {
    if (c != 1 && c != 3) || h <= 0 || w <= 0 || pixels.len() as i64 != c * h * w {
        return Err(VisionError::Images(format!(
            "a row has {} pixel bytes for {w}×{h}×{c}",
            pixels.len()
        )));
    }
    let t = Tensor::from_slice(pixels)
        .view([1, h, w, c])
        .permute([0, 3, 1, 2])
        .to_kind(Kind::Float)
        / 255.0;
    convert_channels(&t, channels)
}

/// Converts (B, C, H, W) between 1 and 3 channels (RGB → grey with the luma weights, grey → RGB by
/// replication).
pub fn convert_channels(x: &Tensor, channels: i64) -> Result<Tensor, VisionError> {
    let c = x.size()[1];
    Ok(if c == channels {
        x.shallow_clone()
    } else if channels == 1 {
        rgb_to_grayscale(x)?
    } else {
        x.expand([-1, channels, -1, -1], false).contiguous()
    })
}

/// Resizes the shorter side and centre-crops to `t.size`, as [`ImageTransform`] describes.
fn resize_crop(x: &Tensor, t: &ImageTransform) -> Tensor {
    let (h, w) = (x.size()[2], x.size()[3]);
    if h == t.size && w == t.size {
        return x.shallow_clone();
    }
    let short = ((t.size as f64) / t.crop_fraction)
        .round()
        .max(t.size as f64) as i64;
    let (nh, nw) = if h <= w {
        (
            short,
            ((w * short) as f64 / h as f64).round().max(t.size as f64) as i64,
        )
    } else {
        (
            ((h * short) as f64 / w as f64).round().max(t.size as f64) as i64,
            short,
        )
    };
    let resized = if (nh, nw) == (h, w) {
        x.shallow_clone()
    } else {
        x.internal_upsample_bicubic2d_aa([nh, nw], false, None, None)
            .clamp(0.0, 1.0)
    };
    resized
        .narrow(2, (nh - t.size) / 2, t.size)
        .narrow(3, (nw - t.size) / 2, t.size)
}

/// The rows of an images-schema batch as a float (B, C, size, size) tensor in [0, 1] on `device`
/// (not normalised). Rows that share one shape are converted together.
pub fn images_to_tensor(
    batch: &RecordBatch,
    transform: &ImageTransform,
    device: Device,
) -> Result<Tensor, VisionError> {
    if transform.size <= 0 || !(transform.crop_fraction > 0.0 && transform.crop_fraction <= 1.0) {
        return Err(VisionError::Images(format!(
            "size must be positive and crop_fraction in (0, 1], got {} and {}",
            transform.size, transform.crop_fraction
        )));
    }
    let col = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| VisionError::Images(format!("the batch has no `{name}` column")))
    };
    let pixels = col(images::PIXELS)?
        .as_binary_opt::<i32>()
        .ok_or_else(|| VisionError::Images("`pixels` is not a binary column".into()))?
        .clone();
    let u32_col = |name: &str| -> Result<Vec<u32>, VisionError> {
        let c = col(name)?;
        let a = c
            .as_primitive_opt::<UInt32Type>()
            .ok_or_else(|| VisionError::Images(format!("`{name}` is not a uint32 column")))?;
        Ok(a.values().to_vec())
    };
    let widths = u32_col(images::PIXEL_WIDTH)?;
    let heights = u32_col(images::PIXEL_HEIGHT)?;
    let chans = col(images::CHANNELS)?;
    let chans = chans
        .as_primitive_opt::<UInt8Type>()
        .ok_or_else(|| VisionError::Images("`channels` is not a uint8 column".into()))?;
    let n = batch.num_rows();
    if n == 0 {
        return Ok(Tensor::zeros(
            [0, transform.channels, transform.size, transform.size],
            (Kind::Float, device),
        ));
    }
    let shape = |i: usize| (chans.value(i), heights[i], widths[i]);
    let uniform = (1..n).all(|i| shape(i) == shape(0)) && pixels.null_count() == 0;
    let x = if uniform {
        let (c, h, w) = shape(0);
        let (c, h, w) = (i64::from(c), i64::from(h), i64::from(w));
        let data = &pixels.value_data()
            [pixels.value_offsets()[0] as usize..pixels.value_offsets()[n] as usize];
        if data.len() as i64 != n as i64 * c * h * w {
            return Err(VisionError::Images(format!(
                "{} pixel bytes for {n} images of {w}×{h}×{c}",
                data.len()
            )));
        }
        let t = Tensor::from_slice(data)
            .to_device(device)
            .view([n as i64, h, w, c])
            .permute([0, 3, 1, 2])
            .to_kind(Kind::Float)
            / 255.0;
        resize_crop(&convert_channels(&t, transform.channels)?, transform)
    } else {
        let mut rows = Vec::with_capacity(n);
        for i in 0..n {
            let (c, h, w) = shape(i);
            let t = pixels_to_tensor(
                pixels.value(i),
                i64::from(c),
                i64::from(h),
                i64::from(w),
                transform.channels,
            )?
            .to_device(device);
            rows.push(resize_crop(&t, transform));
        }
        Tensor::cat(&rows, 0)
    };
    Ok(x.contiguous())
}
