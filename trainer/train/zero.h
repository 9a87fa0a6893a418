// The trainer's optimizer over this rank's trainable parameters: AdamW over all of them, or ZeRO-1 — each
// data-parallel rank keeps AdamW state (moments and fp32 master weights) only for the parameters it owns and
// updates only those; after the step every owner broadcasts its updated parameters to the other replicas.
// Ownership is dealt out whole parameters at a time, largest first, to the least loaded rank (as
// torch.distributed.optim.ZeroRedundancyOptimizer does), so every replica computes the same assignment.
//
// Gradients must already be summed over data parallel (all-reduce) when Step runs.
//
// Thread-safety: one thread at a time; Step is a collective over the data-parallel group under ZeRO-1.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "trainer/optim/adamw.h"
#include "trainer/parallel/comm.h"

namespace anneal::train {

class TrainerOptimizer {
 public:
  // `dp` may be null (one replica); `zero` selects ZeRO-1.
  TrainerOptimizer(std::vector<optim::TrainableParam> params, optim::AdamWOptions options, parallel::Comm* dp,
                   bool zero);

  void Step(double lr);
  void ZeroGrad();
  int64_t step_count() const { return adam_->step_count(); }
  bool Owns(const std::string& name) const { return owner_.at(name) == my_rank_; }
  // The data-parallel rank that owns `name` (0 without ZeRO).
  int OwnerOf(const std::string& name) const { return owner_.at(name); }
  // This rank's state (owned parameters), named as AdamW names it: exp_avg.<param>, exp_avg_sq.<param>,
  // master.<param>.
  std::vector<std::pair<std::string, at::Tensor>> StateTensors() const { return adam_->StateTensors(); }
  Status LoadStateTensors(const std::vector<std::pair<std::string, at::Tensor>>& tensors, int64_t step) {
    return adam_->LoadStateTensors(tensors, step);
  }
  const std::vector<optim::TrainableParam>& owned() const { return adam_->params(); }

 private:
  std::vector<optim::TrainableParam> all_;
  std::map<std::string, int> owner_;
  std::unique_ptr<optim::AdamW> adam_;
  parallel::Comm* dp_;
  bool zero_;
  int my_rank_ = 0;
};

}  // namespace anneal::train
