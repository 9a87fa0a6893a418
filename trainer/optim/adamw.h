// AdamW with fp32 state and fp32 master weights, matching torch.optim.AdamW (single-tensor path) step for step.
//
// Parameters may be bf16/fp16 (the model's compute dtype): the optimizer keeps an fp32 master copy, applies the
// update to it and copies the rounded result back into the parameter. fp32 parameters are updated in place.
// Weight decay is decoupled (p *= 1 - lr * wd) and applied only to parameters in a decay group: HF Trainer
// excludes biases and norm weights (DecayParameterNames).
//
// Thread-safety: one thread at a time.
//
// Example:
//   AdamW opt({{"q.weight", w, /*decay=*/true}}, {.lr = 1e-4, .weight_decay = 0.01});
//   loss.backward(); opt.Step(scheduler.LrAt(step)); opt.ZeroGrad();
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace anneal::optim {

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

struct TrainableParam {
  std::string name;
  at::Tensor param;
  bool decay = true;
  // This parameter's learning rate is the step's times this (its own optimizer group's lr: LoRA+ trains lora_B
  // faster); weight decay scales with it as torch.optim.AdamW's per-group lr does.
  double lr_scale = 1.0;
};

// HF Trainer's rule: no decay for biases and normalisation weights.
bool DecayParameter(const std::string& name);

class AdamW {
 public:
  AdamW(std::vector<TrainableParam> params, AdamWOptions options);

  // One update with learning rate `lr` using the current .grad() of every parameter (missing grads skip).
  void Step(double lr);
  void ZeroGrad();
  int64_t step_count() const { return step_; }
  const std::vector<TrainableParam>& params() const { return params_; }

  // State as named tensors (exp_avg.<name>, exp_avg_sq.<name>, master.<name>) plus the step counter, so
  // checkpoints store it in safetensors.
  std::vector<std::pair<std::string, at::Tensor>> StateTensors() const;
  Status LoadStateTensors(const std::vector<std::pair<std::string, at::Tensor>>& tensors, int64_t step);

 private:
  struct State {
    at::Tensor exp_avg, exp_avg_sq, master;  // fp32; master undefined for fp32 params
  };
  std::vector<TrainableParam> params_;
  std::vector<State> state_;
  AdamWOptions options_;
  int64_t step_ = 0;
};

// Squared L2 norm of the gradients (fp32 sums): a rank's share of the global norm, which the trainer sums over
// the parallel groups and clips with ScaleGrads as torch.nn.utils.clip_grad_norm_ (train::Runtime::ClipGradNorm).
double GradNormSquared(const std::vector<TrainableParam>& params);
void ScaleGrads(const std::vector<TrainableParam>& params, double factor);

}  // namespace anneal::optim
