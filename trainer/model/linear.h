// Linear: the one linear layer of the model, with optional LoRA adapters (peft's LoraLayer semantics).
//
//   y = x W^T + b                                   W [out, in], b [out]
//   y += dropout(x) A^T B^T * scaling (LoRA)        A [r, in], B [out, r], scaling = alpha / r or alpha / sqrt(r)
//
// LoRA parameters are registered as submodules "lora_A" and "lora_B" holding "weight", so a parameter is
// named "...q_proj.lora_A.weight" exactly as peft names it. Adapters stay fp32 while the base may be bf16: the
// input is cast to fp32 for the adapter path and the sum cast back, as peft does.
//
// LinearFactory builds every linear of the model. Its default builds plain layers; the tensor-parallel
// factory (trainer/parallel) builds column/row-parallel ones, so the model code never changes for parallelism.
//
// Thread-safety: one thread at a time (LibTorch modules).
//
// Example:
//   Linear q = LinearFactory().Make({.in = 64, .out = 64, .bias = true, .role = "q_proj"}, opts);
//   q->EnableLora({.rank = 8, .alpha = 16}, /*seed=*/42);
//   torch::Tensor y = q->forward(x);   // [.., 64]
#pragma once

#include <cstdint>
#include <string>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

namespace anneal::model {

struct LoraOptions {
  int64_t rank = 8;
  double alpha = 16;
  double dropout = 0.0;
  bool use_rslora = false;
};

// How a linear is split under tensor parallelism (ignored when the degree is 1).
enum class LinearSplit { kNone, kColumn, kRow };

struct LinearSpec {
  int64_t in = 0;
  int64_t out = 0;
  bool bias = false;
  std::string role = {};          // q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head
  LinearSplit split = LinearSplit::kNone;
};

// A holder so LoRA weights are named "lora_A.weight" / "lora_B.weight".
class LoraWeightImpl : public torch::nn::Module {
 public:
  explicit LoraWeightImpl(torch::Tensor w) { weight = register_parameter("weight", std::move(w)); }
  torch::Tensor weight;
};
TORCH_MODULE(LoraWeight);

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(const LinearSpec& spec, const torch::TensorOptions& options);
  virtual ~LinearImpl() = default;

  // x [.., in] -> [.., out]
  virtual torch::Tensor forward(const torch::Tensor& x);

  // Adds zero-initialised-B LoRA adapters: A kaiming-uniform(a=sqrt(5)) as peft, B zeros. fp32.
  void EnableLora(const LoraOptions& options, uint64_t seed);
  bool has_lora() const { return !lora_A.is_empty(); }
  // W += B A * scaling (and back). Merging twice, or unmerging an unmerged layer, is a programmer error.
  void MergeLora();
  void UnmergeLora();
  bool merged() const { return merged_; }
  // W + B A * scaling in W's dtype, without touching W (for exports).
  torch::Tensor MergedWeight();

  const LinearSpec& spec() const { return spec_; }
  double lora_scaling() const { return lora_scaling_; }
  const LoraOptions& lora_options() const { return lora_options_; }

  torch::Tensor weight;  // [out, in]
  torch::Tensor bias;    // [out] or undefined
  LoraWeight lora_A{nullptr}, lora_B{nullptr};

 protected:
  torch::Tensor LoraDelta(const torch::Tensor& x);  // x [.., in] -> [.., out] in x's dtype
  torch::Tensor DeltaWeight();                       // B A * scaling, [out, in] fp32

  LinearSpec spec_;
  LoraOptions lora_options_;
  double lora_scaling_ = 0.0;
  bool merged_ = false;
};
TORCH_MODULE(Linear);

class LinearFactory {
 public:
  virtual ~LinearFactory() = default;
  virtual Linear Make(const LinearSpec& spec, const torch::TensorOptions& options) const;
};

}  // namespace anneal::model
