// anneal-train train / eval / export.
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>
#include <map>

#include "common/shutdown.h"
#include "jobspec/jobspec.h"
#include "trainer/checkpoint/checkpoint.h"
#include "trainer/cli/commands.h"
#include "trainer/eval/eval.h"
#include "trainer/export/peft.h"
#include "trainer/train/events.h"
#include "trainer/train/finetune.h"
#include "trainer/train/preemption.h"
#include "trainer/train/state_io.h"
#include "trainer/train/trainer.h"

namespace anneal::trainer {
namespace {

struct JobArgs {
  std::string config;
  std::vector<std::string> overrides;
};

// Reports a failure: one line on stderr, a "finished" error event, and the exit code.
int Report(const Status& st, bool config_error) {
  std::cerr << "error: " << st.message() << "\n";
  int rank = 0;
  if (const char* r = std::getenv("RANK")) rank = std::atoi(r);
  train::EventSink::FromEnvironment(rank).Emit("finished", {{"status", "error"}, {"message", st.message()}});
  if (st.code() == StatusCode::kCancelled) return 143;
  return config_error ? 2 : 1;
}

StatusOr<jobspec::JobSpec> LoadSpec(const JobArgs& a, jobspec::JobKind expected) {
  ASSIGN_OR_RETURN(jobspec::JobSpec spec, jobspec::LoadJobSpecFile(a.config, a.overrides));
  for (const auto& w : spec.warnings) std::cerr << "warning: " << w << "\n";
  if (spec.kind != expected) {
    return InvalidArgumentError(a.config + ": kind is '" + std::string(jobspec::JobKindName(spec.kind)) +
                                "', this command runs '" + std::string(jobspec::JobKindName(expected)) + "' jobs");
  }
  return spec;
}

int RunWithBoundary(const std::function<Status()>& body) {
  // LibTorch reports errors (including a dead peer's collective timeout) as exceptions: turn them into a
  // failed task with the message instead of a crash.
  try {
    Status st = body();
    return st.ok() ? 0 : Report(st, false);
  } catch (const std::exception& e) {
    return Report(InternalError(e.what()), false);
  }
}

struct ExportArgs {
  std::string model, adapter, out;
  uint64_t max_shard_mb = 5120;
};

// A full or freeze fine-tuning checkpoint (trainable-stage*.safetensors, any layout) applied on its base model.
Status ExportCheckpoint(const ExportArgs& ex) {
  ASSIGN_OR_RETURN(checkpoint::Manifest manifest, checkpoint::VerifyCheckpoint(ex.adapter));
  (void)manifest;
  ASSIGN_OR_RETURN(model::CausalLM lm, model::LoadCausalLM(ex.model));
  ASSIGN_OR_RETURN(auto trained, train::ReadTrainable(ex.adapter));
  std::map<std::string, at::Tensor> params;
  for (auto& item : lm->named_parameters()) params[item.key()] = item.value();
  torch::NoGradGuard no_grad;
  for (const auto& [name, t] : trained) {
    auto it = params.find(name);
    if (it == params.end()) return InvalidArgumentError(ex.adapter + ": '" + name + "' is not a weight of " + ex.model);
    if (it->second.sizes() != t.sizes()) {
      return InvalidArgumentError(ex.adapter + ": '" + name + "' has shape " + c10::str(t.sizes()) + ", " + ex.model +
                                  " has " + c10::str(it->second.sizes()));
    }
    it->second.copy_(t);
  }
  return train::ExportMergedModel(lm, ex.out, ex.model, ex.max_shard_mb << 20);
}

}  // namespace

void AddTrainCommands(CLI::App& app) {
  auto train_args = std::make_shared<JobArgs>();
  CLI::App* train = app.add_subcommand("train", "Fine-tune (LoRA, full or freeze) as a job config says");
  train->add_option("--config", train_args->config, "Job YAML (native or LLaMA-Factory spelling)")->required();
  train->add_option("--set", train_args->overrides, "Override a key: key=value (repeatable)");
  train->callback([train_args] {
    InstallShutdownHandlers();
    train::InstallPreemptHandler();  // first: a SIGUSR1 during setup is kept for the first step boundary
    auto spec = LoadSpec(*train_args, jobspec::JobKind::kTrain);
    if (!spec.ok()) {
      ExitCode() = Report(spec.status(), true);
      return;
    }
    train::TrainOutcome outcome = train::TrainOutcome::kCompleted;
    ExitCode() = RunWithBoundary([&]() -> Status {
      ASSIGN_OR_RETURN(outcome, train::RunTraining(*spec));
      return Status::Ok();
    });
    // Preempted: the checkpoint is committed and the run can resume from it ("try again later").
    if (ExitCode() == 0 && outcome == train::TrainOutcome::kPreempted) ExitCode() = train::kPreemptedExitCode;
  });

  auto eval_args = std::make_shared<JobArgs>();
  CLI::App* eval =
      app.add_subcommand("eval", "Evaluate a model or adapter: loss/perplexity, MMLU-style accuracy, samples");
  eval->add_option("--config", eval_args->config, "Job YAML with kind: eval")->required();
  eval->add_option("--set", eval_args->overrides, "Override a key: key=value (repeatable)");
  eval->callback([eval_args] {
    InstallShutdownHandlers();
    auto spec = LoadSpec(*eval_args, jobspec::JobKind::kEval);
    if (!spec.ok()) {
      ExitCode() = Report(spec.status(), true);
      return;
    }
    ExitCode() = RunWithBoundary([&]() -> Status {
      ASSIGN_OR_RETURN(nlohmann::json r, eval::RunEvaluation(*spec));
      std::cout << r.dump(2) << "\n";
      return Status::Ok();
    });
  });

  auto ex = std::make_shared<ExportArgs>();
  CLI::App* exp = app.add_subcommand("export",
                                     "Merge a PEFT adapter (or a checkpoint) into its base model and write "
                                     "an HF model");
  exp->add_option("--model", ex->model, "Base model directory")->required();
  exp->add_option("--adapter", ex->adapter,
                  "PEFT adapter directory, or a checkpoint-N directory of a LoRA, full or freeze run (any layout)")
      ->required();
  exp->add_option("--out", ex->out, "Output directory for the merged model")->required();
  exp->add_option("--max-shard-mb", ex->max_shard_mb, "Shard size limit in MiB");
  exp->callback([ex] {
    ExitCode() = RunWithBoundary([&]() -> Status {
      const bool is_adapter = std::filesystem::exists(ex->adapter + "/adapter_config.json");
      if (!is_adapter && std::filesystem::exists(ex->adapter + "/manifest.json")) {
        RETURN_IF_ERROR(ExportCheckpoint(*ex));
        std::cout << "model written to " << std::filesystem::absolute(ex->out).string() << "\n";
        return Status::Ok();
      }
      jobspec::JobSpec spec;
      spec.model.model_name_or_path = ex->model;
      spec.model.adapter_name_or_path = ex->adapter;
      spec.finetuning.type = jobspec::FinetuningType::kLora;
      ASSIGN_OR_RETURN(model::CausalLM lm, model::LoadCausalLM(ex->model));
      ASSIGN_OR_RETURN(auto unused, train::ApplyFinetuning(lm, spec, 0));
      RETURN_IF_ERROR(train::ExportMergedModel(lm, ex->out, ex->model, ex->max_shard_mb << 20));
      std::cout << "merged model written to " << std::filesystem::absolute(ex->out).string() << "\n";
      return Status::Ok();
    });
  });
}

}  // namespace anneal::trainer
