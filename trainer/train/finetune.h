// Turns a loaded model into a fine-tuning target: LoRA adapters, full fine-tuning, or freeze (partial) tuning,
// and lists the trainable parameters (with their weight-decay group) for the optimizer.
//
//   lora   : base frozen; LoRA on lora_target ("all" = every linear except lm_head and MoE routers, as
//            LLaMA-Factory; or names among q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj and MLA's
//            q_a_proj, q_b_proj, kv_a_proj_with_mqa, kv_b_proj; in mixture-of-experts models gate_proj, up_proj
//            and down_proj adapt the routed experts only, as peft 0.21 on transformers 5 does: dense-layer MLPs
//            and shared experts stay frozen); or continue from an existing PEFT adapter
//            (adapter_name_or_path: its adapter_config.json decides rank, alpha, targets).
//   full   : every parameter trainable (bf16 parameters get fp32 master weights in the optimizer).
//   freeze : the last freeze_trainable_layers layers trainable (negative: the first -N), restricted to
//            freeze_trainable_modules ("all", or module names such as self_attn, mlp).
//
// Thread-safety: one thread at a time.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "jobspec/jobspec.h"
#include "trainer/model/decoder.h"
#include "trainer/optim/adamw.h"

namespace anneal::train {

// Known LoRA target names (lm_head excluded, as LLaMA-Factory's "all").
const std::vector<std::string>& LoraTargetNames();

StatusOr<std::vector<optim::TrainableParam>> ApplyFinetuning(model::CausalLM& lm, const jobspec::JobSpec& spec,
                                                             uint64_t seed);

// The quantized storage of the base the spec asks for (quantization_bit: 4 or 8), or none.
StatusOr<std::optional<model::BaseQuantOptions>> BaseQuantization(const jobspec::JobSpec& spec);

// Every Linear with LoRA, with its HF module name (e.g. "model.layers.0.self_attn.q_proj").
std::vector<std::pair<std::string, model::Linear>> LoraModules(model::CausalLM& lm);
// The LoRA options the model's adapters were enabled with (FAILED_PRECONDITION when it has none).
StatusOr<model::LoraOptions> LoraOptionsOf(model::CausalLM& lm);

}  // namespace anneal::train
