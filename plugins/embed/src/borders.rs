//! Trimming the uniform borders of a grey image before it is described, so a copy with added
//! borders or padding (letterboxing, a frame, a white margin) describes like its original.
//!
//! Each side is trimmed while its outermost line is uniform in that side's border colour (the mean
//! of its outermost line): all but [`OUTLIERS`] of its pixels within [`TOLERANCE`] grey levels.
//! Sides are trimmed in turn (top, bottom, left, right), each over what the previous ones left,
//! and the four sides again until nothing changes (at most [`PASSES`] times), so an added frame
//! around an image with a plain background of its own is trimmed down to the same content as the
//! image itself. Noise from recompression near the content stops the trim a few pixels early,
//! which the low-frequency descriptor does not notice. An image that would keep less than [`MIN_KEPT`] of a side is left
//! whole: it is nearly uniform, and trimming would magnify noise.

use fast_image_resize::pixels::F32;

/// Largest difference from the border colour, in grey levels, of a pixel on a uniform line.
pub const TOLERANCE: f32 = 12.0;

/// The smallest share of a side that trimming may leave.
pub const MIN_KEPT: f64 = 0.1;

/// The share of a line's pixels that may lie outside the tolerance (recompression noise).
pub const OUTLIERS: f64 = 0.03;

/// Rounds of trimming the four sides, at most.
pub const PASSES: usize = 4;

/// A rectangle of an image: left, top, width, height in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First column.
    pub left: u32,
    /// First row.
    pub top: u32,
    /// Columns.
    pub width: u32,
    /// Rows.
    pub height: u32,
}

/// The part of the `width × height` row-major grey image inside its uniform borders.
pub fn content_window(grey: &[F32], width: u32, height: u32) -> Window {
    let whole = Window {
        left: 0,
        top: 0,
        width,
        height,
    };
    if grey.len() != width as usize * height as usize || width < 2 || height < 2 {
        return whole;
    }
    let at = |x: u32, y: u32| grey[y as usize * width as usize + x as usize].0;
    let (mut left, mut top, mut right, mut bottom) = (0u32, 0u32, width, height);
    for _ in 0..PASSES {
        let before = (left, top, right, bottom);
        // Top and bottom rows over the width left, then left and right columns.
        top += uniform_run(top..bottom, |y| (left..right).map(move |x| at(x, y)));
        bottom -= uniform_run((top..bottom).rev(), |y| {
            (left..right).map(move |x| at(x, y))
        });
        left += uniform_run(left..right, |x| (top..bottom).map(move |y| at(x, y)));
        right -= uniform_run((left..right).rev(), |x| {
            (top..bottom).map(move |y| at(x, y))
        });
        if (left, top, right, bottom) == before {
            break;
        }
    }
    let kept = |n: u32, side: u32| f64::from(n) >= (MIN_KEPT * f64::from(side)).max(2.0);
    if !(kept(right.saturating_sub(left), width) && kept(bottom.saturating_sub(top), height)) {
        return whole;
    }
    Window {
        left,
        top,
        width: right - left,
        height: bottom - top,
    }
}

/// How many of `lines`, from the first, are uniform in the first line's mean colour.
fn uniform_run<L, I>(mut lines: L, pixels: impl Fn(u32) -> I) -> u32
where
    L: Iterator<Item = u32>,
    I: Iterator<Item = f32>,
{
    let Some(first) = lines.next() else { return 0 };
    let (sum, count) = pixels(first).fold((0.0f64, 0usize), |(s, c), p| (s + f64::from(p), c + 1));
    if count == 0 {
        return 0;
    }
    let colour = (sum / count as f64) as f32;
    let allowed = (OUTLIERS * count as f64).floor() as usize;
    let uniform = |line: u32| {
        pixels(line)
            .filter(|p| (p - colour).abs() > TOLERANCE)
            .take(allowed + 1)
            .count()
            <= allowed
    };
    if !uniform(first) {
        return 0;
    }
    1 + lines.take_while(|&line| uniform(line)).count() as u32
}

/// The pixels of `window` of the `width`-wide row-major image, row-major.
pub fn crop(grey: &[F32], width: u32, window: Window) -> Vec<F32> {
    (window.top..window.top + window.height)
        .flat_map(|y| {
            let start = y as usize * width as usize + window.left as usize;
            grey[start..start + window.width as usize].iter().copied()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(width: u32, height: u32, f: impl Fn(u32, u32) -> f32) -> Vec<F32> {
        (0..height)
            .flat_map(|y| (0..width).map(move |x| (x, y)))
            .map(|(x, y)| F32::new(f(x, y)))
            .collect()
    }

    #[test]
    fn a_frame_is_trimmed_to_the_content() {
        // A 40 × 30 image: content (a gradient) at columns 5..33 and rows 3..27, the rest 250 with
        // noise of ±5 grey levels.
        let grey = image(40, 30, |x, y| {
            if (5..33).contains(&x) && (3..27).contains(&y) {
                (x * 7 + y * 3) as f32
            } else {
                250.0 + ((x * 13 + y * 7) % 11) as f32 - 5.0
            }
        });
        assert_eq!(
            content_window(&grey, 40, 30),
            Window {
                left: 5,
                top: 3,
                width: 28,
                height: 24
            }
        );
    }

    #[test]
    fn images_without_uniform_borders_are_left_whole() {
        let grey = image(20, 10, |x, y| ((x * 31 + y * 17) % 200) as f32);
        assert_eq!(
            content_window(&grey, 20, 10),
            Window {
                left: 0,
                top: 0,
                width: 20,
                height: 10
            }
        );
        let flat = image(20, 10, |_, _| 7.0);
        assert_eq!(
            content_window(&flat, 20, 10).width,
            20,
            "nearly uniform: whole"
        );
    }

    #[test]
    fn crop_takes_the_window_row_by_row() {
        let grey = image(4, 3, |x, y| (10 * y + x) as f32);
        let window = Window {
            left: 1,
            top: 1,
            width: 2,
            height: 2,
        };
        let values: Vec<f32> = crop(&grey, 4, window).iter().map(|p| p.0).collect();
        assert_eq!(values, vec![11.0, 12.0, 21.0, 22.0]);
    }
}
