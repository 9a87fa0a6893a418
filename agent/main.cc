// anneal-agent: runs on every node; launches, watches and cleans up the trainer ranks the coordinator places
// here. See docs/agent.md.
#include <iostream>

#include <spdlog/spdlog.h>

#include "agent/agent.h"
#include "agent/config.h"
#include "common/log.h"
#include "common/shutdown.h"

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
