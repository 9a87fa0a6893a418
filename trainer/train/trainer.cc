#include "trainer/train/trainer.h"

#include <torch/torch.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <set>

#ifdef ANNEAL_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

#include "common/fsutil.h"
#include "common/shutdown.h"
#include "trainer/data/pipeline.h"
#include "trainer/export/peft.h"
#include "trainer/parallel/memory_plan.h"
#include "trainer/train/data_config.h"
#include "trainer/train/file_gather.h"
#include "trainer/train/finetune.h"
#include "trainer/train/kto.h"
#include "trainer/train/pipeline.h"
#include "trainer/train/preemption.h"

namespace anneal::train {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using jobspec::FinetuningType;

// The device memory this rank sees (0 on CPU: no check).
int64_t DeviceBytes(const torch::Device& device) {
#ifdef ANNEAL_WITH_CUDA
  if (device.is_cuda()) {
    const int index = device.has_index() ? device.index() : at::cuda::current_device();
    return static_cast<int64_t>(at::cuda::getDeviceProperties(index)->totalGlobalMem);
  }
#endif
  (void)device;
  return 0;
}

// Bytes of the quantized base weights this rank holds (QLoRA, 4- or 8-bit; 0 otherwise).
int64_t QuantizedBytes(const model::CausalLM& lm) {
  int64_t bytes = 0;
  for (const auto& item : lm->named_modules("", /*include_self=*/false)) {
    auto lin = std::dynamic_pointer_cast<model::LinearImpl>(item.value());
    if (lin) bytes += lin->quantized_bytes();
  }
  return bytes;
}

// The bytes this rank will hold (parallel::MemoryPlan), logged on every rank; a plan over the device's memory is
// an error before the first step.
// Stage dpo: a micro-batch of n pairs is 2n rows, and full / freeze tuning holds the frozen reference too.
Status PlanRankMemory(const Runtime& rt, model::CausalLM& lm, const TrainableSet& trainable,
                      const TrainerOptimizer& opt, const jobspec::JobSpec& spec, int64_t micro_rows,
                      int64_t micro_count, model::CausalLM* reference) {
  parallel::MemoryPlanInput in;
  in.stage = opt.stage();
  in.dp = rt.dp;
  in.dp_rank = rt.dp_rank;
  in.accumulation = static_cast<int>(micro_count);
  for (const auto& p : lm->parameters()) in.held_params += p.numel();
  if (reference != nullptr && *reference) {
    for (const auto& p : (*reference)->parameters()) in.held_params += p.numel();
  }
  in.quantized_bytes = QuantizedBytes(lm);
  in.quantized_bits = spec.model.quantization_bit == 8 ? 8 : 4;
  in.param_bytes = static_cast<int64_t>(c10::elementSize(rt.dtype));
  std::map<int64_t, int64_t> unit_elements;  // ZeRO-3: decoder layer -> its sharded elements
  for (const auto& p : trainable.params) {
    in.trainable.push_back(p.param.numel());
    if (opt.shards_parameters()) {
      in.sharded_params.push_back(p.param.numel());
      unit_elements[ZeroThreeUnitOf(p.name)] += p.param.numel();
    }
  }
  // Gathered at once: the root unit (the whole step) and two decoder layers (one computing, the next prefetched).
  std::vector<int64_t> layer_sizes;
  for (const auto& [layer, n] : unit_elements) {
    if (layer >= 0) layer_sizes.push_back(n);
  }
  std::sort(layer_sizes.rbegin(), layer_sizes.rend());
  for (size_t k = 0; k < std::min<size_t>(2, layer_sizes.size()); ++k) in.largest_unit += layer_sizes[k];
  in.largest_unit += unit_elements.count(-1) ? unit_elements[-1] : 0;
  if (!trainable.params.empty()) in.trainable_bytes = trainable.params.front().param.element_size();
  in.bucket_bytes =
      ResolveBucketBytes(spec.resources.reduce_bucket_size, spec.resources.gather_bucket_size,
                         spec.resources.bucket_cap_mb, opt.stage(), lm->config().hidden_size, in.trainable_bytes)
          .reduce;
  in.micro_rows = micro_rows;
  in.seq_len = spec.data.cutoff_len;
  in.hidden = lm->config().hidden_size;
  in.layers = rt.stage.layer_end - rt.stage.layer_begin;
  in.checkpointing = spec.train.gradient_checkpointing;
  in.offload_optimizer = opt.offload() != Offload::kNone;
  in.offload_params = opt.offload() == Offload::kOptimizerAndParams;
  const parallel::MemoryPlan plan = parallel::PlanMemory(in);
  std::cerr << c10::str("[train] rank ", rt.rank, " ", plan.Describe(), "\n");
  RETURN_IF_ERROR(plan.CheckFits(DeviceBytes(rt.device), "rank " + std::to_string(rt.rank) + "'s " + rt.device.str()));
  if (plan.host == 0) return Status::Ok();
  // Offload: every rank of this machine (LOCAL_WORLD_SIZE, as torchrun and the agent set it) holds its host part.
  const char* local_world = std::getenv("LOCAL_WORLD_SIZE");
  const int ranks_on_host = local_world != nullptr ? std::max(1, std::atoi(local_world)) : 1;
  std::ifstream meminfo("/proc/meminfo");
  const std::string text((std::istreambuf_iterator<char>(meminfo)), std::istreambuf_iterator<char>());
  return plan.CheckHostFits(parallel::MemAvailableBytes(text), ranks_on_host, "this machine");
}

// The adapter as it stands, in peft's format in `dir` (each pipeline stage's part joined on rank 0), with
// `options` in its adapter_config.json. Every rank calls it.
Status WriteAdapterDir(model::CausalLM& lm, Runtime& rt, const std::string& dir, const model::LoraOptions& options,
                       const std::string& base_model) {
  RETURN_IF_ERROR(MakeDirs(dir));
  ASSIGN_OR_RETURN(FileGather gather, FileGather::Probe(rt, dir, /*reset_remote=*/false));
  RETURN_IF_ERROR(WriteStageExport(lm, rt, /*lora_only=*/true, dir));
  rt.Barrier();
  auto stage_export = [](const std::string& rel) { return rel.rfind(".export-stage", 0) == 0; };
  RETURN_IF_ERROR(gather.Gather(rt, stage_export, /*remove_sent=*/true).status());
  if (rt.rank != 0) return Status::Ok();
  ASSIGN_OR_RETURN(auto tensors, ReadStageExports(dir, rt.dims.pp()));
  return WritePeftAdapter(tensors, options, dir, base_model);
}

// LLaMA-Factory's pissa_convert (PissaConvertCallback: peft's save_pretrained with
// path_initial_model_for_weight_conversion, LoraModel.subtract_mutated_init): from the initial adapter A0, B0
// (output_dir/pissa_init) and the trained A, B, the plain LoRA adapter for the original base W:
//   A' = [A; A0] (rows), B' = [B, -B0] (columns), r and lora_alpha doubled (alpha x sqrt(2) under rslora),
// so W + s' B' A' = W_res + s B A. As peft, only the LoRA factors are written (no modules_to_save).
Status WritePissaConverted(const std::vector<std::pair<std::string, at::Tensor>>& trained, const std::string& out,
                           model::LoraOptions options, const std::string& base_model) {
  ASSIGN_OR_RETURN(PeftAdapter initial, LoadPeftAdapter(out + "/pissa_init"));
  std::vector<std::pair<std::string, at::Tensor>> converted;
  for (const auto& [name, t] : trained) {
    const bool a = name.find(".lora_A.") != std::string::npos, b = name.find(".lora_B.") != std::string::npos;
    if (!a && !b) continue;
    auto it = initial.weights.find(name);
    if (it == initial.weights.end()) {
      return InternalError(c10::str(out, "/pissa_init: the initial adapter has no ", name));
    }
    converted.emplace_back(
        name, a ? torch::cat({t, it->second.to(t.dtype())}, 0) : torch::cat({t, -it->second.to(t.dtype())}, 1));
  }
  options.rank *= 2;
  options.alpha *= options.use_rslora ? std::sqrt(2.0) : 2.0;
  options.pissa = false;
  return WritePeftAdapter(converted, options, out + "/pissa_converted", base_model);
}

}  // namespace

