#include "trainer/train/checkpointer.h"

#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "common/durable_dirs.h"
#include "trainer/export/peft.h"
#include "trainer/train/file_gather.h"
#include "trainer/train/finetune.h"
#include "trainer/train/reward.h"

namespace anneal::train {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

StatusOr<bool> TrainerOwnsRetention() {
  const char* v = std::getenv("ANNEAL_CHECKPOINT_RETENTION");
  const std::string owner = v == nullptr ? "" : v;
  if (owner.empty() || owner == "trainer") return true;
  if (owner == "coordinator") return false;
  return InvalidArgumentError("environment ANNEAL_CHECKPOINT_RETENTION='" + owner +
                              "' is not one of: coordinator (an agent launched this trainer), trainer");
}

}  // namespace

StatusOr<Checkpointer> Checkpointer::Make(const jobspec::JobSpec& spec, const Runtime& rt, const EventSink& events) {
  Checkpointer c;
  ASSIGN_OR_RETURN(c.owns_retention_, TrainerOwnsRetention());
  c.spec_ = &spec;
  c.rt_ = &rt;
  c.events_ = &events;
  c.out_ = spec.train.output_dir;
  return c;
}

StatusOr<std::optional<std::string>> Checkpointer::ResumeDir() const {
  const auto& ts = spec_->train;
  if (rt_->rank == 0) RETURN_IF_ERROR(CleanDirectoryLeftovers(out_));
  if (!ts.resume_from_checkpoint.empty()) {
    ASSIGN_OR_RETURN(std::string dir, checkpoint::ResolveCheckpoint(out_, ts.resume_from_checkpoint));
    return std::optional<std::string>(dir);
  }
  if (!checkpoint::ListCheckpoints(out_).empty() && !ts.overwrite_output_dir) {
    return FailedPreconditionError("output_dir " + out_ +
                                   " already holds checkpoints; set resume_from_checkpoint: "
                                   "latest to continue, or overwrite_output_dir: true to start over");
  }
  return std::optional<std::string>();
}

StatusOr<Progress> Checkpointer::Restore(const std::string& dir, const TrainableSet& trainable, TrainerOptimizer& opt,
                                         Progress progress) const {
  auto manifest = checkpoint::VerifyCheckpoint(dir);
  if (!manifest.ok()) {
    auto prev = checkpoint::PreviousCheckpoint(out_, dir);
    return Status(manifest.status().code(),
                  "cannot resume: " + manifest.status().message() +
                      (prev ? "; the previous checkpoint " + *prev + " is offered: set resume_from_checkpoint: " + *prev
                            : std::string("; no earlier checkpoint exists")));
  }
  const json& md = manifest->metadata;
  progress.step = md.value("step", int64_t{0});
  progress.start_step = progress.step;
  progress.consumed = md.value("consumed_samples", int64_t{0});
  progress.total_tokens = md.value("total_tokens", int64_t{0});
  progress.attempt_tokens = 0;
  if (const auto es = md.find("early_stopping"); es != md.end() && es->is_object()) {
    progress.best_metric = es->value("best_metric", 0.0);
    progress.best_step = es->value("best_step", int64_t{0});
    progress.evals_without_improvement = es->value("evals_without_improvement", int64_t{0});
  }
  RETURN_IF_ERROR(ReadTrainingState(trainable, opt, dir, md.value("optimizer_steps", progress.step)));
  std::cerr << c10::str("[train] resumed from ", dir, " at step ", progress.step, "\n");
  return progress;
}

// HF's DefaultFlowCallback: steps saves every save_steps (none when 0) and at the end; epoch at each epoch's end
// (the last, possibly partial, epoch ends with the run); no never.
bool Checkpointer::Due(const Progress& p) const {
  const jobspec::TrainSpec& ts = spec_->train;
  switch (ts.save_strategy) {
    case jobspec::SaveStrategy::kNo:
      return false;
    case jobspec::SaveStrategy::kSteps:
      return p.last() || (ts.save_steps > 0 && p.step % ts.save_steps == 0);
    case jobspec::SaveStrategy::kEpoch:
      return p.epoch_end() || p.last();
  }
  return false;
}

Status Checkpointer::Save(const Progress& p, const json& metrics, model::CausalLM& lm, const TrainableSet& trainable,
                          const TrainerOptimizer& opt) const {
  const bool leader = rt_->rank == 0;
  const std::string tmp = checkpoint::TmpCheckpointDir(out_, p.step);
  std::optional<checkpoint::CheckpointWriter> writer;
  if (leader) {
    ASSIGN_OR_RETURN(writer, checkpoint::CheckpointWriter::Begin(out_, p.step));
  }
  // Nodes with their own disk write into their own copy of the directory; rank 0 gathers those files before
  // it commits (no shared filesystem). Probe ends with a barrier.
  ASSIGN_OR_RETURN(FileGather gather, FileGather::Probe(*rt_, tmp, /*reset_remote=*/true));
  RETURN_IF_ERROR(WriteTrainingState(trainable, opt, *rt_, tmp));
  rt_->Barrier();
  ASSIGN_OR_RETURN(int64_t gathered, gather.Gather(*rt_, [](const std::string&) { return true; }));
  if (gathered > 0) {
    std::cerr << c10::str("[train] checkpoint-", p.step, ": ", gathered, " file(s) gathered from ",
                          gather.senders().size(), " node(s) without a shared filesystem\n");
  }
  if (leader) RETURN_IF_ERROR(Commit(p, metrics, lm, opt, *writer));
  rt_->Barrier();
  gather.RemoveRemoteCopy();
  return Status::Ok();
}

