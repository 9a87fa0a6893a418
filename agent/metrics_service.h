// AgentMetricsService: the agent's /metrics, put together (docs/agent.md, "Metrics").
//
// The agent's loop hands it what only the loop knows, cheaply: every report it spools (ObserveReport keeps
// the training figures of MetricBatch reports) and, once a second, its tasks (Publish: job, attempt, pids).
// A scrape is answered on the HTTP server's thread (agent/http.h): it copies that published state under a
// mutex, then samples NVML (agent/metrics_gpu.h) and reads /proc for the ranks' CPU and RSS there, so a slow
// NVML call or /proc read never delays the loop.
//
// Start reads the bearer token from config.metrics_token_file (trimmed; at least 16 characters) and binds
// config.metrics_bind. Errors: INVALID_ARGUMENT naming metrics_token_file (missing, unreadable, too short) or
// metrics_bind (malformed); UNAVAILABLE when the address cannot be bound.
//
// Thread-safety: ObserveReport and Publish from the agent's loop; Render from any thread (the HTTP thread).
// Ownership: owns the HTTP server and the GPU sampler.
//
// Example:
//   ASSIGN_OR_RETURN(auto metrics, AgentMetricsService::Start(config));   // config.metrics_bind set
//   metrics->ObserveReport(report, clock.SteadyMs());
//   metrics->Publish(supervisor.Tasks(), clock.SteadyMs());
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "agent/config.h"
#include "agent/http.h"
#include "agent/metrics.h"
#include "agent/metrics_gpu.h"
#include "common/status.h"
#include "protocol/anneal.pb.h"

namespace anneal::agent {

// The bearer token of a metrics_token_file: its content without surrounding whitespace.
StatusOr<std::string> ReadMetricsToken(const std::string& path);

class AgentMetricsService {
 public:
  static StatusOr<std::unique_ptr<AgentMetricsService>> Start(const AgentConfig& config,
                                                              const std::string& nvml_library = "libnvidia-ml.so.1");
  ~AgentMetricsService();

  void ObserveReport(const pb::AgentToCoordinator& report, int64_t now_ms);
  // True when the last Publish is a second old (the loop then calls Publish with its tasks).
  bool PublishDue(int64_t now_ms) const { return now_ms >= next_publish_ms_; }
  void Publish(const std::vector<pb::TaskStatus>& tasks, int64_t now_ms);
  std::string Render();
  uint16_t port() const { return http_.port(); }

 private:
  explicit AgentMetricsService(const std::string& nvml_library) : gpus_(nvml_library) {}

  GpuSampler gpus_;  // HTTP thread only
  AgentHttpServer http_;
  TrainingFigures figures_;  // the loop's
  int64_t next_publish_ms_ = 0;
  std::mutex mu_;
  std::vector<pb::TaskStatus> tasks_;  // under mu_
  std::vector<JobFigures> jobs_;       // under mu_
};

}  // namespace anneal::agent
