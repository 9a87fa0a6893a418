// PathPolicy: every path key of a JobSpec checked against its team's roots, with real directories and
// symlinks in a temporary tree.
#include "jobspec/path_policy.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>

namespace anneal::jobspec {
namespace {

namespace fs = std::filesystem;

class PathPolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/anneal-path-policy-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = fs::canonical(tmpl).string();
    for (const char* d : {"models/base", "models/other", "data/ds", "data/tasks", "out/nlp", "secret"}) {
      fs::create_directories(root_ + "/" + d);
    }
    std::ofstream(root_ + "/data/ds/train.json") << "[]";
    std::ofstream(root_ + "/secret/x.json") << "[]";
    policy_.defaults.models = {root_ + "/models"};
    policy_.defaults.datasets = {root_ + "/data"};
    policy_.defaults.outputs = {root_ + "/out/{team}"};
  }
  void TearDown() override { fs::remove_all(root_); }

  // A train spec whose every path lies inside the roots of team nlp.
  JobSpec GoodSpec() const {
    JobSpec s;
    s.model.model_name_or_path = root_ + "/models/base";
    s.data.dataset_dir = root_ + "/data/ds";
    s.data.dataset = {"train.json"};
    s.train.output_dir = root_ + "/out/nlp/job1";
    return s;
  }
  Status Check(const JobSpec& s, const std::string& team = "nlp") const { return CheckSpecPaths(s, team, policy_); }

  // The refusal names the key, the path and the allowed roots.
  void ExpectRefused(const Status& st, const std::string& key, const std::string& path) const {
    ASSERT_FALSE(st.ok()) << "expected a refusal of " << key;
    EXPECT_NE(st.message().find("key '" + key), std::string::npos) << st.message();
    EXPECT_NE(st.message().find(path), std::string::npos) << st.message();
    EXPECT_NE(st.message().find("allowed: "), std::string::npos) << st.message();
  }

  std::string root_;
  PathPolicy policy_;
};

TEST_F(PathPolicyTest, AcceptsNestedPathsInsideTheRoots) {
  JobSpec s = GoodSpec();
  s.model.adapter_name_or_path = root_ + "/out/nlp/earlier-job";  // a team may reuse its own outputs
  s.data.eval_dataset = {root_ + "/data/ds/train.json"};
  s.eval.task_dir = root_ + "/data/tasks";
  s.eval.output_file = root_ + "/out/nlp/job1/results.json";
  s.train.resume_from_checkpoint = root_ + "/out/nlp/job1/checkpoint-10";
  s.data.tokenized_cache_dir = root_ + "/out/nlp/cache";
  EXPECT_TRUE(Check(s).ok()) << Check(s).message();
  s.train.resume_from_checkpoint = "latest";
  EXPECT_TRUE(Check(s).ok());
}

TEST_F(PathPolicyTest, RefusesEveryPathKeyOutsideItsRoots) {
  const std::string outside = root_ + "/secret";
  struct Case {
    std::string key;
    std::function<void(JobSpec&)> set;
  };
  const std::vector<Case> cases = {
      {"model.model_name_or_path", [&](JobSpec& s) { s.model.model_name_or_path = outside; }},
      {"model.adapter_name_or_path", [&](JobSpec& s) { s.model.adapter_name_or_path = outside; }},
      {"data.dataset_dir", [&](JobSpec& s) { s.data.dataset_dir = outside; }},
      {"data.dataset ('" + outside + "/x.json')", [&](JobSpec& s) { s.data.dataset = {outside + "/x.json"}; }},
      {"data.eval_dataset", [&](JobSpec& s) { s.data.eval_dataset = {outside + "/x.json"}; }},
      {"eval.task_dir", [&](JobSpec& s) { s.eval.task_dir = outside; }},
      {"train.output_dir", [&](JobSpec& s) { s.train.output_dir = outside + "/run"; }},
      {"data.tokenized_cache_dir", [&](JobSpec& s) { s.data.tokenized_cache_dir = outside + "/cache"; }},
      {"eval.output_file", [&](JobSpec& s) { s.eval.output_file = outside + "/r.json"; }},
      {"train.resume_from_checkpoint", [&](JobSpec& s) { s.train.resume_from_checkpoint = outside + "/ck"; }},
      // Models are not outputs: the models roots do not accept a written key.
      {"train.output_dir", [&](JobSpec& s) { s.train.output_dir = root_ + "/models/run"; }},
      // A checkpoint is read back from outputs only.
      {"train.resume_from_checkpoint", [&](JobSpec& s) { s.train.resume_from_checkpoint = root_ + "/models/base"; }},
  };
  for (const auto& c : cases) {
    JobSpec s = GoodSpec();
    c.set(s);
    const Status st = Check(s);
    EXPECT_EQ(st.code(), StatusCode::kPermissionDenied) << c.key << ": " << st.message();
    ExpectRefused(st, c.key, "team 'nlp'");
  }
}

