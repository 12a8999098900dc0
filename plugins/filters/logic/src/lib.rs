//! The pure logic of dinoflow's shipped filter plugins.
//!
//! Every filter is a function over the columns of a batch (the `batch` record of
//! `plugins/wit/filter.wit`) that writes one code per row into `out`: [`KEEP`] (0) keeps the row,
//! any other code drops it for the reason the filter names for that code. The functions allocate
//! nothing and loop over slices only, so they run at the same speed inside the WebAssembly guests
//! (`plugins/filters/*`) and natively (the host's benchmark uses this crate as a path dependency).
//!
//! Conventions shared by every filter function:
//! - the number of rows is `out.len()`;
//! - every input column must hold at least `out.len()` entries (extra entries are ignored); a
//!   shorter column is a caller bug and panics;
//! - where a row matches two reasons, the lower code wins (e.g. [`min_size`] reports
//!   [`MIN_SIZE_SHORT_SIDE`] before [`MIN_SIZE_FEW_PIXELS`]).
//!
//! The [`params`] module parses the text parameters the guests receive from `configure`.

// `unsafe` only in the wasm32 SIMD module's unaligned vector loads and stores (`simd128`).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod params;

/// The code that keeps a row.
pub const KEEP: u8 = 0;

/// [`min_size`]: the shorter side is below `min_side`.
pub const MIN_SIZE_SHORT_SIDE: u8 = 1;
/// [`min_size`]: the image has fewer pixels (`width × height`) than `min_pixels`.
pub const MIN_SIZE_FEW_PIXELS: u8 = 2;

/// [`aspect_ratio`]: `width / height` is below `min` (or the height is 0).
pub const ASPECT_BELOW_MIN: u8 = 1;
/// [`aspect_ratio`]: `width / height` is above `max`.
pub const ASPECT_ABOVE_MAX: u8 = 2;

/// [`blank`]: the population standard deviation of the row's pixel bytes is below `min_std`
/// (or the row has no pixels).
pub const BLANK_LOW_STD: u8 = 1;
/// [`blank`]: the Shannon entropy of the row's byte histogram is below `min_entropy`.
pub const BLANK_LOW_ENTROPY: u8 = 2;

/// [`file_size`]: the file is smaller than `min_bytes`.
pub const FILE_TOO_SMALL: u8 = 1;
/// [`file_size`]: the file is larger than `max_bytes`.
pub const FILE_TOO_LARGE: u8 = 2;

/// [`format()`]: the source format is not in the allow list.
pub const FORMAT_NOT_ALLOWED: u8 = 1;

/// The names of the source format codes of the `batch` record, indexed by code:
/// 0 unknown, 1 jpeg, 2 png, 3 webp, 4 gif, 5 bmp, 6 tiff, 7 idx.
pub const FORMAT_NAMES: [&str; 8] = [
    "unknown", "jpeg", "png", "webp", "gif", "bmp", "tiff", "idx",
];

/// 1 when `first`, else 2 when `second`, else 0, without branches (so that loops vectorise).
#[inline(always)]
fn first_or_second(first: bool, second: bool) -> u8 {
    (first as u8) | (((!first & second) as u8) << 1)
}

/// Drops small images, from their source size.
///
/// Row `i` gets [`MIN_SIZE_SHORT_SIDE`] when `min(widths[i], heights[i]) < min_side`, else
/// [`MIN_SIZE_FEW_PIXELS`] when `widths[i] × heights[i] < min_pixels` (computed in 64 bits), else
/// [`KEEP`]. `min_side = 0` and `min_pixels = 0` each turn their test off.
///
/// ```
/// let mut out = [9u8; 3];
/// dinoflow_filter_logic::min_size(&[10, 40, 64], &[64, 40, 64], 32, 2000, &mut out);
/// assert_eq!(out, [1, 2, 0]);
/// ```
pub fn min_size(widths: &[u32], heights: &[u32], min_side: u32, min_pixels: u64, out: &mut [u8]) {
    let n = out.len();
    let (widths, heights) = (&widths[..n], &heights[..n]);
    if min_pixels == 0 {
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        simd128::short_side(widths, heights, min_side, out);
        #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
        for ((o, &w), &h) in out.iter_mut().zip(widths).zip(heights) {
            *o = (w.min(h) < min_side) as u8;
        }
    } else {
        for ((o, &w), &h) in out.iter_mut().zip(widths).zip(heights) {
            let short = w.min(h) < min_side;
            let few = (w as u64) * (h as u64) < min_pixels;
            *o = first_or_second(short, few);
        }
    }
}

