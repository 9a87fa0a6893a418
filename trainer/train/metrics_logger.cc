#include "trainer/train/metrics_logger.h"

#include <algorithm>
#include <cmath>

namespace anneal::train {

using json = nlohmann::json;

MetricsLogger::MetricsLogger(const jobspec::TrainSpec& train, const Runtime& rt, const EventSink& events,
                             const std::string& out)
    : train_(&train), rt_(&rt), events_(&events), log_(out + "/trainer_log.jsonl"), leader_(rt.rank == 0) {}

void MetricsLogger::StartAttempt(const Progress& p) {
  if (leader_ && p.step > 0) log_.TruncateAfter(p.step);
  start_ = std::chrono::steady_clock::now();
  window_loss_ = 0;
  window_steps_ = 0;
}

bool MetricsLogger::Due(const Progress& p) const {
  return p.step % std::max<int64_t>(1, train_->logging_steps) == 0 || p.last();
}

void MetricsLogger::Record(const Progress& p, const StepResult& r) {
  window_loss_ += r.loss;
  ++window_steps_;
  if (!leader_ || !Due(p)) return;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double per_step = elapsed / static_cast<double>(std::max<int64_t>(1, p.step - p.start_step));
  const double dp = rt_->dp;
  const double throughput = static_cast<double>(p.attempt_tokens) * dp / std::max(elapsed, 1e-9);
  const double mean_loss = window_loss_ / static_cast<double>(window_steps_);
  const json entry = {{"current_steps", p.step},
                      {"total_steps", p.total_steps},
                      {"loss", mean_loss},
                      {"lr", r.lr},
                      {"epoch", p.epoch()},
                      {"percentage", std::round(10000.0 * p.step / p.total_steps) / 100.0},
                      {"elapsed_time", FormatDuration(elapsed)},
                      {"remaining_time", FormatDuration(per_step * static_cast<double>(p.total_steps - p.step))},
                      {"throughput", std::round(100.0 * throughput) / 100.0},
                      {"total_tokens", p.total_tokens * rt_->dp},
                      {"grad_norm", r.grad_norm}};
  log_.Append(entry);
  events_->Emit("metrics", {{"step", p.step},
                            {"total_steps", p.total_steps},
                            {"values",
                             {{"loss", mean_loss},
                              {"lr", r.lr},
                              {"grad_norm", r.grad_norm},
                              {"tokens_per_s", entry["throughput"]},
                              {"epoch", p.epoch()}}}});
  window_loss_ = 0;
  window_steps_ = 0;
}

void MetricsLogger::RecordEval(const Progress& p, double eval_loss) {
  if (!leader_) return;
  log_.Append(
      {{"current_steps", p.step}, {"total_steps", p.total_steps}, {"eval_loss", eval_loss}, {"epoch", p.epoch()}});
  events_->Emit("eval",
                {{"step", p.step}, {"values", {{"eval_loss", eval_loss}, {"eval_perplexity", std::exp(eval_loss)}}}});
}

}  // namespace anneal::train
