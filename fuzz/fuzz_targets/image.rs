//! Any bytes as an image file: ingest's decoder returns pixels of the announced size or a reason,
//! within its pixel limit, and never panics.
#![no_main]

use dinoflow_ingest::{DecodeOptions, decode_image};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let opts = DecodeOptions {
        max_side: 64,
        max_pixels: 1 << 22,
    };
    if let Ok(d) = decode_image(data, &opts) {
        assert!(d.pixel_width <= 64 && d.pixel_height <= 64);
        assert_eq!(
            d.pixels.len(),
            d.pixel_width as usize * d.pixel_height as usize * usize::from(d.channels)
        );
    }
});