/// Drops images whose aspect ratio `width / height` (as `f64`) lies outside `[min, max]`.
///
/// Row `i` gets [`ASPECT_BELOW_MIN`] when `heights[i] == 0` or the ratio is below `min`, else
/// [`ASPECT_ABOVE_MAX`] when it is above `max`, else [`KEEP`]. Both bounds are inclusive (a ratio
/// equal to `min` or `max` is kept).
///
/// ```
/// let mut out = [9u8; 4];
/// dinoflow_filter_logic::aspect_ratio(&[100, 10, 500, 3], &[100, 100, 100, 0], 0.25, 4.0, &mut out);
/// assert_eq!(out, [0, 1, 2, 1]);
/// ```
pub fn aspect_ratio(widths: &[u32], heights: &[u32], min: f64, max: f64, out: &mut [u8]) {
    let n = out.len();
    let (widths, heights) = (&widths[..n], &heights[..n]);
    for ((o, &w), &h) in out.iter_mut().zip(widths).zip(heights) {
        let ratio = w as f64 / h as f64;
        let below = (h == 0) | (ratio < min);
        let above = ratio > max;
        *o = first_or_second(below, above);
    }
}

/// Drops blank or low-information images, from their stored pixels.
///
/// Row `i` is `pixels[offsets[i] .. offsets[i + 1]]` (8-bit bytes, all channels together), so
/// `offsets` must hold `out.len() + 1` entries (it may be empty when `out` is). Each row gets
/// [`blank_row`]`(row, min_std, min_entropy)`.
///
/// Panics when `offsets` is too short or an offset lies outside `pixels`.
///
/// ```
/// let pixels = [7, 7, 7, 7, 0, 255, 0, 255];
/// let mut out = [9u8; 3];
/// dinoflow_filter_logic::blank(&pixels, &[0, 4, 8, 8], 4.0, 0.0, &mut out);
/// assert_eq!(out, [1, 0, 1]); // flat, high contrast, empty
/// ```
pub fn blank(pixels: &[u8], offsets: &[u64], min_std: f64, min_entropy: f64, out: &mut [u8]) {
    let n = out.len();
    if n == 0 {
        return;
    }
    let offsets = &offsets[..=n];
    for (o, bounds) in out.iter_mut().zip(offsets.windows(2)) {
        let start = usize::try_from(bounds[0]).expect("pixel offset does not fit in usize");
        let end = usize::try_from(bounds[1]).expect("pixel offset does not fit in usize");
        *o = blank_row(&pixels[start..end], min_std, min_entropy);
    }
}

/// The code [`blank`] gives one row of pixel bytes.
///
/// [`BLANK_LOW_STD`] when the row is empty or [`pixel_std`]`(row) < min_std`, else
/// [`BLANK_LOW_ENTROPY`] when `min_entropy > 0` and [`entropy_bits`]`(row) < min_entropy`, else
/// [`KEEP`]. The entropy is only computed when `min_entropy > 0`.
pub fn blank_row(row: &[u8], min_std: f64, min_entropy: f64) -> u8 {
    if row.is_empty() || pixel_std(row) < min_std {
        BLANK_LOW_STD
    } else if min_entropy > 0.0 && entropy_bits(row) < min_entropy {
        BLANK_LOW_ENTROPY
    } else {
        KEEP
    }
}

/// The population standard deviation of `bytes` (0 for an empty slice).
///
/// Sums are exact integers (`n²·variance = n·Σx² − (Σx)²`, from [`pixel_sums`]), so the only
/// rounding is the final division and square root.
///
/// ```
/// assert_eq!(dinoflow_filter_logic::pixel_std(&[2, 4, 4, 4, 5, 5, 7, 9]), 2.0);
/// ```
pub fn pixel_std(bytes: &[u8]) -> f64 {
    if bytes.is_empty() {
        return 0.0;
    }
    let (sum, sum_sq) = pixel_sums(bytes);
    let n = bytes.len() as u64;
    // In 64 bits when the products fit (every real image: n < 2³² and n·Σx² < 2⁶⁴), else in 128.
    // (Σx)² ≤ n·Σx² (Cauchy–Schwarz), so (Σx)² fits too and the subtraction cannot underflow. An
    // integer converts to f64 rounded to nearest from either width, so both branches agree.
    let (scaled_var, n_sq) = match (n.checked_mul(sum_sq), n.checked_mul(n)) {
        (Some(n_sum_sq), Some(n_sq)) => ((n_sum_sq - sum * sum) as f64, n_sq as f64),
        _ => {
            let n = n as u128;
            let scaled_var = n * sum_sq as u128 - (sum as u128) * (sum as u128);
            (scaled_var as f64, (n * n) as f64)
        }
    };
    (scaled_var / n_sq).sqrt()
}

/// The exact sums `(Σx, Σx²)` of `bytes`, which [`pixel_std`] needs.
///
/// Built for `wasm32` with the `simd128` target feature (as `scripts/build-plugins.sh` builds the
/// guests), this runs explicit WebAssembly SIMD code that handles 16 bytes per step; on every other
/// target it is [`pixel_sums_scalar`], a plain loop that the compiler vectorises by itself (as it
/// does natively on x86-64). Both return the same integers for every input.
///
/// ```
/// assert_eq!(dinoflow_filter_logic::pixel_sums(&[1, 2, 255]), (258, 1 + 4 + 65025));
/// ```
pub fn pixel_sums(bytes: &[u8]) -> (u64, u64) {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        simd128::pixel_sums(bytes)
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    {
        pixel_sums_scalar(bytes)
    }
}

