// What a schedule fires, through the pipelines part (coordinator/pipelines.h): a pipeline run owned by the
// schedule's owner, created in the same round batch as the fire record; and the data triggers' hash
// (coordinator/dataset_hash.h, on the hasher's thread).
#include "coordinator/coordinator.h"
#include "coordinator/dataset_hash.h"

namespace anneal::coordinator {

Status Coordinator::ValidateScheduledPipeline(const std::string& yaml, const std::string& team,
                                              const std::string& owner,
                                              const std::map<std::string, std::string>& overrides) {
  ASSIGN_OR_RETURN(Principal who, ScheduleOwner(owner, team));
  return ValidatePipelineRun(yaml, team, who, overrides).status();
}

StatusOr<std::string> Coordinator::CreateScheduledPipeline(const std::string& yaml, const std::string& team,
                                                           const std::string& owner,
                                                           const std::map<std::string, std::string>& overrides,
                                                           const std::string& origin) {
  ASSIGN_OR_RETURN(Principal who, ScheduleOwner(owner, team));
  return CreatePipelineRun(yaml, team, who, overrides, origin);
}

bool Coordinator::ScheduledPipelineActive(const std::string& run_id) const {
  return PipelineRunActive(run_id);
}

Status Coordinator::CancelScheduledPipeline(const std::string& run_id, const std::string& reason) {
  return CancelPipelineRun(run_id, reason);
}

StatusOr<std::string> Coordinator::HashScheduledDatasets(const std::vector<std::string>& paths) {
  return DatasetContentHash(paths);
}

}  // namespace anneal::coordinator
