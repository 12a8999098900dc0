//! The host's side of a batch and of a plugin's description: the caller's columns, and what goes
//! over the boundary (only the columns the plugin reads).

use wasmtime::component::{ComponentType, Lower};

use crate::bindings::dinoflow::filter::types as wit;
use crate::{Columns, ParamSpec, Reason};

/// Rows in columnar form, as the caller has them: the `batch` record of `plugins/wit/filter.wit`
/// without its row count, which is `widths.len()`.
///
/// A call sends the plugin only the columns its [`Info::reads`] names (the others go empty, and
/// cost nothing), so a caller may leave the columns no plugin of its chain reads empty, except
/// `widths`, which gives the row count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Source image width; one entry per row (this column's length is the row count).
    pub widths: Vec<u32>,
    /// Source image height.
    pub heights: Vec<u32>,
    /// 1 (grey) or 3 (RGB).
    pub channels: Vec<u8>,
    /// Source format code (see [`crate::FORMAT_CODES`]).
    pub formats: Vec<u8>,
    /// Source file size in bytes.
    pub file_sizes: Vec<u64>,
    /// Labels, -1 for none; empty when the dataset has no labels at all.
    pub labels: Vec<i64>,
    /// Width of the stored pixels.
    pub pixel_widths: Vec<u32>,
    /// Height of the stored pixels.
    pub pixel_heights: Vec<u32>,
    /// Row starts in `pixels`, plus the end (rows + 1 entries).
    pub pixel_offsets: Vec<u64>,
    /// Every row's pixels back to back.
    pub pixels: Vec<u8>,
}

impl Batch {
    /// The number of rows (`widths.len()`).
    pub fn rows(&self) -> usize {
        self.widths.len()
    }

    /// The record the plugin receives: `rows`, and the columns of `reads` borrowed from `self`
    /// (the others empty).
    pub(crate) fn wire(&self, rows: u32, reads: Columns) -> WireBatch<'_> {
        fn pick<T>(column: &[T], wanted: bool) -> &[T] {
            if wanted { column } else { &[] }
        }
        WireBatch {
            rows,
            widths: pick(&self.widths, reads.contains(Columns::WIDTHS)),
            heights: pick(&self.heights, reads.contains(Columns::HEIGHTS)),
            channels: pick(&self.channels, reads.contains(Columns::CHANNELS)),
            formats: pick(&self.formats, reads.contains(Columns::FORMATS)),
            file_sizes: pick(&self.file_sizes, reads.contains(Columns::FILE_SIZES)),
            labels: pick(&self.labels, reads.contains(Columns::LABELS)),
            pixel_widths: pick(&self.pixel_widths, reads.contains(Columns::PIXEL_WIDTHS)),
            pixel_heights: pick(&self.pixel_heights, reads.contains(Columns::PIXEL_HEIGHTS)),
            pixel_offsets: pick(&self.pixel_offsets, reads.contains(Columns::PIXELS)),
            pixels: pick(&self.pixels, reads.contains(Columns::PIXELS)),
        }
    }
}

/// The WIT `batch` record, lowered straight from borrowed slices: a call copies each column once,
/// from the caller's vectors into the plugin's memory.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct WireBatch<'a> {
    #[component(name = "rows")]
    rows: u32,
    #[component(name = "widths")]
    widths: &'a [u32],
    #[component(name = "heights")]
    heights: &'a [u32],
    #[component(name = "channels")]
    channels: &'a [u8],
    #[component(name = "formats")]
    formats: &'a [u8],
    #[component(name = "file-sizes")]
    file_sizes: &'a [u64],
    #[component(name = "labels")]
    labels: &'a [i64],
    #[component(name = "pixel-widths")]
    pixel_widths: &'a [u32],
    #[component(name = "pixel-heights")]
    pixel_heights: &'a [u32],
    #[component(name = "pixel-offsets")]
    pixel_offsets: &'a [u64],
    #[component(name = "pixels")]
    pixels: &'a [u8],
}

/// What a plugin says about itself: its `describe()`.
#[derive(Debug, Clone)]
pub struct Info {
    /// The plugin's name, e.g. `min-size`.
    pub name: String,
    /// Its version, e.g. `1.0.0`.
    pub version: String,
    /// One sentence on what it drops.
    pub description: String,
    /// The parameters it accepts.
    pub params: Vec<ParamSpec>,
    /// Every non-zero code `filter` may return.
    pub reasons: Vec<Reason>,
    /// The columns `filter` reads; the others are sent empty.
    pub reads: Columns,
    /// Whether `reads` includes the pixels (`pixels` and `pixel-offsets`): callers need not decode
    /// or gather pixels for a plugin that does not read them.
    pub needs_pixels: bool,
}

impl Info {
    /// An empty description (before `describe()` answers).
    pub(crate) fn empty() -> Self {
        Self::from(wit::Info {
            name: String::new(),
            version: String::new(),
            description: String::new(),
            params: Vec::new(),
            reasons: Vec::new(),
            reads: Columns::empty(),
        })
    }
}

impl From<wit::Info> for Info {
    fn from(info: wit::Info) -> Self {
        Self {
            needs_pixels: info.reads.contains(Columns::PIXELS),
            name: info.name,
            version: info.version,
            description: info.description,
            params: info.params,
            reasons: info.reasons,
            reads: info.reads,
        }
    }
}
