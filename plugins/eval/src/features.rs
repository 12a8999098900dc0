//! Frozen features: what each evaluated model (a ViT or the raw pixels) makes of a batch of image
//! rows, gathered batch by batch so that only features, not images, stay in memory.

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt8Type, UInt32Type};
use arrow_array::{Array, RecordBatch};
use dinoflow_storage::schemas::images;
use dinoflow_vision::augment::{MultiCropConfig, normalize};
use dinoflow_vision::tch::{self, Device, Kind, Tensor};
use dinoflow_vision::tensor::{ImageTransform, images_to_tensor};
use dinoflow_vision::{VisionError, VitConfig, VitModel};

use crate::EvalError;

/// Largest side of the raw-pixel baseline's images: bigger images are resized (shorter side) and
/// centre-cropped to it, so that 10,000 RGB rows take at most 123 MB.
pub const MAX_PIXEL_SIDE: i64 = 32;

/// A feature extractor.
pub enum Extractor {
    /// A ViT run without gradients.
    Vit {
        /// The model (bfloat16 on CUDA).
        model: Box<VitModel>,
        /// How stored images become its inputs.
        transform: ImageTransform,
        /// How many of the last blocks' outputs are kept (at most the depth).
        layers: usize,
    },
    /// The images' pixels in [0, 1], flattened (channels, rows, columns).
    Pixels {
        /// The common size the rows are brought to.
        transform: ImageTransform,
    },
}

/// The features of some rows for one extractor.
#[derive(Debug)]
pub struct Features {
    /// ViT: (rows, layers·D), the final-norm cls tokens of the last `layers` blocks, oldest first.
    /// Pixels: (rows, C·S·S).
    pub cls: Tensor,
    /// ViT: (rows, D), the average of the last block's final-norm patch tokens.
    pub patch_mean: Option<Tensor>,
}

impl Extractor {
    /// A ViT extractor keeping the last `layers` blocks (capped at the depth), at `image_size`
    /// pixels (default: the native size when at most 224, else 224).
    pub fn vit(
        model: VitModel,
        layers: usize,
        image_size: Option<i64>,
        name: &str,
    ) -> Result<Self, EvalError> {
        let vit = model.config();
        let size = image_size.unwrap_or(if vit.img_size <= 224 {
            vit.img_size
        } else {
            224
        });
        if size < vit.patch_size || size % vit.patch_size != 0 {
            return Err(EvalError::Config(format!(
                "`image_size` {size} does not suit {name}: it must be a positive multiple of its \
                 patch size {}",
                vit.patch_size
            )));
        }
        let transform = vit_transform(vit, size);
        let layers = layers.clamp(1, vit.depth.max(1) as usize);
        Ok(Self::Vit {
            model: Box::new(model),
            transform,
            layers,
        })
    }

    /// The raw-pixel extractor for images like the first row of `batch`: its channels and its
    /// shorter side (at most [`MAX_PIXEL_SIDE`]).
    pub fn pixels_like(batch: &RecordBatch, port: &str) -> Result<Self, EvalError> {
        let input = |message: String| EvalError::Input {
            port: port.to_string(),
            message,
        };
        let channels = batch
            .column_by_name(images::CHANNELS)
            .and_then(|c| {
                c.as_primitive_opt::<UInt8Type>()
                    .map(|a| a.values().to_vec())
            })
            .ok_or_else(|| input("not an images dataset (no uint8 `channels` column)".into()))?;
        let side = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| {
                    c.as_primitive_opt::<UInt32Type>()
                        .map(|a| a.values().to_vec())
                })
                .ok_or_else(|| input(format!("not an images dataset (no uint32 `{name}` column)")))
        };
        let (w, h) = (side(images::PIXEL_WIDTH)?, side(images::PIXEL_HEIGHT)?);
        let (Some(&c), Some(&w), Some(&h)) = (channels.first(), w.first(), h.first()) else {
            return Err(input("has no rows".into()));
        };
        Ok(Self::Pixels {
            transform: ImageTransform {
                size: i64::from(w.min(h)).clamp(1, MAX_PIXEL_SIDE),
                channels: if c == 1 { 1 } else { 3 },
                crop_fraction: 1.0,
            },
        })
    }

    /// The device features are computed on.
    pub fn device(&self) -> Device {
        match self {
            Self::Vit { model, .. } => model.vs.device(),
            Self::Pixels { .. } => Device::Cpu,
        }
    }

    /// Token width D (pixels: the flattened image size).
    pub fn dim(&self) -> i64 {
        match self {
            Self::Vit { model, .. } => model.config().embed_dim,
            Self::Pixels { transform } => transform.channels * transform.size * transform.size,
        }
    }

    /// An empty store for the features of `rows` images on the extractor's device.
    pub fn store(&self, rows: u64) -> FeatureStore {
        let rows = rows as i64;
        let (cls, patch) = match self {
            Self::Vit { layers, .. } => (*layers as i64 * self.dim(), Some(self.dim())),
            Self::Pixels { .. } => (self.dim(), None),
        };
        let options = (Kind::Float, self.device());
        FeatureStore {
            cls: Tensor::zeros([rows, cls], options),
            patch_mean: patch.map(|d| Tensor::zeros([rows, d], options)),
            filled: 0,
        }
    }

    /// The features of the rows of `batch`, float32 on the extractor's device.
    pub fn extract(&self, batch: &RecordBatch) -> Result<Features, EvalError> {
        match self {
            Self::Pixels { transform } => {
                let x = images_to_tensor(batch, transform, Device::Cpu)?;
                Ok(Features {
                    cls: x.flatten(1, -1),
                    patch_mean: None,
                })
            }
            Self::Vit {
                model,
                transform,
                layers,
            } => {
                let device = model.vs.device();
                let x = images_to_tensor(batch, transform, device)?;
                let x = vit_input(&x, model.vs.kind())?;
                let outs = tch::no_grad(|| model.vit.last_layers(&x, *layers))?;
                let cls: Vec<Tensor> = outs.iter().map(|o| o.cls.to_kind(Kind::Float)).collect();
                let last = outs
                    .last()
                    .ok_or_else(|| EvalError::Shape("the model returned no layers".into()))?;
                let patch_mean = last.patches.to_kind(Kind::Float).f_mean_dim(
                    [1i64].as_slice(),
                    false,
                    Kind::Float,
                )?;
                Ok(Features {
                    cls: Tensor::f_cat(&cls, 1)?,
                    patch_mean: Some(patch_mean),
                })
            }
        }
    }
}

