// CheckpointWriter's commit protocol, verification, same-step replacement and standalone retention, on real
// files in a temp dir.
#include "trainer/checkpoint/checkpoint.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/fsutil.h"

namespace anneal::checkpoint {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

struct OutputDir {
  std::string path;
  OutputDir() {
    path = (fs::temp_directory_path() / ("anneal-ckpt-" + std::to_string(::getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~OutputDir() { fs::remove_all(path); }
};

// Commits checkpoint-<step> holding one file with `content`, recording `metrics`.
std::string Commit(const std::string& out, int64_t step, const std::string& content, json metrics = json::object()) {
  auto w = CheckpointWriter::Begin(out, step);
  EXPECT_TRUE(w.ok()) << w.status().ToString();
  std::ofstream(w->dir() + "/weights.bin") << content;
  auto dir = w->Commit({{"step", step}, {"metrics", metrics}});
  EXPECT_TRUE(dir.ok()) << dir.status().ToString();
  return dir.ok() ? *dir : "";
}

std::vector<int64_t> Steps(const std::string& out) {
  std::vector<int64_t> steps;
  for (const auto& [step, dir] : ListCheckpoints(out)) steps.push_back(step);
  return steps;
}

TEST(CheckpointWriter, CommitsAVerifiableManifestAndLeavesNoStagingDirectory) {
  OutputDir o;
  const std::string dir = Commit(o.path, 10, "abc");
  EXPECT_EQ(dir, CheckpointDir(o.path, 10));
  EXPECT_FALSE(fs::exists(TmpCheckpointDir(o.path, 10)));
  auto m = VerifyCheckpoint(dir);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->step, 10);
  ASSERT_EQ(m->files.size(), 1u);
  EXPECT_EQ(m->files[0].path, "weights.bin");
  EXPECT_EQ(m->files[0].size, 3u);
  // sha256("abc")
  EXPECT_EQ(m->files[0].sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(CheckpointWriter, AnUncommittedCheckpointIsNotListed) {
  OutputDir o;
  auto w = CheckpointWriter::Begin(o.path, 5);
  ASSERT_TRUE(w.ok());
  std::ofstream(w->dir() + "/weights.bin") << "partial";
  EXPECT_TRUE(ListCheckpoints(o.path).empty());
  EXPECT_EQ(ResolveCheckpoint(o.path, "latest").status().code(), StatusCode::kNotFound);
}

TEST(CheckpointWriter, ReplacesTheSameStepWithTheNewContent) {
  OutputDir o;
  Commit(o.path, 20, "old");
  const std::string dir = Commit(o.path, 20, "newer");
  auto m = VerifyCheckpoint(dir);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->files[0].size, 5u);
  EXPECT_EQ(Steps(o.path), std::vector<int64_t>{20});
  for (const auto& e : fs::directory_iterator(o.path)) {
    EXPECT_EQ(e.path().filename().string(), "checkpoint-20") << "no staging or replaced leftovers";
  }
}

TEST(VerifyCheckpoint, NamesTheCorruptOrMissingFile) {
  OutputDir o;
  const std::string dir = Commit(o.path, 1, "abcdef");
  std::ofstream(dir + "/weights.bin") << "abcdeX";  // same size, different bytes
  auto corrupt = VerifyCheckpoint(dir);
  ASSERT_EQ(corrupt.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(corrupt.status().message().find("weights.bin fails its sha256"), std::string::npos);
  fs::remove(dir + "/weights.bin");
  auto missing = VerifyCheckpoint(dir);
  EXPECT_NE(missing.status().message().find("weights.bin listed in the manifest is missing"), std::string::npos);
  const std::string second = Commit(o.path, 2, "x");
  EXPECT_EQ(PreviousCheckpoint(o.path, second), std::optional<std::string>(dir));
}

TEST(ApplyRetention, KeepsTheLatestAndTheBestByTheManifestsMetrics) {
  OutputDir o;
  Commit(o.path, 10, "a", {{"loss", 3.0}, {"eval_loss", 2.0}});
  Commit(o.path, 20, "b", {{"loss", 2.5}, {"eval_loss", 1.0}});
  Commit(o.path, 30, "c", {{"loss", 2.0}, {"eval_loss", 1.5}});
  Commit(o.path, 40, "d", {{"loss", 1.9}});
  Commit(o.path, 50, "e", {{"loss", 1.8}});
  const jobspec::RetentionPolicy policy{.save_total_limit = 2, .keep_best = 1, .metric = "eval_loss"};
  auto deleted = ApplyRetention(o.path, policy);
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, (std::vector<int64_t>{10, 30}));
  EXPECT_EQ(Steps(o.path), (std::vector<int64_t>{20, 40, 50}));
  for (const auto& e : fs::directory_iterator(o.path)) {
    EXPECT_EQ(e.path().filename().string().rfind(".deleting-", 0), std::string::npos) << "no marks left";
  }
  // Applying it again deletes nothing more.
  auto again = ApplyRetention(o.path, policy);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->empty());
}

TEST(ApplyRetention, ZeroLimitKeepsEveryCheckpoint) {
  OutputDir o;
  for (int64_t s : {1, 2, 3}) Commit(o.path, s, "x");
  auto deleted = ApplyRetention(o.path, jobspec::RetentionPolicy{.save_total_limit = 0});
  ASSERT_TRUE(deleted.ok());
  EXPECT_TRUE(deleted->empty());
  EXPECT_EQ(Steps(o.path).size(), 3u);
}

}  // namespace
}  // namespace anneal::checkpoint
