// anneal-agent: runs on every node; launches, watches and cleans up the trainer ranks the coordinator places
// here. See docs/agent.md.
#include <iostream>

#include <spdlog/spdlog.h>

#include "agent/agent.h"
#include "agent/config.h"
#include "common/log.h"
#include "common/shutdown.h"
#include "transfer/client.h"

namespace {

// --verify-artifacts: the store's blobs hashed again (transfer/client.h BlobStore::Verify).
int VerifyArtifacts(const std::string& store_dir) {
  anneal::transfer::BlobStore store(store_dir);
  auto report = store.Verify();
  if (!report.ok()) {
    std::cerr << "anneal-agent --verify-artifacts: " << report.status().ToString() << "\n";
    return 2;
  }
  std::cout << store_dir << ": " << report->blobs_checked << (report->blobs_checked == 1 ? " file (" : " files (")
            << report->bytes_checked << " bytes) checked, " << report->removed.size()
            << " damaged and removed (fetched again when next needed)\n";
  for (const std::string& name : report->removed) std::cout << "  removed " << name << "\n";
  return report->removed.empty() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  auto parsed = anneal::agent::ParseAgentFlags(argc, argv);
  if (!parsed.ok()) {
    std::cerr << parsed.status().message() << "\n";
    return 2;
  }
  if (parsed->exit_now) {
    std::cout << parsed->output;
    return 0;
  }
  const anneal::agent::AgentConfig& config = parsed->config;
  if (auto st = anneal::InitLogging("anneal-agent", config.log_level); !st.ok()) {
    std::cerr << st.message() << "\n";
    return 2;
  }
  if (parsed->verify_artifacts) return VerifyArtifacts(config.work_dir + "/artifacts");
  anneal::InstallShutdownHandlers();
  anneal::agent::SystemClock clock;
  anneal::agent::Nvml nvml;
  anneal::agent::Agent agent(config, clock, nvml);
  if (auto st = agent.Init(); !st.ok()) {
    spdlog::critical("{}", st.ToString());
    return 1;
  }
  if (auto st = agent.Run(); !st.ok()) {
    spdlog::critical("{}", st.ToString());
    return 1;
  }
  spdlog::info("anneal-agent stopped");
  return 0;
}