StatusOr<TrainOutcome> RunTraining(const jobspec::JobSpec& spec) {
  ASSIGN_OR_RETURN(std::unique_ptr<Trainer> trainer, Trainer::Setup(spec));
  return trainer->Train();
}

StatusOr<std::unique_ptr<Trainer>> Trainer::Setup(const jobspec::JobSpec& spec) {
  std::unique_ptr<Trainer> t(new Trainer(spec));
  ASSIGN_OR_RETURN(t->rt_, Runtime::FromEnvironment(t->spec_));
  t->out_ = t->spec_.train.output_dir;
  RETURN_IF_ERROR(MakeDirs(t->out_));
  t->events_ = EventSink::FromEnvironment(t->rt_.rank);
  t->events_.Emit("started", {{"world_size", t->rt_.world}, {"pid", ::getpid()}});
  ASSIGN_OR_RETURN(t->checkpointer_, Checkpointer::Make(t->spec_, t->rt_, t->events_));
  // The resume point (and the old-output guard) before the slow phases, so a wrong one fails at once.
  ASSIGN_OR_RETURN(t->resume_dir_, t->checkpointer_->ResumeDir());
  t->logger_.emplace(t->spec_.train, t->rt_, t->events_, t->out_);
  RETURN_IF_ERROR(t->SetupData());
  RETURN_IF_ERROR(t->SetupModel());
  t->SetupModelFlops();
  RETURN_IF_ERROR(t->SetupPlan());
  RETURN_IF_ERROR(t->Resume());
  return t;
}

StatusOr<TrainOutcome> Trainer::Train() {
  RETURN_IF_ERROR(logger_->StartAttempt(progress_));
  while (progress_.step < progress_.total_steps) {
    if (ShutdownRequested()) {
      return CancelledError("stopped by signal " + std::to_string(ShutdownSignal()) + " at step " +
                            std::to_string(progress_.step));
    }
    // Every rank asks at every boundary, so all of them stop at the same step however late the signal came.
    if (rt_.AnyOverWorld(PreemptRequested())) {
      RETURN_IF_ERROR(StopPreempted());
      return TrainOutcome::kPreempted;
    }
    // ZeRO-3: the root unit (embedding, final norm, head) gathered for the step (whose optimizer step frees it)
    // and for an evaluation; the decoder layers gather themselves around their use.
    opt_->GatherRoot();
    ASSIGN_OR_RETURN(StepResult result, TrainStep());
    last_result_ = result;
    if (validator_->Due(progress_)) opt_->GatherRoot();
    const std::optional<double> eval_loss = validator_->MaybeEvaluate(lm_, progress_);
    opt_->FreeRoot();
    RETURN_IF_ERROR(logger_->Record(progress_, result));
    const std::vector<std::pair<std::string, double>> eval_metrics = validator_->TakeEvalMetrics();
    if (eval_loss) RETURN_IF_ERROR(logger_->RecordEval(progress_, *eval_loss, eval_metrics));
    // Every rank has the same eval_loss; the vote only makes the agreement explicit.
    const bool stop = rt_.AnyOverWorld(eval_loss && stopping_.Observe(*eval_loss, &progress_));
    // An early stop is the end of training: checkpointed as the last step is (save_strategy permitting).
    const bool save_at_stop = stop && spec_.train.save_strategy != jobspec::SaveStrategy::kNo;
    if (checkpointer_->Due(progress_) || save_at_stop) {
      json metrics = {{"loss", result.loss}};
      if (eval_loss) metrics["eval_loss"] = *eval_loss;
      for (const auto& [name, value] : eval_metrics) metrics[name] = value;
      RETURN_IF_ERROR(checkpointer_->Save(progress_, metrics, lm_, trainable_, *opt_));
      committed_step_ = progress_.step;
    }
    if (stop) {
      const std::string why =
          c10::str("early stopping at step ", progress_.step, " of ", progress_.total_steps, ": ",
                   stopping_.Describe(progress_), ", early_stopping_steps ", spec_.train.early_stopping_steps);
      if (rt_.rank == 0) events_.Emit("message", {{"level", "info"}, {"text", why}});
      std::cerr << c10::str("[train] ", why, "\n");
      break;
    }
  }
  RETURN_IF_ERROR(LoadBestWeights());
  RETURN_IF_ERROR(Export());
  logger_->Finish();  // the plots, after the model: they change no result
  return TrainOutcome::kCompleted;
}

