#include "agent/metrics.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "common/prometheus_text.h"

namespace anneal::agent {
namespace {

// The trainer's value name -> the exported gauge and its help.
struct FigureSeries {
  const char* value;
  const char* metric;
  const char* help;
};
constexpr FigureSeries kFigureSeries[] = {
    {"loss", "anneal_job_loss", "The trainer's latest training loss (mean over the logging window)."},
    {"lr", "anneal_job_learning_rate", "The trainer's latest learning rate."},
    {"grad_norm", "anneal_job_grad_norm", "The trainer's latest gradient norm."},
    {"tokens_per_s", "anneal_job_tokens_per_second", "The trainer's throughput in tokens per second."},
    {"epoch", "anneal_job_epoch", "The trainer's fractional epoch."},
    {"eval_loss", "anneal_job_eval_loss", "The latest evaluation loss."},
    {"mfu", "anneal_job_model_flops_utilization_ratio",
     "The trainer's model FLOPs utilization (0-1) against its GPUs' dense bf16 peak; only on GPUs of known peak."},
};

std::string ReadSmallFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

std::optional<ProcessUsage> ReadProcessUsage(int pid, const std::string& proc_root) {
  if (pid <= 0) return std::nullopt;
  const std::string dir = proc_root + "/" + std::to_string(pid);
  const std::string stat = ReadSmallFile(dir + "/stat");
  // The command name is in parentheses and may hold spaces or ')': the fields start after the last ')'.
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream fields(stat.substr(close + 1));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  // Field 3 (state) is the first after ')'; utime and stime are fields 14 and 15. A zombie (Z) has exited: it
  // is not a live rank (its memory is gone).
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 3 && (field == "Z" || field == "X")) return std::nullopt;
    if (i == 14) utime = std::strtoull(field.c_str(), nullptr, 10);
    if (i == 15) stime = std::strtoull(field.c_str(), nullptr, 10);
  }
  if (!fields) return std::nullopt;
  std::istringstream statm(ReadSmallFile(dir + "/statm"));
  unsigned long long size_pages = 0, resident_pages = 0;
  if (!(statm >> size_pages >> resident_pages)) return std::nullopt;
  ProcessUsage usage;
  usage.cpu_seconds = static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
  usage.rss_bytes = resident_pages * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  return usage;
}

std::vector<TaskUsage> ReadTaskUsage(const std::vector<pb::TaskStatus>& tasks, const std::string& proc_root) {
  std::vector<TaskUsage> out;
  for (const auto& task : tasks) {
    TaskUsage usage{task.job_id(), task.attempt(), 0, 0, 0};
    for (int pid : task.pids()) {
      if (auto p = ReadProcessUsage(pid, proc_root)) {
        ++usage.ranks;
        usage.cpu_seconds += p->cpu_seconds;
        usage.rss_bytes += p->rss_bytes;
      }
    }
    out.push_back(std::move(usage));
  }
  return out;
}

void TrainingFigures::Observe(const pb::MetricBatch& batch, int64_t now_ms) {
  if (batch.points().empty()) return;
  JobFigures& job = jobs_[batch.job_id()];
  if (job.attempt != batch.attempt()) {  // a new attempt: its step times start afresh
    job.step_seconds.reset();
    job.last_point_time_ms = 0;
  }
  job.job_id = batch.job_id();
  job.attempt = batch.attempt();
  job.updated_ms = now_ms;
  for (const auto& point : batch.points()) {
    const bool training = point.values().count("loss") > 0;
    if (training && job.last_point_time_ms > 0 && point.step() > job.step &&
        point.time_ms() >= job.last_point_time_ms) {
      job.step_seconds = static_cast<double>(point.time_ms() - job.last_point_time_ms) / 1000.0 /
                         static_cast<double>(point.step() - job.step);
    }
    if (training) {
      job.step = point.step();
      job.last_point_time_ms = point.time_ms();
      if (point.total_steps() > 0) job.total_steps = point.total_steps();
    }
    for (const auto& [name, value] : point.values()) job.values[name] = value;
  }
}

