// Linear and Embedding: the layers of the model that tensor parallelism splits, and LinearFactory, which builds
// them. Linear carries optional LoRA adapters (peft's LoraLayer semantics).
//
//   y = x W^T + b                                   W [out, in], b [out]
//   y += dropout(x) A^T B^T * scaling (LoRA)        A [r, in], B [out, r], scaling = alpha / r or alpha / sqrt(r)
//
// LoRA parameters are registered as submodules "lora_A" and "lora_B" holding "weight", so a parameter is
// named "...q_proj.lora_A.weight" exactly as peft names it. Adapters stay fp32 while the base may be bf16: the
// input is cast to fp32 for the adapter path and the sum cast back, as peft does.
//
// LinearFactory builds every linear and the embedding of the model, and computes the vocabulary head's
// logits and loss. Its default builds plain layers; the tensor-parallel factory (trainer/parallel) builds
// column/row/vocab-parallel ones, so the model code never changes for parallelism.
//
// ParamLayout says how a parameter of this rank relates to the full tensor of the HF checkpoint: the full
// tensor is cut into `shards` equal pieces along `dim` and this rank holds piece `index`. Loading slices by it,
// exports and checkpoints gather by it, so files always hold full tensors whatever the layout.
//
// QLoRA: QuantizeBase replaces a frozen base weight by its 4-bit form (trainer/model/quant4.h, bitsandbytes'
// layout); the "weight" parameter is then undefined (no parameter, no gradient), the 4-bit tensors are buffers
// (weight_q4, weight_q4_absmax, weight_q4_absmax2: they move with the module), and forward computes the base term
// with Quant4Linear. With BaseQuantOptions::bits 8 the weight is stored as bitsandbytes' Linear8bitLt stores it
// (trainer/model/quant8.h; buffers weight_int8 and weight_int8_scb) and forward computes Int8Linear the way bnb
// chooses: the dequantized matmul in training mode on CPU, LLM.int8 otherwise (CUDA, or eval mode).
// LoRA, the bias and every parallel layout work unchanged on top.
//
// Thread-safety: one thread at a time (LibTorch modules).
//
// Example:
//   Linear q = LinearFactory().Make({.in = 64, .out = 64, .bias = true, .role = "q_proj"}, opts);
//   q->EnableLora({.rank = 8, .alpha = 16}, /*seed=*/42);
//   torch::Tensor y = q->forward(x);   // [.., 64]
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "trainer/model/quant4.h"
#include "trainer/model/quant8.h"

namespace anneal::model {

struct LoraOptions {
  int64_t rank = 8;
  double alpha = 16;
  double dropout = 0.0;
  bool use_rslora = false;
  // DoRA (peft's use_dora): the output rows rescaled to a trained magnitude m / ||W + B A * scaling||_row (the
  // norm detached from the gradient, as peft).
  bool use_dora = false;
  // PiSSA (peft's init_lora_weights "pissa" / "pissa_niter_<n>"): with W = U S V^T (fp32), the top-r triplets
  // give B = U_r diag(sqrt(S_r / scaling)), A = diag(sqrt(S_r / scaling)) V_r^T, and W becomes W - scaling B A.
  bool pissa = false;
  int pissa_niter = -1;  // -1: full SVD (torch.linalg.svd); else torch.svd_lowrank's subspace iterations
};

// How QLoRA stores a frozen base linear (LLaMA-Factory's quantization_bit): 4 (quant4.h) or 8 (quant8.h).
struct BaseQuantOptions {
  int bits = 4;
  Quant4Options four = {};  // bits 4
  Int8Options eight = {};   // bits 8
};

// How a linear is split under tensor parallelism (ignored when the degree is 1).
enum class LinearSplit { kNone, kColumn, kRow };

// How one parameter of this rank maps onto the full (unsplit) tensor. The default: the whole tensor.
struct ParamLayout {
  int64_t dim = 0;     // the dimension cut into shards (meaningless when shards == 1)
  int64_t shards = 1;  // equal pieces of the full tensor; 1 = this rank holds it whole (replicated)
  int64_t index = 0;   // the piece this rank holds
  // Set when the tensor-parallel ranks holding the same piece each compute only part of its gradient (a
  // replicated LoRA factor, or kv heads replicated over several ranks): their gradients must be summed.
  bool partial_grad = false;

