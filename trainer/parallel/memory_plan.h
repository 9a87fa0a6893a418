// MemoryPlan: the bytes one rank will hold during training, by kind, for ZeRO stages 0 to 3, computed before
// training so a job that cannot fit fails at once with the numbers instead of running out of memory mid-step.
//
//   parameters   every parameter this rank holds (its tensor / pipeline share) in the compute dtype, plus the
//                4-bit base weights under QLoRA (packed values, absmax and the double-quantized absmax) or 8-bit ones
//                (1 byte a weight and an fp32 scale a row); stage 3:
//                the sharded (trainable) parameters count only their owned chunk, plus what is gathered at
//                once (the root unit and the two largest decoder layers: one computing, the next prefetched)
//   gradients    stage 0 and 1: one per trainable element; stages 2 and 3: the owned chunks (FlatShard) plus the
//                reducer's buckets in flight (kBucketsHeld x bucket_bytes, the inputs being reduce-scattered and
//                the one filling up), with gradient accumulation too (each micro-batch is reduce-scattered into the
//                owned chunks as its backward completes a bucket)
//   optimizer    AdamW's two fp32 moments plus an fp32 master when the compute dtype is not fp32, for the elements
//                this rank updates: all (stage 0), the whole parameters dealt to it largest first to the least
//                loaded rank (stage 1, as TrainerOptimizer), its chunk of every parameter (stages 2 and 3)
//   activations  an estimate for one micro-batch: per decoder layer about 17 values per token and hidden unit
//                (Korthikanti et al. 2022's 34 bytes at 2 bytes a value, attention scores excluded: SDPA does not
//                keep them); with activation checkpointing (always under stage 3), each layer's input plus one
//                layer recomputed
//   host         CPU offload (resources.offload): the optimizer state above moves to host memory, with a host
//                copy of the elements the step updates and of their gradients (the step runs there); under
//                optimizer+params (stage 3) the owned chunks of the sharded parameters live only there too
//                (what is gathered stays on the device). total() and CheckFits count device bytes only;
//                CheckHostFits checks the host bytes of the machine's ranks against its MemAvailable.
//
// Thread-safety: plain functions of their arguments.
//
// Example:
//   MemoryPlan plan = PlanMemory(input);
//   std::cerr << plan.Describe() << "\n";
//   RETURN_IF_ERROR(plan.CheckFits(device_bytes, "cuda:0"));
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "common/status.h"
#include "trainer/parallel/flat_shard.h"

namespace anneal::parallel {

struct MemoryPlanInput {
  int stage = 0;  // ZeRO stage in effect (0 with one data-parallel rank)
  int dp = 1;     // data-parallel ranks
  int dp_rank = 0;
  int accumulation = 1;             // micro-batches per step
  int64_t held_params = 0;          // elements of every parameter this rank holds
  int64_t param_bytes = 4;          // bytes per element of the compute dtype
  int64_t quantized_bytes = 0;      // quantized base weights (QLoRA: 4-bit packed values and their absmax, or 8-bit
                                    // values, 1 byte each, and their fp32 row scales), not in held_params
  int quantized_bits = 4;           // 4 or 8
  std::vector<int64_t> trainable;   // elements of each trainable parameter, in registration order
  int64_t trainable_bytes = 4;      // bytes per element of the trainable parameters (and their gradients)
  int64_t bucket_bytes = 25 << 20;  // the reducer's bucket cap
  // Stage 3: elements of each parameter stored as a flat shard (counted in held_params as a whole), and the most
  // gathered at once: the root unit's (embedding, norm, head: the whole step) plus the two largest decoder layers'
  // (one computing, the next prefetched).
  std::vector<int64_t> sharded_params;
  int64_t largest_unit = 0;
  // Activations of one micro-batch.
  int64_t micro_rows = 1, seq_len = 0, hidden = 0, layers = 0;
  bool checkpointing = false;
  // CPU offload: the optimizer state and step on the host; `offload_params` (stage 3) the parameter shards too.
  bool offload_optimizer = false;
  bool offload_params = false;
};

struct MemoryPlan {
  static constexpr int64_t kBucketsHeld = 3;
  static constexpr int64_t kActivationValuesPerLayer = 17;  // per token and hidden unit

  int stage = 0;
  int64_t parameters = 0, gradients = 0, optimizer = 0, activations = 0;
  int64_t quantized = 0;  // the part of `parameters` held quantized (QLoRA)
  int quantized_bits = 4;
  int64_t host = 0;  // host memory under CPU offload (the optimizer state included)
  bool optimizer_on_host = false;

  // Device bytes: what must fit the device (host memory is not checked).
  int64_t total() const { return parameters + gradients + (optimizer_on_host ? 0 : optimizer) + activations; }