TEST_F(PathPolicyTest, AnExportJobIsCheckedForItsModelAdapterAndExportDirOnly) {
  JobSpec s;
  s.kind = JobKind::kExport;
  s.model.model_name_or_path = root_ + "/models/base";
  s.model.adapter_name_or_path = root_ + "/out/nlp/job1";
  s.train.output_dir = s.export_.dir = root_ + "/out/nlp/merged";
  s.data.dataset_dir = "data";  // the default, relative: an export reads no data, so it is not checked
  EXPECT_TRUE(Check(s).ok()) << Check(s).message();
  s.train.output_dir = s.export_.dir = root_ + "/models/merged";  // written: outputs roots only
  ExpectRefused(Check(s), "export.dir (the job's output_dir)", "team 'nlp'");
  s.train.output_dir = s.export_.dir = root_ + "/out/nlp/merged";
  s.model.adapter_name_or_path = root_ + "/secret";
  ExpectRefused(Check(s), "model.adapter_name_or_path", "team 'nlp'");
}

TEST_F(PathPolicyTest, ErrorNamesKeyPathAndRoots) {
  JobSpec s = GoodSpec();
  s.model.model_name_or_path = "/etc";
  const Status st = Check(s);
  EXPECT_EQ(st.message(),
            "key 'model.model_name_or_path': path /etc is outside the models and outputs roots of team "
            "'nlp' (allowed: " +
                root_ + "/models, " + root_ + "/out/nlp)");
}

TEST_F(PathPolicyTest, RefusesDotDotComponentsAndRelativePaths) {
  JobSpec s = GoodSpec();
  s.model.model_name_or_path = root_ + "/models/../secret";
  Status st = Check(s);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("key 'model.model_name_or_path'"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("'..'"), std::string::npos) << st.message();
  // Even a `..` that stays inside: after a symlink it would not mean what it reads like.
  s.model.model_name_or_path = root_ + "/models/other/../base";
  EXPECT_EQ(Check(s).code(), StatusCode::kInvalidArgument);
  s = GoodSpec();
  s.data.dataset = {"../secret/x.json"};
  EXPECT_NE(Check(s).message().find("data.dataset ('../secret/x.json')"), std::string::npos) << Check(s).message();
  s = GoodSpec();
  s.train.output_dir = "out/nlp/job1";
  st = Check(s);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("not absolute"), std::string::npos) << st.message();
}

