// Submit-time confinement: the path policy (a spec path outside the team's roots is refused naming the key,
// nothing is stored, the coordinator keeps serving), the output-directory exclusivity between active jobs,
// the coordinator never opening a file a spec names, and the roots travelling to the agents.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <fstream>

#include "coordinator/config.h"
#include "harness.h"

namespace anneal::coordinator {
namespace {

using testing::Harness;

CoordinatorOptions WithPolicy() {
  CoordinatorOptions o;
  auto policy = std::make_shared<jobspec::PathPolicy>();
  policy->defaults.models = {"/models"};
  policy->defaults.datasets = {"/datasets"};
  policy->defaults.outputs = {"/outputs/{team}"};
  o.path_policy = policy;
  return o;
}

std::string Spec(const std::string& model, const std::string& output) {
  return "model_name_or_path: " + model + "\ndataset: alpaca\ndataset_dir: /datasets/d\noutput_dir: " + output + "\n";
}

pb::ClientReply SubmitReply(Harness& h, const std::string& yaml, std::vector<std::string> overrides = {}) {
  pb::ClientRequest req;
  req.mutable_submit()->set_spec_yaml(yaml);
  for (auto& o : overrides) req.mutable_submit()->add_overrides(o);
  return h.Call(req);
}

size_t StoredJobs(Harness& h) {
  pb::ClientRequest list;
  list.mutable_list_jobs();
  return static_cast<size_t>(h.Call(list).list_jobs().jobs_size());
}

TEST(SubmitPaths, APathOutsideTheTeamsRootsIsRefusedNamingTheKeyAndNothingIsStored) {
  Harness h(WithPolicy());
  for (const auto& [yaml, key, path] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {Spec("/etc", "/outputs/default/a"), "model.model_name_or_path", "/etc"},
           {Spec("/models/m", "/tmp/x"), "train.output_dir", "/tmp/x"},
           {Spec("/models/m", "/outputs/other-team/x"), "train.output_dir", "/outputs/other-team/x"},
           {Spec("/models/m", "/outputs/default/a") + "adapter_name_or_path: /home/u/adapter\n",
            "model.adapter_name_or_path", "/home/u/adapter"},
       }) {
    const pb::ClientReply reply = SubmitReply(h, yaml);
    EXPECT_EQ(reply.error().code(), pb::PERMISSION_DENIED) << reply.error().message();
    EXPECT_NE(reply.error().message().find("key '" + key + "'"), std::string::npos) << reply.error().message();
    EXPECT_NE(reply.error().message().find(path), std::string::npos) << reply.error().message();
    EXPECT_NE(reply.error().message().find("team 'default'"), std::string::npos) << reply.error().message();
    EXPECT_NE(reply.error().message().find("allowed: "), std::string::npos) << reply.error().message();
  }
  // `..` is refused outright, also when it would stay inside.
  const pb::ClientReply dots = SubmitReply(h, Spec("/models/../etc", "/outputs/default/a"));
  EXPECT_EQ(dots.error().code(), pb::INVALID_ARGUMENT);
  EXPECT_NE(dots.error().message().find("'..'"), std::string::npos) << dots.error().message();
  EXPECT_EQ(h.core().ActiveJobCount(), 0u);
  EXPECT_EQ(StoredJobs(h), 0u);
  // Still serving: a spec inside the roots is accepted.
  EXPECT_FALSE(h.Submit(Spec("/models/m", "/outputs/default/a")).empty());
  EXPECT_EQ(h.core().ActiveJobCount(), 1u);
}

TEST(SubmitPaths, TheCoordinatorNeverOpensADeepSpeedFile) {
  Harness h(WithPolicy());
  const std::string yaml = Spec("/models/m", "/outputs/default/a") + "deepspeed: /etc/shadow\n";
  const pb::ClientReply reply = SubmitReply(h, yaml);
  EXPECT_EQ(reply.error().code(), pb::INVALID_ARGUMENT);
  EXPECT_NE(reply.error().message().find("key 'deepspeed'"), std::string::npos) << reply.error().message();
  EXPECT_EQ(StoredJobs(h), 0u);
  // What `anneal submit` sends: the stage as an override, which replaces the key.
  EXPECT_EQ(SubmitReply(h, yaml, {"resources.zero_stage=0"}).error().code(), pb::OK);
}

TEST(SubmitPaths, TwoActiveJobsNeverShareAnOutputDirectory) {
  Harness h;  // no policy: the output exclusivity holds on its own
  const std::string first = h.Submit(Spec("/m", "/out/run"));
  for (const std::string clash : {"/out/run", "/out/run/", "/out/run/inner", "/out", "/out/./run"}) {
    const pb::ClientReply reply = SubmitReply(h, Spec("/m", clash));
    EXPECT_EQ(reply.error().code(), pb::FAILED_PRECONDITION) << clash;
    EXPECT_NE(reply.error().message().find("active job " + first), std::string::npos) << reply.error().message();
    EXPECT_NE(reply.error().message().find("output_dir " + clash), std::string::npos) << reply.error().message();
  }
  EXPECT_EQ(h.core().ActiveJobCount(), 1u);
  // A sibling is fine; once the first job ended its directory is free again.
  EXPECT_FALSE(h.Submit(Spec("/m", "/out/run2")).empty());
  h.Cancel(first);
  EXPECT_FALSE(h.Submit(Spec("/m", "/out/run")).empty());
  // The index survives a restart.
  h.Restart();
  EXPECT_EQ(SubmitReply(h, Spec("/m", "/out/run")).error().code(), pb::FAILED_PRECONDITION);
}

TEST(SubmitPaths, LaunchesCarryTheTeamAndItsOutputRoots) {
  Harness h(WithPolicy());
  h.Register("n1", 1);
  const std::string job = h.Submit(Spec("/models/m", "/outputs/default/a"));
  const auto launches = h.Launches("n1");
  ASSERT_EQ(launches.size(), 1u);
  EXPECT_EQ(launches[0].team(), "default");
  ASSERT_EQ(launches[0].output_roots_size(), 1);
  EXPECT_EQ(launches[0].output_roots(0), "/outputs/default");
}

TEST(CoordinatorConfig, ReadsThePathPolicyAndNamesItsErrors) {
  const std::string path = std::filesystem::temp_directory_path() / ("anneal-cfg-" + std::to_string(getpid()));
  std::ofstream(path) << "bind: tcp://127.0.0.1:7070\npath_policy:\n  default: {models: [/m], datasets: [/d], "
                         "outputs: [\"/o/{team}\"]}\n  teams: {nlp: {models: [/nlp]}}\n";
  CoordinatorConfig config;
  ASSERT_TRUE(LoadConfigFile(path, &config).ok());
  ASSERT_TRUE(config.path_policy.has_value());
  EXPECT_EQ(config.path_policy->RootsFor("nlp")->models, std::vector<std::string>{"/nlp"});
  EXPECT_EQ(config.path_policy->RootsFor("nlp")->outputs, std::vector<std::string>{"/o/nlp"});
  std::ofstream(path) << "path_policy:\n  default: {outputs: [relative/dir]}\n";
  CoordinatorConfig bad;
  const Status st = LoadConfigFile(path, &bad);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find(path + ":1: path_policy.default.outputs: root 'relative/dir' is not an absolute path"),
            std::string::npos)
      << st.message();
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace anneal::coordinator
