// SpecWorkers: parses and resolves submitted job specs on worker threads, off the event loop.
//
// Resolving a spec (jobspec::ParseJobSpec + ToYaml, yaml-cpp) costs far more CPU than the rest of a submission,
// so the loop hands SubmitJob requests here and gets them back prepared (Coordinator::OnPreparedSubmit). The
// loop polls fd() (an eventfd, readable when results wait) next to its socket and calls TakeReady().
// Submissions are accepted in the order they come back, which can differ from arrival order by a few.
//
// Thread-safety: Enqueue/TakeReady from the loop thread; the workers are internal. Stop() joins them.
// Ownership: owns its threads and the eventfd.
//
// Example:
//   SpecWorkers workers(2);
//   if (auto ticket = core.AdmitSubmit(peer, request)) workers.Enqueue(peer, request, std::move(*ticket));
//   ... poll workers.fd() ...
//   for (auto& prepared : workers.TakeReady()) core.OnPreparedSubmit(std::move(prepared));
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/coordinator.h"

namespace anneal::coordinator {

class SpecWorkers {
 public:
  // `policy`: the path policy every prepared spec is checked against (null: none); shared, read-only.
  explicit SpecWorkers(int threads, std::shared_ptr<const jobspec::PathPolicy> policy = nullptr);
  ~SpecWorkers();
  SpecWorkers(const SpecWorkers&) = delete;
  SpecWorkers& operator=(const SpecWorkers&) = delete;

  // `ticket`: the submitter and team the loop authenticated and authorized (Coordinator::AdmitSubmit).
  void Enqueue(std::string peer, pb::ClientRequest request, Coordinator::SubmitTicket ticket);
  std::vector<PreparedSubmit> TakeReady();
  int fd() const { return event_fd_; }
  size_t in_flight() const { return in_flight_; }
  void Stop();

 private:
  void Work();

  int event_fd_ = -1;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<PreparedSubmit> input_;  // not prepared yet: peer, request, submitter, team
  std::vector<PreparedSubmit> output_;
  bool stopping_ = false;
  size_t in_flight_ = 0;  // loop thread only
  std::shared_ptr<const jobspec::PathPolicy> policy_;
  std::vector<std::thread> threads_;
};

}  // namespace anneal::coordinator
