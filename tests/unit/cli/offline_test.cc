// Error paths that need no coordinator: usage, version, invalid specs (exit 2, nothing sent), an unreachable
// coordinator (exit 3 within the timeout), bad addresses and config files.
#include <gtest/gtest.h>

#include "cli_harness.h"
#include "common/version.h"

namespace anneal::cli::testing {
namespace {

const std::string kExamples = std::string(ANNEAL_SOURCE_DIR) + "/examples";

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Exactly one line on stderr.
bool OneLine(const std::string& err) { return !err.empty() && err.find('\n') == err.size() - 1; }

TEST(CliOffline, VersionAndHelp) {
  TempDir home;
  RunResult v = RunAnneal({"--version"}, home.path());
  EXPECT_EQ(v.exit_code, 0);
  EXPECT_EQ(v.out, std::string("anneal ") + anneal::Version() + "\n");
  RunResult h = RunAnneal({"--help"}, home.path());
  EXPECT_EQ(h.exit_code, 0);
  for (const char* cmd : {"submit", "ls", "show", "logs", "cancel", "checkpoints", "watch", "nodes", "drain", "up",
                          "down", "model"}) {
    EXPECT_TRUE(Contains(h.out, std::string("  ") + cmd)) << cmd << " missing from --help:\n" << h.out;
  }
}

TEST(CliOffline, UsageErrorsExitTwoWithOneLine) {
  TempDir home;
  RunResult none = RunAnneal({}, home.path());
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_TRUE(OneLine(none.err)) << none.err;
  RunResult bogus = RunAnneal({"bogus"}, home.path());
  EXPECT_EQ(bogus.exit_code, 2);
  EXPECT_EQ(bogus.err, "anneal: unknown command 'bogus' (see anneal --help)\n");
  RunResult missing = RunAnneal({"submit"}, home.path());
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_TRUE(Contains(missing.err, "JOB.yaml is required")) << missing.err;
  RunResult state = RunAnneal({"ls", "--state", "sleeping"}, home.path());
  EXPECT_EQ(state.exit_code, 2);
  EXPECT_TRUE(Contains(state.err, "anneal ls: unknown state 'sleeping'")) << state.err;
}

TEST(CliOffline, SubmitMissingFileExitsTwo) {
  TempDir home;
  RunResult r = RunAnneal({"submit", home.path() + "/nope.yaml"}, home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "anneal submit: job spec file not found: " + home.path() + "/nope.yaml\n");
  EXPECT_TRUE(r.out.empty());
}

TEST(CliOffline, SubmitInvalidSpecIsRejectedBeforeAnythingIsSent) {
  TempDir home;
  FakeCoordinator coordinator([](const pb::ClientRequest&) { return pb::ClientReply(); });
  const std::string spec = home.Write("job.yaml", "model_name_or_path: /m\ndataset: d\noutput_dir: /o\nlora_rnak: 8\n");
  RunResult r = RunAnneal({"--coordinator", coordinator.address(), "submit", spec}, home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "anneal submit: unknown key 'lora_rnak' at " + spec + ":4 (did you mean 'lora_rank'?)\n");
  RunResult o = RunAnneal({"--coordinator", coordinator.address(), "submit", kExamples + "/tiny_cpu_lora.yaml",
                           "--set", "lora_rank=eight"},
                          home.path());
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_EQ(o.err,
            "anneal submit: key 'lora_rank' in override 'lora_rank=eight': expected a positive integer, got 'eight'\n");
  EXPECT_TRUE(coordinator.requests().empty()) << "an invalid spec reached the coordinator";
}

TEST(CliOffline, UnreachableCoordinatorExitsThreeWithinTheTimeout) {
  TempDir home;
  const std::string dead = DeadAddress();
  RunResult r = RunAnneal({"--coordinator", dead, "--timeout", "1", "submit", kExamples + "/tiny_cpu_lora.yaml"},
                          home.path());
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.err, "anneal submit: coordinator not reachable at " + dead +
                       ": no reply within 1 s; is it running? (anneal up); if it is, the server key (from "
                       "ANNEAL_SERVER_KEY) may be wrong\n");
  EXPECT_LT(r.seconds, 5.0);
  RunResult nodes = RunAnneal({"--timeout", "0.5", "nodes"}, home.path(), {{"ANNEAL_COORDINATOR", dead}});
  EXPECT_EQ(nodes.exit_code, 3);
  EXPECT_TRUE(Contains(nodes.err, "coordinator not reachable at " + dead)) << nodes.err;
}

TEST(CliOffline, MalformedAddressIsAUsageError) {
  TempDir home;
  RunResult r = RunAnneal({"--coordinator", "localhost:7070", "nodes"}, home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err,
            "anneal nodes: invalid coordinator address 'localhost:7070': expected tcp://HOST:PORT (e.g. "
            "tcp://127.0.0.1:7070)\n");
}

TEST(CliOffline, MalformedClientConfigNamesTheFile) {
  TempDir home;
  home.Write(".anneal/config", "coordinator: [tcp://x\n");
  RunResult r = RunAnneal({"nodes"}, home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(Contains(r.err, home.path() + "/.anneal/config:")) << r.err;
  EXPECT_TRUE(Contains(r.err, "malformed client config")) << r.err;
  home.Write(".anneal/config", "coordinater: tcp://127.0.0.1:1\n");
  RunResult unknown = RunAnneal({"nodes"}, home.path());
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_TRUE(Contains(unknown.err, "unknown key 'coordinater' (known: coordinator, token, server_key)")) << unknown.err;
}

}  // namespace
}  // namespace anneal::cli::testing