/// How stored images become the input of a ViT at `size` pixels: the whole shorter side resized to
/// `size` (bicubic, antialiased) and the centre square cut, in the model's channels (with
/// [`images_to_tensor`]).
pub fn vit_transform(vit: &VitConfig, size: i64) -> ImageTransform {
    ImageTransform {
        size,
        channels: vit.in_chans,
        crop_fraction: 1.0,
    }
}

/// Images (B, C, S, S) in [0, 1], as [`images_to_tensor`] gives them with [`vit_transform`], as a
/// ViT's input: normalised with DINOv2's (ImageNet's) mean and standard deviation for C channels,
/// in `kind`.
pub fn vit_input(images: &Tensor, kind: Kind) -> Result<Tensor, EvalError> {
    if images.dim() != 4 {
        return Err(EvalError::Shape(format!(
            "images {:?} are not (B, C, S, S)",
            images.size()
        )));
    }
    let (mean, std) = MultiCropConfig::dinov2().normalization(images.size()[1]);
    Ok(normalize(images, &mean, &std)
        .map_err(VisionError::from)?
        .to_kind(kind))
}

/// The features of a known number of rows, written batch by batch into tensors allocated once
/// (gathering per-batch tensors instead let the allocator's heap grow by about the size of the
/// activations for every batch).
#[derive(Debug)]
pub struct FeatureStore {
    cls: Tensor,
    patch_mean: Option<Tensor>,
    filled: i64,
}

impl FeatureStore {
    /// Appends a batch's features.
    pub fn push(&mut self, f: &Features) -> Result<(), EvalError> {
        let rows = f.cls.size()[0];
        if self.filled + rows > self.cls.size()[0] {
            return Err(EvalError::Shape(format!(
                "the input has more rows than its manifest says ({})",
                self.cls.size()[0]
            )));
        }
        self.cls.narrow(0, self.filled, rows).f_copy_(&f.cls)?;
        if let (Some(store), Some(batch)) = (&self.patch_mean, &f.patch_mean) {
            store.narrow(0, self.filled, rows).f_copy_(batch)?;
        }
        self.filled += rows;
        Ok(())
    }

    /// The rows written so far: the cls part and, for a ViT, the patch means.
    pub fn features(&self) -> Features {
        Features {
            cls: self.cls.narrow(0, 0, self.filled),
            patch_mean: self
                .patch_mean
                .as_ref()
                .map(|p| p.narrow(0, 0, self.filled)),
        }
    }
}

/// `config` as an architecture: the training-only fields (drop-path, mask token) cleared, so that
/// a student and its teacher compare equal.
pub fn architecture(config: &VitConfig) -> VitConfig {
    let mut c = config.clone();
    c.drop_path = 0.0;
    c.mask_token = false;
    c
}

/// A short description of a ViT: `ViT D192×12 p4`, with ` +4 reg` when it has registers.
pub fn describe(config: &VitConfig) -> String {
    let mut s = format!(
        "ViT D{}×{} p{}",
        config.embed_dim, config.depth, config.patch_size
    );
    if config.registers > 0 {
        s.push_str(&format!(" +{} reg", config.registers));
    }
    s
}

/// The `label` column of an images batch; a missing column or a null label is an error naming
/// `port` that says how to ingest labels.
pub fn labels(batch: &RecordBatch, port: &str, first_row: u64) -> Result<Vec<i64>, EvalError> {
    let unlabelled = |detail: String| EvalError::Input {
        port: port.to_string(),
        message: format!(
            "{detail}: eval needs labelled images; ingest them with labels (`idx: {{labels: …}}`, \
             `folder: {{labels: parent_dir}}` or `parquet: {{label_column: …}}`)"
        ),
    };
    let column = batch
        .column_by_name(images::LABEL)
        .ok_or_else(|| unlabelled("the dataset has no `label` column".into()))?;
    let column = column
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| unlabelled("the `label` column is not int64".into()))?;
    if column.null_count() > 0 {
        let row = (0..column.len()).find(|&i| column.is_null(i)).unwrap_or(0);
        return Err(unlabelled(format!(
            "row {} has no label",
            first_row + row as u64
        )));
    }
    Ok(column.values().to_vec())
}
