#include "trainer/train/early_stopping.h"

#include <c10/util/StringUtil.h>

namespace anneal::train {

bool EarlyStopping::Observe(double metric, Progress* p) const {
  if (!tracks()) return false;
  const bool improved = !p->best_metric || (greater_is_better_ ? metric > *p->best_metric : metric < *p->best_metric);
  if (improved) {
    p->best_metric = metric;
    p->best_step = p->step;
    p->evals_without_improvement = 0;
  } else {
    ++p->evals_without_improvement;
  }
  return patience_ > 0 && p->evals_without_improvement >= patience_;
}

std::string EarlyStopping::Describe(const Progress& p) const {
  return c10::str("eval_loss has not improved for ", p.evals_without_improvement, " evaluation(s) (best ",
                  p.best_metric ? *p.best_metric : 0.0, " at step ", p.best_step, ")");
}

}  // namespace anneal::train
