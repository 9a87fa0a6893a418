#include "trainer/train/zero.h"

#include <c10/core/CPUAllocator.h>
#include <c10/core/StorageImpl.h>
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

// ZeRO-3's free and gather: the parameter keeps its TensorImpl (autograd's accumulator, the reducer's hooks and
// the module all refer to it) and its shape; only the bytes of its storage go (FSDP1's storage resize to 0).
void ReleaseStorage(const at::Tensor& p) {
  c10::StorageImpl* s = p.storage().unsafeGetStorageImpl();
  s->set_data_ptr_noswap(c10::DataPtr(nullptr, p.device()));
  s->set_nbytes(0);
}

void AllocateStorage(const at::Tensor& p) {
  c10::StorageImpl* s = p.storage().unsafeGetStorageImpl();
  const size_t bytes = static_cast<size_t>(p.numel()) * p.element_size();
  c10::Allocator* allocator = s->allocator() != nullptr ? s->allocator() : c10::GetAllocator(p.device().type());
  s->set_data_ptr_noswap(allocator->allocate(bytes));
  s->set_nbytes(bytes);
}

// Whether `p` is the only tensor of its storage, all of it: freeing that storage frees exactly `p`.
bool OwnsWholeStorage(const at::Tensor& p) {
  return p.is_contiguous() && p.storage_offset() == 0 &&
         p.storage().nbytes() == static_cast<size_t>(p.numel()) * p.element_size() && p.storage().use_count() == 1;
}

// A host tensor holding `t`'s value: pinned when `t` is on a CUDA device (fast, asynchronous copies), a distinct
// tensor even when `t` is on the CPU (so CPU runs take the offload path as GPU runs do).
at::Tensor HostCopy(const at::Tensor& t) {
  at::Tensor h = at::empty(t.sizes(), t.options().device(at::kCPU).pinned_memory(t.is_cuda()));
  h.copy_(t.detach());
  return h;
}

}  // namespace

Offload OffloadOf(const std::string& name) {
  if (name == "optimizer") return Offload::kOptimizer;
  if (name == "optimizer+params") return Offload::kOptimizerAndParams;
  return Offload::kNone;
}

BucketBytes ResolveBucketBytes(int64_t reduce_elements, int64_t gather_elements, double bucket_cap_mb, int stage,
                               int64_t hidden_size, int64_t element_size) {
  const int64_t cap = static_cast<int64_t>(bucket_cap_mb * (1 << 20));
  const auto bytes = [&](int64_t elements, double auto_factor) {
    if (elements == 0) return std::max<int64_t>(1, cap);
    if (elements == -1) elements = static_cast<int64_t>(auto_factor * static_cast<double>(hidden_size * hidden_size));
    return std::max<int64_t>(1, elements * element_size);
  };
  return {.reduce = bytes(reduce_elements, 1.0), .gather = bytes(gather_elements, stage == 3 ? 0.9 : 1.0)};
}

int64_t ZeroThreeUnitOf(const std::string& name) {
  static const std::string kPrefix = "model.layers.";
  if (name.rfind(kPrefix, 0) != 0) return -1;
  size_t end = kPrefix.size();
  while (end < name.size() && std::isdigit(static_cast<unsigned char>(name[end]))) ++end;
  if (end == kPrefix.size() || end >= name.size() || name[end] != '.') return -1;
  return std::stoll(name.substr(kPrefix.size(), end - kPrefix.size()));
}