Status Trainer::StopPreempted() {
  const int64_t step = progress_.step;
  // Step 0 has nothing to keep (a resume starts over); a checkpoint saved or restored at this step is current.
  if (step > 0 && committed_step_ != step) {
    json metrics = json::object();
    if (last_result_) metrics["loss"] = last_result_->loss;
    RETURN_IF_ERROR(checkpointer_->Save(progress_, metrics, lm_, trainable_, *opt_));
    committed_step_ = step;
  }
  const std::string path = step > 0 ? fs::absolute(checkpoint::CheckpointDir(out_, step)).string() : "";
  if (rt_.rank == 0) events_.Emit("preempted", {{"step", step}, {"checkpoint", path}});
  const std::string message = "preempted at step " + std::to_string(step) +
                              (path.empty() ? ": nothing trained yet, no checkpoint" : ": checkpoint " + path);
  events_.Emit("finished", {{"status", "preempted"}, {"message", message}});
  std::cerr << c10::str("[train] ", message, "\n");
  return Status::Ok();
}

// ---- setup phases ----

Status Trainer::SetupData() {
  const bool leader = rt_.rank == 0;
  data::DataConfig dc = DataConfigFor(spec_, spec_.data.dataset);
  dc.val_size = spec_.data.val_size;
  ASSIGN_OR_RETURN(data::PreparedData data,
                   data::PrepareSftData(dc, [&](std::string_view stage, int64_t done, int64_t total) {
                     if (leader && (done == total || done % 10000 == 0))
                       std::cerr << c10::str("[data] ", stage, " ", done, "/", total, "\n");
                   }));
  if (data.report.skipped > 0 && leader) {
    events_.Emit("message",
                 {{"level", "warn"}, {"text", "skipped " + std::to_string(data.report.skipped) + " bad rows"}});
  }
  rows_ = TrainRows::ForTraining(data, spec_.data, /*stage_packs_bins=*/spec_.finetuning.stage != "pt");
  if (spec_.data.eval_dataset.empty()) {
    validator_.emplace(spec_.train, TrainRows::ForValidation(data, spec_.data), rt_);
  } else {
    // LLaMA-Factory: eval_dataset (merged, preprocessed like the training data) instead of a val_size split.
    data::DataConfig ec = DataConfigFor(spec_, spec_.data.eval_dataset);
    ASSIGN_OR_RETURN(data::PreparedData eval_data, data::PrepareSftData(ec));
    validator_.emplace(spec_.train, TrainRows::ForEvalDataset(eval_data, spec_.data), rt_);
  }
  if (rows_.size() == 0) return InvalidArgumentError("dataset: no training examples after loading and the split");
  return Status::Ok();
}

// What a mixture-of-experts model cannot run with yet, by name.
static Status CheckMoeLayout(const model::ModelConfig& c, const Runtime& rt, const jobspec::JobSpec& spec) {
  const std::string what =
      c.model_type + (c.mla.enabled ? " (multi-head latent attention, mixture of experts)" : " (mixture of experts)");
  // Under tp the experts are split like dense MLPs and MLA is replicated; under pp each stage routes its own
  // layers. What is not built:
  if (rt.sequence_parallel) {
    return InvalidArgumentError(what +
                                ": sequence_parallel is not built (the experts see token slots, not "
                                "sequences; MLA is replicated over tp): turn sequence_parallel off");
  }
  if (rt.ep <= 1) return Status::Ok();
  const std::string ep = "expert_model_parallel_size " + std::to_string(rt.ep);
  if (spec.resources.zero_stage > 0) {
    return InvalidArgumentError(ep + " with zero_stage " + std::to_string(spec.resources.zero_stage) +
                                " is not built (the expert and the other parameters shard over different groups): "
                                "use zero_stage 0 with expert parallelism");
  }
  if (spec.finetuning.stage != "sft" && spec.finetuning.stage != "pt") {
    return InvalidArgumentError(ep + " with stage " + spec.finetuning.stage +
                                " is not built (expert parallelism is built for stages sft and pt)");
  }
  if (!spec.model.adapter_name_or_path.empty()) {
    return InvalidArgumentError(ep +
                                " with adapter_name_or_path (continuing an adapter) is not built: train it "
                                "with expert_model_parallel_size 1");
  }
  if (spec.model.quantization_bit != 0) {
    return InvalidArgumentError(ep + " with quantization_bit is not built");
  }
  return Status::Ok();
}

