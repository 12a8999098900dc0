//! The Arrow schemas that several stages share: `images` (ingest → filter → dedup → retrieval) and
//! `errors` (rows that could not be ingested, with the reason) and `embeddings` (one vector per image).

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, Int64Builder, StringBuilder, UInt8Builder, UInt32Builder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};

/// Columns of the images schema, in order.
pub mod images {
    /// Content hash (blake3 hex) of the source bytes: stable across runs and machines.
    pub const ID: &str = "id";
    /// Where the image came from: a URL, with `#index` for images inside container files.
    pub const SOURCE: &str = "source";
    /// Width of the source image after EXIF orientation.
    pub const WIDTH: &str = "width";
    /// Height of the source image after EXIF orientation.
    pub const HEIGHT: &str = "height";
    /// Source format: `jpeg`, `png`, `webp`, `gif`, `bmp`, `tiff`, `idx`.
    pub const FORMAT: &str = "format";
    /// Size of the source bytes.
    pub const FILE_SIZE: &str = "file_size";
    /// Class label, when the source has one.
    pub const LABEL: &str = "label";
    /// Decoded, resized pixels, row-major, interleaved channels, 8 bits each.
    pub const PIXELS: &str = "pixels";
    /// 1 (grey) or 3 (RGB).
    pub const CHANNELS: &str = "channels";
    /// Width of `pixels`.
    pub const PIXEL_WIDTH: &str = "pixel_width";
    /// Height of `pixels`.
    pub const PIXEL_HEIGHT: &str = "pixel_height";
}

/// The images schema.
pub fn images_schema() -> SchemaRef {
    use images::*;
    Arc::new(Schema::new(vec![
        Field::new(ID, DataType::Utf8, false),
        Field::new(SOURCE, DataType::Utf8, false),
        Field::new(WIDTH, DataType::UInt32, false),
        Field::new(HEIGHT, DataType::UInt32, false),
        Field::new(FORMAT, DataType::Utf8, false),
        Field::new(FILE_SIZE, DataType::UInt64, false),
        Field::new(LABEL, DataType::Int64, true),
        Field::new(PIXELS, DataType::Binary, false),
        Field::new(CHANNELS, DataType::UInt8, false),
        Field::new(PIXEL_WIDTH, DataType::UInt32, false),
        Field::new(PIXEL_HEIGHT, DataType::UInt32, false),
    ]))
}

/// Columns of the embeddings schema.
pub mod embeddings {
    /// The image's `id` (as in the images schema).
    pub const ID: &str = "id";
    /// The vector: `FixedSizeList<Float32>` of the model's dimension.
    pub const EMBEDDING: &str = "embedding";
    /// Optional: the vector of the horizontally mirrored image, same type as `embedding`. Dedup
    /// compares each image with the others' mirrored vectors, so mirrored copies are found.
    pub const MIRRORED: &str = "mirrored";
}

fn vector_field(name: &str, dim: i32) -> Field {
    Field::new(
        name,
        DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), dim),
        false,
    )
}

/// The embeddings schema for vectors of `dim` values, with the `mirrored` column when `mirrored`.
pub fn embeddings_schema(dim: i32, mirrored: bool) -> SchemaRef {
    let mut fields = vec![
        Field::new(embeddings::ID, DataType::Utf8, false),
        vector_field(embeddings::EMBEDDING, dim),
    ];
    if mirrored {
        fields.push(vector_field(embeddings::MIRRORED, dim));
    }
    Arc::new(Schema::new(fields))
}

