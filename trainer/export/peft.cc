#include "trainer/export/peft.h"

#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "common/fsutil.h"
#include "trainer/model/config.h"
#include "trainer/model/safetensors.h"
#include "trainer/train/finetune.h"

namespace anneal::train {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
constexpr const char* kPrefix = "base_model.model.";

}  // namespace

StatusOr<PeftAdapter> LoadPeftAdapter(const std::string& dir) {
  const std::string cfg_path = dir + "/adapter_config.json";
  ASSIGN_OR_RETURN(std::string text, ReadFile(cfg_path));
  json cfg = json::parse(text, nullptr, false);
  if (cfg.is_discarded() || !cfg.is_object()) return InvalidArgumentError(cfg_path + ": not valid JSON");
  if (cfg.value("peft_type", "") != "LORA") {
    return InvalidArgumentError(cfg_path + ": peft_type '" + cfg.value("peft_type", "") + "' is not supported (LORA)");
  }
  PeftAdapter a;
  a.source = dir;
  a.options.rank = cfg.value("r", 8);
  a.options.alpha = cfg.value("lora_alpha", 8.0);
  a.options.dropout = cfg.value("lora_dropout", 0.0);
  a.options.use_rslora = cfg.value("use_rslora", false);
  a.options.use_dora = cfg.value("use_dora", false);
  // peft's init_lora_weights: how the adapter was started. PiSSA also changed the base (W - scaling B A from W's
  // SVD): peft redoes that when it loads the adapter, and so does Anneal. Other data-driven starts are refused.
  if (cfg.contains("init_lora_weights") && cfg["init_lora_weights"].is_string()) {
    const std::string init = cfg["init_lora_weights"].get<std::string>();
    if (init == "pissa") {
      a.options.pissa = true;
    } else if (init.rfind("pissa_niter_", 0) == 0 && init.size() > 12 &&
               init.find_first_not_of("0123456789", 12) == std::string::npos) {
      a.options.pissa = true;
      a.options.pissa_niter = std::stoi(init.substr(12));
    } else if (init != "gaussian") {
      return InvalidArgumentError(cfg_path + ": init_lora_weights '" + init +
                                  "' is not supported (true, gaussian, pissa, pissa_niter_<n>)");
    }
  }
  if (cfg.contains("modules_to_save") && !cfg["modules_to_save"].is_null()) {
    if (!cfg["modules_to_save"].is_array()) {
      return InvalidArgumentError(cfg_path + ": modules_to_save must be a list of module names");
    }
    for (const auto& m : cfg["modules_to_save"]) {
      const std::string name = m.is_string() ? m.get<std::string>() : "";
      if (name != "embed_tokens" && name != "lm_head") {
        return InvalidArgumentError(cfg_path + ": modules_to_save '" + (m.is_string() ? name : m.dump()) +
                                    "' is not supported (embed_tokens, lm_head)");
      }
      a.modules_to_save.push_back(name);
    }
  }
  const json& tm = cfg["target_modules"];
  if (tm.is_string()) {
    return InvalidArgumentError(cfg_path + ": target_modules as a regex is not supported; list the module names");
  }
  if (!tm.is_array()) return InvalidArgumentError(cfg_path + ": target_modules must be a list of module names");
  for (const auto& t : tm) {
    const std::string name = t.get<std::string>();
    if (std::find(LoraTargetNames().begin(), LoraTargetNames().end(), name) == LoraTargetNames().end()) {
      return InvalidArgumentError(cfg_path + ": target module '" + name + "' is not a linear layer of the decoder");
    }
    a.target_modules.push_back(name);
  }
  ASSIGN_OR_RETURN(model::SafetensorsCheckpoint ck, model::SafetensorsCheckpoint::Open(dir, "adapter_model"));
  for (const std::string& key : ck.Names()) {
    std::string name = key;
    if (name.rfind(kPrefix, 0) == 0) name = name.substr(std::string(kPrefix).size());
    // DoRA's magnitude as peft names it in memory ("...lora_magnitude_vector.default.weight") or saved.
    for (const char* infix : {".lora_magnitude_vector.default.weight", ".lora_magnitude_vector.weight"}) {
      auto pos = name.find(infix);
      if (pos != std::string::npos) name = name.substr(0, pos) + ".lora_magnitude_vector";
    }
    // peft may keep the adapter name in keys written by some versions: "...lora_A.default.weight".
    for (const char* infix : {".lora_A.default.weight", ".lora_B.default.weight"}) {
      auto pos = name.find(infix);
      if (pos != std::string::npos) name = name.substr(0, pos) + std::string(infix).substr(0, 7) + ".weight";
    }
    ASSIGN_OR_RETURN(at::Tensor t, ck.Tensor(key, torch::kFloat32));
    a.weights[name] = t.clone();
  }
  return a;
}

