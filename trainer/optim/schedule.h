// Learning-rate schedules as transformers.get_scheduler computes them (LambdaLR multipliers of the base lr).
//
//   linear                : warmup, then linear decay to 0 at total_steps
//   cosine                : warmup, then half a cosine to 0 at total_steps
//   constant              : base lr
//   constant_with_warmup  : warmup, then base lr
// Warmup steps: warmup_steps if > 0, else ceil(total_steps * warmup_ratio) (TrainingArguments.get_warmup_steps).
//
// Thread-safety: immutable.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace anneal::optim {

class LrSchedule {
 public:
  static StatusOr<LrSchedule> Make(const std::string& type, double base_lr, int64_t total_steps,
                                   int64_t warmup_steps, double warmup_ratio);
  // Learning rate used by optimizer step `step` (0-based).
  double LrAt(int64_t step) const;
  int64_t warmup_steps() const { return warmup_; }

 private:
  std::string type_;
  double base_ = 0;
  int64_t total_ = 0, warmup_ = 0;
};

}  // namespace anneal::optim
