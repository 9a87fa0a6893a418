#include "coordinator/spec_workers.h"

#include <sys/eventfd.h>
#include <unistd.h>

namespace anneal::coordinator {

SpecWorkers::SpecWorkers(int threads, std::shared_ptr<const jobspec::PathPolicy> policy) : policy_(std::move(policy)) {
  event_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Work(); });
}

SpecWorkers::~SpecWorkers() {
  Stop();
  if (event_fd_ >= 0) close(event_fd_);
}

void SpecWorkers::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
}

void SpecWorkers::Enqueue(std::string peer, pb::ClientRequest request, Coordinator::SubmitTicket ticket) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    PreparedSubmit unprepared;
    unprepared.peer = std::move(peer);
    unprepared.request = std::move(request);
    unprepared.submitter = std::move(ticket.submitter);
    unprepared.team = std::move(ticket.team);
    input_.push_back(std::move(unprepared));
  }
  ++in_flight_;
  cv_.notify_one();
}

std::vector<PreparedSubmit> SpecWorkers::TakeReady() {
  uint64_t count;
  while (read(event_fd_, &count, sizeof count) > 0) {
  }
  std::vector<PreparedSubmit> out;
  {
    std::lock_guard<std::mutex> lock(mu_);
    out.swap(output_);
  }
  in_flight_ -= out.size();
  return out;
}

void SpecWorkers::Work() {
  while (true) {
    PreparedSubmit job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !input_.empty(); });
      if (stopping_) return;
      job = std::move(input_.front());
      input_.pop_front();
    }
    PreparedSubmit prepared = PrepareSubmit(std::move(job.peer), std::move(job.request), std::move(job.submitter),
                                            std::move(job.team), policy_.get());
    {
      std::lock_guard<std::mutex> lock(mu_);
      output_.push_back(std::move(prepared));
    }
    const uint64_t one = 1;
    (void)!write(event_fd_, &one, sizeof one);
  }
}

}  // namespace anneal::coordinator
