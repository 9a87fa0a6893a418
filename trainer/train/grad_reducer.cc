#include "trainer/train/grad_reducer.h"

#include <map>

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>

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
                                 int64_t bucket_bytes)
    : dp_(dp) {
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
    buckets_[open[dtype]].params.push_back(p);
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
  if (!armed_) return;
  Bucket& b = buckets_[bucket];
  if (b.pending > 0 && --b.pending == 0) Launch(b);
}

void GradientReducer::Launch(Bucket& b) {
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
    if (b.launched) {
      ++early;
    } else {
      Launch(b);
    }
  }
  for (auto& b : buckets_) {
    b.wait();
    std::vector<at::Tensor> grads;
    for (auto& p : b.params) grads.push_back(p.grad());
    parallel::CopyFromFlat(b.flat, grads);
    b.flat = at::Tensor();
    b.wait = nullptr;
  }
  return early;
}

}  // namespace anneal::train