TrainerOptimizer::TrainerOptimizer(std::vector<optim::TrainableParam> params, optim::AdamWOptions options,
                                   parallel::Comm* dp, int stage, int64_t allgather_bucket_bytes, Offload offload)
    : all_(std::move(params)),
      dp_(dp),
      stage_(dp != nullptr && dp->size() > 1 ? std::clamp(stage, 0, 3) : 0),
      allgather_bucket_bytes_(std::max<int64_t>(1, allgather_bucket_bytes)),
      offload_(offload) {
  my_rank_ = stage_ > 0 ? dp_->rank() : 0;
  if (offload_ == Offload::kOptimizerAndParams && stage_ != 3) offload_ = Offload::kOptimizer;
  for (size_t i = 0; i < all_.size(); ++i) index_[all_[i].name] = i;
  if (stage_ >= 2) {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < all_.size(); ++i) {
      auto& p = all_[i];
      TORCH_CHECK(p.param.is_contiguous(), "ZeRO-", stage_, " needs contiguous parameters; ", p.name, " is not");
      const auto s = parallel::FlatShard::Of(p.param.numel(), dp_->size(), my_rank_);
      if (stage_ == 2) {
        // A view of the parameter's storage: the step updates the owned range in place.
        shards_.push_back({p.name, p.param.detach().view({-1}).narrow(0, s.begin, s.owned()), p.decay, p.lr_scale});
        root_.push_back(i);
        continue;
      }
      // Freed below: the parameter must not share its storage (a loader's buffer, another view).
      if (!OwnsWholeStorage(p.param)) p.param.set_data(p.param.detach().clone());
      // Offloaded parameters: the shard lives on the host only (the gather copies it to the device).
      at::Tensor owned = p.param.detach().view({-1}).narrow(0, s.begin, s.owned());
      shards_.push_back(
          {p.name, offload_ == Offload::kOptimizerAndParams ? HostCopy(owned) : owned.clone(), p.decay, p.lr_scale});
      const int64_t unit = ZeroThreeUnitOf(p.name);  // -1: the root unit
      layer_params_[unit].push_back(i);
      layer_gathered_[unit] = true;
    }
    updated_ = shards_;
  } else {
    AssignWholeParameters();
    for (const auto& p : all_) {
      if (owner_[p.name] == my_rank_) updated_.push_back(p);
    }
  }
  for (size_t i = 0; i < updated_.size(); ++i) updated_index_[updated_[i].name] = i;
  if (offload_ == Offload::kOptimizerAndParams) {
    host_ = updated_;  // the shards are host tensors already
  } else if (offload_ == Offload::kOptimizer) {
    for (const auto& p : updated_) host_.push_back({p.name, HostCopy(p.param), p.decay, p.lr_scale});
  }
  adam_ = std::make_unique<optim::AdamW>(offload_ == Offload::kNone ? updated_ : host_, options);
  if (stage_ == 3) FreeAllLayers();
}

TrainerOptimizer::~TrainerOptimizer() {
  if (prefetching_ >= 0) FinishPrefetch(/*keep=*/false);
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

void TrainerOptimizer::GradsToHost() {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < updated_.size(); ++i) {
    const at::Tensor grad = updated_[i].param.grad();
    host_[i].param.mutable_grad() = grad.defined() ? HostCopy(grad) : at::Tensor();
  }
}

void TrainerOptimizer::ValuesToDevice() {
  if (offload_ != Offload::kOptimizer) return;  // kOptimizerAndParams: the shards are the host tensors
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < updated_.size(); ++i) updated_[i].param.copy_(host_[i].param, /*non_blocking=*/true);
}

void TrainerOptimizer::Step(double lr) {
  if (offload_ != Offload::kNone) GradsToHost();
  adam_->Step(lr);
  ValuesToDevice();
  if (stage_ == 2) return AllGatherInto(root_);
  // Stage 3: every unit is gathered when it next computes; the root, gathered for the step, is stale now.
  if (stage_ == 3) return FreeLayer(-1);
  if (stage_ != 1) return;
  // Each owner broadcasts its updated parameters, one flat tensor per (owner, gather bucket).
  torch::NoGradGuard no_grad;
  for (int owner = 0; owner < dp_->size(); ++owner) {
    std::vector<size_t> owned;
    for (size_t i = 0; i < all_.size(); ++i) {
      if (owner_[all_[i].name] == owner) owned.push_back(i);
    }
    for (const auto& bucket : GatherBuckets(owned)) {
      std::vector<at::Tensor> list;
      for (size_t i : bucket) list.push_back(all_[i].param);
      at::Tensor flat = parallel::Flatten(list);
      ++gather_collectives_;
      dp_->Broadcast(flat, owner);
      if (owner != my_rank_) parallel::CopyFromFlat(flat, list);
    }
  }
}

