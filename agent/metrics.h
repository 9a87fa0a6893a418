// The agent's /metrics: what it exports and how it is rendered (agent/http.h serves it; agent/metrics_service.h
// gathers it). Everything here is a value type or a pure function, so tests render without a GPU or a socket.
//
// Exported (docs/agent.md, "Metrics"; Prometheus conventions: units in names, `_total` counters):
//   anneal_agent_nvml_available                       gauge    1 when NVML answered, 0 without it (no GPU series)
//   anneal_gpu_utilization_ratio{gpu,uuid,name}       gauge    0..1, NVML's GPU utilization
//   anneal_gpu_memory_used_bytes{gpu,uuid,name}       gauge
//   anneal_gpu_memory_total_bytes{gpu,uuid,name}      gauge
//   anneal_gpu_temperature_celsius                    gauge
//   anneal_gpu_power_watts                            gauge    only when the GPU reports its power draw
//   anneal_task_ranks{job_id,attempt}                 gauge    live ranks of the task on this node
//   anneal_task_cpu_seconds_total{job_id,attempt}     counter  user + system CPU of the task's live ranks
//   anneal_task_resident_memory_bytes{job_id,attempt} gauge    RSS summed over the task's live ranks
//   anneal_job_step{job_id}, anneal_job_total_steps{job_id}   gauge    the trainer's latest metrics event
//   anneal_job_loss, anneal_job_learning_rate, anneal_job_grad_norm, anneal_job_tokens_per_second,
//   anneal_job_epoch, anneal_job_eval_loss,
//   anneal_job_model_flops_utilization_ratio          gauge    its values (each only once the trainer sent it;
//                                                              MFU only on a GPU whose peak the trainer knows)
//   anneal_job_step_seconds{job_id}                   gauge    (time between the last two metrics events) /
//                                                              (steps between them)
// Training figures come from the MetricBatch reports the agent relays (rank 0's events), so a job appears on the
// agent that hosts its global rank 0. They stay for `kEndedJobRetentionMs` after the job's task ended here, so
// the last value is scraped even when the job ends between two scrapes.
//
// Thread-safety: value types and pure functions.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "protocol/anneal.pb.h"

namespace anneal::agent {

struct GpuSample {
  uint32_t index = 0;
  std::string name;
  std::string uuid;
  double utilization_ratio = 0;  // 0..1
  uint64_t memory_used_bytes = 0;
  uint64_t memory_total_bytes = 0;
  double temperature_celsius = 0;
  std::optional<double> power_watts;  // absent when the GPU does not report it
};

struct ProcessUsage {
  double cpu_seconds = 0;  // utime + stime
  uint64_t rss_bytes = 0;
};

// /proc/<pid>/stat and statm of one process; nullopt when it is gone or unreadable. `proc_root` for tests.
std::optional<ProcessUsage> ReadProcessUsage(int pid, const std::string& proc_root = "/proc");

struct TaskUsage {
  std::string job_id;
  uint32_t attempt = 0;
  uint32_t ranks = 0;  // live ranks read
  double cpu_seconds = 0;
  uint64_t rss_bytes = 0;
};

// Sums ReadProcessUsage over each task's pids (ranks already gone are left out).
std::vector<TaskUsage> ReadTaskUsage(const std::vector<pb::TaskStatus>& tasks, const std::string& proc_root = "/proc");

struct JobFigures {
  std::string job_id;
  uint32_t attempt = 0;
  uint64_t step = 0;
  uint64_t total_steps = 0;
  std::map<std::string, double> values;  // the trainer's names: loss, lr, grad_norm, tokens_per_s, epoch, eval_loss
  std::optional<double> step_seconds;
  int64_t updated_ms = 0;  // steady ms of the last batch
  int64_t last_point_time_ms = 0;
};

constexpr int64_t kEndedJobRetentionMs = 5 * 60 * 1000;

// The latest training figures per job, from the MetricBatch reports the supervisor makes of trainer events.
class TrainingFigures {
 public:
  void Observe(const pb::MetricBatch& batch, int64_t now_ms);
  // Drops jobs without a task in `live_jobs` whose last batch is older than `retain_ms`.
  void Prune(const std::set<std::string>& live_jobs, int64_t now_ms, int64_t retain_ms = kEndedJobRetentionMs);
  std::vector<JobFigures> Latest() const;

 private:
  std::map<std::string, JobFigures> jobs_;
};

struct AgentMetricsView {
  bool nvml_available = false;
  std::vector<GpuSample> gpus;
  std::vector<TaskUsage> tasks;
  std::vector<JobFigures> jobs;
};

// The Prometheus text of `view` (common/prometheus_text.h).
std::string RenderAgentMetrics(const AgentMetricsView& view);

}  // namespace anneal::agent