/// The portable form of [`pixel_sums`]: a plain loop over the bytes, used on every target but
/// `wasm32` + `simd128` (and kept public there so that tests can compare the two).
pub fn pixel_sums_scalar(bytes: &[u8]) -> (u64, u64) {
    let (mut sum, mut sum_sq) = (0u64, 0u64);
    // 65,536 × 255² < 2³², so 32-bit lanes cannot overflow within a chunk.
    for chunk in bytes.chunks(1 << 16) {
        let (mut s, mut q) = (0u32, 0u32);
        for &b in chunk {
            let b = b as u32;
            s += b;
            q += b * b;
        }
        sum += s as u64;
        sum_sq += q as u64;
    }
    (sum, sum_sq)
}

/// [`pixel_sums`] and [`min_size`]'s short-side test in explicit WebAssembly SIMD (LLVM vectorises
/// the portable loops for `wasm32` + `simd128` at only 4 bytes or 4 rows per iteration).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128 {
    use core::arch::wasm32::{
        i8x16_narrow_i16x8, i16x8_add, i16x8_narrow_i32x4, i32x4_add, i32x4_dot_i16x8, u8x16_splat,
        u16x8_extend_high_u8x16, u16x8_extend_low_u8x16, u16x8_splat, u32x4_extadd_pairwise_u16x8,
        u32x4_extract_lane, u32x4_lt, u32x4_min, u32x4_splat, v128, v128_and, v128_load,
        v128_store,
    };

    /// Vectors of 16 bytes per block. Per block and lane: the byte sums grow by at most
    /// 2 × 255 per vector in 16-bit lanes (128 × 510 = 65,280 < 2¹⁶), the sums of squares by at
    /// most 4 × 255² per vector in 32-bit lanes (128 × 260,100 < 2³²). Each block is then added
    /// into 64-bit totals, so any length is exact.
    const BLOCK_VECTORS: usize = 128;

    /// 16 bytes as a vector, in one `v128.load` (building it with `u8x16` from the array's bytes
    /// compiles to 16 single-byte lane loads).
    #[inline(always)]
    #[allow(unsafe_code)]
    fn load(b: &[u8; 16]) -> v128 {
        // SAFETY: `b` is a valid reference to 16 readable bytes, and `v128.load` accepts any
        // alignment (`v128_load` documents that the pointer need not be aligned).
        unsafe { v128_load(b.as_ptr().cast::<v128>()) }
    }

    #[inline(always)]
    fn lanes_u32(v: v128) -> u64 {
        u32x4_extract_lane::<0>(v) as u64
            + u32x4_extract_lane::<1>(v) as u64
            + u32x4_extract_lane::<2>(v) as u64
            + u32x4_extract_lane::<3>(v) as u64
    }

    /// Adds one vector's bytes to the 16-bit sums and their squares to the 32-bit sums.
    #[inline(always)]
    fn step(s16: &mut v128, q32: &mut v128, b: &[u8; 16]) {
        let v = load(b);
        // Bytes zero-extended to 16-bit lanes; the dot product of a lane vector with itself sums
        // squares pairwise into 32-bit lanes (255² fits a signed i16 product).
        let lo = u16x8_extend_low_u8x16(v);
        let hi = u16x8_extend_high_u8x16(v);
        *s16 = i16x8_add(*s16, i16x8_add(lo, hi));
        *q32 = i32x4_add(
            *q32,
            i32x4_add(i32x4_dot_i16x8(lo, lo), i32x4_dot_i16x8(hi, hi)),
        );
    }

    /// Four `u32` as a vector, in one `v128.load`.
    #[inline(always)]
    #[allow(unsafe_code)]
    fn load_u32x4(x: &[u32; 4]) -> v128 {
        // SAFETY: `x` is a valid reference to 16 readable bytes; `v128.load` accepts any alignment.
        unsafe { v128_load(x.as_ptr().cast::<v128>()) }
    }

    /// [`min_size`](super::min_size) with `min_pixels = 0`: 16 rows per step (LLVM's own
    /// vectorisation of the plain loop for wasm handles 4), the rest one at a time.
    pub(crate) fn short_side(widths: &[u32], heights: &[u32], min_side: u32, out: &mut [u8]) {
        let (w16, _) = widths.as_chunks::<16>();
        let (h16, _) = heights.as_chunks::<16>();
        let (o16, _) = out.as_chunks_mut::<16>();
        let done = o16.len() * 16;
        let min = u32x4_splat(min_side);
        for ((o, w), h) in o16.iter_mut().zip(w16).zip(h16) {
            let (w, _) = w.as_chunks::<4>();
            let (h, _) = h.as_chunks::<4>();
            // All-ones in the 32-bit lanes whose shorter side is below `min_side`, else zero;
            // narrowing with signed saturation keeps −1 and 0, down to one byte a row.
            let short = |k: usize| u32x4_lt(u32x4_min(load_u32x4(&w[k]), load_u32x4(&h[k])), min);
            let halves = (
                i16x8_narrow_i32x4(short(0), short(1)),
                i16x8_narrow_i32x4(short(2), short(3)),
            );
            let codes = v128_and(i8x16_narrow_i16x8(halves.0, halves.1), u8x16_splat(1));
            u8x16_store(o, codes);
        }
        for ((o, &w), &h) in out[done..]
            .iter_mut()
            .zip(&widths[done..])
            .zip(&heights[done..])
        {
            *o = (w.min(h) < min_side) as u8;
        }
    }

    /// Stores a vector's 16 bytes into `o`, in one `v128.store`.
    #[inline(always)]
    #[allow(unsafe_code)]
    fn u8x16_store(o: &mut [u8; 16], v: v128) {
        // SAFETY: `o` is a valid, exclusive reference to 16 writable bytes; `v128.store` accepts
        // any alignment.
        unsafe { v128_store(o.as_mut_ptr().cast::<v128>(), v) }
    }

    pub(crate) fn pixel_sums(bytes: &[u8]) -> (u64, u64) {
        let (vectors, tail) = bytes.as_chunks::<16>();
        let (mut sum, mut sum_sq) = (0u64, 0u64);
        for block in vectors.chunks(BLOCK_VECTORS) {
            let mut s16 = u16x8_splat(0);
            let mut q32 = u32x4_splat(0);
            // Two vectors per iteration (wasmtime does not unroll loops).
            let (pairs, last) = block.as_chunks::<2>();
            for [a, b] in pairs {
                step(&mut s16, &mut q32, a);
                step(&mut s16, &mut q32, b);
            }
            for b in last {
                step(&mut s16, &mut q32, b);
            }
            sum += lanes_u32(u32x4_extadd_pairwise_u16x8(s16));
            sum_sq += lanes_u32(q32);
        }
        for &b in tail {
            sum += b as u64;
            sum_sq += (b as u64) * (b as u64);
        }
        (sum, sum_sq)
    }
}