std::vector<std::vector<size_t>> TrainerOptimizer::GatherBuckets(const std::vector<size_t>& indices) const {
  std::map<at::ScalarType, size_t> open;  // dtype -> its bucket being filled
  std::map<at::ScalarType, int64_t> bytes;
  std::vector<std::vector<size_t>> buckets;
  for (size_t i : indices) {
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
  return buckets;
}

// Buckets of one dtype and at most allgather_bucket_bytes_ of parameters, laid out rank-major (FlatShard): each
// rank contributes its owned chunks, every rank gets every chunk back. Written through variable_data() (a
// fresh version counter): no autograd graph sees the parameter change.
void TrainerOptimizer::AllGatherInto(const std::vector<size_t>& indices) const {
  torch::NoGradGuard no_grad;
  const int ranks = dp_->size();
  for (const auto& bucket : GatherBuckets(indices)) {
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
    ++gather_collectives_;
    at::Tensor gathered = dp_->AllGather(local).view({ranks, per_rank});
    for (size_t k = 0; k < bucket.size(); ++k) {
      at::Tensor p = all_[bucket[k]].param.variable_data();
      const auto s = parallel::FlatShard::Of(p.numel(), ranks, my_rank_);
      p.view({-1}).copy_(gathered.narrow(1, offset[k], s.chunk).reshape({-1}).narrow(0, 0, s.numel));
    }
  }
}

std::function<void(int64_t, bool)> TrainerOptimizer::LayerUseHook() {
  if (stage_ != 3) return nullptr;
  return [this](int64_t layer, bool in_use) { in_use ? GatherLayer(layer) : FreeLayer(layer); };
}

void TrainerOptimizer::GatherLayer(int64_t layer) {
  auto it = layer_params_.find(layer);
  if (it == layer_params_.end() || layer_gathered_[layer]) return;
  if (prefetching_ >= 0) FinishPrefetch(/*keep=*/prefetching_ == layer);
  if (layer >= 0) ++layer_gathers_;
  if (!layer_gathered_[layer]) {
    for (size_t i : it->second) AllocateStorage(all_[i].param);
    AllGatherInto(it->second);
    layer_gathered_[layer] = true;
  } else {
    ++prefetched_gathers_;
  }
  if (!prefetch_ || layer < 0) return;
  // The next layer in the direction the layers are going (onwards from the last one gathered); the same layer
  // again turns round: a backward starts where its forward ended, the next forward where a backward ended (up
  // from the stage's first decoder layer).
  const int64_t first = layer_params_.upper_bound(-1)->first;
  const int64_t step = layer > last_layer_ ? 1 : layer < last_layer_ ? -1 : (layer == first ? 1 : -1);
  last_layer_ = layer;
  const int64_t next = layer + step;
  if (next >= 0 && layer_params_.count(next) && !layer_gathered_[next]) StartPrefetch(next);
}

void TrainerOptimizer::StartPrefetch(int64_t layer) {
  torch::NoGradGuard no_grad;
  const int ranks = dp_->size();
  const std::vector<size_t>& indices = layer_params_.at(layer);
  for (size_t i : indices) AllocateStorage(all_[i].param);
  for (auto& bucket : GatherBuckets(indices)) {
    InFlightBucket b;
    b.indices = std::move(bucket);
    in_flight_.push_back(std::move(b));
  }
  for (InFlightBucket& b : in_flight_) {
    int64_t per_rank = 0;
    for (size_t i : b.indices) {
      b.offset.push_back(per_rank);
      per_rank += parallel::FlatShard::Of(all_[i].param.numel(), ranks, my_rank_).chunk;
    }
    const auto options = all_[b.indices.front()].param.options();
    b.local = torch::zeros({per_rank}, options);  // the last rank's short chunks padded with zeros
    for (size_t k = 0; k < b.indices.size(); ++k) {
      const at::Tensor& s = shards_[b.indices[k]].param;
      b.local.narrow(0, b.offset[k], s.numel()).copy_(s);
    }
    b.rows = torch::empty({ranks, per_rank}, options);
    at::Tensor flat = b.rows.view({-1});
    ++gather_collectives_;
    b.wait = dp_->AllGatherAsync(b.local, flat);
  }
  prefetching_ = layer;
}

void TrainerOptimizer::FinishPrefetch(bool keep) {
  torch::NoGradGuard no_grad;
  const int ranks = dp_->size();
  for (InFlightBucket& b : in_flight_) {
    b.wait();
    if (!keep) continue;
    for (size_t k = 0; k < b.indices.size(); ++k) {
      at::Tensor p = all_[b.indices[k]].param.variable_data();
      const auto s = parallel::FlatShard::Of(p.numel(), ranks, my_rank_);
      p.view({-1}).copy_(b.rows.narrow(1, b.offset[k], s.chunk).reshape({-1}).narrow(0, 0, s.numel));
    }
  }
  in_flight_.clear();
  if (keep) {
    layer_gathered_[prefetching_] = true;
  } else {
    for (size_t i : layer_params_.at(prefetching_)) ReleaseStorage(all_[i].param);
  }
  prefetching_ = -1;
}

void TrainerOptimizer::FreeLayer(int64_t layer) {
  auto it = layer_params_.find(layer);
  if (it == layer_params_.end() || !layer_gathered_[layer]) return;
  for (size_t i : it->second) ReleaseStorage(all_[i].param);
  layer_gathered_[layer] = false;
}

void TrainerOptimizer::GatherAllLayers() {
  for (const auto& [layer, indices] : layer_params_) GatherLayer(layer);
}

void TrainerOptimizer::FreeAllLayers() {
  if (prefetching_ >= 0) FinishPrefetch(/*keep=*/false);
  for (const auto& [layer, indices] : layer_params_) FreeLayer(layer);
}

at::Tensor TrainerOptimizer::FullParam(const std::string& name) const {
  const size_t i = index_.at(name);
  const at::Tensor& p = all_[i].param;
  if (stage_ != 3) return p.detach();
  torch::NoGradGuard no_grad;
  return GatherShard(shards_[i].param, p, p.options());
}

void TrainerOptimizer::SetParam(const std::string& name, const at::Tensor& full) {
  torch::NoGradGuard no_grad;
  const size_t i = index_.at(name);
  // Offload: the host copy AdamW updates follows (the parameter, or the owned range of stage 2/3's shard).
  auto sync_host = [&] {
    auto it = updated_index_.find(name);
    if (offload_ == Offload::kOptimizer && it != updated_index_.end()) {
      host_[it->second].param.copy_(updated_[it->second].param);
    }
  };
  if (stage_ != 3) {
    all_[i].param.copy_(full);
    return sync_host();
  }
  if (prefetching_ >= 0) FinishPrefetch(/*keep=*/false);  // it would write the values from before
  const auto s = parallel::FlatShard::Of(all_[i].param.numel(), dp_->size(), my_rank_);
  shards_[i].param.copy_(full.reshape({-1}).narrow(0, s.begin, s.owned()));
  if (layer_gathered_[ZeroThreeUnitOf(name)]) all_[i].param.variable_data().copy_(full);
  sync_host();
}

int64_t TrainerOptimizer::ShardedParamBytes() const {
  int64_t bytes = 0;
  if (offload_ == Offload::kOptimizerAndParams) return 0;
  for (const auto& [layer, indices] : layer_params_) {
    for (size_t i : indices) bytes += static_cast<int64_t>(shards_[i].param.nbytes());
  }
  return bytes;
}

int64_t TrainerOptimizer::HostBytes() const {
  if (offload_ == Offload::kNone) return 0;
  int64_t bytes = 0;
  for (const auto& p : host_) bytes += static_cast<int64_t>(p.param.nbytes());
  for (const auto& [key, t] : adam_->StateTensors()) bytes += static_cast<int64_t>(t.nbytes());
  return bytes;
}

void TrainerOptimizer::ZeroGrad() {
  for (auto& p : all_) {
    if (p.param.grad().defined()) p.param.mutable_grad().zero_();
  }
  // Stage 2: the shard gradients are views of the reducer's buffers; the next reduction replaces them.
  for (auto& s : shards_) s.param.mutable_grad() = at::Tensor();
  for (auto& h : host_) h.param.mutable_grad() = at::Tensor();  // offload: the host copies of the gradients
}

at::Tensor TrainerOptimizer::CheckpointStateOf(const std::string& key, const at::Tensor& local) const {
  torch::NoGradGuard no_grad;
  const at::Tensor& p = all_[index_.at(ParamOfKey(key))].param;
  // Stages 0 and 1: whole, but on the parameter's device too, since the caller gathers it over tensor parallel.
  if (stage_ < 2) return local.to(p.device());
  // On the parameter's device (an offloaded state tensor is on the host; the collective runs on the device).
  return GatherShard(local, p, local.options().device(p.device()));
}

// A rank's flat shard of `p` (its owned range) gathered over data parallel into p's full shape, as `options`
// (dtype and device of the collective); the last rank's short chunk travels zero-padded.
at::Tensor TrainerOptimizer::GatherShard(const at::Tensor& owned, const at::Tensor& p,
                                         const at::TensorOptions& options) const {
  const auto s = parallel::FlatShard::Of(p.numel(), dp_->size(), my_rank_);
  at::Tensor padded = torch::zeros({s.chunk}, options);
  padded.narrow(0, 0, s.owned()).copy_(owned);
  return dp_->AllGather(padded).narrow(0, 0, s.numel).view(p.sizes());
}

std::vector<std::pair<std::string, at::Tensor>> TrainerOptimizer::CheckpointShapes() const {
  std::vector<std::pair<std::string, at::Tensor>> state = adam_->StateTensors();
  if (stage_ < 2) return state;
  // Only the shape and device are read (a stage 3 parameter keeps its shape while freed).
  for (auto& [key, t] : state) t = all_[index_.at(ParamOfKey(key))].param;
  return state;
}

bool TrainerOptimizer::WritesCheckpointState(const std::string& param) const {
  if (stage_ == 1) return owner_.at(param) == my_rank_;
  if (stage_ >= 2) return static_cast<int>(index_.at(param) % static_cast<size_t>(dp_->size())) == my_rank_;
  return true;
}

Status TrainerOptimizer::LoadCheckpointState(const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                                             int64_t step) {
  if (stage_ < 2) {
    RETURN_IF_ERROR(adam_->LoadStateTensors(tensors, step));
    ValuesToDevice();  // offload: the masters loaded into the host copies
    return Status::Ok();
  }
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
  RETURN_IF_ERROR(adam_->LoadStateTensors(owned, step));
  ValuesToDevice();
  return Status::Ok();
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
