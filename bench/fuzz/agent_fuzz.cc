// Fuzz target: the coordinator's orders to an agent (pb::CoordinatorToAgent), handled as Agent::Handle
// (agent/agent.cc) does, by the parts it hands them to: the Spool (RegisterReply watermark, Ack) and the
// Supervisor (StopTask, FetchLogs, DeleteCheckpoint), both real, in the process's temp dir, emptied before
// every input. Agent itself needs a connected socket, so its switch is mirrored here, not called.
// LaunchTask is parsed but not launched: a launch forks rank processes and creates the directories the
// message names (as the agent's user), which a fuzzer must not do to its machine.
// DeleteCheckpoint runs only when its output directory resolves inside the temp dir (the agent would delete
// what ResolveDeletablePath allows; outside the sandbox only that check runs).
//
// Input: records of one op byte: 0 = a u16-length chunk of CoordinatorToAgent bytes; 1 = the agent spools a
// report (a MetricBatch); 2 = the clock advances by u16 ms and the supervisor ticks.
// Checked: the spool stays consistent (pending seqs increasing, above the watermark, below next_seq); a log
// chunk never holds more than its request's limit (64 KiB by default, at most 4 MiB).
#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "agent/checkpoint_files.h"
#include "agent/clock.h"
#include "agent/spool.h"
#include "agent/supervisor.h"
#include "bench/fuzz/fuzz_support.h"

using anneal::fuzz::FuzzCheck;
namespace agent = anneal::agent;
namespace fs = std::filesystem;

namespace {

void CheckSpool(const agent::Spool& spool) {
  uint64_t previous = spool.last_acked();
  for (const auto& msg : spool.Pending()) {
    const uint64_t seq = agent::ReportSeq(msg);
    FuzzCheck(seq > previous, "pending seqs are strictly increasing and above the acked watermark");
    previous = seq;
  }
  FuzzCheck(spool.next_seq() > previous, "next_seq is above every pending seq and the watermark");
}

bool InsideSandbox(const std::string& dir, const std::string& sandbox) {
  std::error_code ec;
  const fs::path real = fs::weakly_canonical(dir, ec);
  if (ec) return false;
  const std::string s = real.string();
  return s.size() > sandbox.size() + 1 && s.compare(0, sandbox.size() + 1, sandbox + "/") == 0;
}

void Handle(const anneal::pb::CoordinatorToAgent& msg, agent::Spool& spool, agent::Supervisor& supervisor,
            const std::string& sandbox) {
  switch (msg.body_case()) {
    case anneal::pb::CoordinatorToAgent::kRegisterReply:
      if (msg.register_reply().accepted()) (void)spool.AdoptCoordinatorWatermark(msg.register_reply().last_acked_seq());
      break;
    case anneal::pb::CoordinatorToAgent::kLaunch:
      (void)msg.launch().SerializeAsString();
      break;
    case anneal::pb::CoordinatorToAgent::kStop:
      supervisor.Stop(msg.stop());
      break;
    case anneal::pb::CoordinatorToAgent::kAck:
      (void)spool.Ack(msg.ack().seq());
      break;
    case anneal::pb::CoordinatorToAgent::kDeleteCheckpoint: {
      const auto& del = msg.delete_checkpoint();
      auto allowed = agent::ResolveDeletablePath(del.path(), del.output_dir());
      if (allowed.ok() && InsideSandbox(del.output_dir(), sandbox)) {
        const auto answer = supervisor.DeleteCheckpoint(del);
        FuzzCheck(answer.job_id() == del.job_id() && answer.step() == del.step(), "the answer names the order");
      }
      break;
    }
    case anneal::pb::CoordinatorToAgent::kFetchLogs: {
      const auto chunk = supervisor.FetchLogs(msg.fetch_logs());
      const uint32_t asked = msg.fetch_logs().max_bytes();
      const uint64_t limit = std::min<uint64_t>(asked ? asked : 65536, 4u << 20);
      FuzzCheck(chunk.data().size() <= limit, "a log chunk holds at most the requested bytes");
      break;
    }
    default:
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string sandbox = fs::canonical(anneal::fuzz::ProcessTempDir()).string();
  anneal::fuzz::ClearDir(sandbox);
  const std::string work = sandbox + "/work";
  fs::create_directories(work + "/jobs/job-1/attempt-1");
  fs::create_directories(sandbox + "/out/checkpoint-10");
  std::ofstream(work + "/jobs/job-1/attempt-1/rank-0.log") << "step 1 loss 2.5\nstep 2 loss 2.25\n";

  boost::asio::io_context io;
  agent::FakeClock clock;
  auto spool = agent::Spool::Open(work + "/spool");
  FuzzCheck(spool.ok(), "a fresh spool opens");
  agent::SupervisorOptions options;
  options.work_dir = work;
  options.node_id = "node-0";
  options.trainer = "/nonexistent/anneal-train";
  options.slots = 2;
  agent::Supervisor supervisor(io, clock, options, [&](anneal::pb::AgentToCoordinator report) {
    (void)(*spool)->Append(&report);  // unsequenced bodies (LogChunk) are refused, as the agent sends them
  });
  (void)supervisor.Recover();

  anneal::fuzz::Reader in(data, size);
  while (!in.empty()) {
    switch (in.U8() % 3) {
      case 0: {
        const auto bytes = in.Chunk();
        anneal::pb::CoordinatorToAgent msg;
        if (msg.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) Handle(msg, **spool, supervisor, sandbox);
        break;
      }
      case 1: {
        anneal::pb::AgentToCoordinator report;
        report.mutable_metric_batch()->set_job_id("job-1");
        report.mutable_metric_batch()->add_points()->set_step(in.U16());
        (void)(*spool)->Append(&report);
        break;
      }
      case 2:
        clock.Advance(in.U16());
        supervisor.Tick();
        break;
    }
    CheckSpool(**spool);
  }
  return 0;
}
