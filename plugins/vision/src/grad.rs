//! Gradients as `optimizer.zero_grad(set_to_none=True)` leaves them: dropped rather than zeroed,
//! so the next backward pass writes them instead of adding to a tensor of zeros.

use std::ffi::c_void;

use tch::Tensor;

unsafe extern "C" {
    fn dinoflow_clear_grad(tensor: *mut c_void);
}

/// Drops the gradient of `tensor` (afterwards `tensor.grad()` is undefined until a backward pass).
pub fn clear_grad(tensor: &mut Tensor) {
    // SAFETY: tch's handle is a live `at::Tensor*`; the shim only resets its gradient.
    unsafe { dinoflow_clear_grad(tensor.as_mut_ptr().cast()) }
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind};

    use super::*;

    #[test]
    fn a_cleared_gradient_is_undefined_and_the_next_backward_writes_it() {
        let mut x = Tensor::ones([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        (&x * 2.0).sum(Kind::Float).backward();
        (&x * 2.0).sum(Kind::Float).backward();
        assert_eq!(Vec::<f32>::try_from(x.grad()).unwrap(), [4.0, 4.0, 4.0]);
        clear_grad(&mut x);
        assert!(!x.grad().defined());
        (&x * 3.0).sum(Kind::Float).backward();
        assert_eq!(Vec::<f32>::try_from(x.grad()).unwrap(), [3.0, 3.0, 3.0]);
    }
}
