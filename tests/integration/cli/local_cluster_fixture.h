// A gtest fixture for `anneal up` against the real daemons: a temporary directory (HOME, so the state is
// <dir>/.anneal) holding copies of anneal, anneal-coordinator and anneal-agent in <dir>/bin, with fake_rank as the
// agents' anneal-train. Every rank of every job runs FakeRanks::steps steps interval_ms apart and writes into
// <dir>/<output_subdir>; `anneal down` runs at teardown.
//
// Ownership: the fixture owns its directory (removed with it). Thread-safety: one test thread.
//
// Example:
//   class MyTest : public LocalClusterFixture {
//    protected:
//     MyTest() : LocalClusterFixture({.steps = 3, .interval_ms = 100, .output_subdir = "out/run-1"}) {}
//   };
//   TEST_F(MyTest, Runs) { ASSERT_EQ(Anneal({"up", "--agents", "1"}).exit_code, 0); }
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "cli_harness.h"

namespace anneal::cli::testing {

class LocalClusterFixture : public ::testing::Test {
 protected:
  struct FakeRanks {
    int steps = 3;
    int interval_ms = 100;
    std::string output_subdir = "out/job";
  };

  explicit LocalClusterFixture(FakeRanks ranks) : ranks_(std::move(ranks)) {}

  void SetUp() override {
    namespace fs = std::filesystem;
    // Run as root, the agents start ranks as nobody: the fake trainer and the work dirs must be reachable.
    fs::permissions(dir_.path(), fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                     fs::perms::others_read | fs::perms::others_exec);
    fs::create_directories(dir_.path() + "/bin");
    for (const auto& [from, to] : std::map<std::string, std::string>{{ANNEAL_BINARY, "anneal"},
                                                                     {ANNEAL_COORDINATOR_BIN, "anneal-coordinator"},
                                                                     {ANNEAL_AGENT_BIN, "anneal-agent"},
                                                                     {FAKE_RANK_BIN, "anneal-train"}}) {
      fs::copy_file(from, dir_.path() + "/bin/" + to, fs::copy_options::overwrite_existing);
    }
    anneal_ = dir_.path() + "/bin/anneal";
  }

  void TearDown() override { Anneal({"down", "--grace", "5"}); }

  // anneal with HOME in the temp dir: the state is <dir>/.anneal, the client config <dir>/.anneal/config.
  RunResult Anneal(std::vector<std::string> args, double timeout_s = 60) {
    // The jobs' model and outputs are in the temp dir: the local cluster's path policy must allow it.
    if (!args.empty() && args[0] == "up") args.insert(args.end(), {"--allow-root", dir_.path()});
    return RunProgram(anneal_, args, dir_.path(),
                      // The client config that anneal up writes pins the cluster's key (not the harness's fake one).
                      {{"FAKE_STEPS", std::to_string(ranks_.steps)},
                       {"FAKE_INTERVAL_MS", std::to_string(ranks_.interval_ms)},
                       {"FAKE_OUTPUT_DIR", dir_.path() + "/" + ranks_.output_subdir},
                       {"ANNEAL_SERVER_KEY", ""},
                       {"ANNEAL_RANK_ENV_ALLOW", "FAKE_*"}},  // the agents pass these on to the ranks (an allow-list)
                      timeout_s);
  }

  FakeRanks ranks_;
  TempDir dir_;
  std::string anneal_;
};

}  // namespace anneal::cli::testing