  bool sharded() const { return shards > 1; }
  // The piece of `full` this rank holds (a view).
  torch::Tensor Slice(const torch::Tensor& full) const;
  // The full shape from this rank's piece shape.
  std::vector<int64_t> FullShape(c10::IntArrayRef local) const;
};

struct LinearSpec {
  int64_t in = 0;
  int64_t out = 0;
  bool bias = false;
  std::string role = {};  // q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head
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
  // The layout of a parameter of this layer: "weight", "bias", "lora_A.weight" or "lora_B.weight".
  virtual ParamLayout Layout(const std::string& name) const;

  // Adds zero-initialised-B LoRA adapters: A kaiming-uniform(a=sqrt(5)) as peft, B zeros. fp32. A is drawn at
  // full size and sliced by Layout("lora_A.weight"), so every layout starts from the same adapter. With use_dora
  // also the magnitude "lora_magnitude_vector" [out] fp32 = ||W||_row (B is zero), peft's parameter name.
  void EnableLora(const LoraOptions& options, uint64_t seed);
  bool has_lora() const { return !lora_A.is_empty(); }
  // Off: the forward is the base layer's alone (peft's disable_adapter; stage dpo's reference model).
  void set_lora_enabled(bool on) { lora_enabled_ = on; }
  // peft's dropout module with p = 0 (trl's disable_dropout_in_model); the options, and the export, keep it.
  void disable_lora_dropout() { lora_dropout_off_ = true; }
  // W += B A * scaling (and back). Merging twice, or unmerging an unmerged layer, is a programmer error.
  void MergeLora();
  void UnmergeLora();
  bool merged() const { return merged_; }
  // W + B A * scaling in W's dtype, without touching W (for exports). Under tensor parallelism this is this
  // rank's piece of the merged weight (laid out as Layout("weight")).
  torch::Tensor MergedWeight();

  // Stores the base weight 4- or 8-bit: `full` is the whole HF tensor [spec.out, spec.in] (in the compute dtype);
  // this rank keeps the piece Layout("weight") selects. The dense weight is dropped. INVALID_ARGUMENT when the
  // layer cannot be quantized (4-bit: an input width per rank that is not a multiple of 64), or it has LoRA merged.
  Status QuantizeBase(const torch::Tensor& full, const BaseQuantOptions& options);
  const QuantizedLinearWeight* quantized() const { return quantized_.get(); }
  const Int8LinearWeight* quantized8() const { return quantized8_.get(); }
  // Bytes of the quantized base (0 when the weight is dense).
  int64_t quantized_bytes() const;
  // The 8-bit matmul's implementation (fast by default; the reference for tests), and its kind (by default bnb's
  // choice from the device and training mode; set to force one for tests).
  void set_int8_impl(Int8Impl impl) { int8_impl_ = impl; }
  void set_int8_matmul(std::optional<Int8Matmul> how) { int8_matmul_ = how; }
  // The 4-bit matmul (fused by default; the reference for tests and benchmarks).
  void set_quant4_matmul(Quant4Matmul how) { quant4_matmul_ = how; }

  const LinearSpec& spec() const { return spec_; }
  int64_t local_out() const { return local_out_; }  // rows of this rank's weight (out, or out / tp)
  double lora_scaling() const { return lora_scaling_; }
  const LoraOptions& lora_options() const { return lora_options_; }

  torch::Tensor weight;  // [out, in]
  torch::Tensor bias;    // [out] or undefined
  LoraWeight lora_A{nullptr}, lora_B{nullptr};
  torch::Tensor lora_magnitude_vector;  // DoRA: [out] fp32; undefined otherwise

