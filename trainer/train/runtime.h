// Runtime: where and how this trainer process runs — rank and world from torchrun's environment, the parallel
// layout (ParallelDims) with a process group per axis, this rank's part of the model (its pipeline stage and
// the tensor-parallel layer factory), the device and dtype, and the reductions the training loop needs. With
// WORLD_SIZE 1 every collective is a no-op.
//
// Groups: tp (consecutive ranks), dp, pp (one rank per stage), world, and "tied" (the first and last stage of
// one pipeline, when the head is tied to the embedding: their two copies' gradients are summed); with expert
// parallelism also ep and edp (dims.h).
//
// Thread-safety: one thread at a time.
#pragma once

#include <torch/types.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"
#include "jobspec/jobspec.h"
#include "trainer/model/decoder.h"
#include "trainer/optim/adamw.h"
#include "trainer/parallel/comm.h"
#include "trainer/parallel/dims.h"
#include "trainer/train/pipeline.h"

namespace anneal::train {

// "auto" (CUDA when available), "cpu" or "cuda" as a device. `option` names the setting in errors
// ("train.device", "--device"); with several visible GPUs, `local_rank` picks one (torchrun's convention).
StatusOr<torch::Device> ResolveDevice(const std::string& name, const std::string& option, int local_rank = 0);
// The compute dtype a job asks for: bf16, fp16, else fp32.
torch::ScalarType ComputeDtype(const jobspec::TrainSpec& train);

struct Runtime {
  int rank = 0, world = 1, local_rank = 0;
  int dp = 1, dp_rank = 0, tp_rank = 0, pp_rank = 0;
  int ep = 1, ep_rank = 0, edp_rank = 0;  // expert parallelism (dims.h): ep ranks share one replica's experts
  parallel::ParallelDims dims;
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat32;
  std::string config_hash;
  bool zero = false;               // ZeRO-1
  bool sequence_parallel = false;  // activations split along the sequence between TP regions
  PipelineSchedule schedule = PipelineSchedule::kOneFOneB;
  model::StageSpec stage;                               // this rank's pipeline stage
  std::shared_ptr<const model::LinearFactory> factory;  // tensor-parallel layers (null: plain)
  bool tied_embeddings = false;
  std::shared_ptr<parallel::StoreHandle> store;
  std::shared_ptr<parallel::Comm> world_comm, dp_comm, tp_comm, pp_comm, tied_comm;
  // With ep > 1: the expert-parallel group (token all-to-all) and the expert-data-parallel group (expert
  // gradients are summed over it instead of dp_comm).
  std::shared_ptr<parallel::Comm> ep_comm, edp_comm;

  StageContext stage_context() const {
    return {pp_comm.get(), device, dtype, schedule, nullptr, sequence_parallel ? dims.tp() : 1};
  }
  // The embedding copy on the last stage of a tied pipeline: a duplicate of the first stage's.
  bool IsTiedDuplicate(const std::string& param_name) const;

  // Reads RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT, validates the layout against the model's
  // config.json, picks the device (train.device) and dtype (bf16 / fp16 / fp32), and forms the groups.
  static StatusOr<Runtime> FromEnvironment(const jobspec::JobSpec& spec);

  int64_t ReduceSum(int64_t v) const;
  // After backward and the data-parallel all-reduce (GradientReducer, overlapped with backward): partial
  // tensor-parallel gradients summed (`layouts` align with `params`), then the tied embedding's two copies.
  void SyncGradients(const std::vector<optim::TrainableParam>& params,
                     const std::vector<model::ParamLayout>& layouts) const;
  // The global gradient norm over every axis (each piece counted once), clipped to max_norm (0: no clipping).
  double ClipGradNorm(const std::vector<optim::TrainableParam>& params, const std::vector<model::ParamLayout>& layouts,
                      double max_norm) const;
  // Sum over all ranks of `v` from the ranks where `contribute` is true (e.g. the last stage's loss once per
  // data-parallel replica).
  double SumOverWorld(double v, bool contribute) const;
  // Whether `v` is true on any rank (a MAX all-reduce of one number over the world group; every rank must call
  // it at the same point). WORLD_SIZE 1: `v` itself, no collective. What the ranks agree to stop on
  // (trainer/train/preemption.h).
  bool AnyOverWorld(bool v) const;
  void Barrier() const;
  nlohmann::json LayoutJson() const;
};

}  // namespace anneal::train