Status Trainer::SetupModel() {
  const auto& ts = spec_.train;
  model::LoadOptions lo{rt_.dtype, rt_.device, rt_.factory, rt_.stage};
  ASSIGN_OR_RETURN(lo.quantize_linears, BaseQuantization(spec_));
  if (lo.quantize_linears && spec_.finetuning.type != jobspec::FinetuningType::kLora) {
    return InvalidArgumentError("quantization_bit: a quantized base is frozen; use finetuning_type: lora");
  }
  ASSIGN_OR_RETURN(lm_, model::LoadCausalLM(spec_.model.model_name_or_path, lo));
  lm_->SetActivationCheckpointing(ts.gradient_checkpointing);
  if (ts.neftune_noise_alpha > 0 && rt_.sequence_parallel) {
    return InvalidArgumentError(
        "neftune_noise_alpha: NEFTune with sequence_parallel is not supported (the noise is "
        "drawn for the whole sequence); turn sequence_parallel off");
  }
  lm_->SetEmbeddingNoise(ts.neftune_noise_alpha);
  if (lm_->HasSparseLayers() || lm_->config().mla.enabled) RETURN_IF_ERROR(CheckMoeLayout(lm_->config(), rt_, spec_));
  // Under pipeline parallelism the pipeline collects each stage's router logits itself (trainer/train/pipeline.cc).
  lm_->CollectRouterLogits(lm_->HasSparseLayers() && lm_->config().moe.router_aux_loss_coef != 0 && rt_.dims.pp() == 1);
  torch::manual_seed(static_cast<uint64_t>(ts.seed));
  ASSIGN_OR_RETURN(std::vector<optim::TrainableParam> params,
                   ApplyFinetuning(lm_, spec_, static_cast<uint64_t>(ts.seed)));
  lm_->to(rt_.device);
  lm_->train();
  if (spec_.model.moe_router_enable_expert_bias) {
    ASSIGN_OR_RETURN(ExpertBias balance, ExpertBias::Start(lm_, spec_.model.moe_router_bias_update_rate,
                                                           rt_.dp > 1 ? rt_.dp_comm.get() : nullptr));
    if (rt_.rank == 0) {
      std::cerr << c10::str("[train] auxiliary-loss-free balancing: e_score_correction_bias of ", balance.layers(),
                            " sparse layer(s) moves by ", spec_.model.moe_router_bias_update_rate,
                            " after each step\n");
    }
    expert_bias_ = std::move(balance);
  }
  RETURN_IF_ERROR(SetupCapacity());
  if (spec_.finetuning.pissa_init && spec_.finetuning.pissa_convert && !LoraModules(lm_).empty()) {
    // LLaMA-Factory's PissaConvertCallback.on_train_begin: the initial adapter, saved with init_lora_weights true
    // (a resumed run computes the same start again and rewrites it unchanged).
    model::LoraOptions initial = LoraModules(lm_).front().second->lora_options();
    initial.pissa = false;
    RETURN_IF_ERROR(WriteAdapterDir(lm_, rt_, out_ + "/pissa_init", initial, spec_.model.model_name_or_path));
  }
  if (rt_.dims.tp() > 1 && !LoraModules(lm_).empty() && LoraModules(lm_).front().second->lora_options().use_dora) {
    return InvalidArgumentError("use_dora: DoRA under tensor parallelism (tensor_model_parallel_size " +
                                std::to_string(rt_.dims.tp()) +
                                ") is not supported yet (its row norms need whole rows): use data or pipeline "
                                "parallelism");
  }
  if (spec_.finetuning.stage == "dpo" || spec_.finetuning.stage == "kto") RETURN_IF_ERROR(SetupPreference(lo));
  if (spec_.finetuning.stage == "rm") RETURN_IF_ERROR(SetupReward(&params));
  trainable_ = WithLayouts(lm_, params);
  // DeepSpeed's reduce / gather bucket sizes (elements, "auto" from hidden_size), else ddp_bucket_cap_mb.
  buckets_ = ResolveBucketBytes(spec_.resources.reduce_bucket_size, spec_.resources.gather_bucket_size,
                                spec_.resources.bucket_cap_mb, spec_.resources.zero_stage, lm_->config().hidden_size,
                                params.empty() ? 4 : static_cast<int64_t>(params.front().param.element_size()));
  // Full and freeze checkpoints carry DeepSeek-V3's expert biases (a LoRA checkpoint is an adapter: the key is
  // refused).
  if (spec_.finetuning.type != FinetuningType::kLora) trainable_.buffers = ExpertBiasBuffers(lm_);
  opt_ = std::make_unique<TrainerOptimizer>(
      params, optim::AdamWOptions{ts.learning_rate, ts.adam_beta1, ts.adam_beta2, ts.adam_epsilon, ts.weight_decay},
      rt_.dp_comm.get(), spec_.resources.zero_stage, buckets_.gather, OffloadOf(spec_.resources.offload));
  // ZeRO-3: each decoder layer's parameters are gathered around its use (and checkpointed: zero.h).
  // Each layer's gather also starts the next one's (prefetch), overlapping it with the layer's compute;
  // ANNEAL_ZERO3_PREFETCH=0 turns that off (a benchmark's baseline: bench/parallel/zero.py).
  if (opt_->shards_parameters()) {
    lm_->SetLayerUseHook(opt_->LayerUseHook());
    const char* prefetch = std::getenv("ANNEAL_ZERO3_PREFETCH");
    opt_->SetPrefetch(prefetch == nullptr || std::string(prefetch) != "0");
  }
  LogHoldings();
  return Status::Ok();
}

// moe_expert_capacity_factor: every sparse layer this rank holds drops the slots past its experts' capacity.
Status Trainer::SetupCapacity() {
  const jobspec::ModelSpec& m = spec_.model;
  if (m.moe_expert_capacity_factor <= 0) return Status::Ok();
  if (!lm_->HasSparseLayers()) {
    return InvalidArgumentError("moe_expert_capacity_factor: " + lm_->config().model_type +
                                " has no mixture-of-experts layers: remove the key");
  }
  const model::ExpertCapacity capacity{.factor = m.moe_expert_capacity_factor,
                                       .policy = m.moe_token_drop_policy == "position"
                                                     ? model::TokenDropPolicy::kPosition
                                                     : model::TokenDropPolicy::kProbs};
  for (const auto& layer : lm_->model->layers->children()) {
    auto* decoder_layer = layer->as<model::DecoderLayerImpl>();
    if (decoder_layer != nullptr && decoder_layer->moe) {
      decoder_layer->moe->SetCapacity(capacity);
      capacity_layers_.push_back(decoder_layer->moe.get());
    }
  }
  if (rt_.rank == 0) {
    std::cerr << c10::str("[train] expert capacity: factor ", capacity.factor, ", drop policy ",
                          m.moe_token_drop_policy, " (moe_dropped_slots in the step metrics)\n");
  }
  return Status::Ok();
}

