// Tensor parallelism (Megatron-LM style) as a model::LinearFactory: the model asks for its layers and the
// factory returns pieces that communicate over the tensor-parallel group.
//
//   column (q, k, v, gate, up, lm_head): weight [out/tp, in]. The input passes CopyToGroup (forward identity,
//       backward all-reduce of the input gradient); the output stays split [.., out/tp].
//   row (o, down): weight [out, in/tp], input split [.., in/tp]; the partial outputs pass ReduceFromGroup
//       (forward all-reduce, backward identity); the bias is added after the sum.
//   vocab-parallel embedding: rows [V/tp, C]; a rank looks up the ids in its range, zeros elsewhere, and the
//       results are summed over the group.
//   vocab-parallel cross-entropy: logits stay [N, V/tp]; the max, the target logit and the sum of
//       exponentials are reduced over the group, so the full [N, V] logits are never formed.
//   LoRA, as peft's tensor-parallel LoRA layer: on a column layer A [r, in] is replicated and B [out/tp, r]
//       split; on a row layer A [r, in/tp] is split and B [out, r] replicated, and the adapter's partial
//       output joins the base output's single all-reduce. A replicated factor's gradient is then partial on
//       each rank (ParamLayout::partial_grad) and the trainer sums it over the group (SumPartialGradients).
//   kv heads fewer than tp (GQA): each kv head is held by tp / kv ranks (those whose query heads use it); its
//       weights' gradients are partial there too.
//   sequence parallel (optional, Megatron-LM's): between the tensor-parallel regions the activations are split
//       along the sequence, [B, T/tp, C], so norms, residuals and the stage-to-stage activations take 1/tp of
//       the memory. Column layers all-gather their input along the sequence (backward: reduce-scatter), row
//       layers and the embedding reduce-scatter their output (backward: all-gather), the head all-gathers the
//       final hidden states. One all-gather serves q, k and v (and gate and up): the gathered input is reused
//       while its source tensor is alive and unmodified. Replicated weights (norms, row biases) then see only
//       part of the sequence: their gradients are partial and summed over the group.
//
// Thread-safety: layers are used by one thread at a time; the Comm must outlive them.
//
// Example:
//   auto factory = std::make_shared<TensorParallelFactory>(tp_comm, config.head_dim);
//   CausalLM lm(config, options, factory);   // this rank's piece of the model
#pragma once

#include <memory>

#include "trainer/model/linear.h"
#include "trainer/parallel/comm.h"

namespace anneal::parallel {

// Forward identity, backward all-reduce of the gradient over `comm` (Megatron's copy_to_tensor_model_parallel).
at::Tensor CopyToGroup(const at::Tensor& x, Comm* comm);
// Forward all-reduce over `comm`, backward identity (Megatron's reduce_from_tensor_model_parallel).
at::Tensor ReduceFromGroup(const at::Tensor& x, Comm* comm);
// x [B, T/n, ..] -> [B, T, ..] concatenated over the group; backward: reduce-scatter along the sequence.
at::Tensor GatherSequence(const at::Tensor& x, Comm* comm);
// x [B, T, ..] partial sums -> [B, T/n, ..] of the sum, this rank's chunk; backward: all-gather.
at::Tensor ReduceScatterSequence(const at::Tensor& x, Comm* comm);

class TensorParallelFactory : public model::LinearFactory {
 public:
  TensorParallelFactory(std::shared_ptr<Comm> tp, int64_t head_dim, bool sequence_parallel = false);

  model::Linear Make(const model::LinearSpec& spec, const torch::TensorOptions& options) const override;
  model::Embedding MakeEmbedding(int64_t vocab, int64_t dim, const torch::TensorOptions& options) const override;
  // hidden [B, T, C] (replicated; [B, T/tp, C] with sequence parallelism) x weight [V/tp, C] -> [B, T, V/tp]
  torch::Tensor HeadLogits(const torch::Tensor& hidden, const torch::Tensor& weight) const override;
  // [.., V/tp] -> [.., V] (all-gather; no autograd)
  torch::Tensor FullLogits(const torch::Tensor& logits) const override;
  // logits [N, V/tp] fp32, labels [N] global ids -> sum of token losses (identical on every rank)
  torch::Tensor CrossEntropySum(const torch::Tensor& logits, const torch::Tensor& labels) const override;
  torch::Tensor TokenLogProbs(const torch::Tensor& logits, const torch::Tensor& labels) const override;

 private:
  std::shared_ptr<Comm> tp_;
  int64_t head_dim_;
  bool sequence_parallel_;
  std::shared_ptr<struct SequenceGatherCache> gather_cache_;
};

}  // namespace anneal::parallel
