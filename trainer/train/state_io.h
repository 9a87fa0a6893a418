// Layout-independent training state on disk. Files hold full tensors by their HF names, whatever the layout
// that wrote them; each is written by the rank that holds its part of the model after gathering pieces over
// the tensor-parallel group, and any layout reads them back by slicing (resharding comes for free: a run saved
// with tp2 pp2 dp2 resumes with tp1 pp4 dp2).
//
//   trainable-stage<s>.safetensors          trainable parameters of pipeline stage s (and its TrainableSet::buffers)
//   optimizer-stage<s>-dp<d>.safetensors    AdamW state of the parameters data-parallel rank d owns (every
//                                           replica under ZeRO-1, else only d = 0) and the RNG (rng.cpu, and
//                                           rng.cuda on a GPU)
//   .export-stage<s>.safetensors            a stage's part of the final export (LoRA factors, or the merged
//                                           full model), joined by rank 0 into one PEFT or HF directory
//
// With pipeline parallelism across nodes the output directory must be shared (as for Megatron-LM).
// Every Write* function is a collective over the tensor-parallel group (all its ranks call it).
//
// Thread-safety: one thread at a time.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "trainer/model/decoder.h"
#include "trainer/train/runtime.h"
#include "trainer/train/zero.h"

namespace anneal::train {

// The trainable parameters with their layouts (aligned vectors).
struct TrainableSet {
  std::vector<optim::TrainableParam> params;
  std::vector<model::ParamLayout> layouts;
  // Buffers trained without gradients that the checkpoint carries next to the parameters (whole, the same on every
  // rank that holds them): DeepSeek-V3's expert biases under full or freeze tuning (expert_bias.h).
  std::vector<std::pair<std::string, at::Tensor>> buffers;
  const model::ParamLayout& LayoutOf(const std::string& name) const;
};

TrainableSet WithLayouts(model::CausalLM& lm, std::vector<optim::TrainableParam> params);

// Writes this rank's share of a checkpoint into `dir` (see the file list above).
Status WriteTrainingState(const TrainableSet& trainable, const TrainerOptimizer& opt, const Runtime& rt,
                          const std::string& dir);
// On rank 0 before the commit: every stage's (and every ZeRO-1 shard's) files are in `dir`. A file written on
// another node but missing here means the output directory is not shared: FAILED_PRECONDITION saying so, and
// nothing is committed.
Status CheckStateFiles(const Runtime& rt, const std::string& dir);
// Loads trainable parameters and this rank's optimizer state from a checkpoint written by any layout.
Status ReadTrainingState(const TrainableSet& trainable, TrainerOptimizer& opt, const std::string& dir,
                         int64_t optimizer_steps);
// The checkpoint's trainable tensors as one list (all stages), for the PEFT copy of a LoRA checkpoint.
StatusOr<std::vector<std::pair<std::string, at::Tensor>>> ReadTrainable(const std::string& dir);

// Writes this stage's part of the final export to <out>/.export-stage<s>.safetensors: the LoRA factors and the
// weights trained in full next to them (`lora_only`; additional_target), or every weight with LoRA merged. Then
// ReadStageExports on rank 0 joins the parts (and removes them). Under ZeRO-3 (`opt` sharding the parameters)
// every data-parallel rank takes part, each sharded parameter gathered on its own (only the writing replica
// keeps them); a merged LoRA export gathers one decoder layer at a time (its sharded factors) through `opt`'s
// layer hook while that layer's merged weights are computed (the caller gathers the root unit: GatherRoot).
// ReadStageExports' tensors view the stage files' memory mappings (no copy: the files are unlinked, the mappings
// live as long as the tensors), so rank 0 writing a 70B model holds file-backed pages the kernel can evict, not
// the whole model in its own memory.
Status WriteStageExport(model::CausalLM& lm, const Runtime& rt, bool lora_only, const std::string& out,
                        TrainerOptimizer* opt = nullptr);
StatusOr<std::vector<std::pair<std::string, at::Tensor>>> ReadStageExports(const std::string& out, int stages);

}  // namespace anneal::train