// Stage dpo: the preference trainer, and for full / freeze tuning against a reference the frozen base loaded a
// second time (LLaMA-Factory's create_ref_model); LoRA's reference is the policy with its adapters off.
Status Trainer::SetupPreference(const model::LoadOptions& load) {
  if (spec_.finetuning.stage == "kto") {
    lm_->CollectRouterLogits(false);  // LLaMA-Factory's KTO trainer reads only the logits
    if (spec_.finetuning.type != FinetuningType::kLora) {
      ASSIGN_OR_RETURN(reference_lm_, model::LoadCausalLM(spec_.model.model_name_or_path, load));
      for (auto& p : reference_lm_->parameters()) p.set_requires_grad(false);
      reference_lm_->to(rt_.device);
      reference_lm_->eval();
    }
    const KtoOptions options = KtoOptions::From(spec_.finetuning);
    pair_stage_ = std::make_unique<KtoTrainer>(options, &lm_, reference_lm_ ? &reference_lm_ : nullptr,
                                               rt_.dp > 1 ? rt_.dp_comm.get() : nullptr,
                                               rt_.sequence_parallel ? rt_.dims.tp() : 1);
    validator_->set_pair_stage(pair_stage_.get());
    if (rt_.rank == 0) {
      std::cerr << c10::str(
          "[train] stage kto: pref_beta ", options.beta, ", pref_ftx ", options.ftx, ", kto_chosen_weight ",
          options.chosen_weight, ", kto_rejected_weight ", options.rejected_weight, "; reference: ",
          reference_lm_ ? "a frozen copy of the base model" : "the base model (the adapters switched off)", "\n");
    }
    return Status::Ok();
  }
  // LLaMA-Factory's DPO trainer adds no router auxiliary loss (it reads only the logits).
  lm_->CollectRouterLogits(false);
  const PreferenceOptions options = PreferenceOptions::From(spec_.finetuning);
  if (options.uses_reference() && spec_.finetuning.type != FinetuningType::kLora) {
    ASSIGN_OR_RETURN(reference_lm_, model::LoadCausalLM(spec_.model.model_name_or_path, load));
    for (auto& p : reference_lm_->parameters()) p.set_requires_grad(false);
    reference_lm_->to(rt_.device);
    reference_lm_->eval();
  }
  pair_stage_ = std::make_unique<PreferenceTrainer>(options, &lm_, reference_lm_ ? &reference_lm_ : nullptr);
  validator_->set_pair_stage(pair_stage_.get());
  if (rt_.rank == 0) {
    std::cerr << c10::str("[train] stage dpo: pref_loss ", options.loss, ", pref_beta ", options.beta, ", pref_ftx ",
                          options.ftx, "; reference: ",
                          !options.uses_reference() ? "none (reference-free loss)"
                          : reference_lm_           ? "a frozen copy of the base model"
                                                    : "the base model (the adapters switched off)",
                          "\n");
  }
  return Status::Ok();
}

// Stage rm: the value head (reward.h) trained next to the tuned parameters, with or without tensor parallelism;
// under pipeline parallelism on the last stage (the head reads the final hidden states).
Status Trainer::SetupReward(std::vector<optim::TrainableParam>* params) {
  // LLaMA-Factory's reward trainer reads the values only: no router auxiliary loss, and no logits (so lm_head,
  // untied, gets no gradient and torch's AdamW would skip it: it is not trained).
  lm_->CollectRouterLogits(false);
  if (!lm_->config().tie_word_embeddings) {
    std::erase_if(*params, [](const optim::TrainableParam& p) { return p.name == "lm_head.weight"; });
  }
  ASSIGN_OR_RETURN(ValueHead head,
                   ValueHead::ForModel(spec_.model.model_name_or_path, spec_.model.adapter_name_or_path,
                                       lm_->config().hidden_size, static_cast<uint64_t>(spec_.train.seed), rt_.device));
  value_head_ = std::move(head);
  if (rt_.stage.last) {
    for (optim::TrainableParam& p : value_head_->Params()) params->push_back(std::move(p));
  }
  pair_stage_ =
      std::make_unique<RewardTrainer>(&lm_, &*value_head_, rt_.sequence_parallel ? rt_.tp_comm.get() : nullptr);
  validator_->set_pair_stage(pair_stage_.get());
  if (rt_.rank == 0) {
    std::cerr << c10::str("[train] stage rm: value head [1, ", lm_->config().hidden_size, "] + bias, summary dropout ",
                          value_head_->dropout(), "\n");
  }
  return Status::Ok();
}

