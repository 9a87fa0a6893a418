#include "agent/metrics_service.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <set>

#include "common/fsutil.h"

namespace anneal::agent {

StatusOr<std::string> ReadMetricsToken(const std::string& path) {
  if (path.empty()) {
    return InvalidArgumentError("metrics_bind is set but metrics_token_file is not: the endpoint needs a bearer token");
  }
  auto text = ReadFile(path);
  if (!text.ok()) return InvalidArgumentError(fmt::format("metrics_token_file {}: {}", path, text.status().message()));
  const size_t begin = text->find_first_not_of(" \t\r\n");
  const size_t end = text->find_last_not_of(" \t\r\n");
  std::string token = begin == std::string::npos ? "" : text->substr(begin, end - begin + 1);
  if (token.size() < 16 || token.find_first_of(" \t\r\n") != std::string::npos) {
    return InvalidArgumentError(
        fmt::format("metrics_token_file {}: the token must be one word of at least 16 characters", path));
  }
  return token;
}

StatusOr<std::unique_ptr<AgentMetricsService>> AgentMetricsService::Start(const AgentConfig& config,
                                                                          const std::string& nvml_library) {
  ASSIGN_OR_RETURN(std::string token, ReadMetricsToken(config.metrics_token_file));
  std::unique_ptr<AgentMetricsService> service(new AgentMetricsService(nvml_library));
  AgentHttpOptions options;
  options.token = std::move(token);
  options.render = [raw = service.get()] { return raw->Render(); };
  RETURN_IF_ERROR(service->http_.Start(config.metrics_bind, std::move(options)).WithContext("metrics_bind"));
  // Port 0 picks a free port: where it landed is written for whoever configures the scraper (anneal up, tests).
  const std::string host = config.metrics_bind.substr(0, config.metrics_bind.rfind(':'));
  if (Status st = WriteFileAtomic(config.work_dir + "/metrics-address", fmt::format("{}:{}\n", host, service->port()));
      !st.ok()) {
    spdlog::warn("could not record the metrics address: {}", st.ToString());
  }
  spdlog::info("metrics on port {} (GET /metrics, bearer token of {}; NVML {})", service->port(),
               config.metrics_token_file,
               service->gpus_.available() ? "present" : "absent: " + service->gpus_.reason());
  return service;
}

AgentMetricsService::~AgentMetricsService() {
  http_.Stop();  // before the members the render function reads
}

void AgentMetricsService::ObserveReport(const pb::AgentToCoordinator& report, int64_t now_ms) {
  if (!report.has_metric_batch()) return;
  figures_.Observe(report.metric_batch(), now_ms);
  std::lock_guard<std::mutex> lock(mu_);
  jobs_ = figures_.Latest();
}

void AgentMetricsService::Publish(const std::vector<pb::TaskStatus>& tasks, int64_t now_ms) {
  next_publish_ms_ = now_ms + 1000;
  std::set<std::string> live;
  for (const auto& t : tasks) live.insert(t.job_id());
  figures_.Prune(live, now_ms);
  std::lock_guard<std::mutex> lock(mu_);
  tasks_ = tasks;
  jobs_ = figures_.Latest();
}

std::string AgentMetricsService::Render() {
  AgentMetricsView view;
  std::vector<pb::TaskStatus> tasks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks = tasks_;
    view.jobs = jobs_;
  }
  view.nvml_available = gpus_.available();
  view.gpus = gpus_.Sample();
  view.tasks = ReadTaskUsage(tasks);
  return RenderAgentMetrics(view);
}

}  // namespace anneal::agent