  static std::string MiB(int64_t bytes) {
    const int64_t tenths = (bytes * 10 + (1 << 19)) >> 20;
    return std::to_string(tenths / 10) + "." + std::to_string(tenths % 10) + " MiB";
  }
  std::string Describe() const {
    return "memory plan (ZeRO-" + std::to_string(stage) + "): parameters " + MiB(parameters) +
           (quantized > 0 ? " (" + std::to_string(quantized_bits) + "-bit base " + MiB(quantized) + ")" : "") +
           ", gradients " + MiB(gradients) + ", optimizer state " + MiB(optimizer) +
           (optimizer_on_host ? " (host)" : "") + ", activations ~" + MiB(activations) + ", total ~" + MiB(total()) +
           (host > 0 ? " on the device, host memory " + MiB(host) : "");
  }
  // OK when the plan fits `device_bytes` (0: unknown, always OK); else a FAILED_PRECONDITION naming the device,
  // both numbers and what would shrink the plan.
  Status CheckFits(int64_t device_bytes, const std::string& device) const {
    if (device_bytes <= 0 || total() <= device_bytes) return Status::Ok();
    return FailedPreconditionError(
        Describe() + " does not fit the " + MiB(device_bytes) + " of " + device +
        ": raise zero_stage (2 shards gradients and optimizer state over data parallel, 3 the parameters too), add "
        "tensor or pipeline "
        "parallel, use finetuning_type: lora, lower per_device_train_batch_size or cutoff_len, or turn on "
        "gradient_checkpointing" +
        (optimizer_on_host ? "" : " (or offload: optimizer, which moves the optimizer state to host memory)"));
  }
  // CPU offload: OK when the host bytes of the `ranks_on_host` ranks sharing this machine (each holding what this
  // plan says) fit `available_bytes` (the machine's MemAvailable; 0: unknown, always OK); else a
  // FAILED_PRECONDITION with both numbers and what would shrink them.
  Status CheckHostFits(int64_t available_bytes, int ranks_on_host, const std::string& machine) const {
    const int64_t need = host * std::max(1, ranks_on_host);
    if (available_bytes <= 0 || need <= available_bytes) return Status::Ok();
    return FailedPreconditionError(
        "CPU offload needs host memory " + MiB(host) + " a rank x " + std::to_string(std::max(1, ranks_on_host)) +
        " rank(s) on " + machine + " = " + MiB(need) + ", more than its available " + MiB(available_bytes) +
        " (MemAvailable in /proc/meminfo): raise zero_stage or the data-parallel size (each rank then keeps a "
        "smaller shard), use offload: none (or optimizer instead of optimizer+params), or run fewer ranks per node");
  }
};

// The MemAvailable figure of a /proc/meminfo text in bytes ("MemAvailable:  123 kB"), 0 when it has none.
inline int64_t MemAvailableBytes(const std::string& meminfo) {
  const std::string key = "MemAvailable:";
  const size_t at = meminfo.find(key);
  if (at == std::string::npos) return 0;
  size_t i = at + key.size();
  while (i < meminfo.size() && meminfo[i] == ' ') ++i;
  int64_t kib = 0;
  bool digits = false;
  for (; i < meminfo.size() && meminfo[i] >= '0' && meminfo[i] <= '9'; ++i, digits = true) {
    kib = kib * 10 + (meminfo[i] - '0');
  }
  return digits ? kib * 1024 : 0;
}

// The elements whose optimizer state rank `dp_rank` keeps under ZeRO-1: TrainerOptimizer's whole-parameter deal.
inline int64_t ZeroOneOwnedElements(const std::vector<int64_t>& sizes, int dp, int dp_rank) {
  std::vector<size_t> order(sizes.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return sizes[a] > sizes[b]; });
  std::vector<int64_t> load(std::max(1, dp), 0);
  for (size_t i : order) {
    auto least = std::min_element(load.begin(), load.end());
    *least += sizes[i];
  }
  return load[std::clamp(dp_rank, 0, std::max(1, dp) - 1)];
}

inline MemoryPlan PlanMemory(const MemoryPlanInput& in) {
  MemoryPlan plan;
  plan.stage = in.stage;
  int64_t held = in.held_params;
  if (in.stage == 3) {
    for (int64_t n : in.sharded_params) held += FlatShard::Of(n, in.dp, in.dp_rank).owned() - n;
    held += in.largest_unit;
  }
  plan.parameters = held * in.param_bytes + in.quantized_bytes;
  plan.quantized = in.quantized_bytes;
  plan.quantized_bits = in.quantized_bits;
  const int64_t trainable = std::accumulate(in.trainable.begin(), in.trainable.end(), int64_t{0});
  int64_t shard = 0;
  for (int64_t n : in.trainable) shard += FlatShard::Of(n, in.dp, in.dp_rank).owned();
  if (in.stage >= 2) {
    plan.gradients = std::min(trainable * in.trainable_bytes,
                              shard * in.trainable_bytes + MemoryPlan::kBucketsHeld * in.bucket_bytes);
  } else {
    plan.gradients = trainable * in.trainable_bytes;
  }
  const int64_t updated = in.stage >= 2   ? shard
                          : in.stage == 1 ? ZeroOneOwnedElements(in.trainable, in.dp, in.dp_rank)
                                          : trainable;
  const int64_t per_element = 8 + (in.trainable_bytes == 4 ? 0 : 4);  // moments, plus the fp32 master
  plan.optimizer = updated * per_element;
  if (in.offload_optimizer) {
    // The step's host side: state, a copy of the updated elements and of their gradients.
    plan.optimizer_on_host = true;
    plan.host = plan.optimizer + 2 * updated * in.trainable_bytes;
    if (in.offload_params && in.stage == 3) {
      // The owned chunks of the sharded parameters are the host copies above: they leave the device.
      int64_t owned = 0;
      for (int64_t n : in.sharded_params) owned += FlatShard::Of(n, in.dp, in.dp_rank).owned();
      plan.parameters -= owned * in.param_bytes;
    }
  }
  const int64_t per_layer = in.micro_rows * in.seq_len * in.hidden * in.param_bytes;
  // Stage 3 checkpoints every layer (its backward gathers the parameters again and recomputes).
  plan.activations = in.checkpointing || in.stage == 3 ? per_layer * (in.layers + MemoryPlan::kActivationValuesPerLayer)
                                                       : per_layer * MemoryPlan::kActivationValuesPerLayer * in.layers;
  return plan;
}

}  // namespace anneal::parallel
