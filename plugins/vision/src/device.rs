//! Where a stage runs its tensors: `auto` (CUDA when a GPU is visible, else CPU), `cpu` or `cuda`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::{Cuda, Device};

use crate::error::VisionError;

/// A device choice as written in workflows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// The first CUDA device when one is visible, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// The first CUDA device; an error when none is visible.
    Cuda,
}

impl DeviceChoice {
    /// The libtorch device this choice means on this machine.
    pub fn resolve(self) -> Result<Device, VisionError> {
        match self {
            Self::Auto => Ok(Device::cuda_if_available()),
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda if Cuda::is_available() => Ok(Device::Cuda(0)),
            Self::Cuda => Err(VisionError::Config(
                "device: cuda was asked for but no CUDA device is visible (use auto or cpu)".into(),
            )),
        }
    }
}
