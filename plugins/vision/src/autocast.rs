//! Mixed precision as `torch.autocast`: inside [`autocast`], libtorch runs matrix products,
//! convolutions and attention in bfloat16 and the operations on its float32 lists in float32 (on
//! CUDA these include softmax, LayerNorm and norms; the CPU's list is shorter), while parameters
//! and their gradients stay float32.

use std::os::raw::c_int;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::error::VisionError;

unsafe extern "C" {
    fn dinoflow_autocast_enter(
        device: c_int,
        was_enabled: *mut c_int,
        was_dtype: *mut c_int,
    ) -> c_int;
    fn dinoflow_autocast_exit(device: c_int, was_enabled: c_int, was_dtype: c_int);
    fn dinoflow_autocast_enabled(device: c_int) -> c_int;
}

/// The arithmetic a training stage computes in, as written in workflows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// bfloat16 autocast on CUDA, float32 on the CPU.
    #[default]
    Auto,
    /// float32 everywhere.
    Float32,
    /// bfloat16 autocast on any device (on CPUs without bfloat16 instructions it is slower than
    /// float32).
    Bfloat16,
}

impl Precision {
    /// The autocast this choice means on `device`, or none for plain float32.
    pub fn resolve(self, device: Device) -> Option<Autocast> {
        match (self, device) {
            (Self::Float32, _) | (Self::Auto, Device::Cpu) => None,
            (Self::Auto | Self::Bfloat16, _) => Some(Autocast { device }),
        }
    }
}

/// bfloat16 autocast for the tensors of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Autocast {
    /// The device whose operations are cast.
    pub device: Device,
}

/// libtorch's device type code of `device` in the shim: 0 CPU, 1 CUDA.
fn device_code(device: Device) -> Result<c_int, VisionError> {
    match device {
        Device::Cpu => Ok(0),
        Device::Cuda(_) => Ok(1),
        other => Err(VisionError::Config(format!(
            "autocast is supported on the CPU and CUDA, not on {other:?}"
        ))),
    }
}

/// Restores the autocast state of a device when dropped, also during a panic.
struct Restore {
    device: c_int,
    was_enabled: c_int,
    was_dtype: c_int,
}

impl Drop for Restore {
    fn drop(&mut self) {
        // SAFETY: the shim only reads and writes libtorch's thread-local autocast state.
        unsafe { dinoflow_autocast_exit(self.device, self.was_enabled, self.was_dtype) }
    }
}

/// Runs `f` with `cast` on (on this thread), or plainly when `cast` is none. The state before is
/// restored afterwards; calls nest. Call `backward` outside, as with `torch.autocast`.
pub fn autocast<T>(cast: Option<Autocast>, f: impl FnOnce() -> T) -> Result<T, VisionError> {
    let Some(cast) = cast else {
        return Ok(f());
    };
    let device = device_code(cast.device)?;
    let (mut was_enabled, mut was_dtype) = (0, 0);
    // SAFETY: the pointers are to live locals; the shim catches libtorch's exceptions.
    let status = unsafe { dinoflow_autocast_enter(device, &mut was_enabled, &mut was_dtype) };
    if status != 0 {
        return Err(VisionError::Config(format!(
            "libtorch refused bfloat16 autocast on {:?}",
            cast.device
        )));
    }
    let _restore = Restore {
        device,
        was_enabled,
        was_dtype,
    };
    Ok(f())
}

/// Whether autocast is on for `device` on this thread.
pub fn autocast_enabled(device: Device) -> bool {
    match device_code(device) {
        // SAFETY: reads libtorch's thread-local autocast state.
        Ok(code) => unsafe { dinoflow_autocast_enabled(code) != 0 },
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use tch::{Kind, Reduction, Tensor};

    use super::*;

    #[test]
    fn matrix_products_run_in_bfloat16_inside_and_float32_after() {
        let a = Tensor::randn([8, 16], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([16, 4], (Kind::Float, Device::Cpu));
        let cast = Precision::Bfloat16.resolve(Device::Cpu);
        let (inside, loss, nested_after) = autocast(cast, || {
            let product = a.matmul(&b);
            // mse_loss is on libtorch's float32 list: autocast computes it in float32.
            let loss = product.mse_loss(&product, Reduction::Mean);
            autocast(cast, || ()).expect("nested");
            (product, loss, autocast_enabled(Device::Cpu))
        })
        .expect("autocast");
        assert_eq!(inside.kind(), Kind::BFloat16);
        assert_eq!(loss.kind(), Kind::Float);
        assert!(
            nested_after,
            "leaving a nested autocast turned the outer one off"
        );
        assert!(!autocast_enabled(Device::Cpu));
        assert_eq!(a.matmul(&b).kind(), Kind::Float);
        let exact = a.matmul(&b);
        let rel = (inside.to_kind(Kind::Float) - &exact)
            .norm()
            .double_value(&[])
            / exact.norm().double_value(&[]);
        assert!(rel > 0.0 && rel < 1e-2, "bfloat16 product off by {rel}");
    }

    #[test]
    fn the_state_is_restored_after_a_panic() {
        let cast = Precision::Bfloat16.resolve(Device::Cpu);
        let result = std::panic::catch_unwind(|| {
            autocast(cast, || panic!("inside")).ok();
        });
        assert!(result.is_err());
        assert!(!autocast_enabled(Device::Cpu));
    }

    #[test]
    fn auto_is_float32_on_the_cpu_and_bfloat16_on_cuda() {
        assert_eq!(Precision::Auto.resolve(Device::Cpu), None);
        assert_eq!(Precision::Float32.resolve(Device::Cuda(0)), None);
        assert_eq!(
            Precision::Auto.resolve(Device::Cuda(0)),
            Some(Autocast {
                device: Device::Cuda(0)
            })
        );
    }
}
