#include "trainer/parallel/tensor_parallel.h"

#include <optional>

#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/nn/functional/linear.h>

#include "common/status.h"

namespace anneal::parallel {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

Comm* CommOf(AutogradContext* ctx) { return reinterpret_cast<Comm*>(ctx->saved_data["comm"].toInt()); }

struct CopyToGroupFn : public torch::autograd::Function<CopyToGroupFn> {
  static at::Tensor forward(AutogradContext* ctx, at::Tensor x, int64_t comm) {
    ctx->saved_data["comm"] = comm;
    return x;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    at::Tensor g = grad[0].contiguous().clone();
    CommOf(ctx)->AllReduceSum(g);
    return {g, at::Tensor()};
  }
};

struct ReduceFromGroupFn : public torch::autograd::Function<ReduceFromGroupFn> {
  static at::Tensor forward(AutogradContext* /*ctx*/, at::Tensor x, int64_t comm) {
    at::Tensor y = x.contiguous().clone();
    reinterpret_cast<Comm*>(comm)->AllReduceSum(y);
    return y;
  }
  static variable_list backward(AutogradContext* /*ctx*/, variable_list grad) { return {grad[0], at::Tensor()}; }
};

// Along the sequence (dim 1) through Comm's dim-0 collectives: [B, T, ..] <-> [T, B, ..].
at::Tensor AllGatherDim1(const at::Tensor& x, Comm* comm) {
  return comm->AllGather(x.transpose(0, 1).contiguous()).transpose(0, 1).contiguous();
}
at::Tensor ReduceScatterDim1(const at::Tensor& x, Comm* comm) {
  TORCH_CHECK(x.size(1) % comm->size() == 0, "sequence length ", x.size(1), " is not divisible by tensor parallel ",
              comm->size());
  return comm->ReduceScatterSum(x.transpose(0, 1).contiguous()).transpose(0, 1).contiguous();
}

struct GatherSequenceFn : public torch::autograd::Function<GatherSequenceFn> {
  static at::Tensor forward(AutogradContext* ctx, at::Tensor x, int64_t comm) {
    ctx->saved_data["comm"] = comm;
    return AllGatherDim1(x, reinterpret_cast<Comm*>(comm));
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    return {ReduceScatterDim1(grad[0], CommOf(ctx)), at::Tensor()};
  }
};

struct ReduceScatterSequenceFn : public torch::autograd::Function<ReduceScatterSequenceFn> {
  static at::Tensor forward(AutogradContext* ctx, at::Tensor x, int64_t comm) {
    ctx->saved_data["comm"] = comm;
    return ReduceScatterDim1(x, reinterpret_cast<Comm*>(comm));
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    return {AllGatherDim1(grad[0], CommOf(ctx)), at::Tensor()};
  }
};

int64_t Address(Comm* c) { return reinterpret_cast<int64_t>(c); }

}  // namespace

// The last sequence all-gather, reused by the column layers that read the same input (q, k, v; gate, up). The
// source is held weakly: once it is freed, or modified in place, the entry no longer matches.
struct SequenceGatherCache {
  at::Tensor Gather(const at::Tensor& x, Comm* comm) {
    if (source) {
      auto live = source->lock();
      if (live && live.get() == x.unsafeGetTensorImpl() && version == x._version() && gathered.defined()) {
        return gathered;
      }
    }
    gathered = GatherSequence(x, comm);
    source.emplace(x.getIntrusivePtr());
    version = x._version();
    return gathered;
  }
  std::optional<c10::weak_intrusive_ptr<c10::TensorImpl>> source;
  uint32_t version = 0;
  at::Tensor gathered;
};

namespace {

// weight [out/shards, in]; pieces of the output dimension.
class ColumnParallelLinearImpl : public model::LinearImpl {
 public:
  ColumnParallelLinearImpl(const model::LinearSpec& spec, const torch::TensorOptions& options, std::shared_ptr<Comm> tp,
                           int64_t shards, std::shared_ptr<SequenceGatherCache> gather)
      : LinearImpl(spec, options, spec.out / shards, spec.in), tp_(std::move(tp)), shards_(shards),
        index_(tp_->rank() / (tp_->size() / shards)), gather_(std::move(gather)) {}

  torch::Tensor forward(const torch::Tensor& x) override {
    // x [B, T, in] replicated (or [B, T/tp, in] with sequence parallelism) -> [B, T, out/shards]
    torch::Tensor xin = gather_ ? gather_->Gather(x, tp_.get()) : CopyToGroup(x, tp_.get());
    torch::Tensor y = BaseLinear(xin, bias);
    if (lora_active()) y = y + LoraDelta(xin);
    return y;
  }

