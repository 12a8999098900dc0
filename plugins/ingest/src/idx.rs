//! IDX files (the MNIST family's format): big-endian magic, one u32 per dimension, then u8 data.

use std::io::Read;

/// An IDX array of unsigned bytes.
#[derive(Debug, Clone)]
pub struct IdxArray {
    /// Dimensions, outermost first (`[n, 28, 28]` for images, `[n]` for labels).
    pub dims: Vec<usize>,
    /// The data, row-major.
    pub data: Vec<u8>,
}

/// Parses IDX bytes, gunzipping them first when they are gzip-compressed.
pub fn parse_idx(bytes: &[u8]) -> Result<IdxArray, String> {
    let raw;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .map_err(|e| format!("corrupt gzip: {e}"))?;
        raw = out;
        &raw[..]
    } else {
        bytes
    };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err("not an IDX file (bad magic number)".into());
    }
    if bytes[2] != 0x08 {
        return Err(format!(
            "IDX element type 0x{:02x} is not supported (only unsigned bytes, 0x08)",
            bytes[2]
        ));
    }
    let ndims = bytes[3] as usize;
    let header = 4 + 4 * ndims;
    if ndims == 0 || bytes.len() < header {
        return Err("truncated IDX header".into());
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let expected = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    match expected {
        Some(n) if bytes.len() - header == n => Ok(IdxArray {
            dims,
            data: bytes[header..].to_vec(),
        }),
        Some(n) => Err(format!(
            "IDX data has {} bytes but the header {dims:?} says {n}",
            bytes.len() - header
        )),
        None => Err(format!("IDX dimensions {dims:?} overflow")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn parses_raw_and_gzipped() {
        let raw = idx(&[2, 2, 2], &[1, 2, 3, 4, 5, 6, 7, 8]);
        let a = parse_idx(&raw).unwrap();
        assert_eq!(a.dims, vec![2, 2, 2]);
        assert_eq!(a.data, vec![1, 2, 3, 4, 5, 6, 7, 8]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &raw).unwrap();
        let b = parse_idx(&gz.finish().unwrap()).unwrap();
        assert_eq!(b.data, a.data);
    }

    #[test]
    fn rejects_bad_magic_and_short_data() {
        assert!(parse_idx(b"PK\x03\x04").unwrap_err().contains("bad magic"));
        let short = idx(&[3, 2], &[1, 2, 3]);
        assert!(parse_idx(&short).unwrap_err().contains("says 6"));
    }
}