/// The Shannon entropy, in bits, of the 256-bin histogram of `bytes` (0 for an empty slice).
///
/// Between 0 (a single value) and 8 (every byte value equally often).
///
/// ```
/// assert_eq!(dinoflow_filter_logic::entropy_bits(&[1, 1, 2, 2]), 1.0);
/// ```
pub fn entropy_bits(bytes: &[u8]) -> f64 {
    if bytes.is_empty() {
        return 0.0;
    }
    // Four interleaved 32-bit histograms break the chains of increments to the same bin (flat
    // images); parts of at most 2³⁰ bytes keep each sub-count within u32.
    let mut hist = [0u64; 256];
    for part in bytes.chunks(1 << 30) {
        let mut sub = [[0u32; 256]; 4];
        let mut quads = part.chunks_exact(4);
        for q in &mut quads {
            sub[0][q[0] as usize] += 1;
            sub[1][q[1] as usize] += 1;
            sub[2][q[2] as usize] += 1;
            sub[3][q[3] as usize] += 1;
        }
        for &b in quads.remainder() {
            sub[0][b as usize] += 1;
        }
        for (i, h) in hist.iter_mut().enumerate() {
            *h += (sub[0][i] + sub[1][i] + sub[2][i] + sub[3][i]) as u64;
        }
    }
    // H = −Σ (c/n)·log2(c/n) = log2(n) − (Σ c·log2 c) / n
    let n = bytes.len() as f64;
    let table = x_log2_x_table();
    let mut acc = 0.0;
    for &c in &hist {
        acc += match table.get(c as usize) {
            Some(&v) => v,
            None => x_log2_x(c as f64),
        };
    }
    (n.log2() - acc / n).max(0.0)
}

fn x_log2_x(x: f64) -> f64 {
    if x > 1.0 { x * x.log2() } else { 0.0 }
}

/// `c·log2(c)` for the counts `c` of small rows: `log2` is a software routine in WebAssembly, and
/// a row has up to 256 distinct byte values. Built once (4096 entries, 32 KiB).
fn x_log2_x_table() -> &'static [f64] {
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| (0..4096).map(|c| x_log2_x(c as f64)).collect())
}

/// Drops files outside a size range.
///
/// Row `i` gets [`FILE_TOO_SMALL`] when `sizes[i] < min_bytes`, else [`FILE_TOO_LARGE`] when
/// `max_bytes != 0` and `sizes[i] > max_bytes`, else [`KEEP`]. `max_bytes = 0` means no maximum.
///
/// ```
/// let mut out = [9u8; 3];
/// dinoflow_filter_logic::file_size(&[10, 500, 5000], 100, 1000, &mut out);
/// assert_eq!(out, [1, 0, 2]);
/// ```
pub fn file_size(sizes: &[u64], min_bytes: u64, max_bytes: u64, out: &mut [u8]) {
    let n = out.len();
    let sizes = &sizes[..n];
    let max = if max_bytes == 0 { u64::MAX } else { max_bytes };
    for (o, &s) in out.iter_mut().zip(sizes) {
        *o = first_or_second(s < min_bytes, s > max);
    }
}

