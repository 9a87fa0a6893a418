#include "trainer/train/grad_reducer.h"

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>

#include <algorithm>
#include <map>

#include "trainer/parallel/flat_shard.h"
#include "trainer/parallel/sharding.h"

namespace anneal::train {
namespace {

struct ReadyHook : public torch::autograd::PostAccumulateGradHook {
  ReadyHook(GradientReducer* reducer, size_t bucket) : reducer(reducer), bucket(bucket) {}
  void operator()(const torch::autograd::Variable& /*param*/) override { reducer->OnReady(bucket); }
  GradientReducer* reducer;
  size_t bucket;
};

}  // namespace

GradientReducer::GradientReducer(const std::vector<optim::TrainableParam>& params, parallel::Comm* dp,
                                 int64_t bucket_bytes, const std::vector<optim::TrainableParam>* shards)
    : dp_(dp), shards_(shards) {
  std::map<at::ScalarType, size_t> open;  // dtype -> index of its bucket being filled
  std::map<at::ScalarType, int64_t> bytes;
  for (auto it = params.rbegin(); it != params.rend(); ++it) {
    const at::Tensor& p = it->param;
    const at::ScalarType dtype = p.scalar_type();
    const int64_t size = static_cast<int64_t>(p.numel()) * static_cast<int64_t>(p.element_size());
    if (!open.count(dtype) || (bytes[dtype] > 0 && bytes[dtype] + size > bucket_bytes)) {
      open[dtype] = buckets_.size();
      buckets_.emplace_back();
      bytes[dtype] = 0;
    }
    Bucket& b = buckets_[open[dtype]];
    b.params.push_back(p);
    b.index.push_back(static_cast<size_t>(params.rend() - it) - 1);
    b.offset.push_back(b.rank_elements);
    b.rank_elements += parallel::FlatShard::Of(p.numel(), dp_->size(), dp_->rank()).chunk;
    bytes[dtype] += size;
  }
  for (size_t b = 0; b < buckets_.size(); ++b) {
    for (auto& p : buckets_[b].params) {
      torch::autograd::impl::set_post_acc_grad_hooks(p, std::make_unique<ReadyHook>(this, b));
    }
  }
}

GradientReducer::~GradientReducer() {
  for (auto& b : buckets_) {
    for (auto& p : b.params) torch::autograd::impl::set_post_acc_grad_hooks(p, nullptr);
  }
}

void GradientReducer::Arm() {
  for (auto& b : buckets_) {
    b.pending = b.params.size();
    b.launched = false;
    b.wait = nullptr;
  }
  armed_ = true;
}

void GradientReducer::OnReady(size_t bucket) {
  if (!armed_ || deferred_) return;
  Bucket& b = buckets_[bucket];
  if (b.pending > 0 && --b.pending == 0) {
    Launch(b);
    // ZeRO-2/3: armed for every micro-batch of the step; the bucket counts the next backward's gradients.
    if (shards_) b.pending = b.params.size();
  }
}

void GradientReducer::Launch(Bucket& b) {
  if (shards_) return LaunchReduceScatter(b);
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> grads;
  for (auto& p : b.params) {
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    grads.push_back(p.grad());
  }
  b.flat = parallel::Flatten(grads);
  b.wait = dp_->AllReduceSumAsync(b.flat);
  b.launched = true;
}

size_t GradientReducer::Finish() {
  armed_ = false;
  torch::NoGradGuard no_grad;
  size_t early = 0;
  for (auto& b : buckets_) {
    if (b.launched) ++early;
    // A bucket that never launched, or (ZeRO-2/3) holds gradients of a backward that did not complete it.
    if (!b.launched || (shards_ && b.pending != b.params.size())) Launch(b);
  }
  for (auto& b : buckets_) {
    if (shards_) {
      FinishReduceScatter(b);
      continue;
    }
    b.wait();
    std::vector<at::Tensor> grads;
    for (auto& p : b.params) grads.push_back(p.grad());
    parallel::CopyFromFlat(b.flat, grads);
    b.flat = at::Tensor();
    b.wait = nullptr;
  }
  in_flight_.clear();
  return early;
}

// Rank-major input: row r holds rank r's chunk of every parameter (zero padded); the full gradients are
// freed once copied, so a rank keeps at most the buckets still in flight.
void GradientReducer::LaunchReduceScatter(Bucket& b) {
  torch::NoGradGuard no_grad;
  // Launched again (the next micro-batch) while the last reduction is in flight: that one is added first.
  if (b.wait) {
    FinishReduceScatter(b);
    auto it = std::find(in_flight_.begin(), in_flight_.end(), static_cast<size_t>(&b - buckets_.data()));
    if (it != in_flight_.end()) in_flight_.erase(it);
  }
  const int ranks = dp_->size();
  const at::Tensor& first = b.params.front();
  at::Tensor in = torch::zeros({ranks, b.rank_elements}, first.options());
  for (size_t i = 0; i < b.params.size(); ++i) {
    at::Tensor& p = b.params[i];
    if (!p.grad().defined()) continue;  // no gradient in this step: zeros
    const auto s = parallel::FlatShard::Of(p.numel(), ranks, dp_->rank());
    at::Tensor padded = torch::zeros({ranks * s.chunk}, p.options());
    padded.narrow(0, 0, s.numel).copy_(p.grad().reshape({-1}));
    in.narrow(1, b.offset[i], s.chunk).copy_(padded.view({ranks, s.chunk}));
    p.mutable_grad() = at::Tensor();
  }
  b.flat = in.view({-1});
  b.shard = torch::empty({b.rank_elements}, first.options());
  b.wait = dp_->ReduceScatterSumAsync(b.flat, b.shard);
  b.launched = true;
  // At most kMaxInFlight buckets' inputs alive: the oldest is finished (its input freed) before backward goes on.
  in_flight_.push_back(static_cast<size_t>(&b - buckets_.data()));
  while (in_flight_.size() > kMaxInFlight) {
    FinishReduceScatter(buckets_[in_flight_.front()]);
    in_flight_.pop_front();
  }
}

void GradientReducer::FinishReduceScatter(Bucket& b) {
  if (!b.wait) return;  // finished already, during backward
  b.wait();
  for (size_t i = 0; i < b.params.size(); ++i) {
    at::Tensor& p = b.params[i];
    const auto s = parallel::FlatShard::Of(p.numel(), dp_->size(), dp_->rank());
    at::Tensor shard = (*shards_)[b.index[i]].param;
    // The step's first reduction of this range is its gradient; those of later micro-batches add to it.
    // (A gradient accumulated after the launch, from the next micro-batch, stays for that one's launch.)
    at::Tensor part = b.shard.narrow(0, b.offset[i], s.owned());
    if (shard.grad().defined()) {
      shard.mutable_grad().add_(part);
    } else {
      shard.mutable_grad() = part;
    }
  }
  b.flat = at::Tensor();
  b.shard = at::Tensor();
  b.wait = nullptr;
}

}  // namespace anneal::train
