// Dataset content hashes (coordinator/dataset_hash.h) over real files: stable, order-free, sensitive to
// content, size and names, errors naming the file; name resolution through dataset_info.json.
#include "coordinator/dataset_hash.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

namespace anneal::coordinator {
namespace {

namespace fs = std::filesystem;

class DatasetHashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("anneal-dshash-" + std::to_string(getpid()) + "-" + std::to_string(std::random_device{}()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Write(const std::string& rel, const std::string& content) {
    fs::create_directories((dir_ / rel).parent_path());
    std::ofstream(dir_ / rel, std::ios::binary) << content;
    return (dir_ / rel).string();
  }
  std::string Hash(const std::vector<std::string>& paths) {
    auto h = DatasetContentHash(paths);
    EXPECT_TRUE(h.ok()) << h.status().ToString();
    return h.ok() ? *h : "";
  }
  fs::path dir_;
};

TEST_F(DatasetHashTest, StableAndIndependentOfOrderAndLocation) {
  const std::string a = Write("a.jsonl", "{\"x\":1}\n"), b = Write("b.jsonl", "{\"x\":2}\n");
  const std::string h = Hash({a, b});
  EXPECT_EQ(h.rfind("sha256:", 0), 0u);
  EXPECT_EQ(h.size(), 7u + 64u);
  EXPECT_EQ(Hash({b, a}), h);
  EXPECT_EQ(Hash({a, b}), h);
  const std::string a2 = Write("copy/a.jsonl", "{\"x\":1}\n"), b2 = Write("copy/b.jsonl", "{\"x\":2}\n");
  EXPECT_EQ(Hash({a2, b2}), h);  // a moved copy is the same data
}

TEST_F(DatasetHashTest, ContentSizeAndNamesChangeIt) {
  const std::string a = Write("a.jsonl", "row\n");
  const std::string h = Hash({a});
  Write("a.jsonl", "roW\n");
  const std::string edited = Hash({a});
  EXPECT_NE(edited, h);
  Write("a.jsonl", "row\nrow\n");
  EXPECT_NE(Hash({a}), h);
  Write("a.jsonl", "row\n");
  EXPECT_EQ(Hash({a}), h);                          // back to the same bytes
  EXPECT_NE(Hash({Write("b.jsonl", "row\n")}), h);  // same bytes, another name
}

TEST_F(DatasetHashTest, ADirectoryCoversEveryFileBelowIt) {
  Write("set/part-1.jsonl", "1\n");
  Write("set/sub/part-2.jsonl", "2\n");
  const std::string h = Hash({(dir_ / "set").string()});
  Write("set/sub/part-3.jsonl", "3\n");  // new data landed
  EXPECT_NE(Hash({(dir_ / "set").string()}), h);
}

TEST_F(DatasetHashTest, ErrorsNameTheFile) {
  auto missing = DatasetContentHash({(dir_ / "nope.jsonl").string()});
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("nope.jsonl"), std::string::npos) << missing.status().message();
  EXPECT_EQ(DatasetContentHash({}).status().code(), StatusCode::kInvalidArgument);
  const std::string big = Write("big.jsonl", std::string(100, 'x'));
  auto over = DatasetContentHash({big}, 10);
  EXPECT_EQ(over.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(over.status().message().find("100 bytes"), std::string::npos) << over.status().message();
  if (geteuid() != 0) {  // root reads anything
    const std::string locked = Write("locked.jsonl", "x");
    fs::permissions(locked, fs::perms::none);
    auto denied = DatasetContentHash({locked});
    EXPECT_FALSE(denied.ok());
    EXPECT_NE(denied.status().message().find("locked.jsonl"), std::string::npos) << denied.status().message();
  }
}

TEST_F(DatasetHashTest, NamesResolveThroughDatasetInfoAndFingerprintSorted) {
  Write("data/dataset_info.json", R"({"held_out": {"file_name": "eval/held.jsonl"}})");
  Write("data/eval/held.jsonl", "q\n");
  Write("data/extra.jsonl", "e\n");
  jobspec::DataSpec data;
  data.dataset_dir = (dir_ / "data").string();
  auto files = DatasetFiles(data, {"held_out", "extra.jsonl"});
  ASSERT_TRUE(files.ok()) << files.status().ToString();
  EXPECT_EQ((*files)[0].second, (dir_ / "data/eval/held.jsonl").string());
  EXPECT_EQ((*files)[1].second, (dir_ / "data/extra.jsonl").string());
  auto fps = FingerprintDatasets(data, {"held_out", "extra.jsonl"});
  ASSERT_TRUE(fps.ok()) << fps.status().ToString();
  const std::string fingerprint = EvalSetFingerprint(*fps);
  EXPECT_EQ(fingerprint.rfind("extra.jsonl=sha256:", 0), 0u) << fingerprint;  // sorted by name
  EXPECT_NE(fingerprint.find(";held_out=sha256:"), std::string::npos) << fingerprint;
  auto unknown = DatasetFiles(data, {"nope"});
  EXPECT_EQ(unknown.status().code(), StatusCode::kNotFound);
  EXPECT_NE(unknown.status().message().find("dataset 'nope'"), std::string::npos) << unknown.status().message();
}

}  // namespace
}  // namespace anneal::coordinator
