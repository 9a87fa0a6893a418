// MergeAndExport: what `anneal-train export` does, given on the command line (--model/--adapter/--out) or as an
// export job's spec (kind: export, LLaMA-Factory's `llamafactory-cli export` config).
//
// The adapter decides what is merged:
//   - empty: the base model is written again (re-sharded; its tokenizer copied);
//   - a PEFT adapter directory (adapter_config.json), including the PEFT copy a LoRA checkpoint-N carries: the
//     LoRA weights are merged into the base weights (W + B A * alpha / r), as peft's merge_and_unload;
//   - a checkpoint-N of a full or freeze run (manifest.json, any parallel layout): its trained tensors replace the
//     base model's.
// The output is an HF model directory: config.json, model*.safetensors shards of at most max_shard_bytes (with
// model.safetensors.index.json when there are several), and the base model's tokenizer files.
//
// Errors: INVALID_ARGUMENT when the output directory is (or lies inside, or contains) the base model or the
// adapter directory, which the export would overwrite while reading; an adapter that is neither form; a tensor
// that does not fit the base model (named, with both shapes). Files missing or corrupt: the loaders' errors.
//
// Thread-safety: one export per process (it uses LibTorch on the CPU).
//
// Example:
//   ASSIGN_OR_RETURN(std::string what, MergeAndExport({.model = "/m", .adapter = "/out/run", .out = "/out/merged"}));
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"
#include "jobspec/jobspec.h"

namespace anneal::train {

struct ExportRequest {
  std::string model;                         // base HF model directory
  std::string adapter;                       // "", a PEFT adapter directory, or a checkpoint-N directory
  std::string out;                           // the HF model directory written
  uint64_t max_shard_bytes = 5'000'000'000;  // LLaMA-Factory's export_size 5 (GB)
};

// The request an export job's spec makes (export_size GB = size_gb * 10^9 bytes, as transformers reads "5GB").
ExportRequest ExportRequestFor(const jobspec::JobSpec& spec);

// Writes the model; returns what was written ("merged model written to /abs/out").
StatusOr<std::string> MergeAndExport(const ExportRequest& request);

}  // namespace anneal::train