/// Keeps only the source formats in an allow list.
///
/// `allow_mask` has bit `c` set when format code `c` is allowed (see [`FORMAT_NAMES`],
/// [`format_mask`] and [`parse_format_list`]); codes from 32 up are never allowed. Row `i` gets
/// [`KEEP`] when `formats[i]` is allowed, else [`FORMAT_NOT_ALLOWED`].
///
/// ```
/// use dinoflow_filter_logic::{format, format_mask};
/// let mut out = [9u8; 4];
/// format(&[0, 1, 2, 3], format_mask(&[1, 2]), &mut out); // jpeg, png
/// assert_eq!(out, [1, 0, 0, 1]);
/// ```
pub fn format(formats: &[u8], allow_mask: u32, out: &mut [u8]) {
    let n = out.len();
    let formats = &formats[..n];
    let mut table = [FORMAT_NOT_ALLOWED; 256];
    for (code, slot) in table.iter_mut().enumerate().take(32) {
        if (allow_mask >> code) & 1 == 1 {
            *slot = KEEP;
        }
    }
    for (o, &f) in out.iter_mut().zip(formats) {
        *o = table[f as usize];
    }
}

/// The allow mask (for [`format()`]) of a list of format codes; codes from 32 up are ignored.
pub fn format_mask(codes: &[u8]) -> u32 {
    codes
        .iter()
        .filter(|&&c| c < 32)
        .fold(0, |mask, &c| mask | (1 << c))
}

/// The code of a format name (see [`FORMAT_NAMES`]), ignoring ASCII case and surrounding spaces;
/// `jpg` and `tif` are accepted as aliases of `jpeg` and `tiff`.
///
/// ```
/// assert_eq!(dinoflow_filter_logic::format_code(" JPG "), Some(1));
/// assert_eq!(dinoflow_filter_logic::format_code("avif"), None);
/// ```
pub fn format_code(name: &str) -> Option<u8> {
    let name = name.trim();
    let name = if name.eq_ignore_ascii_case("jpg") {
        "jpeg"
    } else if name.eq_ignore_ascii_case("tif") {
        "tiff"
    } else {
        name
    };
    FORMAT_NAMES
        .iter()
        .position(|known| known.eq_ignore_ascii_case(name))
        .map(|code| code as u8)
}

