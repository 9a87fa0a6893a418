// ThreadedDatasetHasher: the coordinator's DatasetHasher (coordinator/schedules.h). Hashing a dataset reads all
// of its files, which can take seconds, so it runs on one worker thread and never on the event loop; the loop
// collects the finished hashes at its next Tick (NextWakeupMs wakes it at least every second).
//
// Thread-safety: Request/TakeResults from the loop thread; the worker is internal. The destructor joins it
// (a hash in progress finishes first).
// Ownership: owns its thread; `hash` is called on that thread and must be thread-safe.
//
// Example:
//   ThreadedDatasetHasher hasher([](const std::vector<std::string>& paths) { return DatasetContentHash(paths); });
//   hasher.Request("nlp/nightly", {"/data/nlp/train.jsonl"});
//   ... later, on the loop: for (auto& result : hasher.TakeResults()) ...
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "coordinator/schedules.h"

namespace anneal::coordinator {

class ThreadedDatasetHasher final : public DatasetHasher {
 public:
  using HashFunction = std::function<StatusOr<std::string>(const std::vector<std::string>& paths)>;
  explicit ThreadedDatasetHasher(HashFunction hash);
  ~ThreadedDatasetHasher() override;
  ThreadedDatasetHasher(const ThreadedDatasetHasher&) = delete;
  ThreadedDatasetHasher& operator=(const ThreadedDatasetHasher&) = delete;

  void Request(const std::string& key, const std::vector<std::string>& paths) override;
  std::vector<Result> TakeResults() override;

 private:
  void Work();

  HashFunction hash_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<std::string, std::vector<std::string>>> input_;
  std::vector<Result> output_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace anneal::coordinator
