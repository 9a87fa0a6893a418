// The agent's metrics (agent/metrics.h): training figures from the trainer's reports, /proc readings of real
// processes, and the rendered text (names, labels, no GPU series without NVML).
#include "agent/metrics.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "../coordinator/metrics_text.h"
#include "agent/metrics_gpu.h"

namespace anneal::agent {
namespace {

using anneal::testing::ParseExposition;
using anneal::testing::SampleValue;

pb::MetricBatch Batch(const std::string& job, uint32_t attempt, uint64_t step, int64_t time_ms,
                      std::map<std::string, double> values) {
  pb::MetricBatch b;
  b.set_job_id(job);
  b.set_attempt(attempt);
  auto* p = b.add_points();
  p->set_job_id(job);
  p->set_step(step);
  p->set_time_ms(time_ms);
  p->set_total_steps(100);
  p->mutable_values()->insert(values.begin(), values.end());
  return b;
}

// Spins until this process has used some CPU time (a fresh test process may have used less than a clock tick).
void BurnCpu() {
  volatile double spin = 0;
  for (int round = 0; round < 1000; ++round) {
    for (int i = 0; i < 1000000; ++i) spin = spin + i * 0.5;
    if (auto self = ReadProcessUsage(getpid()); self && self->cpu_seconds >= 0.05) return;
  }
}

TEST(TrainingFigures, KeepTheLatestValuesAndTheStepTimeBetweenEvents) {
  TrainingFigures f;
  f.Observe(Batch("j1", 1, 10, 100000, {{"loss", 2.5}, {"lr", 1e-4}, {"tokens_per_s", 5000}}), 1);
  auto latest = f.Latest();
  ASSERT_EQ(latest.size(), 1u);
  EXPECT_FALSE(latest[0].step_seconds) << "one event gives no step time";
  f.Observe(Batch("j1", 1, 14, 102000, {{"loss", 2.25}, {"lr", 9e-5}}), 2);
  f.Observe(Batch("j1", 1, 14, 102500, {{"eval_loss", 2.4}}), 3);  // an eval at the same step
  latest = f.Latest();
  ASSERT_EQ(latest.size(), 1u);
  EXPECT_EQ(latest[0].step, 14u);
  EXPECT_EQ(latest[0].total_steps, 100u);
  EXPECT_EQ(latest[0].values.at("loss"), 2.25);
  EXPECT_EQ(latest[0].values.at("lr"), 9e-5);
  EXPECT_EQ(latest[0].values.at("tokens_per_s"), 5000) << "a value not sent again keeps its last one";
  EXPECT_EQ(latest[0].values.at("eval_loss"), 2.4);
  ASSERT_TRUE(latest[0].step_seconds);
  EXPECT_DOUBLE_EQ(*latest[0].step_seconds, 0.5) << "2 s over 4 steps";
  // A new attempt (resumed elsewhere) starts its step times afresh.
  f.Observe(Batch("j1", 2, 12, 900000, {{"loss", 2.3}}), 4);
  EXPECT_FALSE(f.Latest()[0].step_seconds);
  EXPECT_EQ(f.Latest()[0].step, 12u);
}

TEST(TrainingFigures, AnEndedJobStaysForTheRetentionThenGoes) {
  TrainingFigures f;
  f.Observe(Batch("live", 1, 1, 1, {{"loss", 1}}), 0);
  f.Observe(Batch("ended", 1, 1, 1, {{"loss", 1}}), 0);
  f.Prune({"live"}, 1000, 5000);
  EXPECT_EQ(f.Latest().size(), 2u) << "ended 1 s ago: kept for the last scrape";
  f.Prune({"live"}, 6000, 5000);
  ASSERT_EQ(f.Latest().size(), 1u);
  EXPECT_EQ(f.Latest()[0].job_id, "live");
}

TEST(ProcessUsage, ReadsThisProcessAndNothingForAMissingOne) {
  BurnCpu();
  auto self = ReadProcessUsage(getpid());
  ASSERT_TRUE(self);
  EXPECT_GT(self->rss_bytes, 1u << 20);
  EXPECT_GT(self->cpu_seconds, 0.0);
  EXPECT_FALSE(ReadProcessUsage(0));
  EXPECT_FALSE(ReadProcessUsage(999999999));
}

TEST(ProcessUsage, ACommandNameWithSpacesAndParenthesesIsSkipped) {
  const auto root = std::filesystem::temp_directory_path() / ("anneal-proc-" + std::to_string(getpid()));
  std::filesystem::create_directories(root / "42");
  std::ofstream(root / "42" / "stat") << "42 (evil) name ) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1\n";
  std::ofstream(root / "42" / "statm") << "1000 300 10 1 0 100 0\n";
  auto usage = ReadProcessUsage(42, root.string());
  std::filesystem::remove_all(root);
  ASSERT_TRUE(usage);
  EXPECT_DOUBLE_EQ(usage->cpu_seconds, 300.0 / static_cast<double>(sysconf(_SC_CLK_TCK)));
  EXPECT_EQ(usage->rss_bytes, 300u * static_cast<uint64_t>(sysconf(_SC_PAGESIZE)));
}

TEST(AgentMetricsText, WithoutNvmlThereIsNoGpuSeriesAndAGaugeSaysSo) {
  GpuSampler absent("libnvidia-ml-not-here.so.1");
  EXPECT_FALSE(absent.available());
  EXPECT_NE(absent.reason().find("libnvidia-ml-not-here.so.1"), std::string::npos) << absent.reason();
  EXPECT_TRUE(absent.Sample().empty());
  BurnCpu();
  AgentMetricsView view;
  view.nvml_available = absent.available();
  pb::TaskStatus task;
  task.set_job_id("job-1");
  task.set_attempt(3);
  task.add_pids(getpid());
  task.add_pids(999999999);  // a rank already gone is left out
  view.tasks = ReadTaskUsage({task});
  TrainingFigures f;
  f.Observe(Batch("job-1", 3, 7, 1000, {{"loss", 1.8125}, {"lr", 2e-4}, {"grad_norm", 0.5}}), 0);
  view.jobs = f.Latest();
  const std::string text = RenderAgentMetrics(view);
  const auto m = ParseExposition(text);
  EXPECT_EQ(SampleValue(m, "anneal_agent_nvml_available"), 0);
  for (const auto& s : m) EXPECT_NE(s.name.rfind("anneal_gpu_", 0), 0u) << "GPU series without NVML: " << s.name;
  EXPECT_EQ(SampleValue(m, "anneal_task_ranks", {{"job_id", "job-1"}, {"attempt", "3"}}), 1);
  EXPECT_GT(SampleValue(m, "anneal_task_cpu_seconds_total", {{"job_id", "job-1"}}), 0);
  EXPECT_GT(SampleValue(m, "anneal_task_resident_memory_bytes", {{"job_id", "job-1"}}), 1 << 20);
  EXPECT_EQ(SampleValue(m, "anneal_job_loss", {{"job_id", "job-1"}}), 1.8125);
  EXPECT_EQ(SampleValue(m, "anneal_job_learning_rate", {{"job_id", "job-1"}}), 2e-4);
  EXPECT_EQ(SampleValue(m, "anneal_job_grad_norm", {{"job_id", "job-1"}}), 0.5);
  EXPECT_EQ(SampleValue(m, "anneal_job_step", {{"job_id", "job-1"}}), 7);
  EXPECT_TRUE(std::isnan(SampleValue(m, "anneal_job_tokens_per_second"))) << "never sent: no sample";
  EXPECT_TRUE(std::isnan(SampleValue(m, "anneal_job_model_flops_utilization_ratio"))) << "CPU trainer: no MFU";
  EXPECT_NE(text.find("# TYPE anneal_task_cpu_seconds_total counter"), std::string::npos) << text;
}

TEST(AgentMetricsText, MfuFromTheTrainerIsAPerJobRatioGauge) {
  AgentMetricsView view;
  TrainingFigures f;
  f.Observe(Batch("job-2", 1, 20, 1000, {{"loss", 1.5}, {"tokens_per_s", 24000}, {"mfu", 0.4125}}), 0);
  view.jobs = f.Latest();
  const std::string text = RenderAgentMetrics(view);
  const auto m = ParseExposition(text);
  EXPECT_EQ(SampleValue(m, "anneal_job_model_flops_utilization_ratio", {{"job_id", "job-2"}}), 0.4125);
  EXPECT_NE(text.find("# TYPE anneal_job_model_flops_utilization_ratio gauge"), std::string::npos) << text;
}

TEST(AgentMetricsText, GpuSeriesCarryIndexUuidAndNameAndPowerOnlyWhenReported) {
  AgentMetricsView view;
  view.nvml_available = true;
  view.gpus.push_back({0, "NVIDIA H200", "GPU-aaa", 0.75, 10ull << 30, 141ull << 30, 55, 412.5});
  view.gpus.push_back({1, "NVIDIA \"odd\" name", "GPU-bbb", 0, 0, 80ull << 30, 30, std::nullopt});
  const auto m = ParseExposition(RenderAgentMetrics(view));
  EXPECT_EQ(SampleValue(m, "anneal_agent_nvml_available"), 1);
  EXPECT_EQ(SampleValue(m, "anneal_gpu_utilization_ratio", {{"gpu", "0"}, {"uuid", "GPU-aaa"}}), 0.75);
  EXPECT_EQ(SampleValue(m, "anneal_gpu_memory_used_bytes", {{"gpu", "0"}}), static_cast<double>(10ull << 30));
  EXPECT_EQ(SampleValue(m, "anneal_gpu_memory_total_bytes", {{"gpu", "1"}}), static_cast<double>(80ull << 30));
  EXPECT_EQ(SampleValue(m, "anneal_gpu_temperature_celsius", {{"gpu", "1"}, {"name", "NVIDIA \"odd\" name"}}), 30);
  EXPECT_EQ(SampleValue(m, "anneal_gpu_power_watts", {{"gpu", "0"}}), 412.5);
  EXPECT_TRUE(std::isnan(SampleValue(m, "anneal_gpu_power_watts", {{"gpu", "1"}})));
}

}  // namespace
}  // namespace anneal::agent