Status ApplyPeftWeights(model::CausalLM& lm, const PeftAdapter& adapter) {
  torch::NoGradGuard no_grad;
  std::set<std::string> used;
  for (auto& [name, lin] : LoraModules(lm)) {
    for (auto [suffix, dst] :
         {std::pair{".lora_A.weight", &lin->lora_A->weight}, {".lora_B.weight", &lin->lora_B->weight}}) {
      auto it = adapter.weights.find(name + suffix);
      if (it == adapter.weights.end()) {
        return NotFoundError(adapter.source + ": adapter has no weight for " + name + suffix);
      }
      // The adapter holds full tensors; under tensor parallelism this rank takes its piece.
      const model::ParamLayout layout = lin->Layout(std::string(suffix).substr(1));
      const std::vector<int64_t> full = layout.FullShape(dst->sizes());
      if (it->second.sizes() != c10::IntArrayRef(full)) {
        return InvalidArgumentError(adapter.source + ": " + name + suffix + " has shape " +
                                    c10::str(it->second.sizes()) + ", the model expects " + c10::str(full));
      }
      dst->copy_(layout.Slice(it->second));
      used.insert(name + suffix);
    }
    if (lin->lora_magnitude_vector.defined()) {
      auto it = adapter.weights.find(name + ".lora_magnitude_vector");
      if (it == adapter.weights.end()) {
        return NotFoundError(adapter.source + ": a DoRA adapter (use_dora) has no lora_magnitude_vector for " + name);
      }
      if (it->second.sizes() != lin->lora_magnitude_vector.sizes()) {
        return InvalidArgumentError(adapter.source + ": " + name + ".lora_magnitude_vector has shape " +
                                    c10::str(it->second.sizes()) + ", the model expects " +
                                    c10::str(lin->lora_magnitude_vector.sizes()));
      }
      lin->lora_magnitude_vector.copy_(it->second);
      used.insert(name + ".lora_magnitude_vector");
    }
  }
  // modules_to_save: whole weights, this rank's piece of each.
  for (const model::LayoutParam& p : lm->LayoutParameters()) {
    auto it = adapter.weights.find(p.name);
    if (it == adapter.weights.end() || p.name.find(".lora_") != std::string::npos) continue;
    const std::vector<int64_t> full = p.layout.FullShape(p.tensor.sizes());
    if (it->second.sizes() != c10::IntArrayRef(full)) {
      return InvalidArgumentError(adapter.source + ": " + p.name + " has shape " + c10::str(it->second.sizes()) +
                                  ", the model expects " + c10::str(full));
    }
    p.tensor.detach().copy_(p.layout.Slice(it->second));
    used.insert(p.name);
  }
  // Under pipeline parallelism the layers of other stages are not here: their weights are theirs to take.
  const model::StageSpec& stage = lm->stage();
  auto other_stage = [&](const std::string& name) {
    const std::string key = "layers.";
    const auto pos = name.find(key);
    if (pos == std::string::npos) return false;
    const int64_t layer = std::atoll(name.c_str() + pos + key.size());
    return layer < stage.layer_begin || layer >= stage.layer_end;
  };
  for (const auto& [name, _] : adapter.weights) {
    if (used.count(name) || other_stage(name)) continue;  // another stage's layer: theirs to check
    const bool moe_mlp = lm->config().moe.num_experts > 0 && name.find(".mlp.experts.") == std::string::npos &&
                         (name.find("_proj.lora_") != std::string::npos) && name.find(".mlp.") != std::string::npos;
    if (moe_mlp) {
      return InvalidArgumentError(adapter.source + ": adapter weight '" + name +
                                  "' adapts an MLP outside the routed experts of a mixture-of-experts model (a dense "
                                  "layer or a shared expert): peft 0.21 on transformers 5 does not load such "
                                  "adapters, and Anneal adapts the routed experts only");
    }
    return InvalidArgumentError(adapter.source + ": adapter weight '" + name + "' matches no module");
  }
  return Status::Ok();
}

Status ExportPeftAdapter(model::CausalLM& lm, const std::string& dir, const std::string& base_model) {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  model::LoraOptions opts;
  for (auto& [name, lin] : LoraModules(lm)) {
    tensors.emplace_back(name + ".lora_A.weight", lin->lora_A->weight);
    tensors.emplace_back(name + ".lora_B.weight", lin->lora_B->weight);
    if (lin->lora_magnitude_vector.defined())
      tensors.emplace_back(name + ".lora_magnitude_vector", lin->lora_magnitude_vector);
    opts = lin->lora_options();
  }
  return WritePeftAdapter(tensors, opts, dir, base_model);
}

