#include "trainer/train/loop.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <numeric>

#include <torch/torch.h>

#include "common/fsutil.h"
#include "common/shutdown.h"
#include "trainer/checkpoint/checkpoint.h"
#include "trainer/data/pipeline.h"
#include "trainer/data/sampler.h"
#include "trainer/export/peft.h"
#include "trainer/optim/schedule.h"
#include "trainer/model/safetensors.h"
#include "trainer/train/batch.h"
#include "trainer/train/data_config.h"
#include "trainer/train/events.h"
#include "trainer/train/finetune.h"
#include "trainer/train/grad_reducer.h"
#include "trainer/train/pipeline.h"
#include "trainer/train/runtime.h"
#include "trainer/train/state_io.h"
#include "trainer/train/zero.h"

namespace anneal::train {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using jobspec::FinetuningType;

// The training rows: cache rows (unpacked) or packing bins of cache rows, addressed by sampler position.
struct TrainRows {
  std::shared_ptr<data::TokenCache> cache;
  std::vector<int64_t> examples;            // cache rows (unpacked)
  std::vector<std::vector<int64_t>> bins;   // packing bins of cache rows (packing on)
  bool packed = false, neat = false;
  int cutoff_len = 0;
  int32_t pad_id = 0;

  int64_t size() const { return packed ? static_cast<int64_t>(bins.size()) : static_cast<int64_t>(examples.size()); }
  Batch Make(const std::vector<int64_t>& positions) const {
    if (packed) {
      std::vector<std::vector<int64_t>> chosen;
      for (int64_t p : positions) chosen.push_back(bins[p]);
      return ToTensors(data::PackedBatch(*cache, chosen, cutoff_len, pad_id), true, neat);
    }
    std::vector<int64_t> rows;
    for (int64_t p : positions) rows.push_back(examples[p]);
    return ToTensors(data::PadBatch(*cache, rows, pad_id), false, false);
  }
};

Batch ToDevice(Batch b, const torch::Device& d) {
  for (at::Tensor* t : {&b.input_ids, &b.labels, &b.attention_mask, &b.position_ids, &b.segment_ids}) {
    if (t->defined()) *t = t->to(d);
  }
  return b;
}

// On the device, and padded for sequence parallelism when it is on.
Batch Prepare(Batch b, const Runtime& rt, int64_t pad_id) {
  if (rt.sequence_parallel) b = PadSequenceTo(std::move(b), rt.dims.tp(), pad_id);
  return ToDevice(std::move(b), rt.device);
}

// Validation loss over `rows` (sum of token losses / label tokens), the positions dealt out over data
// parallel and run through the pipeline.
double EvalLoss(model::CausalLM& lm, const TrainRows& rows, int batch, const Runtime& rt) {
  lm->eval();
  std::vector<Batch> micro;
  std::vector<int64_t> part;
  for (int64_t p = rt.dp_rank; p < rows.size(); p += rt.dp) {
    part.push_back(p);
    if (static_cast<int>(part.size()) == batch) {
      micro.push_back(Prepare(rows.Make(part), rt, rows.pad_id));
      part.clear();
    }
  }
  if (!part.empty()) micro.push_back(Prepare(rows.Make(part), rt, rows.pad_id));
  auto [sum, count] = EvalMicroBatches(lm, micro, rt.stage_context());
  lm->train();
  const bool counts = rt.stage.last && rt.tp_rank == 0;
  const double total = rt.SumOverWorld(sum, counts), tokens = rt.SumOverWorld(static_cast<double>(count), counts);
  return tokens > 0 ? total / tokens : std::nan("");
}

// The final export: every stage writes its gathered part, rank 0 joins them into one PEFT or HF directory.
Status ExportResult(model::CausalLM& lm, const jobspec::JobSpec& spec, const Runtime& rt, const std::string& out) {
  const bool lora = spec.finetuning.type == FinetuningType::kLora;
  RETURN_IF_ERROR(WriteStageExport(lm, rt, lora, out));
  rt.Barrier();
  if (rt.rank != 0) return Status::Ok();
  ASSIGN_OR_RETURN(auto tensors, ReadStageExports(out, rt.dims.pp()));
  if (lora) {
    ASSIGN_OR_RETURN(model::LoraOptions options, LoraOptionsOf(lm));
    RETURN_IF_ERROR(WritePeftAdapter(tensors, options, out, spec.model.model_name_or_path));
    return CopyTokenizerFiles(spec.model.model_name_or_path, out);
  }
  return WriteMergedModel(tensors, lm->config(), out, spec.model.model_name_or_path);
}

}  // namespace