Status Checkpointer::Commit(const Progress& p, const json& metrics, model::CausalLM& lm, const TrainerOptimizer& opt,
                            checkpoint::CheckpointWriter& writer) const {
  RETURN_IF_ERROR(CheckStateFiles(*rt_, writer.dir()));
  const jobspec::JobSpec& spec = *spec_;
  const bool lora = spec.finetuning.type == jobspec::FinetuningType::kLora, reward = spec.finetuning.stage == "rm";
  if (lora || reward) {
    ASSIGN_OR_RETURN(auto tensors, ReadTrainable(writer.dir()));
    if (lora) {
      // A PEFT copy of the adapter, so a checkpoint loads in peft (and as adapter_name_or_path) as it is.
      ASSIGN_OR_RETURN(model::LoraOptions options, LoraOptionsOf(lm));
      RETURN_IF_ERROR(WritePeftAdapter(tensors, options, writer.dir(), spec.model.model_name_or_path));
    }
    // Stage rm: the value head as LLaMA-Factory's checkpoints hold it (FixValueHeadModelCallback).
    if (reward) RETURN_IF_ERROR(WriteValueHead(tensors, writer.dir()));
  }
  json layout = rt_->LayoutJson();
  layout["zero_stage"] = opt.stage();  // the stage in effect (0 with one data-parallel rank), 2 included
  json md = {{"step", p.step},
             {"consumed_samples", p.consumed},
             {"total_tokens", p.total_tokens},
             {"optimizer_steps", opt.step_count()},
             {"epoch", p.epoch()},
             {"total_steps", p.total_steps},
             {"finetuning_type", std::string(jobspec::FinetuningTypeName(spec.finetuning.type))},
             {"layout", layout},
             {"config_hash", rt_->config_hash},
             {"metrics", metrics}};
  if (p.best_metric) {  // early_stopping.h: a resumed run stops where the uninterrupted one would
    md["early_stopping"] = {{"best_metric", *p.best_metric},
                            {"best_step", p.best_step},
                            {"evals_without_improvement", p.evals_without_improvement}};
  }
  std::vector<checkpoint::FileEntry> files;
  ASSIGN_OR_RETURN(std::string final_dir, writer.Commit(md, &files));
  json listed = json::array();
  for (const auto& f : files) listed.push_back({{"path", f.path}, {"size", f.size}, {"sha256", f.sha256}});
  events_->Emit("checkpoint", {{"step", p.step},
                               {"path", fs::absolute(final_dir).string()},
                               {"files", listed},
                               {"layout", layout},
                               {"metrics", metrics}});
  if (!owns_retention_) return Status::Ok();
  ASSIGN_OR_RETURN(std::vector<int64_t> deleted,
                   checkpoint::ApplyRetention(out_, jobspec::RetentionPolicy::Of(spec.train)));
  for (int64_t step : deleted) std::cerr << c10::str("[train] retention: deleted checkpoint-", step, "\n");
  return Status::Ok();
}

StatusOr<int64_t> Checkpointer::BestCheckpointStep() const {
  int64_t best_step = 0;
  if (rt_->rank == 0) {
    std::optional<double> best;
    for (const auto& [step, dir] : checkpoint::ListCheckpoints(out_)) {
      auto manifest = checkpoint::ReadManifest(dir);
      if (!manifest.ok()) continue;  // an unreadable checkpoint cannot be the one exported
      const json metrics = manifest->metadata.value("metrics", json::object());
      const auto m = metrics.find(spec_->train.metric_for_best_model);
      if (m == metrics.end() || !m->is_number()) continue;
      const double v = m->get<double>();
      if (!best || (spec_->train.greater_is_better ? v > *best : v < *best)) {
        best = v;
        best_step = step;
      }
    }
  }
  return static_cast<int64_t>(rt_->SumOverWorld(static_cast<double>(best_step), rt_->rank == 0));
}

Status Checkpointer::LoadWeights(int64_t step, const TrainableSet& trainable, TrainerOptimizer& opt) const {
  const std::string dir = checkpoint::CheckpointDir(out_, step);
  auto manifest = checkpoint::ReadManifest(dir);
  if (rt_->AnyOverWorld(!manifest.ok())) {
    return FailedPreconditionError(
        "load_best_model_at_end: " + dir + " (the best checkpoint) is not readable from every rank" +
        (manifest.ok() ? std::string() : ": " + manifest.status().message()) +
        "; its weights are there (use it as adapter_name_or_path or export it); the last weights were not exported");
  }
  return ReadTrainingState(trainable, opt, dir, manifest->metadata.value("optimizer_steps", step));
}

}  // namespace anneal::train
