// LLaMA-Factory's plot_loss (llamafactory/extras/ploting.py) without matplotlib: at the end of training,
// training_loss.png (and training_eval_loss.png when there are eval losses) in the output directory, each the raw
// curve (#1f77b4 at 40% opacity, "original") and its smoothed curve ("smoothed") over the step axis, titled
// "training <key> of <output_dir>", 640x480 pixels (matplotlib's default figure at dpi 100). Drawn with cairo.
//
// Thread-safety: free functions; no shared state.
//
// Example:
//   ASSIGN_OR_RETURN(std::vector<std::string> written, PlotTrainerLog("/out"));  // {"/out/training_loss.png", ...}
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace anneal::report {

struct Curve {
  std::vector<int64_t> steps;
  std::vector<double> values;  // same length as steps
  int64_t skipped_lines = 0;   // ReadTrainerLogCurve: lines that are not JSON objects (a torn last write)
};

// False in a trainer-only build without cairo (trainer/report/CMakeLists.txt), where every function below
// returns FAILED_PRECONDITION saying so.
bool PlotsAvailable();

// LLaMA-Factory's smooth(): an exponential moving average whose weight is a sigmoid of the curve's length,
// 1.8 * (1 / (1 + exp(-0.05 * n)) - 0.5), starting from the first value.
std::vector<double> Smooth(const std::vector<double>& values);

// Draws `curve` (at least one point) to `png_path`. Errors: INVALID_ARGUMENT for an empty or ragged curve or a
// non-finite value; INTERNAL naming the path when cairo cannot write it.
Status PlotCurve(const std::string& png_path, const std::string& title, const std::string& ylabel, const Curve& curve);

// The curve of `key` ("loss", "eval_loss") in <output_dir>/trainer_log.jsonl: every entry holding it, by
// current_steps. A line that is not a JSON object (an attempt killed mid-write), or whose step or value is not a
// finite number, is skipped and counted (skipped_lines). Errors: NOT_FOUND when the file is missing.
StatusOr<Curve> ReadTrainerLogCurve(const std::string& output_dir, const std::string& key);

// LLaMA-Factory's plot_loss(keys=["loss", "eval_loss"]): training_<key>.png for each key with at least one value;
// returns the written paths. Errors: those of ReadTrainerLogCurve and PlotCurve.
StatusOr<std::vector<std::string>> PlotTrainerLog(const std::string& output_dir);

}  // namespace anneal::report
