// anneal-train train / eval / export.
#include <torch/torch.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>

#include "common/shutdown.h"
#include "jobspec/jobspec.h"
#include "trainer/cli/commands.h"
#include "trainer/eval/eval.h"
#include "trainer/export/merge.h"
#include "trainer/train/events.h"
#include "trainer/train/preemption.h"
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
  JobArgs job;  // --config: an export job's spec
  train::ExportRequest request;
  uint64_t max_shard_mb = 0;
};

// `anneal-train export --config job.yaml`: the job's events (started, finished) as the agent expects them.
Status RunExportJob(const jobspec::JobSpec& spec) {
  train::EventSink events = train::EventSink::FromEnvironment(0);
  events.Emit("started", {{"world_size", 1}, {"pid", ::getpid()}});
  ASSIGN_OR_RETURN(std::string written, train::MergeAndExport(train::ExportRequestFor(spec)));
  if (spec.finetuning.stage == "rm") {  // LLaMA-Factory's export_model: the reward model's value head goes along
    ASSIGN_OR_RETURN(std::string head, train::CopyValueHead(spec.model.model_name_or_path,
                                                            spec.model.adapter_name_or_path, spec.export_.dir));
    written += head.empty() ? "; stage rm: no value head to copy" : "; value head copied to " + head;
  }
  std::cout << written << "\n";
  events.Emit(
      "finished",
      {{"status", "ok"}, {"output", std::filesystem::absolute(spec.export_.dir).string()}, {"message", written}});
  return Status::Ok();
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
                                     "Merge a PEFT adapter (or a checkpoint) into its base model and write an HF "
                                     "model: an export job's --config, or --model/--adapter/--out");
  CLI::Option* config = exp->add_option("--config", ex->job.config,
                                        "Job YAML of kind export (LLaMA-Factory's export "
                                        "config: export_dir, export_size)");
  exp->add_option("--set", ex->job.overrides, "Override a key of --config: key=value (repeatable)")->needs(config);
  CLI::Option* model = exp->add_option("--model", ex->request.model, "Base model directory")->excludes(config);
  exp->add_option("--adapter", ex->request.adapter,
                  "PEFT adapter directory, or a checkpoint-N directory of a LoRA, full or freeze run (any layout)")
      ->excludes(config);
  CLI::Option* out =
      exp->add_option("--out", ex->request.out, "Output directory for the merged model")->excludes(config);
  exp->add_option("--max-shard-mb", ex->max_shard_mb, "Shard size limit in MiB (default 5 GB)")->excludes(config);
  model->needs(out);
  out->needs(model);
  exp->callback([ex, config] {
    InstallShutdownHandlers();
    if (config->count() > 0) {
      auto spec = LoadSpec(ex->job, jobspec::JobKind::kExport);
      if (!spec.ok()) {
        ExitCode() = Report(spec.status(), true);
        return;
      }
      ExitCode() = RunWithBoundary([&] { return RunExportJob(*spec); });
      return;
    }
    if (ex->request.model.empty()) {
      ExitCode() = Report(InvalidArgumentError("export: give --config JOB.yaml, or --model and --out"), true);
      return;
    }
    if (ex->max_shard_mb > 0) ex->request.max_shard_bytes = ex->max_shard_mb << 20;
    ExitCode() = RunWithBoundary([&]() -> Status {
      ASSIGN_OR_RETURN(std::string written, train::MergeAndExport(ex->request));
      std::cout << written << "\n";
      return Status::Ok();
    });
  });
}

}  // namespace anneal::trainer
