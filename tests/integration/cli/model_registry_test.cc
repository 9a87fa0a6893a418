// The model registry through the anneal binary against a real local cluster (coordinator + agent, jobs run by
// fake_rank): a job runs to SUCCEEDED, its output is registered and promoted, ls/show report it with its real
// files' sha256, a submit that would overwrite it is refused, a viewer may read but not promote, and the
// registry survives a SIGKILL of the coordinator and `anneal up`.
#include <gtest/gtest.h>
#include <signal.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "cli_harness.h"
#include "local_cluster_fixture.h"

namespace anneal::cli::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

class ModelRegistryCliTest : public LocalClusterFixture {
 protected:
  ModelRegistryCliTest() : LocalClusterFixture({.steps = 3, .interval_ms = 100, .output_subdir = "out/run-1"}) {}

  std::string Spec(const std::string& output_dir) {
    const std::string spec = dir_.path() + "/job.yaml";
    std::ofstream(spec) << "model_name_or_path: " << dir_.path()
                        << "/models/tiny\ndataset: alpaca\noutput_dir: " << output_dir << "\n";
    return spec;
  }
};

TEST_F(ModelRegistryCliTest, RegisterPromoteShowProtectAndSurviveARestart) {
  ASSERT_EQ(Anneal({"up", "--agents", "1", "--slots", "1"}).exit_code, 0);
  const std::string out = dir_.path() + "/out/run-1";
  RunResult submit = Anneal({"submit", Spec(out)});
  ASSERT_EQ(submit.exit_code, 0) << submit.err;
  const std::string job = submit.out.substr(0, submit.out.find('\n'));
  RunResult watch = Anneal({"watch", job}, 90);
  ASSERT_EQ(watch.exit_code, 0) << watch.out << watch.err;
  // What the trainer's export leaves in output_dir (fake_rank writes no model).
  fs::create_directories(out);
  std::ofstream(out + "/adapter_config.json") << "{}";
  std::ofstream(out + "/adapter_model.safetensors") << "abc";

  RunResult reg = Anneal({"models", "register", "--job", job, "--model", "default/summarizer"});
  ASSERT_EQ(reg.exit_code, 0) << reg.err;
  EXPECT_TRUE(Contains(reg.out, "default/summarizer v1 from job " + job)) << reg.out;
  EXPECT_TRUE(Contains(reg.out, "(now candidate)")) << reg.out;
  RunResult promote = Anneal({"models", "promote", "default/summarizer", "1", "--reason", "first"});
  ASSERT_EQ(promote.exit_code, 0) << promote.err;
  EXPECT_TRUE(Contains(promote.out, "(now production)")) << promote.out;

  RunResult ls = Anneal({"models", "ls"});
  ASSERT_EQ(ls.exit_code, 0) << ls.err;
  EXPECT_TRUE(Contains(ls.out, "default/summarizer")) << ls.out;
  EXPECT_TRUE(Contains(ls.out, job)) << ls.out;
  RunResult show = Anneal({"--json", "models", "show", "summarizer"});
  ASSERT_EQ(show.exit_code, 0) << show.err;
  const json shown = json::parse(show.out);
  ASSERT_EQ(shown["versions"].size(), 1u);
  const json& v = shown["versions"][0];
  EXPECT_EQ(v["stage"], "MODEL_PRODUCTION");
  EXPECT_EQ(v["source_job_id"], job);
  EXPECT_EQ(v["artifact"], "MODEL_PEFT_ADAPTER");
  ASSERT_EQ(v["files"].size(), 2u) << v.dump(2);
  EXPECT_EQ(v["files"][1]["path"], "adapter_model.safetensors");
  EXPECT_EQ(v["files"][1]["sha256"], "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  RunResult text = Anneal({"models", "show", "default/summarizer"});
  EXPECT_TRUE(Contains(text.out, "candidate -> production by admin: promoted by hand: first")) << text.out;

  // A run that would overwrite the production version is refused; the coordinator goes on serving.
  RunResult overwrite = Anneal({"submit", Spec(out)});
  EXPECT_EQ(overwrite.exit_code, 1);
  EXPECT_TRUE(Contains(overwrite.err, "registered model version default/summarizer v1 (production)")) << overwrite.err;
  RunResult refused = Anneal({"models", "archive", "default/summarizer", "1"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_TRUE(Contains(refused.err, "is in production")) << refused.err;
  RunResult unknown = Anneal({"models", "show", "default/nope"});
  EXPECT_EQ(unknown.exit_code, 4);
  EXPECT_TRUE(Contains(unknown.err, "no model 'nope' in team 'default'")) << unknown.err;
  RunResult bad_ref = Anneal({"models", "show", "a/b/c"});
  EXPECT_EQ(bad_ref.exit_code, 2);

  // A viewer reads but may not promote.
  ASSERT_EQ(Anneal({"user", "create", "vic"}).exit_code, 0);
  ASSERT_EQ(Anneal({"team", "add-member", "default", "vic", "--role", "viewer"}).exit_code, 0);
  RunResult token = Anneal({"token", "create", "--user", "vic", "--ttl", "1d"});
  ASSERT_EQ(token.exit_code, 0) << token.err;
  const std::string vic = token.out.substr(0, token.out.find('\n'));
  EXPECT_EQ(Anneal({"--token", vic, "models", "show", "default/summarizer"}).exit_code, 0);
  RunResult denied = Anneal({"--token", vic, "models", "promote", "default/summarizer", "1"});
  EXPECT_EQ(denied.exit_code, 4);
  EXPECT_TRUE(Contains(denied.err, "may not change the models of team 'default'")) << denied.err;

  // kill -9 of the coordinator; `anneal up` brings it back with the registry.
  pid_t coordinator = 0;
  for (const auto& p : YAML::LoadFile(dir_.path() + "/.anneal/cluster.yaml")["processes"]) {
    if (p["name"].as<std::string>() == "coordinator") coordinator = p["pid"].as<pid_t>();
  }
  ASSERT_GT(coordinator, 0);
  ASSERT_EQ(::kill(coordinator, SIGKILL), 0);
  ASSERT_EQ(Anneal({"up", "--agents", "1", "--slots", "1"}).exit_code, 0);
  RunResult after = Anneal({"--json", "models", "show", "default/summarizer"});
  ASSERT_EQ(after.exit_code, 0) << after.err;
  EXPECT_EQ(json::parse(after.out)["versions"][0]["stage"], "MODEL_PRODUCTION");
}

}  // namespace
}  // namespace anneal::cli::testing