  model::ParamLayout Layout(const std::string& name) const override {
    if (name == "lora_A.weight") return {.dim = 0, .shards = 1, .index = 0, .partial_grad = true};
    // Pieces held by several ranks (kv heads fewer than tp) get partial gradients on each of them.
    return {.dim = 0, .shards = shards_, .index = index_, .partial_grad = shards_ < tp_->size()};
  }

 private:
  std::shared_ptr<Comm> tp_;
  int64_t shards_, index_;
  std::shared_ptr<SequenceGatherCache> gather_;  // set under sequence parallelism
};

// weight [out, in/tp]; pieces of the input dimension.
class RowParallelLinearImpl : public model::LinearImpl {
 public:
  RowParallelLinearImpl(const model::LinearSpec& spec, const torch::TensorOptions& options, std::shared_ptr<Comm> tp,
                        bool sequence_parallel)
      : LinearImpl(spec, options, spec.out, spec.in / tp->size()), tp_(std::move(tp)), sp_(sequence_parallel) {
    // LLM.int8 quantizes each input row by its maximum over the whole row: all ranks' columns.
    set_int8_row_max([comm = tp_](at::Tensor& row_max) { comm->AllReduceMax(row_max); });
  }

  torch::Tensor forward(const torch::Tensor& x) override {
    // x [B, T, in/tp] -> partial [B, T, out] -> summed over the group ([B, T/tp, out] with sequence
    // parallelism) -> + bias
    torch::Tensor y = BaseLinear(x, torch::Tensor());
    if (lora_active()) y = y + LoraDelta(x);  // (x A_piece^T) B^T: this rank's share of the delta
    y = sp_ ? ReduceScatterSequence(y, tp_.get()) : ReduceFromGroup(y, tp_.get());
    if (bias.defined()) y = y + bias;
    return y;
  }

  model::ParamLayout Layout(const std::string& name) const override {
    if (name == "weight" || name == "lora_A.weight") return {.dim = 1, .shards = tp_->size(), .index = tp_->rank()};
    if (name == "lora_B.weight") return {.dim = 0, .shards = 1, .index = 0, .partial_grad = true};
    return {};  // bias: replicated, added after the reduction (identical gradients)
  }

 private:
  std::shared_ptr<Comm> tp_;
  bool sp_;
};

// weight [V/tp, C]: rows [index * V/tp, (index + 1) * V/tp) of the full table.
class VocabParallelEmbeddingImpl : public model::EmbeddingImpl {
 public:
  VocabParallelEmbeddingImpl(int64_t vocab, int64_t dim, const torch::TensorOptions& options, std::shared_ptr<Comm> tp,
                             bool sequence_parallel)
      : EmbeddingImpl(vocab / tp->size(), dim, options), tp_(std::move(tp)), sp_(sequence_parallel) {}

  torch::Tensor forward(const torch::Tensor& ids) override {
    // ids [B, T] -> [B, T, C]: look up own rows, zeros for the others' ids, sum over the group.
    const int64_t rows = weight.size(0), start = tp_->rank() * rows;
    torch::Tensor outside = (ids < start).logical_or(ids >= start + rows);
    torch::Tensor local = (ids - start).masked_fill(outside, 0);
    torch::Tensor out = torch::embedding(weight, local).masked_fill(outside.unsqueeze(-1), 0);
    return sp_ ? ReduceScatterSequence(out, tp_.get()) : ReduceFromGroup(out, tp_.get());
  }

  model::ParamLayout Layout() const override { return {.dim = 0, .shards = tp_->size(), .index = tp_->rank()}; }

 private:
  std::shared_ptr<Comm> tp_;
  bool sp_;
};

}  // namespace

namespace {
// With one rank each of these operations is the identity.
template <class Fn>
at::Tensor ApplyInGroup(const at::Tensor& x, Comm* comm) {
  if (comm == nullptr || comm->size() == 1) return x;
  return Fn::apply(x, Address(comm));
}
}  // namespace

at::Tensor CopyToGroup(const at::Tensor& x, Comm* comm) { return ApplyInGroup<CopyToGroupFn>(x, comm); }
at::Tensor ReduceFromGroup(const at::Tensor& x, Comm* comm) { return ApplyInGroup<ReduceFromGroupFn>(x, comm); }
at::Tensor GatherSequence(const at::Tensor& x, Comm* comm) { return ApplyInGroup<GatherSequenceFn>(x, comm); }
at::Tensor ReduceScatterSequence(const at::Tensor& x, Comm* comm) {
  return ApplyInGroup<ReduceScatterSequenceFn>(x, comm);
}

