// `anneal up` heals a local cluster of real daemons: after the coordinator (or an agent) is killed with SIGKILL
// mid-job, `anneal up` restarts exactly what is gone, on the same state, and the job goes on to SUCCEEDED in
// its first attempt while the daemons that were running keep their pids.
//
// The binaries are copies in a temporary bin/ (anneal finds the daemons next to itself; the agent runs the
// anneal-train next to itself, here fake_rank, which takes its behaviour from the environment that `anneal up`
// hands down to the daemons and they to the ranks).
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli_harness.h"
#include "local_cluster_fixture.h"

namespace anneal::cli::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// The pid exists, is not a zombie, and runs `program`.
bool Runs(pid_t pid, const std::string& program) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::string argv0;
  std::getline(in, argv0, '\0');
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string content((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const size_t paren = content.rfind(')');
  const bool zombie = paren != std::string::npos && content.substr(paren + 2, 1) == "Z";
  return !zombie && fs::path(argv0).filename() == program;
}

bool GoneWithin(pid_t pid, const std::string& program, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (Runs(pid, program)) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

std::string ReadFileText(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Every rank of every job runs 40 steps 300 ms apart (about 12 s).
class LocalClusterTest : public LocalClusterFixture {
 protected:
  LocalClusterTest() : LocalClusterFixture({.steps = 40, .interval_ms = 300, .output_subdir = "out/job"}) {}

  // name -> pid, as cluster.yaml records them now.
  std::map<std::string, pid_t> Pids() {
    std::map<std::string, pid_t> pids;
    for (const auto& p : YAML::LoadFile(dir_.path() + "/.anneal/cluster.yaml")["processes"]) {
      pids[p["name"].as<std::string>()] = p["pid"].as<pid_t>();
    }
    return pids;
  }

  std::string SubmitJob() {
    const std::string spec = dir_.path() + "/job.yaml";
    // Inside the local cluster's path policy (the directory anneal up runs in).
    std::ofstream(spec) << "model_name_or_path: " << dir_.path()
                        << "/models/tiny\ndataset: alpaca\noutput_dir: " << dir_.path()
                        << "/out/job\nnodes: 2\ngpus_per_node: 2\n";
    RunResult r = Anneal({"submit", spec});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out.substr(0, r.out.find('\n'));
  }

  json Show(const std::string& job) {
    RunResult r = Anneal({"--json", "show", job});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  }

  // Waits until the job is RUNNING and rank 0 has reported a step.
  void WaitUntilRunning(const std::string& job) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
      json j = Show(job);
      if (j["job"]["state"] == "JOB_RUNNING" && !j["last_metrics"].empty()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    FAIL() << "job " << job << " did not start running: " << Show(job).dump(2);
  }

  // The job ends SUCCEEDED in its first attempt and no attempt failed.
  void ExpectSucceededInTheFirstAttempt(const std::string& job) {
    RunResult watch = Anneal({"watch", job}, 90);
    EXPECT_EQ(watch.exit_code, 0) << watch.out << watch.err;
    json j = Show(job);
    EXPECT_EQ(j["job"]["state"], "JOB_SUCCEEDED");
    EXPECT_EQ(j["job"]["attempt"], 1);
    EXPECT_EQ(j["failed_attempts"], json::array()) << j.dump(2);
  }
};

TEST_F(LocalClusterTest, UpAfterTheCoordinatorWasKilledRestartsOnlyItAndTheJobGoesOn) {
  RunResult up = Anneal({"up", "--agents", "2", "--slots", "2"});
  ASSERT_EQ(up.exit_code, 0) << up.err;
  const std::string job = SubmitJob();
  WaitUntilRunning(job);
  const std::map<std::string, pid_t> before = Pids();
  ASSERT_EQ(before.size(), 3u);
  ::kill(before.at("coordinator"), SIGKILL);
  ASSERT_TRUE(GoneWithin(before.at("coordinator"), "anneal-coordinator", std::chrono::seconds(5)));

  RunResult heal = Anneal({"up"});
  ASSERT_EQ(heal.exit_code, 0) << heal.err;
  EXPECT_TRUE(Contains(heal.out, "local cluster healed")) << heal.out;
  EXPECT_TRUE(Contains(heal.out, "restarted: coordinator (pid ")) << heal.out;
  const std::map<std::string, pid_t> after = Pids();
  EXPECT_NE(after.at("coordinator"), before.at("coordinator"));
  EXPECT_TRUE(Runs(after.at("coordinator"), "anneal-coordinator"));
  for (const char* agent : {"agent local-0", "agent local-1"}) {
    EXPECT_EQ(after.at(agent), before.at(agent)) << agent << " was restarted";
    EXPECT_TRUE(Runs(before.at(agent), "anneal-agent")) << agent << " is not running";
  }
  ExpectSucceededInTheFirstAttempt(job);
  EXPECT_EQ(Pids(), after) << "nothing else was restarted";
}

TEST_F(LocalClusterTest, UpAfterAnAgentWasKilledRestartsOnlyThatAgentAndItsRanksAreAdopted) {
  RunResult up = Anneal({"up", "--agents", "2", "--slots", "2"});
  ASSERT_EQ(up.exit_code, 0) << up.err;
  const std::string job = SubmitJob();
  WaitUntilRunning(job);
  const std::map<std::string, pid_t> before = Pids();
  ::kill(before.at("agent local-1"), SIGKILL);
  ASSERT_TRUE(GoneWithin(before.at("agent local-1"), "anneal-agent", std::chrono::seconds(5)));

  RunResult heal = Anneal({"up"});
  ASSERT_EQ(heal.exit_code, 0) << heal.err;
  EXPECT_TRUE(Contains(
      heal.err, "agent local-1 (pid " + std::to_string(before.at("agent local-1")) + ") is not running: restarting it"))
      << heal.err;
  const std::map<std::string, pid_t> after = Pids();
  EXPECT_EQ(after.at("coordinator"), before.at("coordinator"));
  EXPECT_EQ(after.at("agent local-0"), before.at("agent local-0"));
  EXPECT_NE(after.at("agent local-1"), before.at("agent local-1"));
  EXPECT_TRUE(Runs(after.at("agent local-1"), "anneal-agent"));
  EXPECT_TRUE(Contains(heal.out, "restarted: agent local-1 (pid " + std::to_string(after.at("agent local-1")) + ")"))
      << heal.out;
  ExpectSucceededInTheFirstAttempt(job);
}

TEST_F(LocalClusterTest, UpOnAHealthyClusterChangesNothingAndAConflictingShapeIsRefused) {
  RunResult up = Anneal({"up", "--agents", "2", "--slots", "2"});
  ASSERT_EQ(up.exit_code, 0) << up.err;
  const std::map<std::string, pid_t> before = Pids();
  // CurveZMQ is on: the client config pins the coordinator's public key, the agents its key file.
  std::ifstream pub_file(dir_.path() + "/.anneal/coordinator/curve.pub");
  std::string pub;
  pub_file >> pub;
  ASSERT_EQ(pub.size(), 40u);
  std::ifstream config_file(dir_.path() + "/.anneal/config");
  const std::string config((std::istreambuf_iterator<char>(config_file)), std::istreambuf_iterator<char>());
  EXPECT_TRUE(Contains(config, "server_key: \"" + pub + "\"")) << config;
  const std::string cluster = ReadFileText(dir_.path() + "/.anneal/cluster.yaml");
  EXPECT_TRUE(Contains(cluster, "--server-key-file")) << cluster;

  RunResult again = Anneal({"up"});
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_TRUE(Contains(again.out, "local cluster already running, nothing to do")) << again.out;
  RunResult same = Anneal({"up", "--agents", "2", "--slots", "2"});
  EXPECT_EQ(same.exit_code, 0) << same.err;

  RunResult more = Anneal({"up", "--agents", "3"});
  EXPECT_EQ(more.exit_code, 2);
  EXPECT_TRUE(Contains(more.err, "a local cluster of 2 agent(s) x 2 slot(s) is running in " + dir_.path() +
                                     "/.anneal and this request differs: --agents 3 (it runs 2 agent(s))"))
      << more.err;
  EXPECT_EQ(Pids(), before);
  for (const auto& [name, pid] : before) {
    EXPECT_TRUE(Runs(pid, name == "coordinator" ? "anneal-coordinator" : "anneal-agent")) << name;
  }
  RunResult nodes = Anneal({"nodes"});
  EXPECT_TRUE(Contains(nodes.out, "local-0") && Contains(nodes.out, "local-1")) << nodes.out;
  EXPECT_FALSE(Contains(nodes.out, "local-2")) << nodes.out;
}

}  // namespace
}  // namespace anneal::cli::testing

namespace anneal::cli::testing {
namespace {

// Teams through the real CLI and daemons: the bootstrapped cluster admin creates a team, two users and their
// tokens; the member submits, the viewer is refused and reads, an outsider reads nothing, a revoked token stops
// at once, and the audit log tells the story. The cluster admin's credential is only in the 0600 client config.
TEST_F(LocalClusterTest, TeamsUsersAndTokensThroughTheCli) {
  ASSERT_EQ(Anneal({"up", "--agents", "1", "--slots", "2"}).exit_code, 0);
  const std::string config = dir_.path() + "/.anneal/config";
  EXPECT_EQ(fs::status(config).permissions() & fs::perms::all, fs::perms::owner_read | fs::perms::owner_write);
  std::ifstream cluster_file(dir_.path() + "/.anneal/cluster.yaml");
  const std::string cluster((std::istreambuf_iterator<char>(cluster_file)), std::istreambuf_iterator<char>());
  EXPECT_FALSE(Contains(cluster, "ant_")) << cluster;
  RunResult who = Anneal({"whoami"});
  ASSERT_EQ(who.exit_code, 0) << who.err;
  EXPECT_TRUE(Contains(who.out, "admin (cluster admin)")) << who.out;

  for (const std::vector<std::string>& step :
       std::vector<std::vector<std::string>>{{"team", "create", "nlp"},
                                             {"user", "create", "nina"},
                                             {"user", "create", "vic"},
                                             {"user", "create", "otto"},
                                             {"team", "add-member", "nlp", "nina", "--role", "member"},
                                             {"team", "add-member", "nlp", "vic", "--role", "viewer"}}) {
    RunResult r = Anneal(step);
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  std::map<std::string, std::string> token;
  for (const std::string user : {"nina", "vic", "otto"}) {
    RunResult r = Anneal({"token", "create", "--user", user, "--ttl", "1d"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    token[user] = r.out.substr(0, r.out.find('\n'));
    EXPECT_EQ(token[user].rfind("ant_", 0), 0u) << r.out;
    EXPECT_TRUE(Contains(r.err, "shown once")) << r.err;
  }
  auto as = [&](const std::string& user, std::vector<std::string> args) {
    args.insert(args.begin(), {"--token", token[user]});
    return Anneal(args);
  };
  const std::string spec = dir_.path() + "/job.yaml";
  std::ofstream(spec) << "model_name_or_path: " << dir_.path()
                      << "/models/tiny\ndataset: alpaca\noutput_dir: " << dir_.path() << "/out/job\n";
  RunResult viewer_submit = as("vic", {"submit", spec, "--team", "nlp"});
  EXPECT_EQ(viewer_submit.exit_code, 4);
  EXPECT_TRUE(Contains(viewer_submit.err, "user 'vic' may not submit jobs to team 'nlp': that needs role member"))
      << viewer_submit.err;
  RunResult submit = as("nina", {"submit", spec});
  ASSERT_EQ(submit.exit_code, 0) << submit.err;
  const std::string job = submit.out.substr(0, submit.out.find('\n'));
  RunResult viewer_ls = as("vic", {"ls"});
  EXPECT_TRUE(Contains(viewer_ls.out, job)) << viewer_ls.out;
  EXPECT_TRUE(Contains(viewer_ls.out, "nina")) << viewer_ls.out;
  EXPECT_FALSE(Contains(as("otto", {"ls"}).out, job));
  RunResult outsider = as("otto", {"cancel", job});
  EXPECT_EQ(outsider.exit_code, 4);
  EXPECT_TRUE(Contains(outsider.err, "may not cancel jobs of team 'nlp'")) << outsider.err;

  RunResult mine = as("nina", {"--json", "token", "ls"});
  ASSERT_EQ(mine.exit_code, 0) << mine.err;
  const json tokens = json::parse(mine.out);
  ASSERT_EQ(tokens.size(), 1u);
  EXPECT_FALSE(tokens[0].contains("secret_hash") && !tokens[0]["secret_hash"].get<std::string>().empty());
  ASSERT_EQ(as("nina", {"token", "revoke", tokens[0]["token_id"].get<std::string>()}).exit_code, 0);
  RunResult revoked = as("nina", {"ls"});
  EXPECT_EQ(revoked.exit_code, 4);
  EXPECT_TRUE(Contains(revoked.err, "was revoked")) << revoked.err;

  RunResult audit = Anneal({"audit"});
  ASSERT_EQ(audit.exit_code, 0) << audit.err;
  for (const std::string line : {"team.create", "user.create", "permission_denied", "token.revoke", "submit"}) {
    EXPECT_TRUE(Contains(audit.out, line)) << line << "\n" << audit.out;
  }
  ASSERT_EQ(Anneal({"cancel", job}).exit_code, 0);
}

}  // namespace
}  // namespace anneal::cli::testing
