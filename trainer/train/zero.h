// The trainer's optimizer over this rank's trainable parameters, by ZeRO stage over the data-parallel group:
//
//   0  AdamW over every parameter; gradients all-reduced before Step.
//   1  each data-parallel rank keeps AdamW state (moments and fp32 master weights) only for the parameters it
//      owns and updates only those; after the step every owner broadcasts its updated parameters. Ownership is
//      dealt out whole parameters at a time, largest first, to the least loaded rank (as
//      torch.distributed.optim.ZeroRedundancyOptimizer does), so every replica computes the same assignment.
//   2  ownership by flat range (parallel::FlatShard: rank r owns chunk r of every parameter): the gradient
//      reducer reduce-scatters into the shard tensors (grad_params(): 1-D views of each parameter's owned range,
//      holding the summed gradient), AdamW runs on the shards (fp32 master of the shard), and the parameters are
//      all-gathered after the step in buckets of `allgather_bucket_bytes` (stage 1's broadcasts are bucketed
//      the same way).
//   3  as 2, and the trainable parameters of each decoder layer (a "unit": model.layers.<i>.*) are stored only
//      as this rank's flat shard (FSDP's scheme): the shard is a tensor of its own, and the full parameter keeps
//      its shape but no storage (0 bytes) except while its layer computes. LayerUseHook() (installed with
//      CausalLM::SetLayerUseHook) all-gathers a layer's parameters right before its forward and again before the
//      recomputation in its backward, and frees them right after each; the gradients are reduce-scattered into
//      the shards as under stage 2. The decoder checkpoints every layer under the hook (backward recomputes the
//      layer: one more forward per layer and step, as activation checkpointing). Trainable parameters outside
//      decoder layers (embedding, final norm, lm_head, a value head) form the root unit, sharded the same way
//      and gathered for a whole step (GatherRoot before it; Step frees it) and around an evaluation, as FSDP
//      keeps its root module gathered through forward and backward. Frozen parameters (a LoRA or QLoRA base)
//      stay replicated. With SetPrefetch(true) the gather of a decoder layer also starts the next layer's (the
//      next in the direction the layers are going: ascending in forward, descending in backward; from the
//      stage's first layer up, from its last down) as an asynchronous collective that runs while the current
//      layer computes, so at most two layers are gathered at once; the next GatherLayer of that layer waits for
//      it and writes it in, and a gather of another layer first drops it (freed, gathered again when asked).
//      The prefetch is an asynchronous all-gather (Comm::AllGatherAsync) of the same buckets as a synchronous
//      gather, so both give the same values.
//
// CPU offload (`offload`, DeepSpeed's offload_optimizer / offload_param with device cpu): AdamW runs over host
// copies of the tensors this rank updates (pinned when the device is CUDA; distinct tensors on a CPU device too,
// so CPU runs take the same path): its moments and fp32 masters live in host memory; Step copies the (reduced,
// clipped) gradients to the host, steps there and copies the updated values back to the device tensors (the
// parameters, or stage 2/3's shards, all-gathered as above). kOptimizerAndParams under stage 3 keeps stage 3's
// shards themselves on the host (no device copy): each gather copies them to the device, and the step updates
// them in place. Below stage 3 it is kOptimizer.
//
// With one data-parallel rank every stage is stage 0 (offload still applies). Checkpoints hold full per-parameter state
// whatever the stage (CheckpointState gathers it; LoadCheckpointState takes it back), so any stage resumes any other.
//
// Thread-safety: one thread at a time; Step (stages 1 to 3), CheckpointStateOf (stages 2 and 3), FullParam and
// GatherAllLayers (stage 3) and the layer hook are collectives over the data-parallel group.
//
// Example:
//   TrainerOptimizer opt(params, adamw, dp_comm, /*stage=*/2, 64 << 20);
//   GradientReducer reducer(params, dp_comm, 64 << 20, opt.sharded_grads() ? &opt.grad_params() : nullptr);
//   ... backward, reducer.Finish(), clip over opt.grad_params() ...; opt.Step(lr); opt.ZeroGrad();
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "trainer/model/linear.h"
#include "trainer/optim/adamw.h"
#include "trainer/parallel/comm.h"

namespace anneal::train {

struct Runtime;

enum class Offload { kNone, kOptimizer, kOptimizerAndParams };

// resources.offload's spelling: "none", "optimizer", "optimizer+params".
Offload OffloadOf(const std::string& name);

class TrainerOptimizer {
 public:
  // `dp` may be null (one replica); `stage` is the ZeRO stage (0 to 3). Under stage 3 the decoder layers'
  // trainable parameters are freed on return (they must each own their storage, else they are copied first).
  TrainerOptimizer(std::vector<optim::TrainableParam> params, optim::AdamWOptions options, parallel::Comm* dp,
                   int stage, int64_t allgather_bucket_bytes = int64_t{64} << 20, Offload offload = Offload::kNone);
  ~TrainerOptimizer();  // waits for a prefetch still in flight
  TrainerOptimizer(const TrainerOptimizer&) = delete;
  TrainerOptimizer& operator=(const TrainerOptimizer&) = delete;

