//! The training images and each iteration's draw: the images loaded as 8-bit copies on the CPU
//! (once, or once per resolution phase that needs another size), and the seeds and image indices
//! of an iteration, which depend on `(seed, iteration)` alone so that a resumed run repeats an
//! uninterrupted one.

use dinoflow_storage::Dataset;
use dinoflow_vision::tch::{Device, Kind, Tensor};
use dinoflow_vision::tensor::{ImageTransform, images_to_tensor};
use futures::TryStreamExt;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::PretrainError;

/// Side of the stored copy the crops of global side `global` are cut from: `global`, or 8/7 of
/// it above 64 px (256 px for 224 px crops, 592 px for 518 px).
fn base_size(global: u32) -> i64 {
    let global = i64::from(global);
    if global <= 64 { global } else { global * 8 / 7 }
}

/// The training images as one 8-bit `(N, C, S, S)` CPU copy at the base size of the current
/// global crops ([`base_size`]). A resolution phase that needs another base size frees the copy
/// and reads the input again at the new size, so one copy is held at a time and the crops of an
/// iteration depend on its phase alone (a resumed run cuts the same ones).
pub(crate) struct StoredImages<'a> {
    /// The `images` input.
    images: &'a Dataset,
    /// Channels of the copies (the model's `in_chans`).
    channels: i64,
    /// The runtime the dataset's reads run on.
    handle: &'a tokio::runtime::Handle,
    /// The copy held now and its side.
    copy: Option<(i64, Tensor)>,
}

impl<'a> StoredImages<'a> {
    /// No copy yet: [`StoredImages::for_global`] reads the first.
    pub(crate) fn new(
        images: &'a Dataset,
        channels: i64,
        handle: &'a tokio::runtime::Handle,
    ) -> Self {
        Self {
            images,
            channels,
            handle,
            copy: None,
        }
    }

    /// The copy to cut global crops of side `global` from, read (and the previous one freed)
    /// when it is not the one held. Called on the training thread: libtorch work started from a
    /// second thread gets its own OpenMP pool, and with more pooled threads than cores libgomp
    /// stops spinning between parallel regions, which made every iteration about 10 % slower.
    pub(crate) fn for_global(&mut self, global: u32) -> Result<&Tensor, PretrainError> {
        let size = base_size(global);
        if self.copy.as_ref().is_none_or(|(held, _)| *held != size) {
            // Freed before the next is read: one copy in memory at a time.
            self.copy = None;
            let data = self
                .handle
                .block_on(load_images(self.images, size, self.channels))?;
            tracing::info!(size, rows = data.size()[0], "training images loaded");
            self.copy = Some((size, data));
        }
        match &self.copy {
            Some((_, data)) => Ok(data),
            None => Err(PretrainError::Config(
                "the training images were not loaded".into(),
            )),
        }
    }
}

/// The images as one 8-bit `(N, channels, size, size)` CPU tensor.
async fn load_images(images: &Dataset, size: i64, channels: i64) -> Result<Tensor, PretrainError> {
    let transform = ImageTransform {
        size,
        channels,
        crop_fraction: 1.0,
    };
    let mut stream = std::pin::pin!(images.batches(1024));
    let mut parts = Vec::new();
    while let Some(batch) = stream
        .try_next()
        .await
        .map_err(|e| PretrainError::Config(format!("reading the images input: {e}")))?
    {
        let t = images_to_tensor(&batch, &transform, Device::Cpu)
            .map_err(|e| PretrainError::Config(e.to_string()))?;
        parts.push((t * 255.0).round().to_kind(Kind::Uint8));
    }
    Ok(Tensor::cat(&parts, 0))
}

/// Mixes the run seed with an iteration and a purpose, so each draw has its own stream.
pub(crate) fn seed_for(seed: u64, step: usize, purpose: u64) -> u64 {
    let mut x = seed
        ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ purpose.wrapping_mul(0xD1B5_4A32_D192_ED03);
    x ^= x >> 31;
    x.wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

/// The image indices of iteration `step`: consecutive slices of one shuffled order per epoch.
pub(crate) fn batch_indices(n: usize, batch: usize, seed: u64, step: usize) -> Vec<i64> {
    let order = |epoch: usize| {
        let mut o: Vec<i64> = (0..n as i64).collect();
        o.shuffle(&mut ChaCha8Rng::seed_from_u64(seed_for(seed, epoch, 1)));
        o
    };
    let first = step * batch;
    let mut out = Vec::with_capacity(batch);
    let mut epoch = first / n;
    let mut current = order(epoch);
    for i in first..first + batch {
        if i / n != epoch {
            epoch = i / n;
            current = order(epoch);
        }
        out.push(current[i % n]);
    }
    out
}
