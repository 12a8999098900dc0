//! The image rows dedup reads besides the vectors: id, source and size, and the checks that a
//! vectors dataset belongs to an images dataset row by row.

use arrow_array::ArrayRef;
use arrow_array::cast::AsArray;
use arrow_array::types::{UInt32Type, UInt64Type};
use dinoflow_engine::{StageContext, StageError};
use dinoflow_storage::schemas::images;
use futures::TryStreamExt;

use crate::vectors::Vectors;
use crate::{CurateError, failed};

/// What dedup needs to know about each image row.
pub struct Row {
    /// The image id.
    pub id: String,
    /// Where it came from.
    pub source: String,
    /// Source width × height.
    pub pixels: u64,
    /// Source file size in bytes.
    pub file_size: u64,
}

/// Reads the id, source, size and file size of every image row.
pub async fn read_rows(ctx: &StageContext) -> Result<Vec<Row>, StageError> {
    let dataset = ctx.input_dataset("images")?;
    let mut rows = Vec::with_capacity(dataset.rows() as usize);
    let mut stream = std::pin::pin!(dataset.batches(65_536));
    while let Some(batch) = stream.try_next().await? {
        let col = |name: &str| {
            batch.column_by_name(name).cloned().ok_or_else(|| {
                failed(CurateError::Input(format!(
                    "the images have no `{name}` column"
                )))
            })
        };
        let (id, source) = (col(images::ID)?, col(images::SOURCE)?);
        let (width, height, size) = (
            col(images::WIDTH)?,
            col(images::HEIGHT)?,
            col(images::FILE_SIZE)?,
        );
        let text = |a: &ArrayRef, n: &str| {
            a.as_string_opt::<i32>()
                .cloned()
                .ok_or_else(|| failed(CurateError::Input(format!("`{n}` is not text"))))
        };
        let (id, source) = (text(&id, "id")?, text(&source, "source")?);
        let u32s = |a: &ArrayRef, n: &str| {
            a.as_primitive_opt::<UInt32Type>()
                .cloned()
                .ok_or_else(|| failed(CurateError::Input(format!("`{n}` is not uint32"))))
        };
        let (width, height) = (u32s(&width, "width")?, u32s(&height, "height")?);
        let size = size
            .as_primitive_opt::<UInt64Type>()
            .cloned()
            .ok_or_else(|| failed(CurateError::Input("`file_size` is not uint64".into())))?;
        for i in 0..batch.num_rows() {
            rows.push(Row {
                id: id.value(i).to_string(),
                source: source.value(i).to_string(),
                pixels: u64::from(width.value(i)) * u64::from(height.value(i)),
                file_size: size.value(i),
            });
        }
    }
    Ok(rows)
}

pub fn check_alignment(pool: &Vectors, rows: &[Row]) -> Result<(), CurateError> {
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    same_rows(&pool.ids, &ids, "embeddings", "images")
}

/// Checks that the vectors on port `vectors` were computed from the images on port `images`, row
/// by row.
pub fn same_rows<S: AsRef<str>>(
    vector_ids: &[String],
    image_ids: &[S],
    vectors: &str,
    images: &str,
) -> Result<(), CurateError> {
    let fix =
        format!("connect `{vectors}` to an embed stage whose input is the `{images}` dataset");
    if vector_ids.len() != image_ids.len() {
        return Err(CurateError::Input(format!(
            "`{vectors}` has {} rows and `{images}` {}: {fix}",
            vector_ids.len(),
            image_ids.len()
        )));
    }
    if let Some(i) = (0..image_ids.len()).find(|&i| vector_ids[i] != image_ids[i].as_ref()) {
        return Err(CurateError::Input(format!(
            "row {i}: `{vectors}` id {} but `{images}` id {}: {fix}",
            vector_ids[i],
            image_ids[i].as_ref()
        )));
    }
    Ok(())
}
