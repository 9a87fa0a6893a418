// Runtime: where and how this trainer process runs — rank and world from torchrun's environment, the parallel
// layout (ParallelDims), the device and dtype, and the collectives the training loop needs. With WORLD_SIZE 1
// every collective is a no-op.
//
// Thread-safety: one thread at a time.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "common/status.h"
#include "jobspec/jobspec.h"
#include "trainer/optim/adamw.h"
#include "trainer/parallel/comm.h"
#include "trainer/parallel/dims.h"

namespace anneal::train {

// "auto" (CUDA when available), "cpu" or "cuda" as a device. `option` names the setting in errors
// ("train.device", "--device"); with several visible GPUs, `local_rank` picks one (torchrun's convention).
StatusOr<torch::Device> ResolveDevice(const std::string& name, const std::string& option, int local_rank = 0);
// The compute dtype a job asks for: bf16, fp16, else fp32.
torch::ScalarType ComputeDtype(const jobspec::TrainSpec& train);

struct Runtime {
  int rank = 0, world = 1, local_rank = 0;
  int dp = 1, dp_rank = 0;
  parallel::ParallelDims dims;
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat32;
  std::string config_hash;
  std::shared_ptr<parallel::StoreHandle> store;
  std::shared_ptr<parallel::Comm> world_comm, dp_comm;

  // Reads RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT, validates the layout against the model's
  // config.json, picks the device (train.device) and dtype (bf16 / fp16 / fp32), and forms the groups.
  static StatusOr<Runtime> FromEnvironment(const jobspec::JobSpec& spec);

  int64_t ReduceSum(int64_t v) const;
  double ReduceSumDouble(double v) const;       // over data parallel
  double ReduceMeanDouble(double v) const;      // over data parallel
  // Sums gradients across data-parallel replicas (the loss is already normalised by the global token count).
  void ReduceGradients(const std::vector<optim::TrainableParam>& params) const;
  void Barrier() const;
  nlohmann::json LayoutJson() const;
};

}  // namespace anneal::train
