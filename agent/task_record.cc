#include "agent/task_record.h"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/fsutil.h"

namespace anneal::agent {

namespace fs = std::filesystem;
using nlohmann::json;

std::string TaskDir(const std::string& work_dir, const std::string& job_id, uint32_t attempt) {
  return work_dir + "/jobs/" + job_id + "/attempt-" + std::to_string(attempt);
}

Status ValidateJobId(const std::string& job_id) {
  if (job_id.empty() || job_id.size() > 128 || job_id == "." || job_id == "..") {
    return InvalidArgumentError("job id '" + job_id + "': must be 1-128 characters and not '.' or '..'");
  }
  for (char c : job_id) {
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return InvalidArgumentError("job id '" + job_id + "': only letters, digits, '.', '_' and '-' allowed");
  }
  return Status::Ok();
}

Status WriteTaskRecord(const std::string& task_dir, const TaskRecord& r) {
  json j;
  j["job_id"] = r.job_id;
  j["attempt"] = r.attempt;
  j["epoch"] = r.epoch;
  j["kind"] = r.kind;
  j["output_dir"] = r.output_dir;
  j["final"] = r.final;
  if (!r.cgroup.empty()) j["cgroup"] = r.cgroup;
  if (r.preempt_deadline_wall_ms > 0) {
    j["preempt_deadline_wall_ms"] = r.preempt_deadline_wall_ms;
    j["preempt_reason"] = r.preempt_reason;
  }
  j["state"] = r.state;
  j["exit_code"] = r.exit_code;
  j["signal"] = r.signal;
  j["message"] = r.message;
  j["ranks"] = json::array();
  for (const auto& rank : r.ranks) {
    j["ranks"].push_back({{"global_rank", rank.global_rank},
                          {"local_rank", rank.local_rank},
                          {"slot", rank.slot},
                          {"pid", rank.pid},
                          {"start_time", rank.start_time}});
  }
  return WriteFileAtomic(task_dir + "/task.json", j.dump(2) + "\n");
}

StatusOr<TaskRecord> ReadTaskRecord(const std::string& task_dir) {
  const std::string path = task_dir + "/task.json";
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return DataLossError(path + ": not a JSON object");
  TaskRecord r;
  try {
    r.job_id = j.at("job_id").get<std::string>();
    r.attempt = j.at("attempt").get<uint32_t>();
    r.epoch = j.at("epoch").get<uint64_t>();
    r.kind = j.value("kind", 0);
    r.output_dir = j.value("output_dir", "");
    r.final = j.value("final", false);
    r.cgroup = j.value("cgroup", "");
    r.preempt_deadline_wall_ms = j.value("preempt_deadline_wall_ms", int64_t{0});
    r.preempt_reason = j.value("preempt_reason", "");
    r.state = j.value("state", 0);
    r.exit_code = j.value("exit_code", 0);
    r.signal = j.value("signal", 0);
    r.message = j.value("message", "");
    for (const auto& rank : j.at("ranks")) {
      RankRecord rr;
      rr.global_rank = rank.at("global_rank").get<uint32_t>();
      rr.local_rank = rank.at("local_rank").get<uint32_t>();
      rr.slot = rank.value("slot", 0u);
      rr.pid = rank.value("pid", 0);
      rr.start_time = rank.value("start_time", uint64_t{0});
      r.ranks.push_back(rr);
    }
  } catch (const json::exception& e) {
    return DataLossError(path + ": " + e.what());
  }
  return r;
}

std::vector<std::pair<std::string, TaskRecord>> ScanTaskRecords(const std::string& work_dir) {
  std::vector<std::pair<std::string, TaskRecord>> out;
  std::error_code ec;
  const fs::path jobs = fs::path(work_dir) / "jobs";
  if (!fs::is_directory(jobs, ec)) return out;
  for (const auto& job : fs::directory_iterator(jobs, ec)) {
    if (!job.is_directory()) continue;
    std::error_code ec2;
    for (const auto& attempt : fs::directory_iterator(job.path(), ec2)) {
      if (!attempt.is_directory() || !fs::exists(attempt.path() / "task.json")) continue;
      auto rec = ReadTaskRecord(attempt.path().string());
      if (!rec.ok()) {
        spdlog::warn("skipping task directory {}: {}", attempt.path().string(), rec.status().message());
        continue;
      }
      out.emplace_back(attempt.path().string(), std::move(rec).value());
    }
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return std::tie(a.second.job_id, a.second.epoch) < std::tie(b.second.job_id, b.second.epoch);
  });
  return out;
}

}  // namespace anneal::agent