TensorParallelFactory::TensorParallelFactory(std::shared_ptr<Comm> tp, int64_t head_dim, bool sequence_parallel)
    : tp_(std::move(tp)), head_dim_(head_dim), sequence_parallel_(sequence_parallel) {
  if (sequence_parallel_) gather_cache_ = std::make_shared<SequenceGatherCache>();
}

model::Linear TensorParallelFactory::Make(const model::LinearSpec& spec, const torch::TensorOptions& options) const {
  const int64_t tp = tp_->size();
  if (spec.split == model::LinearSplit::kRow) {
    ANNEAL_CHECK(spec.in % tp == 0);
    return model::Linear(std::shared_ptr<model::LinearImpl>(std::make_shared<RowParallelLinearImpl>(spec, options, tp_, sequence_parallel_)));
  }
  if (spec.split == model::LinearSplit::kColumn) {
    int64_t shards = tp;
    if (spec.role == "k_proj" || spec.role == "v_proj") {
      // Fewer kv heads than ranks: one head per piece, each held by tp / kv ranks (ParallelDims checked that
      // tp is a multiple of the kv heads).
      const int64_t kv_heads = spec.out / head_dim_;
      if (kv_heads % tp != 0) shards = kv_heads;
    }
    ANNEAL_CHECK(spec.out % shards == 0 && tp % shards == 0);
    return model::Linear(
        std::shared_ptr<model::LinearImpl>(std::make_shared<ColumnParallelLinearImpl>(spec, options, tp_, shards, gather_cache_)));
  }
  return model::Linear(spec, options);
}

model::Embedding TensorParallelFactory::MakeEmbedding(int64_t vocab, int64_t dim,
                                                      const torch::TensorOptions& options) const {
  ANNEAL_CHECK(vocab % tp_->size() == 0);
  return model::Embedding(
      std::shared_ptr<model::EmbeddingImpl>(std::make_shared<VocabParallelEmbeddingImpl>(vocab, dim, options, tp_, sequence_parallel_)));
}

torch::Tensor TensorParallelFactory::HeadLogits(const torch::Tensor& hidden, const torch::Tensor& weight) const {
  // [.., C] x [V/tp, C]^T -> [.., V/tp]; the input gradient is summed over the group in backward (by the
  // sequence gather's reduce-scatter under sequence parallelism).
  if (sequence_parallel_) return torch::matmul(GatherSequence(hidden, tp_.get()), weight.t());
  return torch::matmul(CopyToGroup(hidden, tp_.get()), weight.t());
}

torch::Tensor TensorParallelFactory::FullLogits(const torch::Tensor& logits) const {
  // [.., V/tp] -> gather pieces along a leading dim [tp * V/tp, ..] -> [.., V]
  torch::NoGradGuard no_grad;
  torch::Tensor moved = logits.movedim(-1, 0).contiguous();
  return tp_->AllGather(moved).movedim(0, -1).contiguous();
}

torch::Tensor TensorParallelFactory::CrossEntropySum(const torch::Tensor& logits, const torch::Tensor& labels) const {
  return -TokenLogProbs(logits, labels).sum();
}

torch::Tensor TensorParallelFactory::TokenLogProbs(const torch::Tensor& logits, const torch::Tensor& labels) const {
  // logits [N, V/tp] fp32, labels [N]. log p_i = (l_i,label - m_i) - log(sum_v exp(l_iv - m_i)), m_i = max_v l_iv.
  at::Tensor max = std::get<0>(logits.detach().max(-1)).contiguous();  // [N]
  tp_->AllReduceMax(max);
  torch::Tensor shifted = logits - max.unsqueeze(1);                    // [N, V/tp]
  const int64_t rows = logits.size(1), start = tp_->rank() * rows;
  torch::Tensor valid = labels != -100;
  torch::Tensor mine = valid.logical_and(labels >= start).logical_and(labels < start + rows);
  torch::Tensor local = (labels - start).masked_fill(mine.logical_not(), 0);
  torch::Tensor target = shifted.gather(1, local.unsqueeze(1)).squeeze(1) * mine.to(shifted.scalar_type());  // [N]
  target = ReduceFromGroup(target, tp_.get());
  torch::Tensor sum_exp = ReduceFromGroup(shifted.exp().sum(-1), tp_.get());  // [N]
  return (target - sum_exp.log()) * valid.to(shifted.scalar_type());
}

}  // namespace anneal::parallel