  void Step(double lr);
  void ZeroGrad();
  int64_t step_count() const { return adam_->step_count(); }
  // The stage in effect (0 with one data-parallel rank).
  int stage() const { return stage_; }
  // Stages 2 and 3: gradients live in the shards (grad_params), not in the parameters.
  bool sharded_grads() const { return stage_ >= 2; }
  // Stage 3: decoder layers' trainable parameters live in the shards, gathered only while their layer computes.
  bool shards_parameters() const { return stage_ == 3; }
  // Stage 3: for CausalLM::SetLayerUseHook; gathers / frees layer `layer`'s sharded parameters (no-op for a layer
  // without any, and when already in that state). A collective over data parallel. Null below stage 3.
  std::function<void(int64_t layer, bool in_use)> LayerUseHook();
  // Stage 3: whether a layer's gather starts the next layer's (above). Off by default; the trainer turns it on.
  void SetPrefetch(bool on) { prefetch_ = on && stage_ == 3; }
  // Stage 3: decoder-layer gathers so far, and how many of them found their layer prefetched.
  int64_t layer_gathers() const { return layer_gathers_; }
  int64_t prefetched_gathers() const { return prefetched_gathers_; }
  // Parameter collectives so far (one per gather bucket: stage 1's broadcasts, stage 2/3's all-gathers and
  // prefetches), which the gather bucket size steers.
  int64_t gather_collectives() const { return gather_collectives_; }
  // Stage 3: gathers every unit, the root included (before an export that reads the module's parameters) /
  // frees them again. Collectives; no-ops below stage 3.
  void GatherAllLayers();
  void FreeAllLayers();
  // Stage 3: gathers / frees the root unit (for the step and for an evaluation). Collectives; no-ops below.
  void GatherRoot() { GatherLayer(-1); }
  void FreeRoot() { FreeLayer(-1); }
  // The full value of trainable parameter `name` (its shape): the parameter itself, or under stage 3 for a
  // sharded one a new tensor all-gathered from the shards (a collective: every data-parallel rank calls it).
  at::Tensor FullParam(const std::string& name) const;
  // Whether `name` is one of the trainable parameters this optimizer was made with.
  bool Holds(const std::string& name) const { return index_.count(name) > 0; }
  // Sets trainable parameter `name` from its full value (`full` has its shape): under stage 3 a sharded one
  // keeps only its owned range. No collective.
  void SetParam(const std::string& name, const at::Tensor& full);
  // Device bytes of the shards that are the home of stage 3's parameters (0 below stage 3 and when offloaded).
  int64_t ShardedParamBytes() const;
  // Host bytes under CPU offload: the optimizer state, the host copies it updates (stage 3's shards under
  // kOptimizerAndParams). 0 without offload.
  int64_t HostBytes() const;
  Offload offload() const { return offload_; }
  // Where the step's gradients are after the data-parallel reduction, aligned with the constructor's params:
  // the parameters themselves, or under stage 2 their owned ranges (1-D, named as the parameter).
  const std::vector<optim::TrainableParam>& grad_params() const { return sharded_grads() ? shards_ : all_; }
  // The tensor-parallel layouts of grad_params(): the parameters' own, or under stage 2 the same pieces cut
  // along dim 0 of the 1-D shard (every tensor-parallel rank owns the same range of its piece).
  std::vector<model::ParamLayout> GradLayouts(const std::vector<model::ParamLayout>& layouts) const;
  // This rank's state as AdamW names it (exp_avg.<param>, exp_avg_sq.<param>, master.<param>): owned
  // parameters (stage 1) or owned ranges (stages 2 and 3). What this rank holds in memory.
  std::vector<std::pair<std::string, at::Tensor>> StateTensors() const { return adam_->StateTensors(); }
  // One of StateTensors() (`key`, this rank's `local` tensor) shaped as its parameter for a checkpoint: `local`
  // for stages 0 and 1 (on the parameter's device: an offloaded state lives on the host, and the caller gathers
  // over tensor parallel), gathered over data parallel under stages 2 and 3 (a collective: every data-parallel rank
  // calls it for the same key, in StateTensors() order). One tensor at a time, so a save never holds the whole
  // gathered state.
  at::Tensor CheckpointStateOf(const std::string& key, const at::Tensor& local) const;
  // For every state tensor this rank keeps: its key and a tensor of the checkpointed shape (no collective; a
  // stage 3 parameter, freed, has its shape but no bytes: only shapes and devices may be read).
  std::vector<std::pair<std::string, at::Tensor>> CheckpointShapes() const;
  // Whether this rank writes `param`'s state into its checkpoint file: its owner under stage 1, one rank per
  // parameter (round robin over data parallel) under stage 2, always under stage 0 (only replica 0 writes).
  bool WritesCheckpointState(const std::string& param) const;
  // Loads state shaped as CheckpointStateOf's (stages 2 and 3 keep their owned range of each).
  Status LoadCheckpointState(const std::vector<std::pair<std::string, at::Tensor>>& tensors, int64_t step);