// Micro-batches per step, steps per epoch and in total, the LR schedule and the overlapped all-reduce.
Status Trainer::SetupPlan() {
  const auto& ts = spec_.train;
  batch_size_ = ts.per_device_train_batch_size;
  accumulation_ = ts.gradient_accumulation_steps;
  // gradient_accumulation_steps micro-batches, or pipeline_microbatches splitting the same rows.
  const int64_t rows_per_step = batch_size_ * accumulation_;
  micro_count_ = spec_.resources.pipeline_microbatches > 0 ? spec_.resources.pipeline_microbatches : accumulation_;
  if (rows_per_step % micro_count_ != 0) {
    return InvalidArgumentError("pipeline_microbatches " + std::to_string(micro_count_) + " does not divide the " +
                                std::to_string(rows_per_step) +
                                " rows per step and rank (per_device_train_batch_size " + std::to_string(batch_size_) +
                                " x gradient_accumulation_steps " + std::to_string(accumulation_) + ")");
  }
  const int64_t n = rows_.size(), dp = rt_.dp;
  const int64_t micro_per_epoch = (n + batch_size_ * dp - 1) / (batch_size_ * dp);
  progress_.train_rows = n;
  progress_.steps_per_epoch = std::max<int64_t>(1, (micro_per_epoch + accumulation_ - 1) / accumulation_);
  progress_.total_steps = ts.max_steps > 0
                              ? ts.max_steps
                              : static_cast<int64_t>(std::ceil(ts.num_train_epochs * progress_.steps_per_epoch));
  ASSIGN_OR_RETURN(schedule_, optim::LrSchedule::Make(ts.lr_scheduler_type, ts.learning_rate, progress_.total_steps,
                                                      ts.warmup_steps, ts.warmup_ratio));
  if (rt_.dp_comm && rt_.dp > 1 && rt_.ep > 1) {
    // Expert parallelism (no ZeRO): the routed experts (and their LoRA factors) are summed over the ranks holding
    // the same experts, everything else over the whole data-parallel group.
    const int64_t bucket_bytes = buckets_.reduce;
    if (validator_) RETURN_IF_ERROR(validator_->CheckEqualShares());
    expert_params_.clear();
    shared_params_.clear();
    for (const auto& p : trainable_.params)
      (model::RoutedExpertOf(p.name) ? expert_params_ : shared_params_).push_back(p);
    reducer_ = std::make_unique<GradientReducer>(shared_params_, rt_.dp_comm.get(), bucket_bytes);
    // Also with one rank per expert group (ep = dp): the reducer gives an expert that got no token a zero gradient,
    // so AdamW steps it (weight decay, moments) as it does every parameter under data parallelism.
    if (!expert_params_.empty()) {
      expert_reducer_ = std::make_unique<GradientReducer>(expert_params_, rt_.edp_comm.get(), bucket_bytes);
    }
  } else if (rt_.dp_comm && rt_.dp > 1) {
    // ZeRO-2: reduce-scattered into the optimizer's shards.
    reducer_ = std::make_unique<GradientReducer>(trainable_.params, rt_.dp_comm.get(), buckets_.reduce,
                                                 opt_->sharded_grads() ? &opt_->grad_params() : nullptr);
    // Routed experts without expert parallelism: a rank whose tokens miss an expert gets no gradient for it in
    // that backward, so the buckets wait for Finish and go in order (every rank the same collectives).
    if (std::any_of(trainable_.params.begin(), trainable_.params.end(),
                    [](const optim::TrainableParam& p) { return model::RoutedExpertOf(p.name).has_value(); })) {
      reducer_->DeferToFinish();
    }
  }
  stage_ctx_ = rt_.stage_context();
  // ZeRO-2/3: the reducer is armed for the whole step (TrainStep): each micro-batch's gradients are
  // reduce-scattered into the shards as its backward completes them. Otherwise before the last backward.
  if (reducer_ && !opt_->sharded_grads()) {
    stage_ctx_.before_last_backward = [this] {
      reducer_->Arm();
      if (expert_reducer_) expert_reducer_->Arm();
    };
  }
  // Every rank stops together when any plan does not fit (a lone failure would leave the others in a collective).
  const int64_t micro_rows = rows_per_step / micro_count_ * (rows_.pairwise || rows_.kto ? 2 : 1);
  const Status fits = PlanRankMemory(rt_, lm_, trainable_, *opt_, spec_, micro_rows, micro_count_, &reference_lm_);
  if (rt_.AnyOverWorld(!fits.ok())) {
    return fits.ok()
               ? FailedPreconditionError("another rank's memory plan does not fit its device (its log says which)")
               : fits;
  }
  sampler_ = std::make_unique<data::Sampler>(n, static_cast<uint64_t>(ts.seed));
  return Status::Ok();
}

Status Trainer::Resume() {
  if (!resume_dir_) return Status::Ok();
  ASSIGN_OR_RETURN(progress_, checkpointer_->Restore(*resume_dir_, trainable_, *opt_, progress_));
  committed_step_ = progress_.step;
  return Status::Ok();
}

// ---- one optimizer step ----

