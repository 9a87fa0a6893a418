// MetricsLogger: the trainer's reporting component. On rank 0 it averages the loss over a logging window and,
// every logging_steps and at the last step, appends LLaMA-Factory's fields to <output_dir>/trainer_log.jsonl
// and emits a `metrics` event; validation results become an `eval` entry and event. Other ranks report nothing.
// With `report_to: tensorboard` the same values go to TensorBoard event files (trainer/report/tensorboard_writer.h:
// train/loss, train/learning_rate, train/grad_norm, train/epoch, train/tokens_per_second, train/mfu, eval/loss);
// with `plot_loss: true`, Finish() draws training_loss.png (and training_eval_loss.png) from trainer_log.jsonl.
// MFU (trainer/report/mfu.h) is reported when SetModelFlops was given a known GPU's peak.
//
// Throughput counts only this attempt's tokens over this attempt's time: after a resume the restored steps'
// tokens are in total_tokens, never in tokens/s.
//
// Thread-safety: one thread at a time.
//
// Example:
//   MetricsLogger logger(spec.train, rt, events, out);
//   logger.SetModelFlops(flops_per_token, peak);   // optional: enables mfu
//   RETURN_IF_ERROR(logger.StartAttempt(progress));      // after any resume
//   RETURN_IF_ERROR(logger.Record(progress, result));    // every step
//   logger.Finish();                                     // after the model is written
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "jobspec/jobspec.h"
#include "trainer/report/mfu.h"
#include "trainer/report/tensorboard_writer.h"
#include "trainer/train/events.h"
#include "trainer/train/progress.h"
#include "trainer/train/runtime.h"

namespace anneal::train {

class MetricsLogger {
 public:
  MetricsLogger(const jobspec::TrainSpec& train, const Runtime& rt, const EventSink& events, const std::string& out);

  // The model's training FLOPs per token and one GPU's dense bf16 peak (nullopt: unknown device, no MFU).
  void SetModelFlops(double flops_per_token, std::optional<double> peak_flops_per_gpu);
  // Starts this attempt's clock; after a resume, drops trainer_log.jsonl entries past the resumed step and
  // TensorBoard records past it too. Errors: those of TensorBoardWriter::Open (rank 0, report_to: tensorboard).
  Status StartAttempt(const Progress& p);
  // One step's result; writes the window's mean when logging is due. Errors: a failed TensorBoard write.
  Status Record(const Progress& p, const StepResult& r);
  // An evaluation: eval_loss and the stage's other eval metrics (stage rm: eval_accuracy) into
  // trainer_log.jsonl, the eval event and TensorBoard (eval/<name>).
  Status RecordEval(const Progress& p, double eval_loss,
                    const std::vector<std::pair<std::string, double>>& metrics = {});
  // After the last step: plot_loss's images (rank 0). Errors: those of report::PlotTrainerLog.
  // Draws the plots (plot_loss) after the model is written; a failure is a warning in the rank log.
  void Finish();

 private:
  bool Due(const Progress& p) const;
  void TensorBoardFailed(const Status& error);
  std::optional<double> Mfu(double tokens_per_second) const;

  const jobspec::TrainSpec* train_;
  const Runtime* rt_;
  const EventSink* events_;
  TrainerLog log_;
  bool leader_;
  std::chrono::steady_clock::time_point start_;
  double window_loss_ = 0;
  int64_t window_steps_ = 0;
  std::vector<std::pair<std::string, double>> window_metrics_;  // stage dpo: sums over the window
  double flops_per_token_ = 0;
  std::optional<double> peak_flops_;
  std::unique_ptr<report::TensorBoardWriter> tensorboard_;  // rank 0 with report_to: tensorboard
  std::string out_;
};

// The trained model's shape for MFU (report::DecoderShape) from <model>/config.json; nullopt when unreadable.
std::optional<report::DecoderShape> DecoderShapeOf(const std::string& model_dir);
// CUDA's name for `device` ("NVIDIA H100 80GB HBM3"); "" on CPU or without CUDA.
std::string DeviceName(const torch::Device& device);

}  // namespace anneal::train
