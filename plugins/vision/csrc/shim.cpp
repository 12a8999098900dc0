// The libtorch functions that tch does not expose: the per-device autocast state (tch's `autocast`
// switches CUDA autocast on with libtorch's default dtype, float16), used by src/autocast.rs, and
// dropping a gradient (`zero_grad(set_to_none=True)`), used by src/grad.rs.
#include <ATen/autocast_mode.h>
#include <ATen/core/Tensor.h>

namespace {
at::DeviceType device_type(int device) { return device == 1 ? at::kCUDA : at::kCPU; }
}  // namespace

extern "C" {

// Turns bfloat16 autocast on for `device` (0 CPU, 1 CUDA) and enters one nesting level. The
// previous state goes to `was_enabled` and `was_dtype` (libtorch's scalar type code). Returns 0,
// or -1 when libtorch refused.
int dinoflow_autocast_enter(int device, int* was_enabled, int* was_dtype) {
  try {
    auto type = device_type(device);
    *was_enabled = at::autocast::is_autocast_enabled(type) ? 1 : 0;
    *was_dtype = static_cast<int>(at::autocast::get_autocast_dtype(type));
    at::autocast::set_autocast_enabled(type, true);
    at::autocast::set_autocast_dtype(type, at::kBFloat16);
    at::autocast::increment_nesting();
    return 0;
  } catch (...) {
    return -1;
  }
}

// Restores what dinoflow_autocast_enter saved and leaves its nesting level; the outermost exit
// drops the cache of cast weights, as torch.autocast does.
void dinoflow_autocast_exit(int device, int was_enabled, int was_dtype) {
  try {
    auto type = device_type(device);
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(type, was_enabled != 0);
    at::autocast::set_autocast_dtype(type, static_cast<at::ScalarType>(was_dtype));
  } catch (...) {
  }
}

// Whether autocast is on for `device` (0 CPU, 1 CUDA) on this thread.
int dinoflow_autocast_enabled(int device) {
  try {
    return at::autocast::is_autocast_enabled(device_type(device)) ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

// Drops the gradient of `tensor` (an at::Tensor*, tch's handle), so that the next backward pass
// writes it instead of adding to zeros.
void dinoflow_clear_grad(void* tensor) {
  try {
    static_cast<at::Tensor*>(tensor)->mutable_grad().reset();
  } catch (...) {
  }
}
}
