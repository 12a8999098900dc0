//! The checks every built-in descriptor makes on an image buffer before reading it.

/// Why an image buffer cannot be read as an image of the stated shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    /// The image has no pixels: its width or height is 0.
    #[error("image has zero width or height ({width}x{height}); both must be at least 1")]
    ZeroDimension {
        /// The width given.
        width: u32,
        /// The height given.
        height: u32,
    },
    /// The channel count is neither 1 (grey) nor 3 (RGB).
    #[error("unsupported channel count {0}: expected 1 (grey) or 3 (interleaved RGB)")]
    UnsupportedChannels(u8),
    /// The buffer length is not `width × height × channels`.
    #[error(
        "pixel buffer has {actual} values but a {width}x{height} image with {channels} \
         channel(s) needs exactly {expected}"
    )]
    BufferLength {
        /// The width given.
        width: u32,
        /// The height given.
        height: u32,
        /// The channel count given.
        channels: u8,
        /// The number of values expected (`width × height × channels`).
        expected: u128,
        /// The number of values received.
        actual: usize,
    },
}

/// Checks that a buffer of `len` values is a `width × height` image of `channels` (1 or 3)
/// interleaved channels.
///
/// # Errors
///
/// [`ShapeError::ZeroDimension`] if `width` or `height` is 0, [`ShapeError::UnsupportedChannels`]
/// if `channels` is not 1 or 3, [`ShapeError::BufferLength`] if `len` is not
/// `width × height × channels`.
pub fn check_image(len: usize, width: u32, height: u32, channels: u8) -> Result<(), ShapeError> {
    if width == 0 || height == 0 {
        return Err(ShapeError::ZeroDimension { width, height });
    }
    if channels != 1 && channels != 3 {
        return Err(ShapeError::UnsupportedChannels(channels));
    }
    let expected = u128::from(width) * u128::from(height) * u128::from(channels);
    if expected != len as u128 {
        return Err(ShapeError::BufferLength {
            width,
            height,
            channels,
            expected,
            actual: len,
        });
    }
    Ok(())
}
