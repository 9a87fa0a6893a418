// /api/pipelines and /api/pipelines/<id>: the newest pipeline runs as JSON, rendered on the event loop into
// the HTTP snapshot (coordinator/http.h).
#include <nlohmann/json.hpp>

#include "coordinator/coordinator.h"
#include "coordinator/http.h"
#include "coordinator/pipelines.h"
#include "protocol/states.h"

namespace anneal::coordinator {
namespace {

constexpr size_t kHttpPipelineRuns = 100;

nlohmann::json StepJson(const pb::PipelineStepRecord& step) {
  nlohmann::json j = {
      {"name", step.name()},
      {"kind", step.kind()},
      {"needs", std::vector<std::string>(step.needs().begin(), step.needs().end())},
      {"state", protocol::StateName(step.state())},
      {"job_id", step.job_id()},
      {"previous_job_ids", std::vector<std::string>(step.previous_job_ids().begin(), step.previous_job_ids().end())},
      {"output_dir", step.output_dir()},
      {"message", step.message()},
      {"tries", step.tries()},
      {"started_at_ms", step.started_at_ms()},
      {"finished_at_ms", step.finished_at_ms()},
      {"params", std::map<std::string, std::string>(step.params().begin(), step.params().end())},
      {"metrics", std::map<std::string, double>(step.metrics().begin(), step.metrics().end())}};
  if (step.kind() == "promote") {
    j["model"] = step.promote().model();
    j["promoted"] = step.promoted();
    j["model_version"] = step.model_version();
  }
  return j;
}

nlohmann::json RunJson(const pb::PipelineRunRecord& run) {
  nlohmann::json steps = nlohmann::json::array();
  for (const auto& step : run.steps()) steps.push_back(StepJson(step));
  return {{"pipeline_id", run.pipeline_id()},
          {"name", run.name()},
          {"team", run.team()},
          {"owner", run.owner()},
          {"origin", run.origin()},
          {"state", protocol::StateName(run.state())},
          {"created_at_ms", run.created_at_ms()},
          {"finished_at_ms", run.finished_at_ms()},
          {"retries", run.retries()},
          {"steps", steps}};
}

}  // namespace

void HttpServer::RenderPipelines(const Coordinator& core, HttpSnapshot* snapshot) {
  auto runs = core.RecentPipelineRuns(kHttpPipelineRuns);
  if (!runs.ok()) {
    snapshot->pipelines = nlohmann::json{{"error", runs.status().message()}}.dump();
    return;
  }
  nlohmann::json list = nlohmann::json::array();
  for (const auto& run : *runs) {
    nlohmann::json j = RunJson(run);
    snapshot->pipeline_runs[run.pipeline_id()] = j.dump();
    list.push_back(std::move(j));
  }
  snapshot->pipelines = nlohmann::json{{"pipelines", list}}.dump();
}

}  // namespace anneal::coordinator
