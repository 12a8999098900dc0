//! Grey images at their own aspect ratio, as local-feature verification ([`crate::features`])
//! reads them from an images dataset.

use arrow_array::cast::AsArray;
use arrow_array::types::{UInt8Type, UInt32Type};
use dinoflow_engine::{StageContext, StageError};
use dinoflow_storage::schemas::images;
use futures::TryStreamExt;
use opencv::core::{Mat, Size};
use opencv::imgproc;
use opencv::prelude::*;

use crate::{CurateError, failed};

/// One grey image, row-major, one byte per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GreyImage {
    /// Columns.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// `width × height` grey levels.
    pub pixels: Vec<u8>,
}

impl GreyImage {
    /// The grey image of `channels`-channel (1, 3 or 4; RGB(A)) interleaved `pixels`, with the
    /// ITU-R BT.601 weights OpenCV uses.
    pub fn from_pixels(
        pixels: &[u8],
        width: u32,
        height: u32,
        channels: u8,
    ) -> Result<Self, CurateError> {
        let c = usize::from(channels);
        let n = width as usize * height as usize;
        if !matches!(c, 1 | 3 | 4) || pixels.len() != n * c {
            return Err(CurateError::Input(format!(
                "{} pixel bytes for an image of {width}×{height}×{channels}",
                pixels.len()
            )));
        }
        let grey = if c == 1 {
            pixels.to_vec()
        } else {
            pixels
                .chunks_exact(c)
                .map(|p| {
                    let y =
                        0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]);
                    y.round().clamp(0.0, 255.0) as u8
                })
                .collect()
        };
        Ok(Self {
            width,
            height,
            pixels: grey,
        })
    }

    /// This image scaled down (area averaging) so its longer side is at most `side`.
    pub fn fit_within(self, side: u32) -> Result<Self, CurateError> {
        let longer = self.width.max(self.height);
        if longer <= side || longer == 0 {
            return Ok(self);
        }
        let scale = f64::from(side) / f64::from(longer);
        let w = ((f64::from(self.width) * scale).round() as u32).max(1);
        let h = ((f64::from(self.height) * scale).round() as u32).max(1);
        let mut out = Mat::default();
        imgproc::resize(
            &self.to_mat()?,
            &mut out,
            Size::new(w as i32, h as i32),
            0.0,
            0.0,
            imgproc::INTER_AREA,
        )?;
        Ok(Self {
            width: w,
            height: h,
            pixels: out.data_bytes()?.to_vec(),
        })
    }

    /// The pixels as an OpenCV 8-bit single-channel matrix (a copy).
    pub fn to_mat(&self) -> Result<Mat, CurateError> {
        let view =
            Mat::new_rows_cols_with_data(self.height as i32, self.width as i32, &self.pixels)?;
        Ok(view.try_clone()?)
    }
}

/// The ids and grey images (longer side at most `side`) of the images dataset on input `port`.
pub async fn read_grey(
    ctx: &StageContext,
    port: &str,
    side: u32,
) -> Result<(Vec<String>, Vec<GreyImage>), StageError> {
    let dataset = ctx.input_dataset(port)?;
    let mut ids = Vec::with_capacity(dataset.rows() as usize);
    let mut out = Vec::with_capacity(dataset.rows() as usize);
    let mut stream = std::pin::pin!(dataset.batches(1_024));
    let input = |m: String| failed(CurateError::Input(format!("`{port}`: {m}")));
    while let Some(batch) = stream.try_next().await? {
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| input(format!("the images have no `{name}` column")))
        };
        let id = col(images::ID)?;
        let id = id
            .as_string_opt::<i32>()
            .ok_or_else(|| input("`id` is not text".into()))?;
        let pixels = col(images::PIXELS)?;
        let pixels = pixels
            .as_binary_opt::<i32>()
            .ok_or_else(|| input("`pixels` is not binary".into()))?;
        let (w, h, c) = (
            col(images::PIXEL_WIDTH)?,
            col(images::PIXEL_HEIGHT)?,
            col(images::CHANNELS)?,
        );
        let u32s = |a: &arrow_array::ArrayRef, n: &str| {
            a.as_primitive_opt::<UInt32Type>()
                .cloned()
                .ok_or_else(|| input(format!("`{n}` is not uint32")))
        };
        let (w, h) = (u32s(&w, "pixel_width")?, u32s(&h, "pixel_height")?);
        let c = c
            .as_primitive_opt::<UInt8Type>()
            .ok_or_else(|| input("`channels` is not uint8".into()))?;
        for i in 0..batch.num_rows() {
            ids.push(id.value(i).to_string());
            let grey = GreyImage::from_pixels(pixels.value(i), w.value(i), h.value(i), c.value(i))
                .and_then(|g| g.fit_within(side))
                .map_err(|e| failed(e.on_port(port)))?;
            out.push(grey);
        }
    }
    Ok((ids, out))
}