void TrainingFigures::Prune(const std::set<std::string>& live_jobs, int64_t now_ms, int64_t retain_ms) {
  std::erase_if(jobs_, [&](const auto& entry) {
    return !live_jobs.count(entry.first) && now_ms - entry.second.updated_ms > retain_ms;
  });
}

std::vector<JobFigures> TrainingFigures::Latest() const {
  std::vector<JobFigures> out;
  for (const auto& [id, job] : jobs_) out.push_back(job);
  return out;
}

std::string RenderAgentMetrics(const AgentMetricsView& view) {
  prom::TextWriter out;
  out.Family("anneal_agent_nvml_available", "gauge",
             "1 when NVML (libnvidia-ml) answered on this node; 0 without it (and then no GPU series).");
  out.Sample("anneal_agent_nvml_available", {}, view.nvml_available ? 1 : 0);
  auto gpu_family = [&](const char* name, const char* help, auto value_of) {
    out.Family(name, "gauge", help);
    for (const auto& g : view.gpus) {
      if (auto v = value_of(g)) {
        out.Sample(name, {{"gpu", std::to_string(g.index)}, {"uuid", g.uuid}, {"name", g.name}}, *v);
      }
    }
  };
  if (view.nvml_available) {
    gpu_family("anneal_gpu_utilization_ratio", "GPU utilization over NVML's last sample period (0..1).",
               [](const GpuSample& g) { return std::optional<double>(g.utilization_ratio); });
    gpu_family("anneal_gpu_memory_used_bytes", "GPU memory in use.",
               [](const GpuSample& g) { return std::optional<double>(static_cast<double>(g.memory_used_bytes)); });
    gpu_family("anneal_gpu_memory_total_bytes", "GPU memory in all.",
               [](const GpuSample& g) { return std::optional<double>(static_cast<double>(g.memory_total_bytes)); });
    gpu_family("anneal_gpu_temperature_celsius", "GPU core temperature.",
               [](const GpuSample& g) { return std::optional<double>(g.temperature_celsius); });
    gpu_family("anneal_gpu_power_watts", "GPU power draw.", [](const GpuSample& g) { return g.power_watts; });
  }
  auto task_labels = [](const TaskUsage& t) -> prom::Labels {
    return {{"job_id", t.job_id}, {"attempt", std::to_string(t.attempt)}};
  };
  out.Family("anneal_task_ranks", "gauge", "Live ranks of the task on this node.");
  for (const auto& t : view.tasks) out.Sample("anneal_task_ranks", task_labels(t), t.ranks);
  out.Family("anneal_task_cpu_seconds_total", "counter", "User and system CPU time of the task's live ranks.");
  for (const auto& t : view.tasks) out.Sample("anneal_task_cpu_seconds_total", task_labels(t), t.cpu_seconds);
  out.Family("anneal_task_resident_memory_bytes", "gauge", "Resident memory of the task's live ranks.");
  for (const auto& t : view.tasks) {
    out.Sample("anneal_task_resident_memory_bytes", task_labels(t), static_cast<double>(t.rss_bytes));
  }
  out.Family("anneal_job_step", "gauge", "The step of the trainer's latest metrics event.");
  for (const auto& j : view.jobs) out.Sample("anneal_job_step", {{"job_id", j.job_id}}, static_cast<double>(j.step));
  out.Family("anneal_job_total_steps", "gauge", "The job's total optimizer steps.");
  for (const auto& j : view.jobs) {
    out.Sample("anneal_job_total_steps", {{"job_id", j.job_id}}, static_cast<double>(j.total_steps));
  }
  for (const auto& series : kFigureSeries) {
    out.Family(series.metric, "gauge", series.help);
    for (const auto& j : view.jobs) {
      if (auto it = j.values.find(series.value); it != j.values.end()) {
        out.Sample(series.metric, {{"job_id", j.job_id}}, it->second);
      }
    }
  }
  out.Family("anneal_job_step_seconds", "gauge", "Wall time per optimizer step between the last two metrics events.");
  for (const auto& j : view.jobs) {
    if (j.step_seconds) out.Sample("anneal_job_step_seconds", {{"job_id", j.job_id}}, *j.step_seconds);
  }
  return out.Take();
}

}  // namespace anneal::agent
