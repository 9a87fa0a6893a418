// The random-number state that dropout draws from, captured and restored as one value: the CPU generator's, and
// on a GPU also that device's CUDA generator (as torch.utils.checkpoint's preserve_rng_state does). Used by
// activation checkpointing (the recomputed forward must draw the same dropout masks as the first) and by
// checkpoints (a resumed run continues the same random stream, on CPU and on GPU).
//
// Thread-safety: Capture/Restore lock the generators they touch.
//
// Example:
//   RngState before = RngState::Capture(x.device());
//   ... forward ...;  RngState now = RngState::Capture(x.device());
//   before.Restore(); ... recompute ...; now.Restore();
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

namespace anneal::model {

struct RngState {
  at::Tensor cpu;     // the CPU generator's state (uint8)
  at::Tensor device;  // the CUDA generator's state of `where` (uint8); undefined for a CPU device
  c10::Device where = c10::kCPU;

  static RngState Capture(const c10::Device& device);
  void Restore() const;
};

}  // namespace anneal::model
