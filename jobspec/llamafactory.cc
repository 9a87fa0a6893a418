// LLaMA-Factory keys that are not plain fields: the translated ones (deepspeed, disable_gradient_checkpointing)
// and the refused ones (a feature Anneal does not have, with what to use instead). docs/job-spec.md's
// "LLaMA-Factory keys" table lists these next to the honoured and ignored keys; docs_test.cc checks it.
#include <fmt/format.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "jobspec/schema.h"
#include "jobspec/values.h"

namespace anneal::jobspec {
namespace {

// DeepSpeed settings the job spec owns: in the JSON they must be "auto" (HF fills them from TrainingArguments;
// an explicit value either repeats the spec or is an HF mismatch error). Anneal takes the spec's value.
struct SpecOwned {
  const char* json_path;  // dotted path inside the JSON
  const char* spec_key;   // the job-spec key to set instead
};
constexpr SpecOwned kSpecOwned[] = {
    {"train_batch_size", "per_device_train_batch_size and gradient_accumulation_steps"},
    {"train_micro_batch_size_per_gpu", "per_device_train_batch_size"},
    {"gradient_accumulation_steps", "gradient_accumulation_steps"},
    {"gradient_clipping", "max_grad_norm"},
    {"fp16.enabled", "bf16 (fp16 is not supported)"},
    {"bf16.enabled", "bf16"},
};

// The node at a dotted path, or an undefined node. (Node::reset rebinds; operator= would write through.)
YAML::Node At(const YAML::Node& root, std::string_view dotted) {
  YAML::Node node;
  node.reset(root);
  size_t start = 0;
  while (true) {
    const size_t dot = dotted.find('.', start);
    const std::string part(dotted.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start));
    if (!node.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
    const YAML::Node& map = node;
    const YAML::Node child = map[part];
    if (!child.IsDefined()) return YAML::Node(YAML::NodeType::Undefined);
    node.reset(child);
    if (dot == std::string_view::npos) return node;
    start = dot + 1;
  }
}

bool IsAuto(const YAML::Node& n) {
  return n.IsScalar() && n.Scalar() == "auto";
}

// The ZeRO stage of a DeepSpeed JSON (HF TrainingArguments' `deepspeed`): the file is resolved against the
// working directory, as HF opens it. Stages 0 to 3 are built (with their bucket sizes and overlap_comm,
// contiguous_gradients, reduce_scatter, allgather_partitions, round_robin_gradients, sub_group_size and stage 3's
// stage3_prefetch_bucket_size, stage3_param_persistence_threshold, stage3_max_live_parameters,
// stage3_max_reuse_distance and stage3_gather_16bit_weights_on_model_save: each changes only memory or how tensors
// travel, never the results, and checkpoints and exports always hold full tensors), CPU offload (resources.offload:
// the translation then sets two fields); NVMe offload, a DeepSpeed optimizer or scheduler, and explicit values for what
// the spec owns are refused, naming the file.
StatusOr<YAML::Node> ZeroStageFromDeepSpeed(const YAML::Node& value, std::string_view key, std::string_view where) {
  std::string path;
  if (!DecodeString(value, &path) || path.empty()) {
    return InvalidArgumentError(
        fmt::format("key '{}' {}: expected the path of a DeepSpeed JSON config, got {}", key, where, Describe(value)));
  }
  const std::string shown = std::filesystem::absolute(path).lexically_normal().string();
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return InvalidArgumentError(
        fmt::format("key '{}' {}: cannot read the DeepSpeed config {}: {}", key, where, shown, std::strerror(errno)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  YAML::Node root;
  try {
    root = YAML::Load(text.str());  // JSON is YAML
  } catch (const YAML::Exception& e) {
    return InvalidArgumentError(fmt::format("key '{}' {}: the DeepSpeed config {} is not valid JSON (line {}): {}", key,
                                            where, shown, e.mark.line + 1, e.msg));
  }
  if (!root.IsMap()) {
    return InvalidArgumentError(
        fmt::format("key '{}' {}: the DeepSpeed config {} is not a JSON object", key, where, shown));
  }
  auto refuse = [&](const std::string& what) {
    return InvalidArgumentError(fmt::format("key '{}' {}: the DeepSpeed config {} {}", key, where, shown, what));
  };
  int64_t stage = 0;  // DeepSpeed's default when zero_optimization or its stage is absent
  const YAML::Node stage_node = At(root, "zero_optimization.stage");
  if (stage_node.IsDefined() && !DecodeInt64(stage_node, &stage)) {
    return refuse(fmt::format("has zero_optimization.stage {}: expected 0, 1, 2 or 3", Describe(stage_node)));
  }
  if (stage < 0 || stage > 3) {
    return refuse(fmt::format("has zero_optimization.stage {}: expected 0, 1, 2 or 3", stage));
  }
  // CPU offload (DeepSpeed's offload_optimizer / offload_param): device cpu becomes resources.offload; the other
  // keys of the section change only where bytes wait and how they travel (pin_memory: host tensors are pinned
  // whenever the device is CUDA). offload_param implies the optimizer's (the step runs where the shards live).
  std::string offload = "none";
  for (const char* section : {"offload_optimizer", "offload_param"}) {
    const std::string path = fmt::format("zero_optimization.{}", section);
    const YAML::Node node = At(root, path);
    if (!node.IsDefined() || node.IsNull()) continue;
    if (!node.IsMap()) return refuse(fmt::format("has {} {}: expected an object", path, Describe(node)));
    const YAML::Node device = node["device"];
    const std::string name = device.IsScalar() ? device.Scalar() : "none";
    if (name == "nvme") {
      return refuse(
          fmt::format("offloads to nvme ({}.device), which is not built: use \"device\": \"cpu\" (host "
                      "memory) or remove {}",
                      path, section));
    }
    if (device.IsDefined() && !device.IsNull() && name != "cpu" && name != "none") {
      return refuse(fmt::format("has {}.device {}: expected \"cpu\" or \"none\"", path, Describe(device)));
    }
    for (const auto& kv : node) {
      const std::string k = kv.first.as<std::string>();
      static const std::set<std::string> kNeutral = {"device",     "pin_memory", "buffer_count",  "buffer_size",
                                                     "max_in_cpu", "fast_init",  "pipeline_read", "pipeline_write",
                                                     "nvme_path",  "ratio"};
      if (!kNeutral.count(k)) return refuse(fmt::format("has {}.{}, which Anneal does not know: remove it", path, k));
    }
    if (name != "cpu") continue;
    const bool params = std::string_view(section) == "offload_param";
    if (stage < (params ? 3 : 1)) {
      return refuse(
          fmt::format("offloads {} with zero_optimization.stage {}: DeepSpeed offloads {} only under stage "
                      "{}; raise the stage or remove {}",
                      params ? "parameters" : "the optimizer", stage, params ? "parameters" : "the optimizer",
                      params ? "3" : "1, 2 or 3", section));
    }
    offload = params ? "optimizer+params" : (offload == "none" ? "optimizer" : offload);
  }
  // Bucket sizes (elements): reduce_bucket_size sizes the gradient reduce(-scatter) buckets, allgather_bucket_size
  // (stages 1/2) or stage3_prefetch_bucket_size (stage 3) the parameter gathers: resources.reduce_bucket_size and
  // resources.gather_bucket_size, DeepSpeed's defaults (5e8, 5e8, 5e7) when absent, "auto" resolved by the trainer
  // from hidden_size as HF fills it. They, the persistence threshold, the live-parameter and reuse limits,
  // sub_group_size and the communication switches change how tensors travel and wait, never the sums: the other
  // ones are accepted and not used (Anneal shards every parameter and prefetches one decoder layer ahead).
  std::map<std::string, int64_t> sizes = {{"reduce_bucket_size", 500000000},
                                          {"allgather_bucket_size", 500000000},
                                          {"stage3_prefetch_bucket_size", 50000000}};
  for (const char* bucket : {"reduce_bucket_size", "allgather_bucket_size", "stage3_prefetch_bucket_size",
                             "stage3_param_persistence_threshold", "stage3_max_live_parameters",
                             "stage3_max_reuse_distance", "sub_group_size"}) {
    const YAML::Node v = At(root, fmt::format("zero_optimization.{}", bucket));
    double elements = 0;
    // A persistence threshold of 0 (shard every parameter) is valid; the other sizes must be positive.
    const bool zero_ok = std::string_view(bucket) == "stage3_param_persistence_threshold";
    const bool used = sizes.count(bucket) > 0;
    if (!v.IsDefined() || v.IsNull()) continue;
    if (IsAuto(v)) {
      if (used) sizes[bucket] = -1;
      continue;
    }
    if (!(DecodeNumber(v, &elements) && (elements > 0 || (zero_ok && elements == 0)))) {
      return refuse(fmt::format("has zero_optimization.{} {}: expected a positive number of elements or \"auto\"",
                                bucket, Describe(v)));
    }
    if (used && (elements != std::floor(elements) || elements >= 9e18)) {
      return refuse(
          fmt::format("has zero_optimization.{} {}: expected a whole number of elements", bucket, Describe(v)));
    }
    if (used) sizes[bucket] = static_cast<int64_t>(elements);
  }
  const int64_t gather = stage == 3 ? sizes["stage3_prefetch_bucket_size"] : sizes["allgather_bucket_size"];
  const auto size_text = [](int64_t v) { return v == -1 ? std::string("auto") : std::to_string(v); };
  for (const char* section : {"optimizer", "scheduler"}) {
    if (At(root, section).IsDefined()) {
      return refuse(fmt::format(
          "defines its own {} (the \"{}\" section), which would replace the job's; remove it and set optim, "
          "learning_rate, adam_beta1/2, weight_decay and lr_scheduler_type in the job spec",
          section, section));
    }
  }
  for (const SpecOwned& owned : kSpecOwned) {
    const YAML::Node v = At(root, owned.json_path);
    if (v.IsDefined() && !v.IsNull() && !IsAuto(v)) {
      return refuse(fmt::format("sets {} to {}: write \"auto\" there and set {} in the job spec", owned.json_path,
                                Describe(v), owned.spec_key));
    }
  }
  YAML::Node fields(YAML::NodeType::Map);  // the stage, the bucket sizes and (when offloading) resources.offload
  fields["resources.zero_stage"] = std::to_string(stage);
  fields["resources.reduce_bucket_size"] = size_text(sizes["reduce_bucket_size"]);
  fields["resources.gather_bucket_size"] = size_text(gather);
  if (offload != "none") fields["resources.offload"] = offload;
  return fields;
}

StatusOr<YAML::Node> GradientCheckpointingFromDisable(const YAML::Node& value, std::string_view key,
                                                      std::string_view where) {
  bool disable = false;
  if (!DecodeBool(value, &disable)) {
    return InvalidArgumentError(
        fmt::format("key '{}' {}: expected true or false, got {}", key, where, Describe(value)));
  }
  return YAML::Node(disable ? "false" : "true");
}

}  // namespace

const std::vector<TranslatedKey>& TranslatedKeys() {
  static const std::vector<TranslatedKey> keys = {
      {"deepspeed", "resources.zero_stage", ZeroStageFromDeepSpeed},
      {"disable_gradient_checkpointing", "train.gradient_checkpointing", GradientCheckpointingFromDisable},
  };
  return keys;
}

const TranslatedKey* FindTranslatedKey(std::string_view key) {
  for (const TranslatedKey& k : TranslatedKeys()) {
    if (k.key == key) return &k;
  }
  return nullptr;
}

const std::vector<RefusedKey>& RefusedKeys() {
  static const std::vector<RefusedKey> keys = {
      {"use_galore", "false", "GaLore is not built: use AdamW (optim: adamw_torch), with LoRA to save memory"},
      {"use_apollo", "false", "APOLLO is not built: use AdamW (optim: adamw_torch), with LoRA to save memory"},
      {"use_badam", "false", "BAdam is not built: use AdamW (optim: adamw_torch), with zero_stage: 1 to save memory"},
      {"pure_bf16", "false", "pure bf16 (bf16 optimizer state) is not built: use bf16: true (fp32 master weights)"},
      {"rope_scaling", "",
       "RoPE scaling is not built: remove it and keep cutoff_len within the model's max_position_embeddings"},
      {"shift_attn", "false", "S^2-Attn is not built: remove it and keep cutoff_len within the model's context"},
      {"resize_vocab", "false", "resizing the vocabulary is not built: use a model whose tokenizer has the tokens"},
      {"lr_scheduler_kwargs", "", "scheduler arguments are not built: use lr_scheduler_type and warmup_steps"},
      // LLaMA-Factory's streaming loads local files whole anyway (load_dataset, then to_iterable_dataset) and only
      // changes the order (HF's buffered shuffle, reseeded every epoch): not reproduced. Files larger than memory
      // need no key here (DataConfig::bounded_memory, trainer/data/stream.h).
      {"streaming", "false",
       "LLaMA-Factory's streaming order (HF datasets' buffered shuffle of an iterable dataset, reseeded every epoch) "
       "is not reproduced: remove it (and buffer_size); files larger than memory need no key, stages sft, dpo and rm "
       "tokenize them into the cache a chunk at a time in bounded memory (docs/user-guide.md, \"Files larger than "
       "memory\")"},
      {"enable_liger_kernel", "false",
       "Liger kernels are not built (they change memory and rounding): remove the key; the trainer uses its own "
       "kernels"},
      {"use_unsloth", "false", "Unsloth is not built (it changes memory and rounding): remove the key"},
      {"torch_compile", "false", "torch.compile does not apply to the C++ trainer: remove the key"},
      {"predict_with_generate", "false", "use kind: eval with eval.tasks: [generate]"},
      // Preference training (stage dpo) that is not built.
      {"dpo_label_smoothing", "0", "robust DPO label smoothing (cDPO) is not built: remove the key"},
      {"pref_bco_weight", "0", "the BCO term of DPO is not built: remove the key"},
      {"ld_alpha", "", "LD-DPO's length weighting is not built: remove the key"},
      {"ref_model", "",
       "a separate reference model is not built: remove the key; stage dpo compares with the base model (LoRA: "
       "the adapters switched off; full or freeze: a frozen copy of model_name_or_path)"},
      {"ref_model_adapters", "", "a separate reference model is not built: remove the key"},
      {"ref_model_quantization_bit", "", "a separate reference model is not built: remove the key"},
      // LLaMA-Factory's export keys that kind: export does not build (export_dir and export_size it honours).
      {"export_device", "cpu",
       "an export merges on the CPU (export_device: cpu, LLaMA-Factory's default): remove the key"},
      {"export_legacy_format", "false", "exports are always safetensors: remove the key"},
      {"export_quantization_bit", "",
       "quantized (GPTQ) export is not built: remove the key (the model is exported in its own dtype)"},
      {"export_quantization_dataset", "",
       "quantized (GPTQ) export is not built: remove the key (the model is exported in its own dtype)"},
      {"export_quantization_nsamples", "128",
       "quantized (GPTQ) export is not built: remove the key (the model is exported in its own dtype)"},
      {"export_quantization_maxlen", "1024",
       "quantized (GPTQ) export is not built: remove the key (the model is exported in its own dtype)"},
      {"export_hub_model_id", "",
       "pushing to the Hugging Face Hub is not built (the cluster reaches no registry): remove the key and copy "
       "export_dir"},
  };
  return keys;
}

const RefusedKey* FindRefusedKey(std::string_view key) {
  for (const RefusedKey& k : RefusedKeys()) {
    if (k.key == key) return &k;
  }
  return nullptr;
}

bool IsHarmlessValue(const RefusedKey& refused, const YAML::Node& value) {
  if (!value.IsDefined() || value.IsNull()) return true;
  if (refused.harmless.empty() || !value.IsScalar()) return false;
  bool want = false, got = false;
  if (DecodeBool(YAML::Node(refused.harmless), &want) && DecodeBool(value, &got)) return want == got;
  double want_n = 0, got_n = 0;
  if (DecodeNumber(YAML::Node(refused.harmless), &want_n) && DecodeNumber(value, &got_n)) return want_n == got_n;
  return value.Scalar() == refused.harmless;
}

}  // namespace anneal::jobspec
