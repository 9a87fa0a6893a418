// The Supervisor's unit-test fixture (agent/supervisor.h): a temp dir with a trainer script, real rank
// processes, the injected FakeClock, and every report recorded. Shared by supervisor_test.cc and
// supervisor_preempt_test.cc.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "agent/clock.h"
#include "agent/supervisor.h"

namespace anneal::agent {

struct Fixture {
  std::string dir;
  FakeClock clock;
  boost::asio::io_context io;
  std::vector<pb::AgentToCoordinator> reports;
  SupervisorOptions options;
  std::unique_ptr<Supervisor> sup;

  explicit Fixture(const std::string& script, std::vector<uint32_t> gpus = {}, uint64_t log_max_bytes = 64 << 20,
                   std::string cgroup_base = "") {
    char tmpl[] = "/tmp/anneal-sup-XXXXXX";
    dir = ::mkdtemp(tmpl);
    ::chmod(dir.c_str(), 0755);  // run as root, the ranks run as nobody: they must reach the trainer and work dir
    const std::string trainer = dir + "/trainer.sh";
    std::ofstream(trainer) << script;
    ::chmod(trainer.c_str(), 0755);
    SupervisorOptions& o = options;
    o.work_dir = dir + "/work";
    o.node_id = "n";
    o.trainer = script.empty() ? dir + "/missing-trainer" : trainer;
    o.slots = 2;
    o.gpu_indices = gpus;
    o.log_max_bytes = log_max_bytes;
    o.min_free_bytes = 0;
    o.cgroup_base = std::move(cgroup_base);
    sup = NewSupervisor();
  }
  // A supervisor on the same work dir, clock and reports (a restarted agent: Detach() the old one first).
  std::unique_ptr<Supervisor> NewSupervisor() {
    return std::make_unique<Supervisor>(io, clock, options, [this](pb::AgentToCoordinator m) { reports.push_back(m); });
  }
  ~Fixture() {
    sup->StopAll(0, "teardown");
    for (int i = 0; i < 200 && !sup->Idle(); ++i) Spin(10);
    sup.reset();
    std::filesystem::remove_all(dir);
  }
  void Spin(int ms) {
    io.poll();
    sup->Tick();
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  }
  const pb::TaskStatus* Find(pb::TaskState state) const {
    for (const auto& r : reports) {
      if (r.has_task_update() && r.task_update().status().state() == state) return &r.task_update().status();
    }
    return nullptr;
  }
  bool SpinUntil(pb::TaskState state, int ms) {
    for (int waited = 0; waited < ms; waited += 10) {
      if (Find(state) != nullptr) return true;
      Spin(10);
    }
    return Find(state) != nullptr;
  }
  // Spins until the first line of the job's rank-0 log is `line` (a script reports its traps are set).
  bool WaitForFirstLogLine(const std::string& job, const std::string& line, int ms = 3000) {
    const std::string log = dir + "/work/jobs/" + job + "/attempt-1/rank-0.log";
    for (int waited = 0; waited < ms; waited += 10) {
      std::ifstream in(log);
      std::string first;
      if (std::getline(in, first) && first == line) return true;
      Spin(10);
    }
    return false;
  }
};

inline pb::LaunchTask OneRank(const std::string& job, uint64_t epoch) {
  pb::LaunchTask l;
  l.set_job_id(job);
  l.set_attempt(1);
  l.set_epoch(epoch);
  auto* r = l.add_ranks();
  r->set_global_rank(0);
  r->set_local_rank(0);
  r->set_slot(0);
  l.set_world_size(1);
  l.set_trainer_config_yaml("a: 1\n");
  return l;
}

}  // namespace anneal::agent
