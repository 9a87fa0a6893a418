// The pipeline's model registry calls: ${models.NAME.production.path} and the built-in promote step.
// Stand-in until the model registry (coordinator/model_registry.h) is merged: both refuse clearly.
#include <fmt/format.h>

#include "coordinator/coordinator.h"

namespace anneal::coordinator {

StatusOr<std::string> Coordinator::PipelineProductionPath(const std::string& team, const std::string& model) {
  return FailedPreconditionError(
      fmt::format("model '{}' of team '{}': this coordinator has no model registry yet", model, team));
}

StatusOr<PromoteOutcome> Coordinator::PipelinePromote(const pb::PipelineRunRecord& run,
                                                      const pb::PipelineStepRecord& step) {
  return FailedPreconditionError(
      fmt::format("step '{}' of {}: this coordinator has no model registry yet", step.name(), run.pipeline_id()));
}

}  // namespace anneal::coordinator
