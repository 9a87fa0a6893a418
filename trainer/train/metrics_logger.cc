#include "trainer/train/metrics_logger.h"

#include <algorithm>
#include <cmath>
#include <iostream>

#ifdef ANNEAL_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

#include "trainer/model/config.h"
#include "trainer/report/loss_plot.h"

namespace anneal::train {

using json = nlohmann::json;

MetricsLogger::MetricsLogger(const jobspec::TrainSpec& train, const Runtime& rt, const EventSink& events,
                             const std::string& out)
    : train_(&train), rt_(&rt), events_(&events), log_(out + "/trainer_log.jsonl"), leader_(rt.rank == 0), out_(out) {}

void MetricsLogger::SetModelFlops(double flops_per_token, std::optional<double> peak_flops_per_gpu) {
  flops_per_token_ = flops_per_token;
  peak_flops_ = peak_flops_per_gpu;
}

Status MetricsLogger::StartAttempt(const Progress& p) {
  if (leader_ && train_->plot_loss && !report::PlotsAvailable()) {
    // A build without cairo: said at the start, not after the whole run; the plot changes no result.
    std::cerr << c10::str("[train] warning: plot_loss: ", report::PlotTrainerLog(out_).status().message(),
                          "; no training_loss.png will be written\n");
  }
  // The log holds this run's steps once each: a resumed attempt drops what was logged past its checkpoint, a run
  // started over (overwrite_output_dir, or a later attempt with no committed checkpoint) everything.
  if (leader_) log_.TruncateAfter(p.step);
  if (leader_ && train_->report_to == "tensorboard") {
    auto writer = report::TensorBoardWriter::Open(out_, p.step);
    // A build without TensorBoard support refuses the key at the start (FAILED_PRECONDITION); any other
    // error stops only the view.
    if (!writer.ok() && writer.status().code() == StatusCode::kFailedPrecondition) return writer.status();
    if (writer.ok()) {
      tensorboard_ = std::move(*writer);
      std::cerr << c10::str("[train] TensorBoard event files in ", tensorboard_->run_dir(), "\n");
    } else {
      TensorBoardFailed(writer.status());
    }
  }
  start_ = std::chrono::steady_clock::now();
  window_loss_ = 0;
  window_steps_ = 0;
  return Status::Ok();
}

bool MetricsLogger::Due(const Progress& p) const {
  return p.step % std::max<int64_t>(1, train_->logging_steps) == 0 || p.last();
}

std::optional<double> MetricsLogger::Mfu(double tokens_per_second) const {
  if (!peak_flops_) return std::nullopt;
  return report::Mfu(flops_per_token_, tokens_per_second, *peak_flops_, rt_->world);
}

Status MetricsLogger::Record(const Progress& p, const StepResult& r) {
  window_loss_ += r.loss;
  ++window_steps_;
  for (size_t k = 0; k < r.metrics.size(); ++k) {
    if (window_metrics_.size() <= k) window_metrics_.emplace_back(r.metrics[k].first, 0.0);
    window_metrics_[k].second += r.metrics[k].second;
  }
  if (!leader_ || !Due(p)) return Status::Ok();
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double per_step = elapsed / static_cast<double>(std::max<int64_t>(1, p.step - p.start_step));
  const double dp = rt_->dp;
  const double throughput =
      std::round(100.0 * static_cast<double>(p.attempt_tokens) * dp / std::max(elapsed, 1e-9)) / 100.0;
  const double mean_loss = window_loss_ / static_cast<double>(window_steps_);
  json entry = {{"current_steps", p.step},
                {"total_steps", p.total_steps},
                {"loss", mean_loss},
                {"lr", r.lr},
                {"epoch", p.epoch()},
                {"percentage", std::round(10000.0 * p.step / p.total_steps) / 100.0},
                {"elapsed_time", FormatDuration(elapsed)},
                {"remaining_time", FormatDuration(per_step * static_cast<double>(p.total_steps - p.step))},
                {"throughput", throughput},
                {"total_tokens", p.total_tokens * rt_->dp},
                {"grad_norm", r.grad_norm}};
  json values = {{"loss", mean_loss},
                 {"lr", r.lr},
                 {"grad_norm", r.grad_norm},
                 {"tokens_per_s", throughput},
                 {"epoch", p.epoch()}};
  // HF's TensorBoardCallback names (rewrite_logs: train/<key>, learning_rate for lr) plus Anneal's own.
  report::Scalars scalars = {{"train/loss", mean_loss},
                             {"train/learning_rate", r.lr},
                             {"train/grad_norm", r.grad_norm},
                             {"train/epoch", p.epoch()},
                             {"train/tokens_per_second", throughput}};
  // Stage dpo's metrics, averaged over the window's steps as HF averages its stored metrics; LLaMA-Factory's
  // trainer_log.jsonl carries rewards/accuracies as "accuracy".
  for (auto& [name, sum] : window_metrics_) {
    const double mean = sum / static_cast<double>(window_steps_);
    values[name] = mean;
    scalars.emplace_back("train/" + name, mean);
    if (name == "rewards/accuracies") entry["accuracy"] = mean;
    if (name == "moe_dropped_slots") entry[name] = mean;  // Anneal's own: token slots past the experts' capacity
    sum = 0;
  }
  log_.Append(entry);
  if (const auto mfu = Mfu(throughput)) {
    values["mfu"] = *mfu;
    scalars.emplace_back("train/mfu", *mfu);
  }
  window_loss_ = 0;
  window_steps_ = 0;
  // The files first, then the event: whoever sees step N's event finds step N in trainer_log.jsonl and TensorBoard.
  if (tensorboard_) {
    if (Status st = tensorboard_->Add(p.step, scalars); !st.ok()) TensorBoardFailed(st);
  }
  events_->Emit("metrics", {{"step", p.step}, {"total_steps", p.total_steps}, {"values", values}});
  return Status::Ok();
}

Status MetricsLogger::RecordEval(const Progress& p, double eval_loss,
                                 const std::vector<std::pair<std::string, double>>& metrics) {
  if (!leader_) return Status::Ok();
  json entry = {{"current_steps", p.step}, {"total_steps", p.total_steps}, {"eval_loss", eval_loss}};
  json values = {{"eval_loss", eval_loss}, {"eval_perplexity", std::exp(eval_loss)}};
  report::Scalars scalars = {{"eval/loss", eval_loss}};
  for (const auto& [name, value] : metrics) {  // eval_accuracy -> eval/accuracy, as HF's rewrite_logs
    entry[name] = value;
    values[name] = value;
    scalars.emplace_back("eval/" + name.substr(name.rfind("eval_", 0) == 0 ? 5 : 0), value);
  }
  entry["epoch"] = p.epoch();
  log_.Append(entry);
  if (tensorboard_) {
    if (Status st = tensorboard_->Add(p.step, scalars); !st.ok()) TensorBoardFailed(st);
  }
  events_->Emit("eval", {{"step", p.step}, {"values", values}});
  return Status::Ok();
}

// The event files are a view of trainer_log.jsonl and the metrics events, which stay complete: a full disk or
// a corrupt earlier file stops the TensorBoard view (said in the rank log and as an event), not the training.
void MetricsLogger::TensorBoardFailed(const Status& error) {
  tensorboard_.reset();
  const std::string text = "report_to: tensorboard stopped writing event files: " + error.message() +
                           " (training goes on; trainer_log.jsonl and the metrics are complete)";
  std::cerr << c10::str("[train] warning: ", text, "\n");
  events_->Emit("message", {{"level", "warn"}, {"text", text}});
}

void MetricsLogger::Finish() {
  if (!leader_ || !train_->plot_loss || !report::PlotsAvailable()) return;
  auto written = report::PlotTrainerLog(out_);
  if (!written.ok()) {  // the plot changes no result: a warning, never a failed job
    std::cerr << c10::str("[train] warning: plot_loss: ", written.status().message(), "\n");
    return;
  }
  for (const std::string& path : *written) std::cerr << c10::str("[train] plot_loss: wrote ", path, "\n");
}

std::optional<report::DecoderShape> DecoderShapeOf(const std::string& model_dir) {
  auto config = model::LoadModelConfig(model_dir);
  if (!config.ok()) return std::nullopt;
  const model::ModelConfig& c = *config;
  return report::DecoderShape{.vocab = c.vocab_size,
                              .hidden = c.hidden_size,
                              .intermediate = c.intermediate_size,
                              .layers = c.num_hidden_layers,
                              .heads = c.num_attention_heads,
                              .kv_heads = c.num_key_value_heads,
                              .head_dim = c.head_dim,
                              .tied_embeddings = c.tie_word_embeddings,
                              .qkv_bias = c.attention_bias,
                              .o_bias = c.o_proj_bias,
                              .mlp_bias = c.mlp_bias};
}

std::string DeviceName(const torch::Device& device) {
#ifdef ANNEAL_WITH_CUDA
  if (device.is_cuda()) {
    return at::cuda::getDeviceProperties(device.has_index() ? device.index() : at::cuda::current_device())->name;
  }
#endif
  (void)device;
  return "";
}

}  // namespace anneal::train
