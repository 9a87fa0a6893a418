#include "trainer/train/zero.h"

#include <algorithm>
#include <numeric>

#include <torch/torch.h>

#include "trainer/parallel/sharding.h"

namespace anneal::train {

TrainerOptimizer::TrainerOptimizer(std::vector<optim::TrainableParam> params, optim::AdamWOptions options,
                                   parallel::Comm* dp, bool zero)
    : all_(std::move(params)), dp_(dp), zero_(zero && dp != nullptr && dp->size() > 1) {
  my_rank_ = zero_ ? dp_->rank() : 0;
  const int ranks = zero_ ? dp_->size() : 1;
  // Largest first to the least loaded rank; ties by position so every replica agrees.
  std::vector<size_t> order(all_.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return all_[a].param.numel() > all_[b].param.numel(); });
  std::vector<int64_t> load(ranks, 0);
  for (size_t i : order) {
    const int r = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    owner_[all_[i].name] = r;
    load[r] += all_[i].param.numel();
  }
  std::vector<optim::TrainableParam> mine;
  for (const auto& p : all_) {
    if (owner_[p.name] == my_rank_) mine.push_back(p);
  }
  adam_ = std::make_unique<optim::AdamW>(std::move(mine), options);
}

void TrainerOptimizer::Step(double lr) {
  adam_->Step(lr);
  if (!zero_) return;
  // Each owner broadcasts its updated parameters, one flat tensor per (owner, dtype).
  torch::NoGradGuard no_grad;
  for (int owner = 0; owner < dp_->size(); ++owner) {
    std::map<at::ScalarType, std::vector<at::Tensor>> by_dtype;
    for (const auto& p : all_) {
      if (owner_[p.name] == owner) by_dtype[p.param.scalar_type()].push_back(p.param);
    }
    for (auto& [dtype, list] : by_dtype) {
      at::Tensor flat = parallel::Flatten(list);
      dp_->Broadcast(flat, owner);
      if (owner != my_rank_) parallel::CopyFromFlat(flat, list);
    }
  }
}

void TrainerOptimizer::ZeroGrad() {
  for (auto& p : all_) {
    if (p.param.grad().defined()) p.param.mutable_grad().zero_();
  }
}

}  // namespace anneal::train
