// Loading, saving and initialising CausalLM weights in Hugging Face format.
#include <filesystem>
#include <map>
#include <set>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "common/fsutil.h"
#include "trainer/model/decoder.h"
#include "trainer/model/safetensors.h"

namespace anneal::model {

StatusOr<CausalLM> LoadCausalLM(const std::string& model_dir, const LoadOptions& options) {
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(model_dir));
  ASSIGN_OR_RETURN(SafetensorsCheckpoint ck, SafetensorsCheckpoint::Open(model_dir, "model"));
  const torch::ScalarType dtype = options.dtype.value_or(DtypeFromName(config.torch_dtype));
  CausalLM lm(config, torch::TensorOptions().dtype(dtype), options.factory, options.stage);
  const StageSpec& stage = lm->stage();
  std::set<std::string> expected;
  // QLoRA: the linear layers to store 4-bit, by weight name (every Linear but the head, as transformers'
  // bitsandbytes integration converts every nn.Linear but the output embedding).
  std::map<std::string, std::shared_ptr<LinearImpl>> quantize;
  if (options.quantize_linears) {
    if (lm->HasSparseLayers()) {
      return InvalidArgumentError(c10::str(
          model_dir, ": quantization_bit: quantized (QLoRA) training of a mixture-of-experts model (", config.model_type,
          ") is not built: use finetuning_type: lora without quantization_bit"));
    }
    for (const auto& item : lm->named_modules("", /*include_self=*/false)) {
      auto lin = std::dynamic_pointer_cast<LinearImpl>(item.value());
      if (lin && lin->spec().role != "lm_head") quantize[item.key() + ".weight"] = lin;
    }
  }
  {
    torch::NoGradGuard no_grad;
    for (const LayoutParam& p : lm->LayoutParameters()) {
      const std::string& name = p.name;
      expected.insert(name);
      const SafetensorsEntry* e = ck.Entry(name);
      if (e == nullptr) {
        return NotFoundError(c10::str(model_dir, ": weight '", name, "' is missing from the checkpoint"));
      }
      const std::vector<int64_t> full = p.layout.FullShape(p.tensor.sizes());
      if (e->shape != full) {
        return InvalidArgumentError(c10::str(model_dir, ": weight '", name, "' has shape ", c10::IntArrayRef(e->shape), " but config.json implies ", c10::IntArrayRef(full)));
      }
      ASSIGN_OR_RETURN(at::Tensor t, ck.Tensor(name));
      if (auto q = quantize.find(name); q != quantize.end()) {
        // Quantized from the load dtype, as bitsandbytes quantizes the weight transformers loaded.
        Status st = q->second->QuantizeBase(t.to(dtype), *options.quantize_linears);
        if (!st.ok()) return InvalidArgumentError(c10::str(model_dir, ": weight '", name, "': ", st.message()));
        continue;
      }
      p.tensor.copy_(p.layout.Slice(t));  // this rank's piece; converts dtype
    }
  }
  // Weights held by other pipeline stages (or expert-parallel ranks) are expected in the file but not here: they
  // are never read.
  auto other_stage = [&](const std::string& name) {
    if (name.rfind("model.layers.", 0) == 0) {
      const int64_t i = std::stoll(name.substr(13));
      if (i < stage.layer_begin || i >= stage.layer_end) return true;
    }
    if (name == "model.embed_tokens.weight") return !lm->model->embed_tokens;
    if (name == "model.norm.weight") return !stage.last;
    // Routed experts held by the other ranks of this rank's expert-parallel group.
    if (auto e = RoutedExpertOf(name)) return !stage.experts.Holds(*e, config.moe.num_experts);
    return false;
  };
  for (const std::string& name : ck.Names()) {
    // Tied checkpoints sometimes still carry lm_head.weight; rotary caches are buffers in old checkpoints.
    if (expected.count(name) || name == "lm_head.weight" || name.find("rotary_emb.inv_freq") != std::string::npos ||
        other_stage(name)) {
      continue;
    }
    return InvalidArgumentError(c10::str(model_dir, ": unexpected weight '", name, "' (not part of a ", config.model_type, " model with this config.json)"));
  }
  lm->to(options.device);
  return lm;
}

Status SaveCausalLM(CausalLM& lm, const std::string& out_dir, uint64_t max_shard_bytes) {
  RETURN_IF_ERROR(MakeDirs(out_dir));
  RETURN_IF_ERROR(WriteSafetensorsCheckpoint(out_dir, "model", lm->HfStateDict(), max_shard_bytes));
  return WriteFileAtomic(out_dir + "/config.json", ModelConfigToJson(lm->config()).dump(2) + "\n");
}

void InitWeights(CausalLM& lm, uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const double std = lm->config().initializer_range;
  for (auto& item : lm->named_parameters(true)) {
    const std::string& name = item.key();
    at::Tensor p = item.value();
    if (name.find("lora_") != std::string::npos) continue;
    if (name.find("norm.weight") != std::string::npos || name.find("layernorm.weight") != std::string::npos) {
      p.fill_(1.0);
    } else if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) {
      p.zero_();
    } else {
      // Draw in fp32 on CPU so the values do not depend on the target dtype or device.
      at::Tensor w = at::empty(p.sizes(), at::kFloat).normal_(0.0, std, gen);
      p.copy_(w);
    }
  }
}

}  // namespace anneal::model