namespace {

// The base model as the user named it. Without a shared filesystem the agent staged the model into its node's
// store and the spec this rank reads names that copy; the agent passes the spec's own path in
// ANNEAL_BASE_MODEL_SOURCE (and the copy in ANNEAL_BASE_MODEL_STAGED), so the adapter names a path that means
// something where the user fetches it, not a directory on a training node.
std::string UserBaseModelName(const std::string& base_model) {
  const char* staged = std::getenv("ANNEAL_BASE_MODEL_STAGED");
  const char* source = std::getenv("ANNEAL_BASE_MODEL_SOURCE");
  if (staged != nullptr && source != nullptr && base_model == staged) return source;
  return base_model;
}

}  // namespace

Status WritePeftAdapter(const std::vector<std::pair<std::string, at::Tensor>>& lora, const model::LoraOptions& opts,
                        const std::string& dir, const std::string& base_model) {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  std::set<std::string> targets, saved_modules;
  for (const auto& [name, t] : lora) {
    const auto pos = name.find(".lora_");
    if (pos == std::string::npos) {
      // A module trained in full next to the adapter (modules_to_save): saved under its HF name, as peft does.
      for (const char* module : {"embed_tokens", "lm_head"}) {
        if (name == std::string(module) + ".weight" || name.ends_with(std::string(".") + module + ".weight")) {
          tensors.emplace_back(kPrefix + name, t);
          saved_modules.insert(module);
        }
      }
      continue;
    }
    tensors.emplace_back(kPrefix + name, t);
    const std::string module = name.substr(0, pos);
    targets.insert(module.substr(module.rfind('.') + 1));
  }
  if (tensors.empty()) return FailedPreconditionError("export: the model has no LoRA adapters");
  RETURN_IF_ERROR(MakeDirs(dir));
  RETURN_IF_ERROR(model::WriteSafetensors(dir + "/adapter_model.safetensors", tensors));
  json cfg = {{"peft_type", "LORA"},
              {"task_type", "CAUSAL_LM"},
              {"base_model_name_or_path", UserBaseModelName(base_model)},
              {"r", opts.rank},
              {"lora_alpha", opts.alpha},
              {"lora_dropout", opts.dropout},
              {"use_rslora", opts.use_rslora},
              {"target_modules", std::vector<std::string>(targets.begin(), targets.end())},
              {"bias", "none"},
              {"fan_in_fan_out", false},
              {"inference_mode", true},
              {"init_lora_weights", !opts.pissa                ? json(true)
                                    : opts.pissa_niter < 0 ? json("pissa")
                                                           : json("pissa_niter_" + std::to_string(opts.pissa_niter))},
              {"modules_to_save", saved_modules.empty()
                                      ? json(nullptr)
                                      : json(std::vector<std::string>(saved_modules.begin(), saved_modules.end()))},
              {"layers_to_transform", nullptr},
              {"layers_pattern", nullptr},
              {"rank_pattern", json::object()},
              {"alpha_pattern", json::object()},
              {"use_dora", opts.use_dora},
              {"revision", nullptr}};
  return WriteFileAtomic(dir + "/adapter_config.json", cfg.dump(2) + "\n");
}

Status CopyTokenizerFiles(const std::string& from, const std::string& to) {
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                        "merges.txt", "tokenizer.model", "generation_config.json"}) {
    std::error_code ec;
    if (!fs::exists(fs::path(from) / f)) continue;
    fs::copy_file(fs::path(from) / f, fs::path(to) / f, fs::copy_options::overwrite_existing, ec);
    if (ec) return InternalError(std::string("cannot copy ") + f + " to " + to + ": " + ec.message());
  }
  return Status::Ok();
}

Status ExportMergedModel(model::CausalLM& lm, const std::string& dir, const std::string& base_model,
                         uint64_t max_shard_bytes) {
  // Merge into copies: merging in place and unmerging would not restore bf16 weights exactly.
  std::map<std::string, at::Tensor> merged;
  for (auto& [name, lin] : LoraModules(lm)) merged[name + ".weight"] = lin->MergedWeight();
  std::vector<std::pair<std::string, at::Tensor>> tensors = lm->HfStateDict();
  for (auto& [name, t] : tensors) {
    auto it = merged.find(name);
    if (it != merged.end()) t = it->second;
  }
  return WriteMergedModel(tensors, lm->config(), dir, base_model, max_shard_bytes);
}

Status WriteMergedModel(const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                        const model::ModelConfig& config, const std::string& dir, const std::string& base_model,
                        uint64_t max_shard_bytes) {
  RETURN_IF_ERROR(MakeDirs(dir));
  RETURN_IF_ERROR(model::WriteSafetensorsCheckpoint(dir, "model", tensors, max_shard_bytes));
  RETURN_IF_ERROR(WriteFileAtomic(dir + "/config.json", model::ModelConfigToJson(config).dump(2) + "\n"));
  return CopyTokenizerFiles(base_model, dir);
}

}  // namespace anneal::train
