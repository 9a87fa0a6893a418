// PEFT interchange: LoRA adapters in peft's format (adapter_config.json + adapter_model.safetensors, keys
// "base_model.model.<module>.lora_A.weight"), and merged full models in HF format.
//
// An exported adapter loads in peft unchanged (PeftModel.from_pretrained); an adapter written by peft loads
// here (adapter_name_or_path) to continue training or to evaluate.
//
// Thread-safety: one thread at a time (touches the model).
//
// Example:
//   RETURN_IF_ERROR(ExportPeftAdapter(lm, "/out", "/models/base"));
//   RETURN_IF_ERROR(ExportMergedModel(lm, "/out/merged", "/models/base"));
#pragma once

#include <map>
#include <string>
#include <vector>

#include "common/status.h"
#include "trainer/model/decoder.h"

namespace anneal::train {

struct PeftAdapter {
  model::LoraOptions options;
  std::vector<std::string> target_modules;
  std::vector<std::string> modules_to_save;   // trained in full, their weights in `weights` by HF name
  std::map<std::string, at::Tensor> weights;  // module name ("model.layers.0.self_attn.q_proj") + ".lora_A.weight"
  std::string source;
};

StatusOr<PeftAdapter> LoadPeftAdapter(const std::string& dir);
// Copies the adapter's weights into the model's LoRA layers (enabled beforehand with the adapter's options).
Status ApplyPeftWeights(model::CausalLM& lm, const PeftAdapter& adapter);
// Writes adapter_config.json and adapter_model.safetensors into `dir`.
Status ExportPeftAdapter(model::CausalLM& lm, const std::string& dir, const std::string& base_model);
// The same from full tensors named "<module>.lora_A.weight" / "<module>.lora_B.weight" (other names ignored).
Status WritePeftAdapter(const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                        const model::LoraOptions& options, const std::string& dir, const std::string& base_model);
// Merges LoRA into the base weights (if any), writes config.json + sharded safetensors + the tokenizer files of
// `base_model` into `dir`, then unmerges again so training state is untouched.
Status ExportMergedModel(model::CausalLM& lm, const std::string& dir, const std::string& base_model,
                         uint64_t max_shard_bytes = 5ull << 30);
// The same from full HF-named tensors (LoRA already merged).
Status WriteMergedModel(const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                        const model::ModelConfig& config, const std::string& dir, const std::string& base_model,
                        uint64_t max_shard_bytes = 5ull << 30);
// Copies tokenizer files (tokenizer.json, tokenizer_config.json, ...) that exist in `from` into `to`.
Status CopyTokenizerFiles(const std::string& from, const std::string& to);

}  // namespace anneal::train