 private:
  at::Tensor GatherShard(const at::Tensor& owned, const at::Tensor& p, const at::TensorOptions& options) const;
  void AssignWholeParameters();
  // `indices` (into all_) grouped for the gathers: one dtype per bucket, at most allgather_bucket_bytes_ each
  // (a bigger parameter alone), in order.
  std::vector<std::vector<size_t>> GatherBuckets(const std::vector<size_t>& indices) const;
  // All-gathers all_[i] for i in `indices` from shards_[i] (the parameters must have storage).
  void AllGatherInto(const std::vector<size_t>& indices) const;
  void GatherLayer(int64_t layer);
  void FreeLayer(int64_t layer);
  // Prefetch: starts layer `layer`'s gather (its parameters allocated, the collectives in flight) / waits for the
  // one in flight and writes it into its parameters (`keep`) or frees them again.
  void StartPrefetch(int64_t layer);
  void FinishPrefetch(bool keep);
  // Offload: the gradients of updated_ to the host tensors' .grad(), and after the step the values back.
  void GradsToHost();
  void ValuesToDevice();

  std::vector<optim::TrainableParam> all_;
  std::vector<optim::TrainableParam> shards_;            // stages 2 and 3: owned range of all_[i]
  std::vector<size_t> root_;                             // stage 2: all_ indices (each shard a view of its parameter)
  std::map<int64_t, std::vector<size_t>> layer_params_;  // stage 3: unit (layer, -1 root) -> its all_ indices
  std::map<int64_t, bool> layer_gathered_;               // stage 3
  std::map<std::string, size_t> index_;                  // parameter name -> position in all_
  std::map<std::string, int> owner_;                     // stage 1
  std::vector<optim::TrainableParam> updated_;   // the device tensors the step updates (all_, stage 1's, shards_)
  std::vector<optim::TrainableParam> host_;      // offload: AdamW's tensors, host copies of updated_ (or shards_)
  std::map<std::string, size_t> updated_index_;  // parameter name -> position in updated_ / host_
  std::unique_ptr<optim::AdamW> adam_;
  parallel::Comm* dp_;
  int stage_ = 0;
  int64_t allgather_bucket_bytes_;
  Offload offload_ = Offload::kNone;
  // Stage 3 prefetch.
  struct InFlightBucket {
    std::vector<size_t> indices;  // all_ indices
    std::vector<int64_t> offset;  // each one's chunk in a rank's row
    at::Tensor local;             // [per_rank]: this rank's chunks, being sent
    at::Tensor rows;              // [ranks, per_rank], being all-gathered
    std::function<void()> wait;
  };
  bool prefetch_ = false;
  int64_t prefetching_ = -1;  // the layer in flight, -1: none
  std::vector<InFlightBucket> in_flight_;
  int64_t last_layer_ = -1;  // the last decoder layer gathered (the direction of the next)
  int64_t layer_gathers_ = 0, prefetched_gathers_ = 0;
  mutable int64_t gather_collectives_ = 0;
  int my_rank_ = 0;
};

// The data-parallel bucket sizes in bytes. `reduce_elements` / `gather_elements` are resources.reduce_bucket_size
// / gather_bucket_size (DeepSpeed's elements; -1: "auto", resolved from `hidden_size` as HF's deepspeed
// integration fills it: reduce hidden^2, stage 3's prefetch (gather) 0.9 x hidden^2, stage 1/2's allgather
// hidden^2), times `element_size` (the trainable parameters' and their gradients'); 0 takes ddp_bucket_cap_mb
// (`bucket_cap_mb` MiB). Never below one byte.
struct BucketBytes {
  int64_t reduce = 1;
  int64_t gather = 1;
};
BucketBytes ResolveBucketBytes(int64_t reduce_elements, int64_t gather_elements, double bucket_cap_mb, int stage,
                               int64_t hidden_size, int64_t element_size);

// The ZeRO-3 unit of a parameter named as HF names it: the decoder layer index of "model.layers.<i>.*", or -1
// (the root unit: embedding, final norm, lm_head, anything else).
int64_t ZeroThreeUnitOf(const std::string& name);

// Runtime::ClipGradNorm over stage 2's shards: every data-parallel rank contributes the squares of its owned
// ranges (each element of a replica counted once), summed over the world, so the norm equals the unsharded one;
// clips the shard gradients by torch.nn.utils.clip_grad_norm_'s coefficient (max_norm 0: no clipping). A
// collective over the world group. `layouts` are opt.GradLayouts(...).
double ClipShardedGradNorm(const Runtime& rt, const TrainerOptimizer& opt,
                           const std::vector<model::ParamLayout>& layouts, double max_norm);

}  // namespace anneal::train