StatusOr<StepResult> Trainer::TrainStep() {
  const int64_t dp = rt_.dp, bs = batch_size_;
  std::vector<int64_t> step_rows;
  for (int64_t m = 0; m < accumulation_; ++m) {
    auto idx =
        sampler_->RankBatch(progress_.consumed + m * bs * dp, rt_.dp_rank, static_cast<int>(dp), static_cast<int>(bs));
    step_rows.insert(step_rows.end(), idx.begin(), idx.end());
  }
  std::vector<Batch> micro;
  int64_t label_tokens = 0;
  const int64_t per_micro = static_cast<int64_t>(step_rows.size()) / micro_count_;
  for (int64_t m = 0; m < micro_count_; ++m) {
    std::vector<int64_t> part(step_rows.begin() + m * per_micro, step_rows.begin() + (m + 1) * per_micro);
    micro.push_back(Prepare(rows_.Make(part), rt_, rows_.pad_id));
    label_tokens += micro.back().label_tokens;
    progress_.total_tokens += micro.back().input_tokens;
    progress_.attempt_tokens += micro.back().input_tokens;
  }
  if (reducer_ && opt_->sharded_grads()) reducer_->Arm();
  double loss_part = 0;
  std::vector<std::pair<std::string, double>> metrics;
  if (pair_stage_) {
    // HF Trainer: each micro-batch's mean pair loss / gradient_accumulation_steps; DDP averages the ranks.
    loss_part = pair_stage_->TrainMicroBatches(micro, 1.0 / static_cast<double>(micro_count_ * dp), stage_ctx_);
    metrics = PairStageMetrics(*pair_stage_, rt_);
  } else {
    const int64_t denom = std::max<int64_t>(1, rt_.ReduceSum(label_tokens));
    loss_part = TrainMicroBatches(lm_, micro, static_cast<double>(denom), stage_ctx_);
  }
  if (expert_reducer_) expert_reducer_->Finish();
  if (reducer_) {
    const size_t early = reducer_->Finish();
    if (rt_.rank == 0 && progress_.step == progress_.start_step) {
      std::cerr << c10::str("[train] data-parallel ", reducer_->collective(), ": ", reducer_->buckets(), " bucket(s), ",
                            early, " started during backward",
                            reducer_->deferred() ? " (routed experts: every bucket after backward)" : "",
                            "; buckets of at most ", buckets_.reduce, " bytes, parameter gathers of at most ",
                            buckets_.gather, " bytes\n");  // one write (see LogHoldings)
    }
    if (rt_.rank == 0 && progress_.step == progress_.start_step && opt_->shards_parameters()) {
      std::cerr << c10::str("[train] ZeRO-3 prefetch: ", opt_->prefetched_gathers(), " of ", opt_->layer_gathers(),
                            " decoder-layer gathers found their layer prefetched\n");
    }
  }
  StepResult r;
  r.metrics = std::move(metrics);
  // The last stage holds the loss; count it once per data-parallel replica.
  r.loss = rt_.SumOverWorld(loss_part, rt_.stage.last && rt_.tp_rank == 0);
  // Under ZeRO-2 the gradients are this rank's shards (same ranges on every tensor-parallel rank and both ends of
  // a tied pipeline): summed there.
  const std::vector<model::ParamLayout> grad_layouts = opt_->GradLayouts(trainable_.layouts);
  rt_.SyncGradients(opt_->grad_params(), grad_layouts);
  const std::string at_step = "step " + std::to_string(progress_.step + 1);
  if (!std::isfinite(r.loss)) {
    return DataLossError(at_step + ": the loss is " + (std::isnan(r.loss) ? "NaN" : "Inf") +
                         " (lower the learning rate, or check the data)");
  }
  r.grad_norm = opt_->sharded_grads()
                    ? ClipShardedGradNorm(rt_, *opt_, grad_layouts, spec_.train.max_grad_norm)
                    : rt_.ClipGradNorm(trainable_.params, trainable_.layouts, spec_.train.max_grad_norm);
  if (!std::isfinite(r.grad_norm)) return DataLossError(at_step + ": the gradient norm is not finite");
  opt_->Step(schedule_.LrAt(progress_.step));
  opt_->ZeroGrad();
  if (expert_bias_) expert_bias_->Update();
  if (spec_.model.moe_expert_capacity_factor > 0) {
    // Token slots dropped by this step's training forwards, over the whole model and every data-parallel rank
    // (each tensor-parallel group counts once).
    int64_t dropped = 0;
    for (model::SparseMoeImpl* m : capacity_layers_) dropped += m->TakeDroppedSlots();
    r.metrics.emplace_back("moe_dropped_slots", rt_.SumOverWorld(static_cast<double>(dropped), rt_.tp_rank == 0));
  }
  ++progress_.step;
  progress_.consumed += bs * accumulation_ * dp;
  r.lr = schedule_.LrAt(progress_.step);
  return r;
}

// ---- export ----

Status Trainer::LoadBestWeights() {
  if (!stopping_.load_best()) return Status::Ok();
  ASSIGN_OR_RETURN(const int64_t best, checkpointer_->BestCheckpointStep());
  std::string what;
  if (best == 0) {
    what = "no checkpoint has " + spec_.train.metric_for_best_model + ": the last weights are exported";
  } else if (best == progress_.step) {
    what = c10::str("the last step's checkpoint-", best, " is the best: its weights are exported");
  } else {
    RETURN_IF_ERROR(checkpointer_->LoadWeights(best, trainable_, *opt_));
    what = c10::str("the weights of checkpoint-", best, " (the best ", spec_.train.metric_for_best_model,
                    ") are exported, not the last step's (", progress_.step, ")");
  }
  if (rt_.rank == 0) events_.Emit("message", {{"level", "info"}, {"text", "load_best_model_at_end: " + what}});
  std::cerr << c10::str("[train] load_best_model_at_end: ", what, "\n");
  return Status::Ok();
}

