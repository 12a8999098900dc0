//! Reading an embeddings dataset into one tensor, and checking that it belongs to an images
//! dataset row by row.

use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::{Array, RecordBatch};
use dinoflow_engine::{StageContext, StageError};
use dinoflow_storage::schemas::embeddings;
use dinoflow_vision::tch::{Device, Tensor};
use futures::TryStreamExt;

use crate::CurateError;

/// The rows of an embeddings dataset: ids in order and their vectors as an (N, D) float tensor.
pub struct Vectors {
    /// The image ids, in dataset order.
    pub ids: Vec<String>,
    /// The vectors, one row per id.
    pub data: Tensor,
    /// The mirrored images' vectors, same shape, when the dataset has the `mirrored` column.
    pub mirrored: Option<Tensor>,
}

impl Vectors {
    /// Rows.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Reads the whole embeddings dataset on input `port` onto `device` (N·D·4 bytes of memory, twice
/// that with mirrored vectors).
pub async fn read_vectors(
    ctx: &StageContext,
    port: &str,
    device: Device,
) -> Result<Vectors, StageError> {
    let dataset = ctx.input_dataset(port)?;
    let has_mirrored = dataset
        .schema()
        .column_with_name(embeddings::MIRRORED)
        .is_some();
    let mut ids = Vec::with_capacity(dataset.rows() as usize);
    let mut values: Vec<f32> = Vec::new();
    let mut mirrored: Vec<f32> = Vec::new();
    let mut dim: Option<usize> = None;
    let mut stream = std::pin::pin!(dataset.batches(65_536));
    while let Some(batch) = stream.try_next().await? {
        let on_port = |e: CurateError| StageError::failed(e.on_port(port));
        let id = batch
            .column_by_name(embeddings::ID)
            .and_then(|c| c.as_string_opt::<i32>().cloned())
            .ok_or_else(|| {
                on_port(CurateError::Input(
                    "no `id` text column: is this an embeddings dataset?".into(),
                ))
            })?;
        ids.extend(id.iter().map(|s| s.unwrap_or_default().to_string()));
        dim = Some(append_column(&batch, embeddings::EMBEDDING, &mut values).map_err(on_port)?);
        if has_mirrored {
            append_column(&batch, embeddings::MIRRORED, &mut mirrored).map_err(on_port)?;
        }
    }
    let d = dim.unwrap_or(0) as i64;
    let n = ids.len() as i64;
    let tensor = |v: &[f32]| Tensor::from_slice(v).view([n, d]).to_device(device);
    Ok(Vectors {
        data: tensor(&values),
        mirrored: has_mirrored.then(|| tensor(&mirrored)),
        ids,
    })
}

/// Appends the vectors of one fixed-size-list column of a batch; returns the vector dimension.
fn append_column(
    batch: &RecordBatch,
    name: &str,
    values: &mut Vec<f32>,
) -> Result<usize, CurateError> {
    let bad = |m: String| CurateError::Input(m);
    let list = batch
        .column_by_name(name)
        .and_then(|c| c.as_fixed_size_list_opt().cloned())
        .ok_or_else(|| {
            bad(format!(
                "no `{name}` fixed-size-list column: is this an embeddings dataset?"
            ))
        })?;
    let floats = list
        .values()
        .as_primitive_opt::<Float32Type>()
        .ok_or_else(|| bad(format!("`{name}` does not hold float32 values")))?;
    if list.null_count() > 0 || floats.null_count() > 0 {
        return Err(bad(format!("`{name}` has missing values")));
    }
    if list.is_empty() {
        return Ok(list.value_length() as usize);
    }
    let start = list.value_offset(0).max(0) as usize;
    let len = list.len() * list.value_length() as usize;
    values.extend_from_slice(&floats.values()[start..start + len]);
    Ok(list.value_length() as usize)
}
