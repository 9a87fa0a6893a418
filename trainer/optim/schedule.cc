#include "trainer/optim/schedule.h"

#include <algorithm>
#include <cmath>

namespace anneal::optim {

StatusOr<LrSchedule> LrSchedule::Make(const std::string& type, double base_lr, int64_t total_steps,
                                      int64_t warmup_steps, double warmup_ratio) {
  if (type != "linear" && type != "cosine" && type != "constant" && type != "constant_with_warmup") {
    return InvalidArgumentError("lr_scheduler_type: unknown schedule '" + type +
                                "' (allowed: linear, cosine, constant, constant_with_warmup)");
  }
  LrSchedule s;
  s.type_ = type;
  s.base_ = base_lr;
  s.total_ = total_steps;
  s.warmup_ = warmup_steps > 0 ? warmup_steps
                               : static_cast<int64_t>(std::ceil(static_cast<double>(total_steps) * warmup_ratio));
  return s;
}

double LrSchedule::LrAt(int64_t step) const {
  const double cur = static_cast<double>(step);
  const double warm = static_cast<double>(std::max<int64_t>(1, warmup_));
  double m = 1.0;
  if (type_ == "constant") {
    m = 1.0;
  } else if (step < warmup_) {
    m = cur / warm;
  } else if (type_ == "linear") {
    m = std::max(0.0, static_cast<double>(total_ - step) / static_cast<double>(std::max<int64_t>(1, total_ - warmup_)));
  } else if (type_ == "cosine") {
    const double progress =
        static_cast<double>(step - warmup_) / static_cast<double>(std::max<int64_t>(1, total_ - warmup_));
    m = std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * 0.5 * 2.0 * progress)));
  }
  return base_ * m;
}

}  // namespace anneal::optim