/// Builds a batch of the embeddings schema from ids and their row-major vectors (`ids.len() × dim`),
/// and optionally the mirrored images' vectors (same shape).
pub fn embeddings_batch(
    ids: ArrayRef,
    vectors: Vec<f32>,
    mirrored: Option<Vec<f32>>,
    dim: i32,
) -> Result<RecordBatch, ArrowError> {
    let list = |values: Vec<f32>| -> Result<ArrayRef, ArrowError> {
        let values = Arc::new(arrow_array::Float32Array::from(values));
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        Ok(Arc::new(arrow_array::FixedSizeListArray::try_new(
            item, dim, values, None,
        )?))
    };
    let schema = embeddings_schema(dim, mirrored.is_some());
    let mut columns = vec![ids, list(vectors)?];
    if let Some(m) = mirrored {
        columns.push(list(m)?);
    }
    RecordBatch::try_new(schema, columns)
}

/// The errors schema: `source`, `file_size`, `error`.
pub fn errors_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("file_size", DataType::UInt64, false),
        Field::new("error", DataType::Utf8, false),
    ]))
}

/// One image row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRow {
    /// See [`images::ID`].
    pub id: String,
    /// See [`images::SOURCE`].
    pub source: String,
    /// See [`images::WIDTH`].
    pub width: u32,
    /// See [`images::HEIGHT`].
    pub height: u32,
    /// See [`images::FORMAT`].
    pub format: String,
    /// See [`images::FILE_SIZE`].
    pub file_size: u64,
    /// See [`images::LABEL`].
    pub label: Option<i64>,
    /// See [`images::PIXELS`].
    pub pixels: Vec<u8>,
    /// See [`images::CHANNELS`].
    pub channels: u8,
    /// See [`images::PIXEL_WIDTH`].
    pub pixel_width: u32,
    /// See [`images::PIXEL_HEIGHT`].
    pub pixel_height: u32,
}

/// Builds a batch of the images schema from rows.
pub fn images_batch(rows: &[ImageRow]) -> Result<RecordBatch, ArrowError> {
    let n = rows.len();
    let mut id = StringBuilder::with_capacity(n, n * 64);
    let mut source = StringBuilder::new();
    let mut width = UInt32Builder::with_capacity(n);
    let mut height = UInt32Builder::with_capacity(n);
    let mut format = StringBuilder::new();
    let mut file_size = UInt64Builder::with_capacity(n);
    let mut label = Int64Builder::with_capacity(n);
    let bytes: usize = rows.iter().map(|r| r.pixels.len()).sum();
    let mut pixels = BinaryBuilder::with_capacity(n, bytes);
    let mut channels = UInt8Builder::with_capacity(n);
    let mut pw = UInt32Builder::with_capacity(n);
    let mut ph = UInt32Builder::with_capacity(n);
    for r in rows {
        id.append_value(&r.id);
        source.append_value(&r.source);
        width.append_value(r.width);
        height.append_value(r.height);
        format.append_value(&r.format);
        file_size.append_value(r.file_size);
        label.append_option(r.label);
        pixels.append_value(&r.pixels);
        channels.append_value(r.channels);
        pw.append_value(r.pixel_width);
        ph.append_value(r.pixel_height);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(source.finish()),
        Arc::new(width.finish()),
        Arc::new(height.finish()),
        Arc::new(format.finish()),
        Arc::new(file_size.finish()),
        Arc::new(label.finish()),
        Arc::new(pixels.finish()),
        Arc::new(channels.finish()),
        Arc::new(pw.finish()),
        Arc::new(ph.finish()),
    ];
    RecordBatch::try_new(images_schema(), columns)
}

/// Builds a batch of the errors schema from (source, file size, error) rows.
pub fn errors_batch(rows: &[(String, u64, String)]) -> Result<RecordBatch, ArrowError> {
    let mut source = StringBuilder::new();
    let mut size = UInt64Builder::with_capacity(rows.len());
    let mut error = StringBuilder::new();
    for (s, n, e) in rows {
        source.append_value(s);
        size.append_value(*n);
        error.append_value(e);
    }
    RecordBatch::try_new(
        errors_schema(),
        vec![
            Arc::new(source.finish()),
            Arc::new(size.finish()),
            Arc::new(error.finish()),
        ],
    )
}