 protected:
  // For subclasses whose weight is a piece [local_out, local_in] of the full [spec.out, spec.in].
  LinearImpl(const LinearSpec& spec, const torch::TensorOptions& options, int64_t local_out, int64_t local_in);
  // x [.., in] -> x W^T (+ bias when given) with the dense or the 4-bit weight.
  torch::Tensor BaseLinear(const torch::Tensor& x, const torch::Tensor& bias_or_undefined);
  // The adapter takes part in the forward: present, not merged, not switched off.
  bool lora_active() const { return has_lora() && !merged_ && lora_enabled_; }
  torch::Tensor LoraDelta(const torch::Tensor& x);  // x [.., in] -> [.., out] in x's dtype
  torch::Tensor DeltaWeight();                      // B A * scaling, [out, in] fp32
  // DoRA: y (the base output, bias included) -> y + peft's DoraLinearLayer term, [.., out].
  torch::Tensor AddDora(const torch::Tensor& x, const torch::Tensor& y);
  // PiSSA (LoraOptions::pissa): A, B from W's SVD, W replaced by the residual. `gen` draws svd_lowrank's start.
  void PissaInit(at::Generator& gen);
  torch::Tensor DenseWeight();     // W [out, in]: the weight, or the quantized one dequantized to fp32
  // 8-bit base under a piece of the input columns: the LLM.int8 row maxima's all-reduce over the group.
  void set_int8_row_max(std::function<void(at::Tensor&)> reduce) { int8_row_max_ = std::move(reduce); }
  torch::Tensor dora_merge_norm_;  // the row norms a DoRA merge divided by (UnmergeLora needs them)

  LinearSpec spec_;
  LoraOptions lora_options_;
  double lora_scaling_ = 0.0;
  bool lora_enabled_ = true, lora_dropout_off_ = false;
  bool merged_ = false;
  int64_t local_out_ = 0, local_in_ = 0;  // this rank's weight shape, kept when the weight is quantized
  std::shared_ptr<QuantizedLinearWeight> quantized_;
  Quant4Matmul quant4_matmul_ = Quant4Matmul::kFused;
  std::shared_ptr<Int8LinearWeight> quantized8_;
  Int8Impl int8_impl_ = Int8Impl::kFast;
  std::optional<Int8Matmul> int8_matmul_;
  double int8_threshold_ = 6.0;
  std::function<void(at::Tensor&)> int8_row_max_;
};
TORCH_MODULE(Linear);

// Token embedding: weight [V, C] (a vocabulary piece under tensor parallelism).
class EmbeddingImpl : public torch::nn::Module {
 public:
  EmbeddingImpl(int64_t vocab, int64_t dim, const torch::TensorOptions& options);
  virtual ~EmbeddingImpl() = default;
  virtual torch::Tensor forward(const torch::Tensor& ids);  // [B, T] -> [B, T, C]
  virtual ParamLayout Layout() const { return {}; }
  torch::Tensor weight;  // [V, C] (or [V/tp, C])
};
TORCH_MODULE(Embedding);

class LinearFactory {
 public:
  virtual ~LinearFactory() = default;
  virtual Linear Make(const LinearSpec& spec, const torch::TensorOptions& options) const;
  virtual Embedding MakeEmbedding(int64_t vocab, int64_t dim, const torch::TensorOptions& options) const;
  // The vocabulary head: hidden [.., C] x weight [V, C] -> logits [.., V] (a vocabulary piece [.., V/tp] under
  // tensor parallelism; the full logits are never formed there).
  virtual torch::Tensor HeadLogits(const torch::Tensor& hidden, const torch::Tensor& weight) const;
  // Logits from HeadLogits -> the full logits [.., V] (gathers the pieces; for generation and inspection).
  virtual torch::Tensor FullLogits(const torch::Tensor& logits) const { return logits; }
  // Sum of token cross-entropies: logits [N, V or V/tp] fp32, labels [N] (-100 ignored) -> scalar.
  virtual torch::Tensor CrossEntropySum(const torch::Tensor& logits, const torch::Tensor& labels) const;
  // logits [N, V] (this rank's vocabulary piece [N, V/tp] under tensor parallelism) fp32, labels [N] -> the log
  // probability of each label [N] (0 where the label is -100); differentiable in the logits.
  virtual torch::Tensor TokenLogProbs(const torch::Tensor& logits, const torch::Tensor& labels) const;
};

}  // namespace anneal::model