/// The allow mask (for [`format()`]) of a comma-separated list of format names, e.g. `jpeg,png`.
///
/// Names are matched by [`format_code`]; empty items are skipped. An unknown name, or a list with
/// no name at all, is an error whose message lists the valid names.
///
/// ```
/// use dinoflow_filter_logic::parse_format_list;
/// assert_eq!(parse_format_list("jpeg, png"), Ok(0b110));
/// assert!(parse_format_list("jpeg,avif").unwrap_err().contains("avif"));
/// ```
pub fn parse_format_list(list: &str) -> Result<u32, String> {
    let mut mask = 0u32;
    for item in params::text_list(list) {
        match format_code(item) {
            Some(code) => mask |= 1 << code,
            None => {
                return Err(format!(
                    "unknown format \"{item}\" (valid names: {})",
                    FORMAT_NAMES.join(", ")
                ));
            }
        }
    }
    if mask == 0 {
        return Err(format!(
            "the list names no format (valid names: {})",
            FORMAT_NAMES.join(", ")
        ));
    }
    Ok(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn min_size_codes() {
        // w×h: 10×50 short side 10 < 32 → 1; 40×40 = 1600 px < 2000 → 2; 40×20 short side 20 → 1
        // (code 1 wins over 2); 100×100 → keep; 32×63 = 2016 px, short side exactly 32 → keep.
        let widths = [10, 40, 40, 100, 32];
        let heights = [50, 40, 20, 100, 63];
        let mut out = [9u8; 5];
        min_size(&widths, &heights, 32, 2000, &mut out);
        assert_eq!(out, [1, 2, 1, 0, 0]);
        // min_pixels off: only the short side counts.
        min_size(&widths, &heights, 32, 0, &mut out);
        assert_eq!(out, [1, 0, 1, 0, 0]);
        // Both off: everything kept.
        min_size(&widths, &heights, 0, 0, &mut out);
        assert_eq!(out, [0; 5]);
    }

    #[test]
    fn min_size_pixels_in_64_bits() {
        // 65536 × 65536 = 2³², which overflows u32; it is ≥ 2³² so kept, and < 2³² + 1 so dropped.
        let mut out = [9u8; 1];
        min_size(&[65536], &[65536], 1, 1 << 32, &mut out);
        assert_eq!(out, [0]);
        min_size(&[65536], &[65536], 1, (1 << 32) + 1, &mut out);
        assert_eq!(out, [2]);
    }

    #[test]
    fn min_size_uses_out_len_rows() {
        // Longer input columns are fine; only out.len() rows are written.
        let mut out = [9u8; 2];
        min_size(&[1, 100, 1], &[1, 100, 1], 32, 0, &mut out);
        assert_eq!(out, [1, 0]);
    }

    /// With `min_pixels = 0`, built for wasm32 + simd128, [`min_size`] runs explicit SIMD code on
    /// 16 rows at a time (checked inside `min_size.wasm` by `plugins/wasm-host/tests/sandbox.rs`):
    /// every row count from 0 to 40 and sides beyond 2³¹ against the one-row rule.
    #[test]
    fn min_size_short_side_every_length() {
        let sides = [0, 1, 31, 32, 33, 1 << 31, u32::MAX];
        for min_side in sides {
            for rows in 0..=40usize {
                let widths: Vec<u32> = (0..rows).map(|i| sides[i % 7]).collect();
                let heights: Vec<u32> = (0..rows).map(|i| sides[(i / 7) % 7]).collect();
                let mut out = vec![9u8; rows];
                min_size(&widths, &heights, min_side, 0, &mut out);
                for i in 0..rows {
                    let expected = (widths[i].min(heights[i]) < min_side) as u8;
                    assert_eq!(out[i], expected, "min_side {min_side}, row {i} of {rows}");
                }
            }
        }
    }

    #[test]
    #[should_panic]
    fn min_size_short_column_panics() {
        let mut out = [0u8; 3];
        min_size(&[1, 2, 3], &[1, 2], 1, 0, &mut out);
    }

    #[test]
    fn aspect_ratio_codes() {
        // ratios: 100/100 = 1 keep; 100/0 → 1; 10/100 = 0.1 < 0.25 → 1; 500/100 = 5 > 4 → 2;
        // 0/5 = 0 → 1; 0/0 → 1; 25/100 = 0.25 (= min) keep; 400/100 = 4 (= max) keep;
        // 401/100 = 4.01 → 2.
        let widths = [100, 100, 10, 500, 0, 0, 25, 400, 401];
        let heights = [100, 0, 100, 100, 5, 0, 100, 100, 100];
        let mut out = [9u8; 9];
        aspect_ratio(&widths, &heights, 0.25, 4.0, &mut out);
        assert_eq!(out, [0, 1, 1, 2, 1, 1, 0, 0, 2]);
        // min 0, max ∞: only the zero height drops.
        aspect_ratio(&widths, &heights, 0.0, f64::INFINITY, &mut out);
        assert_eq!(out, [0, 1, 0, 0, 0, 1, 0, 0, 0]);
    }

    #[test]
    fn pixel_std_by_hand() {
        // mean 5, squared deviations 9,1,1,1,0,0,4,16 → sum 32, /8 = 4, sqrt = 2.
        assert_eq!(pixel_std(&[2, 4, 4, 4, 5, 5, 7, 9]), 2.0);
        // [0, 255]: mean 127.5, both deviations 127.5.
        assert_eq!(pixel_std(&[0, 255]), 127.5);
        // [0, 1, 2, 3]: mean 1.5, deviations² 2.25, .25, .25, 2.25 → 5/4 = 1.25.
        assert!(close(pixel_std(&[0, 1, 2, 3]), 1.25f64.sqrt()));
        assert_eq!(pixel_std(&[42; 10]), 0.0);
        assert_eq!(pixel_std(&[]), 0.0);
    }

    #[test]
    fn pixel_std_across_chunks() {
        // 200,001 bytes (more than three 65,536-byte chunks): 100,000 × 0, 100,000 × 255 and one
        // 127. Mean = 127.5·200000/200001 + 127/200001 ≈ 127.4999975; computed here in closed form:
        // n·Σx² − (Σx)² with Σx = 25,500,127 and Σx² = 6,502,516,129.
        let mut row = vec![0u8; 100_000];
        row.extend(std::iter::repeat_n(255u8, 100_000));
        row.push(127);
        let n = 200_001f64;
        let sum = 255.0 * 100_000.0 + 127.0;
        let sum_sq = 255.0 * 255.0 * 100_000.0 + 127.0 * 127.0;
        let expected = ((n * sum_sq - sum * sum) / (n * n)).sqrt();
        assert!(close(pixel_std(&row), expected));
        // Alternating 0/255 across chunk boundaries: exactly 127.5.
        let alternating: Vec<u8> = (0..300_000)
            .map(|i| if i % 2 == 0 { 0 } else { 255 })
            .collect();
        assert_eq!(pixel_std(&alternating), 127.5);
    }

    /// Deterministic pseudo-random bytes (xorshift32).
    fn noise(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 24) as u8
            })
            .collect()
    }

    /// Σx and Σx², one byte at a time.
    fn naive_sums(bytes: &[u8]) -> (u64, u64) {
        bytes.iter().fold((0, 0), |(s, q), &b| {
            (s + b as u64, q + (b as u64) * (b as u64))
        })
    }

    /// The lengths around the SIMD code's edges: 16-byte vectors, 2,048-byte blocks (128 vectors)
    /// and the scalar code's 65,536-byte chunks, a 28×28 image, and a large row.
    const EDGE_LENGTHS: [usize; 27] = [
        0, 1, 2, 15, 16, 17, 31, 32, 33, 100, 255, 256, 784, 785, 2047, 2048, 2049, 2063, 2064,
        4095, 4096, 4097, 65535, 65536, 65537, 196_608, 1_000_003,
    ];

    /// [`pixel_sums`] against [`pixel_sums_scalar`] and a byte-at-a-time sum, on every edge length,
    /// with all-0, all-255 (the largest lane sums), ramp and pseudo-random bytes, at every start
    /// offset within a vector. Built for wasm32 + simd128 this compares the explicit SIMD code;
    /// natively `pixel_sums` is the scalar code, so the SIMD code inside the shipped `blank.wasm`
    /// is checked by `plugins/wasm-host/tests/sandbox.rs` (`blank_plugin_pins_every_std`), which
    /// runs it through the host on real and crafted rows.
    #[test]
    fn pixel_sums_match_scalar_and_naive() {
        let mut rows: Vec<Vec<u8>> = Vec::new();
        for (i, &len) in EDGE_LENGTHS.iter().enumerate() {
            rows.push(vec![0; len]);
            rows.push(vec![255; len]);
            rows.push((0..len).map(|k| (k * 7 % 256) as u8).collect());
            rows.push(noise(len, 0x1234_5678 + i as u32));
            // Mostly 255 with a few low bytes: sums near every lane's limit, not a flat row.
            rows.push(
                (0..len)
                    .map(|k| if k % 97 == 3 { 1 } else { 255 })
                    .collect(),
            );
        }
        for row in &rows {
            let expected = naive_sums(row);
            assert_eq!(
                pixel_sums_scalar(row),
                expected,
                "scalar, len {}",
                row.len()
            );
            // Every start offset within a vector and a short tail, so that the unaligned
            // loads and the tails of every length are covered.
            for start in 0..16.min(row.len() + 1) {
                let part = &row[start..];
                assert_eq!(pixel_sums(part), naive_sums(part), "len {}", part.len());
            }
        }
    }

    /// [`pixel_std`] against the closed form computed here in 128 bits and f64, on rows long enough
    /// for its 128-bit branch (n·Σx² ≥ 2⁶⁴ from 17 M all-255 bytes) and short ones.
    #[test]
    fn pixel_std_both_widths() {
        let reference = |row: &[u8]| {
            let (s, q) = naive_sums(row);
            let n = row.len() as u128;
            let scaled = n * q as u128 - (s as u128) * (s as u128);
            (scaled as f64 / (n * n) as f64).sqrt()
        };
        for (i, &len) in EDGE_LENGTHS.iter().enumerate().skip(1) {
            let row = noise(len, 99 + i as u32);
            assert_eq!(
                pixel_std(&row).to_bits(),
                reference(&row).to_bits(),
                "len {len}"
            );
        }
        // 2²⁵ bytes: n·Σx² ≥ 2⁶⁴, so the 128-bit branch runs.
        let mut big = noise(1 << 25, 7);
        assert!((big.len() as u64).checked_mul(naive_sums(&big).1).is_none());
        assert_eq!(pixel_std(&big).to_bits(), reference(&big).to_bits());
        big.fill(255);
        assert_eq!(pixel_std(&big), 0.0);
        for (k, b) in big.iter_mut().enumerate() {
            *b = if k % 2 == 0 { 0 } else { 255 };
        }
        assert_eq!(pixel_std(&big), 127.5);
    }

    #[test]
    fn entropy_by_hand() {
        // Two values, equally often: 1 bit.
        assert_eq!(entropy_bits(&[1, 1, 2, 2]), 1.0);
        // One value: 0 bits.
        assert_eq!(entropy_bits(&[9; 100]), 0.0);
        // 3/4 and 1/4: 0.75·log2(4/3) + 0.25·2 = 0.311278… + 0.5.
        assert!(close(
            entropy_bits(&[0, 0, 0, 1]),
            0.75 * (4.0f64 / 3.0).log2() + 0.5
        ));
        // 16 values once each: 4 bits; all 256 values: 8 bits.
        let sixteen: Vec<u8> = (0..16).map(|k| k * 16).collect();
        assert!(close(entropy_bits(&sixteen), 4.0));
        let all: Vec<u8> = (0..=255).collect();
        assert!(close(entropy_bits(&all), 8.0));
        assert_eq!(entropy_bits(&[]), 0.0);
        // 7 bytes (not a multiple of 4), counts 3, 3, 1: log2(7) − (3·log2 3 + 3·log2 3 + 0)/7.
        let expected = 7f64.log2() - 6.0 * 3f64.log2() / 7.0;
        assert!(close(entropy_bits(&[5, 6, 5, 6, 5, 6, 7]), expected));
        // Counts beyond the c·log2(c) table (4096): 5000 × 0 and 5000 × 1 is still 1 bit.
        let mut big = vec![0u8; 5000];
        big.extend([1u8; 5000]);
        assert!(close(entropy_bits(&big), 1.0));
    }

    #[test]
    fn blank_codes() {
        // Rows: flat 7s (std 0 → 1); 0/255 pairs (std 127.5, entropy 1 bit); 0..3 (std ≈ 1.118 <
        // 4 → 1); the 16 values 0, 16, …, 240 (std = 16·sqrt((16²−1)/12) ≈ 73.8, entropy 4 bits);
        // an empty row (→ 1).
        let mut pixels = vec![7u8; 6];
        pixels.extend([0, 255, 0, 255]);
        pixels.extend([0, 1, 2, 3]);
        pixels.extend((0..16).map(|k| k * 16));
        let offsets = [0u64, 6, 10, 14, 30, 30];
        let mut out = [9u8; 5];

        blank(&pixels, &offsets, 4.0, 0.0, &mut out);
        assert_eq!(out, [1, 0, 1, 0, 1]);
        // min_entropy 1.5: the 1-bit row drops with code 2, the 4-bit row stays.
        blank(&pixels, &offsets, 4.0, 1.5, &mut out);
        assert_eq!(out, [1, 2, 1, 0, 1]);
        // min_entropy 4.0 keeps the 4-bit row (not below); 4.5 drops it.
        blank(&pixels, &offsets, 4.0, 4.0, &mut out);
        assert_eq!(out, [1, 2, 1, 0, 1]);
        blank(&pixels, &offsets, 4.0, 4.5, &mut out);
        assert_eq!(out, [1, 2, 1, 2, 1]);
        // min_std 0: only the empty row is low-std; with min_entropy 0.5 the flat row (0 bits)
        // drops with code 2, the 0..3 row (2 bits) stays.
        blank(&pixels, &offsets, 0.0, 0.5, &mut out);
        assert_eq!(out, [2, 0, 0, 0, 1]);
        // std of 0..3 is 1.118…: kept with min_std 1.1, dropped with 1.2.
        blank(&pixels, &offsets, 1.1, 0.0, &mut out);
        assert_eq!(out[2], 0);
        blank(&pixels, &offsets, 1.2, 0.0, &mut out);
        assert_eq!(out[2], 1);
        // 16-value row: std = 16·sqrt(21.25) = 73.756…
        assert!(close(pixel_std(&pixels[14..30]), 16.0 * 21.25f64.sqrt()));
    }

    #[test]
    fn blank_no_rows() {
        let mut out: [u8; 0] = [];
        blank(&[], &[], 4.0, 0.0, &mut out);
    }

    #[test]
    #[should_panic]
    fn blank_missing_offsets_panics() {
        let mut out = [0u8; 2];
        blank(&[1, 2, 3], &[0, 3], 4.0, 0.0, &mut out);
    }

    #[test]
    fn file_size_codes() {
        // min 100, max 1000: 0 → 1, 99 → 1, 100 keep, 1000 keep, 1001 → 2.
        let sizes = [0, 99, 100, 1000, 1001, u64::MAX];
        let mut out = [9u8; 6];
        file_size(&sizes, 100, 1000, &mut out);
        assert_eq!(out, [1, 1, 0, 0, 2, 2]);
        // max 0 = no maximum.
        file_size(&sizes, 100, 0, &mut out);
        assert_eq!(out, [1, 1, 0, 0, 0, 0]);
        // both off.
        file_size(&sizes, 0, 0, &mut out);
        assert_eq!(out, [0; 6]);
    }

    #[test]
    fn format_codes() {
        // allow jpeg (1) and png (2): unknown 0 → 1, jpeg keep, png keep, webp → 1, idx → 1,
        // code 200 → 1.
        let formats = [0, 1, 2, 3, 7, 200];
        let mut out = [9u8; 6];
        format(&formats, 0b110, &mut out);
        assert_eq!(out, [1, 0, 0, 1, 1, 1]);
        // default list jpeg,png,webp,idx = bits 1, 2, 3, 7.
        let default = parse_format_list("jpeg,png,webp,idx").unwrap();
        assert_eq!(default, (1 << 1) | (1 << 2) | (1 << 3) | (1 << 7));
        format(&formats, default, &mut out);
        assert_eq!(out, [1, 0, 0, 0, 0, 1]);
        // "unknown" may be allowed explicitly.
        format(&formats, parse_format_list("unknown").unwrap(), &mut out);
        assert_eq!(out, [0, 1, 1, 1, 1, 1]);
    }

    #[test]
    fn format_names() {
        assert_eq!(format_mask(&[1, 2, 40]), 0b110);
        assert_eq!(format_code("jpeg"), Some(1));
        assert_eq!(format_code("JPG"), Some(1));
        assert_eq!(format_code("tif"), Some(6));
        assert_eq!(format_code("idx"), Some(7));
        assert_eq!(format_code("unknown"), Some(0));
        assert_eq!(format_code("avif"), None);
        assert_eq!(parse_format_list(" PNG , gif,,"), Ok((1 << 2) | (1 << 4)));
        let err = parse_format_list("png,avif").unwrap_err();
        assert!(err.contains("\"avif\""), "{err}");
        assert!(
            err.contains("unknown, jpeg, png, webp, gif, bmp, tiff, idx"),
            "{err}"
        );
        assert!(parse_format_list(" , ").is_err());
    }
}
