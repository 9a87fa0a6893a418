// The queue request (`anneal queue`, GET /api/queue): the pending and preempted jobs of the teams a caller may
// read, in the planner's order, with each team's weight, quotas, usage and the slots it holds
// (coordinator/sharing.h builds the reply from these plain values).
#include "coordinator/coordinator.h"
#include "coordinator/sharing.h"

namespace anneal::coordinator {

StatusOr<pb::QueueReply> Coordinator::Queue(const Principal& who, const std::string& team) const {
  QueueSources sources;
  for (const auto& [id, job] : jobs_.all()) sources.jobs.push_back(&job.record);  // no copies of the specs
  sources.teams = identity_.Teams();
  for (const auto& [name, usage] : usage_.all()) sources.usage.push_back(usage);  // as of the last pass
  return BuildQueueReply(who, team, sources);
}

}  // namespace anneal::coordinator
