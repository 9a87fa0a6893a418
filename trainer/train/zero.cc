#include "trainer/train/zero.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "trainer/parallel/flat_shard.h"
#include "trainer/parallel/sharding.h"
#include "trainer/train/runtime.h"

namespace anneal::train {
namespace {

std::string ParamOfKey(const std::string& key) {
  return key.substr(key.find('.') + 1);
}

}  // namespace

TrainerOptimizer::TrainerOptimizer(std::vector<optim::TrainableParam> params, optim::AdamWOptions options,
                                   parallel::Comm* dp, int stage, int64_t allgather_bucket_bytes)
    : all_(std::move(params)),
      dp_(dp),
      stage_(dp != nullptr && dp->size() > 1 ? std::clamp(stage, 0, 2) : 0),
      allgather_bucket_bytes_(std::max<int64_t>(1, allgather_bucket_bytes)) {
  my_rank_ = stage_ > 0 ? dp_->rank() : 0;
  for (size_t i = 0; i < all_.size(); ++i) index_[all_[i].name] = i;
  if (stage_ == 2) {
    torch::NoGradGuard no_grad;
    for (const auto& p : all_) {
      TORCH_CHECK(p.param.is_contiguous(), "ZeRO-2 needs contiguous parameters; ", p.name, " is not");
      const auto s = parallel::FlatShard::Of(p.param.numel(), dp_->size(), my_rank_);
      // A view of the parameter's storage: the step updates the owned range in place.
      shards_.push_back({p.name, p.param.detach().view({-1}).narrow(0, s.begin, s.owned()), p.decay, p.lr_scale});
    }
    adam_ = std::make_unique<optim::AdamW>(shards_, options);
    return;
  }
  AssignWholeParameters();
  std::vector<optim::TrainableParam> mine;
  for (const auto& p : all_) {
    if (owner_[p.name] == my_rank_) mine.push_back(p);
  }
  adam_ = std::make_unique<optim::AdamW>(std::move(mine), options);
}

// Largest first to the least loaded rank; ties by position so every replica agrees.
void TrainerOptimizer::AssignWholeParameters() {
  const int ranks = stage_ == 1 ? dp_->size() : 1;
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
}

std::vector<model::ParamLayout> TrainerOptimizer::GradLayouts(const std::vector<model::ParamLayout>& layouts) const {
  std::vector<model::ParamLayout> out = layouts;
  if (sharded_grads()) {
    for (auto& l : out) l.dim = 0;
  }
  return out;
}

void TrainerOptimizer::Step(double lr) {
  adam_->Step(lr);
  if (stage_ == 2) return AllGatherShards();
  if (stage_ != 1) return;
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

// Buckets of one dtype and at most allgather_bucket_bytes_ of parameters, laid out rank-major (FlatShard): each
// rank contributes its owned chunks, every rank gets every chunk back.
void TrainerOptimizer::AllGatherShards() {
  torch::NoGradGuard no_grad;
  const int ranks = dp_->size();
  std::map<at::ScalarType, size_t> open;  // dtype -> its bucket being filled
  std::vector<std::vector<size_t>> buckets;
  std::map<at::ScalarType, int64_t> bytes;
  for (size_t i = 0; i < all_.size(); ++i) {
    const at::Tensor& p = all_[i].param;
    const int64_t size = static_cast<int64_t>(p.numel()) * static_cast<int64_t>(p.element_size());
    const auto dtype = p.scalar_type();
    if (!open.count(dtype) || (bytes[dtype] > 0 && bytes[dtype] + size > allgather_bucket_bytes_)) {
      open[dtype] = buckets.size();
      buckets.emplace_back();
      bytes[dtype] = 0;
    }
    buckets[open[dtype]].push_back(i);
    bytes[dtype] += size;
  }
  for (const auto& bucket : buckets) {
    std::vector<int64_t> offset;
    int64_t per_rank = 0;
    for (size_t i : bucket) {
      offset.push_back(per_rank);
      per_rank += parallel::FlatShard::Of(all_[i].param.numel(), ranks, my_rank_).chunk;
    }
    at::Tensor local = torch::zeros({per_rank}, all_[bucket.front()].param.options());
    for (size_t k = 0; k < bucket.size(); ++k) {
      const at::Tensor& s = shards_[bucket[k]].param;
      local.narrow(0, offset[k], s.numel()).copy_(s);
    }
    at::Tensor gathered = dp_->AllGather(local).view({ranks, per_rank});
    for (size_t k = 0; k < bucket.size(); ++k) {
      at::Tensor p = all_[bucket[k]].param.detach();
      const auto s = parallel::FlatShard::Of(p.numel(), ranks, my_rank_);
      p.view({-1}).copy_(gathered.narrow(1, offset[k], s.chunk).reshape({-1}).narrow(0, 0, s.numel));
    }
  }
}

void TrainerOptimizer::ZeroGrad() {
  for (auto& p : all_) {
    if (p.param.grad().defined()) p.param.mutable_grad().zero_();
  }
  // Stage 2: the shard gradients are views of the reducer's buffers; the next reduction replaces them.
  for (auto& s : shards_) s.param.mutable_grad() = at::Tensor();
}

std::vector<std::pair<std::string, at::Tensor>> TrainerOptimizer::CheckpointState() const {
  std::vector<std::pair<std::string, at::Tensor>> state = adam_->StateTensors();
  if (stage_ != 2) return state;
  torch::NoGradGuard no_grad;
  const int ranks = dp_->size();
  for (auto& [key, t] : state) {
    const at::Tensor& p = all_[index_.at(ParamOfKey(key))].param;
    const auto s = parallel::FlatShard::Of(p.numel(), ranks, my_rank_);
    at::Tensor padded = torch::zeros({s.chunk}, t.options());
    padded.narrow(0, 0, s.owned()).copy_(t);
    t = dp_->AllGather(padded).narrow(0, 0, s.numel).view(p.sizes());
  }
  return state;
}

std::vector<std::pair<std::string, at::Tensor>> TrainerOptimizer::CheckpointShapes() const {
  std::vector<std::pair<std::string, at::Tensor>> state = adam_->StateTensors();
  if (stage_ != 2) return state;
  for (auto& [key, t] : state) t = all_[index_.at(ParamOfKey(key))].param;
  return state;
}

bool TrainerOptimizer::WritesCheckpointState(const std::string& param) const {
  if (stage_ == 1) return owner_.at(param) == my_rank_;
  if (stage_ == 2) return static_cast<int>(index_.at(param) % static_cast<size_t>(dp_->size())) == my_rank_;
  return true;
}

Status TrainerOptimizer::LoadCheckpointState(const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                                             int64_t step) {
  if (stage_ != 2) return adam_->LoadStateTensors(tensors, step);
  std::vector<std::pair<std::string, at::Tensor>> owned;
  for (const auto& [key, t] : tensors) {
    auto it = index_.find(ParamOfKey(key));
    if (it == index_.end()) continue;
    const at::Tensor& p = all_[it->second].param;
    if (t.numel() != p.numel()) {
      return DataLossError("optimizer state '" + key + "' has " + std::to_string(t.numel()) + " elements, " +
                           "its parameter " + std::to_string(p.numel()));
    }
    const auto s = parallel::FlatShard::Of(p.numel(), dp_->size(), my_rank_);
    owned.emplace_back(key, t.reshape({-1}).narrow(0, s.begin, s.owned()));
  }
  return adam_->LoadStateTensors(owned, step);
}

double ClipShardedGradNorm(const Runtime& rt, const TrainerOptimizer& opt,
                           const std::vector<model::ParamLayout>& layouts, double max_norm) {
  const auto& shards = opt.grad_params();
  std::vector<optim::TrainableParam> counted;
  for (size_t i = 0; i < shards.size(); ++i) {
    if (parallel::CountsOnce(layouts[i], rt.tp_rank, rt.dims.tp()) && !rt.IsTiedDuplicate(shards[i].name)) {
      counted.push_back(shards[i]);
    }
  }
  const double norm = std::sqrt(rt.SumOverWorld(optim::GradNormSquared(counted), /*contribute=*/true));
  if (max_norm > 0 && std::isfinite(norm)) {
    const double coef = std::min(1.0, max_norm / (norm + 1e-6));
    if (coef < 1.0) optim::ScaleGrads(shards, coef);
  }
  return norm;
}

}  // namespace anneal::train
