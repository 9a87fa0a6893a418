// The pipeline client requests (anneal pipeline submit|ls|show|cancel|retry): authorization like jobs' (team
// members submit, cancel and retry; viewers read), audit of the mutating ones, replies.
#include <fmt/format.h>

#include "coordinator/authz.h"
#include "coordinator/coordinator.h"
#include "coordinator/pipelines.h"
#include "protocol/states.h"

namespace anneal::coordinator {

namespace {

constexpr uint32_t kDefaultListLimit = 100;

bool CanRead(const Principal& who, const std::string& team) {
  return RequireTeamRole(who, pb::ROLE_VIEWER, team, "read pipelines of").ok();
}

}  // namespace

bool Coordinator::HandlePipelineRequest(const Principal& who, const std::string& peer,
                                        const pb::ClientRequest& request) {
  const uint64_t id = request.request_id();
  pb::ClientReply reply;
  reply.set_request_id(id);
  Status result;
  switch (request.body_case()) {
    case pb::ClientRequest::kSubmitPipeline: {
      const auto& r = request.submit_pipeline();
      auto team = ResolveSubmitTeam(who, r.team());
      std::map<std::string, std::string> overrides(r.overrides().begin(), r.overrides().end());
      // CreatePipelineRun audits the request itself (a schedule's fire goes through it too).
      auto run = team.ok() ? CreatePipelineRun(r.yaml(), *team, who, overrides,
                                               fmt::format("anneal pipeline submit by {}", who.user))
                           : StatusOr<std::string>(team.status());
      result = run.status();
      if (run.ok()) reply.mutable_submit_pipeline()->set_pipeline_id(*run);
      break;
    }
    case pb::ClientRequest::kListPipelines: {
      const auto& r = request.list_pipelines();
      if (!r.team().empty()) result = RequireTeamRole(who, pb::ROLE_VIEWER, r.team(), "read pipelines of");
      if (!result.ok()) break;
      const size_t limit = r.limit() == 0 ? kDefaultListLimit : std::min<uint32_t>(r.limit(), 1000);
      auto runs = pipelines_.List(r.include_ended(), limit, [&](const pb::PipelineRunRecord& run) {
        return (r.team().empty() || run.team() == r.team()) && CanRead(who, run.team());
      });
      result = runs.status();
      if (!runs.ok()) break;
      for (auto& run : *runs) {
        for (auto& step : *run.mutable_steps()) step.clear_spec_yaml();
        run.clear_yaml();
        *reply.mutable_list_pipelines()->add_runs() = std::move(run);
      }
      break;
    }
    case pb::ClientRequest::kGetPipeline: {
      auto run = pipelines_.Get(request.get_pipeline().pipeline_id());
      result = run.status();
      if (result.ok()) result = RequireTeamRole(who, pb::ROLE_VIEWER, run->team(), "read pipelines of");
      if (result.ok()) *reply.mutable_get_pipeline()->mutable_run() = std::move(*run);
      break;
    }
    case pb::ClientRequest::kCancelPipeline:
    case pb::ClientRequest::kRetryPipeline: {
      const bool cancel = request.has_cancel_pipeline();
      const std::string& run_id =
          cancel ? request.cancel_pipeline().pipeline_id() : request.retry_pipeline().pipeline_id();
      auto run = pipelines_.Get(run_id);
      result = run.status();
      if (result.ok()) {
        result =
            RequireTeamRole(who, pb::ROLE_MEMBER, run->team(), cancel ? "cancel pipelines of" : "retry pipelines of");
      }
      std::string done;
      if (result.ok() && cancel) {
        const std::string reason = request.cancel_pipeline().reason().empty() ? fmt::format("cancelled by {}", who.user)
                                                                              : request.cancel_pipeline().reason();
        auto state = pipelines_.Cancel(run_id, reason);
        result = state.status();
        if (state.ok()) reply.mutable_cancel_pipeline()->set_state(*state);
        if (state.ok()) done = fmt::format("now {}", protocol::StateName(*state));
      } else if (result.ok()) {
        auto steps = pipelines_.Retry(run_id);
        result = steps.status();
        if (steps.ok()) {
          for (const auto& s : *steps) reply.mutable_retry_pipeline()->add_steps(s);
          done = fmt::format("steps again: {}", fmt::join(*steps, ", "));
        }
      }
      audit_.Append({.user = who.user,
                     .team = run.ok() ? run->team() : "",
                     .operation = cancel ? "pipeline.cancel" : "pipeline.retry",
                     .target = run_id,
                     .message = done},
                    result);
      break;
    }
    default:
      return false;
  }
  if (!result.ok()) {
    ReplyError(peer, id, result);
  } else {
    Reply(peer, std::move(reply));
  }
  return true;
}

}  // namespace anneal::coordinator
