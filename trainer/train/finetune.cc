#include "trainer/train/finetune.h"

#include <torch/torch.h>

#include <algorithm>
#include <set>

#include "trainer/export/peft.h"

namespace anneal::train {
namespace {

// Stable per-module seed so adapters initialise identically on every run and rank.
uint64_t ModuleSeed(uint64_t seed, const std::string& name) {
  uint64_t h = 1469598103934665603ull ^ seed;
  for (char c : name) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
  return h;
}

std::string LastComponent(const std::string& name) {
  auto pos = name.rfind('.');
  return pos == std::string::npos ? name : name.substr(pos + 1);
}

// peft 0.21 on transformers 5 maps gate_proj / up_proj / down_proj targets of a mixture-of-experts model onto
// the fused routed experts only (peft's _convert_peft_config_moe): dense-layer MLPs and shared experts get no
// adapter, and an adapter that has one does not load there. LoRA does the same here, so adapters round-trip.
bool MlpOutsideTheExperts(const model::CausalLM& lm, const std::string& name) {
  if (lm->config().moe.num_experts <= 0 || name.find(".mlp.experts.") != std::string::npos) return false;
  const std::string last = LastComponent(name);
  return last == "gate_proj" || last == "up_proj" || last == "down_proj";
}

int LayerIndexOf(const std::string& name) {
  const std::string key = "layers.";
  auto pos = name.find(key);
  if (pos == std::string::npos) return -1;
  return std::stoi(name.substr(pos + key.size()));
}

}  // namespace

const std::vector<std::string>& LoraTargetNames() {
  // The last four are MLA's (deepseek_v2, deepseek_v3); "all" targets whichever the model has.
  static const std::vector<std::string> names = {"q_proj",   "k_proj",    "v_proj",   "o_proj",   "gate_proj",
                                                 "up_proj",  "down_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa",
                                                 "kv_b_proj"};
  return names;
}

std::vector<std::pair<std::string, model::Linear>> LoraModules(model::CausalLM& lm) {
  std::vector<std::pair<std::string, model::Linear>> out;
  for (const auto& item : lm->named_modules("", /*include_self=*/false)) {
    if (auto lin = std::dynamic_pointer_cast<model::LinearImpl>(item.value())) {
      if (lin->has_lora()) out.emplace_back(item.key(), model::Linear(lin));
    }
  }
  return out;
}

// The seed of PiSSA's randomized SVD (per module: ModuleSeed(kPissaSeed, name)), independent of the job's seed.
constexpr uint64_t kPissaSeed = 0x5155;

StatusOr<std::optional<model::BaseQuantOptions>> BaseQuantization(const jobspec::JobSpec& spec) {
  const auto& m = spec.model;
  if (m.quantization_bit == 0) return std::optional<model::BaseQuantOptions>();
  // The parser refuses the rest (other widths and methods, full or freeze tuning); a spec built by hand may not.
  if ((m.quantization_bit != 4 && m.quantization_bit != 8) || m.quantization_method != "bnb") {
    return InvalidArgumentError(c10::str("quantization_bit ", m.quantization_bit, " with quantization_method ",
                                         m.quantization_method, " is not built: use quantization_bit: 4 or 8 (bnb)"));
  }
  model::BaseQuantOptions base;
  base.bits = m.quantization_bit;
  if (m.quantization_bit == 4) {
    ASSIGN_OR_RETURN(model::Quant4Type type, model::Quant4TypeFromName(m.quantization_type));
    base.four = model::Quant4Options{type, m.double_quantization};
  }
  return std::optional<model::BaseQuantOptions>(base);
}

StatusOr<model::LoraOptions> LoraOptionsOf(model::CausalLM& lm) {
  auto modules = LoraModules(lm);
  if (modules.empty()) return FailedPreconditionError("export: the model has no LoRA adapters");
  return modules.front().second->lora_options();
}

StatusOr<std::vector<optim::TrainableParam>> ApplyFinetuning(model::CausalLM& lm, const jobspec::JobSpec& spec,
                                                             uint64_t seed) {
  const auto& ft = spec.finetuning;
  for (auto& p : lm->parameters()) p.set_requires_grad(false);
  std::vector<optim::TrainableParam> trainable;
  const int64_t layers = lm->config().num_hidden_layers;

  if (ft.type == jobspec::FinetuningType::kLora) {
    std::set<std::string> targets;
    model::LoraOptions lora{ft.lora_rank, ft.lora_alpha, ft.lora_dropout, ft.use_rslora, ft.use_dora};
    lora.pissa = ft.pissa_init;  // LLaMA-Factory: init_lora_weights "pissa" (pissa_iter -1) or "pissa_niter_<iter>"
    lora.pissa_niter = ft.pissa_iter;
    std::optional<PeftAdapter> adapter;
    if (!spec.model.adapter_name_or_path.empty()) {
      ASSIGN_OR_RETURN(adapter, LoadPeftAdapter(spec.model.adapter_name_or_path));
      lora = adapter->options;
      targets.insert(adapter->target_modules.begin(), adapter->target_modules.end());
    } else {
      for (const std::string& t : ft.lora_target) {
        if (t == "all") {
          targets.insert(LoraTargetNames().begin(), LoraTargetNames().end());
        } else if (std::find(LoraTargetNames().begin(), LoraTargetNames().end(), t) != LoraTargetNames().end()) {
          targets.insert(t);
        } else {
          return InvalidArgumentError("lora_target: unknown module '" + t +
                                      "' (allowed: all, q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, "
                                      "down_proj, q_a_proj, q_b_proj, kv_a_proj_with_mqa, kv_b_proj)");
        }
      }
    }
    for (const auto& item : lm->named_modules("", false)) {
      auto lin = std::dynamic_pointer_cast<model::LinearImpl>(item.value());
      if (!lin || !targets.count(LastComponent(item.key())) || MlpOutsideTheExperts(lm, item.key())) continue;
      if (lora.use_dora && item.key().find(".mlp.experts.") != std::string::npos) {
        return InvalidArgumentError(
            "use_dora: DoRA on the routed experts of a mixture-of-experts model is not "
            "supported (peft does not apply it to experts either): leave the expert "
            "projections out of lora_target, or use plain LoRA");
      }
      if (lora.pissa && (lin->Layout("weight").sharded() || lin->quantized() || lin->quantized8())) {
        return InvalidArgumentError(
            "pissa_init: PiSSA needs each whole dense weight for its SVD: under tensor parallelism "
            "(tensor_model_parallel_size > 1) or on a quantized base it is not built; use data or pipeline "
            "parallelism");
      }
            // PiSSA's randomized SVD draws its start from a generator seeded by the module's name alone, so every later
      // load of the adapter (eval, logits, export, resume) recomputes the same residual base.
      lin->EnableLora(lora, ModuleSeed(lora.pissa ? kPissaSeed : seed, item.key()));
    }
    // additional_target (peft's modules_to_save): whole weights trained next to the adapters.
    const std::vector<std::string>& saved = adapter ? adapter->modules_to_save : ft.additional_target;
    if (lm->config().tie_word_embeddings && std::find(saved.begin(), saved.end(), "lm_head") != saved.end()) {
      return InvalidArgumentError(
          "additional_target: lm_head is tied to embed_tokens in this model "
          "(tie_word_embeddings): list embed_tokens only");
    }
    if (adapter) RETURN_IF_ERROR(ApplyPeftWeights(lm, *adapter));
    // LoRA+ (LLaMA-Factory's create_loraplus_optimizer): lora_B in its own group at learning_rate x ratio.
    const double lora_b_scale = ft.loraplus_lr_ratio > 0 ? ft.loraplus_lr_ratio : 1.0;
    for (auto& item : lm->named_parameters(true)) {
      const std::string module = LastComponent(item.key().substr(0, item.key().rfind('.')));
      if (item.key().find(".lora_") == std::string::npos &&
          std::find(saved.begin(), saved.end(), module) != saved.end()) {
        item.value().set_requires_grad(true);  // LoRA+ keeps it in the base group (2-D, not lora_B)
        trainable.push_back({item.key(), item.value(), optim::DecayParameter(item.key())});
        continue;
      }
      if (item.key().find(".lora_") == std::string::npos) continue;
      item.value().set_requires_grad(true);
      // LLaMA-Factory puts lora_B and every 1-D LoRA parameter (DoRA's magnitude) in the LoRA+ group.
      const bool lora_b = item.key().find(".lora_B.") != std::string::npos || item.value().dim() == 1;
      trainable.push_back({item.key(), item.value(), /*decay=*/true, lora_b ? lora_b_scale : 1.0});
    }
    if (trainable.empty()) return InvalidArgumentError("lora_target: no module of the model matches the targets");
    return trainable;
  }

  std::set<int> train_layers;
  if (ft.type == jobspec::FinetuningType::kFreeze) {
    const int n = ft.freeze_trainable_layers;
    if (n == 0 || std::abs(n) > layers) {
      return InvalidArgumentError("freeze_trainable_layers: " + std::to_string(n) + " is not within 1.." +
                                  std::to_string(layers) + " (or its negative) for a model of " +
                                  std::to_string(layers) + " layers");
    }
    for (int i = 0; i < std::abs(n); ++i) train_layers.insert(n > 0 ? static_cast<int>(layers) - 1 - i : i);
  }
  const bool all_modules = std::find(ft.freeze_trainable_modules.begin(), ft.freeze_trainable_modules.end(), "all") !=
                           ft.freeze_trainable_modules.end();
  for (auto& item : lm->named_parameters(true)) {
    const std::string& name = item.key();
    if (ft.type == jobspec::FinetuningType::kFreeze) {
      const int layer = LayerIndexOf(name);
      if (layer < 0 || !train_layers.count(layer)) continue;
      if (!all_modules) {
        bool match = false;
        for (const auto& m : ft.freeze_trainable_modules) match |= name.find("." + m + ".") != std::string::npos;
        if (!match) continue;
      }
    }
    item.value().set_requires_grad(true);
    trainable.push_back({name, item.value(), optim::DecayParameter(name)});
  }
  if (trainable.empty()) return InvalidArgumentError("freeze_trainable_modules: no parameter matches");
  return trainable;
}

}  // namespace anneal::train
