//! A ViT with its variables: build from a config, load and save safetensors (timm key names, the
//! config kept in the file's metadata), move between devices.

use std::collections::HashMap;

use tch::Device;
use tch::nn::VarStore;

use crate::config::VitConfig;
use crate::error::VisionError;
use crate::vit::Vit;
use crate::weights::{NamedTensors, load_into, read_safetensors, safetensors_bytes, variables};

/// The metadata key under which dinoflow stores a model's [`VitConfig`] as JSON.
pub const CONFIG_METADATA_KEY: &str = "dinoflow.vit";

/// A ViT and the variable store that owns its parameters.
pub struct VitModel {
    /// The parameters, named as timm names them.
    pub vs: VarStore,
    /// The network.
    pub vit: Vit,
}

impl std::fmt::Debug for VitModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VitModel({:?} on {:?})",
            self.vit.config(),
            self.vs.device()
        )
    }
}

impl VitModel {
    /// A randomly initialised model on `device`.
    pub fn new(config: &VitConfig, device: Device) -> Result<Self, VisionError> {
        let vs = VarStore::new(device);
        let vit = Vit::new(&vs.root(), config)?;
        Ok(Self { vs, vit })
    }

    /// Loads safetensors bytes. The config comes from the file's metadata when dinoflow wrote it;
    /// otherwise `preset` gives the architecture and the file decides the position-embedding size,
    /// register count, input channels and whether a mask token is present (so timm's DINOv2
    /// checkpoints, converted to safetensors, load at their native 518 px). DINOv2's own key layout
    /// (`register_tokens`, `w12`/`w3`) is not read: convert it with timm first.
    pub fn from_safetensors(
        bytes: &[u8],
        source_name: &str,
        preset: Option<&VitConfig>,
        device: Device,
    ) -> Result<Self, VisionError> {
        let file = read_safetensors(bytes, source_name)?;
        let config = match file.metadata.get(CONFIG_METADATA_KEY) {
            Some(json) => serde_json::from_str::<VitConfig>(json).map_err(|e| {
                VisionError::Config(format!(
                    "{source_name}: bad `{CONFIG_METADATA_KEY}` metadata: {e}"
                ))
            })?,
            None => match preset {
                Some(p) => config_from_tensors(p, &file.tensors, source_name)?,
                None => {
                    return Err(VisionError::Config(format!(
                        "{source_name} does not say its architecture (no `{CONFIG_METADATA_KEY}` \
                         metadata, which dinoflow's training stages always write); for an external \
                         checkpoint name its preset"
                    )));
                }
            },
        };
        let model = Self::new(&config, device)?;
        load_into(&model.vs, &file.tensors, source_name)?;
        Ok(model)
    }

    /// The model as safetensors bytes with its config in the metadata.
    pub fn to_safetensors(&self) -> Result<Vec<u8>, VisionError> {
        let config = serde_json::to_string(self.vit.config())
            .map_err(|e| VisionError::Config(e.to_string()))?;
        safetensors_bytes(
            &variables(&self.vs),
            HashMap::from([(CONFIG_METADATA_KEY.to_string(), config)]),
        )
    }

    /// The model's configuration.
    pub fn config(&self) -> &VitConfig {
        self.vit.config()
    }
}

/// `preset` with the shapes a timm-layout file implies: registers from `reg_token`, channels from
/// the patch projection, the position-embedding grid and the mask token.
fn config_from_tensors(
    preset: &VitConfig,
    tensors: &NamedTensors,
    source_name: &str,
) -> Result<VitConfig, VisionError> {
    let mut c = preset.clone();
    c.registers = tensors.get("reg_token").map_or(0, |t| t.size()[1]);
    if let Some(w) = tensors.get("patch_embed.proj.weight") {
        c.in_chans = w.size().get(1).copied().unwrap_or(c.in_chans);
    }
    c.mask_token = tensors.contains_key("mask_token");
    if let Some(pos) = tensors.get("pos_embed") {
        let n = pos.size().get(1).copied().unwrap_or(0) - i64::from(c.registers == 0);
        let side = (n as f64).sqrt().round() as i64;
        if side <= 0 || side * side != n {
            return Err(VisionError::WeightsMismatch {
                source_name: source_name.to_string(),
                details: format!("pos_embed {:?} is not a square grid", pos.size()),
            });
        }
        c.img_size = side * c.patch_size;
    }
    Ok(c)
}
