// Output for people and scripts: aligned tables, state names, ages and sizes, and protobuf records as JSON.
//
// Tables are plain ASCII columns separated by two spaces (no borders), so `anneal ls | grep RUNNING` works.
// JSON uses the proto field names (job_id, not jobId) and includes fields at their default values, so scripts
// can rely on every key being present.
//
// Thread-safety: pure functions; Table is a value.
//
// Example:
//   Table t({"JOB", "STATE"});
//   t.Add({"j-1", "RUNNING"});
//   t.Print(std::cout);
//   std::cout << ToJson(job_record).dump(2) << "\n";
#pragma once

#include <google/protobuf/message.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "protocol/anneal.pb.h"

namespace anneal::cli {

class Table {
 public:
  explicit Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  bool empty() const { return rows_.empty(); }
  void Print(std::ostream& out) const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

// "12s", "5m", "3h", "2d" between two unix-ms times; "-" when `then_ms` is 0.
std::string Age(int64_t then_ms, int64_t now_ms);
// "2026-11-24 02:30:05" (local time); "-" for 0.
std::string Timestamp(int64_t unix_ms);
// "1h02m", "3m05s", "42s".
std::string Duration(int64_t ms);
// "512 B", "1.5 KiB", "3.2 GiB".
std::string Bytes(uint64_t n);
// Compact number for metrics: "2.345", "1.2e-04", "5100".
std::string Metric(double v);
int64_t NowMs();

// The message as JSON with proto field names and default values included.
nlohmann::json ToJson(const google::protobuf::Message& message);

}  // namespace anneal::cli
