// Lookups over the field table (fields.cc): spellings, sections, ignored LLaMA-Factory keys, suggestions.
#include "jobspec/schema.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <set>

#include "jobspec/values.h"

namespace anneal::jobspec {

std::string_view Field::section() const {
  size_t dot = nested.rfind('.');
  return dot == std::string::npos ? std::string_view() : std::string_view(nested).substr(0, dot);
}

std::string_view Field::leaf() const {
  size_t dot = nested.rfind('.');
  return dot == std::string::npos ? std::string_view(nested) : std::string_view(nested).substr(dot + 1);
}

const std::vector<Field>& KnownFields() {
  static const std::vector<Field> fields = BuildFields();
  return fields;
}

const std::vector<std::string>& Sections() {
  static const std::vector<std::string> sections = {
      "model",  "finetuning", "data",      "train",      "eval",
      "export", "clean",      "resources", "scheduling", "resources.parallel"};
  return sections;
}

bool IsSection(std::string_view dotted) {
  const auto& s = Sections();
  return std::find(s.begin(), s.end(), dotted) != s.end();
}

const Field* FindNestedField(std::string_view dotted) {
  for (const Field& f : KnownFields()) {
    if (f.nested == dotted) return &f;
    for (const auto& alias : f.nested_aliases) {
      if (alias == dotted) return &f;
    }
  }
  return nullptr;
}

const Field* FindField(std::string_view key) {
  if (const Field* f = FindNestedField(key)) return f;
  for (const Field& f : KnownFields()) {
    if (!f.flat.empty() && f.flat == key) return &f;
    for (const auto& alias : f.flat_aliases) {
      if (alias == key) return &f;
    }
  }
  return nullptr;
}

const std::vector<IgnoredKey>& IgnoredKeys() {
  static const std::vector<IgnoredKey> keys = {
      {"logging_dir", "logs are kept by the agent (anneal logs)"},
      {"dataloader_num_workers", "data loading runs in the trainer"},
      {"overwrite_cache", "the tokenized cache is keyed by dataset, tokenizer and template"},
      {"buffer_size", "LLaMA-Factory reads it only with streaming, which is refused"},
      {"trust_remote_code", "only built-in LLaMA-family architectures are loaded; no remote code runs"},
      {"save_only_model", "checkpoints always hold what resuming needs"},
      {"do_eval", "evaluation follows eval_strategy"},
      {"do_predict", "use kind: eval"},
      {"run_name", "use scheduling.name"},
      {"include_num_input_tokens_seen", "token throughput is always reported"},
      {"ddp_find_unused_parameters", "not needed by the native data parallelism"},
      {"dataloader_pin_memory", "data loading runs in the trainer"},
      {"use_fast_tokenizer", "the trainer reads tokenizer.json directly"},
      {"cache_dir", "models are loaded from a local directory"},
      {"ddp_backend", "NCCL on GPU nodes, Gloo on CPU nodes"},
      {"disable_tqdm", "progress is shown by anneal watch"},
      {"log_level", "the agent keeps every rank's log"},
      {"print_param_status", "the trainer logs its trainable parameter count"},
      {"save_safetensors", "checkpoints and exports are always safetensors"},
      {"loraplus_lr_embedding", "it applies to LoRA on embedding layers, which are never adapted here"},
  };
  return keys;
}

const IgnoredKey* FindIgnoredKey(std::string_view key) {
  for (const IgnoredKey& k : IgnoredKeys()) {
    if (k.key == key) return &k;
  }
  return nullptr;
}

std::string SuggestKey(std::string_view key) {
  std::set<std::string> candidates;
  for (const Field& f : KnownFields()) {
    candidates.insert(f.nested);
    if (!f.flat.empty()) candidates.insert(f.flat);
  }
  for (const IgnoredKey& k : IgnoredKeys()) candidates.insert(k.key);
  for (const TranslatedKey& k : TranslatedKeys()) candidates.insert(k.key);
  for (const RefusedKey& k : RefusedKeys()) candidates.insert(k.key);
  for (const std::string& s : Sections()) candidates.insert(s);

  // A known leaf in the wrong section ("train.lora_rank"): point at the right section.
  size_t dot = key.rfind('.');
  if (dot != std::string_view::npos) {
    std::string_view leaf = key.substr(dot + 1);
    for (const Field& f : KnownFields()) {
      if (f.leaf() == leaf || f.flat == leaf) return f.nested;
    }
  }
  std::string best;
  size_t best_distance = std::numeric_limits<size_t>::max();
  for (const std::string& c : candidates) {
    size_t d = EditDistance(key, c);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  size_t limit = std::max<size_t>(2, key.size() / 3);
  return best_distance <= limit ? best : std::string();
}

std::string NodeText(const YAML::Node& node) {
  if (!node.IsDefined() || node.IsNull()) return "null";
  if (node.IsScalar()) return node.Scalar();
  std::vector<std::string> items;
  if (node.IsMap()) {
    for (const auto& pair : node) items.push_back(NodeText(pair.first) + ": " + NodeText(pair.second));
    return fmt::format("{{{}}}", fmt::join(items, ", "));
  }
  for (const auto& item : node) items.push_back(NodeText(item));
  return fmt::format("[{}]", fmt::join(items, ", "));
}

}  // namespace anneal::jobspec
