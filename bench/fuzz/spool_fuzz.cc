// Fuzz target: the agent spool loader (agent/spool.h). Input: a u16-length chunk written as the spool's
// `acked` file, the rest written as `reports.log`. Spool::Open must load any bytes without crashing and leave
// a consistent spool: pending seqs strictly increasing, above the acked watermark and below next_seq; an
// Append gets next_seq; a reopen sees the same pending reports; an Ack of everything empties it.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "agent/spool.h"
#include "bench/fuzz/fuzz_support.h"

using anneal::fuzz::FuzzCheck;

namespace {

void WriteFile(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::vector<uint64_t> PendingSeqs(const anneal::agent::Spool& spool) {
  std::vector<uint64_t> seqs;
  for (const auto& msg : spool.Pending()) seqs.push_back(anneal::agent::ReportSeq(msg));
  return seqs;
}

void CheckConsistent(const anneal::agent::Spool& spool) {
  uint64_t previous = spool.last_acked();
  for (const uint64_t seq : PendingSeqs(spool)) {
    FuzzCheck(seq > previous, "pending seqs are strictly increasing and above the acked watermark");
    previous = seq;
  }
  FuzzCheck(spool.next_seq() > previous, "next_seq is above every pending seq and the watermark");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  anneal::fuzz::Reader in(data, size);
  const std::string dir = anneal::fuzz::ProcessTempDir() + "/spool";
  anneal::fuzz::ClearDir(anneal::fuzz::ProcessTempDir());
  std::filesystem::create_directories(dir);
  WriteFile(dir + "/acked", in.Chunk());
  WriteFile(dir + "/reports.log", in.Rest());

  auto spool = anneal::agent::Spool::Open(dir);
  if (!spool.ok()) {
    FuzzCheck(!spool.status().message().empty(), "a refused spool has an error message");
    return 0;
  }
  CheckConsistent(**spool);

  anneal::pb::AgentToCoordinator metric;
  metric.mutable_metric_batch()->set_job_id("job-1");
  metric.mutable_metric_batch()->add_points()->set_step(1);
  const uint64_t expected = (*spool)->next_seq();
  auto seq = (*spool)->Append(&metric);
  if (seq.ok()) {
    FuzzCheck(*seq == expected, "Append gives the next seq");
    CheckConsistent(**spool);
  }
  const std::vector<uint64_t> before = PendingSeqs(**spool);
  spool->reset();

  auto reopened = anneal::agent::Spool::Open(dir);
  FuzzCheck(reopened.ok(), "a spool this process wrote reopens");
  CheckConsistent(**reopened);
  FuzzCheck(PendingSeqs(**reopened) == before, "a reopened spool has the same pending reports");
  if ((*reopened)->next_seq() > 1) {
    FuzzCheck((*reopened)->Ack((*reopened)->next_seq() - 1).ok(), "Ack of everything succeeds");
    FuzzCheck((*reopened)->Pending().empty(), "Ack of everything leaves nothing pending");
  }
  return 0;
}
