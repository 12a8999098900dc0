//! The embed stage's `model: pdq`: an image's PDQ hash ([`crate::pdq`]) and that of the
//! horizontally mirrored image as vectors that cosine similarity compares like Hamming distance.
//!
//! Each of the 256 bits becomes `+1/16` (set) or `−1/16` (clear), in bit order (bit `k` is DCT
//! coefficient `16 u + v`, vertical frequency `u + 1`, horizontal `v + 1`), so every vector has
//! unit length and the cosine of two is `1 − 2·hamming/256`: PDQ's match threshold of 31 bits is a
//! cosine of 0.758, 32 bits exactly 0.75.
//!
//! With `trim_borders` (the default, as for `dct`) uniform borders are cut off first
//! ([`crate::borders`], on the PDQ luminance), so copies with an added frame or padding hash like
//! their originals (with a white frame of 1/8 of the width and 1/6 of the height and a JPEG
//! re-encode, 82 of the 84 test photos stay at a cosine of 0.75 or more, most at 1; without
//! trimming none does, each as far as an unrelated photo); PDQ itself does not trim, so an image with such borders gets another
//! hash than the reference tools give it. With `trim_borders: false` the bits are exactly the
//! reference PDQ hash of the stored pixels.
//!
//! The mirrored vector is the hash of the mirrored luminance (each row reversed after the
//! trim), not the sign-flipped variant [`crate::pdq::Dihedral::FlipY`]: that variant costs nothing
//! but is only close to the mirrored image's hash, and at the sizes the ingest stage stores
//! (224 px, where the filter windows are 2 samples wide and not symmetric) it is a median of 24
//! bits and up to 108 bits away from it on the test photos, which would hide many mirrored
//! copies from a 32-bit threshold. Hashing the mirrored pixels makes an exact mirrored copy match
//! exactly, for twice the (small) cost.
//!
//! An image whose hash has quality 0 (PDQ's measure: no significant gradient at all, as in a
//! constant image, or a side under 5 pixels, whose reference hash is all zeros) gets the all-zero
//! vector, like the `dct` descriptor's featureless images, so blank images are never duplicates of
//! anything.

use fast_image_resize::pixels::F32;

use crate::borders::{content_window, crop};
use crate::pdq::{HASH_BITS, PdqDct, PdqError, luma};

/// The `pdq` model with its one option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PdqDescriptor {
    /// Whether uniform borders are trimmed before hashing.
    pub trim_borders: bool,
}

/// The vectors of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct PdqVectors {
    /// The hash's bits as `±1/16` ([`HASH_BITS`] values), or all zero for quality 0.
    pub vector: Vec<f32>,
    /// The same for the horizontally mirrored image, when asked for.
    pub mirrored: Option<Vec<f32>>,
}

/// A row-major luminance image.
#[derive(Debug, Clone, PartialEq)]
pub struct Luma {
    /// `width × height` values.
    pub values: Vec<f32>,
    /// Columns.
    pub width: u32,
    /// Rows.
    pub height: u32,
}

impl Luma {
    /// The image mirrored left to right.
    pub fn mirrored(&self) -> Self {
        let width = (self.width as usize).max(1);
        Self {
            values: self
                .values
                .chunks_exact(width)
                .flat_map(|row| row.iter().rev().copied())
                .collect(),
            width: self.width,
            height: self.height,
        }
    }

    /// Its PDQ coefficients and quality.
    ///
    /// # Errors
    ///
    /// As [`PdqDct::from_luma`].
    pub fn pdq(&self) -> Result<PdqDct, PdqError> {
        PdqDct::from_luma(&self.values, self.width, self.height)
    }
}

impl PdqDescriptor {
    /// Values per vector ([`HASH_BITS`]).
    pub fn dim(&self) -> usize {
        HASH_BITS
    }

    /// The luminance that is hashed: that of the 8-bit image (row-major, interleaved channels,
    /// `channels` 1 or 3; see [`luma`]), inside its uniform borders when trimming.
    ///
    /// # Errors
    ///
    /// As [`luma`]: zero sides, a channel count other than 1 or 3, a buffer of the wrong length.
    pub fn luma(
        &self,
        pixels: &[u8],
        width: u32,
        height: u32,
        channels: u8,
    ) -> Result<Luma, PdqError> {
        let values = luma(pixels, width, height, channels)?;
        let whole = |values| Luma {
            values,
            width,
            height,
        };
        if !self.trim_borders {
            return Ok(whole(values));
        }
        let wrapped: Vec<F32> = values.iter().map(|&v| F32::new(v)).collect();
        let window = content_window(&wrapped, width, height);
        if window.width == width && window.height == height {
            return Ok(whole(values));
        }
        Ok(Luma {
            values: crop(&wrapped, width, window).iter().map(|p| p.0).collect(),
            width: window.width,
            height: window.height,
        })
    }

    /// The vectors of an 8-bit image, with the mirrored image's when `mirrored` (see the module
    /// doc).
    ///
    /// # Errors
    ///
    /// As [`Self::luma`].
    pub fn describe(
        &self,
        pixels: &[u8],
        width: u32,
        height: u32,
        channels: u8,
        mirrored: bool,
    ) -> Result<PdqVectors, PdqError> {
        let grey = self.luma(pixels, width, height, channels)?;
        let mirrored = if mirrored {
            Some(vector(&grey.mirrored().pdq()?))
        } else {
            None
        };
        Ok(PdqVectors {
            vector: vector(&grey.pdq()?),
            mirrored,
        })
    }
}

/// The `±1/16` vector of the hash, or the zero vector for quality 0.
fn vector(dct: &PdqDct) -> Vec<f32> {
    if dct.quality() == 0 {
        vec![0.0; HASH_BITS]
    } else {
        dct.hash().to_vector()
    }
}
