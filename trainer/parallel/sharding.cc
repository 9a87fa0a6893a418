#include "trainer/parallel/sharding.h"

#include <map>

#include <ATen/ATen.h>

namespace anneal::parallel {

at::Tensor GatherFull(const at::Tensor& piece, const model::ParamLayout& layout, Comm* tp) {
  if (!layout.sharded() || tp == nullptr || tp->size() == 1) return piece;
  // Gather along a leading dim: [tp * n, ..] holds rank r's piece at chunk r; piece s is held by ranks
  // s * replicas .. (s + 1) * replicas - 1, so take the first of them.
  at::Tensor moved = piece.detach().movedim(layout.dim, 0).contiguous();
  std::vector<at::Tensor> chunks = tp->AllGather(moved).chunk(tp->size(), 0);
  const int64_t replicas = tp->size() / layout.shards;
  std::vector<at::Tensor> pieces;
  for (int64_t s = 0; s < layout.shards; ++s) pieces.push_back(chunks[s * replicas]);
  return at::cat(pieces, 0).movedim(0, layout.dim).contiguous();
}

void SumPartialGradients(const std::vector<std::pair<at::Tensor, model::ParamLayout>>& params, Comm* tp,
                         bool sequence_parallel) {
  if (tp == nullptr || tp->size() == 1) return;
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> whole;  // replicated on every rank: one flat all-reduce per dtype
  for (const auto& [param, layout] : params) {
    if (!layout.partial_grad && !(sequence_parallel && !layout.sharded())) continue;
    at::Tensor& g = param.mutable_grad();
    if (!g.defined()) g = at::zeros_like(param);
    if (!layout.sharded()) {
      whole.push_back(g);
      continue;
    }
    // Held by a subset: place this piece in a zero full tensor, sum, keep own piece (the sum of the subset).
    at::Tensor full = at::zeros(layout.FullShape(g.sizes()), g.options());
    layout.Slice(full).copy_(g);
    tp->AllReduceSum(full);
    g.copy_(layout.Slice(full));
  }
  std::map<at::ScalarType, std::vector<at::Tensor>> by_dtype;
  for (auto& g : whole) by_dtype[g.scalar_type()].push_back(g);
  for (auto& [dtype, list] : by_dtype) {
    at::Tensor flat = Flatten(list);
    tp->AllReduceSum(flat);
    CopyFromFlat(flat, list);
  }
}

at::Tensor Flatten(const std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> parts;
  for (const auto& t : tensors) parts.push_back(t.reshape({-1}));
  return at::cat(parts);
}

void CopyFromFlat(const at::Tensor& flat, const std::vector<at::Tensor>& tensors) {
  at::NoGradGuard no_grad;
  int64_t off = 0;
  for (const auto& t : tensors) {
    at::Tensor dst = t;
    dst.copy_(flat.narrow(0, off, t.numel()).view_as(t));
    off += t.numel();
  }
}

bool CountsOnce(const model::ParamLayout& layout, int tp_rank, int tp_size) {
  const int64_t replicas = tp_size / std::max<int64_t>(1, layout.shards);
  return tp_rank % replicas == 0;
}

}  // namespace anneal::parallel