Status RunTraining(const jobspec::JobSpec& spec) {
  ASSIGN_OR_RETURN(Runtime rt, Runtime::FromEnvironment(spec));
  const auto& ts = spec.train;
  const std::string out = ts.output_dir;
  RETURN_IF_ERROR(MakeDirs(out));
  EventSink events = EventSink::FromEnvironment(rt.rank);
  events.Emit("started", {{"world_size", rt.world}, {"pid", ::getpid()}});
  const bool leader = rt.rank == 0;

  // Resume point and the output-directory guard (HF refuses to train over an old run unless told).
  std::string resume_dir;
  if (!ts.resume_from_checkpoint.empty()) {
    ASSIGN_OR_RETURN(resume_dir, checkpoint::ResolveCheckpoint(out, ts.resume_from_checkpoint));
  } else if (!checkpoint::ListCheckpoints(out).empty() && !ts.overwrite_output_dir) {
    return FailedPreconditionError("output_dir " + out + " already holds checkpoints; set resume_from_checkpoint: "
                                   "latest to continue, or overwrite_output_dir: true to start over");
  }

  // ---- data ----
  data::DataConfig dc = DataConfigFor(spec, spec.data.dataset);
  dc.val_size = spec.data.val_size;
  ASSIGN_OR_RETURN(data::PreparedData data, data::PrepareSftData(dc, [&](std::string_view stage, int64_t done, int64_t total) {
    if (leader && (done == total || done % 10000 == 0)) std::cerr << "[data] " << stage << " " << done << "/" << total << "\n";
  }));
  if (data.report.skipped > 0 && leader) {
    events.Emit("message", {{"level", "warn"}, {"text", "skipped " + std::to_string(data.report.skipped) + " bad rows"}});
  }
  TrainRows rows;
  rows.cache = data.cache;
  rows.examples = data.train;
  rows.pad_id = data.tokenizer->pad_id().value_or(data.tokenizer->eos_id().value_or(0));
  rows.cutoff_len = spec.data.cutoff_len;
  rows.packed = spec.data.packing || spec.data.neat_packing;
  rows.neat = spec.data.neat_packing;
  if (rows.packed) rows.bins = data::PackRows(*data.cache, data.train, spec.data.cutoff_len);
  TrainRows val_rows = rows;
  val_rows.packed = false;
  val_rows.bins.clear();
  val_rows.examples = data.val;
  if (rows.size() == 0) return InvalidArgumentError("dataset: no training examples after loading and the split");

  // ---- model ----
  model::LoadOptions lo{rt.dtype, rt.device, rt.factory, rt.stage};
  ASSIGN_OR_RETURN(model::CausalLM lm, model::LoadCausalLM(spec.model.model_name_or_path, lo));
  lm->SetActivationCheckpointing(ts.gradient_checkpointing);
  torch::manual_seed(static_cast<uint64_t>(ts.seed));
  ASSIGN_OR_RETURN(std::vector<optim::TrainableParam> params, ApplyFinetuning(lm, spec, static_cast<uint64_t>(ts.seed)));
  lm->to(rt.device);
  lm->train();
  const TrainableSet trainable = WithLayouts(lm, params);
  TrainerOptimizer opt(params, {ts.learning_rate, ts.adam_beta1, ts.adam_beta2, ts.adam_epsilon, ts.weight_decay},
                       rt.dp_comm.get(), rt.zero);

  {
    // What this rank holds: the numbers that tensor, pipeline and ZeRO-1 sharding shrink.
    int64_t held = 0, trained = 0, state_bytes = 0;
    for (const auto& p : lm->parameters()) held += p.numel();
    for (const auto& p : params) trained += p.param.numel();
    for (const auto& [name, t] : opt.StateTensors()) state_bytes += static_cast<int64_t>(t.nbytes());
    std::cerr << "[train] rank " << rt.rank << " (tp " << rt.tp_rank << ", pp " << rt.pp_rank << ", dp " << rt.dp_rank
              << "): layers [" << rt.stage.layer_begin << ", " << rt.stage.layer_end << "), " << held
              << " parameters (" << trained << " trainable), optimizer state " << (state_bytes >> 10) << " KiB"
              << (rt.zero ? " (ZeRO-1 share)" : "") << "\n";
  }
  const int64_t bs = ts.per_device_train_batch_size, ga = ts.gradient_accumulation_steps, dp = rt.dp;
  // Micro-batches per step: gradient_accumulation_steps, or pipeline_microbatches splitting the same rows.
  const int64_t rows_per_step = bs * ga;
  const int64_t micro_count = spec.resources.pipeline_microbatches > 0 ? spec.resources.pipeline_microbatches : ga;
  if (rows_per_step % micro_count != 0) {
    return InvalidArgumentError("pipeline_microbatches " + std::to_string(micro_count) + " does not divide the " +
                                std::to_string(rows_per_step) + " rows per step and rank (per_device_train_batch_size " +
                                std::to_string(bs) + " x gradient_accumulation_steps " + std::to_string(ga) + ")");
  }
  const int64_t n = rows.size();
  const int64_t micro_per_epoch = (n + bs * dp - 1) / (bs * dp);
  const int64_t steps_per_epoch = std::max<int64_t>(1, (micro_per_epoch + ga - 1) / ga);
  const int64_t total_steps = ts.max_steps > 0 ? ts.max_steps
                                               : static_cast<int64_t>(std::ceil(ts.num_train_epochs * steps_per_epoch));
  ASSIGN_OR_RETURN(optim::LrSchedule schedule, optim::LrSchedule::Make(ts.lr_scheduler_type, ts.learning_rate,
                                                                       total_steps, ts.warmup_steps, ts.warmup_ratio));
  // The data-parallel all-reduce overlaps the last backward of each step.
  std::unique_ptr<GradientReducer> reducer;
  if (rt.dp_comm && rt.dp > 1) {
    const auto bucket_bytes = static_cast<int64_t>(spec.resources.bucket_cap_mb * (1 << 20));
    reducer = std::make_unique<GradientReducer>(params, rt.dp_comm.get(), std::max<int64_t>(1, bucket_bytes));
  }
  StageContext stage_ctx = rt.stage_context();
  if (reducer) stage_ctx.before_last_backward = [&reducer] { reducer->Arm(); };
  data::Sampler sampler(n, static_cast<uint64_t>(ts.seed));
  int64_t step = 0, consumed = 0, total_tokens = 0;
  TrainerLog log(out + "/trainer_log.jsonl");

  if (!resume_dir.empty()) {
    auto manifest = checkpoint::VerifyCheckpoint(resume_dir);
    if (!manifest.ok()) {
      auto prev = checkpoint::PreviousCheckpoint(out, resume_dir);
      return Status(manifest.status().code(),
                    "cannot resume: " + manifest.status().message() +
                        (prev ? "; the previous checkpoint " + *prev + " is offered: set resume_from_checkpoint: " + *prev
                              : std::string("; no earlier checkpoint exists")));
    }
    const json& md = manifest->metadata;
    step = md.value("step", int64_t{0});
    consumed = md.value("consumed_samples", int64_t{0});
    total_tokens = md.value("total_tokens", int64_t{0});
    RETURN_IF_ERROR(ReadTrainingState(trainable, opt, resume_dir, md.value("optimizer_steps", step)));
    if (leader) log.TruncateAfter(step);
    std::cerr << "[train] resumed from " << resume_dir << " at step " << step << "\n";
  }

  const auto start = std::chrono::steady_clock::now();
  const int64_t start_step = step;
  double window_loss = 0;
  int64_t window_steps = 0;
  while (step < total_steps) {
    if (ShutdownRequested()) return CancelledError("stopped by signal " + std::to_string(ShutdownSignal()) + " at step " + std::to_string(step));
    // ---- one optimizer step ----
    std::vector<int64_t> step_rows;
    for (int64_t m = 0; m < ga; ++m) {
      auto idx = sampler.RankBatch(consumed + m * bs * dp, rt.dp_rank, static_cast<int>(dp), static_cast<int>(bs));
      step_rows.insert(step_rows.end(), idx.begin(), idx.end());
    }
    std::vector<Batch> micro;
    int64_t label_tokens = 0;
    const int64_t per_micro = rows_per_step / micro_count;
    for (int64_t m = 0; m < micro_count; ++m) {
      std::vector<int64_t> part(step_rows.begin() + m * per_micro, step_rows.begin() + (m + 1) * per_micro);
      micro.push_back(Prepare(rows.Make(part), rt, rows.pad_id));
      label_tokens += micro.back().label_tokens;
      total_tokens += micro.back().input_tokens;
    }
    const int64_t denom = std::max<int64_t>(1, rt.ReduceSum(label_tokens));
    const double loss_part = TrainMicroBatches(lm, micro, static_cast<double>(denom), stage_ctx);
    if (reducer) {
      const size_t early = reducer->Finish();
      if (leader && step == start_step) {
        std::cerr << "[train] data-parallel all-reduce: " << reducer->buckets() << " bucket(s), " << early
                  << " started during backward\n";
      }
    }
    // The last stage holds the loss; count it once per data-parallel replica.
    double step_loss = rt.SumOverWorld(loss_part, rt.stage.last && rt.tp_rank == 0);
    rt.SyncGradients(trainable.params, trainable.layouts);
    if (!std::isfinite(step_loss)) {
      return DataLossError("step " + std::to_string(step + 1) + ": the loss is " + (std::isnan(step_loss) ? "NaN" : "Inf") +
                           " (lower the learning rate, or check the data)");
    }
    const double grad_norm = rt.ClipGradNorm(trainable.params, trainable.layouts, ts.max_grad_norm);
    if (!std::isfinite(grad_norm)) {
      return DataLossError("step " + std::to_string(step + 1) + ": the gradient norm is not finite");
    }
    opt.Step(schedule.LrAt(step));
    opt.ZeroGrad();
    ++step;
    consumed += bs * ga * dp;
    window_loss += step_loss;
    ++window_steps;

    // ---- logging ----
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double epoch = static_cast<double>(consumed) / static_cast<double>(n);
    std::optional<double> eval_loss;
    const bool last = step == total_steps;
    if (ts.eval_strategy == "steps" && ts.eval_steps > 0 && !data.val.empty() && (step % ts.eval_steps == 0 || last)) {
      eval_loss = EvalLoss(lm, val_rows, ts.per_device_eval_batch_size, rt);
    }
    if (leader && (step % std::max<int64_t>(1, ts.logging_steps) == 0 || last)) {
      const double per_step = elapsed / static_cast<double>(step - start_step);
      json entry = {{"current_steps", step}, {"total_steps", total_steps}, {"loss", window_loss / window_steps},
                    {"lr", schedule.LrAt(step)}, {"epoch", epoch},
                    {"percentage", std::round(10000.0 * step / total_steps) / 100.0},
                    {"elapsed_time", FormatDuration(elapsed)},
                    {"remaining_time", FormatDuration(per_step * (total_steps - step))},
                    {"throughput", std::round(100.0 * total_tokens * dp / std::max(elapsed, 1e-9)) / 100.0},
                    {"total_tokens", total_tokens * dp}, {"grad_norm", grad_norm}};
      log.Append(entry);
      events.Emit("metrics", {{"step", step}, {"total_steps", total_steps},
                              {"values", {{"loss", entry["loss"]}, {"lr", entry["lr"]}, {"grad_norm", grad_norm},
                                          {"tokens_per_s", entry["throughput"]}, {"epoch", epoch}}}});
      window_loss = 0;
      window_steps = 0;
    }
    if (eval_loss && leader) {
      log.Append({{"current_steps", step}, {"total_steps", total_steps}, {"eval_loss", *eval_loss}, {"epoch", epoch}});
      events.Emit("eval", {{"step", step}, {"values", {{"eval_loss", *eval_loss}, {"eval_perplexity", std::exp(*eval_loss)}}}});
    }

    // ---- checkpoint ----
    if (ts.save_steps > 0 && (step % ts.save_steps == 0 || last)) {
      // The leader prepares the directory, every stage writes its files, the leader commits them all.
      std::optional<checkpoint::CheckpointWriter> writer;
      if (leader) {
        ASSIGN_OR_RETURN(writer, checkpoint::CheckpointWriter::Begin(out, step));
      }
      rt.Barrier();
      const std::string tmp_dir = checkpoint::TmpCheckpointDir(out, step);
      RETURN_IF_ERROR(WriteTrainingState(trainable, opt, rt, tmp_dir));
      rt.Barrier();
      if (leader) {
        checkpoint::CheckpointWriter& w = *writer;
        RETURN_IF_ERROR(CheckStateFiles(rt, w.dir()));
        if (spec.finetuning.type == FinetuningType::kLora) {
          // A PEFT copy of the adapter, so a checkpoint loads in peft (and as adapter_name_or_path) as it is.
          ASSIGN_OR_RETURN(auto tensors, ReadTrainable(w.dir()));
          ASSIGN_OR_RETURN(model::LoraOptions options, LoraOptionsOf(lm));
          RETURN_IF_ERROR(WritePeftAdapter(tensors, options, w.dir(), spec.model.model_name_or_path));
        }
        json md = {{"step", step}, {"consumed_samples", consumed}, {"total_tokens", total_tokens},
                   {"optimizer_steps", opt.step_count()}, {"epoch", epoch}, {"total_steps", total_steps},
                   {"finetuning_type", std::string(jobspec::FinetuningTypeName(spec.finetuning.type))},
                   {"layout", rt.LayoutJson()}, {"config_hash", rt.config_hash},
                   {"metrics", {{"loss", step_loss}}}};
        if (eval_loss) md["metrics"]["eval_loss"] = *eval_loss;
        std::vector<checkpoint::FileEntry> files;
        ASSIGN_OR_RETURN(std::string final_dir, w.Commit(md, &files));
        json jf = json::array();
        for (const auto& f : files) jf.push_back({{"path", f.path}, {"size", f.size}, {"sha256", f.sha256}});
        events.Emit("checkpoint", {{"step", step}, {"path", fs::absolute(final_dir).string()}, {"files", jf},
                                   {"layout", rt.LayoutJson()}, {"metrics", md["metrics"]}});
        RETURN_IF_ERROR(checkpoint::ApplyRetention(out, ts.save_total_limit));
      }
      rt.Barrier();
    }
  }

  // ---- export ----
  std::string output = fs::absolute(out).string();
  RETURN_IF_ERROR(ExportResult(lm, spec, rt, out));
  if (leader) {
    events.Emit("finished", {{"status", "ok"}, {"output", output},
                             {"message", std::string(spec.finetuning.type == FinetuningType::kLora ? "adapter" : "model") +
                                             " written to " + output}});
  } else {
    events.Emit("finished", {{"status", "ok"}});
  }
  std::cerr << "[train] done: " << step << " steps; output in " << output << "\n";
  return Status::Ok();
}

}  // namespace anneal::train
