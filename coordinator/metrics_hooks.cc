// The coordinator's side of CoordinatorMetrics (coordinator/metrics.h): a scheduling pass timed and followed
// by a look at the active jobs.
#include <chrono>

#include "coordinator/coordinator.h"

namespace anneal::coordinator {

void Coordinator::RunSchedulingPass() {
  const auto start = std::chrono::steady_clock::now();
  Schedule();
  metrics_.ObservePass(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  std::vector<const pb::JobRecord*> active;
  active.reserve(jobs_.all().size());
  for (const auto& [id, job] : jobs_.all()) active.push_back(&job.record);
  metrics_.ObserveJobs(active);
}

}  // namespace anneal::coordinator
