//! The model behind the embed stage: the built-in descriptor, PDQ or a ViT, applied to one batch of
//! image rows at a time.

use arrow_array::cast::AsArray;
use arrow_array::types::{UInt8Type, UInt32Type};
use arrow_array::{Array, RecordBatch};
use dinoflow_storage::schemas::images;
use dinoflow_vision::augment::{MultiCropConfig, normalize};
use dinoflow_vision::tch::{Device, Kind, Tensor};
use dinoflow_vision::tensor::{ImageTransform, images_to_tensor};
use dinoflow_vision::{VisionError, VitModel, VitOutput};
use rayon::prelude::*;

use crate::EmbedError;
use crate::config::Features;
use crate::descriptor::DctDescriptor;
use crate::pdq_vectors::{PdqDescriptor, PdqVectors};

/// A ready model: call [`Embedder::embed`] per batch. Owned by one thread at a time.
pub enum Embedder {
    /// The copy-detection descriptor, computed on a pool of the stage's threads.
    Dct(DctDescriptor, rayon::ThreadPool),
    /// PDQ hashes as `±1/16` vectors, computed on a pool of the stage's threads.
    Pdq(PdqDescriptor, rayon::ThreadPool),
    /// A ViT with its input transform.
    Vit(Box<VitEmbedder>),
}

/// A ViT, the transform that feeds it and how its tokens become a vector.
pub struct VitEmbedder {
    /// The model (in bfloat16 on CUDA).
    pub model: VitModel,
    /// How stored images become inputs.
    pub transform: ImageTransform,
    /// Which tokens form the vector.
    pub features: Features,
}

impl Embedder {
    /// Values per vector.
    pub fn dim(&self) -> usize {
        match self {
            Self::Dct(descriptor, _) => descriptor.dim(),
            Self::Pdq(descriptor, _) => descriptor.dim(),
            Self::Vit(v) => {
                let d = v.model.config().embed_dim as usize;
                if v.features == Features::ClsMeanPatch {
                    2 * d
                } else {
                    d
                }
            }
        }
    }

    /// The vectors of the batch's rows, row-major (`rows × dim`), L2-normalised when `unit`; with
    /// `mirrored`, also those of the horizontally mirrored images.
    pub fn embed(
        &self,
        batch: &RecordBatch,
        unit: bool,
        mirrored: bool,
    ) -> Result<Embedded, EmbedError> {
        match self {
            Self::Dct(descriptor, pool) => {
                let vectors = pool.install(|| dct_batch(descriptor, batch))?;
                let mirrored = mirrored.then(|| {
                    vectors
                        .chunks_exact(descriptor.dim())
                        .flat_map(|v| descriptor.mirror(v))
                        .collect()
                });
                Ok(Embedded { vectors, mirrored })
            }
            Self::Pdq(descriptor, pool) => {
                let rows: Vec<PdqVectors> = pool.install(|| {
                    map_rows(batch, |pixels, width, height, channels| {
                        Ok(descriptor.describe(pixels, width, height, channels, mirrored)?)
                    })
                })?;
                let mut vectors = Vec::with_capacity(rows.len() * descriptor.dim());
                let mut flipped = Vec::new();
                for row in rows {
                    vectors.extend(row.vector);
                    flipped.extend(row.mirrored.unwrap_or_default());
                }
                Ok(Embedded {
                    vectors,
                    mirrored: mirrored.then_some(flipped),
                })
            }
            Self::Vit(v) => Ok(Embedded {
                vectors: v.embed(batch, unit, false)?,
                mirrored: if mirrored {
                    Some(v.embed(batch, unit, true)?)
                } else {
                    None
                },
            }),
        }
    }
}

/// The vectors of one batch of images.
pub struct Embedded {
    /// Row-major, `rows × dim`.
    pub vectors: Vec<f32>,
    /// Those of the horizontally mirrored images, when asked for.
    pub mirrored: Option<Vec<f32>>,
}

fn dct_batch(descriptor: &DctDescriptor, batch: &RecordBatch) -> Result<Vec<f32>, EmbedError> {
    let rows = map_rows(batch, |pixels, width, height, channels| {
        Ok(descriptor.describe(pixels, width, height, channels)?)
    })?;
    Ok(rows.concat())
}

/// `f(pixels, width, height, channels)` of every row of an images batch, in parallel on the
/// current rayon pool, in row order.
fn map_rows<T, F>(batch: &RecordBatch, f: F) -> Result<Vec<T>, EmbedError>
where
    T: Send,
    F: Fn(&[u8], u32, u32, u8) -> Result<T, EmbedError> + Sync,
{
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| EmbedError::Input(format!("the images batch has no `{name}` column")))
    };
    let pixels = column(images::PIXELS)?;
    let pixels = pixels
        .as_binary_opt::<i32>()
        .ok_or_else(|| EmbedError::Input("`pixels` is not a binary column".into()))?;
    let width = column(images::PIXEL_WIDTH)?;
    let width = width
        .as_primitive_opt::<UInt32Type>()
        .ok_or_else(|| EmbedError::Input("`pixel_width` is not uint32".into()))?;
    let height = column(images::PIXEL_HEIGHT)?;
    let height = height
        .as_primitive_opt::<UInt32Type>()
        .ok_or_else(|| EmbedError::Input("`pixel_height` is not uint32".into()))?;
    let channels = column(images::CHANNELS)?;
    let channels = channels
        .as_primitive_opt::<UInt8Type>()
        .ok_or_else(|| EmbedError::Input("`channels` is not uint8".into()))?;
    (0..batch.num_rows())
        .into_par_iter()
        .map(|i| {
            if pixels.is_null(i) {
                return Err(EmbedError::Input(format!("row {i} has no pixels")));
            }
            f(
                pixels.value(i),
                width.value(i),
                height.value(i),
                channels.value(i),
            )
        })
        .collect()
}

impl VitEmbedder {
    fn embed(&self, batch: &RecordBatch, unit: bool, mirror: bool) -> Result<Vec<f32>, EmbedError> {
        let device = self.model.vs.device();
        let mut x = images_to_tensor(batch, &self.transform, device)?;
        if mirror {
            x = x.flip([3i64].as_slice());
        }
        let (mean, std) = MultiCropConfig::dinov2().normalization(self.transform.channels);
        let x = normalize(&x, &mean, &std)
            .map_err(VisionError::from)?
            .to_kind(self.model.vs.kind());
        let out = dinoflow_vision::tch::no_grad(|| self.model.vit.forward(&x, None, false))?;
        let mut v = features(&out, self.features).to_kind(Kind::Float);
        if unit {
            let norm = v
                .norm_scalaropt_dim(2, [1i64].as_slice(), true)
                .clamp_min(1e-12);
            v /= norm;
        }
        let v = v.to_device(Device::Cpu).contiguous().flatten(0, -1);
        Ok(Vec::<f32>::try_from(&v).map_err(VisionError::from)?)
    }
}

fn features(out: &VitOutput, which: Features) -> Tensor {
    match which {
        Features::Cls => out.cls.shallow_clone(),
        Features::MeanPatch => out.patches.mean_dim([1i64].as_slice(), false, None::<Kind>),
        Features::ClsMeanPatch => Tensor::cat(
            &[
                out.cls.shallow_clone(),
                out.patches.mean_dim([1i64].as_slice(), false, None::<Kind>),
            ],
            1,
        ),
    }
}
