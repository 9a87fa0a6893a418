#include "coordinator/schedule_hasher.h"

namespace anneal::coordinator {

ThreadedDatasetHasher::ThreadedDatasetHasher(HashFunction hash) : hash_(std::move(hash)) {
  thread_ = std::thread([this] { Work(); });
}

ThreadedDatasetHasher::~ThreadedDatasetHasher() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void ThreadedDatasetHasher::Request(const std::string& key, const std::vector<std::string>& paths) {
  {
    std::lock_guard lock(mu_);
    input_.emplace_back(key, paths);
  }
  cv_.notify_one();
}

std::vector<DatasetHasher::Result> ThreadedDatasetHasher::TakeResults() {
  std::lock_guard lock(mu_);
  return std::exchange(output_, {});
}

void ThreadedDatasetHasher::Work() {
  for (;;) {
    std::pair<std::string, std::vector<std::string>> job;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !input_.empty(); });
      if (stopping_) return;
      job = std::move(input_.front());
      input_.pop_front();
    }
    StatusOr<std::string> hash = hash_(job.second);
    std::lock_guard lock(mu_);
    output_.push_back({std::move(job.first), std::move(hash)});
  }
}

}  // namespace anneal::coordinator
