// MergeAndExport (merge.h): the three forms of adapter, and the output directory's safety checks.
#include "trainer/export/merge.h"

#include <torch/torch.h>

#include <filesystem>
#include <map>

#include "trainer/checkpoint/checkpoint.h"
#include "trainer/export/peft.h"
#include "trainer/model/decoder.h"
#include "trainer/train/finetune.h"
#include "trainer/train/state_io.h"

namespace anneal::train {
namespace {

namespace fs = std::filesystem;

// True when one of the two directories is the other or lies inside it (symlinks resolved where they exist).
bool Overlap(const std::string& a, const std::string& b) {
  std::error_code ec;
  const fs::path pa = fs::weakly_canonical(fs::absolute(a), ec).lexically_normal();
  const fs::path pb = fs::weakly_canonical(fs::absolute(b), ec).lexically_normal();
  auto inside = [](const fs::path& child, const fs::path& parent) {
    auto c = child.begin();
    for (auto p = parent.begin(); p != parent.end(); ++p, ++c) {
      if (p->empty()) continue;  // a trailing separator
      if (c == child.end() || *c != *p) return false;
    }
    return true;
  };
  return inside(pa, pb) || inside(pb, pa);
}

Status CheckOutput(const ExportRequest& r) {
  if (r.out.empty()) return InvalidArgumentError("export: no output directory given");
  if (Overlap(r.out, r.model)) {
    return InvalidArgumentError("export: the output directory " + r.out + " overlaps the base model " + r.model +
                                ", which the export reads: write it elsewhere");
  }
  if (!r.adapter.empty() && Overlap(r.out, r.adapter)) {
    return InvalidArgumentError("export: the output directory " + r.out + " overlaps the adapter " + r.adapter +
                                ", which the export reads: write it elsewhere");
  }
  return Status::Ok();
}

// A full or freeze fine-tuning checkpoint (trainable-stage*.safetensors, any layout) applied on its base model.
Status ApplyCheckpoint(model::CausalLM& lm, const ExportRequest& r) {
  ASSIGN_OR_RETURN(checkpoint::Manifest manifest, checkpoint::VerifyCheckpoint(r.adapter));
  (void)manifest;
  ASSIGN_OR_RETURN(auto trained, ReadTrainable(r.adapter));
  std::map<std::string, at::Tensor> params;
  for (auto& item : lm->named_parameters()) params[item.key()] = item.value();
  // DeepSeek-V3's expert biases, moved by auxiliary-loss-free balancing (trainer/train/expert_bias.h).
  for (auto& item : lm->named_buffers()) params[item.key()] = item.value();
  torch::NoGradGuard no_grad;
  for (const auto& [name, t] : trained) {
    auto it = params.find(name);
    if (it == params.end()) return InvalidArgumentError(r.adapter + ": '" + name + "' is not a weight of " + r.model);
    if (it->second.sizes() != t.sizes()) {
      return InvalidArgumentError(r.adapter + ": '" + name + "' has shape " + c10::str(t.sizes()) + ", " + r.model +
                                  " has " + c10::str(it->second.sizes()));
    }
    it->second.copy_(t);
  }
  return Status::Ok();
}

}  // namespace

ExportRequest ExportRequestFor(const jobspec::JobSpec& spec) {
  return {.model = spec.model.model_name_or_path,
          .adapter = spec.model.adapter_name_or_path,
          .out = spec.export_.dir,
          .max_shard_bytes = static_cast<uint64_t>(spec.export_.size_gb) * 1'000'000'000ull};
}

StatusOr<std::string> MergeAndExport(const ExportRequest& r) {
  RETURN_IF_ERROR(CheckOutput(r));
  ASSIGN_OR_RETURN(model::CausalLM lm, model::LoadCausalLM(r.model));
  std::string what = "model";
  if (!r.adapter.empty()) {
    if (fs::exists(r.adapter + "/adapter_config.json")) {
      jobspec::JobSpec spec;  // ApplyFinetuning reads the adapter's own options (rank, alpha, targets)
      spec.model.model_name_or_path = r.model;
      spec.model.adapter_name_or_path = r.adapter;
      spec.finetuning.type = jobspec::FinetuningType::kLora;
      ASSIGN_OR_RETURN(auto unused, ApplyFinetuning(lm, spec, 0));
      what = "merged model";
    } else if (fs::exists(r.adapter + "/manifest.json")) {
      RETURN_IF_ERROR(ApplyCheckpoint(lm, r));
    } else {
      return InvalidArgumentError("export: " + r.adapter +
                                  " is neither a PEFT adapter (adapter_config.json) nor a checkpoint (manifest.json)");
    }
  }
  RETURN_IF_ERROR(ExportMergedModel(lm, r.out, r.model, r.max_shard_bytes));
  return what + " written to " + fs::absolute(r.out).string();
}

}  // namespace anneal::train