// Every stage writes its gathered part, rank 0 joins them into one PEFT or HF directory.
Status Trainer::Export() {
  const bool lora = spec_.finetuning.type == FinetuningType::kLora;
  const std::string output = fs::absolute(out_).string();
  // Stages on nodes with their own disk send their part to rank 0 (no shared filesystem: file_gather.h).
  ASSIGN_OR_RETURN(FileGather gather, FileGather::Probe(rt_, out_, /*reset_remote=*/false));
  // ZeRO-3: each sharded parameter is gathered on its own (only the writing replica keeps them); the root unit
  // (a value head among it) as a whole.
  opt_->GatherRoot();
  RETURN_IF_ERROR(WriteStageExport(lm_, rt_, lora, out_, opt_.get()));
  rt_.Barrier();
  auto stage_export = [](const std::string& rel) { return rel.rfind(".export-stage", 0) == 0; };
  RETURN_IF_ERROR(gather.Gather(rt_, stage_export, /*remove_sent=*/true).status());
  if (value_head_ && rt_.dims.pp() > 1) {
    // Stage rm under pipeline parallelism: the last stage trained the value head; the first (rank 0) writes it.
    torch::NoGradGuard no_grad;
    for (auto& [name, t] : value_head_->Named()) {
      torch::Tensor trained = t.detach().clone();
      rt_.pp_comm->Broadcast(trained, rt_.dims.pp() - 1);
      t.detach().copy_(trained);
    }
  }
  if (rt_.rank == 0) {
    ASSIGN_OR_RETURN(auto tensors, ReadStageExports(out_, rt_.dims.pp()));
    if (lora) {
      ASSIGN_OR_RETURN(model::LoraOptions options, LoraOptionsOf(lm_));
      RETURN_IF_ERROR(WritePeftAdapter(tensors, options, out_, spec_.model.model_name_or_path));
      RETURN_IF_ERROR(CopyTokenizerFiles(spec_.model.model_name_or_path, out_));
      if (options.pissa && spec_.finetuning.pissa_convert) {
        RETURN_IF_ERROR(WritePissaConverted(tensors, out_, options, spec_.model.model_name_or_path));
      }
    } else {
      RETURN_IF_ERROR(WriteMergedModel(tensors, lm_->config(), out_, spec_.model.model_name_or_path));
    }
    // Stage rm: LLaMA-Factory's fix_valuehead_checkpoint writes the head next to the adapter or model.
    if (value_head_) RETURN_IF_ERROR(WriteValueHead(value_head_->Named(), out_));
    events_.Emit("finished", {{"status", "ok"},
                              {"output", output},
                              {"message", std::string(lora ? "adapter" : "model") + " written to " + output}});
  } else {
    events_.Emit("finished", {{"status", "ok"}});
  }
  std::cerr << c10::str("[train] done: ", progress_.step, " steps; output in ", output, "\n");
  return Status::Ok();
}

// MFU's inputs (trainer/report/mfu.h): the model's shape from config.json, the trained parameters of one
// data-parallel replica (every rank holds a tensor/pipeline share of one; norms replicated across tensor-parallel
// ranks count once per rank, an over-count the formula caps), and this GPU's peak. Collective: every rank calls it.
void Trainer::SetupModelFlops() {
  double trained = 0;
  // A rank holds 1 / ep of the routed experts: counted ep times, the sum over the world is dp replicas.
  for (const auto& p : trainable_.params) {
    trained += static_cast<double>(p.param.numel()) * (model::RoutedExpertOf(p.name) ? rt_.ep : 1);
  }
  trained = rt_.SumOverWorld(trained, true) / std::max(1, rt_.dp);
  const auto shape = DecoderShapeOf(spec_.model.model_name_or_path);
  if (!shape) return;
  const std::string device = DeviceName(rt_.device);
  const std::optional<double> peak = report::PeakBf16Flops(device);
  const double flops_per_token =
      report::TrainingFlopsPerToken(*shape, static_cast<int64_t>(trained), spec_.data.cutoff_len);
  logger_->SetModelFlops(flops_per_token, peak);
  if (rt_.rank == 0) {
    const std::string mfu = peak             ? "MFU against the bf16 peak of " + device
                            : device.empty() ? std::string("no MFU: not a CUDA device")
                                             : "no MFU: no peak known for " + device;
    std::cerr << c10::str("[train] ", flops_per_token, " training FLOPs per token; ", mfu, "\n");
  }
}

// What this rank holds: the numbers that tensor, pipeline and ZeRO sharding shrink.
void Trainer::LogHoldings() const {
  int64_t held = 0, trained = 0, state_bytes = 0, resident = 0;
  std::set<const void*> storages;  // each storage once (a tied weight, a loader's shared buffer)
  for (const auto& p : lm_->parameters()) {
    held += p.numel();
    if (storages.insert(p.storage().unsafeGetStorageImpl()).second) {
      resident += static_cast<int64_t>(p.storage().nbytes());  // 0 for ZeRO-3's freed parameters
    }
  }
  resident += opt_->ShardedParamBytes();
  for (const auto& p : trainable_.params) trained += p.param.numel();
  const int64_t quantized = QuantizedBytes(lm_);
  std::string base4;
  if (quantized > 0 && spec_.model.quantization_bit == 8) {
    base4 = c10::str(" + 8-bit base ", quantized >> 10, " KiB (LLM.int8)");
  } else if (quantized > 0) {
    base4 = c10::str(" + 4-bit base ", quantized >> 10, " KiB (", spec_.model.quantization_type,
                     spec_.model.double_quantization ? ", double quantization)" : ")");
  }
  for (const auto& [name, t] : opt_->StateTensors()) state_bytes += static_cast<int64_t>(t.nbytes());
  // The stage in effect; the one asked for when a single data-parallel rank leaves nothing to shard.
  std::string sharding;
  if (opt_->stage() > 0) {
    sharding = " (ZeRO-" + std::to_string(opt_->stage()) + " share)";
  } else if (spec_.resources.zero_stage > 0) {
    sharding = " (zero_stage " + std::to_string(spec_.resources.zero_stage) +
               " asked: one data-parallel rank, nothing to shard)";
  }
  // One write: the ranks share the launcher's stderr, and a line written piecewise interleaves with another rank's.
  std::cerr << c10::str(
      "[train] rank ", rt_.rank, " (tp ", rt_.tp_rank, ", pp ", rt_.pp_rank, ", dp ", rt_.dp_rank,
      rt_.ep > 1 ? c10::str(", ep ", rt_.ep_rank) : std::string(), "): layers [", rt_.stage.layer_begin, ", ",
      rt_.stage.layer_end, "), ", held, " parameters (", trained, " trainable)", base4, ", parameter bytes ",
      resident >> 10, " KiB resident, optimizer state ", state_bytes >> 10, " KiB", sharding,
      opt_->offload() == Offload::kNone
          ? std::string()
          : c10::str(", offloaded to host memory (",
                     opt_->offload() == Offload::kOptimizer ? "optimizer" : "optimizer+params",
                     "): ", opt_->HostBytes() >> 10, " KiB"),
      spec_.train.gradient_checkpointing ? ", activation checkpointing on" : ", activation checkpointing off", "\n");
}

}  // namespace anneal::train
