// The training run of `anneal-train train` (LoRA, full or freeze fine-tuning; SFT, pre-training, preference
// (stage dpo: trainer/train/preference.h) or reward modeling (stage rm: trainer/train/reward.h)), as a
// Trainer with named phases, in the manner of torchtitan's train():
//
//   Setup      runtime and layout, data (TrainRows), model + fine-tuning + optimizer, the step plan (micro-batches,
//              total steps, LR schedule), the data-parallel reducer, and the resume point (Checkpointer)
//   Train      while steps remain: TrainStep, then each component decides whether to act —
//                Validator (validation loss), MetricsLogger (trainer_log.jsonl + events), EarlyStopping (stop
//                when eval_loss stalls), Checkpointer (save)
//   Export     the adapter (LoRA) or the model (full / freeze) joined from every stage into output_dir (with
//              load_best_model_at_end, the weights of the best evaluated checkpoint)
//
// One optimizer step = gradient_accumulation_steps micro-batches of per_device_train_batch_size rows on each
// data-parallel rank; the loss is the sum of token losses divided by the label-token count of the whole
// accumulated batch (transformers' num_items_in_batch), clipped by global norm, then AdamW and the schedule.
//
// Resuming (resume_from_checkpoint = path or latest) restores weights, optimizer, schedule position, sampler
// position and RNG state: on CPU fp32 the continued run is bit-identical to an uninterrupted one.
//
// Preemption (trainer/train/preemption.h): after a SIGUSR1 on any rank, all ranks agree at the next step boundary
// (one MAX all-reduce), save a checkpoint there (unless one was just committed or restored at that step, or no
// step was done), rank 0 emits `preempted` {step, checkpoint}, every rank emits `finished` {status: preempted},
// and the run returns TrainOutcome::kPreempted: the command exits kPreemptedExitCode. Resuming from that
// checkpoint continues exactly as if the run had not stopped.
//
// Thread-safety: runs on the calling thread; SIGTERM (common/shutdown.h) stops it at the next step boundary.
//
// Example:
//   ASSIGN_OR_RETURN(TrainOutcome outcome, RunTraining(spec));   // = Trainer::Setup(spec), then Train()
//   if (outcome == TrainOutcome::kPreempted) return kPreemptedExitCode;
#pragma once

#include <memory>
#include <optional>

#include "common/status.h"
#include "jobspec/jobspec.h"
#include "trainer/data/sampler.h"
#include "trainer/optim/schedule.h"
#include "trainer/train/checkpointer.h"
#include "trainer/train/early_stopping.h"
#include "trainer/train/events.h"
#include "trainer/train/expert_bias.h"
#include "trainer/train/grad_reducer.h"
#include "trainer/train/metrics_logger.h"
#include "trainer/train/preference.h"
#include "trainer/train/progress.h"
#include "trainer/train/reward.h"
#include "trainer/train/rows.h"
#include "trainer/train/runtime.h"
#include "trainer/train/state_io.h"
#include "trainer/train/validator.h"
#include "trainer/train/zero.h"

namespace anneal::train {

// How a run that did not fail ended: every step trained and the output exported, or stopped on a preemption
// request with its checkpoint committed.
enum class TrainOutcome { kCompleted, kPreempted };

StatusOr<TrainOutcome> RunTraining(const jobspec::JobSpec& spec);

class Trainer {
 public:
  // Everything up to the first step, including the resume. Errors name what and where (data, model, layout,
  // checkpoint).
  static StatusOr<std::unique_ptr<Trainer>> Setup(const jobspec::JobSpec& spec);
  // Trains the remaining steps, then exports (kCompleted); kPreempted when the ranks agreed to stop on a
  // preemption request (the checkpoint is committed). CANCELLED on SIGTERM/SIGINT (at a step boundary);
  // DATA_LOSS when the loss or gradient norm is not finite.
  StatusOr<TrainOutcome> Train();

 private:
  explicit Trainer(const jobspec::JobSpec& spec) : spec_(spec) {}
  Status SetupData();
  Status SetupModel();
  Status SetupPreference(const model::LoadOptions& load);
  Status SetupReward(std::vector<optim::TrainableParam>* params);
  Status SetupCapacity();
  Status SetupPlan();
  void SetupModelFlops();
  Status Resume();
  StatusOr<StepResult> TrainStep();
  Status Export();
  // load_best_model_at_end: the best evaluated checkpoint's weights into the model before Export.
  Status LoadBestWeights();
  // The agreed preemption at the current step boundary: checkpoint (if needed) and the events.
  Status StopPreempted();
  void LogHoldings() const;

  const jobspec::JobSpec spec_;
  Runtime rt_;
  EventSink events_;
  std::string out_;
  TrainRows rows_;
  std::optional<Validator> validator_;
  EarlyStopping stopping_{spec_.train};
  model::CausalLM lm_{nullptr};
  TrainableSet trainable_;
  std::unique_ptr<TrainerOptimizer> opt_;
  BucketBytes buckets_;  // data-parallel reduce / gather bucket sizes
  int64_t batch_size_ = 1, accumulation_ = 1, micro_count_ = 1;
  optim::LrSchedule schedule_;
  std::unique_ptr<GradientReducer> reducer_;
  // Expert parallelism: the routed experts' gradients, summed over the expert-data-parallel group.
  std::unique_ptr<GradientReducer> expert_reducer_;
  std::vector<optim::TrainableParam> expert_params_, shared_params_;  // the reducers' parameter lists
  StageContext stage_ctx_;
  std::unique_ptr<data::Sampler> sampler_;
  std::optional<Checkpointer> checkpointer_;
  std::optional<std::string> resume_dir_;
  std::optional<MetricsLogger> logger_;
  Progress progress_;
  int64_t committed_step_ = -1;  // the step of the checkpoint last saved or restored (-1: none)
  std::optional<StepResult> last_result_;
  // Stage dpo: the frozen reference model of full / freeze tuning (null under LoRA). Stage rm: the value head.
  model::CausalLM reference_lm_{nullptr};
  std::optional<ValueHead> value_head_;
  // Stages dpo and rm: the pairwise loss (PreferenceTrainer, RewardTrainer); null for sft and pt.
  std::unique_ptr<PairStage> pair_stage_;
  // moe_router_enable_expert_bias: the expert-bias update after each optimizer step.
  std::optional<ExpertBias> expert_bias_;
  // moe_expert_capacity_factor: the sparse layers that drop token slots (their counts go to the step metrics).
  std::vector<model::SparseMoeImpl*> capacity_layers_;
};

}  // namespace anneal::train
