// Checkpointer: the trainer's checkpoint component. It decides when a checkpoint is due (save_strategy as HF's
// TrainingArguments: steps = every save_steps (0: none) and at the last step; epoch = at each epoch's end and
// the last step; no = never), writes one with the barrier protocol, resumes from one, and — only when no coordinator
// owns retention — deletes old ones.
//
// Save protocol (a collective over the world group):
//   rank 0: CheckpointWriter::Begin (<out>/.tmp-checkpoint-N/)
//   every rank: FileGather::Probe (does my node see rank 0's directory?)  ── barrier ──
//   every rank: its share of trainable / optimizer files (state_io.h)   ── barrier ──
//   nodes with their own disk: their files sent to rank 0 (FileGather; nothing on a shared filesystem)
//   rank 0: all files present (CheckStateFiles), PEFT copy for LoRA, manifest + atomic rename (the commit),
//           the `checkpoint` event, then retention if it owns it          ── barrier ──
//   senders: their own copy of the temporary directory removed
//
// Retention has one owner. Launched by an agent (ANNEAL_CHECKPOINT_RETENTION=coordinator) the coordinator's
// registry decides and the agent deletes; the trainer never deletes. Standalone (variable unset, or "trainer")
// rank 0 applies the same policy (jobspec/retention.h) after each commit. Any other value is an error.
//
// Thread-safety: one thread at a time.
//
// Example:
//   ASSIGN_OR_RETURN(Checkpointer ckpt, Checkpointer::Make(spec, rt, events));
//   ASSIGN_OR_RETURN(std::optional<std::string> resume, ckpt.ResumeDir());
//   if (ckpt.Due(progress)) RETURN_IF_ERROR(ckpt.Save(progress, {...}, lm, trainable, opt));
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "common/status.h"
#include "jobspec/jobspec.h"
#include "trainer/checkpoint/checkpoint.h"
#include "trainer/train/events.h"
#include "trainer/train/progress.h"
#include "trainer/train/runtime.h"
#include "trainer/train/state_io.h"
#include "trainer/train/zero.h"

namespace anneal::train {

class Checkpointer {
 public:
  // INVALID_ARGUMENT for an unknown ANNEAL_CHECKPOINT_RETENTION.
  static StatusOr<Checkpointer> Make(const jobspec::JobSpec& spec, const Runtime& rt, const EventSink& events);

  // The checkpoint to resume from: resume_from_checkpoint resolved ("latest" or a path), or none. Refuses an
  // output_dir that already holds checkpoints unless resuming or overwrite_output_dir (as HF does). Rank 0
  // first clears leftovers of an interrupted delete or replace.
  StatusOr<std::optional<std::string>> ResumeDir() const;
  // Verifies `dir` (DATA_LOSS naming the file, offering the previous checkpoint) and loads the trainable
  // parameters, this rank's optimizer state and the RNG; returns the progress it recorded.
  StatusOr<Progress> Restore(const std::string& dir, const TrainableSet& trainable, TrainerOptimizer& opt,
                             Progress progress) const;

  bool Due(const Progress& p) const;
  // Writes and commits checkpoint-<p.step> (collective). `metrics` are recorded with it (loss, eval_loss...).
  Status Save(const Progress& p, const nlohmann::json& metrics, model::CausalLM& lm, const TrainableSet& trainable,
              const TrainerOptimizer& opt) const;
  bool owns_retention() const { return owns_retention_; }
  // load_best_model_at_end: the step of the committed checkpoint of this output directory with the best
  // metric_for_best_model (strictly better wins, so the earliest of equals), 0 when none has it. Rank 0 reads the
  // manifests; every rank gets the answer (collective).
  StatusOr<int64_t> BestCheckpointStep() const;
  // Loads checkpoint-<step>'s trainable parameters (and optimizer state) into the model on every rank (collective).
  // FAILED_PRECONDITION when some rank cannot read it (an output directory not shared between nodes).
  Status LoadWeights(int64_t step, const TrainableSet& trainable, TrainerOptimizer& opt) const;

 private:
  Checkpointer() = default;
  // Rank 0, after every rank wrote its files into the writer's directory.
  Status Commit(const Progress& p, const nlohmann::json& metrics, model::CausalLM& lm, const TrainerOptimizer& opt,
                checkpoint::CheckpointWriter& writer) const;

  const jobspec::JobSpec* spec_ = nullptr;
  const Runtime* rt_ = nullptr;
  const EventSink* events_ = nullptr;
  std::string out_;
  bool owns_retention_ = true;
};

}  // namespace anneal::train