TEST_F(PathPolicyTest, RefusesSymlinkEscapes) {
  fs::create_directory_symlink(root_ + "/secret", root_ + "/models/escape");
  JobSpec s = GoodSpec();
  s.model.model_name_or_path = root_ + "/models/escape";
  Status st = Check(s);
  ExpectRefused(st, "model.model_name_or_path", "resolves to " + root_ + "/secret");
  // Below a symlinked directory, in a part that does not exist yet.
  fs::create_directory_symlink(root_ + "/secret", root_ + "/out/nlp/link");
  s = GoodSpec();
  s.train.output_dir = root_ + "/out/nlp/link/new/run";
  ExpectRefused(Check(s), "train.output_dir", root_ + "/secret/new/run");
  // A dangling symlink could be pointed anywhere later: refused.
  fs::create_directory_symlink(root_ + "/nowhere", root_ + "/out/nlp/dangling");
  s.train.output_dir = root_ + "/out/nlp/dangling";
  st = Check(s);
  EXPECT_NE(st.message().find("symlink to nothing"), std::string::npos) << st.message();
  // A symlink that stays inside the roots is fine.
  fs::create_directory_symlink(root_ + "/models/base", root_ + "/models/alias");
  s = GoodSpec();
  s.model.model_name_or_path = root_ + "/models/alias";
  EXPECT_TRUE(Check(s).ok()) << Check(s).message();
}

TEST_F(PathPolicyTest, DatasetInfoFileNamesAreChecked) {
  std::ofstream(root_ + "/data/ds/dataset_info.json")
      << R"({"good": {"file_name": "train.json"}, "bad": {"file_name": ")" << root_ << R"(/secret/x.json"},
             "up": {"file_name": "../../secret/x.json"}})";
  JobSpec s = GoodSpec();
  s.data.dataset = {"good"};
  EXPECT_TRUE(Check(s).ok()) << Check(s).message();
  s.data.dataset = {"good", "bad"};
  ExpectRefused(Check(s), "data.dataset ('bad': file_name in " + root_ + "/data/ds/dataset_info.json)",
                root_ + "/secret/x.json");
  s.data.dataset = {"good"};
  s.data.eval_dataset = {"up"};
  EXPECT_NE(Check(s).message().find("data.eval_dataset ('up'"), std::string::npos) << Check(s).message();
  // dataset_info.json itself a symlink out of the roots: refused before it is read.
  fs::remove(root_ + "/data/ds/dataset_info.json");
  fs::create_symlink(root_ + "/secret/x.json", root_ + "/data/ds/dataset_info.json");
  s.data.eval_dataset.clear();
  ExpectRefused(Check(s), "data.dataset_dir (its dataset_info.json)", "dataset_info.json");
}

