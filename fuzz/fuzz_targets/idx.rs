//! Any bytes as an IDX file (the MNIST container): the parser returns an array whose shape matches
//! its data, or a reason, and never panics.
#![no_main]

use dinoflow_ingest::parse_idx;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = parse_idx(data) {
        let items: usize = a.dims.iter().product();
        assert_eq!(a.data.len(), items);
    }
});
