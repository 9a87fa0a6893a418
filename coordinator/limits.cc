#include "coordinator/limits.h"

#include <fmt/format.h>

#include "coordinator/schedules.h"

namespace anneal::coordinator {

Status CheckNameLength(std::string_view field, std::string_view value, const Limits& limits) {
  if (value.size() <= limits.max_name_bytes) return Status::Ok();
  return InvalidArgumentError(fmt::format("{} is {} bytes, above the limit of {} bytes (max_name_bytes)", field,
                                          value.size(), limits.max_name_bytes));
}

namespace {

// A model request's team and name (max_name_bytes each) and one more field: a job id (max_name_bytes) or a
// reason (4 x max_name_bytes: a sentence, not a document).
Status CheckModelNames(const std::string& team, const std::string& name, const std::string& extra, const Limits& limits,
                       std::string_view extra_field = "the job id") {
  RETURN_IF_ERROR(CheckNameLength("the team", team, limits));
  RETURN_IF_ERROR(CheckNameLength("the model name", name, limits));
  if (extra_field == "the job id") return CheckNameLength(extra_field, extra, limits);
  if (extra.size() <= 4 * limits.max_name_bytes) return Status::Ok();
  return InvalidArgumentError(fmt::format("{} is {} bytes, above the limit of {} bytes (4 x max_name_bytes)",
                                          extra_field, extra.size(), 4 * limits.max_name_bytes));
}

}  // namespace

Status CheckClientRequestLimits(const pb::ClientRequest& request, const Limits& limits) {
  switch (request.body_case()) {
    case pb::ClientRequest::kSubmit: {
      const auto& submit = request.submit();
      size_t spec_bytes = submit.spec_yaml().size();
      for (const auto& o : submit.overrides()) spec_bytes += o.size();
      if (spec_bytes > limits.max_spec_bytes) {
        return InvalidArgumentError(fmt::format(
            "the job spec (with its --set overrides) is {} bytes, above the limit of {} bytes (max_spec_bytes)",
            spec_bytes, limits.max_spec_bytes));
      }
      return CheckNameLength("the job name (submit.name)", submit.name(), limits);
    }
    case pb::ClientRequest::kGetJob:
      return CheckNameLength("the job id", request.get_job().job_id(), limits);
    case pb::ClientRequest::kCancel:
      return CheckNameLength("the job id", request.cancel().job_id(), limits);
    case pb::ClientRequest::kWatch:
      return CheckNameLength("the job id", request.watch().job_id(), limits);
    case pb::ClientRequest::kGetLogs:
      return CheckNameLength("the job id", request.get_logs().job_id(), limits);
    case pb::ClientRequest::kListCheckpoints:
      return CheckNameLength("the job id", request.list_checkpoints().job_id(), limits);
    case pb::ClientRequest::kDrain:
      return CheckNameLength("the node id", request.drain().node_id(), limits);
    // The model registry (coordinator/model_registry.h): names, a job id, a reason of at most 4 names' bytes.
    case pb::ClientRequest::kListModels:
      return CheckNameLength("the team", request.list_models().team(), limits);
    case pb::ClientRequest::kGetModel:
      return CheckModelNames(request.get_model().team(), request.get_model().name(), "", limits);
    case pb::ClientRequest::kRegisterModel:
      return CheckModelNames(request.register_model().team(), request.register_model().name(),
                             request.register_model().job_id(), limits);
    case pb::ClientRequest::kPromoteModel:
      return CheckModelNames(request.promote_model().team(), request.promote_model().name(),
                             request.promote_model().reason(), limits, "the reason");
    case pb::ClientRequest::kArchiveModel:
      return CheckModelNames(request.archive_model().team(), request.archive_model().name(),
                             request.archive_model().reason(), limits, "the reason");
    case pb::ClientRequest::kSubmitPipeline: {
      const auto& submit = request.submit_pipeline();
      size_t bytes = submit.yaml().size();
      for (const auto& [key, value] : submit.overrides()) bytes += key.size() + value.size();
      if (bytes > limits.max_spec_bytes) {
        return InvalidArgumentError(fmt::format(
            "the pipeline YAML (with its --set overrides) is {} bytes, above the limit of {} bytes (max_spec_bytes)",
            bytes, limits.max_spec_bytes));
      }
      return CheckNameLength("the team name", submit.team(), limits);
    }
    case pb::ClientRequest::kListPipelines:
      return CheckNameLength("the team name", request.list_pipelines().team(), limits);
    case pb::ClientRequest::kGetPipeline:
      return CheckNameLength("the pipeline run id", request.get_pipeline().pipeline_id(), limits);
    case pb::ClientRequest::kCancelPipeline:
      RETURN_IF_ERROR(CheckNameLength("the cancel reason", request.cancel_pipeline().reason(), limits));
      return CheckNameLength("the pipeline run id", request.cancel_pipeline().pipeline_id(), limits);
    case pb::ClientRequest::kRetryPipeline:
      return CheckNameLength("the pipeline run id", request.retry_pipeline().pipeline_id(), limits);
    default:
      return CheckScheduleRequestLimits(request, limits);  // OK for every other request
  }
}

Status CheckAgentMessageLimits(const pb::AgentToCoordinator& message, const Limits& limits) {
  if (message.has_heartbeat()) return CheckNameLength("the heartbeat's node id", message.heartbeat().node_id(), limits);
  if (!message.has_register_()) return Status::Ok();
  const auto& reg = message.register_();
  RETURN_IF_ERROR(CheckNameLength("the node id", reg.node_id(), limits));
  RETURN_IF_ERROR(CheckNameLength("the inventory's hostname", reg.inventory().hostname(), limits));
  RETURN_IF_ERROR(CheckNameLength("the inventory's address", reg.inventory().address(), limits));
  for (const auto& [key, value] : reg.inventory().labels()) {
    RETURN_IF_ERROR(CheckNameLength("a label key", key, limits));
    RETURN_IF_ERROR(CheckNameLength(fmt::format("the value of label '{}'", key.substr(0, 64)), value, limits));
  }
  return Status::Ok();
}

}  // namespace anneal::coordinator