TEST_F(PathPolicyTest, OutputsMustBeBelowARootNotTheRootItself) {
  JobSpec s = GoodSpec();
  s.train.output_dir = root_ + "/out/nlp";
  const Status st = Check(s);
  EXPECT_EQ(st.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(st.message().find("use a directory below it"), std::string::npos) << st.message();
  // One level below is fine: the default cache directory (<output_dir>/../.anneal-cache) is then directly in
  // the root, also below it.
  s.train.output_dir = root_ + "/out/nlp/job";
  EXPECT_TRUE(Check(s).ok());
}

TEST_F(PathPolicyTest, TeamRootsReplaceTheDefaultPerCategory) {
  policy_.teams["vision"].models = std::vector<std::string>{root_ + "/models/other"};
  JobSpec s = GoodSpec();
  s.train.output_dir = root_ + "/out/vision/run";
  // vision's models are only models/other; its datasets and outputs come from the default ({team} = vision).
  ExpectRefused(Check(s, "vision"), "model.model_name_or_path", root_ + "/models/base");
  s.model.model_name_or_path = root_ + "/models/other";
  EXPECT_TRUE(Check(s, "vision").ok()) << Check(s, "vision").message();
  // nlp may not write into vision's outputs ({team} keeps teams apart).
  ExpectRefused(Check(s, "nlp"), "train.output_dir", root_ + "/out/vision/run");
  // A team name that cannot be put in a path is refused.
  EXPECT_EQ(Check(GoodSpec(), "../x").code(), StatusCode::kInvalidArgument);
}

TEST(PathPolicyParse, ReadsTheConfigShapeAndWritesItBack) {
  const YAML::Node node = YAML::Load(R"(
default: {models: [/m], datasets: [/d, "/t/{team}/d"], outputs: ["/o/{team}"]}
teams:
  nlp: {models: [/m, /nlp/m]}
  empty: {}
)");
  auto policy = ParsePathPolicy(node, "c.yaml");
  ASSERT_TRUE(policy.ok()) << policy.status().message();
  auto nlp = policy->RootsFor("nlp");
  ASSERT_TRUE(nlp.ok());
  EXPECT_EQ(nlp->models, (std::vector<std::string>{"/m", "/nlp/m"}));
  EXPECT_EQ(nlp->datasets, (std::vector<std::string>{"/d", "/t/nlp/d"}));
  EXPECT_EQ(nlp->outputs, (std::vector<std::string>{"/o/nlp"}));
  auto back = ParsePathPolicy(YAML::Load(PathPolicyYaml(*policy))["path_policy"], "again");
  ASSERT_TRUE(back.ok()) << back.status().message() << "\n" << PathPolicyYaml(*policy);
  EXPECT_EQ(*back, *policy);
}

TEST(PathPolicyParse, RefusesBadRootsAndKeysNamingThem) {
  struct Case {
    const char* yaml;
    const char* expected;
  };
  for (const Case& c : std::vector<Case>{
           {"default: {models: [relative]}", "path_policy.default.models: root 'relative' is not an absolute path"},
           {"default: {models: [/a/../b]}", "path_policy.default.models: root '/a/../b' has a '..' component"},
           {"default: {modles: [/a]}", "path_policy.default.modles: unknown key (known: models, datasets, outputs)"},
           {"teams: {'a/b': {}}", "path_policy.teams.a/b: invalid team name"},
           {"default: {outputs: /a}", "path_policy.default.outputs: expected a list"},
           {"other: 1", "path_policy.other: unknown key (known: default, teams)"},
       }) {
    auto p = ParsePathPolicy(YAML::Load(c.yaml), "c.yaml");
    ASSERT_FALSE(p.ok()) << c.yaml;
    EXPECT_NE(p.status().message().find(c.expected), std::string::npos) << p.status().message();
    EXPECT_NE(p.status().message().find("c.yaml"), std::string::npos);
  }
}

TEST(PathPolicyResolve, ComparesWholeComponents) {
  EXPECT_TRUE(PathIsUnder("/data/outputs/x", "/data/outputs"));
  EXPECT_TRUE(PathIsUnder("/data/outputs", "/data/outputs"));
  EXPECT_FALSE(PathIsStrictlyUnder("/data/outputs", "/data/outputs"));
  EXPECT_FALSE(PathIsUnder("/data/outputs2", "/data/outputs"));
  EXPECT_TRUE(PathIsUnder("/anything", "/"));
  auto r = ResolvePolicyPath("/no-such-dir-anneal//a/./b/");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, "/no-such-dir-anneal/a/b");
}

TEST(ParseOptions, TheCoordinatorNeverOpensADeepSpeedFile) {
  const std::string spec = "model_name_or_path: /m\ndataset: d\noutput_dir: /o/x\ndeepspeed: /etc/shadow\n";
  auto parsed = ParseJobSpec(spec, "submitted job spec", {}, ParseOptions{.open_files = false});
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.status().message().find("key 'deepspeed'"), std::string::npos) << parsed.status().message();
  EXPECT_NE(parsed.status().message().find("not opened"), std::string::npos) << parsed.status().message();
  // An override of the stage (what `anneal submit` sends) replaces the key: nothing to open.
  parsed = ParseJobSpec(spec, "submitted job spec", {"resources.zero_stage=0"}, ParseOptions{.open_files = false});
  EXPECT_TRUE(parsed.ok()) << parsed.status().message();
  // Given as an override, the same refusal.
  parsed = ParseJobSpec("model_name_or_path: /m\ndataset: d\noutput_dir: /o/x\n", "s", {"deepspeed=/etc/shadow"},
                        ParseOptions{.open_files = false});
  EXPECT_FALSE(parsed.ok());
}

}  // namespace
}  // namespace anneal::jobspec
